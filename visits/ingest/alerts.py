"""The ingestion check (`manage.py ingestion_check` and its schedule call ingestion_check) and its
alert mails: one when an incident of ingest/health.py opens, one when it ends, to ALERT_EMAILS, in
plain text with what happened, since when and what to do. Each mail is claimed in the database
before it is sent, so two checks at once never send it twice.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q
from django.utils import timezone
from django.utils.timesince import timesince

from visits.ingest.health import Health, health_get, incidents_update, iso_utc, plain, when
from visits.models import Gap, Incident, IncidentKind

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[visitsdash] "
SELL_RETENTION = timedelta(hours=72)
# A mail that could not be sent is retried by each check while its incident is open, and for
# this long after it ends; an incident older than that is history, never mailed late.
MAIL_RETRY_WINDOW = timedelta(days=1)

Send = Callable[[str, str, list[str]], None]


def mail_send(subject: str, body: str, recipients: list[str]) -> None:
    """Django's send_mail, with EMAIL_BACKEND (SMTP to EMAIL_HOST, or the console without one)."""
    send_mail(subject, body, None, recipients, fail_silently=False)


@dataclass
class AlertsResult:
    sent: list[str] = field(default_factory=list)  # the subjects of the mails sent
    failed: list[str] = field(default_factory=list)  # why a mail could not be sent, a sentence each


def status_link() -> str:
    if settings.SITE_URL:
        return f"Status page: {settings.SITE_URL}/status/"
    return "Status page: /status/ on your visitsdash (set SITE_URL to get a link here)."


def wrapped(text: str) -> str:
    """Lines of at most 78 characters, for terminals and the worker's log; a URL is not broken."""
    return "\n".join(
        textwrap.fill(line, width=78, break_long_words=False, break_on_hyphens=False) for line in text.split("\n")
    )


def footer() -> str:
    return (
        f"\n\n{wrapped(status_link())}\n\n-- \n"
        "visitsdash's ingestion check: one mail as an incident opens, one as it ends.\n"
    )


def gap_range(gap: Gap) -> str:
    return f"{when(gap.start) if gap.start else 'the first event'} to {when(gap.end)}"


def loss_line(health: Health) -> str:
    if health.last_success_at is None:
        return "Sell keeps events for 72 hours: events older than that are lost for good."
    return (
        "Sell keeps events for 72 hours: act before "
        f"{when(health.last_success_at + SELL_RETENTION)} and nothing is lost."
    )


def recovery_text(incident: Incident, health: Health) -> tuple[str, str]:
    """(subject, sentences) saying how `incident` ended."""
    lasted = f"It lasted {timesince(incident.opened_at, incident.closed_at)} (from {when(incident.opened_at)})."
    if incident.kind == IncidentKind.GAP and incident.gap is not None:
        gap = incident.gap
        return (
            f"Filled: the gap in the {gap.stream} stream",
            f"The gap from {gap_range(gap)} was filled from the Core API at {when(gap.filled_at)}: "
            f"{gap.filled_visits} visits (statuses, outcomes and addresses; no rep positions).",
        )
    if health.archive:
        return (
            f"Closed: {incident.get_kind_display().lower()}",
            "The incident is closed: visitsdash now runs as a read-only archive (no SELL_ACCESS_TOKEN), "
            f"so no sync is expected. {lasted}",
        )
    if incident.kind == IncidentKind.TOKEN:
        return (
            "Recovered: Sell accepts the access token again",
            f"Sell accepts the access token again: a sync succeeded at {when(health.last_success_at)}. {lasted} "
            "The events of that time are pulled from the stream now (Sell keeps them 72 hours).",
        )
    return (
        "Recovered: the visits stream syncs again",
        f"A sync of the visits stream succeeded at {when(health.last_success_at)}. {lasted}",
    )


def opening_text(incident: Incident, health: Health) -> tuple[str, str]:
    """(subject, body before the footer) of the mail saying `incident` opened."""
    since = f"Since: {when(incident.opened_at)}"
    if incident.kind == IncidentKind.TOKEN:
        return (
            "Sell refused the access token",
            "Sell refuses visitsdash's access token, so no visits are being pulled.\n\n"
            f"{since} (the last successful sync of the visits stream: {when(health.last_success_at)})\n"
            f"Sell said: {health.token_error or plain(incident.message)}\n\n"
            "What to do: create a new access token in Sell, set SELL_ACCESS_TOKEN to it, and restart the "
            f"worker and the web server. {loss_line(health)}",
        )
    if incident.kind == IncidentKind.STALE:
        hours = settings.ALERT_STALE_HOURS
        return (
            f"No successful sync for {hours} hours",
            f"{incident.message}\n\n"
            f"Last success: {when(health.last_success_at)}\n"
            f"Last error: {health.last_error or 'none recorded: the sync may not be running at all'}\n\n"
            "What to do: check that the background worker runs (python manage.py qcluster, under your "
            "process manager) and read its log; python manage.py sync_visits runs one sync in the "
            f"foreground and says what fails. {loss_line(health)}",
        )
    gap = incident.gap
    assert gap is not None  # the database's incident_gap_iff_kind_gap
    return (
        f"Gap in the {gap.stream} stream: events may be missing",
        f"{incident.message}\n\n"
        f"Recorded: {when(gap.recorded_at)}\n"
        f"Missing range: {gap_range(gap)}\n"
        f"Sell said: {plain(gap.reason)}\n\n"
        "What happens now: visitsdash fills that range from Sell's Core API (statuses, outcomes and "
        "customer addresses; the Core API has no rep positions, so those visits have none on the maps). "
        "The status page shows when the gap is filled, and one more mail says so. If the fill fails "
        "(for example when the account's plan has no Core API visits), the status page says why.\n"
        "To avoid gaps: keep the worker running, so the stored position never goes unused for long.",
    )


