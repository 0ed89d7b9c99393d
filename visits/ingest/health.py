"""Ingestion's health, for monitors and for people: the status `/healthz` answers (health_get),
and the incidents `ingestion_check` opens and closes to match it (incidents_update), whose mails
ingest/alerts.py words and sends. Read from SyncState and Gap only: a couple of small queries.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from visits.ingest.sync import API_ERROR_KINDS, SyncErrorKind, read_only_archive
from visits.models import Gap, Incident, IncidentKind, Stream, SyncState

# A gap recorded longer ago than this when the check first sees it (one from an archive import,
# or from before alerts existed) is history: no incident, no mail. Sell keeps events 72 hours.
GAP_NOTICE_WINDOW = timedelta(days=3)
SELL_ERROR_CHARS = 300  # how much of a string from Sell a sentence of ours quotes


class HealthStatus:
    OK = "ok"
    STALE = "stale"
    FAILING = "failing"


@dataclass(frozen=True)
class Health:
    """What the check found. `as_json` is all that /healthz shows; the rest is for incidents."""

    status: str  # HealthStatus
    archive: bool  # no SELL_ACCESS_TOKEN: a read-only archive, no sync is attempted
    last_success_at: datetime | None  # the visits stream's
    lag_seconds: int | None
    open_gaps: int
    stale: bool  # no success of the visits stream within ALERT_STALE_HOURS (or never)
    token_error: str  # Sell's refusal as recorded (plain, capped), "" when the token is not refused
    api_error: str  # the API-wide error a stream stopped on (token, network, configuration), or ""
    last_error: str  # the visits (else users) stream's last error of any kind, or ""

    @property
    def healthy(self) -> bool:
        return self.status == HealthStatus.OK

    def as_json(self) -> dict:
        return {
            "status": self.status,
            "mode": "archive" if self.archive else "sync",
            "last_success_at": iso_utc(self.last_success_at),
            "lag_seconds": self.lag_seconds,
            "open_gaps": self.open_gaps,
        }


def iso_utc(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def plain(text: str, *, limit: int = SELL_ERROR_CHARS) -> str:
    """A string from Sell fit for one line of a plain-text mail or a sentence: control and
    format characters (newlines, bidi overrides) become spaces, runs of space one, at most
    `limit` characters."""
    cleaned = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


STATE_FIELDS = ("stream", "last_success_at", "caught_up_at", "newest_event_time", "last_error", "last_error_kind")


def health_get(*, now: datetime | None = None, states: dict[str, SyncState] | None = None) -> Health:
    """The health of ingestion, in two queries (the streams' states, the unfilled gaps); one when
    the caller has read the streams' states already (`states`, by stream: the status page).

    - failing: a stream's last sync stopped on an error that concerns the whole API: Sell
      refused the token (or there is none), Sell or the network is unreachable, or a setting
      Sell cannot work with. The users stream runs first and such an error stops the pull
      there, so both streams are read.
    - stale: otherwise, no sync of the visits stream has succeeded within ALERT_STALE_HOURS
      (or none ever has).
    - ok: otherwise; and always in archive mode (no SELL_ACCESS_TOKEN), where no sync is expected.
    lag_seconds: how far behind Sell the copy may be: seconds since the moment up to which
    visitsdash holds every visits event (the last poll that reached the end of the stream, or
    during a backlog the newest event applied); None before the first event.
    """
    now = now or timezone.now()
    if states is None:
        rows = {row["stream"]: dict(row) for row in SyncState.objects.values(*STATE_FIELDS)}
    else:
        rows = {stream: {name: getattr(state, name) for name in STATE_FIELDS} for stream, state in states.items()}
    open_gaps = Gap.objects.filter(filled_at__isnull=True).count()
    visits = rows.get(Stream.VISITS, {})
    last_success = visits.get("last_success_at")
    known = [t for t in (visits.get("caught_up_at"), visits.get("newest_event_time")) if t is not None]
    lag = max(int((now - max(known)).total_seconds()), 0) if known else None
    ordered = [rows[s] for s in (Stream.USERS, Stream.VISITS) if s in rows]
    token = next((s["last_error"] for s in ordered if s["last_error_kind"] == SyncErrorKind.TOKEN), None)
    api = next((s["last_error"] for s in ordered if s["last_error_kind"] in API_ERROR_KINDS), None)
    last_error = visits.get("last_error") or next((s["last_error"] for s in ordered if s["last_error"]), "")
    stale = last_success is None or now - last_success > timedelta(hours=settings.ALERT_STALE_HOURS)
    archive = read_only_archive()
    if archive:
        status = HealthStatus.OK
    elif api is not None:
        status = HealthStatus.FAILING
    elif stale:
        status = HealthStatus.STALE
    else:
        status = HealthStatus.OK
    return Health(
        status=status,
        archive=archive,
        last_success_at=last_success,
        lag_seconds=lag,
        open_gaps=open_gaps,
        stale=stale and not archive,
        token_error="" if archive or token is None else plain(token or "Sell refused the access token"),
        api_error="" if archive or api is None else plain(api or "the last sync failed"),
        last_error=plain(last_error),
    )


def when(moment: datetime | None) -> str:
    """A time as the pages show it: in DISPLAY_TIME_ZONE, to the minute."""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z") if moment else "never"


def stale_message(health: Health) -> str:
    hours = settings.ALERT_STALE_HOURS
    if health.last_success_at is None:
        return "No sync of the visits stream has succeeded yet."
    return (
        f"No sync of the visits stream has succeeded for over {hours} hours "
        f"(the last success was at {when(health.last_success_at)})."
    )


def gap_message(gap: Gap) -> str:
    start = when(gap.start) if gap.start else "the first event"
    return (
        f"The {gap.stream} stream's stored position had expired, so syncing restarted from the oldest event "
        f"Sell still keeps: events from {start} to {when(gap.end)} may be missing until the gap is filled "
        "from the Core API."
    )


def incident_open(*, kind: str, message: str, now: datetime, gap: Gap | None = None) -> Incident | None:
    """Open an incident; None if one is open already (another check, at the same moment, won:
    the database's unique constraints let only one insert through)."""
    try:
        with transaction.atomic():
            return Incident.objects.create(kind=kind, message=message, gap=gap, opened_at=now)
    except IntegrityError:
        return None


def incidents_update(*, health: Health, now: datetime | None = None) -> list[Incident]:
    """Open and close incidents to match `health`; returns those opened now.

    1. Token: open while a stream's last error is Sell refusing the token (or no token); closed
       once no stream's is, i.e. a sync has succeeded again (a success clears the error).
    2. Stale: open while the visits stream has no success within ALERT_STALE_HOURS, or none
       ever (its mail then waits until the incident is ALERT_STALE_HOURS old, so a new install
       is not alarmed before its first sync); closed by a success. In archive mode both are
       closed: no sync is expected there.
    3. Gap: one per Gap row recorded within GAP_NOTICE_WINDOW, opened the first time a check
       sees it, even if it is filled already (the mail then says both); closed once the gap is
       filled (Gap.filled_at, set by the backfill from the Core API). An unfilled gap stays open.
    """
    now = now or timezone.now()
    opened: list[Incident] = []
    open_kinds = set(
        Incident.objects.filter(closed_at__isnull=True).exclude(kind=IncidentKind.GAP).values_list("kind", flat=True)
    )
    wanted = {
        IncidentKind.TOKEN: (bool(health.token_error), lambda: f"Sell refused the access token: {health.token_error}"),
        IncidentKind.STALE: (health.stale, lambda: stale_message(health)),
    }
    for kind, (is_on, message) in wanted.items():
        if is_on and kind not in open_kinds:
            incident = incident_open(kind=kind, message=message(), now=now)
            if incident:
                opened.append(incident)
        elif not is_on and kind in open_kinds:
            Incident.objects.filter(kind=kind, closed_at__isnull=True).update(closed_at=now)
    unseen = Gap.objects.filter(recorded_at__gte=now - GAP_NOTICE_WINDOW, incidents__isnull=True).order_by("id")
    for gap in unseen:
        incident = incident_open(kind=IncidentKind.GAP, message=gap_message(gap), now=now, gap=gap)
        if incident:
            opened.append(incident)
    Incident.objects.filter(kind=IncidentKind.GAP, closed_at__isnull=True, gap__filled_at__isnull=False).update(
        closed_at=now
    )
    return opened


def incidents_shown(*, now: datetime | None = None, states: dict[str, SyncState] | None = None) -> dict:
    """For the status page: what /healthz says (from the streams' `states` when read already),
    the open incidents, and those closed in the last week (at most 5)."""
    now = now or timezone.now()
    incidents = Incident.objects.select_related("gap")
    return {
        "health": health_get(now=now, states=states),
        "incidents_open": list(incidents.filter(closed_at__isnull=True)),
        "incidents_closed": list(incidents.filter(closed_at__gte=now - timedelta(days=7)).order_by("-closed_at")[:5]),
        "alerts_to": len(settings.ALERT_EMAILS),
        "alert_stale_hours": settings.ALERT_STALE_HOURS,
        "alert_check_minutes": settings.ALERT_CHECK_MINUTES,
    }
