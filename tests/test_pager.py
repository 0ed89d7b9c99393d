"""Keyset pages (visits/views/pager.py): walking the visits list and the review queue by their
links gives every visit once, in the list's order, forwards and backwards, for every sort."""

import random
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.db import transaction
from django.test.utils import CaptureQueriesContext

from visits.ingest.pages import visits_upsert
from visits.models import Decision, Outcome, Rep, Visit, VisitQuerySet
from visits.reports.filters import ReportFilters
from visits.review.queue import decisions_record
from visits.views.reports import sort_groups

pytestmark = pytest.mark.django_db

START = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
STATUSES = ["verified", "resource_location_too_far", "location_unknown", "location_services_disabled"]


def visits_make(*, count: int = 260, seed: int = 3) -> None:
    """Visits of 7 reps (two sharing a name, one unnamed) and 4 outcomes (and none), at a few
    instants each so that many share their visited_at; some deleted in Sell; ids in random order."""
    rng = random.Random(seed)
    for rep_id, name in ((11, "Ann"), (12, "Bob"), (13, "Bob"), (14, ""), (15, "Cyd"), (16, "Dee"), (17, "Eve")):
        Rep.objects.create(id=rep_id, name=name)
    for outcome_id, name in ((1, "Sold"), (2, "Demo"), (3, ""), (4, "Demo")):
        Outcome.objects.create(id=outcome_id, name=name)
    ids = rng.sample(range(1, 100_000), count)
    rows = {}
    for visit_id in ids:
        at = START + timedelta(hours=rng.randrange(40))
        rows[visit_id] = {
            "rep_id": rng.choice([11, 12, 13, 14, 15, 16, 16, 16, 17]), "resource_type": "lead",
            "resource_id": rng.randrange(1, 30), "visited_at": at, "created_at": at, "summary": "",
            "outcome_id": rng.choice([1, 2, 3, 4, None]), "latitude": 41.0, "longitude": -87.0,
            "verification_status": rng.choice(STATUSES), "sequence": 1, "event_time": at,
            "deleted_at": at if rng.random() < 0.05 else None,
        }  # fmt: skip
    with transaction.atomic():
        visits_upsert(rows=rows)


def expected(sort: str, visits: VisitQuerySet) -> list[int]:
    """The list's order, computed here from the definition: a group (by name, then id; no
    outcome after the others; descending reverses the groups), then visited_at and id newest
    first; or visited_at and id alone."""
    rows = list(visits.select_related("rep", "outcome"))
    newest = [v.id for v in sorted(rows, key=lambda v: (v.visited_at, v.id), reverse=True)]
    if sort == "-visited_at":
        return newest
    if sort == "visited_at":
        return newest[::-1]
    group = sort.lstrip("-")

    def key(v: Visit) -> tuple:
        if group == "rep":
            return (v.rep.name, v.rep_id)
        if group == "outcome":
            return (1, "", 0) if v.outcome is None else (0, v.outcome.name, v.outcome_id)
        return (v.verification_status,)

    keys = sorted({key(v) for v in rows}, reverse=sort.startswith("-"))  # descending: the groups reversed
    by_id = {v.id: v for v in rows}
    return [vid for k in keys for vid in newest if key(by_id[vid]) == k]


