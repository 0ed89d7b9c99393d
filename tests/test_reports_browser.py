"""A Manager in headless Chromium: sign in, filter, sort, follow a rep, download a CSV."""

import csv
import io

import pytest

from visits.ingest.sync import streams_sync

from .conftest import browser_sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]  # Chromium


def test_manager_filters_sorts_follows_a_rep_and_downloads(live_server, page, serve, small_team, cast):
    serve(small_team)
    streams_sync()
    browser_sign_in(page, f"{live_server.url}/reports/reps/", user=cast.manager)

    page.get_by_role("link", name="Too-far rate").click()
    page.wait_for_url("**sort=too_far_rate")
    page.get_by_role("link", name="Too-far rate ▲").click()
    page.wait_for_url("**sort=-too_far_rate")
    rates = [float(t.rstrip("%")) for t in page.locator("table.report tbody tr td:last-child").all_inner_texts()]
    assert rates == sorted(rates, reverse=True) and len(rates) > 1

    page.check("input[name=status][value=resource_location_too_far]")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**status=resource_location_too_far**")
    assert "sort=-too_far_rate" in page.url  # the sort survives a new filter
    visits = [int(t.replace(",", "")) for t in page.locator("table.report tbody tr td:nth-child(2)").all_inner_texts()]
    too_far = [int(t.replace(",", "")) for t in page.locator("table.report tbody tr td:nth-child(4)").all_inner_texts()]
    assert visits == too_far  # only too-far visits are left

    first = page.locator("table.report tbody tr td:first-child a").first
    name = first.inner_text()
    first.click()
    page.wait_for_url("**/reports/reps/*/**")
    assert page.locator("h1").inner_text() == name
    assert "status=resource_location_too_far" in page.url  # the filters follow the link

    page.goto(f"{live_server.url}/reports/reps/?status=resource_location_too_far")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename == "reps_first_to_last.csv"
    text = open(download.path(), encoding="utf-8-sig").read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and all(r["visits"] == r["resource_location_too_far"] for r in rows)
