"""Every URL of the project at scale: 1,000,000 visits with flags and decisions (issue 11).

    .venv/bin/python bench/pages.py                          # SQLite (var/bench/pages-1000000.sqlite3)
    .venv/bin/python bench/pages.py --postgres postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/pages.py --reuse ...              # keep and reuse the databases built before
    .venv/bin/python bench/pages.py --reuse --only '^/review/'   # some of the requests (no --write)
    .venv/bin/python bench/pages.py --reuse --postgres ... --write  # also update docs/PERFORMANCE.md

The data set is bench/reports.py's (bench/_report.py) with one visit in 500 deleted in Sell,
flagged by flags_rebuild; 5% of the flagged visits decided (a fifth of those twice) through the
queue's own decisions_record, 1,000 visits a call, so whatever the app keeps on a decision is
kept; and what the other pages list (sync states, gaps, rejected items, schedules, tasks, login
attempts). Building takes tens of minutes; --reuse keeps the SQLite file and the PostgreSQL
database (visitsdash_bench_pages) and reuses them when complete (after `migrate`).

Then it walks the URL resolver, the admin's patterns included: every pattern is asked for by a
handler in HANDLERS (or, for each registered model, by the admin handlers), or is in SKIPPED
with its reason; a pattern that is neither stops the run before anything is measured. Requests
go through Django's test client (force_login) as a superuser, some as a Managers member, the
sign-in pages anonymously. Per request: the median server time of --repeat, the SQL queries
(CaptureQueriesContext), the status (asserted) and the size (a CSV's whole body, streamed).
Nothing here is a test: tests/test_query_counts.py checks that query counts do not grow.
"""

from __future__ import annotations

import argparse
import fnmatch
import html
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import END, VISITS, database_settle, django_setup, machine, section_write, visits_load  # noqa: E402
from _report import postgres_fresh as database_fresh  # noqa: E402

GOAL_MS = 150
SQLITE_DIR = ROOT / "var" / "bench"
POSTGRES_DB = "visitsdash_bench_pages"
DELETED_EVERY = 500  # one visit in 500 deleted in Sell: the admin's filter and the live visits' index see some
DECIDED_SHARE, TWICE_SHARE = 0.05, 0.2  # of the flagged visits; of those decided
BENCH_USER, MANAGER_USER, REVIEWER_USER = "bench", "bench-manager", "bench-reviewer"
MONTH = ("2026-09-01", "2026-09-30")
REP_ID, OUTCOME_ID = 1042, 103
MAX_CHOICES = 12  # an admin filter with more choices is asked for its first two and its last


# --- Building the database -------------------------------------------------------------------


def build(*, visits: int) -> dict:
    """The data set, then the decisions and what the other pages list; the bench superuser is made
    last, so that its presence says the build completed (`state`)."""
    from django.contrib.auth.models import User

    started = time.perf_counter()
    visits_load(visits=visits, deleted_every=DELETED_EVERY)
    loaded = time.perf_counter() - started
    reviewer = user_make(REVIEWER_USER, group="Reviewers")
    user_make(MANAGER_USER, group="Directors")
    for n in range(20):
        user_make(f"user-{n:02d}")
    started = time.perf_counter()
    decided = decisions_make(reviewer=reviewer)
    deciding = time.perf_counter() - started
    customers_make()
    extras_make(visits=visits)
    User.objects.create_superuser(BENCH_USER, email="bench@example.com", password=None)
    database_settle()
    return {"load_seconds": loaded, "decisions": decided, "decide_seconds": deciding}


def user_make(name: str, *, group: str | None = None):
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(name, email=f"{name}@example.com", password=None)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def decisions_make(*, reviewer) -> int:
    """5% of the flagged visits decided, a fifth of those twice (a follow-up, then a verdict),
    through the queue's own decisions_record; returns the decisions recorded."""
    from visits.models import AcceptReason, DecisionKind, Visit
    from visits.review.queue import decisions_record

    rng = random.Random(5)
    flagged = list(Visit.objects.live().filter(flagged=True).order_by("id").values_list("id", flat=True))
    chosen = sorted(rng.sample(flagged, int(len(flagged) * DECIDED_SHARE)))
    twice = set(rng.sample(chosen, int(len(chosen) * TWICE_SHARE)))
    verdicts = [DecisionKind.ACCEPT] * 6 + [DecisionKind.REJECT] * 3 + [DecisionKind.FOLLOW_UP]
    rounds: list[dict[str, list[int]]] = [{}, {}]
    for visit_id in chosen:
        if visit_id in twice:
            rounds[0].setdefault(DecisionKind.FOLLOW_UP, []).append(visit_id)
            rounds[1].setdefault(rng.choice(verdicts[:9]), []).append(visit_id)
        else:
            rounds[0].setdefault(rng.choice(verdicts), []).append(visit_id)
    recorded = 0
    for kinds in rounds:  # the second decisions after all the first ones: they are the latest
        for kind, ids in kinds.items():
            for at in range(0, len(ids), 1000):
                recorded += decisions_record(
                    visit_ids=ids[at : at + 1000], kind=kind, note="Checked with the rep.", user=reviewer,
                    reason=AcceptReason.GPS_NOISE if kind == DecisionKind.ACCEPT else "",
                )  # fmt: skip
    return recorded


