"""archive_import: an archive checked (its manifest, schema version, files, SHA-256 and row counts)
and loaded into an empty database in one transaction, so a bad file leaves nothing behind; then
the tallies rebuilt and the flags checked against the rules."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.color import no_style
from django.db import DatabaseError, connection, transaction

from visits.archive.export import PROGRESS_EVERY, rows_text, sqlite_unmapped
from visits.archive.tables import (
    FLOAT,
    FORMAT,
    MANIFEST,
    SCHEMA_VERSION,
    TABLES,
    USERNAME,
    ArchiveTable,
    columns_described,
    sqlite_value_sql,
)
from visits.ingest import map_tally, review_tally, tallies
from visits.models import RULE_BITS, Rep, Visit
from visits.review import rules
from visits.review.frozen import findings_frozen
from visits.review.stored import flags_stored, rejected_of
from visits.review.timeline import rep_timeline

CHUNK = 5000  # rows inserted at a time
READ_BYTES = 1 << 20  # bytes read from the zip at a time
FIELD_LIMIT = 1 << 30  # characters of one value, PostgreSQL's own limit for a text
PROGRESS_BYTES = 32 << 20  # bytes between two progress reports of a COPY
SHA256 = re.compile(r"[0-9a-f]{64}")

Progress = Callable[[str], None]


class ArchiveError(Exception):
    """An archive that cannot be imported, or a database it cannot go into; the message says
    which, and what to do."""


@dataclass
class FlagsCheck:
    """The stored flags against the rules run afresh with this install's settings."""

    flags: int = 0
    differing: int = 0  # (visit, rule) pairs stored but not found, found but not stored, or found otherwise
    visits_differing: int = 0  # visits whose `flagged` or `flag_rules` disagree with their flags
    risks_differing: int = 0  # visits whose `risk` or `risk_tier` disagree with their flags (RISK_* settings)
    examples: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.differing and not self.visits_differing and not self.risks_differing


@dataclass
class ImportResult:
    manifest: dict
    rows: dict[str, int]  # per file
    users_created: list[str]
    flags: FlagsCheck
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)  # seconds: "load", "tallies", "flags check"


# --- Checking the archive ---------------------------------------------------------------------


def archive_open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path} is not a zip file, or it is cut short ({exc}): nothing was imported") from None


