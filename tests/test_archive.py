"""The full archive: every model archived or left out for a reason; an export of a real sync (with
decisions, rejected items, gaps and hostile text) loads back row for row, on SQLite and into a
fresh PostgreSQL in a subprocess; a damaged archive or a non-empty database is refused, and a
refused import leaves nothing behind."""

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError

from visits.archive import tables
from visits.archive.export import archive_export
from visits.archive.load import ArchiveError, archive_import
from visits.ingest.pull import visits_pull
from visits.ingest.tallies import local_day
from visits.models import (
    BackfillPart,
    BackfillRun,
    CoreApiState,
    Decision,
    DeletedVisit,
    Flag,
    Gap,
    Incident,
    ReconcileDay,
    RejectedItem,
    Rep,
    SyncState,
    Visit,
    VisitSource,
)
from visits.review.flags import flags_rebuild
from visits.review.immutable import decision_triggers_drop, decision_triggers_install

from .archive_rows import tables_rows
from .conftest import assert_flags_match, user_make

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
POSTGRES_TARGET = "visitsdash_archive2"

# Text that must come back exactly: markup, spreadsheet formulas, CSV's own characters, newlines of
# every kind inside a value, PostgreSQL COPY's end-of-data marker on a line of its own, control
# characters (NUL aside: PostgreSQL text cannot hold it), and text from beyond ASCII.
HOSTILE = [
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    '=HYPERLINK("http://evil.example/","click")',
    "+1+1", "-2", "@SUM(A1)", "\tstarts with a tab", "\rstarts with a carriage return",
    'a "quoted", comma-separated value',
    "line one\nline two\r\nline three\rline four",
    "\\.", "before\n\\.\nafter", "\\N", "back\\slash\\",
    "\x01\x07\x08\x0b\x0c\x1b\x1f\x7f control",
    "é ü ß 日本語 🙂 \u2028 \u202e RTL",
    "\ufeffstarts with a byte-order mark",
    "  spaces around  ",
]  # fmt: skip


