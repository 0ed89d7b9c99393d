"""Alerts that fire on a change: a rep whose too-far rate rose by more than ALERT_RATE_POINTS
points from one week to the next, with at least MIN_VISITS visits in each, is recorded once
(RateAlert, unique on rep and week) and their managers are mailed once each (MailSent).

Their managers: the accounts linked (SellLink) to a Sell user up the rep's `reports_to` chain,
at any depth (a cycle ends the walk), that are active members of Managers or Directors with an
e-mail, whose scope (access.rep_filter_for_user) holds the rep, and who left alerts on. The rep's
own account is not told about themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse

from visits import access
from visits.ingest.health import plain
from visits.models import MailKind, RateAlert, Rep, SellLink
from visits.notify.account import account_settings_get, mail_refusal
from visits.notify.digest import NAME_CHARS, SUBJECT_PREFIX, percent, week_scope
from visits.notify.send import Send, SendResult, mail_claim, mail_deliver, mail_send
from visits.notify.weeks import link, week_label, week_last_ended
from visits.reports.analytics import Counts, counts_by

MIN_VISITS = 20  # in each of the two weeks


@dataclass(frozen=True)
class Rise:
    """A rep's two weeks: counts of the week before and of the week the rate rose in."""

    rep_id: int
    before: Counts
    after: Counts

    @property
    def points(self) -> float:
        return 100 * ((self.after.too_far_rate or 0.0) - (self.before.too_far_rate or 0.0))


def rate_rise(*, before: Counts, after: Counts, threshold: float) -> bool:
    """The rule: at least MIN_VISITS visits in each week, and the too-far rate up by more than
    `threshold` percentage points."""
    if before.visits < MIN_VISITS or after.visits < MIN_VISITS:
        return False
    # In integers: 100 * (a/A - b/B) > t, times A * B (a float difference can miss an exact tie).
    far_after, far_before = after.resource_location_too_far, before.resource_location_too_far
    return 100 * (far_after * before.visits - far_before * after.visits) > threshold * before.visits * after.visits


def rises_find(*, week: date) -> list[Rise]:
    """Every rep whose too-far rate rose in the week starting on Monday `week` (two counts by rep
    from the tallies)."""
    after = counts_by(scope=week_scope(week, reps=None), by=("rep",))
    before = counts_by(scope=week_scope(week - timedelta(days=7), reps=None), by=("rep",))
    threshold = settings.ALERT_RATE_POINTS
    return [
        Rise(rep_id=key[0], before=before[key], after=counts)
        for key, counts in sorted(after.items())
        if key in before and rate_rise(before=before[key], after=counts, threshold=threshold)
    ]


def rate_alerts_record(*, week: date) -> list[RateAlert]:
    """A RateAlert for each rise of the week not recorded yet; every RateAlert of the week, by rep."""
    rises = rises_find(week=week)
    RateAlert.objects.bulk_create(
        [
            RateAlert(
                rep_id=r.rep_id,
                week=week,
                visits_before=r.before.visits,
                far_before=r.before.resource_location_too_far,
                visits_after=r.after.visits,
                far_after=r.after.resource_location_too_far,
            )
            for r in rises
        ],  # fmt: skip
        ignore_conflicts=True,  # ratealert_once_per_week: recorded by an earlier run
    )
    return list(RateAlert.objects.filter(week=week).select_related("rep").order_by("rep_id"))


def chain_up(rep_id: int, *, managers: dict[int, int | None]) -> list[int]:
    """The Sell users above `rep_id` by `reports_to`, nearest first; a cycle or a missing user ends it."""
    chain: list[int] = []
    seen = {rep_id}
    up = managers.get(rep_id)
    while up is not None and up not in seen:
        chain.append(up)
        seen.add(up)
        up = managers.get(up)
    return chain


def alert_recipients(*, rep_id: int, managers: dict[int, int | None]) -> list[User]:
    """The accounts mailed about `rep_id` (see the module), by name."""
    chain = chain_up(rep_id, managers=managers)
    links = SellLink.objects.filter(rep_id__in=chain).select_related("user").order_by("user__username")
    recipients = []
    for sell_link in links:
        user = sell_link.user
        if mail_refusal(user) or not account_settings_get(user=user).alerts_enabled:
            continue
        try:
            reps = access.rep_filter_for_user(user)
        except PermissionDenied:
            continue
        if reps is None or rep_id in reps:
            recipients.append(user)
    return recipients


def alert_message(alert: RateAlert, *, to: str) -> tuple[str, EmailMultiAlternatives]:
    """The subject and a plain-text mail (no HTML part: the rep's name goes in as one plain line)."""
    before = Counts(visits=alert.visits_before, resource_location_too_far=alert.far_before)
    after = Counts(visits=alert.visits_after, resource_location_too_far=alert.far_after)
    change = 100 * ((after.too_far_rate or 0.0) - (before.too_far_rate or 0.0))
    start, end = alert.week - timedelta(days=7), alert.week + timedelta(days=6)
    rep_path = reverse("visits:rep", kwargs={"rep_id": alert.rep_id})
    context = {
        "name": plain(Rep.label_for(alert.rep_id, alert.rep.name), limit=NAME_CHARS),
        "week_label": week_label(alert.week),
        "before": before, "after": after, "before_rate": percent(before.too_far_rate),
        "after_rate": percent(after.too_far_rate), "change": f"{change:+.1f}", "threshold": settings.ALERT_RATE_POINTS,
        "min_visits": MIN_VISITS,
        "rep_url": link(rep_path + "?" + urlencode({"start": start.isoformat(), "end": end.isoformat()})),
        "settings_url": link(reverse("visits:account_settings")),
        "privacy_notice": settings.PRIVACY_NOTICE,
    }  # fmt: skip
    subject = f"{SUBJECT_PREFIX}Too-far rate up {change:+.1f} points for one of your reps ({week_label(alert.week)})"
    return subject, EmailMultiAlternatives(subject, render_to_string("visits/mail/rate_alert.txt", context), None, [to])


def rate_alerts_send(*, week: date | None = None, now: datetime | None = None, send: Send | None = None) -> SendResult:
    """Record the rises of the week starting on Monday `week` (by default the latest week that has
    ended) and mail each recipient of each once: claimed first (MailSent, unique per user and
    alert), then sent; a failed mail is tried again by the next run. Runs daily: the Monday run
    finds the week's rises, later ones retry what failed and reach accounts linked since."""
    send = send or mail_send
    week = week or week_last_ended(now=now)
    result = SendResult()
    alerts = rate_alerts_record(week=week)
    if not alerts:
        return result
    managers = dict(Rep.objects.values_list("id", "reports_to"))
    for alert in alerts:
        for user in alert_recipients(rep_id=alert.rep_id, managers=managers):
            subject, message = alert_message(alert, to=user.email)
            row = mail_claim(user=user, kind=MailKind.RATE_ALERT, week=week, subject=subject,
                             rate_alert=alert)  # fmt: skip
            if row is not None:
                mail_deliver(row, message, send=send, result=result)
    return result
