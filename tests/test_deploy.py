"""Deploying for real: `check --deploy` passes once SITE_URL says https; a sign-in through a
TLS-terminating proxy works when BEHIND_PROXY says so; a 500 is logged with its traceback;
the generated secret key is readable by its owner only. Each runs the app in a subprocess
(manage.py or gunicorn) with its own environment, as a deployment would."""

import json
import os
import re
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
from axes.models import AccessAttempt, AccessLog
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User

from .conftest import database_url

pytestmark = pytest.mark.slow  # every test starts the app in a subprocess

ROOT = Path(__file__).resolve().parent.parent
SITE = "https://visits.example.com"
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


# --- check --deploy and the settings SITE_URL and BEHIND_PROXY derive ------------------


def test_check_deploy_warns_without_a_site_url_and_passes_with_an_https_one():
    before = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false", SECRET_KEY=STRONG_KEY)
    assert before.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in before.stderr
    after = manage("check", "--deploy", "--fail-level", "WARNING", DEBUG="false", SECRET_KEY=STRONG_KEY, SITE_URL=SITE)
    assert after.returncode == 0, after.stderr
    assert "no issues" in after.stdout


def test_an_https_site_url_turns_on_secure_cookies_hsts_and_the_redirect():
    names = (
        "CSRF_TRUSTED_ORIGINS", "ALLOWED_HOSTS", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_SSL_REDIRECT",
    )  # fmt: skip
    assert settings_read(*names, SITE_URL=SITE + "/") == {
        "CSRF_TRUSTED_ORIGINS": [SITE],
        "ALLOWED_HOSTS": ["localhost", "127.0.0.1", "[::1]", "visits.example.com"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "SECURE_SSL_REDIRECT": True,
    }
    tuned = settings_read(
        *names, SITE_URL="https://Visits.Example.com:8443", ALLOWED_HOSTS="visits.example.com",
        HSTS_SECONDS="3600", HSTS_INCLUDE_SUBDOMAINS="true", HTTPS_REDIRECT="false",
    )  # fmt: skip
    assert tuned["CSRF_TRUSTED_ORIGINS"] == ["https://visits.example.com:8443"]
    assert tuned["ALLOWED_HOSTS"] == ["visits.example.com"]
    assert (tuned["SECURE_HSTS_SECONDS"], tuned["SECURE_HSTS_INCLUDE_SUBDOMAINS"], tuned["SECURE_SSL_REDIRECT"]) == (
        3600,
        True,
        False,
    )
    plain = settings_read(*names, SITE_URL="http://visits.intranet:8000")
    assert plain["CSRF_TRUSTED_ORIGINS"] == ["http://visits.intranet:8000"]
    assert not any(
        plain[n] for n in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT")
    )
    laptop = settings_read(*names)
    assert (
        laptop["CSRF_TRUSTED_ORIGINS"] == []
        and not laptop["SECURE_SSL_REDIRECT"]
        and not laptop["SESSION_COOKIE_SECURE"]
    )


def test_behind_proxy_trusts_the_forwarded_headers_and_nothing_else_does():
    names = ("SECURE_PROXY_SSL_HEADER", "USE_X_FORWARDED_HOST", "AXES_IPWARE_META_PRECEDENCE_ORDER")
    assert settings_read(*names, BEHIND_PROXY="true") == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "USE_X_FORWARDED_HOST": True,
        "AXES_IPWARE_META_PRECEDENCE_ORDER": ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"],
    }
    assert settings_read(*names) == {
        "SECURE_PROXY_SSL_HEADER": None,
        "USE_X_FORWARDED_HOST": False,
        "AXES_IPWARE_META_PRECEDENCE_ORDER": ["REMOTE_ADDR"],
    }


def test_login_limits_come_from_the_environment():
    values = settings_read(
        "AXES_FAILURE_LIMIT", "AXES_COOLOFF_TIME", LOGIN_FAILURE_LIMIT="4", LOGIN_LOCKOUT_MINUTES="90"
    )
    assert values == {"AXES_FAILURE_LIMIT": 4, "AXES_COOLOFF_TIME": "1:30:00"}