def customers_make() -> None:
    """The customers and the visits' distances (customers_refresh), then the suspect addresses'
    page's rows: the data set's customers have no geocode, so a customer in 50 is given one 5 km
    from its learned point, and the figures refreshed."""
    from django.db.models import F

    from visits.geo.customers import customers_refresh
    from visits.geo.suspects import suspects_refresh
    from visits.models import Customer

    customers_refresh(everything=True)
    learned = Customer.objects.filter(learned_latitude__isnull=False).order_by("id")
    ids = list(learned.values_list("id", flat=True)[::50])
    Customer.objects.filter(id__in=ids).update(
        geocoded_latitude=F("learned_latitude") + 0.045, geocoded_longitude=F("learned_longitude")
    )
    suspects_refresh()


def extras_make(*, visits: int) -> None:
    """What the status pages and the other admin lists show: sync states, gaps, rejected items,
    the schedule, a few finished and queued tasks, and login attempts."""
    import hashlib
    import io

    from axes.models import AccessFailureLog, AccessLog
    from django.core.management import call_command
    from django_q.models import OrmQ, Task

    from visits.models import Gap, RejectedItem, Stream, SyncState

    now = datetime.now(UTC)
    for stream in Stream.values:
        SyncState.objects.update_or_create(
            stream=stream,
            defaults={"at_top": True, "last_poll_at": now, "last_success_at": now, "caught_up_at": now,
                      "newest_event_time": END, "pages": visits // 5000, "events_applied": visits},
        )  # fmt: skip
    Gap.objects.bulk_create(
        [Gap(stream=Stream.VISITS, start=END - timedelta(days=30 * n + 1), end=END - timedelta(days=30 * n),
             reason="The position expired (410): restarted from the tail.") for n in range(5)]
    )  # fmt: skip
    raws = [json.dumps({"data": {"id": n, "visited_at": "not a time"}, "meta": {"sequence": n}}) for n in range(1000)]
    RejectedItem.objects.bulk_create(
        [RejectedItem(stream=Stream.USERS if n % 10 == 0 else Stream.VISITS, raw=raw,
                      digest=hashlib.sha256(raw.encode()).hexdigest(), reason="visited_at: not a time")
         for n, raw in enumerate(raws)]
    )  # fmt: skip
    call_command("setup_schedules", stdout=io.StringIO())
    Task.objects.bulk_create(
        [Task(id=f"{n:032x}", name=f"task-{n:02d}", func="visits.tasks.sync_streams_task", group="sync",
              cluster="visitsdash", started=now - timedelta(minutes=n + 1), stopped=now - timedelta(minutes=n),
              success=n % 6 != 5, result="1 polls, 0 events applied") for n in range(36)]
    )  # fmt: skip
    OrmQ.objects.bulk_create([OrmQ(key="visitsdash", payload="bench", lock=None) for _ in range(2)])
    AccessLog.objects.bulk_create([AccessLog(**WHO, username=f"user-{n % 20:02d}") for n in range(50)])
    AccessFailureLog.objects.bulk_create(
        [AccessFailureLog(**WHO, username=f"user-{n:02d}", locked_out=n % 5 == 0) for n in range(20)]
    )
    attempts_make()


WHO = {"user_agent": "bench", "ip_address": "127.0.0.1", "http_accept": "*/*", "path_info": "/accounts/login/"}


def attempts_make() -> None:
    """Failed sign-ins for axes' list. Axes deletes those older than its cool-off at every sign-in
    (the bench's force_login too): made recent again each run, after the bench's sign-ins."""
    from axes.models import AccessAttempt

    mine = AccessAttempt.objects.filter(user_agent=WHO["user_agent"])
    if mine.update(attempt_time=datetime.now(UTC)):
        return
    AccessAttempt.objects.bulk_create(
        [AccessAttempt(**WHO, username=f"user-{n:02d}", get_data="", post_data="", failures_since_start=1 + n % 3)
         for n in range(20)]
    )  # fmt: skip


def state(*, visits: int) -> dict:
    """Whether this database holds a completed build of `visits` visits; if so, migrated to today's
    migrations (a reused database follows the code)."""
    import io

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import DatabaseError

    from visits.models import Visit

    try:
        complete = User.objects.filter(username=BENCH_USER).exists() and Visit.objects.count() == visits
    except DatabaseError:  # no tables yet
        complete = False
    if complete:
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        database_settle()  # a migration may have rewritten rows, as autovacuum would settle them
    return {"complete": complete}


# --- What to ask for -------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    url: str
    user: str = "superuser"  # or "manager" (a Managers member) or "anonymous"
    expect: int = 200
    note: str = ""
    key: str = ""  # the URL pattern, set by the plan


@dataclass
class Ctx:
    """What the handlers need: a client per user, the bench's ids, an admin request for permissions."""

    clients: dict
    ids: dict[str, int]
    admin_request: object
    pages: dict[tuple[str, str], str] = field(default_factory=dict)

    def html(self, url: str, *, user: str = "superuser") -> str:
        """A page's HTML, fetched once (to find its links), not measured."""
        if (user, url) not in self.pages:
            response = self.clients[user].get(url)
            assert response.status_code == 200, f"{url}: {response.status_code} while reading its links"
            self.pages[(user, url)] = response.content.decode()
        return self.pages[(user, url)]


NEXT_LINK = re.compile(r"<a\b[^>]*\brel=\"next\"[^>]*>|<a\b[^>]*>\s*(?:Next|Older) →\s*</a>")
ADMIN_PAGE_LINK = re.compile(r"<a href=\"([^\"]*\bp=(\d+)[^\"]*)\"( class=\"end\")?>")


def href_of(tag: str) -> str:
    found = re.search(r"\bhref=\"([^\"]*)\"", tag)
    assert found, f"a link without href: {tag}"
    return html.unescape(found.group(1))


def pager_next(page: str) -> str | None:
    """The href of a pager's next link: rel="next" when the pager says so; today the app's pagers'
    "Next →" / "Older →" text; in the admin, the link to page 2."""
    found = NEXT_LINK.search(page)
    if found:
        return href_of(found.group(0))
    admin = [html.unescape(href) for href, number, _ in ADMIN_PAGE_LINK.findall(page) if number == "2"]
    return admin[0] if admin else None


def pager_last(page: str) -> int | None:
    """The last page number a pager names (the admin's "end" link), if it names one."""
    ends = [int(number) for _, number, end in ADMIN_PAGE_LINK.findall(page) if end]
    return ends[0] if ends else None


def deep_url(ctx: Ctx, path: str, query: str = "", *, page: int, user: str = "superuser") -> str | None:
    """The URL of a deep page of a list, found from its first page's pager: the one place to change
    when a list's pagination does. A next link with a page number (`page`, or the admin's `p`) is
    given `page` (within the last page if the pager names it). A next link without one is keyset
    pagination (`after=<visit id>`): the link starts after the visit that ends page `page - 1` in
    the list's own order (keyset_cursor), as deep as the page number would be. None when the list
    has one page."""
    link = pager_next(ctx.html(path + query, user=user))
    if link is None:
        return None
    params = parse_qs(urlsplit(link).query, keep_blank_values=True)
    for name in ("page", "p"):
        if name in params:
            last = pager_last(ctx.html(path + query, user=user))
            params[name] = [str(min(page, last) if last else page)]
            return f"{path}?{urlencode(params, doseq=True)}"
    params["after"] = [str(keyset_cursor(path, query, page=page))]
    return f"{path}?{urlencode(params, doseq=True)}"


def keyset_cursor(path: str, query: str, *, page: int) -> int:
    """The id of the last visit of page `page - 1` of the visits list or the review queue (with
    `query`), counted in the list's own order (within the list's length)."""
    from django.http import QueryDict

    from visits.models import Visit
    from visits.review.queue import flagged_visits

    params = QueryDict(query.lstrip("?"))
    if path == "/review/":
        rows = flagged_visits(visits=Visit.objects.live(), state=params.get("review", "awaiting"))
        sort = params.get("sort", "risk")
        order = {"risk": ["-risk", "-visited_at", "-id"], "oldest": ["visited_at", "id"]}.get(
            sort, ["-visited_at", "-id"]
        )
        size = 20
    else:
        rows, size = Visit.objects.live(), 50
        sort = params.get("sort", "-visited_at")
        field = {"rep": "rep__name", "outcome": "outcome__name", "status": "verification_status"}.get(sort.lstrip("-"))
        if field is None:
            order = ["-visited_at", "-id"] if sort.startswith("-") else ["visited_at", "id"]
        else:
            desc = "-" if sort.startswith("-") else ""
            group = [desc + field, desc + field.replace("__name", "_id")] if "__" in field else [desc + field]
            order = [*group, "-visited_at", "-id"]
    position = min((page - 1) * size, rows.count()) - 1
    return rows.order_by(*order).values_list("id", flat=True)[position]


def queries(*extra: str) -> list[str]:
    """The report filters the app pages are asked with: none, a month, a rep, a status, an outcome."""
    month = f"start={MONTH[0]}&end={MONTH[1]}"
    base = ["", month, f"rep={REP_ID}", "status=resource_location_too_far", f"outcome={OUTCOME_ID}", *extra]
    return [f"?{q}" if q else "" for q in base]


def reports_page(path: str, *, sorts: bool = False, manager: bool = True) -> Callable[[Ctx], list[Req]]:
    def requests(ctx: Ctx) -> list[Req]:
        from visits.reports.analytics import SORTS

        found = [Req(path + q) for q in queries()]
        found += [Req(f"{path}?sort={s}", note="sort") for s in SORTS if sorts]
        return found + ([Req(path, user="manager")] if manager else [])

    return requests


def csv_download(path: str, *, rep: bool = False) -> Callable[[Ctx], list[Req]]:
    def requests(ctx: Ctx) -> list[Req]:
        found = [Req(path + q, note="CSV: the whole body") for q in queries()[:2]]
        if rep:
            found += [Req(f"{path}?rep={REP_ID}", note="CSV: the whole body"),
                      Req(path + queries()[1], user="manager", note="CSV: the whole body")]  # fmt: skip
        return found

    return requests


def visits_list(ctx: Ctx) -> list[Req]:
    from visits.views.reports import VISIT_SORTS

    found = [Req("/visits/" + q) for q in queries("resource_type=contact", f"rep={REP_ID}&start={MONTH[0]}")]
    found += [Req(f"/visits/?sort={s}", note="sort") for s in sorted(VISIT_SORTS)]
    for query, page in (("", 10_000), ("?sort=rep", 5_000)):
        deep = deep_url(ctx, "/visits/", query, page=page)
        assert deep, f"/visits/{query} has one page"
        found.append(Req(deep, note="deep page"))
    return found + [Req("/visits/", user="manager")]


def review_queue(ctx: Ctx) -> list[Req]:
    from visits.models import FlagRule, RiskTier
    from visits.review.queue import QUEUE_SORTS, REVIEW_STATES

    found = [Req("/review/" + q) for q in queries(f"rep={REP_ID}&review=all")]
    found += [Req(f"/review/?review={state}", note="review state") for state in REVIEW_STATES]
    found += [Req(f"/review/?rule={rule}", note="rule") for rule in FlagRule.values]
    found += [Req(f"/review/?sort={sort}", note="sort") for sort in QUEUE_SORTS]
    found += [Req(f"/review/?tier={tier}", note="risk tier") for tier in RiskTier.values]
    for query in ("", "?review=all", "?sort=newest"):
        deep = deep_url(ctx, "/review/", query, page=5_000)
        assert deep, f"/review/{query} has one page"
        found.append(Req(deep, note="deep page"))
    return found + [Req("/review/", user="manager")]


def review_csv(ctx: Ctx) -> list[Req]:
    from visits.review.queue import QUEUE_SORTS

    found = [Req("/review.csv" + q, note="CSV: the whole body") for q in queries()[:2]]
    found += [Req(f"/review.csv?review=all&sort={s}", note="CSV: the whole body; sort") for s in QUEUE_SORTS]
    return found + [Req("/review.csv", user="manager", note="CSV: the whole body")]


def accept_low(ctx: Ctx) -> list[Req]:
    """The bulk accept's confirmation (its count); its POST records decisions and is not asked for."""
    return [Req("/review/accept-low/" + q, note="the count to confirm") for q in queries()]


def review_reps(ctx: Ctx) -> list[Req]:
    from visits.models import RiskTier

    found = [Req("/review/reps/" + q, note="by rep") for q in queries("review=all")]
    found += [Req(f"/review/reps/?tier={RiskTier.HIGH}", note="by rep, a tier")]
    return found + [Req("/review/reps/", user="manager", note="by rep")]


def suspect_addresses(ctx: Ctx) -> list[Req]:
    from visits.models import Customer
    from visits.review.addresses import PAGE_SIZE, PAGES_MAX

    found = [Req("/review/addresses/"), Req("/review/addresses/?mark=unmarked", note="not marked")]
    pages = -(-Customer.objects.filter(suspect=True).count() // PAGE_SIZE)
    if pages > 1:  # the last page, or the last one paged (the page's cap)
        found.append(Req(f"/review/addresses/?page={min(pages, PAGES_MAX)}", note="deep page"))
    return found + [Req("/review/addresses/", user="manager")]


def suspect_address(ctx: Ctx) -> list[Req]:
    """The first suspect's page (its visits read by the index visit_resource), or a 404 on a build
    made before the customers' refresh was part of it."""
    from visits.models import Customer

    first = Customer.objects.order_by("-suspect", "-far_visits", "id").first()
    if first is None:
        return [Req("/review/addresses/1/", expect=404, note="no customers in this build")]
    return [Req(f"/review/addresses/{first.id}/", note="its newest visits and marks")]


def map_requests(path: str) -> Callable[[Ctx], list[Req]]:
    return lambda ctx: [Req(path + q, note="map: the maps issue's subject") for q in queries()[:3]]


def box_requests(path: str, *, zoom: int) -> Callable[[Ctx], list[Req]]:
    """A map's JSON for the whole world at `zoom`, with each of the report filters."""
    box = f"bbox=-180,-90,180,90&zoom={zoom}"
    return lambda ctx: [Req(f"{path}?{box}" + q.replace("?", "&"), note="map JSON") for q in queries()]


def rejected_list(ctx: Ctx) -> list[Req]:
    found = [Req("/status/rejected/"), Req("/status/rejected/?stream=visits")]
    deep = deep_url(ctx, "/status/rejected/", page=10)
    return found + ([Req(deep, note="deep page")] if deep else [])


def visit_pages(suffix: str, note: str = "") -> Callable[[Ctx], list[Req]]:
    return lambda ctx: [
        Req(f"/visits/{ctx.ids['decided_twice']}/{suffix}", note=note),
        Req(f"/visits/{ctx.ids['deleted']}/{suffix}", note=(note + "; " if note else "") + "deleted in Sell"),
    ]


def one(url: str, *, user: str = "superuser", expect: int = 200, note: str = "") -> Callable[[Ctx], list[Req]]:
    return lambda ctx: [Req(url, user=user, expect=expect, note=note)]


def app_lists(ctx: Ctx) -> list[Req]:
    from django.contrib import admin

    return [Req(f"/admin/{label}/") for label in sorted({m._meta.app_label for m in admin.site._registry})]


# Every named pattern outside the per-model admin ones: its requests.
HANDLERS: dict[str, Callable[[Ctx], list[Req]]] = {
    "visits:home": reports_page("/"),
    "visits:reps": reports_page("/reports/reps/", sorts=True),
    "visits:teams": reports_page("/reports/teams/", sorts=True),
    "visits:teams_csv": csv_download("/reports/teams.csv"),
    "visits:outcomes": reports_page("/reports/outcomes/", sorts=True, manager=False),
    "visits:matrix": reports_page("/reports/matrix/", manager=False),
    "visits:reps_csv": csv_download("/reports/reps.csv"),
    "visits:outcomes_csv": csv_download("/reports/outcomes.csv"),
    "visits:matrix_csv": csv_download("/reports/matrix.csv"),
    "visits:visits_csv": csv_download("/visits.csv", rep=True),
    "visits:rep": lambda ctx: [Req(f"/reports/reps/{REP_ID}/" + q, note="shows a map's plan") for q in queries()[:2]],
    "visits:visits": visits_list,
    "visits:visit": visit_pages(""),
    "visits:visit_map": visit_pages("map/", "map: the maps issue's subject"),
    "visits:visit_summary": visit_pages("summary.json", "JSON"),
    "visits:review": review_queue,
    "visits:review_csv": review_csv,
    "visits:review_rules": reports_page("/review/rules/"),
    "visits:review_rules_csv": csv_download("/review/rules.csv"),
    "visits:access_log_csv": one("/access_log.csv", note="CSV: the whole body; the bench's own requests' entries"),
    "visits:review_accept_low": accept_low,
    "visits:review_reps": review_reps,
    "visits:addresses": suspect_addresses,
    "visits:address": suspect_address,
    "visits:map": map_requests("/map/"),
    "visits:map_frame": map_requests("/map/frame/"),
    "visits:map_clusters": box_requests("/map/clusters.json", zoom=2),
    "visits:map_points": box_requests("/map/points.json", zoom=13),
    "visits:status": one("/status/"),
    "visits:rejected": rejected_list,
    "visits:healthz": one("/healthz"),
    "visits:account_settings": one("/account/settings/"),
    "login": one("/accounts/login/", user="anonymous"),
    "password_change": one("/accounts/password/"),
    "password_change_done": one("/accounts/password/done/"),
    "favicon.ico": one("/favicon.ico", expect=301, note="a redirect"),
    "admin:index": one("/admin/"),
    "admin:login": one("/admin/login/", user="anonymous"),
    "admin:password_change": one("/admin/password_change/"),
    "admin:password_change_done": one("/admin/password_change/done/"),
    "admin:jsi18n": one("/admin/jsi18n/"),
    "admin:app_list": app_lists,
}

# Patterns not asked for, and why. A key is a pattern's name with its namespace, else its route;
# shell-style wildcards allowed.
SKIPPED = {
    "logout": "POST only (Django's LogoutView); it would sign the bench's client out",
    "admin:logout": "POST only; it would sign the bench's client out",
    "visits:address_mark": "POST only; it records a mark and recomputes the reps' flags, changing what the bench"
    " measures",
    "visits:review_decide": "POST only; it records decisions, changing what the bench measures (the build"
    " records its decisions through the same queue.decisions_record)",
    "admin:autocomplete": "serves autocomplete_fields, which no registered ModelAdmin uses (checked)",
    "admin:view_on_site": "redirects to a model's get_absolute_url, which no registered model has",
    "admin/(?P<url>.*)$": "the admin's catch-all: an unknown admin URL answers 404 or the sign-in page",
    "admin/*/*/<path:object_id>/": "the admin's old change URL: a redirect to the change page, asked for itself",
}


# --- The admin: every registered model ----------------------------------------------------------

# A typical search per model (formatted with the bench's ids); "bench" for the others.
SEARCHES = {"visits.visit": "Rep 042", "visits.flaggedvisit": "Rep 042", "visits.rep": "Rep 042",
            "visits.outcome": "Outcome 03", "visits.decision": "{decided_twice}", "visits.rejecteditem": "not a time",
            "auth.user": "user-0"}  # fmt: skip


def admin_filters(page: str) -> list[tuple[str, list[str]]]:
    """(title, the query strings of its choices but the selected one) for each filter the admin shows."""
    found = []
    for title, body in re.findall(r"<details data-filter-title=\"([^\"]*)\"[^>]*>(.*?)</details>", page, re.S):
        links = re.findall(r"<li( class=\"selected\")?>\s*<a href=\"([^\"]*)\"", body)
        found.append((html.unescape(title), [html.unescape(href) for selected, href in links if not selected]))
    return found


def admin_sorts(page: str) -> list[str]:
    """The link of each sortable column's header."""
    pattern = r"<th scope=\"col\" class=\"[^\"]*\bsortable\b[^\"]*\">.*?<div class=\"text\"><a href=\"([^\"]*)\""
    return [html.unescape(href) for href in re.findall(pattern, page, re.S)]


def admin_dates(ctx: Ctx, base: str) -> list[Req]:
    """The date hierarchy, drilled down (year, month, day) by its newest link at each level."""
    found, url = [], base
    for _ in range(3):
        nav = re.search(r"<nav class=\"toplinks\">(.*?)</nav>", ctx.html(url), re.S)
        links = re.findall(r"<a href=\"([^\"]*)\">", nav.group(1)) if nav else []  # not the class="date-back"
        if not links:
            break
        url = base + html.unescape(links[-1])
        found.append(Req(url, note="date hierarchy"))
    return found


def changelist(model_admin) -> Callable[[Ctx], list[Req]]:
    def requests(ctx: Ctx) -> list[Req]:
        info = model_admin.model._meta
        base = f"/admin/{info.app_label}/{info.model_name}/"
        page = ctx.html(base)
        found = [Req(base, note="admin list")]
        for title, choices in admin_filters(page):
            picked = choices if len(choices) <= MAX_CHOICES else [*choices[:2], choices[-1]]
            some = "" if picked == choices else f" ({len(picked)} of {len(choices)} choices)"
            found += [Req(base + q, note=f"filter: {title}{some}") for q in picked]
        found += admin_dates(ctx, base)
        if 'id="changelist-search"' in page:
            term = SEARCHES.get(info.label_lower, "bench").format(**ctx.ids)
            found.append(Req(base + "?" + urlencode({"q": term}), note="search"))
        found += [Req(base + o, note="sort") for o in admin_sorts(page)]
        deep = deep_url(ctx, base, page=5_000)
        return found + ([Req(deep, note="deep page")] if deep else [])

    return requests


def admin_object(ctx: Ctx, model_admin):
    """The object a model's change pages are asked for: the bench's choice, else the first."""
    choice = {"visits.visit": "decided_twice", "visits.flaggedvisit": "decided_twice", "visits.rep": "rep"}
    label = model_admin.model._meta.label_lower
    if label in choice:
        return model_admin.get_queryset(ctx.admin_request).get(pk=ctx.ids[choice[label]])
    return model_admin.get_queryset(ctx.admin_request).order_by("pk").first()


def object_page(model_admin, suffix: str, permission: str = "") -> Callable[[Ctx], list[Req]]:
    def requests(ctx: Ctx) -> list[Req]:
        from django.contrib.admin.utils import quote
        from django.urls import reverse

        info = model_admin.model._meta
        obj = admin_object(ctx, model_admin)
        if obj is None:
            print(
                f"  ! {info.label}: no object in the bench's database, its {suffix} page not asked for", file=sys.stderr
            )
            return []
        if permission and not getattr(model_admin, f"has_{permission}_permission")(ctx.admin_request, obj):
            return []  # refused even to a superuser: listed by admin_handlers as skipped
        return [Req(reverse(f"admin:{info.app_label}_{info.model_name}_{suffix}", args=[quote(obj.pk)]))]

    return requests


def admin_handlers(admin_request) -> tuple[dict[str, Callable[[Ctx], list[Req]]], dict[str, str]]:
    """The handlers of every registered model's admin patterns, and those refused to a superuser
    (a read-only admin's add and delete pages), with that reason."""
    from django.contrib import admin

    handlers: dict[str, Callable[[Ctx], list[Req]]] = {}
    refused = {}
    for model, model_admin in admin.site._registry.items():
        assert not model_admin.autocomplete_fields, f"{model.__name__}: autocomplete_fields: ask for admin:autocomplete"
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        handlers[f"{info}_changelist"] = changelist(model_admin)
        handlers[f"{info}_change"] = object_page(model_admin, "change")
        handlers[f"{info}_history"] = object_page(model_admin, "history")
        if model_admin.has_add_permission(admin_request):
            add = f"/admin/{model._meta.app_label}/{model._meta.model_name}/add/"
            handlers[f"{info}_add"] = one(add)
        else:
            refused[f"{info}_add"] = "the admin refuses it even to a superuser (read-only: 403)"
        if model_admin.has_delete_permission(admin_request):
            handlers[f"{info}_delete"] = object_page(model_admin, "delete", "delete")
        else:
            refused[f"{info}_delete"] = "the admin refuses it even to a superuser (read-only: 403)"
        if model._meta.label == "auth.User":
            handlers[f"{info}_password_change"] = object_page(model_admin, "password_change")
    return handlers, refused


# --- The plan: every pattern, asked for or skipped ---------------------------------------------


def patterns_walk(resolver=None, *, route: str = "", namespace: str = ""):
    """(key, route) for every URL pattern of the project: its name with the namespace, else its route."""
    from django.urls import URLResolver, get_resolver

    for entry in (resolver or get_resolver()).url_patterns:
        here = route + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from patterns_walk(
                entry, route=here, namespace=":".join(n for n in (namespace, entry.namespace) if n)
            )
        else:
            yield (":".join(n for n in (namespace, entry.name) if n) if entry.name else here), here


def admin_request_make(user):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def plan_check(admin_request) -> dict[str, Callable[[Ctx], list[Req]]]:
    """Every pattern's handler; stops the run, naming them, if a pattern has neither a handler nor
    a reason to be skipped, or a skip names no pattern any more."""
    model_handlers, refused = admin_handlers(admin_request)
    handlers = {**HANDLERS, **model_handlers}
    unknown, skips_used, chosen = [], set(), {}
    for key, route in patterns_walk():
        if key in handlers:
            chosen[key] = handlers[key]
            continue
        skip = next((s for s in SKIPPED if fnmatch.fnmatchcase(key, s)), None)
        if skip:
            skips_used.add(skip)
        elif key not in refused:
            unknown.append(f"{key} ({route!r})")
    if unknown:
        raise SystemExit(
            "URL patterns neither asked for nor skipped: give them a handler in bench/pages.py (HANDLERS) or a"
            " reason in SKIPPED: " + "; ".join(unknown)
        )
    stale = (set(SKIPPED) - skips_used) | (set(HANDLERS) - set(chosen))
    if stale:
        raise SystemExit(f"bench/pages.py names patterns that no longer exist: {sorted(stale)}")
    return chosen


def plan_make(ctx: Ctx) -> list[Req]:
    requests: list[Req] = []
    seen = set()
    handlers = plan_check(ctx.admin_request)
    # The app's pages first, then the sign-in and password pages, the admin last.
    for key in sorted(handlers, key=lambda k: 0 if k.startswith("visits:") else 2 if k.startswith("admin") else 1):
        handler = handlers[key]
        for req in handler(ctx):
            if (req.url, req.user) not in seen:
                seen.add((req.url, req.user))
                requests.append(Req(req.url, req.user, req.expect, req.note, key))
    return requests


# --- Measuring ---------------------------------------------------------------------------------


def context_make() -> Ctx:
    from django.contrib.auth.models import User
    from django.db.models import Count
    from django.test import Client

    from visits.models import Decision, Visit

    superuser = User.objects.get(username=BENCH_USER)
    clients = {"anonymous": Client()}
    for name, username in (("superuser", BENCH_USER), ("manager", MANAGER_USER)):
        clients[name] = Client()
        clients[name].force_login(User.objects.get(username=username))
    twice = (
        Decision.objects.values("visit_id").annotate(n=Count("id")).filter(n__gt=1).order_by("visit_id").first()
    )  # fmt: skip
    deleted = (
        Visit.objects.filter(deleted_at__isnull=False, latitude__isnull=False)  # its map page shows it
        .order_by("id").values_list("id", flat=True).first()
    )  # fmt: skip
    assert twice and deleted, "the bench's database lacks a visit decided twice or one deleted in Sell"
    ids = {"decided_twice": twice["visit_id"], "deleted": deleted, "rep": REP_ID}
    attempts_make()
    return Ctx(clients=clients, ids=ids, admin_request=admin_request_make(superuser))


def request_measure(ctx: Ctx, req: Req, *, repeat: int) -> dict:
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    times, problem = [], ""
    count = status = size = 0
    for _ in range(repeat):
        reset_queries()  # the log keeps 9,000 queries: a full one counts nothing
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            try:
                response = ctx.clients[req.user].get(req.url)
                body = response.streaming_content if response.streaming else [response.content]
                size = sum(len(chunk) for chunk in body)  # a CSV streamed to its end
            except Exception as exc:  # noqa: BLE001 (reported with the row; the walk goes on)
                problem = f"raised {type(exc).__name__}: {exc}"
                break
            times.append(time.perf_counter() - started)
            response.close()
        count, status = len(captured.captured_queries), response.status_code
        if status != req.expect:
            problem = f"status {status}, expected {req.expect}"
            break
    ms = statistics.median(times) * 1000 if times else None
    return {**asdict(req), "ms": ms, "queries": count, "status": status, "bytes": size, "problem": problem}


def measure(*, repeat: int, only: str | None) -> dict:
    started = time.perf_counter()
    ctx = context_make()
    plan = plan_make(ctx)
    if only:
        plan = [r for r in plan if re.search(only, r.url)]
    print(f"  {len(plan)} requests (links read in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    rows = []
    for req in plan:
        row = request_measure(ctx, req, repeat=repeat)
        rows.append(row)
        ms = f"{row['ms']:9,.0f} ms" if row["ms"] is not None else "        – ms"
        who = f"  [{req.user}]" if req.user != "superuser" else ""
        print(
            f"  {ms} {row['queries']:5} q {row['status']} {row['bytes']:>12,} B  {req.url}{who}  {row['problem']}",
            file=sys.stderr,
            flush=True,
        )
    return {"rows": rows, "seconds": time.perf_counter() - started}


# --- Running it: the databases, the children, the table ------------------------------------------


def child(*args: str) -> dict:
    """Run this script's --child in a fresh process (progress on stderr); its JSON answer."""
    out = subprocess.run([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench/pages.py --child {args[0]} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def database_prepare(*, name: str, url: str, visits: int, reuse: bool, fresh: Callable[[], None]) -> None:
    if reuse and child("state", "--database-url", url, "--visits", str(visits))["complete"]:
        print(f"{name}: reusing the database built before", file=sys.stderr)
        return
    fresh()
    print(f"{name}: building {visits:,} visits (tens of minutes at 1,000,000)", file=sys.stderr)
    built = child("build", "--database-url", url, "--visits", str(visits))
    print(
        f"{name}: visits written in {built['load_seconds']:.0f} s with their flags, {built['decisions']:,} decisions"
        f" in {built['decide_seconds']:.0f} s",
        file=sys.stderr,
    )


def sqlite_fresh(path: Path) -> Callable[[], None]:
    def fresh() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            old.unlink(missing_ok=True)

    return fresh


def postgres_fresh(server: str) -> Callable[[], None]:
    def fresh() -> None:
        database_fresh(server, POSTGRES_DB)

    return fresh


def postgres_exists(server: str) -> bool:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [POSTGRES_DB]).fetchone() is not None


def slowest_print(name: str, rows: list[dict], n: int = 15) -> None:
    timed = sorted((r for r in rows if r["ms"] is not None), key=lambda r: -r["ms"])
    over = sum(r["ms"] > GOAL_MS for r in timed)
    print(f"\n{name}: {over} of {len(rows)} requests over {GOAL_MS} ms; the slowest {n}:")
    for r in timed[:n]:
        who = f" [{r['user']}]" if r["user"] != "superuser" else ""
        print(f"  {r['ms']:9,.0f} ms {r['queries']:5} q  {r['url']}{who}  {r['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["check", "state", "build", "measure"])
    parser.add_argument("--database-url")
    parser.add_argument("--visits", type=int, default=VISITS)
    parser.add_argument("--repeat", type=int, default=3, help="requests per URL; the median is shown")
    parser.add_argument("--postgres", help="server URL of a PostgreSQL to build visitsdash_bench_pages on")
    parser.add_argument("--reuse", action="store_true", help="reuse the databases of an earlier build if complete")
    parser.add_argument("--only", help="measure only the requests whose URL matches this regular expression")
    parser.add_argument("--write", action="store_true", help="update the section of docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.child:
        django_setup(args.database_url)
        if args.child == "check":
            from django.contrib.auth.models import User

            plan_check(admin_request_make(User(is_superuser=True, is_staff=True, is_active=True)))
            result: dict = {}
        elif args.child == "state":
            result = state(visits=args.visits)
        elif args.child == "build":
            result = build(visits=args.visits)
        else:
            result = measure(repeat=args.repeat, only=args.only)
        print(json.dumps(result))
        return
    if args.write and args.only:
        raise SystemExit("--write needs every request: drop --only")
    sqlite = SQLITE_DIR / f"pages-{args.visits}.sqlite3"
    backends = [("SQLite", f"sqlite:///{sqlite}", sqlite_fresh(sqlite))]
    if args.postgres:
        backends.append(
            ("PostgreSQL", args.postgres.rsplit("/", 1)[0] + f"/{POSTGRES_DB}", postgres_fresh(args.postgres))
        )
    child("check", "--database-url", f"sqlite:///{sqlite}")  # an unknown pattern stops the run before any build
    results, failures = {}, []
    for name, url, fresh in backends:
        if name == "PostgreSQL" and args.reuse and not postgres_exists(args.postgres):
            fresh()
        database_prepare(name=name, url=url, visits=args.visits, reuse=args.reuse, fresh=fresh)
        print(f"{name}: measuring", file=sys.stderr)
        measure_args = ["--database-url", url, "--repeat", str(args.repeat)] + (
            ["--only", args.only] if args.only else []
        )
        results[name] = child("measure", *measure_args)["rows"]
        saved = SQLITE_DIR / f"pages-{name.lower()}-{args.visits}.json"  # for a look afterwards
        saved.write_text(json.dumps(results[name], indent=1))
        slowest_print(name, results[name])
        failures += [f"{name} {r['url']} [{r['user']}]: {r['problem']}" for r in results[name] if r["problem"]]
    if failures:
        raise SystemExit("requests that did not answer as expected:\n  " + "\n  ".join(failures))
    if args.write:
        write_report(results=results, visits=args.visits, repeat=args.repeat)


def write_report(*, results: dict[str, list[dict]], visits: int, repeat: int) -> None:
    names = list(results)
    by_key = {name: {(r["url"], r["user"]): r for r in rows} for name, rows in results.items()}
    order = list(dict.fromkeys((r["url"], r["user"]) for rows in results.values() for r in rows))
    over = {name: sum(r["ms"] > GOAL_MS for r in rows) for name, rows in results.items()}
    lines = [
        "## Every page (`bench/pages.py`)",
        "",
        f"Measured {datetime.now().date().isoformat()} on {machine()}; load average {os.getloadavg()[1]:.1f} over"
        " the last 5 minutes when written (above 1, other work shared the two cores: the figures are rougher).",
        f"{visits:,} visits (bench/reports.py's data set, one in {DELETED_EVERY} deleted in Sell), flagged by"
        f" `flags_rebuild`, {DECIDED_SHARE:.0%} of the flagged visits decided ({TWICE_SHARE:.0%} of those twice);"
        f" server time through Django's test client, median of {repeat} requests; queries counted by"
        " `CaptureQueriesContext`; a CSV's time and size are its whole body's. As a superuser unless"
        f" the user column says otherwise; one month = {MONTH[0]} to {MONTH[1]}.",
        f"**Bold**: over the goal of {GOAL_MS} ms. Over it: "
        + ", ".join(f"{name} {over[name]} of {len(results[name])}" for name in names)
        + ". Not asked for: the patterns in `SKIPPED` (POST only, sign-out, the admin's catch-all and"
        " redirects) and the admin's add and delete pages of read-only models.",
        "",
        "| request | user | " + " | ".join(f"{n} ms | {n} queries" for n in names) + " | KB | note |",
        "|---|---|" + "---:|---:|" * len(names) + "---:|---|",
    ]
    for url, user in order:
        cells, size, note = [], 0, ""
        for name in names:
            row = by_key[name].get((url, user))
            if row is None:
                cells += ["–", "–"]
                continue
            ms = f"{row['ms']:,.0f}"
            cells += [f"**{ms}**" if row["ms"] > GOAL_MS else ms, str(row["queries"])]
            size, note = size or row["bytes"], row["note"]
        shown = url.replace("|", "\\|")
        lines.append(
            f"| `{shown}` | {'' if user == 'superuser' else user} | {' | '.join(cells)} | {size / 1024:,.0f} | {note} |"
        )
    lines.append("")
    section_write(heading="## Every page (", lines=lines)


if __name__ == "__main__":
    main()
