"""The fetch process: pages, retries and errors cross the process boundary intact."""

import pytest

from visits.demo.server import Faults
from visits.sell import events, fetcher, firehose

from .conftest import TOKEN

pytestmark = pytest.mark.slow  # every test starts the fetch process


def job_for(server, *, token=TOKEN, position="tail", limit=10, retries=30, years=(1990, 2100)) -> fetcher.FetchJob:
    return fetcher.FetchJob(
        stream="visits", position=position, limit=limit, base_url=server.url, token=token,
        timeout=5, max_retries=retries, backoff_base=0.001, backoff_cap=0.01, rate_limit=0,
        min_year=years[0], max_year=years[1],
    )  # fmt: skip


def test_child_fetches_every_page_until_top(serve, small_team):
    server = serve(small_team, faults=Faults(empty_pages=0.3, short_pages=0.3))
    process = fetcher.FetchProcess()
    try:
        pages = list(process.pages(job=job_for(server)))
    finally:
        process.stop()
    assert pages[-1].top and not any(p.top for p in pages[:-1])
    parsed = [event for page in pages for event in page.events]
    # the child parses each page as the parent would: same events, rejects included, same order
    assert parsed == events.items_parse(stream="visits", items=small_team.visits_events)
    assert any(type(e) is events.Reject for e in parsed) and any(type(e) is events.Event for e in parsed)
    assert process.child.returncode is not None  # no process left behind


def test_child_parses_with_the_time_bounds_of_its_job(serve, small_team):
    server = serve(small_team)
    process = fetcher.FetchProcess()
    try:
        pages = list(process.pages(job=job_for(server, years=(2000, 2001))))
    finally:
        process.stop()
    parsed = [event for page in pages for event in page.events]
    assert parsed and all(type(e) is events.Reject for e in parsed)  # the demo's visits are of this year
    assert any("outside the years 2000 to 2001" in e.reason for e in parsed)


def test_child_reports_retries_and_errors(serve, small_team):
    server = serve(small_team, faults=Faults(rate_limit=0.5))
    retries = []
    process = fetcher.FetchProcess()
    try:
        pages = list(process.pages(job=job_for(server), on_retry=lambda problem, delay: retries.append(problem)))
    finally:
        process.stop()
    assert pages[-1].top and retries and all("HTTP 429" in r for r in retries)

    process = fetcher.FetchProcess()
    try:
        with pytest.raises(firehose.TokenRefused, match="the access token was refused"):
            list(process.pages(job=job_for(server, token="wrong")))
    finally:
        process.stop()


def test_stopping_early_ends_the_child(serve, small_team):
    server = serve(small_team)
    process = fetcher.FetchProcess()
    first = next(iter(process.pages(job=job_for(server, limit=1))))
    assert len(first.events) == 1 and not first.top
    process.stop()
    assert process.child.returncode is not None
    assert process.child.stdout.closed


def test_a_child_that_gets_no_job_exits_cleanly(capfd):
    process = fetcher.FetchProcess()  # started ahead for a backlog that did not come
    process.child.stdin.close()
    assert process.child.wait(timeout=30) == 0
    process.stop()
    assert "Traceback" not in capfd.readouterr().err
