"""Rules that live once: the live visits, a rep's label, the sync's error kinds, one pull for the
task and the command, SQL whose tables and columns come from the models, the export's checked
cells named by column, and the one formula rule of every CSV."""

import csv
import importlib
import io
import logging
import re
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import models, transaction

from visits import tasks
from visits.ingest import pages, pull, tallies
from visits.ingest.sync import API_ERROR_KINDS, SyncErrorKind, SyncResult
from visits.management.commands import sync_visits
from visits.models import (
    VISIT_LIVE,
    AllTimeTally,
    Decision,
    DirtyRep,
    Flag,
    MonthTally,
    Outcome,
    Rep,
    TallyState,
    Visit,
    WeekTally,
    YearTally,
)
from visits.reports import export
from visits.review import immutable

pytestmark = pytest.mark.django_db
AT = datetime(2026, 10, 5, 15, 0, tzinfo=UTC)


def visit_row(*, rep_id: int, outcome_id: int | None = None, deleted: bool = False, **fields) -> dict:
    return {
        "rep_id": rep_id, "resource_type": "lead", "resource_id": 7, "visited_at": AT, "created_at": AT,
        "summary": "", "outcome_id": outcome_id, "latitude": 41.8781, "longitude": -87.6298,
        "verification_status": "verified", "sequence": 1, "event_time": AT, "deleted_at": AT if deleted else None,
        **fields,
    }  # fmt: skip


def visits_write(rows: dict[int, dict]) -> None:
    with transaction.atomic():
        pages.visits_upsert(rows=rows)


def csv_rows(response) -> list[dict]:
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(body[1:])))


def map_lookups(client) -> dict:
    """The lookups of the map's single visits (/map/points.json), the whole world."""
    return client.get("/map/points.json?bbox=-180,-90,180,90&zoom=13").json()["lookups"]


# --- Live visits ---------------------------------------------------------------------------


def test_live_visits_are_the_ones_not_deleted_and_keep_the_query_the_index_serves():
    Rep.objects.create(id=1, name="Ana")
    visits_write({10: visit_row(rep_id=1), 11: visit_row(rep_id=1, deleted=True)})
    assert set(Visit.objects.live().values_list("id", flat=True)) == {10}
    # The same SQL as the filter it replaced, and the covering index's own condition.
    assert str(Visit.objects.live().query) == str(Visit.objects.filter(deleted_at__isnull=True).query)
    (cover,) = (index for index in Visit._meta.indexes if index.name == "visit_time_cover")
    assert cover.condition == VISIT_LIVE == models.Q(deleted_at__isnull=True)


# --- A rep's label -------------------------------------------------------------------------


def test_an_unnamed_rep_gets_the_one_label_on_the_map_in_the_reports_and_their_csv(client, cast):
    Rep.objects.create(id=901, name="")
    Rep.objects.create(id=902, name="Ana")
    Outcome.objects.create(id=91, name="")
    visits_write({10: visit_row(rep_id=901, outcome_id=91), 11: visit_row(rep_id=902, outcome_id=91)})
    label, outcome_label = Rep.label_for(901, ""), Outcome.label_for(91, "")
    assert label == str(Rep(id=901)) == "Rep 901" and str(Rep(id=902, name="Ana")) == "Ana"
    assert outcome_label == str(Outcome(id=91)) == "Outcome 91"
    client.force_login(cast.manager)

    lookups = map_lookups(client)
    assert sorted(lookups["reps"]) == ["Ana", label] and lookups["outcomes"] == [outcome_label]
    reps = {int(r["rep_id"]): r["rep_name"] for r in csv_rows(client.get("/reports/reps.csv"))}
    assert reps == {901: label, 902: "Ana"}
    outcomes = {int(r["outcome_id"]): r["outcome_name"] for r in csv_rows(client.get("/reports/outcomes.csv"))}
    assert outcomes == {91: outcome_label}
    assert label in client.get("/reports/reps/").content.decode()
    matrix = csv_rows(client.get("/reports/matrix.csv"))
    assert {r["rep_name"] for r in matrix} == {label, "Ana"} and {r["outcome_name"] for r in matrix} == {outcome_label}


