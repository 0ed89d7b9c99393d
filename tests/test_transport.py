"""Transport faults over HTTP against the demo Firehose: bodies cut short are retried, a
dripping server cannot hold a request past SELL_TIMEOUT, a wrong URL is a configuration error."""

import pytest

from visits.demo.server import Faults
from visits.ingest.sync import stream_sync, streams_sync
from visits.models import SyncState
from visits.sell import firehose

from .conftest import assert_db_matches

pytestmark = pytest.mark.django_db


def test_truncated_bodies_are_retried_and_the_sync_ends_exact(serve, small_team, settings):
    settings.SELL_PAGE_LIMIT = 10  # many requests, so both shapes of cut (length, chunked) strike
    server = serve(small_team, faults=Faults(truncate=0.3, seed=3))
    problems = []
    results = streams_sync(on_retry=lambda problem, delay: problems.append(problem))
    assert [r.error for r in results] == ["", ""], results
    assert all(r.at_top for r in results)
    assert problems and all("ChunkedEncodingError" in p or "ProtocolError" in p for p in problems), problems[:5]
    assert len(problems) == sum(r.retries for r in results)
    assert_db_matches(small_team)
    assert SyncState.objects.get(stream="visits").events_skipped == 0  # nothing of a cut page was applied
    assert len([r for r in server.requests if r.path == "/v3/visits/stream"]) > results[1].pages


def test_a_dripping_server_cannot_hold_a_request_past_the_timeout(serve, small_team, settings):
    # Each byte comes well within 0.5 s, so only a deadline on the whole request ends it; the
    # drip itself ends after a few seconds, so a client without one gets the page instead.
    serve(small_team, faults=Faults(drip=1.0))
    client = firehose.FirehoseClient(timeout=0.5, max_retries=0)
    with pytest.raises(firehose.Unreachable, match=r"Timeout: no whole answer within SELL_TIMEOUT \(0.5 s\)"):
        client.page_fetch(stream="visits", position="tail", limit=5)
    client.close()


def test_a_sync_against_a_dripping_server_stops_unreachable(serve, small_team, settings):
    serve(small_team, faults=Faults(drip=1.0))
    settings.SELL_TIMEOUT = 0.5
    settings.SELL_MAX_RETRIES = 1
    result = stream_sync(stream="users")
    assert result.error_kind == "unreachable" and "SELL_TIMEOUT" in result.error
    assert "SELL_TIMEOUT" in SyncState.objects.get(stream="users").last_error


def test_an_unusable_url_is_a_configuration_error_not_retried(settings):
    settings.SELL_ACCESS_TOKEN = "x"
    retries = []
    client = firehose.FirehoseClient(base_url="http://", on_retry=lambda problem, delay: retries.append(problem))
    with pytest.raises(firehose.BadConfiguration, match="check SELL_API_URL"):
        client.page_fetch(stream="visits", position="tail", limit=5)
    assert retries == []
