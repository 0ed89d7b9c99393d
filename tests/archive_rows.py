"""Every row of every table of the app, read through the ORM (not the archive's code), as plain
JSON-able values: what tests/test_archive.py compares before an export and after an import, in
this process or printed by a subprocess on another database (`python -m tests.archive_rows`)."""

import json
from datetime import date, datetime

from django.apps import apps

# What an import does not carry over, as (model, field): a running sync's or backfill's lease (archive/tables.py
# leaves it out), and the row saying when the tallies were rebuilt (the import rebuilds them).
NOT_CARRIED = {
    ("SyncState", "lock_owner"),
    ("SyncState", "lock_expires_at"),
    ("BackfillRun", "lock_owner"),
    ("BackfillRun", "lock_expires_at"),
    ("TallyState", "rebuilt_at"),
    ("TallyState", "id"),
}
TALLIES = {
    "MonthTally", "YearTally", "AllTimeTally", "WeekTally", "DistanceTally", "RepDistanceTally", "OutcomeDistanceTally",
    "ReviewTally", "MapCellTally",
}  # fmt: skip


def plain(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return repr(value)
    return value


def tables_rows() -> dict[str, list[list]]:
    """{model name: its rows in primary key order}; a decision's author by username; the tallies
    without their rows of zero (the triggers leave them, a rebuild makes none)."""
    found: dict[str, list[list]] = {}
    for model in apps.get_app_config("visits").get_models():
        if model._meta.proxy:
            continue
        name = model.__name__
        names = []
        for f in model._meta.concrete_fields:
            if (name, f.name) in NOT_CARRIED:
                continue
            names.append("decided_by__username" if f.name == "decided_by" else f.attname)
        order = [f.name for f in model._meta.pk_fields]
        # A tally's float sums (the map tally's) kept row by row and rebuilt at once differ in their last bits.
        rounded = (lambda v: round(v, 6) if isinstance(v, float) else v) if name in TALLIES else (lambda v: v)
        rows = [[plain(rounded(v)) for v in row] for row in model.objects.order_by(*order).values_list(*names)]
        if name in TALLIES:
            counts = [names.index(c) for c in ("visits", "flagged", "far") if c in names]
            rows = [row for row in rows if any(row[i] for i in counts)]
        found[name] = rows
    from django.contrib.auth.models import User

    authors = User.objects.filter(visit_decisions__isnull=False).distinct().order_by("username")
    found["decision authors"] = [list(row) for row in authors.values_list("username", "is_active")]
    return found


if __name__ == "__main__":
    import django

    django.setup()
    print(json.dumps(tables_rows()))
