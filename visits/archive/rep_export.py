"""One rep's own data in a zip, for an access request (GDPR art. 15): their record, every visit of
theirs with all its stored fields (positions included), the flags and the decisions on those visits,
the access log's entries about them, and a README.txt saying what each file is and the retention
rule in force (`rep_export`). Written to a temporary file beside the path and renamed over it; an
AccessLogEntry records it."""

from __future__ import annotations

import getpass
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from visits.archive.export import read_snapshot, time_text
from visits.models import AccessKind, AccessLogEntry, Decision, Flag, Rep, Visit
from visits.reports.export import csv_lines

CHUNK = 2000
# Who decided is another person's data (the reviewer's): left out, and the README says so.
DECISION_FIELDS = ("id", "visit_id", "kind", "reason", "note", "decided_at")
FLAG_FIELDS = ("id", "visit_id", "rule", "numbers", "sentence")
# Who looked at the rep's data: when, what and how much; the viewer's name is theirs to keep, as a
# reviewer's is (the company's own access log names them, for its DPO).
ACCESS_FIELDS = ("at", "kind", "path", "filters", "object_id", "rows")


class RepExportError(Exception):
    """Why the export could not be written, as a sentence for whoever runs the command."""


@dataclass(frozen=True)
class RepExportResult:
    path: Path
    visits: int
    flags: int
    decisions: int
    accesses: int = 0

    def summary(self) -> str:
        return (
            f"{self.path}: {self.visits:,} visits, {self.flags:,} flags, {self.decisions:,} decisions, "
            f"{self.accesses:,} access log entries"
        )


def cell_of(value) -> object:
    """A value as the export writes it: times in ISO 8601 UTC, JSON as its text, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def field_names(model: type[models.Model]) -> list[str]:
    """Every stored field of a model, foreign keys as their id columns, in the model's order."""
    return [f.attname for f in model._meta.concrete_fields]


def rows_of(queryset: models.QuerySet, names: Iterable[str]) -> Iterator[list]:
    for row in queryset.values_list(*names).iterator(chunk_size=CHUNK):
        yield [cell_of(value) for value in row]


def csv_write(archive: zipfile.ZipFile, name: str, *, header: list[str], rows: Iterable[list]) -> int:
    """A CSV file in the zip, through the reports' writer (formulas escaped); returns its rows."""
    count = 0

    def counted() -> Iterator[list]:
        nonlocal count
        for row in rows:
            count += 1
            yield row

    with archive.open(name, "w") as member:
        for line in csv_lines(header=header, rows=counted()):
            member.write(line.encode("utf-8"))
    return count


def readme_text(*, rep: Rep, visits: int, removed: int, now: datetime) -> str:
    days = settings.COORDINATES_RETENTION_DAYS
    if days:
        retention = (
            f"Retention rule in force: COORDINATES_RETENTION_DAYS = {days}. The position (latitude and\n"
            f"longitude) of a visit logged more than {days} days ago is removed; its status, distance to\n"
            f"the customer, flags and decisions are kept. {removed:,} of these visits have lost their\n"
            "position so (coordinates_removed_at in visits.csv says when)."
        )
    else:
        retention = (
            "Retention rule in force: none (COORDINATES_RETENTION_DAYS is empty): positions are kept for\n"
            f"as long as the visits are. {removed:,} of these visits lost their position under an earlier rule."
        )
    return f"""Data held by visitsdash about Sell user {rep.id} ({Rep.label_for(rep.id, rep.name)})
Written {time_text(now)} by `manage.py rep_export`, in answer to an access request.

Files (CSV: UTF-8 with a byte-order mark; times in ISO 8601, UTC; empty cells are empty values;
text starting with = + - @ or a tab is prefixed with ' so that spreadsheets do not run it):

rep.json       The rep's record as received from Sell (Firehose users stream, Core API users):
               name, e-mail, status, role, team, group, manager's Sell id, time zone.
visits.csv     Every visit the rep logged that visitsdash holds ({visits:,}), deleted ones included
               (deleted_at), with every stored field: when, the customer, the outcome, the summary,
               the phone's position (latitude, longitude), Sell's verification status, the
               distance to the customer's point, whether it was flagged and its risk, the latest
               review status, and where the visit came from.
flags.csv      The review flags raised on those visits: the rule, the numbers behind it and the
               sentence shown to reviewers.
decisions.csv  Reviewers' decisions on those visits (accept, reject, follow up), with the reason and
               note. Who decided is left out: it is the reviewer's own personal data.
access_log.csv When the rep's page, one of their visits or an earlier export of their data was looked
               at or made (kind rep, visit or export; the visit or rep id; rows for an export),
               from visitsdash's access log, which keeps entries ACCESS_LOG_DAYS
               ({settings.ACCESS_LOG_DAYS}) days. Who looked is left out, as for decisions; the
               company's data protection officer can read it from the full log.

{retention}
"""


