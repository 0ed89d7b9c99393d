from django.db import migrations


def triggers_install(apps, schema_editor):
    from visits.immutable import decision_triggers_install

    decision_triggers_install(connection=schema_editor.connection)


def triggers_remove_new(apps, schema_editor):
    """Back to 0005: only the UPDATE trigger."""
    from visits.immutable import PG_TRUNCATE, TABLE

    suffix = f" ON {TABLE}" if schema_editor.connection.vendor == "postgresql" else ""
    for name in ("visits_decision_undeletable", PG_TRUNCATE):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")


class Migration(migrations.Migration):
    """Decisions can no longer be deleted with raw SQL either (UPDATE was refused already)."""

    dependencies = [("visits", "0005_tallies_flags_review")]

    operations = [migrations.RunPython(triggers_install, triggers_remove_new)]
