"""The real background path: a sync queued through django-q2's broker (the ORM by default,
Redis when REDIS_URL is set) is picked up by a `qcluster` worker process."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django_q.models import Success

from visits.models import SyncState, Visit
from visits.tasks import sync_enqueue

from .conftest import assert_db_matches, command_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_queued_sync_is_run_by_a_qcluster_worker(serve, small_team):
    server = serve(small_team)
    task_id = sync_enqueue()
    broker = "redis" if settings.REDIS_URL else "orm"
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT, env=command_env(server.url, SELL_SESSION_SECONDS="1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Success.objects.filter(id=task_id).exists():
            assert worker.poll() is None, worker.stderr.read()
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    task = Success.objects.get(id=task_id)
    assert "events applied" in task.result, (broker, task.result)
    assert SyncState.objects.get(stream="visits").at_top
    assert Visit.objects.exists()
    assert_db_matches(small_team)