# --- the app under gunicorn ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def gunicorn_serving(log_path: Path, **env):
    """gunicorn on a free port until the block ends; its output (Django's console log
    included) goes to `log_path`. The proxy is simulated by the test's headers, as if on
    another machine: gunicorn is told to believe no forwarded header itself, so that only
    Django's settings decide."""
    port = free_port()
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "visitsdash.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--forwarded-allow-ips", "192.0.2.1"],
            cwd=ROOT, env=app_env(SECRET_KEY=STRONG_KEY, **env), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60  # only ends a hung start
            while True:
                assert server.poll() is None, log_path.read_text()
                try:
                    # /healthz answers plain HTTP even when everything else redirects to https
                    # (503 "stale" here, where nothing has synced: an answer all the same).
                    if requests.get(f"{url}/healthz", timeout=2).status_code in (200, 503):
                        break
                except (requests.ConnectionError, requests.Timeout):
                    pass  # not listening yet, or still starting (a busy machine): the deadline decides
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def through_proxy(url: str) -> dict:
    """The headers nginx's `proxy_pass http://app` sends for a browser at 203.0.113.9 that
    forged an X-Forwarded-For of its own."""
    return {
        "Host": url.removeprefix("http://"),
        "X-Forwarded-Host": "visits.example.com",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "6.6.6.6, 203.0.113.9",
    }


def login_page(url: str) -> requests.Response:
    return requests.get(f"{url}/accounts/login/", headers=through_proxy(url), allow_redirects=False, timeout=10)


def login_post(url: str, page: requests.Response, *, password: str) -> requests.Response:
    """The browser posts the form back, with the CSRF cookie (a Secure one, which requests
    would not send over http by itself) and its https Origin and Referer."""
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    headers = {
        **through_proxy(url),
        "Origin": SITE,
        "Referer": f"{SITE}/accounts/login/",
        "Cookie": f"csrftoken={page.cookies['csrftoken']}",
    }
    form = {"username": "mia", "password": password, "csrfmiddlewaretoken": token, "next": "/"}
    return requests.post(f"{url}/accounts/login/", data=form, headers=headers, allow_redirects=False, timeout=10)


@pytest.fixture
def mia_everywhere(transactional_db):
    """mia in the test database, committed and hashed with a hasher the server knows (the
    tests' MD5 is not among the app's own)."""
    password = "mia-password-1"
    User.objects.create(
        username="mia", password=PBKDF2PasswordHasher().encode(password, "saltsaltsalt", iterations=1000)
    )
    return password


def test_sign_in_through_a_tls_proxy_works_with_behind_proxy(mia_everywhere, tmp_path):
    with gunicorn_serving(
        tmp_path / "gunicorn.log", DATABASE_URL=database_url(), SITE_URL=SITE, BEHIND_PROXY="true"
    ) as url:
        page = login_page(url)
        assert page.status_code == 200
        wrong = login_post(url, page, password="wrong")
        assert wrong.status_code == 200 and "didn't match" in wrong.text
        # The throttle counts the address the proxy saw, not the one the browser claimed.
        assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["203.0.113.9"]
        signed_in = login_post(url, page, password=mia_everywhere)
        assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/", signed_in.text[:500]
        session = next(cookie for cookie in signed_in.cookies if cookie.name == "sessionid")
        assert session.secure
        mine = requests.get(
            f"{url}/accounts/password/", headers={**through_proxy(url), "Cookie": f"sessionid={session.value}"},
            allow_redirects=False, timeout=10,
        )  # fmt: skip
        assert mine.status_code == 200 and "mia" in mine.text
        assert mine.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert list(AccessLog.objects.values_list("username", "ip_address")) == [("mia", "203.0.113.9")]


def test_sign_in_through_a_tls_proxy_fails_without_behind_proxy(mia_everywhere, tmp_path):
    # As before these settings existed: the form's https origin is not the one Django sees.
    with gunicorn_serving(tmp_path / "before.log", DATABASE_URL=database_url()) as url:
        page = login_page(url)
        assert page.status_code == 200
        refused = login_post(url, page, password=mia_everywhere)
        assert refused.status_code == 403 and "CSRF verification failed" in refused.text
    # SITE_URL alone: every request looks like plain http, so each is sent to https again.
    with gunicorn_serving(tmp_path / "site-url-only.log", DATABASE_URL=database_url(), SITE_URL=SITE) as url:
        page = login_page(url)
        assert page.status_code == 301 and page.headers["Location"].startswith("https://")


def test_a_500_is_logged_with_its_traceback(tmp_path):
    # An empty database: the first query, loading the session the cookie names, raises.
    log = tmp_path / "gunicorn.log"
    with gunicorn_serving(log, DATABASE_URL=f"sqlite:///{tmp_path / 'empty.sqlite3'}", DEBUG="false") as url:
        response = requests.get(
            f"{url}/", headers={"Cookie": "sessionid=" + "a" * 32}, allow_redirects=False, timeout=10
        )
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
