"""Shared fixtures: a real demo Firehose on 127.0.0.1, settings pointing at it, and the
check that the database holds exactly what the generator says it must."""

import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group, User
from django.db import connection

from visits.demo.generator import DemoData, team_generate
from visits.demo.server import DemoFirehose, Faults
from visits.models import (
    AllTimeTally,
    CoreApiState,
    DeletedVisit,
    MonthTally,
    Outcome,
    Rep,
    ReviewTally,
    Visit,
    WeekTally,
    YearTally,
)

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop

TOKEN = "test-token"
# The moment every generated data set of the tests ends at, so the same data comes out whatever
# today's date (the generator's dice follow the calendar of its window). It is in the past, as
# Sell's events always are: the sync's gaps end at the real now, after the newest event held.
# The full team's eight weeks straddle a new year, so year and month boundaries are crossed.
DEMO_NOW = datetime(2026, 1, 20, 15, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Cast:
    """The shared cast of users: one of each kind of access the app knows."""

    manager: User  # reads every report of every rep, read-only (group Directors)
    reviewer: User  # reads every report and decides on flagged visits (group Reviewers)
    outsider: User  # signed in, in no group: may see nothing
    superuser: User  # every page, the admin and the status pages too


def password_of(user: User) -> str:
    """The password `user_make` gives a user: `pw-<name>-1`."""
    return f"pw-{user.username}-1"


def user_make(name: str, *, group: str | None = None, **fields) -> User:
    """A user whose password is `pw-<name>-1`, optionally in one of the app's groups."""
    user = User.objects.create_user(name, password=f"pw-{name}-1", **fields)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def cast(db) -> Cast:
    return Cast(
        manager=user_make("manager", group="Directors"),
        reviewer=user_make("reviewer", group="Reviewers"),
        outsider=user_make("outsider"),
        superuser=user_make("root", is_staff=True, is_superuser=True),
    )


@pytest.fixture(autouse=True)
def sell_rate_limit_off(settings):
    """Sell's 10 requests a second would only slow tests that are not about it (test_limiter.py
    turns it back on); the clients built from the settings then never wait."""
    settings.SELL_RATE_LIMIT = 0


@pytest.fixture(scope="session")
def small_team() -> DemoData:
    """A small team (a week of visits), with updates, deletes and malformed items."""
    return team_generate(seed=11, reps=6, weeks=1, malformed=True, now=DEMO_NOW)


@pytest.fixture(scope="session")
def full_team() -> DemoData:
    """The demo's default team: about 25 reps and eight weeks of visits."""
    return team_generate(seed=7, malformed=True, now=DEMO_NOW)


@pytest.fixture
def serve(settings):
    """Start a demo Firehose for given data and point the app's settings at it."""
    servers = []

    def start(data: DemoData, *, faults: Faults | None = None, **kwargs) -> DemoFirehose:
        server = DemoFirehose(data, token=TOKEN, faults=faults, **kwargs).start()
        servers.append(server)
        settings.SELL_API_URL = server.url
        settings.SELL_ACCESS_TOKEN = TOKEN
        settings.SELL_BACKOFF_BASE = 0.001
        settings.SELL_BACKOFF_CAP = 0.01
        settings.SELL_MAX_RETRIES = 30
        settings.SELL_TIMEOUT = 5
        settings.SELL_RATE_LIMIT = 0  # tests/test_limiter.py turns it on; the rest would only wait
        return server

    yield start
    for server in servers:
        server.stop()


def database_url() -> str:
    """A URL for the test database this process is using, for a subprocess to share."""
    cfg = connection.settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    auth = cfg["USER"] + (f":{cfg['PASSWORD']}" if cfg["PASSWORD"] else "")
    return f"postgres://{auth}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


def command_env(server_url: str, **extra) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "SELL_API_URL": server_url,
        "SELL_ACCESS_TOKEN": TOKEN,
        "SELL_BACKOFF_BASE": "0.001",
        "SELL_BACKOFF_CAP": "0.01",
        "SELL_MAX_RETRIES": "30",
        "SELL_PAGE_LIMIT": "20",
        "SELL_RATE_LIMIT": "0",
        "SECRET_KEY": django_settings.SECRET_KEY,
    }
    env.update(extra)
    return env


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def expected_with_core(data: DemoData) -> tuple[dict, dict]:
    """The reps (name, email, status, role) and outcome names a correct client holds: the
    Firehose's truth, plus what the Core API's refresh adds once it has run (as `sync_visits`
    and the worker do): its users where the users stream named nobody, and every outcome's
    current name (it is newer than any event)."""
    reps = {rid: (r["name"], r["email"], r["status"], r["role"]) for rid, r in data.expected_reps().items()}
    outcomes = data.expected_outcomes()
    done = set(CoreApiState.objects.filter(last_success_at__isnull=False).values_list("feature", flat=True))
    if "users" in done:
        for user_id, user in data.core_users().items():
            if not reps.get(user_id, ("",))[0]:
                reps[user_id] = (user["name"], user["email"], user["status"], user["role"])
    if "outcomes" in done:
        outcomes = {**outcomes, **data.core_outcomes()}
    return reps, outcomes


