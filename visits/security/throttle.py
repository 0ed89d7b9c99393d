"""Sign-in throttling (django-axes): a successful sign-in forgives its own username's failures,
and only those.

Axes' own handler resets by the same "username or address" rule it locks by, so signing in
would also wipe every failure recorded from that address: anyone with an account could guess
another user's password nine times, sign in as themselves, and guess again.
"""

from __future__ import annotations

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.http import HttpRequest


class UsernameResetHandler(AxesDatabaseHandler):
    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        username = get_client_username(request, credentials)
        if not username:
            return 0
        count, _ = AccessAttempt.objects.filter(username=username).delete()
        return count
