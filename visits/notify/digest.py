"""What a user's weekly digest says, about their own scope only (access.rep_filter_for_user):
the week's visits and verified and too-far rates against the week before, the reps whose too-far
rate moved most, the new high-risk flags waiting for a decision, and links into the app. Counted
through reports/analytics.py (the tallies), so a digest costs a few queries at a million visits.
Rendered as a plain-text part and an autoescaped HTML part (rep names are written in Sell).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.urls import reverse

from visits import access
from visits.ingest.health import plain
from visits.models import Rep, RiskTier
from visits.notify.weeks import link, week_label, zone
from visits.reports.analytics import Counts, counts_by
from visits.reports.scope import Scope

SUBJECT_PREFIX = "[visitsdash] "
MOVERS = 5  # reps listed as having moved most
MOVERS_MIN_VISITS = 5  # in each week: a rate of two visits moves by 50 points and says nothing
FLAGS_LISTED = 10  # high-risk flags listed one by one; the rest are counted, behind one link
NAME_CHARS = 80  # a rep's name in the plain-text part: one line, capped


@dataclass(frozen=True)
class Mover:
    """A rep whose too-far rate changed from last week to this one."""

    rep_id: int
    name: str
    last: Counts
    this: Counts
    url: str

    @property
    def change(self) -> float:
        """The change of the too-far rate in percentage points."""
        return 100 * ((self.this.too_far_rate or 0.0) - (self.last.too_far_rate or 0.0))

    @property
    def figures(self) -> str:
        """ "12 of 40 too far (30.0%), last week 3 of 38 (7.9%): +22.1 points"."""
        this, last = self.this, self.last
        return (
            f"{this.resource_location_too_far} of {this.visits} too far ({percent(this.too_far_rate)}), "
            f"last week {last.resource_location_too_far} of {last.visits} ({percent(last.too_far_rate)}): "
            f"{self.change:+.1f} points"
        )


@dataclass(frozen=True)
class WaitingFlag:
    visit_id: int
    rep_name: str
    visited_at: datetime
    risk: int
    url: str


@dataclass(frozen=True)
class Line:
    """A row of the figures' table, worded for both parts."""

    label: str
    this: str
    last: str
    change: str


@dataclass
class Digest:
    user: User
    week: date  # its Monday
    this: Counts
    last: Counts
    movers: list[Mover]
    flags: list[WaitingFlag]
    flags_total: int
    links: dict[str, str] = field(default_factory=dict)

    @property
    def to(self) -> str:
        return self.user.email

    @property
    def subject(self) -> str:
        this = self.this
        return (
            f"{SUBJECT_PREFIX}Week of {week_label(self.week)}: {this.visits} visits, "
            f"{percent(this.too_far_rate)} too far"
        )

    @property
    def lines(self) -> list[Line]:
        this, last = self.this, self.last
        return [
            Line("Visits", str(this.visits), str(last.visits), f"{this.visits - last.visits:+d}"),
            Line("Verified", percent(this.verified_rate), percent(last.verified_rate),
                 points(this.verified_rate, last.verified_rate)),
            Line("Too far", percent(this.too_far_rate), percent(last.too_far_rate),
                 points(this.too_far_rate, last.too_far_rate)),
        ]  # fmt: skip


@dataclass(frozen=True)
class Skipped:
    """No digest for this user this week, and why (a sentence)."""

    reason: str


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def points(this: float | None, last: float | None) -> str:
    if this is None or last is None:
        return "n/a"
    return f"{100 * (this - last):+.1f} points"


def week_scope(week: date, *, reps: frozenset[int] | None) -> Scope:
    return Scope(start=week, end=week + timedelta(days=6), reps=reps)


def query(path: str, **params: object) -> str:
    return link(path + ("?" + urlencode(params) if params else ""))


def movers_pick(
    *, this: dict[int, Counts], last: dict[int, Counts], names: dict[int, str], week: date, limit: int = MOVERS
) -> list[Mover]:
    """The reps with MOVERS_MIN_VISITS visits in each week whose too-far rate changed most (either
    way), biggest change first, then by name."""
    both = [r for r in this if r in last and min(this[r].visits, last[r].visits) >= MOVERS_MIN_VISITS]
    start, end = (week - timedelta(days=7)).isoformat(), (week + timedelta(days=6)).isoformat()
    movers = [
        Mover(rep_id=r, name=Rep.label_for(r, names.get(r)), last=last[r], this=this[r],
              url=query(reverse("visits:rep", kwargs={"rep_id": r}), start=start, end=end))
        for r in both
    ]  # fmt: skip
    movers = [m for m in movers if round(m.change, 1) != 0]
    movers.sort(key=lambda m: (-abs(m.change), m.name.casefold(), m.rep_id))
    return movers[:limit]


