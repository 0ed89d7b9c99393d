"""The ranked queue in headless Chromium at a laptop's 1366x768: cards in risk order with their tier
badges and drawn days (no map frame, nothing the CSP refuses), the tier filter and the order
through the filter form, a decision recorded, and the by-rep view opening into one rep's queue."""

import pytest
from django.db.models import Case, F, Value, When

from visits.ingest.sync import streams_sync
from visits.models import Decision, Visit
from visits.review.flags import flags_refresh

from .conftest import browser_sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


def risks_set() -> None:
    """Risks spread over the flagged visits, as the risk helper would store them."""
    flagged = Visit.objects.filter(flagged=True)
    flagged.update(risk=(F("id") * 37) % 101)
    flagged.update(
        risk_tier=Case(When(risk__gte=70, then=Value("high")), When(risk__gte=40, then=Value("medium")),
                       default=Value("low"))
    )  # fmt: skip


def cards(page) -> list[dict]:
    return page.eval_on_selector_all(
        "article.review-item",
        """els => els.map(e => ({id: Number(e.id.replace('visit-', '')),
            risk: Number(e.querySelector('.risk').textContent), tier: e.querySelector('.badge.tier').textContent,
            time: e.querySelector('header a strong').textContent,
            rep: e.querySelector('header a[href*="/reports/reps/"]').textContent,
            drawn: !!e.querySelector('svg.day-picture, p.day-picture.empty'),
            wide: e.scrollWidth > e.clientWidth}))""",
    )


def test_the_ranked_queue_in_chromium(live_server, page, serve, small_team, settings, cast):
    settings.MAP_TILES_URL = ""
    serve(small_team)
    streams_sync()
    flags_refresh()
    risks_set()
    refused = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.set_viewport_size({"width": 1366, "height": 768})
    browser_sign_in(page, f"{live_server.url}/review/", user=cast.reviewer)

    shown = cards(page)
    want = sorted(Visit.objects.filter(flagged=True, deleted_at__isnull=True, review_status__isnull=True),
                  key=lambda v: (-v.risk, -v.visited_at.timestamp(), -v.id))[:20]  # fmt: skip
    assert [c["id"] for c in shown] == [v.id for v in want]
    assert [c["risk"] for c in shown] == [v.risk for v in want]
    assert [c["tier"] for c in shown] == [f"{v.risk_tier.capitalize()} risk" for v in want]
    assert all(c["drawn"] for c in shown) and not any(c["wide"] for c in shown)
    assert page.locator("iframe").count() == 0
    assert page.locator("svg.day-picture .stop.reviewed").count() >= 1
    first = page.locator("article.review-item").first
    card, picture = first.bounding_box(), first.locator(".rep-day").bounding_box()
    assert picture["x"] + picture["width"] <= card["x"] + card["width"]  # the day fits in its card at 1366 px
    assert first.locator("table.day-visits tr.reviewed").count() == 1

    page.check("input[name=tier][value=high]")  # the tier filter, through the form
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**tier=high**")
    high = cards(page)
    assert high and {c["tier"] for c in high} == {"High risk"}
    assert [c["risk"] for c in high] == sorted((c["risk"] for c in high), reverse=True)

    page.select_option("select[name=sort]", "oldest")  # the order, the tier kept
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**sort=oldest**")
    oldest = cards(page)
    want = sorted(Visit.objects.filter(flagged=True, deleted_at__isnull=True, review_status__isnull=True,
                                       risk_tier="high"), key=lambda v: (v.visited_at, v.id))[:20]  # fmt: skip
    assert [c["id"] for c in oldest] == [v.id for v in want]

    chosen = str(oldest[0]["id"])  # a decision, still recorded from the cards
    page.check(f"input[name=visit][value='{chosen}']")
    page.check("input[name=kind][value=follow_up]")
    page.fill("textarea[name=note]", "Ask the rep about the route.")
    page.click("fieldset.decide button[type=submit]")
    page.wait_for_selector(".message")
    assert "recorded for 1 visit" in page.locator(".message").inner_text()
    assert page.locator(f"#visit-{chosen}").count() == 0
    assert Decision.objects.get(visit_id=chosen).note == "Ask the rep about the route."

    page.click("nav.views a:text('By rep')")  # the reps view, the same filters
    page.wait_for_url("**/review/reps/**")
    rows = page.locator("table.rep-queues tbody tr")
    assert rows.count() >= 2
    rep_name = rows.first.locator("td a").inner_text()
    rows.first.locator("td a").click()
    page.wait_for_url("**/review/?**rep=**")
    theirs = cards(page)
    assert theirs and {c["rep"] for c in theirs} == {rep_name} and {c["tier"] for c in theirs} == {"High risk"}
    assert not refused, refused