def claim(incident: Incident, *, now: datetime, recovered: bool, both: bool = False) -> bool:
    """Mark the mail as sent before sending it; False if another check did so first."""
    unsent = Incident.objects.filter(id=incident.id)
    if recovered:
        return bool(unsent.filter(recovered_mailed_at__isnull=True).update(recovered_mailed_at=now))
    changes = {"mailed_at": now, **({"recovered_mailed_at": now} if both else {})}
    return bool(unsent.filter(mailed_at__isnull=True).update(**changes))


def unclaim(incident: Incident, *, recovered: bool, both: bool, error: str) -> None:
    changes: dict = {"mail_error": error}
    if recovered or both:
        changes["recovered_mailed_at"] = None
    if not recovered:
        changes["mailed_at"] = None
    Incident.objects.filter(id=incident.id).update(**changes)


def alerts_send(*, health: Health, now: datetime | None = None, send: Send | None = None) -> AlertsResult:
    """Send the mails the incidents are owed.

    1. With no ALERT_EMAILS, send nothing: the status page says the incidents were not mailed.
    2. Opening mails: every incident not mailed yet that is open or ended within
       MAIL_RETRY_WINDOW; a stale incident of a stream that never succeeded waits until it is
       ALERT_STALE_HOURS old (a new install has not synced yet, which is no alarm).
    3. Claim the mail: set mailed_at where it is still empty, in one UPDATE; a check whose
       UPDATE changes no row lost the race to another check and skips it. An incident that has
       ended already claims its recovered mail too, and one mail says both.
    4. Send it. If that fails, give the claim back (the next check retries) and keep the reason
       in mail_error for the status page.
    5. Recovered mails: every incident that ended within MAIL_RETRY_WINDOW, whose opening was
       mailed and whose end was not: claim recovered_mailed_at, send, give back on failure.
    A process killed between a claim and its send loses that mail: at most once, never twice.
    """
    send = send or mail_send
    now = now or timezone.now()
    result = AlertsResult()
    recipients = list(settings.ALERT_EMAILS)
    if not recipients:
        return result
    recent = Incident.objects.select_related("gap").filter(
        Q(closed_at__isnull=True) | Q(closed_at__gte=now - MAIL_RETRY_WINDOW)
    )
    for incident in recent.order_by("opened_at", "id"):
        if incident.mailed_at is None:
            never_synced = incident.kind == IncidentKind.STALE and health.last_success_at is None
            if never_synced and now - incident.opened_at < timedelta(hours=settings.ALERT_STALE_HOURS):
                continue
            both = incident.closed_at is not None
            subject, body = opening_text(incident, health)
            if both:
                subject += " (ended since)"
                body += f"\n\nUpdate: this has ended. {recovery_text(incident, health)[1]}"
            mail_one(incident, subject=subject, body=body, recipients=recipients, now=now, send=send,
                     recovered=False, both=both, result=result)  # fmt: skip
        elif incident.closed_at is not None and incident.recovered_mailed_at is None:
            subject, body = recovery_text(incident, health)
            mail_one(incident, subject=subject, body=body, recipients=recipients, now=now, send=send,
                     recovered=True, both=False, result=result)  # fmt: skip
    return result


def mail_one(
    incident: Incident,
    *,
    subject: str,
    body: str,
    recipients: list[str],
    now: datetime,
    send: Send,
    recovered: bool,
    both: bool,
    result: AlertsResult,
) -> None:
    if not claim(incident, now=now, recovered=recovered, both=both):
        return
    try:
        send(SUBJECT_PREFIX + subject, wrapped(body) + footer(), recipients)
    except Exception as exc:  # noqa: BLE001 - smtplib, socket and backend errors alike: retried next check
        error = plain(f"{type(exc).__name__}: {exc}")
        unclaim(incident, recovered=recovered, both=both, error=error)
        result.failed.append(f"the mail about incident {incident.id} could not be sent ({error})")
        log.warning("alert mail about incident %s not sent: %s", incident.id, error)
        return
    if incident.mail_error:
        Incident.objects.filter(id=incident.id).update(mail_error="")
    result.sent.append(SUBJECT_PREFIX + subject)


@dataclass
class CheckResult:
    health: Health
    alerts: AlertsResult
    open_kinds: list[str]

    @property
    def line(self) -> str:
        """One line for cron, the task's result and a person: logfmt, the error last and quoted."""
        health = self.health
        parts = {
            "status": health.status,
            "mode": "archive" if health.archive else "sync",
            "last_success_at": iso_utc(health.last_success_at) or "never",
            "lag_seconds": "none" if health.lag_seconds is None else str(health.lag_seconds),
            "open_gaps": str(health.open_gaps),
            "incidents": ",".join(self.open_kinds) or "none",
            "mails_sent": str(len(self.alerts.sent)),
        }
        if self.alerts.failed:
            parts["mails_failed"] = str(len(self.alerts.failed))
        if health.api_error:  # plain already: one line, no control characters
            parts["error"] = '"' + health.api_error.replace('"', "'") + '"'
        return " ".join(f"{key}={value}" for key, value in parts.items())


def ingestion_check(*, now: datetime | None = None, send: Send | None = None) -> CheckResult:
    """Read the health, open and close the incidents to match it, send the mails they are owed."""
    now = now or timezone.now()
    health = health_get(now=now)
    incidents_update(health=health, now=now)
    alerts = alerts_send(health=health, now=now, send=send)
    open_kinds = sorted(set(Incident.objects.filter(closed_at__isnull=True).values_list("kind", flat=True)))
    return CheckResult(health=health, alerts=alerts, open_kinds=open_kinds)
