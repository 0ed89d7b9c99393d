"""No page's query count grows with the rows it shows: each list-like URL is rendered with a few
rows and with several times more, and must make the same number of SQL queries both times.
Every URL pattern of the project is either checked here or allowed below with its reason, so a
new page cannot slip by. (How fast the pages are at a million visits is bench/pages.py's job.)"""

import fnmatch
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_q.models import OrmQ, Schedule, Task

from tests.conftest import user_make
from tests.test_access import patterns_walk
from visits.geo.customers import customers_refresh
from visits.ingest.pages import visits_upsert
from visits.models import (
    AcceptReason,
    AccessLogEntry,
    CoreApiState,
    CoreFeature,
    Customer,
    DecisionKind,
    Gap,
    MailSent,
    Outcome,
    RateAlert,
    RejectedItem,
    Rep,
    Stream,
    SyncState,
    Visit,
)
from visits.review.addresses import address_mark
from visits.review.flags import flags_rebuild
from visits.review.queue import decisions_record

pytestmark = pytest.mark.django_db

FEW, MANY = 2, 6  # the world's size: reps, outcomes, visits per rep (so 4 visits, then 36)
AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
REP, VISIT = 41, 41001  # the rep and the visit whose own pages are checked (they exist at FEW)
CUSTOMER = 4101  # the customer (lead 1) whose page is checked
GROUP = 900  # the reps' Sell groups: 900 to 902, more reps in each as the world grows


def rep_id(r: int) -> int:
    return 40 + r


def visit_id(r: int, i: int) -> int:
    return rep_id(r) * 1000 + i


@dataclass
class World:
    """Reps, outcomes and visits (every rep with a visit of each outcome, one in two flagged by
    Sell's status, within hours of each other so that each has neighbours), decisions, and a row
    or more for every model the admin lists; `grow` makes it bigger, keeping what was there."""

    reviewer: object
    size: int = 0

    def grow(self, size: int) -> None:
        old = self.size
        Rep.objects.bulk_create([
            Rep(id=rep_id(r), name=f"Rep {r}", group_id=GROUP + r % 3, group_name=f"Group {r % 3}",
                reports_to=rep_id(1) if r > 1 else None)
            for r in range(old + 1, size + 1)
        ])  # fmt: skip
        Outcome.objects.bulk_create([Outcome(id=i, name=f"Outcome {i}") for i in range(old + 1, size + 1)])
        rows = {
            visit_id(r, i): self.visit_row(r, i)
            for r in range(1, size + 1)
            for i in range(1, size + 1)
            if r > old or i > old
        }
        with transaction.atomic():
            visits_upsert(rows=rows)
        flags_rebuild()
        Visit.objects.filter(flagged=True, risk_tier="").update(risk=30, risk_tier="low")  # as review/ would
        if not old:
            Customer.objects.create(id=CUSTOMER, resource_type="lead", resource_id=1)
        customers_refresh()  # every lead is too far for every rep: all suspects
        # Marks on new customers, and the checked one's grow; each undone again, so that the visits
        # keep their distance flags (a mark takes them out of the queue) and stay decidable.
        for i in range(old + 1, size + 1):
            for customer in [Customer.objects.get(resource_id=i)] + (
                [Customer.objects.get(id=CUSTOMER)] if i > 1 else []
            ):
                address_mark(customer=customer, wrong=True, note=f"mark {i}", user=self.reviewer)
                address_mark(customer=customer, wrong=False, note=f"undone {i}", user=self.reviewer)
        new = sorted(rows)
        self.decide([v for v in new if v % 1000 in (1, 3)], DecisionKind.FOLLOW_UP)
        self.decide([v for v in new if v % 1000 == 1], DecisionKind.ACCEPT)  # decided twice
        for _ in range(size - old):  # the checked visit's decisions grow too
            self.decide([VISIT], DecisionKind.REJECT)
        self.admin_rows(range(old + 1, size + 1))
        self.size = size

    @staticmethod
    def visit_row(r: int, i: int) -> dict:
        at = AT + timedelta(days=r, minutes=40 * i)
        return {
            "rep_id": rep_id(r), "resource_type": "lead", "resource_id": i, "visited_at": at, "created_at": at,
            "summary": f"Visit {i} of rep {r}", "outcome_id": i, "latitude": 41.8 + r / 100 + i / 1000,
            "longitude": -87.6 + i / 1000, "sequence": 1, "event_time": at, "deleted_at": None,
            "verification_status": "resource_location_too_far" if i % 2 else "verified",
        }  # fmt: skip

    def decide(self, ids: list[int], kind: str) -> None:
        if ids:
            reason = AcceptReason.GPS_NOISE if kind == DecisionKind.ACCEPT else ""
            assert decisions_record(visit_ids=ids, kind=kind, reason=reason, note="checked", user=self.reviewer) == len(
                ids
            )

    @staticmethod
    def admin_rows(numbers: range) -> None:
        """Rows of the other models the admin lists (SyncState has one per stream, CoreApiState one per
        feature: one, then two)."""
        now = datetime.now(UTC)
        SyncState.objects.get_or_create(stream=Stream.USERS if numbers.start > 1 else Stream.VISITS)
        CoreApiState.objects.get_or_create(feature=CoreFeature.USERS if numbers.start > 1 else CoreFeature.VISITS)
        who = {"user_agent": "test", "ip_address": "127.0.0.1", "http_accept": "*/*", "path_info": "/accounts/login/"}
        for n in numbers:
            user_make(f"user-{n}")
            Group.objects.create(name=f"group-{n}")
            Gap.objects.create(stream=Stream.VISITS, end=now - timedelta(days=n), reason=f"expired {n}")
            RejectedItem.objects.create(stream=Stream.VISITS, digest=f"{n:064x}", raw=f"{{{n}", reason="not JSON")
            Schedule.objects.create(name=f"schedule-{n}", func="math.floor", schedule_type=Schedule.HOURLY)
            for success in (True, False):
                Task.objects.create(id=f"{n}{success:d}".zfill(32), name=f"task-{n}", func="math.floor",
                                    started=now, stopped=now, success=success, group="g")  # fmt: skip
            OrmQ.objects.create(key="visitsdash", payload=f"payload {n}")
            AccessAttempt.objects.create(**who, username=f"user-{n}", get_data="", post_data="", failures_since_start=1)
            AccessLog.objects.create(**who, username=f"user-{n}")
            AccessFailureLog.objects.create(**who, username=f"user-{n}", locked_out=False)
            AccessLogEntry.objects.create(username=f"user-{n}", kind="visit", path=f"/visits/{n}/", object_id=n)
            alert = RateAlert.objects.create(
                rep_id=rep_id(n), week=date(2026, 1, 5) + timedelta(weeks=n), visits_before=20, far_before=1,
                visits_after=20, far_after=9,
            )  # fmt: skip
            MailSent.objects.create(
                username=f"user-{n}", to=f"user-{n}@example.com", kind="rate_alert", week=alert.week,
                rate_alert=alert, subject=f"alert {n}", ok=True,
            )  # fmt: skip


