from django.db import migrations

TABLE = "visits_mapcelltally"
COLUMNS = "band, cell_y, cell_x, month, rep_id, verification_status, visits, latitude_sum, longitude_sum, id_sum"
SUMS = "sum(visits), sum(latitude_sum), sum(longitude_sum), sum(id_sum)"


def _plain(schema_editor) -> str:
    return "DATE '1970-01-01'" if schema_editor.connection.vendor == "postgresql" else "'1970-01-01'"


def plain_rows_add(apps, schema_editor):
    """The map tally's bands as ingest/map_tally.py keeps them now: the 1/2-degree band by status
    alone too, as the fine ones already were (month 1970-01-01, rep 0), summed from its rows by month
    and rep; the 4-degree band gone. The triggers that keep the new rows are installed after
    `migrate` (visits.triggers), as every time."""
    month = _plain(schema_editor)
    schema_editor.execute(
        f"INSERT INTO {TABLE} ({COLUMNS}) SELECT band, cell_y, cell_x, {month}, 0, verification_status, {SUMS} "
        f"FROM {TABLE} WHERE band = -1 AND month <> {month} GROUP BY band, cell_y, cell_x, verification_status"
    )
    schema_editor.execute(f"DELETE FROM {TABLE} WHERE band = 2")


def plain_rows_remove(apps, schema_editor):
    """Going back: the 4-degree band by month and rep again (eight 1/2-degree cells a side), and
    the 1/2-degree band's plain rows gone."""
    month = _plain(schema_editor)
    schema_editor.execute(
        f"INSERT INTO {TABLE} ({COLUMNS}) SELECT 2, cell_y / 8, cell_x / 8, month, rep_id, verification_status, "
        f"{SUMS} FROM {TABLE} WHERE band = -1 AND month <> {month} "
        "GROUP BY cell_y / 8, cell_x / 8, month, rep_id, verification_status"
    )
    schema_editor.execute(f"DELETE FROM {TABLE} WHERE band = -1 AND month = {month}")


class Migration(migrations.Migration):
    dependencies = [("visits", "0024_legend_indexes")]

    operations = [migrations.RunPython(plain_rows_add, plain_rows_remove)]
