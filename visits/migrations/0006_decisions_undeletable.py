from django.db import migrations

# As they stood when written (visits/review/immutable.py keeps the live copy, re-installed after
# every migrate): a migration must not change when the app's code does.
MESSAGE = "decisions are never deleted"
PG_FUNCTION = (
    "CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
)


def triggers_add(apps, schema_editor):
    # Migrated back to 0005, the database got these already (post_migrate installs the live set).
    triggers_remove(apps, schema_editor)
    if schema_editor.connection.vendor == "postgresql":
        for name, event, level in (("visits_decision_undeletable", "DELETE", "ROW"),
                                   ("visits_decision_untruncatable", "TRUNCATE", "STATEMENT")):  # fmt: skip
            schema_editor.execute(PG_FUNCTION.format(name=name))
            schema_editor.execute(
                f"CREATE TRIGGER {name} BEFORE {event} ON visits_decision FOR EACH {level} EXECUTE FUNCTION {name}()"
            )
    else:
        schema_editor.execute(
            "CREATE TRIGGER visits_decision_undeletable BEFORE DELETE ON visits_decision "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
        )


def triggers_remove(apps, schema_editor):
    suffix = " ON visits_decision" if schema_editor.connection.vendor == "postgresql" else ""
    for name in ("visits_decision_undeletable", "visits_decision_untruncatable"):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}{suffix}")


class Migration(migrations.Migration):
    """Decisions can no longer be deleted with raw SQL either (UPDATE was refused already)."""

    dependencies = [("visits", "0005_tallies_flags_review")]

    operations = [migrations.RunPython(triggers_add, triggers_remove)]
