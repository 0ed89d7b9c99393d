"""archive_export: every archived table, read in one snapshot of the database and written as CSV
into a zip while it is read (memory stays flat at a million visits), each file hashed as it is
written, manifest.json last."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import queue
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from visits import __version__
from visits.archive.tables import (
    FORMAT,
    MANIFEST,
    NOT_ARCHIVED,
    SCHEMA_VERSION,
    TABLES,
    columns_described,
    select_sql,
    sqlite_line_sql,
)
from visits.ingest.tallies import tallies_time_zone
from visits.models import DirtyRep

CHUNK = 5000  # rows fetched and written at a time (SQLite)
WRITE_BYTES = 1 << 20  # bytes of PostgreSQL's CSV handed to the writer at a time
PROGRESS_EVERY = 100_000  # rows between two progress reports

# Told a sentence on the work: every PROGRESS_EVERY rows of a file, and at its end.
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict
    seconds: float

    @property
    def rows(self) -> int:
        return sum(f["rows"] for f in self.manifest["files"])


def time_text(moment) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def read_snapshot() -> Iterator[None]:
    """Every read inside sees the database as of one moment, while a sync may write meanwhile.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite: a deferred transaction, whose
    first read fixes the snapshot (WAL); Django's own would begin IMMEDIATE (settings.py) and hold
    the write lock, stopping the sync for the whole export. Inside a transaction already (a test,
    a caller's), its reads are consistent as they are.
    """
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    with sqlite_unmapped():
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("COMMIT")  # it only read


@contextlib.contextmanager
def sqlite_unmapped() -> Iterator[None]:
    """SQLite's memory map (settings.SQLITE_MMAP_MB) off meanwhile. The export and the import read
    every page once: through the map they would all count as this process's memory by the end
    (450 MB of an import at a million visits), for no speed (measured)."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA mmap_size")
        mapped = int(cursor.fetchone()[0])
        cursor.execute("PRAGMA mmap_size = 0")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA mmap_size = {mapped}")


def archive_export(*, path: Path, progress: Progress | None = None, compress_level: int = 1) -> ExportResult:
    """Write the whole archive to `path` (a zip); returns its manifest.

    1. Write a temporary file beside `path` (readable by its owner only), renamed over it once
       complete: a failed export never leaves a partial archive under that name.
    2. Read every table in one snapshot (read_snapshot), so that the files agree with each other.
    3. Per table (tables.TABLES, in order), in primary key order: PostgreSQL writes the CSV
       itself (COPY ... TO STDOUT); SQLite makes each row's line but its floats, CHUNK at a time.
       A writer thread hashes, counts and compresses the bytes into the zip member.
    4. Write manifest.json last: the schema version, when, by which visitsdash, and every file's
       rows, bytes, SHA-256 and columns.
    """
    started = time.monotonic()
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    generated_at = timezone.now()
    files = []
    try:
        # Readable by its owner only, whatever the umask: it holds names, e-mail addresses and
        # customers' addresses.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with (
            os.fdopen(descriptor, "wb") as raw,
            zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compress_level) as archive,
            read_snapshot(),
        ):
            for table in TABLES:
                files.append(table_write(archive=archive, table=table, progress=progress))
            manifest = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "generated_at": time_text(generated_at),
                "visitsdash_version": __version__,
                "database": connection.vendor,
                "display_time_zone": settings.DISPLAY_TIME_ZONE,
                # The zone of the visits' local_day (the tallies' state: DISPLAY_TIME_ZONE once rebuilt).
                "local_day_time_zone": tallies_time_zone(),
                "flags_pending_reps": DirtyRep.objects.count(),
                "files": files,
                "not_archived": NOT_ARCHIVED,
            }
            archive.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(path=path, manifest=manifest, seconds=time.monotonic() - started)


def rows_text(*, file: str, rows: int, total: int, started: float) -> str:
    """A progress sentence: "visits.csv: 300,000 of 1,000,000 rows (30%), 120,000 rows/s"."""
    seconds = time.monotonic() - started
    rate = f", {rows / seconds:,.0f} rows/s" if seconds > 0.5 and rows else ""
    share = f" ({rows / total:.0%})" if total else ""
    return f"{file}: {rows:,} of {total:,} rows{share}{rate}"