def fill(serve, small_team, *, decisions: bool = True) -> None:
    """A real sync of the small team against the demo Firehose (updates, deletes, malformed items
    and a tombstone), then what the sync alone does not make: history visits from the Core API,
    team fields, hostile text, decisions (two authors, a visit decided twice), a gap, a rejected
    item, Core API states; the flags recomputed to match."""
    serve(small_team)
    pull = visits_pull()
    assert not pull.errors, pull.errors
    assert Visit.objects.filter(deleted_at__isnull=False).exists() and DeletedVisit.objects.exists()
    assert RejectedItem.objects.exists()
    reps = list(Rep.objects.order_by("id"))
    for i, rep in enumerate(reps):
        rep.team_name, rep.group_name = HOSTILE[i % len(HOSTILE)], HOSTILE[(i + 1) % len(HOSTILE)]
        rep.group_id, rep.reports_to, rep.timezone = 900 + i, reps[0].id if i else None, "UTC+01:00"
        rep.core_synced_at = datetime(2026, 1, 20, 15, 0, 0, 123456, tzinfo=UTC)
        rep.save()
    visits = list(Visit.objects.live().order_by("id")[: len(HOSTILE)])
    for visit, text in zip(visits, HOSTILE, strict=False):
        Visit.objects.filter(id=visit.id).update(summary=text, resource_address=text[::-1])
    Visit.objects.filter(id=visits[0].id).update(latitude=1e-07, longitude=-87.00000000000001)
    start = datetime(2025, 6, 1, 9, 0, 0, 500000, tzinfo=UTC)
    for n in range(5):  # history from the Core API: statuses, an address, no position
        at = start + timedelta(days=n, microseconds=n)
        Visit.objects.create(
            id=900_000 + n, rep=reps[n % len(reps)], resource_type="contact", resource_id=None, visited_at=at,
            created_at=at, summary="", outcome=None, verification_status="location_unknown", sequence=0,
            event_time=at, source=VisitSource.CORE_API, resource_address=HOSTILE[n],
            local_day=local_day(visited_at=at, zone_name=django_settings.DISPLAY_TIME_ZONE),
        )  # fmt: skip
    flags_rebuild()
    if decisions:
        reviewer, second = user_make("reviewer"), user_make("second.reviewer")
        flagged = list(Visit.objects.filter(flagged=True).order_by("id")[:6])
        for visit, text in zip(flagged, HOSTILE, strict=False):
            Decision.objects.create(visit=visit, kind="follow_up", note=text, decided_by=reviewer)
        Decision.objects.create(visit=flagged[0], kind="reject", note="", decided_by=second)
    gap = Gap.objects.create(
        stream="visits", start=start, end=start + timedelta(hours=3), reason=HOSTILE[1], filled_at=start,
        filled_visits=7, fill_error=HOSTILE[4],
    )  # fmt: skip
    Incident.objects.create(kind="gap", gap=gap, message=HOSTILE[2], opened_at=start, mailed_at=start)
    Incident.objects.create(kind="token", message=HOSTILE[3], opened_at=start, closed_at=start, mail_error="x")
    run = BackfillRun.objects.create(
        kind="gap", gap=gap, state="done", started_at=start, warning=HOSTILE[5], lock_owner="host:1", stored=3
    )
    top = BackfillPart.objects.create(run=run, filters={}, state="split", listed=10_000, first_id=1, last_id=9)
    BackfillPart.objects.create(run=run, parent=top, filters={"creator_id": 7, "note": HOSTILE[6]}, sort="id:desc")
    ReconcileDay.objects.create(day=start.date(), core_visits=12, held_visits=10, filled=2, checked_at=start)
    RejectedItem.objects.create(stream="visits", digest="f" * 64, raw=json.dumps(HOSTILE), reason=HOSTILE[0])
    CoreApiState.objects.update_or_create(feature="users", defaults={"last_success_at": start})
    CoreApiState.objects.update_or_create(
        feature="visits", defaults={"available": False, "refused_at": start, "refused_message": HOSTILE[8]}
    )
    SyncState.objects.filter(stream="visits").update(lock_owner="host:123", lock_expires_at=start)
    assert_flags_match()


def wipe() -> None:
    """Empty every table an import writes, as a fresh database would be (inside the test's
    transaction, which rolls it all back)."""
    decision_triggers_drop()
    Decision.objects.all()._raw_delete(Decision.objects.db)
    decision_triggers_install()
    for model in (
        Flag, Incident, BackfillPart, BackfillRun, ReconcileDay, Visit, Rep, DeletedVisit, Gap, RejectedItem,
        SyncState, CoreApiState,
    ):  # fmt: skip
        model.objects.all().delete()
    from visits.models import Outcome

    Outcome.objects.all().delete()
    assert not Visit.objects.exists()


