"""Deploying for real: a 500 is logged with its traceback; the generated secret key is
readable by its owner only. Each runs the app in a subprocess (manage.py or gunicorn) with its
own environment, as a deployment would."""

import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = secrets.token_urlsafe(50)
OURS = (
    "SELL_", "DATABASE_URL", "REDIS_URL", "SITE_URL", "BEHIND_PROXY", "HSTS_", "HTTPS_REDIRECT",
    "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "LOGIN_", "LOG_LEVEL",
    "DJANGO_ALLOW_ASYNC_UNSAFE",  # the tests' own (conftest.py); check --deploy rightly objects to it
)  # fmt: skip


def app_env(**change) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    env.update(change)
    return env


def manage(*args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=app_env(**env), capture_output=True, text=True, timeout=60
    )


def settings_read(*names: str, **env) -> dict:
    code = (
        "import json, sys, django; django.setup(); from django.conf import settings as s;"
        "print(json.dumps({n: getattr(s, n, None) for n in sys.argv[1:]}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=app_env(DJANGO_SETTINGS_MODULE="visitsdash.settings", **env),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the app under gunicorn ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_serving(log_path: Path, **env):
    """gunicorn on a free port until the block ends; its output (Django's console log
    included) goes to `log_path`."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "visitsdash.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "1"],
            cwd=ROOT, env=app_env(SECRET_KEY=STRONG_KEY, **env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                assert server.poll() is None, log_path.read_text()
                try:
                    if requests.get(f"{url}/accounts/login/", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.mark.slow
def test_a_500_is_logged_with_its_traceback(tmp_path):
    # An empty database: the first query, loading the session the cookie names, raises.
    log = tmp_path / "gunicorn.log"
    with gunicorn_serving(log, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}", DEBUG="false") as url:
        response = requests.get(f"{url}/", headers={"Cookie": "sessionid=" + "a" * 32}, allow_redirects=False, timeout=10)
        assert response.status_code == 500
    output = log.read_text()
    assert "ERROR django.request: Internal Server Error: /" in output, output
    assert "Traceback (most recent call last)" in output and "OperationalError: no such table" in output, output


# --- the generated secret key --------------------------------------------------------------


def test_a_generated_secret_key_is_readable_by_its_owner_only(tmp_path):
    key_file = tmp_path / "secret_key"
    first = settings_read("SECRET_KEY", SECRET_KEY_FILE=str(key_file))["SECRET_KEY"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(first) >= 50 and key_file.read_text() == first
    assert settings_read("SECRET_KEY", SECRET_KEY_FILE=str(key_file))["SECRET_KEY"] == first  # kept, not remade
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary file left


def test_a_world_readable_secret_key_is_made_private(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text("an-older-key-" + STRONG_KEY)
    key_file.chmod(0o644)
    assert settings_read("SECRET_KEY", SECRET_KEY_FILE=str(key_file))["SECRET_KEY"] == "an-older-key-" + STRONG_KEY
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
