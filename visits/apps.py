from django.apps import AppConfig
from django.db.models.signals import post_migrate


def groups_after_migrate(sender, **kwargs) -> None:
    from django.apps import apps

    from visits.roles import groups_ensure

    groups_ensure(apps)


def triggers_after_migrate(sender, using: str = "default", **kwargs) -> None:
    """Every trigger set (visits/triggers.py) back after every `migrate` and flush, the same way:
    SQLite drops a table's triggers when a migration rebuilds it. The tallies then rebuild if
    DISPLAY_TIME_ZONE changed."""
    from django.db import connections

    from visits.triggers import trigger_sets_install

    trigger_sets_install(connection=connections[using])


class VisitsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "visits"

    def ready(self) -> None:
        from django.contrib.auth.models import User
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_save

        from visits import checks  # noqa: F401  (registers visits.E001)
        from visits.accounts import user_saved, user_signed_in

        post_save.connect(user_saved, sender=User, dispatch_uid="visits_link_on_save")
        user_logged_in.connect(user_signed_in, dispatch_uid="visits_link_on_sign_in")
        post_migrate.connect(groups_after_migrate, sender=self)
        post_migrate.connect(triggers_after_migrate, sender=self)