def assert_db_matches(data: DemoData) -> None:
    """The database holds every visit, rep and outcome exactly as the generator's truth (with
    the Core API's users and outcomes when their refresh ran: expected_with_core)."""
    expected = data.expected_visits()
    rows = {v.id: v for v in Visit.objects.all()}
    tombstones = dict(DeletedVisit.objects.values_list("id", "sequence"))
    problems = []
    for visit_id, want in expected.items():
        snap = want["snapshot"]
        if snap is None:
            if tombstones.get(visit_id) != want["sequence"] and visit_id not in rows:
                problems.append(f"visit {visit_id}: deleted unseen visit has no tombstone")
            continue
        row = rows.get(visit_id)
        if row is None:
            problems.append(f"visit {visit_id}: missing")
            continue
        location = snap["sales_rep_location"]
        got = (
            row.sequence, row.deleted_at is not None, row.rep_id, row.resource_type, row.resource_id,
            row.visited_at, row.created_at, row.summary, row.outcome_id, row.latitude, row.longitude,
            row.verification_status,
        )  # fmt: skip
        outcome = snap.get("outcome")
        wanted = (
            want["sequence"], want["deleted"], snap["creator_id"], snap["resource_type"], snap["resource_id"],
            parse_time(snap["visited_at"]), parse_time(snap["created_at"]), snap["summary"] or "",
            outcome["id"] if outcome else None, location["latitude"], location["longitude"],
            location["verification_status"],
        )  # fmt: skip
        if got != wanted:
            problems.append(f"visit {visit_id}: got {got}, want {wanted}")
    extra = set(rows) - set(expected)
    if extra:
        problems.append(f"visits not in the generator's truth: {sorted(extra)[:10]}")
    reps = {r.id: (r.name, r.email, r.status, r.role) for r in Rep.objects.all()}
    want_reps, want_outcomes = expected_with_core(data)
    if reps != want_reps:
        diff = {
            k: (reps.get(k), want_reps.get(k)) for k in set(reps) | set(want_reps) if reps.get(k) != want_reps.get(k)
        }
        problems.append(f"reps differ (got, want): {dict(list(diff.items())[:10])}")
    outcomes = dict(Outcome.objects.values_list("id", "name"))
    if outcomes != want_outcomes:
        problems.append(f"outcomes differ: got {outcomes}, want {want_outcomes}")
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:15])
    assert_tallies_match()


def assert_flags_match() -> None:
    """The stored flags equal a computation from scratch, and no rep waits for a recompute."""
    from visits.models import RULE_BITS, DirtyRep, Flag, FlagWindow
    from visits.review.flags import flags_expected

    assert not DirtyRep.objects.exists(), "reps still wait for their flags"
    assert not FlagWindow.objects.exists(), "windows are left after the refresh"
    stored = {(f.visit_id, f.rule): (f.numbers, f.sentence) for f in Flag.objects.all()}
    expected = {key: (f.numbers, f.sentence) for key, f in flags_expected().items()}
    flagged = set(Visit.objects.filter(deleted_at__isnull=True, flagged=True).values_list("id", flat=True))
    assert flagged == {visit_id for visit_id, _ in expected}, "Visit.flagged differs from the flags"
    masks: dict[int, int] = {}
    for visit_id, rule in expected:
        masks[visit_id] = masks.get(visit_id, 0) | RULE_BITS[rule]
    kept = dict(Visit.objects.exclude(flag_rules=0).values_list("id", "flag_rules"))
    assert kept == masks, "Visit.flag_rules differs from the flags"
    assert stored == expected, (
        f"flags differ: {len(set(stored) ^ set(expected))} keys, e.g. {sorted(set(stored) ^ set(expected))[:5]}"
    )
    assert_risk_match()
    assert_tallies_match()  # the flagged counts the tallies keep follow Visit.flagged


def assert_risk_match() -> None:
    """Every visit's stored risk and tier equal a computation from scratch (0 and "" unflagged)."""
    from visits.review.flags import risk_expected

    want = {visit_id: (risk.score, risk.tier) for visit_id, risk in risk_expected().items()}
    held = {
        visit_id: (risk, tier)
        for visit_id, risk, tier in Visit.objects.filter(deleted_at__isnull=True).values_list("id", "risk", "risk_tier")
        if risk or tier or visit_id in want
    }
    differ = sorted(set(want.items()) ^ set(held.items()))
    assert held == want, f"risk differs on {len(differ)} visits, e.g. {differ[:6]}"