# --- Sync error kinds and the one pull -----------------------------------------------------


def test_error_kinds_are_an_enum_of_the_strings_results_have_always_carried():
    assert {kind.value for kind in SyncErrorKind} == {
        "token", "unreachable", "config", "rejected", "busy", "lock_lost", "crashed", "expired",
    }  # fmt: skip
    assert SyncErrorKind.CRASHED == "crashed" and f"{SyncErrorKind.LOCK_LOST}" == "lock_lost"
    assert API_ERROR_KINDS == {"token", "unreachable", "config"}


def test_one_pull_syncs_both_streams_then_flags_the_reps_that_changed(serve, small_team):
    serve(small_team)
    slept = []
    result = pull.visits_pull(session_seconds=0, sleep=slept.append)
    assert result.polls == 1 and slept == [] and result.caught_up and not result.errors and result.failed is None
    assert [r.stream for r in result.results] == ["users", "visits"]
    assert result.applied == sum(r.applied for r in result.results) > 0
    # From an empty database: every rep with a visit was recomputed, and every flag is new.
    assert result.flagged_reps == Visit.objects.values("rep_id").distinct().count() and not DirtyRep.objects.exists()
    assert result.flag_changes == Flag.objects.count() > 0


def test_the_task_and_the_command_both_word_what_visits_pull_returns(monkeypatch):
    calls = []
    failed = SyncResult(stream="visits", pages=2, applied=5, error="Sell said no", error_kind=SyncErrorKind.REJECTED)

    def fake_pull(**kwargs):
        calls.append(kwargs)
        return pull.PullResult(
            results=[SyncResult(stream="users", at_top=True), failed], polls=3, applied=9, rejected=1, flagged_reps=4
        )

    monkeypatch.setattr(tasks, "visits_pull", fake_pull)
    monkeypatch.setattr(sync_visits, "visits_pull", fake_pull)
    summary = tasks.sync_streams_task(session_seconds=7)
    assert summary == "3 polls, 9 events applied, 1 rejected, flags of 4 reps recomputed; visits: Sell said no"
    sync_log = logging.getLogger("visits.ingest.sync")
    level = sync_log.level
    try:
        with pytest.raises(CommandError, match="visits stream: Sell said no"):
            call_command("sync_visits", "--quiet", "--max-seconds", "2")
    finally:
        sync_log.setLevel(level)  # the command quietens the sync's own log
    assert calls[0]["session_seconds"] == 7 and calls[1]["max_seconds"] == 2


# --- SQL names from the models --------------------------------------------------------------

RENAMED = (Visit, Flag, MonthTally, YearTally, AllTimeTally, WeekTally, TallyState, Decision)


class RecordingConnection:
    """Just enough of a database connection to record the SQL a function runs."""

    def __init__(self, vendor: str, rows: list | None = None) -> None:
        self.vendor, self.rows, self.statements = vendor, rows or [], []

    def cursor(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, params=None):
        self.statements.append(sql)

    def executemany(self, sql, params):
        self.statements.append(sql)

    def fetchmany(self, size):
        rows, self.rows = self.rows, []
        return rows

    def fetchone(self):
        return None

    rowcount = 0


def sql_built() -> list[str]:
    """Every piece of raw SQL the app builds for ingestion, the tallies, decisions and the export."""
    for cached in (pages._upsert_parts, pages._postgres_upsert_sql, pages._sqlite_upsert_sql, pages._sequences_sql):
        cached.cache_clear()
    built = [
        *tallies.sqlite_triggers(), *tallies.postgres_triggers(),
        *(tallies._rebuild_sql(t, vendor=v) for t in tallies.TALLIES for v in ("sqlite", "postgresql")),
        immutable.TABLE,  # the table the decision triggers guard
        *export.FLAG_RULES_SQL.values(),
        *pages._postgres_upsert_sql(), pages._sqlite_upsert_sql(2), pages._sequences_sql(Visit),
    ]  # fmt: skip
    for vendor, zone in (("postgresql", "UTC"), ("sqlite", "UTC"), ("sqlite", "Europe/Berlin")):
        recorder = RecordingConnection(vendor, rows=[(1, "2026-01-01 00:00:00")])
        tallies.local_days_fill(connection=recorder, zone_name=zone)
        tallies.tallies_time_zone(connection=recorder)
        built += recorder.statements
    return built


