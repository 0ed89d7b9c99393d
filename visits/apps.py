from django.apps import AppConfig
from django.db.models.signals import post_migrate


def groups_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps

    from visits.roles import groups_ensure

    groups_ensure(apps)


def tallies_after_migrate(sender, using: str = "default", **kwargs) -> None:
    from django.db import connections

    from visits.ingest.tallies import tallies_ensure

    tallies_ensure(connection=connections[using])


def decisions_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """SQLite drops a table's triggers when a migration rebuilds it: put them back every time."""
    from django.db import connections

    from visits.review.immutable import TABLE, decision_triggers_install

    connection = connections[using]
    if TABLE in connection.introspection.table_names():  # not when migrated back before 0005
        decision_triggers_install(connection=connection)


class VisitsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "visits"

    def ready(self) -> None:
        post_migrate.connect(groups_after_migrate, sender=self)
        post_migrate.connect(tallies_after_migrate, sender=self)
        post_migrate.connect(decisions_after_migrate, sender=self)