def admin_lists() -> dict[str, list[str]]:
    return {
        f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist": [
            f"/admin/{m._meta.app_label}/{m._meta.model_name}/"
        ]
        for m in admin.site._registry
    }


# The URLs checked for each pattern, in the world above (as a superuser).
CASES: dict[str, list[str]] = {
    "visits:home": ["/"],
    "visits:reps": ["/reports/reps/", "/reports/reps/?sort=-flagged", f"/reports/reps/?team={GROUP + 1}"],
    "visits:teams": ["/reports/teams/", f"/reports/teams/?team={GROUP + 1}&team={GROUP + 2}"],
    "visits:teams_csv": ["/reports/teams.csv"],
    "visits:outcomes": ["/reports/outcomes/"],
    "visits:matrix": ["/reports/matrix/"],
    "visits:reps_csv": ["/reports/reps.csv", f"/reports/reps.csv?team={GROUP + 1}"],
    "visits:outcomes_csv": ["/reports/outcomes.csv"],
    "visits:matrix_csv": ["/reports/matrix.csv"],
    "visits:visits_csv": ["/visits.csv"],
    "visits:rep": [f"/reports/reps/{REP}/"],
    "visits:visits": ["/visits/", "/visits/?sort=rep", "/visits/?sort=-outcome"],
    "visits:visit": [f"/visits/{VISIT}/"],  # its flags and decisions
    "visits:visit_map": [f"/visits/{VISIT}/map/"],
    "visits:visit_summary": [f"/visits/{VISIT}/summary.json"],
    "visits:review": [
        "/review/?review=all",
        "/review/?review=accept",
        "/review/?rule=resource_location_too_far&review=all",
        "/review/?review=all&sort=oldest",
        "/review/?review=all&tier=low&sort=risk",
    ],  # awaiting: empty at FEW
    "visits:review_csv": ["/review.csv?review=all", "/review.csv?review=all&sort=oldest", "/review.csv?review=accept"],
    "visits:review_rules": ["/review/rules/", "/review/rules/?tier=low"],
    "visits:review_rules_csv": ["/review/rules.csv"],
    "visits:access_log_csv": ["/access_log.csv", "/access_log.csv?kind=visit"],  # the pages' entries, and World's
    "visits:review_accept_low": ["/review/accept-low/", "/review/accept-low/?rule=resource_location_too_far"],
    "visits:review_reps": [
        "/review/reps/?review=all",
        "/review/reps/?review=all&tier=low&rule=resource_location_too_far",
    ],
    "visits:addresses": ["/review/addresses/", "/review/addresses/?mark=wrong"],
    "visits:address": [f"/review/addresses/{CUSTOMER}/"],  # its visits and marks
    "visits:map": ["/map/"],
    "visits:map_frame": ["/map/frame/"],
    "visits:map_clusters": [
        "/map/clusters.json?bbox=-180,-90,180,90&zoom=2",  # from the map tally
        "/map/clusters.json?bbox=-180,-90,180,90&zoom=2&start=2026-01-05",  # from the visits
    ],
    "visits:map_points": ["/map/points.json?bbox=-180,-90,180,90&zoom=13"],
    "visits:status": ["/status/"],  # its gaps
    "visits:rejected": ["/status/rejected/"],
    "visits:account_settings": ["/account/settings/"],
    "admin:index": ["/admin/"],
    "admin:visits_flaggedvisit_change": [f"/admin/visits/flaggedvisit/{VISIT}/change/"],  # decisions inline
    **admin_lists(),
}
# Pages that show one thing whatever the rows (the summary, a visit's map, the index): their
# counts are checked to stay put, but their size need not grow.
ONE_THING = {"visits:home", "visits:visit_map", "visits:visit_summary", "visits:map", "visits:map_frame", "admin:index",
             "visits:review_rules", "visits:review_rules_csv", "visits:review_accept_low",
             "visits:account_settings"}  # fmt: skip