def flags_waiting(*, week: date, reps: frozenset[int] | None) -> tuple[list[WaitingFlag], int]:
    """The week's visits flagged high-risk with no decision yet, riskiest first (the queue's
    index of flagged visits holds every column asked): FLAGS_LISTED of them, and how many."""
    waiting = (
        week_scope(week, reps=reps).visits().filter(flagged=True, risk_tier=RiskTier.HIGH, review_status__isnull=True)
    )
    total = waiting.count()
    rows = list(
        waiting.order_by("-risk", "-visited_at", "-id").values_list("id", "rep_id", "visited_at", "risk")[:FLAGS_LISTED]
    )
    names = dict(Rep.objects.filter(id__in={rep_id for _, rep_id, _, _ in rows}).values_list("id", "name"))
    flags = [
        WaitingFlag(visit_id=visit_id, rep_name=Rep.label_for(rep_id, names.get(rep_id)),
                    visited_at=visited_at.astimezone(zone()), risk=risk,
                    url=link(reverse("visits:visit", kwargs={"visit_id": visit_id})))
        for visit_id, rep_id, visited_at, risk in rows
    ]  # fmt: skip
    return flags, total


def digest_build(*, user: User, week: date) -> Digest | Skipped:
    """The digest of the week starting on Monday `week` for `user`'s scope, or why there is none:
    a scope of no reps (a Manager not linked to a Sell user), or no visits in it that week."""
    reps = access.rep_filter_for_user(user)
    if reps is not None and not reps:
        return Skipped(f"{user.get_username()} sees no reps (not linked to a Sell user with a reporting line).")
    this = {key[0]: c for key, c in counts_by(scope=week_scope(week, reps=reps), by=("rep",)).items()}
    total = Counts()
    for counts in this.values():
        total.add(counts)
    if not total.visits:
        return Skipped(f"{user.get_username()}'s reps made no visits in the week of {week_label(week)}.")
    before = week - timedelta(days=7)
    last = {key[0]: c for key, c in counts_by(scope=week_scope(before, reps=reps), by=("rep",)).items()}
    last_total = Counts()
    for counts in last.values():
        last_total.add(counts)
    names = dict(Rep.objects.filter(id__in=set(this) & set(last)).values_list("id", "name"))
    flags, flags_total = flags_waiting(week=week, reps=reps)
    start, end = week.isoformat(), (week + timedelta(days=6)).isoformat()
    links = {
        "overview": query(reverse("visits:home"), start=start, end=end),
        "reps": query(reverse("visits:reps"), start=start, end=end, sort="-too_far_rate"),
        "queue": query(reverse("visits:review"), tier=RiskTier.HIGH, review="awaiting", start=start, end=end,
                       sort="risk"),
        "settings": link(reverse("visits:account_settings")),
    }  # fmt: skip
    return Digest(
        user=user, week=week, this=total, last=last_total,
        movers=movers_pick(this=this, last=last, names=names, week=week),
        flags=flags, flags_total=flags_total, links=links,
    )  # fmt: skip


def digest_render(digest: Digest) -> Rendered:
    """The subject (no text from Sell in it), the plain-text part and the HTML part."""
    context = {
        "digest": digest,
        "week_label": week_label(digest.week),
        "last_week_label": week_label(digest.week - timedelta(days=7)),
        "privacy_notice": settings.PRIVACY_NOTICE,
        "min_visits": MOVERS_MIN_VISITS,
        # The text part is not HTML: names go in as one plain line each, unescaped (its template
        # turns autoescaping off); the HTML part escapes the names themselves.
        "text_movers": [(plain(m.name, limit=NAME_CHARS), m) for m in digest.movers],
        "text_flags": [(plain(f.rep_name, limit=NAME_CHARS), f) for f in digest.flags],
    }
    return Rendered(
        subject=digest.subject,
        text=render_to_string("visits/mail/digest.txt", context),
        html=render_to_string("visits/mail/digest.html", context),
    )
