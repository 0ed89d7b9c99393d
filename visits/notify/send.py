"""Sending the weekly digests: the claim-then-send loop over the users who get one (`digests_send`,
run by the Monday schedule and `manage.py digests_send`), and the claim and delivery of one mail
recorded in MailSent, which the rate alerts share.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.utils import timezone

from visits.ingest.health import plain
from visits.models import MailKind, MailSent, RateAlert
from visits.notify.account import account_settings_get, mail_refusal, mail_users
from visits.notify.digest import Digest, Skipped, digest_build, digest_render
from visits.notify.weeks import week_label

log = logging.getLogger(__name__)

Send = Callable[[EmailMultiAlternatives], None]


class RecipientError(Exception):
    """The user named for a digest does not exist or gets none; the message says which."""


@dataclass(frozen=True)
class Preview:
    """A mail a dry run would send."""

    to: str
    subject: str
    text: str


@dataclass
class SendResult:
    sent: list[str] = field(default_factory=list)  # "to: subject" per mail sent
    failed: list[str] = field(default_factory=list)  # a sentence per mail that could not be sent
    skipped: list[str] = field(default_factory=list)  # a sentence per user who got nothing, and why
    previews: list[Preview] = field(default_factory=list)  # a dry run's mails

    def summary(self) -> str:
        """One line for the task's result in the admin."""
        line = f"{len(self.sent)} sent, {len(self.failed)} failed, {len(self.skipped)} skipped"
        return line + (f"; {'; '.join(self.failed)}" if self.failed else "")


def mail_send(message: EmailMultiAlternatives) -> None:
    """Sent through EMAIL_BACKEND (SMTP to EMAIL_HOST, or the console without one)."""
    message.send(fail_silently=False)


def mail_claim(
    *, user: User, kind: str, week: date, subject: str, rate_alert: RateAlert | None = None
) -> MailSent | None:
    """Record the mail as pending before it is sent; None when another run holds or sent it (the
    database's mailsent_digest_once and mailsent_alert_once refuse a second row)."""
    try:
        with transaction.atomic():
            return MailSent.objects.create(
                user=user, username=user.get_username(), to=user.email, kind=kind, week=week,
                rate_alert=rate_alert, subject=subject[:255],
            )  # fmt: skip
    except IntegrityError:
        return None


def mail_deliver(row: MailSent, message: EmailMultiAlternatives, *, send: Send, result: SendResult) -> None:
    """Send a claimed mail; record how it went on its row (a failure with its reason as a sentence,
    which also gives the claim back: a later run tries again)."""
    try:
        send(message)
    except Exception as exc:  # noqa: BLE001 - smtplib, socket and backend errors alike: recorded, retried next run
        error = f"The mail server did not take the mail to {row.to}: {plain(f'{type(exc).__name__}: {exc}')}."
        MailSent.objects.filter(id=row.id).update(error=error)
        result.failed.append(error)
        log.warning("%s to %s not sent: %s", row.get_kind_display(), row.username, error)
        return
    MailSent.objects.filter(id=row.id).update(ok=True, sent_at=timezone.now())
    result.sent.append(f"{row.to}: {row.subject}")


def digest_message(digest: Digest) -> tuple[EmailMultiAlternatives, str]:
    rendered = digest_render(digest)
    message = EmailMultiAlternatives(rendered.subject, rendered.text, None, [digest.to])
    message.attach_alternative(rendered.html, "text/html")
    return message, rendered.text


def digest_already(*, user: User, week: date) -> bool:
    """Whether the week's digest was sent to `user`, or is being sent (a failed try does not count)."""
    return MailSent.objects.filter(user=user, kind=MailKind.DIGEST, week=week, error="").exists()


def digest_users(*, username: str | None) -> list[User]:
    """Everyone who may get a digest, by name; or the one user named, RecipientError if they may not."""
    if username is None:
        return list(mail_users().order_by("username"))
    user = User.objects.filter(username=username).first()
    if user is None:
        raise RecipientError(f"There is no user called {username!r}.")
    refusal = mail_refusal(user)
    if refusal:
        raise RecipientError(refusal)
    return [user]


def digests_send(
    *, week: date, username: str | None = None, dry_run: bool = False, send: Send | None = None
) -> SendResult:
    """Send the digest of the week starting on Monday `week` to everyone who gets one.

    1. The users: active members of Managers or Directors with an e-mail address, by name (only
       `username`, when given; RecipientError when they get no digest at all).
    2. Skip a user who turned the digest off, or whose digest of that week was sent already or is
       being sent by another run (a MailSent row of theirs for the week that did not fail).
    3. Build their digest from their own scope (digest.digest_build); a scope of no reps, or no
       visits in it that week, is skipped and nothing is recorded.
    4. A dry run keeps the mail as a preview and goes on: nothing is recorded, nothing sent.
    5. Claim the mail: insert its MailSent row (ok false, no error) first. Only one such row may
       exist per user and week, so of two runs at once one inserts and the other skips.
    6. Send it. The row then says ok, or holds the error as a sentence; a failed row no longer
       counts as the week's digest, so the next run (or `digests_send` by hand) tries again.
    A process killed between 5 and 6 leaves a pending row: that digest is lost, never sent twice.
    """
    send = send or mail_send
    result = SendResult()
    for user in digest_users(username=username):
        name = user.get_username()
        if not account_settings_get(user=user).digest_enabled:
            result.skipped.append(f"{name} turned the digest off.")
            continue
        if digest_already(user=user, week=week):
            result.skipped.append(f"{name} has had the digest of the week of {week_label(week)} already.")
            continue
        digest = digest_build(user=user, week=week)
        if isinstance(digest, Skipped):
            result.skipped.append(digest.reason)
            continue
        message, text = digest_message(digest)
        if dry_run:
            result.previews.append(Preview(to=digest.to, subject=digest.subject, text=text))
            continue
        row = mail_claim(user=user, kind=MailKind.DIGEST, week=week, subject=digest.subject)
        if row is None:
            result.skipped.append(f"{name}'s digest of the week of {week_label(week)} is being sent by another run.")
            continue
        mail_deliver(row, message, send=send, result=result)
    return result