# (the map's frame: no visit in it, they come from map_clusters and map_points;
# the rules' page and CSV: a row per rule whatever the visits; the bulk accept's confirmation: a count;
# the mail settings: two checkboxes)


# Patterns not checked, and why. Keys as in tests/test_access.py (name with namespace, else the
# route), shell-style wildcards allowed.
ALLOWED = {
    "login": "the sign-in form: no rows",
    "logout": "POST only; signs out",
    "password_change": "a form: no rows",
    "password_change_done": "a sentence: no rows",
    "favicon.ico": "a redirect to a static file",
    "visits:healthz": "no rows: two small queries (tests/test_health.py counts them)",
    "visits:review_decide": "POST only: records decisions and redirects (tests/test_review.py)",
    "visits:address_mark": "POST only: records a mark and redirects (tests/test_addresses.py)",
    "admin:login": "the sign-in form: no rows",
    "admin:logout": "POST only; signs out",
    "admin:password_change": "a form: no rows",
    "admin:password_change_done": "a sentence: no rows",
    "admin:jsi18n": "the admin's translations as JavaScript: no rows",
    "admin:autocomplete": "serves autocomplete_fields, which no ModelAdmin uses",
    "admin:view_on_site": "redirects to a model's get_absolute_url, which no model has",
    "admin:app_list": "an app's models, not their rows",
    "admin:*_add": "a blank form (refused for the read-only models)",
    "admin:*_change": "one object's form (the flagged visit's, whose decisions are inline, is checked)",
    "admin:*_history": "one object's admin log: no such entries are written here (the data is Sell's)",
    "admin:*_delete": "one object's confirmation (refused for the read-only models)",
    "admin:auth_user_password_change": "a form: no rows",
    "admin/*/*/<path:object_id>/": "the old change URL: a redirect",
    "admin/(?P<url>.*)$": "the admin's catch-all: 404 or the sign-in page",
}


def allowed_reason(key: str) -> str | None:
    return next((reason for pattern, reason in ALLOWED.items() if fnmatch.fnmatchcase(key, pattern)), None)


def test_every_url_pattern_is_checked_or_allowed_with_a_reason():
    keys = [key for key, _, _, _ in patterns_walk()]
    unchecked = [key for key in keys if key not in CASES and not allowed_reason(key)]
    assert not unchecked, (
        f"URL patterns whose query counts nobody checks: add them to CASES (or ALLOWED, with the reason): {unchecked}"
    )
    stale = [key for key in CASES if key not in keys] + [
        pattern for pattern in ALLOWED if not any(fnmatch.fnmatchcase(key, pattern) for key in keys)
    ]
    assert not stale, f"CASES or ALLOWED name patterns that no longer exist: {stale}"


def rendered(client, url: str) -> tuple[int, int]:
    """(SQL queries, bytes) of a whole response, a streamed one read to its end."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
        body = b"".join(response.streaming_content) if response.streaming else response.content
    assert response.status_code == 200, (url, response.status_code)
    return len(queries.captured_queries), len(body)


def counts_grown(client, cast, keys: list[str]) -> list[str]:
    """Render each key's URLs in a world of FEW, then of MANY; what grew, or showed no more rows."""
    world = World(reviewer=cast.reviewer)
    world.grow(FEW)
    client.force_login(cast.superuser)
    urls = {url: key for key in keys for url in CASES[key]}
    for key in keys:  # a view's first request fills what is cached per process (content types)
        rendered(client, CASES[key][0])
    few = {url: rendered(client, url) for url in urls}
    world.grow(MANY)
    many = {url: rendered(client, url) for url in urls}
    problems = [f"{url}: shows no more with more rows (grow its rows in World)"
                for url, key in urls.items() if key not in ONE_THING and many[url][1] <= few[url][1]]  # fmt: skip
    return problems + [
        f"{url}: {few[url][0]} queries with {FEW} of each, {many[url][0]} with {MANY}"
        for url in urls
        if few[url][0] != many[url][0]
    ]


def test_no_page_makes_more_queries_when_it_shows_more_rows(client, cast):
    problems = counts_grown(client, cast, list(CASES))
    assert not problems, "\n".join(problems)