def tallies_counted() -> dict[str, Counter]:
    """The tallies as they should be, counted here in Python from the visits (their
    visited_at and DISPLAY_TIME_ZONE, not the stored local_day): (visits, flagged) per key."""
    zone = ZoneInfo(django_settings.DISPLAY_TIME_ZONE)
    counts = {"month": Counter(), "year": Counter(), "all": Counter(), "week": Counter()}
    far_m = django_settings.DISTANCE_FAR_KM * 1000
    for v in Visit.objects.filter(deleted_at__isnull=True):
        day = v.visited_at.astimezone(zone).date()
        dims = (v.rep_id, v.outcome_id or 0, v.resource_type, v.verification_status)
        for name, key in (
            ("month", (day.replace(day=1), *dims)),
            ("year", (day.replace(month=1, day=1), *dims)),
            ("all", dims),
            ("week", (day - timedelta(days=day.weekday()), v.rep_id, v.verification_status)),
        ):
            counts[name][(*key, "visits")] += 1
            counts[name][(*key, "flagged")] += int(v.flagged)
            if name != "week":  # the far visits: of the month, year and all-time tallies
                far = v.customer_distance_m is not None and v.customer_distance_m > far_m
                counts[name][(*key, "far")] += int(far)
    return counts


def assert_tallies_match() -> None:
    """The tallies the triggers kept equal a direct count of the live visits (zero rows aside)."""
    wanted = tallies_counted()
    status = ("rep_id", "outcome_id", "resource_type", "verification_status")
    stored = {"month": Counter(), "year": Counter(), "all": Counter(), "week": Counter()}
    for name, model, key in (
        ("month", MonthTally, ("month", *status)), ("year", YearTally, ("year", *status)),
        ("all", AllTimeTally, status), ("week", WeekTally, ("week", "rep_id", "verification_status")),
    ):  # fmt: skip
        counted = ("visits", "flagged") if model is WeekTally else ("visits", "flagged", "far")
        for row in model.objects.values_list(*key, *counted):
            for column, n in zip(counted, row[len(key) :], strict=True):
                stored[name][(*row[: len(key)], column)] += n
    assert +wanted["month"], "no live visits to tally"
    for name, want in wanted.items():
        got, want = +stored[name], +want  # unary plus drops the zero counts
        assert got == want, (
            f"{name} tallies differ: extra {dict(list((got - want).items())[:5])}, "
            f"missing {dict(list((want - got).items())[:5])}"
        )
    assert_review_tally_match()


def review_tally_counted() -> Counter:
    """The review tally as it should be, counted here in Python from the live flagged visits:
    visits per (rep, flag_rules, risk_tier, review_status or "")."""
    counts: Counter = Counter()
    rows = Visit.objects.filter(deleted_at__isnull=True, flagged=True)
    for rep_id, rules, tier, status in rows.values_list("rep_id", "flag_rules", "risk_tier", "review_status"):
        counts[(rep_id, rules, tier or "", status or "")] += 1
    return counts


def assert_review_tally_match() -> None:
    """The review tally the triggers kept equals a direct count of the live flagged visits: no
    key missing or extra, none below zero (zero rows aside: the triggers leave them)."""
    stored: Counter = Counter()
    for *key, n in ReviewTally.objects.values_list("rep_id", "flag_rules", "risk_tier", "review_status", "visits"):
        assert n >= 0, f"the review tally counts {n} at {key}"
        stored[tuple(key)] += n
    got, want = +stored, review_tally_counted()
    assert got == want, (
        f"review tally differs: extra {dict(list((got - want).items())[:5])}, "
        f"missing {dict(list((want - got).items())[:5])}"
    )


def browser_sign_in(page, url: str, *, user: User) -> User:
    """Open `url` (which sends to the login page), sign in as `user` (one of the cast, or made by
    `user_make`: its password is `pw-<name>-1`), and wait to be back at `url`."""
    page.goto(url)
    page.fill("#id_username", user.username)
    page.fill("#id_password", password_of(user))
    page.click("form [type=submit]")
    path = urlsplit(url).path
    page.wait_for_url(lambda current: urlsplit(current).path == path)
    return user


CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (CHROMIUM_PATH elsewhere); Playwright's own download is never used."""
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        "args": CHROMIUM_ARGS,
    }


@pytest.fixture(autouse=True)
def decisions_flushable(request):
    """After a transactional test, pytest-django empties every table, which the triggers of the
    decisions, the address marks and the access log refuse (visits/review/immutable.py,
    addresses.py, security/access_log.py): they are dropped just before, and the flush's
    post_migrate puts them back."""
    marker = request.node.get_closest_marker("django_db")
    uses = set(request.fixturenames)
    if not ((marker and marker.kwargs.get("transaction")) or uses & {"transactional_db", "live_server"}):
        yield
        return
    request.getfixturevalue("transactional_db")  # set up first, so torn down (flushed) after this
    yield
    from visits.review.addresses import address_mark_triggers_drop
    from visits.review.immutable import decision_triggers_drop
    from visits.security.access_log import access_log_triggers_drop

    decision_triggers_drop()
    address_mark_triggers_drop()
    access_log_triggers_drop()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Real hashing takes half a second per password; tests need none of its strength."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
