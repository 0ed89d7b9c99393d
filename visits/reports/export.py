"""Streamed CSV: a UTF-8 byte-order mark, then one row at a time (memory stays flat).

Text that a spreadsheet would run as a formula (starting with =, +, -, @, a tab or a
carriage return) gets a leading apostrophe (text_safe, the one place that rule lives);
numbers are left alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, date

from django.db import connection
from django.db.models.expressions import RawSQL
from django.http import StreamingHttpResponse

from visits.models import RULE_BITS, Flag, Visit, column

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # single characters: a set lookup of the first one
FORMULA_FIRST_CHARACTERS = frozenset(FORMULA_STARTS)


class _Line:
    """A file-like object whose write() hands the line back, for csv.writer."""

    def write(self, value: str) -> str:
        return value


def text_safe(text: str) -> str:
    """The formula rule: text a spreadsheet would run as a formula gets a leading apostrophe."""
    return "'" + text if text[:1] in FORMULA_FIRST_CHARACTERS else text


def cell_safe(value) -> object:
    return text_safe(value) if isinstance(value, str) else value


def rate_text(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.4f}"


def csv_lines(*, header: list[str], rows: Iterable[Iterable], checked: bool = False) -> Iterator[str]:
    """The CSV text, a line at a time; `checked` rows have had their formula check already."""
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(header)
    if checked:
        yield from map(writer.writerow, rows)
    else:
        for row in rows:
            yield writer.writerow([cell_safe(value) for value in row])


def csv_filename(*, report: str, start: date | None, end: date | None) -> str:
    return f"{report}_{start.isoformat() if start else 'first'}_to_{end.isoformat() if end else 'last'}.csv"


def csv_response(
    *, filename: str, header: list[str], rows: Iterable[Iterable], checked: bool = False
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        csv_lines(header=header, rows=rows, checked=checked), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


VISIT_COLUMNS = {  # CSV header -> queryset field
    "id": "id", "visited_at": "visited_at", "created_at": "created_at", "rep_id": "rep_id", "rep_name": "rep__name",
    "resource_type": "resource_type", "resource_id": "resource_id", "outcome_id": "outcome_id",
    "outcome_name": "outcome__name", "verification_status": "verification_status", "latitude": "latitude",
    "longitude": "longitude", "summary": "summary",
}  # fmt: skip
VISIT_REVIEW_COLUMNS = ["flags", "review_status"]  # appended to /visits.csv: rule names joined by ";", latest decision
# Appended after those: where the visit came from (firehose, core_api) and the customer's address
# as the Core API gives it ("" until it has), text from the API, checked for formulas.
VISIT_HISTORY_COLUMNS = ["source", "resource_address"]
# Appended after those: metres from the rep's position to the customer's point (whole metres,
# empty when unknown) and which point that was (learned, geocoded or empty): geo/customers.py.
VISIT_DISTANCE_COLUMNS = ["customer_distance_m", "customer_location"]
# Appended last: "yes" when the retention rule (COORDINATES_RETENTION_DAYS) removed the visit's
# position (latitude and longitude then empty), else empty: geo/retention.py.
VISIT_RETENTION_COLUMNS = ["position_removed"]
VISIT_EXPORT_COLUMNS = [
    *VISIT_COLUMNS, *VISIT_REVIEW_COLUMNS, *VISIT_HISTORY_COLUMNS, *VISIT_DISTANCE_COLUMNS, *VISIT_RETENTION_COLUMNS,
]  # fmt: skip
TIME_COLUMNS = ("visited_at", "created_at")  # written as ISO 8601 in UTC
TEXT_COLUMNS = ("rep_name", "resource_type", "outcome_name", "summary")  # text from the API: checked for formulas
# Where those columns are in a row, found once by name.
ID_CELL = list(VISIT_COLUMNS).index("id")
TIME_CELLS = tuple(list(VISIT_COLUMNS).index(name) for name in TIME_COLUMNS)
TEXT_CELLS = tuple(list(VISIT_COLUMNS).index(name) for name in TEXT_COLUMNS)


def flag_rules_sql() -> dict[str, str]:
    """A flagged visit's rules, in the export's own query (looked up only for the flagged
    visits), per vendor; the tables and columns are the models'."""
    visit, flag = Visit._meta.db_table, Flag._meta.db_table
    flagged, visit_id = f"{visit}.{column(Visit, 'flagged')}", f"{visit}.{column(Visit, 'id')}"
    rule, flag_visit = column(Flag, "rule"), f"{flag}.{column(Flag, 'visit')}"
    return {
        "sqlite": (
            f"CASE WHEN {flagged} THEN (SELECT group_concat({rule}, ';') FROM (SELECT {rule} FROM {flag} "
            f"WHERE {flag_visit} = {visit_id} ORDER BY {rule})) ELSE '' END"
        ),
        "postgresql": (
            f"CASE WHEN {flagged} THEN (SELECT string_agg({rule}, ';' ORDER BY {rule}) FROM {flag} "
            f"WHERE {flag_visit} = {visit_id}) ELSE '' END"
        ),
    }


