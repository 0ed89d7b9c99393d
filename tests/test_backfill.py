"""The history backfill end to end, over HTTP against the demo Core API: the stored visits equal
the generator's truth (DemoData.core_visits), past the 100-page cap, resumed after a SIGKILL, and
what it must never do to what the Firehose delivered."""

import csv
import io
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from visits.demo.core_api import CoreFaults
from visits.demo.generator import team_generate
from visits.ingest.backfill import BackfillUnavailable, history_backfill, unreachable_parts
from visits.ingest.sync import streams_sync
from visits.models import (
    BackfillPart,
    BackfillPartState,
    BackfillRun,
    BackfillState,
    CoreApiState,
    RejectedItem,
    Rep,
    Visit,
    VisitSource,
)
from visits.review.flags import flags_refresh

from .conftest import DEMO_NOW, assert_flags_match, assert_tallies_match, command_env

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def history_team():
    """Six reps, a week in the Firehose's window and three weeks of history before it."""
    return team_generate(seed=11, reps=6, weeks=1, history_weeks=3, now=DEMO_NOW)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_history_matches(data, *, missing: set[int] = frozenset()) -> None:
    """Every visit the Core API lists is held, live, as it lists it (statuses, times, address), the
    Firehose's own with their positions; nothing else is live; `missing` aside (unreachable)."""
    core = data.core_visits()
    firehose = {vid: v for vid, v in data.expected_visits().items() if v["snapshot"] is not None}
    rows = {v.id: v for v in Visit.objects.all()}
    problems = []
    for visit_id, want in core.items():
        row = rows.get(visit_id)
        if visit_id in missing:
            if row is not None:
                problems.append(f"{visit_id}: said unreachable, yet held")
            continue
        if row is None or row.deleted_at is not None:
            problems.append(f"{visit_id}: {'missing' if row is None else 'deleted'}")
            continue
        if row.resource_address != want["resource_address"]:
            problems.append(f"{visit_id}: address {row.resource_address!r}, want {want['resource_address']!r}")
        if row.source == VisitSource.FIREHOSE:
            location = firehose[visit_id]["snapshot"]["sales_rep_location"]
            if (row.latitude, row.longitude) != (location["latitude"], location["longitude"]):
                problems.append(f"{visit_id}: the Firehose's position was changed")
            continue
        got = (
            row.rep_id,
            row.outcome_id,
            row.resource_type,
            row.resource_id,
            row.visited_at,
            row.created_at,
            row.event_time,
            row.summary,
            row.verification_status,
            row.latitude,
            row.longitude,
            row.sequence,
        )
        wanted = (want["creator_id"], want["outcome_id"], want["resource_type"], want["resource_id"],
                  when(want["visited_at"]), when(want["created_at"]), when(want["updated_at"]), want["summary"],
                  want["rep_location_verification_status"], None, None, 0)  # fmt: skip
        if got != wanted:
            problems.append(f"{visit_id}: got {got}, want {wanted}")
    live_extra = [vid for vid, row in rows.items() if vid not in core and row.deleted_at is None]
    if live_extra:
        problems.append(f"live visits the Core API does not list: {sorted(live_extra)[:10]}")
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:15])
    assert_tallies_match()


def test_backfill_alone_stores_every_visit_the_core_api_lists(serve, history_team, client, cast):
    serve(history_team)
    run = history_backfill()
    assert run.state == BackfillState.DONE and run.stored == len(history_team.core_visits()) > 0
    assert not Visit.objects.exclude(source=VisitSource.CORE_API).exists()
    assert_history_matches(history_team)
    assert_flags_match()
    # The Core API's users were read first: every rep of the history has its name.
    names = dict(Rep.objects.filter(visits__isnull=False).distinct().values_list("id", "name"))
    assert names and names == {rid: history_team.core_users()[rid]["name"] for rid in names}
    # The reports count history visits like any other: per rep and status, as the Core API lists them.
    client.force_login(cast.manager)
    body = b"".join(client.get("/reports/reps.csv").streaming_content).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(body[1:])))
    listed = Counter(v["creator_id"] for v in history_team.core_visits().values())
    too_far = Counter(
        v["creator_id"] for v in history_team.core_visits().values()
        if v["rep_location_verification_status"] == "resource_location_too_far"
    )  # fmt: skip
    assert {int(r["rep_id"]): int(r["visits"]) for r in rows} == dict(listed)
    assert {int(r["rep_id"]): int(r["resource_location_too_far"]) for r in rows} == {r: too_far[r] for r in listed}


