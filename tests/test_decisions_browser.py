"""A Reviewer in headless Chromium on a visit's page: the accept's reasons appear only with Accept,
"other" makes the note required, the accept is recorded with its reason and shown in the history;
a Lead reviewer confirms the bulk accept of the low tier."""

import pytest

from tests.conftest import browser_sign_in, user_make
from tests.test_decisions import world  # noqa: F401 (the hand-made visits)
from visits.models import Decision

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


def test_the_reasons_follow_the_decision_chosen(live_server, page, world, settings):  # noqa: F811
    settings.MAP_TILES_URL = ""
    browser_sign_in(page, f"{live_server.url}/visits/5101/", user=world.reviewer)
    reasons = page.locator("form.decide-one [data-accept-reasons]")
    assert reasons.is_hidden()  # app.js: no decision chosen yet
    page.check("form.decide-one input[name=kind][value=reject]")
    assert reasons.is_hidden()
    page.check("form.decide-one input[name=kind][value=accept]")
    assert reasons.is_visible()
    page.check("form.decide-one input[name=reason][value=other]")
    assert page.locator("form.decide-one [name=note]").evaluate("n => n.required")
    page.click("form.decide-one button[type=submit]")  # the browser refuses: the note is required
    assert not Decision.objects.filter(visit_id=5101).exists()
    page.check("form.decide-one input[name=reason][value=address_wrong]")
    assert not page.locator("form.decide-one [name=note]").evaluate("n => n.required")
    page.click("form.decide-one button[type=submit]")
    page.wait_for_selector(".message")
    assert (
        "Accepted: legitimate (Address wrong in Sell): recorded for 1 visit." in page.locator(".message").inner_text()
    )
    assert "(Address wrong in Sell)" in page.locator("ol.decisions li").first.inner_text()
    assert Decision.objects.get(visit_id=5101).reason == "address_wrong"


def test_a_lead_reviewer_confirms_the_bulk_accept(live_server, page, world):  # noqa: F811
    lead = user_make("lead", group="Lead reviewers")
    browser_sign_in(page, f"{live_server.url}/review/", user=lead)
    page.goto(f"{live_server.url}/review/?rep=52")
    page.click("text=Accept all low-tier visits in this filter")
    assert "Accept 2 low-tier visits awaiting a decision for these filters?" in page.locator("h1").inner_text()
    page.check("input[name=reason][value=gps_noise]")
    page.click("text=Accept 2 visits")
    page.wait_for_selector(".message")
    assert "recorded for 2 low-tier visits" in page.locator(".message").inner_text()
    assert set(Decision.objects.filter(kind="accept").values_list("visit_id", "reason")) == {
        (5201, "gps_noise"),
        (5202, "gps_noise"),
    }