def indexes_held() -> dict[str, set[str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        return {t.table: set(connection.introspection.get_constraints(cursor, t.table)) for t in tables.TABLES}


def expected_after_import(rows: dict) -> dict:
    """What an import gives: the same rows, the decision authors inactive (created by it)."""
    return {**rows, "decision authors": [[name, False] for name, _ in rows["decision authors"]]}


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": django_settings.SECRET_KEY}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def import_elsewhere(*, archive: Path, database_url: str) -> tuple[dict, str]:
    """`manage.py migrate` and `manage.py archive_import` on another database, in subprocesses;
    its rows as read there, and the import's output."""
    migrated = manage("manage.py", "migrate", "--no-input", "-v0", database_url=database_url)
    assert migrated.returncode == 0, migrated.stderr
    imported = manage("manage.py", "archive_import", str(archive), database_url=database_url)
    assert imported.returncode == 0, imported.stderr
    read = manage("-m", "tests.archive_rows", database_url=database_url)
    assert read.returncode == 0, read.stderr
    return json.loads(read.stdout.strip().splitlines()[-1]), imported.stdout


def assert_same_rows(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name]), f"{name}: {len(got[name])} rows, want {len(want[name])}"
        differing = [(g, w) for g, w in zip(got[name], want[name], strict=True) if g != w]
        assert not differing, f"{name}: {len(differing)} rows differ, e.g. (got, want) {differing[:2]}"


# --- What is archived --------------------------------------------------------------------------


def test_every_model_of_the_app_is_archived_or_listed_as_left_out_with_a_reason():
    concrete = {m._meta.label for m in apps.get_app_config("visits").get_models() if not m._meta.proxy}
    archived = {t.model._meta.label for t in tables.TABLES}
    unlisted = concrete - archived - set(tables.NOT_ARCHIVED)
    assert not unlisted, f"add these models to archive/tables.py's TABLES or NOT_ARCHIVED (with why): {unlisted}"
    assert not archived & set(tables.NOT_ARCHIVED), "a model is both archived and left out"
    assert set(tables.NOT_ARCHIVED) <= concrete, "NOT_ARCHIVED names models that are gone"
    assert all(len(reason) > 20 for reason in tables.NOT_ARCHIVED.values())


def test_every_field_of_an_archived_model_is_a_column_or_left_out_with_a_reason():
    for table in tables.TABLES:
        fields = {f.name for f in table.model._meta.concrete_fields}
        columns = {f.name for f in table.model._meta.concrete_fields if f.column in {c.column for c in table.columns}}
        assert columns | set(table.left_out) == fields, table.file
        assert not columns & set(table.left_out), table.file
        assert all(len(reason) > 10 for reason in table.left_out.values()), table.file
    assert len({t.file for t in tables.TABLES}) == len(tables.TABLES)


def test_the_manifest_gives_every_files_rows_sha256_and_columns(serve, small_team, tmp_path):
    fill(serve, small_team)
    result = archive_export(path=tmp_path / "a.zip")
    assert (tmp_path / "a.zip").stat().st_mode & 0o077 == 0, "others may read names and addresses"
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"], "the temporary file is left"
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert manifest == result.manifest
        assert manifest["schema_version"] == tables.SCHEMA_VERSION and manifest["visitsdash_version"]
        assert sorted(archive.namelist()) == sorted(["manifest.json", *(t.file for t in tables.TABLES)])
        for entry, table in zip(manifest["files"], tables.TABLES, strict=True):
            data = archive.read(entry["name"])
            assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
            assert rows[0] == [c["name"] for c in entry["columns"]]
            assert len(rows) - 1 == entry["rows"] == table.model.objects.count(), entry["name"]
    visits = {
        row["id"]: row
        for row in csv.DictReader(io.StringIO(zipfile.Path(tmp_path / "a.zip", "visits.csv").read_text(newline="")))
    }
    for text in HOSTILE:  # verbatim: no formula escaping, no newline translation
        assert any(row["summary"] == text for row in visits.values()), text
    assert Visit.objects.filter(deleted_at__isnull=False).count() == sum(1 for r in visits.values() if r["deleted_at"])
    decisions = list(csv.DictReader(io.StringIO(zipfile.Path(tmp_path / "a.zip", "decisions.csv").read_text())))
    assert {d["decided_by"] for d in decisions} == {"reviewer", "second.reviewer"}


# --- Round trips -------------------------------------------------------------------------------


def test_an_export_imported_into_the_emptied_database_gives_the_same_rows(serve, small_team, tmp_path):
    fill(serve, small_team)
    before, indexes = tables_rows(), indexes_held()
    archive_export(path=tmp_path / "a.zip")
    wipe()
    result = archive_import(path=tmp_path / "a.zip")
    assert result.flags.equal and result.flags.flags == Flag.objects.count() > 0
    assert result.users_created == []  # the authors are still there: linked by username
    assert_same_rows(tables_rows(), before)
    assert indexes_held() == indexes  # dropped for the load, made again
    assert_flags_match()  # and the tallies, rebuilt, equal a count of the visits


@pytest.mark.slow
def test_a_round_trip_into_a_fresh_sqlite_database_gives_the_same_rows(serve, small_team, tmp_path):
    fill(serve, small_team)
    before = tables_rows()
    archive_export(path=tmp_path / "a.zip")
    got, output = import_elsewhere(archive=tmp_path / "a.zip", database_url=f"sqlite:///{tmp_path / 'copy.sqlite3'}")
    assert_same_rows(got, expected_after_import(before))
    assert "2 decision authors created as inactive users" in output and "flags: the" in output


@pytest.mark.slow
def test_a_round_trip_into_a_fresh_postgresql_database_gives_the_same_rows(serve, small_team, tmp_path):
    import psycopg

    fill(serve, small_team)
    before = tables_rows()
    archive_export(path=tmp_path / "a.zip")
    with psycopg.connect(POSTGRES_SERVER, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_TARGET}"')
        conn.execute(f'CREATE DATABASE "{POSTGRES_TARGET}"')
    target = POSTGRES_SERVER.rsplit("/", 1)[0] + "/" + POSTGRES_TARGET
    got, output = import_elsewhere(archive=tmp_path / "a.zip", database_url=target)
    assert_same_rows(got, expected_after_import(before))
    assert "equal what this install's rules find" in output
    # And back: the PostgreSQL copy, exported there, gives the same values in the same files.
    again = manage("manage.py", "archive_export", str(tmp_path / "b.zip"), "--quiet", database_url=target)
    assert again.returncode == 0, again.stderr
    assert files_read(tmp_path / "b.zip") == files_read(tmp_path / "a.zip")


def files_read(path: Path) -> dict[str, list[list]]:
    """Every file's rows, each value as its column's type says (a float's text, or a JSON object's
    key order, may differ between databases; the value may not)."""
    found = {}
    with zipfile.ZipFile(path) as archive:
        for entry in json.loads(archive.read("manifest.json"))["files"]:
            kinds = [c["type"] for c in entry["columns"]]
            rows = list(csv.reader(io.StringIO(archive.read(entry["name"]).decode(), newline="")))
            found[entry["name"]] = [
                [
                    (float(v) if v else None) if k == "float" else json.loads(v) if k == "json" else v
                    for k, v in zip(kinds, row, strict=True)
                ]
                for row in rows[1:]
            ]
    return found


# --- Refusals ----------------------------------------------------------------------------------


@pytest.fixture
def archive(serve, small_team, tmp_path) -> Path:
    """An archive of the filled database, which is then emptied for the import."""
    fill(serve, small_team)
    path = tmp_path / "a.zip"
    archive_export(path=path)
    wipe()
    return path


def zip_rewrite(source: Path, target: Path, *, change) -> Path:
    """A copy of the archive with `change(name, data)` applied to each member (None drops it)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for name in old.namelist():
            data = change(name, old.read(name))
            if data is not None:
                new.writestr(name, data)
    return target


def manifest_change(path: Path, target: Path, edit) -> Path:
    def change(name, data):
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        edit(manifest)
        return json.dumps(manifest)

    return zip_rewrite(path, target, change=change)


def assert_refused(path: Path, *words: str) -> None:
    with pytest.raises(ArchiveError) as refused:
        archive_import(path=path)
    for word in words:
        assert word in str(refused.value), str(refused.value)
    assert not Visit.objects.exists() and not Rep.objects.exists() and not Flag.objects.exists(), "a partial import"


def test_a_database_that_is_not_empty_is_refused_naming_what_it_holds(serve, small_team, tmp_path):
    fill(serve, small_team)
    archive_export(path=tmp_path / "a.zip")
    visits, flags = Visit.objects.count(), Flag.objects.count()
    with pytest.raises(CommandError) as refused:
        call_command("archive_import", str(tmp_path / "a.zip"))
    message = str(refused.value)
    assert "not empty" in message and f"{visits:,} visits" in message and f"{flags:,} flags" in message
    assert "reps" in message and "decisions" in message and "migrate" in message
    assert Visit.objects.count() == visits  # nothing added


def test_a_file_whose_hash_does_not_match_is_refused_and_nothing_is_imported(archive, tmp_path):
    def change(name, data):  # one character of the last file's text, the rows still well formed
        return data.replace(b"Sell", b"Sall", 1) if name == "flags.csv" else data

    assert_refused(zip_rewrite(archive, tmp_path / "b.zip", change=change), "flags.csv", "SHA-256", "nothing")


def test_a_row_count_that_does_not_match_is_refused(archive, tmp_path):
    def edit(manifest):
        next(f for f in manifest["files"] if f["name"] == "visits.csv")["rows"] += 1

    assert_refused(manifest_change(archive, tmp_path / "b.zip", edit), "visits.csv", "rows", "says")


def test_a_cut_short_zip_is_refused(archive, tmp_path):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert_refused(cut, "not a zip file, or it is cut short")
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(4096))
    assert_refused(garbage, "not a zip file")


def test_damaged_data_inside_the_zip_is_refused(archive, tmp_path):
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(archive) as old, zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as new:
        for name in old.namelist():
            new.writestr(name, old.read(name))
    data = bytearray(damaged.read_bytes())
    with zipfile.ZipFile(damaged) as z:
        info = z.getinfo("visits.csv")
    spot = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    data[spot] ^= 0x55  # the stored bytes change, the recorded CRC-32 does not
    damaged.write_bytes(bytes(data))
    assert_refused(damaged, "visits.csv")


def test_a_missing_file_is_refused(archive, tmp_path):
    missing = zip_rewrite(archive, tmp_path / "b.zip", change=lambda name, data: None if name == "gaps.csv" else data)
    assert_refused(missing, "gaps.csv", "missing")
    no_manifest = zip_rewrite(archive, tmp_path / "c.zip", change=lambda n, d: None if n == "manifest.json" else d)
    assert_refused(no_manifest, "no manifest.json")
    extra = zip_rewrite(archive, tmp_path / "d.zip", change=lambda name, data: data)
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("notes.txt", "hello")
    assert_refused(extra, "notes.txt")


def test_an_unknown_schema_version_is_refused(archive, tmp_path):
    later = tables.SCHEMA_VERSION + 1
    future = manifest_change(archive, tmp_path / "b.zip", lambda m: m.update(schema_version=later))
    assert_refused(future, f"schema version {later}", f"reads schema version {tables.SCHEMA_VERSION}")
    other_columns = manifest_change(archive, tmp_path / "c.zip", lambda m: m["files"][2]["columns"].pop())
    assert_refused(other_columns, "visits.csv", "columns")


def test_an_import_command_refusal_is_one_clear_line(archive, tmp_path):
    with pytest.raises(CommandError) as refused:
        call_command("archive_import", str(tmp_path / "nowhere.zip"))
    assert "no such file" in str(refused.value)


def test_flags_that_differ_from_this_installs_rules_are_kept_and_reported(archive, settings):
    settings.FLAG_LATE_HOURS = 0.1  # stricter than the exporter's: more visits were logged late
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("archive_import", str(archive), stdout=stdout, stderr=stderr)
    assert "differ from what this install's rules find" in stderr.getvalue() and "flags_rebuild" in stderr.getvalue()
    with zipfile.ZipFile(archive) as z:
        exported = next(f for f in json.loads(z.read("manifest.json"))["files"] if f["name"] == "flags.csv")
    assert Flag.objects.count() == exported["rows"]  # kept as exported


def test_an_import_under_another_time_zone_derives_the_local_days_and_tallies_afresh(archive, settings):
    settings.DISPLAY_TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: most visits fall on another day
    archive_import(path=archive)
    moved = sum(1 for v in Visit.objects.all() if v.local_day != v.visited_at.astimezone(UTC).date())
    assert moved > Visit.objects.count() // 3
    assert_flags_match()  # the tallies, counted in Python in this zone


def test_an_empty_database_exports_and_imports_as_empty_files(tmp_path):
    result = archive_export(path=tmp_path / "a.zip")
    assert all(f["rows"] == 0 for f in result.manifest["files"])
    imported = archive_import(path=tmp_path / "a.zip")
    assert sum(imported.rows.values()) == 0 and imported.flags.equal


def test_a_text_longer_than_csvs_default_field_limit_comes_back(archive, tmp_path):
    huge = "{" + "x" * 300_000 + "}"  # Python's csv refuses fields over 131,072 characters by default
    RejectedItem.objects.create(stream="users", digest="e" * 64, raw=huge, reason="too long")
    archive_export(path=tmp_path / "b.zip")
    RejectedItem.objects.all().delete()
    archive_import(path=tmp_path / "b.zip")
    assert RejectedItem.objects.get(digest="e" * 64).raw == huge


def test_a_database_not_migrated_is_refused_with_what_to_do(archive, monkeypatch):
    from django.db import connection

    names = connection.introspection.table_names
    monkeypatch.setattr(
        connection.introspection, "table_names", lambda *a, **k: [n for n in names(*a, **k) if n != "visits_gap"]
    )
    assert_refused(archive, "not migrated", "manage.py migrate")


@pytest.mark.django_db(transaction=True)
def test_an_export_reads_one_snapshot_while_a_sync_writes(tmp_path):
    """Outside any transaction, as the command runs: a write by another connection during the
    export goes through at once (no lock held: SQLite's deferred read) and is not in the files."""
    from .conftest import database_url

    url = database_url()
    written = []

    def write_a_gap(text: str) -> None:
        if not text.startswith("visits.csv") or written:
            return
        sql = (
            'INSERT INTO visits_gap (stream, start, "end", reason, recorded_at, filled_visits, fill_error) '
            "VALUES ('visits', NULL, '2026-01-01 00:00:00', 'during the export', '2026-01-01 00:00:00', 0, '')"
        )
        if url.startswith("sqlite"):
            import sqlite3

            with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=2) as other:
                other.execute(sql)
        else:
            import psycopg

            with psycopg.connect(url, autocommit=True) as other:
                other.execute(sql)
        written.append(text)

    result = archive_export(path=tmp_path / "a.zip", progress=write_a_gap)
    assert written and Gap.objects.filter(reason="during the export").exists()
    assert next(f for f in result.manifest["files"] if f["name"] == "gaps.csv")["rows"] == 0


def test_both_commands_print_their_progress_and_a_summary(serve, small_team, tmp_path):
    fill(serve, small_team)
    out = io.StringIO()
    call_command("archive_export", str(tmp_path / "a.zip"), stdout=out)
    lines = out.getvalue().splitlines()
    visits = Visit.objects.count()
    assert f"visits.csv: {visits:,} of {visits:,} rows (100%)" in lines
    assert lines[-1].startswith(f"archive written to {tmp_path / 'a.zip'}: ") and "rows/s" in lines[-1]
    wipe()
    out = io.StringIO()
    call_command("archive_import", str(tmp_path / "a.zip"), stdout=out)
    text = out.getvalue()
    assert f"visits.csv: {visits:,} of {visits:,} rows (100%)" in text
    assert "rebuilding the tallies" in text and "checking the flags" in text
    assert f"({visits:,} visits) from an archive of " in text and "flags: the " in text


def test_a_failed_export_leaves_the_previous_archive_and_no_partial_file(serve, small_team, tmp_path, monkeypatch):
    from visits.archive import export

    fill(serve, small_team)
    path = tmp_path / "a.zip"
    archive_export(path=path)
    before = path.read_bytes()
    real = export.table_write

    def failing(*, table, **kwargs):
        if table.file == "flags.csv":
            raise OSError("No space left on device")
        return real(table=table, **kwargs)

    monkeypatch.setattr(export, "table_write", failing)
    with pytest.raises(CommandError, match="No space left on device"):
        call_command("archive_export", str(path), "--quiet")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"]