FLAG_RULES_SQL = flag_rules_sql()  # built once


def visit_rows(*, visits) -> Iterator[list]:
    """The visits as CSV cells, read in chunks straight from the database cursor.

    This skips the ORM's per-value conversions and its model-field machinery; measured by
    bench/reports.py, the ORM path ran at about 19,000 rows/s. Times arrive from the driver
    as UTC datetimes (naive on SQLite, aware on PostgreSQL).
    """
    rules = RawSQL(FLAG_RULES_SQL["postgresql" if connection.vendor == "postgresql" else "sqlite"], [])
    sql, params = (
        visits.annotate(flag_names=rules)
        .values_list(
            *VISIT_COLUMNS.values(),
            "flag_names",
            "review_status",
            *VISIT_HISTORY_COLUMNS,
            *VISIT_DISTANCE_COLUMNS,
            "coordinates_removed_at",
        )
        .query.sql_with_params()
    )

    cursor = connection.chunked_cursor()  # server-side on PostgreSQL: memory stays flat
    try:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(2000):
            for row in chunk:
                # ends with flags, review_status, source, resource_address, customer_distance_m,
                # customer_location, coordinates_removed_at (written as position_removed)
                cells = ["" if value is None else value for value in row]
                if row[-3] is not None:
                    cells[-3] = round(row[-3])
                cells[-1] = "" if row[-1] is None else "yes"
                for index in TIME_CELLS:
                    cells[index] = time_text(row[index])
                for index in TEXT_CELLS:
                    cells[index] = text_safe(cells[index])
                cells[-4] = text_safe(cells[-4])  # resource_address
                yield cells
    finally:
        cursor.close()


# /review.csv: the review queue in its order. Flags from the visit's flag_rules bits (the queue's
# flagged index holds them; no read of the flags table), review_status "awaiting" without a decision.
QUEUE_COLUMNS = ["visit_id", "visited_at", "rep_id", "rep_name", "risk", "tier", "flags", "review_status"]


def rules_text(bits: int) -> str:
    """A visit's flag_rules bits as its rule names, sorted, joined by ";"."""
    return ";".join(sorted(rule for rule, bit in RULE_BITS.items() if bits & bit))


def queue_rows(*, visits) -> Iterator[list]:
    """The queue's visits (ordered by the caller) as QUEUE_COLUMNS cells, read in chunks from the
    database cursor as visit_rows does; rep names are checked for formulas."""
    sql, params = visits.values_list(
        "id", "visited_at", "rep_id", "rep__name", "risk", "risk_tier", "flag_rules", "review_status"
    ).query.sql_with_params()
    names: dict[int, str] = {}  # bits -> text: a few dozen combinations
    cursor = connection.chunked_cursor()
    try:
        cursor.execute(sql, params)
        while chunk := cursor.fetchmany(2000):
            for visit_id, visited_at, rep_id, rep_name, risk, tier, bits, status in chunk:
                if bits not in names:
                    names[bits] = rules_text(bits or 0)
                yield [
                    visit_id, time_text(visited_at), rep_id, text_safe(rep_name or ""), risk, tier or "", names[bits],
                    status or "awaiting",
                ]  # fmt: skip
    finally:
        cursor.close()


def time_text(value) -> str:
    """A time from the driver (naive UTC on SQLite, aware on PostgreSQL) as ISO 8601 in UTC."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z"
