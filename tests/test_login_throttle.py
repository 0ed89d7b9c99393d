"""Sign-in throttling (django-axes): LOGIN_FAILURE_LIMIT failures for one username or from one
address refuse further sign-ins, right password or not, on the site's and the admin's login,
until LOGIN_LOCKOUT_MINUTES have passed or a superuser unlocks."""

import io
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from .conftest import password_of, user_make

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
HERE = "203.0.113.7"


def sign_in(*, username: str, password: str, address: str = HERE, url: str = LOGIN):
    """One sign-in from a fresh browser at `address`; the response and whether it signed in."""
    client = Client()
    response = client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)
    return response, "_auth_user_id" in client.session


def assert_refused(response, signed_in: bool) -> None:
    assert not signed_in
    assert response.status_code == 429
    assert "registration/locked_out.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert "<html" in page and "Sign-in locked" in page
    assert "Too many failed sign-in attempts" in page and "15 minutes" in page


def fail(times: int, *, username: str = "mia", address: str = HERE, url: str = LOGIN) -> None:
    for _ in range(times):
        response, signed_in = sign_in(username=username, password="wrong", address=address, url=url)
        assert not signed_in


@pytest.fixture
def mia(db):
    """The user whose sign-ins fail: a user of her own, since her name is in the lock records
    (and the messages) these tests read; anyone else is one of the cast."""
    return user_make("mia")


def test_settings_default_to_ten_failures_and_fifteen_minutes(settings):
    assert (settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_LOCKOUT_MINUTES) == (10, 15)
    assert settings.AXES_FAILURE_LIMIT == 10
    assert settings.AXES_COOLOFF_TIME == timedelta(minutes=15)


def test_nine_failures_still_let_the_right_password_in(mia):
    fail(9)
    response, signed_in = sign_in(username=mia.username, password=password_of(mia))
    assert signed_in and response.status_code == 302


def test_ten_failures_for_a_username_refuse_it_from_any_address(mia, cast):
    for i in range(9):
        fail(1, address=f"198.51.100.{i + 1}")
    response, _ = sign_in(username=mia.username, password="wrong", address="198.51.100.10")
    assert_refused(response, False)  # the tenth failure already says so
    response, signed_in = sign_in(username=mia.username, password=password_of(mia), address="198.51.100.77")
    assert_refused(response, signed_in)
    # The lock is the username's: someone else at that address signs in.
    assert sign_in(username=cast.manager.username, password=password_of(cast.manager), address="198.51.100.77")[1]


def test_signing_in_forgives_only_the_own_usernames_failures(mia, cast):
    """Someone with an account cannot wipe the failures they made against another user."""
    omar = cast.manager
    fail(9)  # against mia, from HERE
    assert sign_in(username=omar.username, password=password_of(omar))[1]  # omar signs in from HERE
    fail(1, username="zed")  # the address's tenth failure: omar's success did not clear mia's
    response, signed_in = sign_in(username=omar.username, password=password_of(omar))
    assert_refused(response, signed_in)


def test_ten_failures_from_an_address_refuse_every_username_there(mia):
    for i in range(10):
        fail(1, username=f"guess{i}")
    response, signed_in = sign_in(username=mia.username, password=password_of(mia))
    assert_refused(response, signed_in)
    # The lock is the address's: mia signs in from elsewhere.
    assert sign_in(username=mia.username, password=password_of(mia), address="203.0.113.8")[1]


def test_the_admin_login_is_locked_too(cast):
    root = cast.superuser
    fail(10, username=root.username, url=ADMIN_LOGIN)
    response, signed_in = sign_in(username=root.username, password=password_of(root), url=ADMIN_LOGIN)
    assert_refused(response, signed_in)
    # ...and by the same count as the site's login: a lock on one is a lock on the other.
    assert_refused(*sign_in(username=root.username, password=password_of(root), url=LOGIN))


def test_a_successful_sign_in_resets_the_usernames_failures(mia):
    fail(9)
    assert sign_in(username=mia.username, password=password_of(mia))[1]
    fail(9)
    assert sign_in(username=mia.username, password=password_of(mia))[1]


def test_the_lock_ends_login_lockout_minutes_after_the_last_failure(mia, settings):
    fail(10)
    lockout = timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)
    AccessAttempt.objects.update(attempt_time=timezone.now() - lockout + timedelta(minutes=1))
    assert_refused(*sign_in(username=mia.username, password=password_of(mia)))
    AccessAttempt.objects.update(attempt_time=timezone.now() - lockout - timedelta(seconds=1))
    response, signed_in = sign_in(username=mia.username, password=password_of(mia))
    assert signed_in and response.status_code == 302


def test_refused_attempts_do_not_prolong_the_lock(mia, settings):
    fail(10)
    locked_at = timezone.now() - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES) + timedelta(seconds=30)
    AccessAttempt.objects.update(attempt_time=locked_at)
    fail(5)  # refused, not counted
    assert list(AccessAttempt.objects.values_list("attempt_time", "failures_since_start")) == [(locked_at, 10)]


def test_a_superuser_unlocks_in_the_admin(mia, cast):
    fail(10)
    attempt = AccessAttempt.objects.get(username="mia")
    admin = Client()
    admin.force_login(cast.superuser)
    listing = admin.get("/admin/axes/accessattempt/?locked_out=yes")
    assert listing.status_code == 200 and "mia" in listing.content.decode()
    response = admin.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    response, signed_in = sign_in(username=mia.username, password=password_of(mia))
    assert signed_in and response.status_code == 302


def test_axes_reset_username_unlocks_from_the_command_line(mia):
    for i in range(10):
        fail(1, address=f"198.51.100.{i + 1}")
    assert_refused(*sign_in(username=mia.username, password=password_of(mia)))
    out = io.StringIO()
    call_command("axes_reset_username", "mia", stdout=out)
    assert out.getvalue().strip() == "10 attempts removed."
    assert sign_in(username=mia.username, password=password_of(mia))[1]
