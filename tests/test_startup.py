"""What a sync loads: neither `manage.py sync_visits` nor the worker's task imports the map stack
(folium, branca, jinja2, numpy: a quarter of a second a sync never needs), and the sync's own
system checks still include visits.E001, so it refuses to run without its triggers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection

from visits import triggers

from .conftest import assert_db_matches, command_env

ROOT = Path(__file__).resolve().parent.parent
MAP_STACK = ("folium", "branca", "jinja2", "numpy")
# The last line a child prints: the modules of the map stack it imported.
STACK_REPORT = f"print(json.dumps(sorted(set({MAP_STACK!r}) & set(sys.modules))))"

# `manage.py sync_visits`, exactly as the command line runs it (system checks included).
COMMAND = f"""
import json, runpy, sys
sys.argv = ["manage.py", "sync_visits", "--quiet"]
try:
    runpy.run_path("manage.py", run_name="__main__")
finally:
    {STACK_REPORT}
"""
# A django-q2 worker: the cluster's start runs every check, then a worker calls the task by the
# dotted name the schedule holds.
WORKER = f"""
import json, os, sys
import django
from django.core.management import call_command
from django.utils.module_loading import import_string
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visitsdash.settings")
django.setup()
call_command("check")
from django_q.models import Schedule
from visits.tasks import schedules_setup, SCHEDULE_NAME
schedules_setup()
print(import_string(Schedule.objects.get(name=SCHEDULE_NAME).func)(session_seconds=1))
{STACK_REPORT}
"""


def child_run(code: str, *, env: dict) -> tuple[list[str], str]:
    """Run `code` in a fresh Python; (map-stack modules it imported, what it printed before)."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    *before, last = result.stdout.strip().splitlines()
    return json.loads(last), "\n".join(before)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sync_visits_imports_nothing_of_the_map_stack(serve, small_team):
    server = serve(small_team)
    imported, out = child_run(COMMAND, env=command_env(server.url))
    assert out.startswith("sync complete:"), out
    assert imported == []
    assert_db_matches(small_team)  # the sync did its whole work: the flags and their geodesics too


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_workers_checks_and_task_import_nothing_of_the_map_stack(serve, small_team):
    server = serve(small_team)
    imported, out = child_run(WORKER, env=command_env(server.url))
    assert "events applied" in out, out
    assert imported == []
    assert_db_matches(small_team)


@pytest.mark.django_db
def test_sync_visits_still_refuses_to_run_with_a_trigger_missing(serve, small_team):
    """Its checks leave out the web's (URLs, templates, admin) but not the database's."""
    serve(small_team)
    triggers.triggers_drop(connection=connection, table="visits_visit", names=["visits_tally_insert"])
    with pytest.raises(SystemCheckError, match=r"visits\.E001.*visits_tally_insert"):
        call_command("sync_visits", "--quiet", skip_checks=False)
    call_command("migrate", verbosity=0)  # the cure
    call_command("sync_visits", "--quiet", skip_checks=False)
    assert_db_matches(small_team)