def manifest_read(archive: zipfile.ZipFile) -> dict:
    """The manifest, once it is one this visitsdash reads, listing exactly the files it expects
    with their columns, each of them in the zip (and nothing else)."""
    names = set(archive.namelist())
    if MANIFEST not in names:
        raise ArchiveError(f"the zip has no {MANIFEST}: it is not a visitsdash archive")
    try:
        manifest = json.loads(archive.read(MANIFEST).decode())
    except (ValueError, zipfile.BadZipFile) as exc:
        raise ArchiveError(f"{MANIFEST} cannot be read ({exc}): the archive is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveError(f'{MANIFEST} does not describe a visitsdash archive (no "format": "{FORMAT}")')
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        made_by = manifest.get("visitsdash_version", "an unknown version")
        raise ArchiveError(
            f"the archive has schema version {version!r}, made by visitsdash {made_by}; this visitsdash reads "
            f"schema version {SCHEMA_VERSION} only: import it with the visitsdash version that made it"
        )
    entries = manifest.get("files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ArchiveError(f"{MANIFEST} has no list of files: the archive is damaged")
    listed = {e.get("name"): e for e in entries}
    expected = [t.file for t in TABLES]
    if sorted(map(str, listed)) != sorted(expected):
        missing, extra = set(expected) - set(listed), set(listed) - set(expected)
        raise ArchiveError(
            f"{MANIFEST} lists other files than schema version {SCHEMA_VERSION} has"
            + (f"; missing: {', '.join(sorted(missing))}" if missing else "")
            + (f"; unknown: {', '.join(sorted(map(str, extra)))}" if extra else "")
        )
    for table in TABLES:
        entry = listed[table.file]
        if table.file not in names:
            raise ArchiveError(f"{table.file} is listed in {MANIFEST} but missing from the zip: the archive is damaged")
        if not (isinstance(entry.get("rows"), int) and entry["rows"] >= 0) or not SHA256.fullmatch(
            str(entry.get("sha256"))
        ):
            raise ArchiveError(f"{MANIFEST} gives {table.file} no row count or SHA-256: the archive is damaged")
        if entry.get("columns") != columns_described(table):
            raise ArchiveError(f"{MANIFEST} gives {table.file} other columns than schema version {SCHEMA_VERSION} has")
    extra = names - {MANIFEST, *expected}
    if extra:
        raise ArchiveError(f"the zip holds files its manifest does not list: {', '.join(sorted(extra))}")
    return manifest


# --- Checking the database -------------------------------------------------------------------------


def database_contents() -> list[str]:
    """What the database holds that an import would collide with, as "1,234 visits"; empty when
    it is empty. The tables left out are not asked: the import rebuilds the tallies (a database
    emptied by hand keeps rows of zero there) and the flag refresh's queue ends with no visits."""
    present = set(connection.introspection.table_names())
    missing = [t.table for t in TABLES if t.table not in present]
    if missing:
        raise ArchiveError(
            f"the database is not migrated (it has no table {', '.join(missing)}): run `manage.py migrate`, then import"
        )
    held = []
    for table in TABLES:
        count = table.model._default_manager.count()
        if count:
            meta = table.model._meta
            held.append(f"{count:,} {meta.verbose_name if count == 1 else meta.verbose_name_plural}")
    return held


# --- Loading ----------------------------------------------------------------------------------


class HashingReader(io.RawIOBase):
    """A zip member read through, hashing and counting the bytes."""

    def __init__(self, member) -> None:
        self.member = member
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.member.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def drain(self) -> None:
        while self.read(READ_BYTES):
            pass


def archive_import(*, path: Path, progress: Progress | None = None) -> ImportResult:
    """Load the archive at `path` into this (empty) database.

    1. Open the zip and check its manifest (manifest_read): schema version, files, columns.
    2. Refuse a database that holds anything the archive would go into (database_contents).
    3. In one transaction, with the tallies' triggers and the secondary indexes off: each file
       in tables.TABLES' order, streamed from the zip, hashed and counted as read, loaded CHUNK
       rows at a time (the file's bytes straight into COPY on PostgreSQL); decision authors
       missing from the users are created, inactive and without a usable password. A file whose
       SHA-256, row count or header differs from the manifest (or that the database refuses)
       raises ArchiveError and the transaction rolls back.
    4. Still in it: the indexes made again, the id sequences moved past the ids loaded and the
       tables analyzed (PostgreSQL), the tallies rebuilt from the visits (tallies_rebuild puts
       the triggers back; it re-derives the local days only for another DISPLAY_TIME_ZONE).
    5. After the commit: the flags checked against the rules (flags_check); they stay as exported.
    """
    started = time.monotonic()
    say = progress or (lambda text: None)
    with archive_open(Path(path)) as archive:
        manifest = manifest_read(archive)
        held = database_contents()
        if held:
            raise ArchiveError(
                f"the database is not empty: it holds {', '.join(held)}. archive_import loads into an empty "
                "database only: point DATABASE_URL at a new database, run `manage.py migrate`, then import"
            )
        entries = {e["name"]: e for e in manifest["files"]}
        users = UserMap()
        rows = {}
        phases = {}
        with sqlite_unmapped(), transaction.atomic():
            tallies.triggers_drop()
            review_tally.triggers_drop()  # rebuilt with the tallies
            map_tally.triggers_drop()  # and this one
            recreate = indexes_drop()
            for table in TABLES:
                rows[table.file] = table_load(
                    archive=archive, table=table, entry=entries[table.file], users=users, say=say
                )
            say("indexing ...")
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":  # the keys' deferred checks, now: CREATE INDEX waits for none
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                for statement in recreate:
                    cursor.execute(statement)
                for statement in connection.ops.sequence_reset_sql(no_style(), [t.model for t in TABLES]):
                    cursor.execute(statement)
                if connection.vendor == "postgresql":
                    # Statistics for the planner now, not when autovacuum comes: the flags' check
                    # below reads each rep's visits by index only with them.
                    cursor.execute("ANALYZE " + ", ".join(connection.ops.quote_name(t.table) for t in TABLES))
            phases["load"] = time.monotonic() - started
            same_zone = manifest.get("local_day_time_zone") == settings.DISPLAY_TIME_ZONE
            say(f"rebuilding the tallies from the visits{'' if same_zone else ' in ' + settings.DISPLAY_TIME_ZONE} ...")
            tallies.tallies_rebuild(days=not same_zone)  # the local days are those of this zone already
        phases["tallies"] = time.monotonic() - started - phases["load"]
    say("checking the flags against the rules ...")
    with sqlite_unmapped():
        flags = flags_check()
    seconds = time.monotonic() - started
    phases["flags check"] = seconds - phases["load"] - phases["tallies"]
    return ImportResult(
        manifest=manifest, rows=rows, users_created=users.created, flags=flags, seconds=seconds, phases=phases
    )


def indexes_drop() -> list[str]:
    """Drop the archived models' secondary indexes (Meta.indexes) for the load; the statements
    that create them again. An index built once from all the rows takes a fraction of the time
    of one kept up row by row, at random places, while they arrive."""
    editor = connection.schema_editor(collect_sql=True)  # for its SQL only: never entered, so
    editor.deferred_sql = []  # what entering would set (SQLite's refuses to be, in a transaction)
    recreate = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # no deferred key checks pending: DROP INDEX waits for none
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in TABLES:
            for index in table.model._meta.indexes:
                cursor.execute(str(index.remove_sql(table.model, editor)))
                recreate.append(str(index.create_sql(table.model, editor)))
    return recreate


class UserMap:
    """Usernames to user ids, creating the missing users: inactive, without a usable password
    (an admin gives them one, or they stay names on the decisions they made)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.created: list[str] = []

    def resolve(self, usernames: set[str]) -> None:
        wanted = usernames - self.ids.keys()
        if not wanted:
            return
        self.ids.update(User.objects.filter(username__in=wanted).values_list("username", "id"))
        for username in sorted(wanted - self.ids.keys()):
            if not username:
                raise ArchiveError("decisions.csv has a decision without an author")
            user = User(username=username, is_active=False)
            user.set_unusable_password()
            user.save()
            self.ids[username] = user.id
            self.created.append(username)


def table_load(*, archive: zipfile.ZipFile, table: ArchiveTable, entry: dict, users: UserMap, say: Progress) -> int:
    """Load one file; the rows loaded, once its hash and row count match the manifest."""
    started = time.monotonic()
    reader = HashingReader(archive.open(table.file))
    total = entry["rows"]
    try:
        if connection.vendor == "postgresql" and not table.left_out and all(c.kind != USERNAME for c in table.columns):
            loaded = postgres_copy(reader=reader, table=table, size=entry.get("bytes") or 0, say=say)
        else:
            loaded = rows_insert(reader=reader, table=table, users=users, total=total, say=say, started=started)
        reader.drain()  # what follows the last row, if anything: it is hashed too
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{table.file} is damaged in the zip ({exc}): nothing was imported") from None
    except (DatabaseError, ValueError, csv.Error, UnicodeDecodeError) as exc:
        # A damaged file often fails as data first: say so when the hash shows it.
        try:
            reader.drain()
        except zipfile.BadZipFile:
            pass
        hash_check(reader=reader, table=table, entry=entry)
        raise ArchiveError(f"{table.file} could not be loaded: {exc}; nothing was imported") from None
    hash_check(reader=reader, table=table, entry=entry)
    if loaded != total:
        raise ArchiveError(
            f"{table.file} holds {loaded:,} rows where {MANIFEST} says {total:,}: the archive is damaged; "
            "nothing was imported"
        )
    say(rows_text(file=table.file, rows=loaded, total=total, started=started))
    return loaded


def hash_check(*, reader: HashingReader, table: ArchiveTable, entry: dict) -> None:
    if reader.digest.hexdigest() != entry["sha256"]:
        raise ArchiveError(
            f"{table.file} does not match its SHA-256 in {MANIFEST}: the archive is damaged or was edited; "
            "nothing was imported"
        )


def header_check(*, header: list[str], table: ArchiveTable) -> None:
    wanted = [c.name for c in table.columns]
    if header != wanted:
        raise ArchiveError(f"{table.file}'s header is {header!r}, not the columns of its table {wanted!r}")


def postgres_copy(*, reader: HashingReader, table: ArchiveTable, size: int, say: Progress) -> int:
    """The file's bytes straight into COPY ... CSV: PostgreSQL parses them (quoted newlines too);
    an empty cell is NULL where the column may be null, and the empty text elsewhere."""
    quote = connection.ops.quote_name
    buffered = io.BufferedReader(reader, READ_BYTES)
    header = next(csv.reader([buffered.readline().decode()]), [])
    header_check(header=header, table=table)
    columns = ", ".join(quote(c.column) for c in table.columns)
    nullable = ", ".join(quote(c.column) for c in table.columns if c.null)
    not_null = ", ".join(quote(c.column) for c in table.columns if not c.null)
    options = "FORMAT csv" + (f", FORCE_NULL ({nullable})" if nullable else "") + f", FORCE_NOT_NULL ({not_null})"
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {quote(table.table)} ({columns}) FROM STDIN ({options})") as copy:
            reported = 0
            while data := buffered.read(READ_BYTES):
                copy.write(data)
                if reader.size - reported >= PROGRESS_BYTES:
                    say(f"{table.file}: {reader.size / 1e6:,.0f} of {size / 1e6:,.0f} MB")
                    reported = reader.size
        return cursor.cursor.rowcount


def rows_insert(
    *, reader: HashingReader, table: ArchiveTable, users: UserMap, total: int, say: Progress, started: float
) -> int:
    """The file parsed by csv and inserted CHUNK rows at a time (SQLite; and on PostgreSQL the
    decisions, whose authors are usernames, and tables with fields left out, which get their
    defaults here: Django keeps those out of the database's own)."""
    quote = connection.ops.quote_name
    # A text may be as long as the database holds (a rejected item's raw text): not csv's 128 KB.
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    lines = csv.reader(
        io.TextIOWrapper(io.BufferedReader(reader, READ_BYTES), encoding="utf-8", newline=""), strict=True
    )
    header_check(header=next(lines, []), table=table)
    floats = [i for i, c in enumerate(table.columns) if c.kind == FLOAT]
    authors = [i for i, c in enumerate(table.columns) if c.kind == USERNAME]
    width = len(table.columns)
    left_out = [f for f in table.model._meta.concrete_fields if f.name in table.left_out]
    defaults = [f.get_default() for f in left_out]
    columns = ", ".join(quote(name) for name in [*(c.column for c in table.columns), *(f.column for f in left_out)])
    postgres = connection.vendor == "postgresql"
    nullable = [i for i, c in enumerate(table.columns) if c.null] if postgres else []
    values = ", ".join([*(sqlite_value_sql(c) for c in table.columns), *(["%s"] * len(left_out))])
    loaded = reported = 0
    with connection.cursor() as cursor:
        for chunk in chunks(lines):
            if any(len(row) != width for row in chunk):
                bad = next(i for i, row in enumerate(chunk) if len(row) != width)
                raise ValueError(f"row {loaded + bad + 1:,} has {len(chunk[bad])} cells, not {width}")
            for row in chunk:
                for i in floats:
                    row[i] = float(row[i]) if row[i] else None
                for i in nullable:
                    if row[i] == "":
                        row[i] = None
            if defaults:
                for row in chunk:
                    row.extend(defaults)
            if authors:
                users.resolve({row[i] for row in chunk for i in authors})
                for row in chunk:
                    for i in authors:
                        row[i] = users.ids[row[i]]
            if postgres:
                with cursor.cursor.copy(f"COPY {quote(table.table)} ({columns}) FROM STDIN") as copy:
                    for row in chunk:
                        copy.write_row(row)
            else:
                cursor.executemany(f"INSERT INTO {quote(table.table)} ({columns}) VALUES ({values})", chunk)
            loaded += len(chunk)
            if loaded - reported >= PROGRESS_EVERY:
                say(rows_text(file=table.file, rows=loaded, total=max(total, loaded), started=started))
                reported = loaded
    return loaded


def chunks(lines: Iterator[list[str]]) -> Iterator[list[list]]:
    """CHUNK rows at a time: each a list of the text parsed, which the loader turns into values."""
    while chunk := list(itertools.islice(lines, CHUNK)):
        yield chunk


# --- The flags ----------------------------------------------------------------------------------


def flags_check() -> FlagsCheck:
    """The stored flags against the rules run afresh (this install's FLAG_* settings), a rep at a
    time, and each visit's `flagged` and `flag_rules` against its flags. The app keeps the stored
    flags equal to the rules; an archive from an install with other settings, or another version
    of the rules, differs, and its flags stay as they were (flags_rebuild recomputes them). Each
    flagged visit's risk is checked against its stored flags with this install's RISK_* settings."""
    check = FlagsCheck()
    rejected = rejected_of(rep_ids=Rep.objects.values_list("id", flat=True))
    given = rules.risk_settings()
    for rep_id in Rep.objects.order_by("id").values_list("id", flat=True):
        timeline = rep_timeline(rep_id=rep_id)  # the refresh's own plain-SQL read: the ORM's took twice as long
        wanted = {(f.visit_id, f.rule): f for f in rules.rep_findings(timeline.live)}
        stored = flags_stored(visit_ids=timeline.ids)
        # The flags the retention rule froze are wanted as stored (review/frozen.py).
        wanted = findings_frozen(wanted=wanted, stored=stored, removed=timeline.removed, dead=timeline.dead)
        check.flags += len(stored)
        for key in sorted(stored.keys() | wanted.keys()):
            have, want = stored.get(key), wanted.get(key)
            if (
                have is None
                or want is None
                or have.sentence != want.sentence
                or json.loads(have.numbers) != want.numbers
            ):
                check.differing += 1
                if len(check.examples) < 5:
                    what = (
                        "not found by the rules"
                        if want is None
                        else "not stored"
                        if have is None
                        else "found otherwise"
                    )
                    check.examples.append(f"visit {key[0]}, {key[1]}: {what}")
        masks: dict[int, int] = {}
        found: dict[int, list[tuple[str, dict]]] = {}
        for (visit_id, rule), flag in stored.items():
            masks[visit_id] = masks.get(visit_id, 0) | RULE_BITS.get(rule, 0)
            found.setdefault(visit_id, []).append((rule, json.loads(flag.numbers)))
        others = rejected.get(rep_id, set())
        for visit_id in found.keys() | timeline.risks.keys():
            score, tier = rules.risk_score(flags=found.get(visit_id, ()), rejected=len(others) - (visit_id in others),
                                           given=given)  # fmt: skip
            if (score, tier) != timeline.risks.get(visit_id, (0, "")):
                check.risks_differing += 1
                if len(check.examples) < 5:
                    check.examples.append(f"visit {visit_id}: risk {timeline.risks.get(visit_id)} for {score}")
        kept = dict(Visit.objects.filter(rep_id=rep_id).exclude(flag_rules=0).values_list("id", "flag_rules"))
        check.visits_differing += len(timeline.flagged ^ masks.keys()) + sum(
            1 for visit_id in kept.keys() | masks.keys() if kept.get(visit_id, 0) != masks.get(visit_id, 0)
        )
    return check