def test_backfill_after_the_firehose_fills_addresses_and_keeps_its_visits(serve, history_team):
    serve(history_team)
    assert [r.error for r in streams_sync()] == ["", ""]
    flags_refresh()
    held = {v["id"]: v for v in Visit.objects.values()}
    run = history_backfill()
    assert run.addresses == sum(1 for v in held.values() if v["deleted_at"] is None) > 0
    for visit in Visit.objects.filter(id__in=list(held)).values():
        assert {**visit, "resource_address": ""} == {**held[visit["id"]], "resource_address": ""}
    assert_history_matches(history_team)
    assert_flags_match()


def test_small_pages_and_cap_split_the_plan_and_still_store_exactly(serve, history_team):
    serve(history_team)
    run = history_backfill(per_page=5, page_cap=2)
    parts = BackfillPart.objects.filter(run=run)
    assert parts.filter(state=BackfillPartState.SPLIT).exists()
    assert parts.filter(filters__has_key="rep_location_verification_status").exists()
    both = [p for p in parts.filter(state=BackfillPartState.DONE, sort="id").exclude(parent=None)
            if p.parent.filters == p.filters]  # fmt: skip
    assert both, "no leaf was read from both ends"
    assert not unreachable_parts(run=run)
    assert_history_matches(history_team)


def test_second_run_changes_nothing(serve, history_team):
    serve(history_team)
    history_backfill(per_page=10, page_cap=3)
    before = list(Visit.objects.order_by("id").values_list("id", "source", "event_time", "resource_address"))
    again = history_backfill(per_page=10, page_cap=3)
    assert (again.stored, again.updated, again.addresses) == (0, 0, 0) and again.listed > 0
    assert list(Visit.objects.order_by("id").values_list("id", "source", "event_time", "resource_address")) == before
    assert BackfillRun.objects.filter(state=BackfillState.DONE).count() == 2


def test_visits_deleted_in_the_firehose_stay_deleted_though_listed(serve, history_team):
    server = serve(history_team)
    server.core.faults = CoreFaults(lists_deleted=True)
    streams_sync()
    deleted = set(Visit.objects.filter(deleted_at__isnull=False).values_list("id", flat=True))
    listed_deleted = set(history_team.core_deleted_visits())
    assert deleted and listed_deleted
    history_backfill()
    assert set(Visit.objects.filter(deleted_at__isnull=False).values_list("id", flat=True)) == deleted
    assert not Visit.objects.filter(id__in=listed_deleted, deleted_at__isnull=True).exists()
    assert_history_matches(history_team)


def test_firehose_wins_over_the_backfill_afterwards(serve, history_team):
    serve(history_team)
    history_backfill()
    assert_flags_match()
    assert [r.error for r in streams_sync()] == ["", ""]
    flags_refresh()
    window = {vid for vid, v in history_team.expected_visits().items() if v["snapshot"] and not v["deleted"]}
    assert (
        set(Visit.objects.filter(source=VisitSource.FIREHOSE, deleted_at__isnull=True).values_list("id", flat=True))
        == window
    )
    assert_history_matches(history_team)  # addresses kept, positions the Firehose's
    assert_flags_match()


def test_malformed_core_items_are_rejected_and_the_rest_stored(serve, history_team):
    server = serve(history_team)
    server.core.faults = CoreFaults(malformed=True)  # at the end of the unsplit listing: under the cap here
    history_backfill()
    assert RejectedItem.objects.filter(reason__startswith="Core API visit: ").count() == 5
    assert_history_matches(history_team)


def test_unreachable_leaf_is_recorded_with_an_estimate_printed_and_shown(serve, capsys, client, cast):
    data = team_generate(seed=5, reps=2, weeks=1, history_weeks=1, heavy_rep_visits=10_001, now=DEMO_NOW)
    serve(data)
    with pytest.raises(CommandError) as failed:
        call_command("backfill_visits", "--per-page", "50", "--page-cap", "4")
    assert failed.value.returncode == 3
    run = BackfillRun.objects.get()
    (leaf,) = unreachable_parts(run=run)
    # The leaf was walked newest first, then oldest first, and the two walks did not meet.
    assert (leaf.sort, leaf.parent.sort, leaf.parent.filters) == ("id", "id:desc", leaf.filters)
    assert leaf.filters["creator_id"] == data.heavy_rep_id
    held = set(Visit.objects.values_list("id", flat=True))
    missing = set(data.core_visits()) - held
    assert missing and all(leaf.last_id < vid < leaf.parent.last_id for vid in missing)
    assert abs(leaf.unreachable - len(missing)) <= len(missing) * 0.1
    assert_history_matches(data, missing=missing)
    err = capsys.readouterr().err
    assert "UNREACHABLE" in err and f"about {leaf.unreachable:,} visits" in err
    client.force_login(cast.superuser)
    page = client.get("/status/").content.decode()
    assert f"about {leaf.unreachable:,} visits</span> past Sell's 100-page cap in both sort orders" in page


