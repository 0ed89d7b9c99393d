"""Sell's 10 requests a second per token hold across clients and processes: the Firehose's fetch
process and the Core API client share one limiter, counted from the demo server's request log
(every attempt, retries too); 0 switches it off."""

import threading
import uuid
from datetime import UTC, datetime

import pytest

from visits.demo.core_api import CoreFaults
from visits.demo.generator import team_generate
from visits.demo.server import DemoFirehose, Faults
from visits.sell import fetcher
from visits.sell.core import CoreClient
from visits.sell.limiter import HEADROOM, RateLimiter

NOW = datetime(2025, 3, 14, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def team():
    return team_generate(seed=11, reps=6, weeks=1, now=NOW, history_weeks=2)


def busiest_second(times: list[float]) -> int:
    """The most requests that arrived within any one second (a window starting at each arrival)."""
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def both_clients_run(server: DemoFirehose, *, token: str, rate: float, core_requests: int) -> None:
    """The Firehose's fetch process walks the visits stream while, here, the Core API client
    reads pages of users: two processes, one token."""
    job = fetcher.FetchJob(
        stream="visits", position="tail", limit=8, base_url=server.url, token=token, timeout=5, max_retries=30,
        backoff_base=0.001, backoff_cap=0.01, rate_limit=rate, min_year=1990, max_year=2100,
    )  # fmt: skip
    client = CoreClient(
        base_url=server.url, token=token, timeout=5, max_retries=30, backoff_base=0.001, backoff_cap=0.01,
        rate_limit=rate,
    )  # fmt: skip
    errors = []

    def core_reads() -> None:
        try:
            for number in range(core_requests):
                client.list_page("/v2/users", {}, page=1 + number % 2, per_page=5)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    reader = threading.Thread(target=core_reads)
    process = fetcher.FetchProcess()
    try:
        reader.start()
        pages = list(process.pages(job=job))
    finally:
        process.stop()
        reader.join()
        client.close()
    assert pages[-1].top and not errors


@pytest.mark.slow
def test_fetch_process_and_core_client_together_stay_under_ten_a_second(team):
    token = f"limit-{uuid.uuid4().hex}"
    # Every fifth request is a 429 or a 5xx: their retries must wait their turn too.
    with DemoFirehose(
        team, token=token, faults=Faults(rate_limit=0.1, server_errors=0.1, seed=3),
        core_faults=CoreFaults(rate_limit=0.1, server_errors=0.1, seed=4),
    ) as server:  # fmt: skip
        both_clients_run(server, token=token, rate=10, core_requests=15)
        records = server.requests
    times = [r.at for r in records]
    assert {r.path for r in records} == {"/v3/visits/stream", "/v2/users"}
    assert any(r.status != 200 for r in records)  # retries happened and were counted
    assert len(records) >= 35
    assert busiest_second(times) <= 10
    # ... and the limit is not far stricter than it must be: about 10 / HEADROOM a second.
    rate = (len(times) - 1) / (max(times) - min(times))
    assert 10 / HEADROOM * 0.85 <= rate <= 10


def test_zero_switches_the_limit_off(team):
    token = f"limit-{uuid.uuid4().hex}"
    with DemoFirehose(team, token=token) as server:
        client = CoreClient(base_url=server.url, token=token, rate_limit=0)
        for _ in range(30):
            client.list_page("/v2/visit_outcomes", {}, page=1)
        client.close()
        times = [r.at for r in server.requests]
    assert len(times) == 30
    assert busiest_second(times) > 10


def test_turns_are_spaced_and_shared_through_the_file(tmp_path):
    now = [100.0]
    slept = []
    first = RateLimiter(token="t", rate=10, directory=tmp_path, clock=lambda: now[0], sleep=slept.append)
    second = RateLimiter(token="t", rate=10, directory=tmp_path, clock=lambda: now[0], sleep=slept.append)
    other_token = RateLimiter(token="u", rate=10, directory=tmp_path, clock=lambda: now[0], sleep=slept.append)
    waits = [first.turn_wait(), second.turn_wait(), first.turn_wait(), other_token.turn_wait()]
    assert waits == pytest.approx([0.0, 0.105, 0.21, 0.0])
    assert slept == pytest.approx([0.105, 0.21])
    now[0] = 200.0  # long after: no waiting, the old turn is forgotten
    assert second.turn_wait() == 0.0
    assert first.path == second.path != other_token.path
    assert "t" not in first.path.name.removeprefix("visitsdash-sell-rate-")  # a hash, not the token


def test_a_turn_from_a_clock_that_restarted_is_ignored(tmp_path):
    now = [5_000.0]
    limiter = RateLimiter(token="t", rate=10, directory=tmp_path, clock=lambda: now[0], sleep=lambda s: None)
    limiter.turn_wait()
    now[0] = 10.0  # a reboot: CLOCK_MONOTONIC starts again
    assert limiter.turn_wait() == 0.0


def test_the_clients_take_the_setting(settings):
    settings.SELL_RATE_LIMIT = 7
    assert CoreClient(token="x").limiter.rate == 7
    settings.SELL_RATE_LIMIT = 0
    assert CoreClient(token="x").limiter.interval == 0.0


def test_a_file_that_cannot_be_used_limits_this_process_alone(tmp_path):
    now = [50.0]
    limiter = RateLimiter(token="t", rate=10, directory=tmp_path, clock=lambda: now[0], sleep=lambda s: None)
    limiter.path.symlink_to(tmp_path / "elsewhere")  # planted: O_NOFOLLOW refuses it
    assert [limiter.turn_wait() for _ in range(3)] == pytest.approx([0.0, 0.105, 0.21])
    assert not (tmp_path / "elsewhere").exists()
