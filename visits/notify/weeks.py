"""The weeks the digests and the rate alerts are about (Monday to Sunday in DISPLAY_TIME_ZONE),
when their schedules run, and the links into the app that mails carry (SITE_URL)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

# Links in mails when SITE_URL is empty: right for the demo and a laptop, and visibly a placeholder
# anywhere else (the README says to set SITE_URL).
FALLBACK_SITE_URL = "http://localhost:8000"


def zone() -> ZoneInfo:
    return ZoneInfo(settings.DISPLAY_TIME_ZONE)


def week_of(day: date) -> date:
    """The Monday of the week holding `day`."""
    return day - timedelta(days=day.weekday())


def week_last_ended(*, now: datetime | None = None) -> date:
    """The Monday of the latest week that has ended by `now` (in DISPLAY_TIME_ZONE)."""
    today = (now or timezone.now()).astimezone(zone()).date()
    return week_of(today) - timedelta(days=7)


def week_has_ended(week: date, *, now: datetime | None = None) -> bool:
    return week <= week_last_ended(now=now)


def week_parse(value: str, *, now: datetime | None = None) -> date:
    """The Monday of the week holding the day `value` (YYYY-MM-DD); ValueError with a sentence when
    it is not such a day, or its week has not ended yet (a digest of it would miss days)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--week wants a day as YYYY-MM-DD, such as 2026-01-12; {value!r} is not one.") from None
    week = week_of(day)
    if not week_has_ended(week, now=now):
        raise ValueError(
            f"The week of {week_label(week)} has not ended yet; the latest week that has is "
            f"{week_label(week_last_ended(now=now))}."
        )
    return week


def week_label(week: date) -> str:
    """ "5 Jan 2026 to 11 Jan 2026": how a mail names a week."""
    sunday = week + timedelta(days=6)
    return f"{week.day} {week:%b %Y} to {sunday.day} {sunday:%b %Y}"


def next_run_at(*, weekday: int | None, at: time, now: datetime | None = None) -> datetime:
    """The next moment after `now` that is `at` o'clock in DISPLAY_TIME_ZONE, on `weekday`
    (0 = Monday) or any day when None, as an aware datetime (stored in UTC by the schedule)."""
    now = now or timezone.now()
    local = now.astimezone(zone())
    day = local.date()
    while True:
        # Built from the wall-clock time each day, so a change of summer time is followed.
        candidate = datetime.combine(day, at, tzinfo=zone())
        if candidate > now and (weekday is None or day.weekday() == weekday):
            return candidate
        day += timedelta(days=1)


def site_url() -> str:
    return settings.SITE_URL or FALLBACK_SITE_URL


def link(path: str) -> str:
    """An absolute link into the app for a mail: SITE_URL (or the fallback) and `path`."""
    return site_url() + path