def test_a_403_switches_the_feature_off_and_says_so(serve, history_team, client, cast):
    server = serve(history_team)
    server.core.faults = CoreFaults(forbidden=frozenset({"visits"}))
    with pytest.raises(CommandError) as failed:
        call_command("backfill_visits")
    assert failed.value.returncode == 2 and "no visits for this account" in str(failed.value)
    state = CoreApiState.objects.get(feature="visits")
    assert not state.available and "HTTP 403" in state.refused_message
    with pytest.raises(BackfillUnavailable):  # off until switched back on, without asking Sell again
        history_backfill()
    assert [r.error for r in streams_sync()] == ["", ""]  # the rest goes on
    client.force_login(cast.superuser)
    page = client.get("/status/").content.decode()
    assert "The history backfill is off: the Core API refused its visits" in page
    server.core.faults = CoreFaults()  # the plan changed
    call_command("backfill_visits", "--ask-again", "--quiet")
    assert CoreApiState.objects.get(feature="visits").available
    assert_history_matches(history_team)


def backfill_command(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "backfill_visits", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow  # backfill_visits in subprocesses
@pytest.mark.django_db(transaction=True)
def test_sigkill_mid_run_then_rerun_ends_exact(serve, history_team):
    server = serve(history_team)
    # A slow rate makes the run last long enough to be killed after its first pages.
    env = command_env(server.url, SELL_RATE_LIMIT="25")
    killed = backfill_command(env, "--per-page", "10", "--every", "0")
    seen = []
    for line in killed.stdout:
        seen.append(line)
        if "stored" in line and " 0 stored" not in line:
            break
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    killed.stdout.close()
    killed.stderr.close()
    run = BackfillRun.objects.get()
    assert run.state == BackfillState.RUNNING and 0 < run.stored < len(history_team.core_visits()), seen
    final = backfill_command(command_env(server.url), "--per-page", "10")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert "backfill complete" in out
    assert BackfillRun.objects.get().state == BackfillState.DONE  # the same run, continued
    assert Visit.objects.count() == len(history_team.core_visits())  # ids are unique: none twice
    assert_history_matches(history_team)
    assert_flags_match()


@pytest.mark.slow  # a rep with 25,000 visits among 41,000, through the real 100 x 100 cap
def test_rep_with_more_than_20000_visits_is_split_and_stored_exactly(serve):
    data = team_generate(seed=7, reps=25, weeks=1, history_weeks=26, heavy_rep_visits=25_000, now=DEMO_NOW)
    serve(data)
    started = time.monotonic()
    run = history_backfill()
    assert not unreachable_parts(run=run)
    heavy = BackfillPart.objects.filter(run=run, filters__creator_id=data.heavy_rep_id)
    assert heavy.filter(state=BackfillPartState.SPLIT, filters__has_key="resource_type").exists()
    # Its biggest leaf (rep, status, outcome, resource type) was past the cap: read newest first,
    # then oldest first, and the two walks met.
    (oldest_first,) = [p for p in heavy.filter(sort="id") if p.parent and p.parent.filters == p.filters]
    assert oldest_first.state == BackfillPartState.DONE and oldest_first.last_id >= oldest_first.parent.last_id
    assert Visit.objects.filter(rep_id=data.heavy_rep_id).count() > 20_000
    assert_history_matches(data)
    assert_flags_match()
    print(f"backfill of {run.stored:,} visits in {time.monotonic() - started:.1f}s, {run.requests} requests")


def test_without_core_api_users_the_backfill_says_what_it_cannot_be_sure_of(serve, history_team, capsys):
    server = serve(history_team)
    server.core.faults = CoreFaults(forbidden=frozenset({"users"}))
    streams_sync()  # the reps the Firehose names
    call_command("backfill_visits", "--per-page", "10", "--page-cap", "3")
    assert "WARNING: the Core API's users are not available" in capsys.readouterr().err
    assert "would miss the visits of a rep named by neither" in BackfillRun.objects.get().warning
    assert_history_matches(history_team)  # every rep here is named by one or the other


def test_a_second_backfill_leaves_a_live_ones_plan_alone(serve, history_team):
    from datetime import timedelta

    from django.utils import timezone

    serve(history_team)
    history_backfill(per_page=10, page_cap=3)
    run = BackfillRun.objects.create(kind="history")  # a plan another host is walking
    BackfillPart.objects.create(run=run, filters={}, sort="id")
    BackfillRun.objects.filter(id=run.id).update(
        lock_owner="elsewhere:4242:1.abcd", lock_expires_at=timezone.now() + timedelta(minutes=1)
    )
    with pytest.raises(CommandError) as failed:
        call_command("backfill_visits", "--quiet")
    assert failed.value.returncode == 4 and "another backfill is walking this plan" in str(failed.value)
    assert BackfillPart.objects.get(run=run).next_page == 1  # not a page of it walked
    BackfillRun.objects.filter(id=run.id).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    call_command("backfill_visits", "--quiet")  # its lease ran out: taken over, and finished
    assert BackfillRun.objects.get(id=run.id).state == BackfillState.DONE


def test_command_prints_progress_and_a_summary(serve, history_team, capsys):
    serve(history_team)
    call_command("backfill_visits", "--per-page", "20", "--every", "0")
    out = capsys.readouterr().out.splitlines()
    progress = [line for line in out if line.startswith("backfill: parts ")]
    assert len(progress) > 5 and all("visits listed" in p and "stored" in p and "visits/s" in p for p in progress)
    total = len(history_team.core_visits())
    assert out[-1].startswith(f"backfill complete: {total:,} visits listed, {total:,} stored, 0 updated")


def test_status_page_shows_the_backfill_plan_and_its_figures(serve, history_team, client, cast):
    client.force_login(cast.superuser)
    assert "No backfill yet: run <code>manage.py backfill_visits</code>" in client.get("/status/").content.decode()
    serve(history_team)
    run = history_backfill(per_page=10, page_cap=3)
    page = client.get("/status/").content.decode()
    parts = BackfillPart.objects.filter(run=run).count()
    assert "History from the Core API" in page and "Backfill</dt><dd>complete" in page
    assert f"<dd>{parts:,} (0 still to walk)</dd>" in page
    assert f"{run.listed:,} listed, {run.stored:,} stored" in page
    assert "none: every query of the plan was read to its end" in page


def test_without_a_token_the_command_says_so_and_plans_nothing(settings):
    settings.SELL_ACCESS_TOKEN = ""
    with pytest.raises(CommandError, match="no SELL_ACCESS_TOKEN") as failed:
        call_command("backfill_visits")
    assert failed.value.returncode == 1 and not BackfillRun.objects.exists()


def test_a_page_rolled_back_by_the_database_is_stored_again_and_counted_once(serve, history_team, monkeypatch):
    from django.db import OperationalError

    from visits.ingest import backfill

    serve(history_team)
    real, calls = backfill.history_store, []

    def flaky(**kwargs):
        calls.append(1)
        result = real(**kwargs)
        if len(calls) in (2, 5):  # after the writes: the rollback must undo them
            raise OperationalError("deadlock detected")
        return result

    monkeypatch.setattr(backfill, "history_store", flaky)
    monkeypatch.setattr(backfill.time, "sleep", lambda seconds: None)
    run = history_backfill(per_page=50)
    total = len(history_team.core_visits())
    assert len(calls) > 5 and (run.listed, run.stored) == (total, total)
    assert sum(BackfillPart.objects.filter(run=run).values_list("listed", flat=True)) == total
    assert_history_matches(history_team)


@pytest.mark.slow  # backfill_visits in a subprocess
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_with_a_sentence_and_the_next_run_continues(serve, history_team):
    server = serve(history_team)
    stopped = backfill_command(command_env(server.url, SELL_RATE_LIMIT="25"), "--per-page", "10", "--every", "0")
    for line in stopped.stdout:
        if "stored" in line and " 0 stored" not in line:
            break
    stopped.send_signal(signal.SIGINT)
    out, err = stopped.communicate(timeout=30)
    assert stopped.returncode == 130 and "run backfill_visits again to continue" in err, err
    assert "Traceback" not in err
    final = backfill_command(command_env(server.url), "--per-page", "10")
    final.communicate(timeout=120)
    assert final.returncode == 0 and BackfillRun.objects.get().state == BackfillState.DONE
    assert_history_matches(history_team)
