"""SQLite set up for a server: every connection the app opens runs in WAL mode with
synchronous=NORMAL, SQLITE_CACHE_MB of page cache and SQLITE_MMAP_MB of memory map. Checked on
connections made from the settings' own DATABASES entry, whichever database this run uses."""

import pytest
from django.conf import settings
from django.db import connection
from django.db.utils import ConnectionHandler

from visitsdash.settings import database_settings


def pragmas(conn) -> dict:
    with conn.cursor() as cursor:
        return {
            name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "synchronous", "cache_size", "mmap_size")
        }


def sqlite_connection(path, **sizes):
    handler = ConnectionHandler({"default": database_settings(f"sqlite:///{path}", **sizes)})
    return handler["default"]


@pytest.mark.parametrize("cache_mb, mmap_mb", [(8, 1024), (64, 0)])
def test_every_sqlite_connection_starts_with_wal_normal_sync_its_cache_and_map(
    tmp_path, django_db_blocker, cache_mb, mmap_mb
):
    conn = sqlite_connection(tmp_path / "app.sqlite3", sqlite_cache_mb=cache_mb, sqlite_mmap_mb=mmap_mb)
    with django_db_blocker.unblock():  # a database of its own, not the test database
        for _ in range(2):  # the second connection finds the file in WAL mode already, and still sets the rest
            assert pragmas(conn) == {
                "journal_mode": "wal",
                "synchronous": 1,  # NORMAL
                "cache_size": -cache_mb * 1024,  # negative: KiB
                "mmap_size": mmap_mb * 1024 * 1024,
            }
            conn.close()


@pytest.mark.django_db
def test_the_test_database_connection_runs_them_too():
    """On SQLite, this run's own connection (the one every test uses) is set up the same way."""
    if connection.vendor != "sqlite":
        assert "init_command" not in connection.settings_dict.get("OPTIONS", {})
        return
    assert pragmas(connection) == {
        "journal_mode": "wal",
        "synchronous": 1,
        "cache_size": -settings.SQLITE_CACHE_MB * 1024,
        "mmap_size": settings.SQLITE_MMAP_MB * 1024 * 1024,
    }
