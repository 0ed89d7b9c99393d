from django.db import migrations

TABLE = "visits_mapcelltally"
COLUMNS = "band, cell_y, cell_x, month, rep_id, verification_status, visits, latitude_sum, longitude_sum, id_sum"


def plain_rows_add(apps, schema_editor):
    """The coarse bands (4 and 1/2 degree) by status alone too, as the fine ones already are (month
    1970-01-01, rep 0): summed from their rows by month and rep. The triggers that keep them are
    installed after `migrate` (visits.triggers), as every time."""
    month = "DATE '1970-01-01'" if schema_editor.connection.vendor == "postgresql" else "'1970-01-01'"
    schema_editor.execute(
        f"INSERT INTO {TABLE} ({COLUMNS}) "
        f"SELECT band, cell_y, cell_x, {month}, 0, verification_status, sum(visits), sum(latitude_sum), "
        f"sum(longitude_sum), sum(id_sum) FROM {TABLE} WHERE band IN (2, -1) AND month <> {month} "
        "GROUP BY band, cell_y, cell_x, verification_status"
    )


def plain_rows_remove(apps, schema_editor):
    month = "DATE '1970-01-01'" if schema_editor.connection.vendor == "postgresql" else "'1970-01-01'"
    schema_editor.execute(f"DELETE FROM {TABLE} WHERE band IN (2, -1) AND month = {month}")


class Migration(migrations.Migration):
    dependencies = [("visits", "0024_legend_indexes")]

    operations = [migrations.RunPython(plain_rows_add, plain_rows_remove)]