def words(sql: str) -> set[str]:
    """The identifiers of a statement, outside its string literals ('month', ';')."""
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", re.sub(r"'[^']*'", "''", sql)))


def test_raw_sql_takes_every_table_and_column_name_from_the_models(monkeypatch):
    original = sql_built()
    old_tables = {model._meta.db_table for model in RENAMED}
    old_columns = {f.column for model in RENAMED for f in model._meta.concrete_fields}
    assert old_tables <= set().union(*map(words, original))  # what the check below looks for is there today
    try:
        with monkeypatch.context() as patch:
            for model in RENAMED:
                patch.setattr(model._meta, "db_table", f"renamed_{model._meta.model_name}")
                for field in model._meta.concrete_fields:
                    patch.setattr(field, "column", f"renamed_{field.column}")
            for module in (tallies, immutable, export):
                importlib.reload(module)  # the SQL is built once, at import
            renamed = sql_built()
    finally:
        for module in (tallies, immutable, export):
            importlib.reload(module)
        sql_built()  # the caches again hold the real names
    found = set().union(*map(words, renamed))
    assert not found & old_tables, sorted(found & old_tables)
    assert not found & old_columns, sorted(found & old_columns)
    assert {f"renamed_{model._meta.model_name}" for model in RENAMED} <= found
    assert sql_built() == original


# --- The export's cells and the formula rule ------------------------------------------------


def field_of(lookup: str) -> models.Field:
    model, *path, name = [Visit, *lookup.split("__")]
    for step in path:
        model = model._meta.get_field(step).related_model
    return model._meta.get_field(name)


def free_text_columns() -> set[str]:
    """The export's columns holding free text from Sell (not a number, a time or a status)."""
    return {
        header
        for header, lookup in export.VISIT_COLUMNS.items()
        if isinstance(field_of(lookup), models.CharField | models.TextField) and not field_of(lookup).choices
    }


def test_the_export_checks_exactly_its_free_text_columns_found_by_name():
    free_text = free_text_columns()
    times = {
        header for header, lookup in export.VISIT_COLUMNS.items() if isinstance(field_of(lookup), models.DateTimeField)
    }
    headers = list(export.VISIT_COLUMNS)
    assert set(export.TEXT_COLUMNS) == free_text and {headers[i] for i in export.TEXT_CELLS} == free_text
    assert set(export.TIME_COLUMNS) == times and {headers[i] for i in export.TIME_CELLS} == times
    assert headers[export.ID_CELL] == "id"


@pytest.mark.parametrize("start", export.FORMULA_STARTS)
def test_every_csv_path_escapes_a_formula_by_the_one_rule(client, cast, start):
    name = f"{start}cmd|' /C calc'!A0"
    assert len(start) == 1 and export.text_safe(name) == export.cell_safe(name) == "'" + name
    assert export.text_safe(f"a{start}") == f"a{start}" and export.text_safe("") == "" and export.cell_safe(-5) == -5
    Rep.objects.create(id=901, name=name)
    Outcome.objects.create(id=91, name=name)
    visits_write({10: visit_row(rep_id=901, outcome_id=91, resource_type=name, summary=name, longitude=-87.5)})
    client.force_login(cast.manager)

    (visit,) = csv_rows(client.get("/visits.csv"))  # rows checked in the export's own loop
    (rep,) = csv_rows(client.get("/reports/reps.csv"))  # rows checked by csv_lines
    escaped = {header for header, value in visit.items() if value.startswith("'")}
    assert escaped == free_text_columns() and all(visit[h] == export.text_safe(name) for h in escaped)
    assert visit["longitude"] == "-87.5" and rep["rep_name"] == export.text_safe(name)
