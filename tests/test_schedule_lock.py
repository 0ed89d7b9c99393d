"""The schedule is created once and stays one; two syncs of a stream never overlap; a lock
left behind by a killed worker stops blocking."""

import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from visits.ingest import pages, pull, sync
from visits.models import SyncState, Visit
from visits.tasks import SCHEDULE_NAME, sync_streams_task

pytestmark = pytest.mark.django_db


def test_setup_schedules_is_idempotent(capsys):
    call_command("setup_schedules")
    call_command("setup_schedules")
    schedules = Schedule.objects.filter(name=SCHEDULE_NAME)
    assert schedules.count() == 1
    schedule = schedules.get()
    assert schedule.func == "visits.tasks.sync_streams_task"
    assert schedule.schedule_type == Schedule.MINUTES and schedule.minutes == 1 and schedule.repeats == -1
    assert "updated" in capsys.readouterr().out


def test_scheduled_task_syncs_both_streams_and_polls_again(serve, small_team, settings, monkeypatch):
    server = serve(small_team)
    settings.SELL_IDLE_POLL_SECONDS = 1
    # The session's clock is a false one that only its idle sleeps move on, so how long a
    # poll takes on this machine cannot change how many polls fit in the session.
    clock = [0.0]
    monkeypatch.setattr(
        pull, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    )
    summary = sync_streams_task(session_seconds=2.5)
    assert Visit.objects.exists()
    assert summary.startswith("2 polls") or summary.startswith("3 polls"), summary
    tops = [r for r in server.requests if r.path == "/v3/visits/stream"]
    assert len(tops) >= 2


def test_second_sync_is_refused_while_the_lock_is_held(serve, small_team):
    serve(small_team)
    assert sync.lock_acquire(stream="visits", owner="otherhost:1:abc", seconds=120)
    result = sync.stream_sync(stream="visits")
    assert result.error_kind == "busy" and Visit.objects.count() == 0
    assert SyncState.objects.get(stream="visits").lock_owner == "otherhost:1:abc"


def test_expired_lock_of_a_vanished_worker_is_taken_over(serve, small_team):
    serve(small_team)
    sync.lock_acquire(stream="visits", owner="otherhost:1:abc", seconds=120)
    SyncState.objects.filter(stream="visits").update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    result = sync.stream_sync(stream="visits")
    assert not result.error and result.at_top
    assert SyncState.objects.get(stream="visits").lock_owner == ""


@pytest.mark.slow
def test_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(serve, small_team):
    serve(small_team)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{sync.socket.gethostname()}:{dead.stdout.strip()}:x"
    assert sync.lock_acquire(stream="visits", owner=owner, seconds=3600)
    result = sync.stream_sync(stream="visits")
    assert not result.error and result.at_top


def test_a_page_is_not_applied_once_the_lock_was_taken_over(serve, small_team, monkeypatch):
    serve(small_team)
    real = pages.visits_apply

    def steal_then_apply(**kwargs):
        SyncState.objects.filter(stream="visits").update(lock_owner="thief:1:x")
        real(**kwargs)

    monkeypatch.setattr(pages, "visits_apply", steal_then_apply)
    result = sync.stream_sync(stream="visits")
    assert result.error_kind == "lock_lost"
    assert Visit.objects.count() == 0  # the page was rolled back
    assert SyncState.objects.get(stream="visits").position == ""


@pytest.mark.slow
def test_a_zombie_or_a_reused_pid_counts_as_a_dead_owner():
    here = sync.socket.gethostname()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while sync.process_state(zombie.pid)[0] != "Z":  # exited; not reaped until wait()
        pass
    try:
        assert sync.owner_is_dead(f"{here}:{zombie.pid}:x")
    finally:
        zombie.wait()
    alive = sync.lock_owner_name()
    assert not sync.owner_is_dead(alive)  # this very process
    pid, started = alive.split(":")[1], alive.split(":")[2].partition(".")[0]
    assert started, "the owner name carries the process's start time"
    assert sync.owner_is_dead(f"{here}:{pid}:{int(started) - 1}.abc")  # same pid, an earlier process
    assert not sync.owner_is_dead(f"otherhost:{pid}:{started}.abc")  # another host: only the lease expiry frees it
