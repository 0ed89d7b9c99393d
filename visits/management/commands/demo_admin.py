"""Creates (or resets) the demo superuser and prints its credentials. For the demo only."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or reset the demo admin account and print its credentials."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username="admin", **options):
        # The password is kept in var/ so it stays the same from one demo run to the next.
        password_file = settings.VAR_DIR / "demo_admin_password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(9))
        password = password_file.read_text().strip()
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(
            f"demo admin {'created' if created else 'ready'}: username {username!r}, password {password!r}"
        )
