"""The status page in headless Chromium: sign in, read the figures, open the rejected items."""

import pytest

from visits.ingest.sync import streams_sync

from .conftest import browser_sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


def test_admin_signs_in_and_reads_ingestion_status(live_server, page, serve, small_team, cast):
    serve(small_team)
    streams_sync()
    browser_sign_in(page, f"{live_server.url}/status/", user=cast.superuser)  # staff
    visits_card = page.locator("[data-stream=visits]")
    assert "caught up" in visits_card.locator(".badge").inner_text()
    assert page.locator(".stat .num").first.inner_text().replace(",", "").isdigit()
    visits_card.get_by_role("link").click()
    page.wait_for_url("**/status/rejected/?stream=visits")
    rows = page.locator("table.rejected tbody tr")
    assert rows.count() == small_team.malformed_count["visits"]
    assert page.locator("select[name=stream]").input_value() == "visits"
    page.select_option("select[name=stream]", "users")
    page.wait_for_url("**stream=users")
    assert page.locator("table.rejected tbody tr").count() == small_team.malformed_count["users"]
