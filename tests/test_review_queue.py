"""The queue ranked by risk (issue 13): its keyset order against a sort in Python, the tier filter,
the per-rep counts against counts made here, the rep's day and its drawing."""

import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from visits.ingest.pages import visits_upsert
from visits.models import RULE_BITS, Customer, Rep, Visit
from visits.reports.charts import day_picture
from visits.review.flags import flags_rebuild

pytestmark = pytest.mark.django_db

AT = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)  # 08:00 in Chicago: a rep's day stays within one local day


def world_make(*, reps: int = 4, per_rep: int = 30, seed: int = 5) -> list[int]:
    """Reps with visits every 20 minutes over a few days, most flagged by Sell's status; risks and
    tiers set here (as the risk helper would), many risks shared so that ties are cut by time and
    id. Returns the flagged visits' ids."""
    rng = random.Random(seed)
    Rep.objects.bulk_create([Rep(id=70 + r, name=f"Rep {chr(65 + r)}") for r in range(reps)])
    rows = {}
    for r in range(reps):
        for i in range(per_rep):
            at = AT + timedelta(days=i // 10, minutes=20 * (i % 10))
            located = i % 7 != 3
            rows[(70 + r) * 1000 + i] = {
                "rep_id": 70 + r, "resource_type": "lead", "resource_id": 500 + i % 5, "visited_at": at,
                "created_at": at, "summary": "", "outcome_id": None, "sequence": 1, "event_time": at,
                "latitude": 41.8 + rng.random() / 50 if located else None,
                "longitude": -87.6 + rng.random() / 50 if located else None, "deleted_at": None,
                "verification_status": "resource_location_too_far" if rng.random() < 0.7 else "verified",
            }  # fmt: skip
    with transaction.atomic():
        visits_upsert(rows=rows)
    flags_rebuild()
    flagged = list(Visit.objects.filter(flagged=True).values_list("id", flat=True))
    for visit_id in flagged:
        risk = rng.choice([95, 80, 80, 60, 41, 10, 10, 0])
        tier = "high" if risk >= 70 else "medium" if risk >= 40 else "low"
        Visit.objects.filter(id=visit_id).update(risk=risk, risk_tier=tier)
    return flagged


def queue_ids(client, query: str) -> list[int]:
    """Every visit id of the queue for `query`, page after page through the "older" links."""
    ids, url = [], f"/review/?{query}"
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.content[:500]
        ids += [v.id for v in page.context["page"].object_list]
        older = page.context["page"].older
        url = f"/review/?{query}&after={older}" if older else None
    return ids


@pytest.mark.slow  # every page of four orders
def test_the_queue_is_ranked_by_risk_then_newest_and_pages_through_every_visit(client, cast):
    world_make()
    client.force_login(cast.reviewer)
    want = sorted(Visit.objects.filter(flagged=True), key=lambda v: (-v.risk, -v.visited_at.timestamp(), -v.id))
    assert len(want) > 40  # more than two pages
    assert queue_ids(client, "") == [v.id for v in want]  # risk is the default
    assert queue_ids(client, "sort=risk") == [v.id for v in want]
    by_time = sorted(want, key=lambda v: (v.visited_at, v.id))
    assert queue_ids(client, "sort=oldest") == [v.id for v in by_time]
    assert queue_ids(client, "sort=newest") == [v.id for v in reversed(by_time)]
    # a page in the middle, and back: the "newer" link of page 2 shows page 1 again
    second = client.get(f"/review/?after={want[19].id}").context["page"]
    assert [v.id for v in second.object_list] == [v.id for v in want[20:40]]
    first = client.get(f"/review/?before={second.newer}").context["page"]
    assert [v.id for v in first.object_list] == [v.id for v in want[:20]]
    assert client.get("/review/?sort=loudest").status_code == 400


@pytest.mark.slow  # every page of two filters
def test_the_tier_filter_keeps_the_chosen_tiers_in_risk_order(client, cast):
    world_make()
    client.force_login(cast.reviewer)
    for tiers in (["high"], ["medium", "low"]):
        query = "&".join(f"tier={t}" for t in tiers)
        want = sorted(
            Visit.objects.filter(flagged=True, risk_tier__in=tiers),
            key=lambda v: (-v.risk, -v.visited_at.timestamp(), -v.id),
        )
        assert want and queue_ids(client, query) == [v.id for v in want]
        assert client.get(f"/review/?{query}").context["total"] == len(want)
    page = client.get("/review/?tier=high").content.decode()
    assert "High risk" in page and "Medium risk" not in page and "<iframe" not in page
    assert client.get("/review/?tier=extreme").status_code == 400


def test_the_reps_view_counts_each_reps_visits_per_tier_and_rule(client, cast):
    flagged = world_make()
    client.force_login(cast.reviewer)
    Visit.objects.filter(id__in=flagged[:5]).update(review_status="accept")  # decided: not awaiting
    response = client.get("/review/reps/")
    assert response.status_code == 200
    got = {row.rep.id: (row.total, row.tiers, row.rules) for row, _, _ in response.context["rows"]}
    want: dict = {}
    for v in Visit.objects.filter(flagged=True, review_status__isnull=True):
        total, tiers, rules = want.setdefault(v.rep_id, [0, {}, {}])
        want[v.rep_id][0] = total + 1
        tiers[v.risk_tier] = tiers.get(v.risk_tier, 0) + 1
        for rule, bit in RULE_BITS.items():
            if v.flag_rules & bit:
                rules[rule] = rules.get(rule, 0) + 1
    assert got == {rep: tuple(counts) for rep, counts in want.items()}
    order = [(row.tiers.get("high", 0), row.total) for row, _, _ in response.context["rows"]]
    assert order == sorted(order, reverse=True)
    # each row opens the queue of that rep, same filters
    rep = response.context["rows"][0][0].rep
    html = client.get("/review/reps/?tier=high&tier=medium").content.decode()
    link = re.search(rf'<a href="(/review/\?[^"]*rep={rep.id}[^"]*)"', html)
    assert link, "no link into the rep's queue"
    opened = client.get(link.group(1).replace("&amp;", "&"))
    assert opened.context["total"] == sum(v for k, v in want[rep.id][1].items() if k in ("high", "medium"))
    assert {v.rep_id for v in opened.context["page"].object_list} == {rep.id}
    assert client.get("/review/reps/?review=maybe").status_code == 400


def test_each_card_shows_the_reps_day_in_order_with_the_customer(client, cast):
    world_make(reps=2)
    Customer.objects.create(resource_type="lead", resource_id=501, latitude=41.81, longitude=-87.59, location="learned")
    Visit.objects.filter(resource_id=501, latitude__isnull=False).update(customer_distance_m=2345.6)
    client.force_login(cast.reviewer)
    response = client.get("/review/?sort=oldest")
    items = response.context["items"]
    assert len(items) == 20
    for item in items:
        visit, day = item["visit"], item["day"]
        want = list(Visit.objects.filter(rep_id=visit.rep_id, local_day=visit.local_day).order_by("visited_at", "id"))
        assert [s.visit.id for s in day.stops] == [v.id for v in want]
        assert [s.number for s in day.stops] == list(range(1, len(want) + 1))
        assert [s.reviewed for s in day.stops] == [v.id == visit.id for v in want]
        assert (day.customer is not None) == (visit.resource_id == 501)
        drawn = day.picture
        assert drawn["empty"] is False
        assert len(drawn["stops"]) == sum(v.latitude is not None for v in want)
        assert sum(s["reviewed"] for s in drawn["stops"]) == (visit.latitude is not None)
    html = response.content.decode()
    assert "<iframe" not in html and html.count('<svg class="day-picture"') == 20
    svg = html[html.index('<svg class="day-picture"') :]
    svg = svg[: svg.index("</svg>")]
    assert "style" not in svg and "script" not in svg
    assert '<rect class="customer"' in html and "<strong>2.3 km</strong> from this visit" in html


def test_a_day_is_drawn_in_order_within_its_box():
    points = [(41.80, -87.60), None, (41.85, -87.55), (41.90, -87.70)]
    drawn = day_picture(points=points, reviewed=2, customer=(41.95, -87.65))
    assert [s["number"] for s in drawn["stops"]] == ["1", "4", "3"]  # the reviewed one drawn last, on top
    assert [s["reviewed"] for s in drawn["stops"]] == [False, False, True]
    for x, y in [(s["x"], s["y"]) for s in drawn["stops"]] + [(drawn["customer"]["x"], drawn["customer"]["y"])]:
        assert 0 <= float(x) <= float(drawn["width"]) and 0 <= float(y) <= float(drawn["height"])
    first, reviewed = drawn["stops"][0], drawn["stops"][2]
    assert float(reviewed["y"]) < float(first["y"]) and float(reviewed["x"]) > float(first["x"])  # NE: up, right
    assert drawn["route"].split() == [
        f"{s['x']},{s['y']}" for s in sorted(drawn["stops"], key=lambda s: int(s["number"]))
    ]
    assert drawn["to_customer"]["x1"] == reviewed["x"] and drawn["to_customer"]["x2"] == drawn["customer"]["x"]
    # 0.15 degrees of latitude (16.7 km) fill the 164 pixels inside the padding: 10 km are 98 pixels
    assert drawn["scale"]["label"] == "10 km" and 97 < float(drawn["scale"]["x2"]) - float(drawn["scale"]["x1"]) < 99
    same = day_picture(points=[(41.8, -87.6)] * 3, reviewed=0, customer=None)
    assert same["route"] and same["customer"] is None and same["scale"]["label"] == "100 m"
    assert day_picture(points=[None, None], reviewed=1, customer=None)["empty"] is True
    alone = day_picture(points=[None], reviewed=0, customer=(41.8, -87.6))
    assert alone["empty"] is False and alone["stops"] == [] and alone["to_customer"] is None


def test_a_group_head_compiled_once_reads_as_if_compiled_for_each_value():
    """views/pager.py compiles a group's head query once per value type and swaps the value in:
    the same SQL and parameters as compiling it for that value, filters naming the same value too."""
    from visits.views import pager

    visits = Visit.objects.live().filter(flagged=True, rep_id__in=[71, 72], verification_status__in=["verified"])
    for group, values in (("rep", [71, 72, 3]), ("status", ["verified", "location_unknown"]), ("risk", [0, 71, 100])):
        compiled: dict = {}
        for value in values:
            got = pager._head_sql(visits, group, value, True, 21, compiled)
            head = pager._ordered(pager._in_group(visits, group, value), newest_first=True)
            want = head.values_list("visited_at", "id")[:21].query.sql_with_params()
            assert (got[0], tuple(got[1])) == (want[0], tuple(want[1])), (group, value)
        assert compiled, f"{group}: never compiled once"


def test_the_queues_count_stops_at_its_cap(client, cast, monkeypatch):
    from visits.review import queue

    world_make(reps=2)
    client.force_login(cast.reviewer)
    flagged = Visit.objects.filter(flagged=True).count()
    assert client.get("/review/").context["total"] == flagged
    monkeypatch.setattr(queue, "QUEUE_COUNT_CAP", flagged - 1)
    page = client.get("/review/")
    assert page.context["total"] == flagged - 1 and page.context["total_more"]
    assert f"More than {flagged - 1} flagged visits" in page.content.decode()


def test_the_capped_count_reads_its_tiers_in_no_order(client, cast):
    """The count under the cap asks for no order: ordered by time, a tier filter made the database
    read the time index and visit the table for every row, where the risk index alone answers."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    world_make(reps=3)
    client.force_login(cast.reviewer)
    cases = (("", ("high", "medium", "low")), ("?tier=high", ("high",)), ("?tier=low&tier=medium", ("low", "medium")))
    for query, tiers in cases:
        with CaptureQueriesContext(connection) as captured:
            page = client.get(f"/review/{query}")
        assert page.context["total"] == Visit.objects.filter(flagged=True, risk_tier__in=tiers).count()
        counts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]
        assert counts, "the queue's count was not asked"
        assert all("ORDER BY" not in sql for sql in counts), counts
