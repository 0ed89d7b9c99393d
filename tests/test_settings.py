"""Nonsense in an environment variable stops start-up with a message naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test starts manage.py or Python in a subprocess

ROOT = Path(__file__).resolve().parent.parent


def manage_check(**env_change) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SELL_", "DATABASE_URL", "REDIS_URL", "SITE_URL", "LOG_LEVEL"))
    }
    env.update(env_change)
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("SELL_PAGE_LIMIT", "500"),
        ("SELL_PAGE_LIMIT", "lots"),
        ("SELL_START_POSITION", "middle"),
        ("SELL_API_URL", "api.getbase.com"),
        ("SELL_API_URL", "http://"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("REDIS_URL", "localhost:6379"),
        ("DEBUG", "maybe"),
        ("DISPLAY_TIME_ZONE", "Mars/Olympus"),
        ("SELL_MAX_RETRIES", "-1"),
        ("MAP_TILES_URL", "tiles.example.com/{z}/{x}/{y}.png"),
        ("MAP_TILES_URL", "https://tiles.example.com/tile.png"),
        ("MAP_POINTS_ZOOM", "23"),
        ("FLAG_MAX_SPEED_KMH", "fast"),
        ("FLAG_REUSE_CUSTOMERS", "1"),
        ("FLAG_BURST_MINUTES", "0"),
        ("SITE_URL", "visits.example.com"),
        ("SITE_URL", "ftp://visits.example.com"),
        ("SITE_URL", "https://visits.example.com/visits"),
        ("BEHIND_PROXY", "sometimes"),
        ("HSTS_SECONDS", "-1"),
        ("HSTS_INCLUDE_SUBDOMAINS", "perhaps"),
        ("HTTPS_REDIRECT", "2"),
        ("LOGIN_FAILURE_LIMIT", "0"),
        ("LOGIN_LOCKOUT_MINUTES", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("SQLITE_CACHE_MB", "0"),
        ("SQLITE_MMAP_MB", "a lot"),
    ],
)
def test_nonsense_value_stops_startup_naming_the_variable(name, value):
    result = manage_check(**{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


def test_defaults_start_cleanly():
    result = manage_check()
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_settings_read_the_environment(monkeypatch):
    monkeypatch.setenv("SELL_PAGE_LIMIT", "42")
    monkeypatch.setenv("SELL_START_POSITION", "top")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    result = subprocess.run(
        [sys.executable, "-c", (
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='visitsdash.settings'; django.setup();"
            "from django.conf import settings as s;"
            "print(s.SELL_PAGE_LIMIT, s.SELL_START_POSITION, s.Q_CLUSTER.get('redis'), 'orm' in s.Q_CLUSTER)"
        )],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.split() == ["42", "top", "redis://127.0.0.1:6379/3", "False"], result.stderr