class MemberWriter:
    """Bytes hashed and written into a zip member by a thread of its own: zlib, CRC-32 and SHA-256
    release the GIL, so compressing overlaps reading and formatting the next rows (on a second
    core). At most QUEUED chunks wait: memory stays flat."""

    QUEUED = 4

    def __init__(self, member) -> None:
        self.member = member
        self.digest = hashlib.sha256()
        self.size = 0
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=self.QUEUED)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="archive-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.failure is None:
                try:
                    self.digest.update(data)
                    self.member.write(data)
                    self.size += len(data)
                except BaseException as exc:  # raised again in the exporting thread
                    self.failure = exc

    def write(self, data: bytes) -> None:
        if self.failure is not None:
            raise self.failure
        self.queue.put(data)

    def close(self) -> None:
        """Wait for every chunk to be written; raise what writing raised."""
        self.queue.put(None)
        self.thread.join()
        if self.failure is not None:
            raise self.failure


def table_write(*, archive: zipfile.ZipFile, table, progress: Progress | None) -> dict:
    """One table as one CSV member of `archive`; its manifest entry."""
    vendor = "postgresql" if connection.vendor == "postgresql" else "sqlite"
    started = time.monotonic()
    buffer = io.StringIO()
    writer = csv.writer(buffer)  # the header; PostgreSQL's COPY ends the rows with LF, SQLite's lines CR LF
    # force_zip64: the size is unknown until the end, and a big install's visits pass 4 GB.
    with archive.open(table.file, "w", force_zip64=True) as member:
        out = MemberWriter(member)
        try:
            writer.writerow([c.name for c in table.columns])
            out.write(buffer.getvalue().encode())
            if vendor == "postgresql":
                rows = postgres_copy_out(table=table, out=out, progress=progress)
            else:
                rows = sqlite_rows_write(table=table, out=out, progress=progress)
        finally:
            out.close()
    if progress:
        progress(rows_text(file=table.file, rows=rows, total=rows, started=started))
    return {
        "name": table.file,
        "table": table.table,
        "rows": rows,
        "bytes": out.size,
        "sha256": out.digest.hexdigest(),
        "columns": columns_described(table),
    }


def table_total(table) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table.table)}")
        return cursor.fetchone()[0]


def postgres_copy_out(*, table, out: MemberWriter, progress: Progress | None) -> int:
    """PostgreSQL writes the CSV itself (COPY of the SELECT): the bytes pass through here only
    to be hashed and compressed, in blocks of WRITE_BYTES. It ran at three times the rows per
    second of reading the rows into Python for its csv module (bench/archive.py)."""
    started, total = time.monotonic(), table_total(table) if progress else 0
    rows = 0
    block = bytearray()
    with connection.cursor() as cursor:
        sql = f"COPY ({select_sql(table, vendor='postgresql', quote=connection.ops.quote_name)}) TO STDOUT (FORMAT csv)"
        with cursor.cursor.copy(sql) as copy:
            for data in copy:  # a row at a time, as the server sends them
                block += data
                rows += 1
                if len(block) >= WRITE_BYTES:
                    out.write(bytes(block))
                    block.clear()
                if progress and not rows % PROGRESS_EVERY:
                    progress(rows_text(file=table.file, rows=rows, total=max(total, rows), started=started))
        out.write(bytes(block))
    return rows


def sqlite_rows_write(*, table, out: MemberWriter, progress: Progress | None) -> int:
    """The rows as SQLite makes their lines (tables.sqlite_line_sql), CHUNK at a time, with the
    floats written by Python."""
    started, total = time.monotonic(), table_total(table) if progress else 0
    rows = reported = 0
    sql, floats = sqlite_line_sql(table, quote=connection.ops.quote_name)
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        while chunk := cursor.fetchmany(CHUNK):
            if floats:
                lines = []
                for row in chunk:
                    pieces = list(row)
                    for i in floats:
                        value = pieces[i]
                        pieces[i] = "" if value is None else repr(value)
                    lines.append(",".join(pieces))
            else:
                lines = [row[0] for row in chunk]
            lines.append("")  # the last line's end
            out.write("\r\n".join(lines).encode())
            rows += len(chunk)
            if progress and rows - reported >= PROGRESS_EVERY:
                progress(rows_text(file=table.file, rows=rows, total=max(total, rows), started=started))
                reported = rows
    finally:
        cursor.close()
    return rows