def link(body: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', body)
    return unescape(found.group(1)) if found else None


def walk(client, path: str, query: str) -> tuple[list[int], list[list[int]], list[int]]:
    """Follow the "next" links from the first page, then the "prev" links back from the last:
    (ids in order, the pages going forwards, the query counts)."""
    response = client.get(f"{path}?{query}")
    pages, counts = [], []
    while True:
        assert response.status_code == 200, response.content.decode()[:500]
        pages.append([v.id for v in response.context["page"].object_list])
        following = link(response.content.decode(), "next")
        if following is None:
            break
        with CaptureQueriesContext(transaction.get_connection()) as queries:
            response = client.get(f"{path}{following}")
        counts.append(len(queries))
    backwards = [pages[-1]]
    while (previous := link(response.content.decode(), "prev")) is not None:
        response = client.get(f"{path}{previous}")
        backwards.append([v.id for v in response.context["page"].object_list])
    assert backwards[::-1] == pages, "walking back by the links gives the same pages"
    return [vid for page in pages for vid in page], pages, counts


SORTS = ["-visited_at", "visited_at", "rep", "-rep", "outcome", "-outcome", "status", "-status"]


@pytest.mark.parametrize("sort", SORTS)
def test_the_visits_list_walks_every_visit_once_in_order(client, cast, sort):
    visits_make()
    client.force_login(cast.manager)
    live = Visit.objects.live()
    ids, pages, counts = walk(client, "/visits/", f"sort={sort}")
    assert ids == expected(sort, live)
    assert len(pages) == -(-live.count() // 50) > 3 and all(len(page) == 50 for page in pages[:-1])
    assert max(counts) - min(counts) <= 2, "a page's queries do not grow with how deep it is"


@pytest.mark.parametrize(
    "query",
    ["rep=16&sort=outcome", "status=location_unknown&sort=rep", "outcome=3&outcome=1&sort=-rep",
     "rep=12&rep=13&sort=-status", "start=2026-09-02&sort=visited_at", "status=verified&sort=-outcome"],
)  # fmt: skip
def test_filtered_lists_walk_in_order_too(client, cast, query):
    visits_make(count=400)
    client.force_login(cast.manager)
    live = Visit.objects.live()
    for name in ("rep", "outcome", "status"):
        chosen = [p.split("=")[1] for p in query.split("&") if p.startswith(f"{name}=")]
        if chosen:
            field = {"rep": "rep_id", "outcome": "outcome_id", "status": "verification_status"}[name]
            live = live.filter(**{f"{field}__in": chosen})
    if "start=" in query:
        live = live.filter(local_day__gte="2026-09-02")
    ids, _, _ = walk(client, "/visits/", query)
    assert ids == expected(query.split("sort=")[1], live) and ids


def test_the_review_queue_walks_by_its_links(client, cast):
    visits_make(count=300)
    from visits.review.flags import flags_rebuild

    flags_rebuild()
    decided = list(Visit.objects.filter(flagged=True).values_list("id", flat=True)[:7])
    decisions_record(visit_ids=decided, kind="accept", reason="gps_noise", note="", user=cast.reviewer)
    client.force_login(cast.reviewer)
    awaiting = Visit.objects.live().filter(flagged=True).exclude(id__in=decided)
    ids, pages, counts = walk(client, "/review/", "")  # riskiest first, then newest
    riskiest = [v.id for v in sorted(awaiting, key=lambda v: (v.risk, v.visited_at, v.id), reverse=True)]
    assert ids == riskiest and len(pages) > 3
    assert len({v.risk for v in awaiting}) > 2  # several risks: the walk crosses their groups
    # A page's queries: the cursor's risk, the next risks' heads and rows, and when the page is
    # still not full, every other risk's heads and rows (views/pager.py): bounded, whatever the page.
    assert max(counts) - min(counts) <= 3
    ids, pages, counts = walk(client, "/review/", "sort=newest")
    assert ids == expected("-visited_at", awaiting) and len(pages) > 3
    assert max(counts) - min(counts) <= 2
    ids, _, _ = walk(client, "/review/", "review=accept")
    assert sorted(ids) == sorted(decided)


def test_sort_groups_are_the_filter_choices_in_order(cast):
    visits_make(count=20)
    filters = ReportFilters({})
    assert filters.is_valid()
    scope = filters.scope()
    assert sort_groups(filters, scope, "rep") == [14, 11, 12, 13, 15, 16, 17]  # by name, then id
    assert sort_groups(filters, scope, "outcome") == [3, 2, 4, 1, None]
    assert sort_groups(filters, scope, "status") == sorted(STATUSES)


def test_bad_and_stale_cursors_are_a_400_with_a_message(client, cast):
    visits_make(count=60)
    client.force_login(cast.manager)
    outside = Visit.objects.live().exclude(rep_id=11).first()
    deleted = Visit.objects.filter(deleted_at__isnull=False).first()
    assert outside is not None and deleted is not None
    for path in ("/visits/", "/review/"):
        for query, says in (
            ("after=abc", "after: must be the id of a visit in this list"),
            ("before=0", "before: must be the id of a visit in this list"),
            ("after=99999999999999999999", "after: must be the id of a visit in this list"),
            ("after=5&before=6", "give one of them, not both"),
            (f"rep=11&after={outside.id}", f"after: visit {outside.id} is not in this list"),
            (f"before={deleted.id}", f"before: visit {deleted.id} is not in this list"),
        ):
            response = client.get(f"{path}?{query}")
            assert response.status_code == 400 and says in response.content.decode(), (path, query)
    assert client.get("/visits/?page=9999").status_code == 200  # an old page link shows the first page
    assert not Decision.objects.exists()