def rep_export(*, rep_id: int, path: Path, username: str | None = None) -> RepExportResult:
    """Write rep `rep_id`'s data to `path` (a zip):
    1. the rep looked up (RepExportError when unknown), the path's folder checked writable;
    2. every file written into a temporary zip beside `path`, from one snapshot of the database;
    3. the temporary file renamed over `path` (a failure leaves no partial file);
    4. an AccessLogEntry (kind export, path "rep_export") with the rep and the OS user."""
    rep = Rep.objects.filter(id=rep_id).first()
    if rep is None:
        raise RepExportError(f"No rep with id {rep_id}: give a Sell user id, as the reps report lists them.")
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise RepExportError(f"{path} is a folder: give the path of the zip file to write.")
    if not folder.is_dir():
        raise RepExportError(f"Cannot write {path}: the folder {folder} does not exist.")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise RepExportError(f"Cannot write {path}: {exc.strerror or exc} (is the folder writable?).") from exc
    os.close(handle)  # mkstemp makes it readable by its owner only: it holds personal data
    now = timezone.now()
    try:
        with read_snapshot(), zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            record = {f.attname: cell_of(getattr(rep, f.attname)) for f in Rep._meta.concrete_fields}
            archive.writestr("rep.json", json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            visits = Visit.objects.filter(rep_id=rep.id).order_by("visited_at", "id")
            names = field_names(Visit)
            visit_count = csv_write(archive, "visits.csv", header=names, rows=rows_of(visits, names))
            removed = visits.filter(coordinates_removed_at__isnull=False).count()
            flags = Flag.objects.filter(visit__rep_id=rep.id).order_by("visit_id", "rule")
            flag_count = csv_write(archive, "flags.csv", header=list(FLAG_FIELDS), rows=rows_of(flags, FLAG_FIELDS))
            decisions = Decision.objects.filter(visit__rep_id=rep.id).order_by("visit_id", "decided_at", "id")
            decision_count = csv_write(
                archive, "decisions.csv", header=list(DECISION_FIELDS), rows=rows_of(decisions, DECISION_FIELDS)
            )
            accesses = AccessLogEntry.objects.filter(
                Q(kind__in=(AccessKind.REP, AccessKind.EXPORT), object_id=rep.id)
                | Q(kind=AccessKind.VISIT, object_id__in=Visit.objects.filter(rep_id=rep.id).values("id"))
            ).order_by("at", "id")
            access_count = csv_write(
                archive, "access_log.csv", header=list(ACCESS_FIELDS), rows=rows_of(accesses, ACCESS_FIELDS)
            )
            archive.writestr("README.txt", readme_text(rep=rep, visits=visit_count, removed=removed, now=now))
        os.replace(temporary, path)
    except OSError as exc:
        raise RepExportError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    AccessLogEntry.objects.create(
        at=now, user=None, username=username or os_user(), kind=AccessKind.EXPORT, path="rep_export",
        object_id=rep.id, rows=visit_count,
    )  # fmt: skip
    return RepExportResult(
        path=path, visits=visit_count, flags=flag_count, decisions=decision_count, accesses=access_count
    )


def os_user() -> str:
    """Who ran the command: the operating system's user, or "manage.py" when it cannot say."""
    try:
        return getpass.getuser() or "manage.py"
    except (OSError, KeyError):
        return "manage.py"
