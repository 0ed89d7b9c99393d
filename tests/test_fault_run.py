"""End to end under every fault: the database ends exactly as the generator's truth, whether
the sync runs in one go, is killed with SIGKILL at random points, or runs from the command."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visits.demo.server import Faults
from visits.ingest.sync import streams_sync
from visits.models import RejectedItem, SyncState
from visits.review.flags import flags_refresh

from .conftest import assert_db_matches, assert_flags_match, command_env

pytestmark = pytest.mark.slow  # the full team under faults, or sync_visits in subprocesses

ROOT = Path(__file__).resolve().parent.parent

ALL_FAULTS = dict(
    empty_pages=0.2, short_pages=0.3, redeliver=0.3, shuffle=0.5, server_errors=0.1, rate_limit=0.1,
    drop_connection=0.05, truncate=0.05,
)  # fmt: skip


@pytest.mark.django_db
def test_every_fault_on_ends_exact(serve, full_team):
    server = serve(full_team, faults=Faults(**ALL_FAULTS))
    for _ in range(3):  # a mid-run expiry: the stored position goes stale between runs
        results = streams_sync(max_seconds=0.3)
        assert all(not r.error for r in results), results
        server.expire_positions()
    while not all(r.at_top for r in streams_sync()):
        pass
    assert_db_matches(full_team)
    flags_refresh()
    assert_flags_match()
    assert RejectedItem.objects.filter(stream="visits").count() == full_team.malformed_count["visits"]
    assert SyncState.objects.get(stream="visits").events_skipped > 0


def sync_command(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "sync_visits", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_sigkill_at_random_points_then_resume_ends_exact(serve, full_team):
    # `slow` stretches the run to several seconds, so that the kills land mid-run.
    server = serve(full_team, faults=Faults(redeliver=0.2, shuffle=0.5, short_pages=0.2, empty_pages=0.1, slow=0.3))
    env = command_env(server.url)
    rng = random.Random(20261128)
    kills = 0
    for _ in range(6):
        process = sync_command(env, "--quiet")
        time.sleep(rng.uniform(0.7, 1.8))  # Django starts in ~0.5 s; then pages are being applied
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()
    assert kills >= 3, "the sync finished too fast to be killed mid-run"
    final = sync_command(env)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert "sync complete" in out
    assert_db_matches(full_team)
    assert_flags_match()  # the command recomputed the flags of every rep the killed runs marked


@pytest.mark.django_db(transaction=True)
def test_command_shows_progress_and_a_summary(serve, small_team):
    server = serve(small_team)
    process = sync_command(command_env(server.url))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    lines = out.strip().splitlines()
    assert any("events/s" in line and "pages" in line for line in lines[:-1])
    assert lines[-1].startswith("sync complete: users:") and "visits:" in lines[-1]
    assert_db_matches(small_team)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "env_change, message",
    [
        ({"SELL_ACCESS_TOKEN": "wrong"}, "the access token was refused"),
        ({"SELL_API_URL": "http://127.0.0.1:9", "SELL_MAX_RETRIES": "2"}, "stayed unreachable after 2 retries"),
    ],
)
def test_command_fails_with_one_line_saying_why(serve, small_team, env_change, message):
    server = serve(small_team)
    process = sync_command(command_env(server.url, **env_change))
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert message in err
    assert len([line for line in err.strip().splitlines() if "retrying" not in line]) == 1


def lock_owner_wait(*, stream: str, process: subprocess.Popen) -> str:
    """The lease holder once `process` holds the stream's lease (polled: the run is slow)."""
    while process.poll() is None:
        owner = SyncState.objects.filter(stream=stream).values_list("lock_owner", flat=True).first() or ""
        if f":{process.pid}:" in owner:
            return owner
        time.sleep(0.05)
    raise AssertionError(f"the sync ended before taking the {stream} lease: {process.communicate()}")


@pytest.mark.django_db(transaction=True)
def test_a_restart_right_after_sigkill_takes_the_lease_over(serve, full_team):
    """The restart comes before the killed process is reaped, as when a supervisor or a shell
    starts the next run at once: the killed process is still a zombie in the process table."""
    server = serve(full_team, faults=Faults(slow=1.0))  # every request waits: the run stays mid-sync
    env = command_env(server.url)
    for attempt in range(6):
        killed = sync_command(env, "--quiet", "--max-seconds", "60")
        lock_owner_wait(stream="visits", process=killed)
        killed.send_signal(signal.SIGKILL)  # not reaped (no wait()) until the restart has run
        restart = sync_command(env, "--quiet", "--max-seconds", "1")
        out, err = restart.communicate(timeout=60)
        killed.wait(timeout=30)
        killed.stdout.close()
        killed.stderr.close()
        assert "another sync" not in err, f"restart {attempt + 1} did not take the lease over: {err}"
        assert restart.returncode == 0, err
