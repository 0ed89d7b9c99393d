"""Run the demo generator under a false "today", to show that its output follows only the clock
it is given. `python -m tests.demo_clock FAKE_TODAY NOW` sets every way Python tells the date
(datetime.now/utcnow/today, date.today, time.time) to FAKE_TODAY before the generator is
imported, then prints a JSON line: the digest of the data made with the clock NOW, and the
`now` the generator takes when given none (proof that the false today reached it)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import time

GENERATED = {"seed": 11, "reps": 6, "weeks": 1, "malformed": True}  # the small team's


def data_digest(data) -> str:
    """A digest of everything a DemoData holds: both logs and the truth derived from them."""
    parts = {
        "users_events": data.users_events,
        "visits_events": data.visits_events,
        "expected_visits": sorted(data.expected_visits().items()),
        "expected_reps": sorted(data.expected_reps().items()),
        "expected_outcomes": sorted(data.expected_outcomes().items()),
        "suspicious": sorted(data.suspicious.items()),
        "customers": sorted(data.customers.items()),
        "malformed_count": data.malformed_count,
        "now": data.now.isoformat(),
    }
    # A lone surrogate (a malformed item's) is kept as its \\u escape by ensure_ascii.
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def clock_fake(*, today: dt.datetime) -> None:
    """From now on this process believes it is `today` (the clock still runs from there)."""
    real_datetime, real_time, real_time_ns = dt.datetime, time.time, time.time_ns
    shift = today - real_datetime.now(dt.UTC)

    class FakeDatetime(real_datetime):
        @classmethod
        def now(cls, tz=None):
            moment = real_datetime.now(dt.UTC) + shift
            return moment.astimezone(tz) if tz else moment.astimezone().replace(tzinfo=None)

        @classmethod
        def utcnow(cls):
            return (real_datetime.now(dt.UTC) + shift).replace(tzinfo=None)

        @classmethod
        def today(cls):
            return cls.now()

    class FakeDate(dt.date):
        @classmethod
        def today(cls):
            return FakeDatetime.now().date()

    dt.datetime, dt.date = FakeDatetime, FakeDate
    time.time = lambda: real_time() + shift.total_seconds()
    time.time_ns = lambda: real_time_ns() + int(shift.total_seconds() * 1e9)


def main() -> None:
    clock_fake(today=dt.datetime.fromisoformat(sys.argv[1]))
    from visits.demo.generator import team_generate  # only now: it must see the false today

    data = team_generate(**GENERATED, now=dt.datetime.fromisoformat(sys.argv[2]))
    default_now = team_generate(seed=11, reps=2, weeks=1).now
    print(json.dumps({"digest": data_digest(data), "default_now": default_now.isoformat()}))


if __name__ == "__main__":
    main()
