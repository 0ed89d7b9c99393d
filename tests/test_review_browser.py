"""A Reviewer in headless Chromium: open the queue, read the reasons, decide on two visits with
a note, see them leave the queue and the decision on the visit's page."""

import pytest

from visits.ingest.sync import streams_sync
from visits.models import Decision
from visits.review.flags import flags_refresh

from .conftest import browser_sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


def test_reviewer_decides_on_flagged_visits(live_server, page, serve, small_team, settings, cast):
    settings.MAP_TILES_URL = ""
    serve(small_team)
    streams_sync()
    flags_refresh()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    reviewer = browser_sign_in(page, f"{live_server.url}/review/", user=cast.reviewer)
    items = page.locator("article.review-item")
    before = int(page.locator("form.review-form > p.muted").inner_text().split()[0].replace(",", ""))
    assert items.count() > 2 and items.first.locator("ul.flags li").count() >= 1
    page.check("input.select-all")  # static/js/app.js: every visit on the page, and back
    assert page.locator("input[name=visit]:checked").count() == items.count()
    page.uncheck("input.select-all")
    assert page.locator("input[name=visit]:checked").count() == 0
    chosen = [items.nth(i).get_attribute("id").removeprefix("visit-") for i in (0, 1)]
    for visit_id in chosen:
        page.check(f"input[name=visit][value='{visit_id}']")
    page.check("input[name=kind][value=reject]")
    page.fill("textarea[name=note]", "Called the customers: nobody came.")
    page.click("fieldset.decide button[type=submit]")
    page.wait_for_selector(".message")
    assert page.locator(".message").inner_text() == "Rejected: not legitimate: recorded for 2 visits."
    after = int(page.locator("form.review-form > p.muted").inner_text().split()[0].replace(",", ""))
    assert after == before - 2
    assert not any(page.locator(f"#visit-{v}").count() for v in chosen)

    page.goto(f"{live_server.url}/visits/{chosen[0]}/")
    history = page.locator("ol.decisions li").first.inner_text()
    assert "Rejected: not legitimate" in history and reviewer.username in history and "nobody came" in history
    assert Decision.objects.filter(kind="reject", decided_by=reviewer).count() == 2 and not dialogs
