from django.apps import AppConfig
from django.db.models.signals import post_migrate


def groups_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps

    from .roles import groups_ensure

    groups_ensure(apps)


def tallies_after_migrate(sender, using: str = "default", **kwargs) -> None:
    from django.db import connections

    from .tallies import tallies_ensure

    tallies_ensure(connection=connections[using])


class VisitsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "visits"

    def ready(self) -> None:
        post_migrate.connect(groups_after_migrate, sender=self)
        post_migrate.connect(tallies_after_migrate, sender=self)
