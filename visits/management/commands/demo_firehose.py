"""Serve the bundled demo Firehose: generated team data behind a Sell-like HTTP API.

Point SELL_API_URL at the printed URL and SELL_ACCESS_TOKEN at the token to sync from it.
Fault flags make the server misbehave the way the real one may; see visits/demo/server.py.
The same port serves the Core API v2 (`/v2/...`, visits/demo/core_api.py), with --history-weeks
of visits before the Firehose's window and its own --core-* faults.
"""

import argparse
import dataclasses
from datetime import UTC, datetime, timedelta

from django.core.management.base import BaseCommand, CommandError

from visits.demo.core_api import PAST_CAP, CoreFaults
from visits.demo.generator import team_generate
from visits.demo.server import DemoFirehose, Faults

FAULT_OPTIONS = (
    "empty_pages",
    "short_pages",
    "redeliver",
    "shuffle",
    "server_errors",
    "rate_limit",
    "drop_connection",
    "slow",
    "truncate",
    "drip",
)


def number(raw: str, convert: type[int] | type[float], *, low: float, high: float | None = None) -> float:
    """An option's number, between `low` and `high`, or argparse's error naming what is wrong."""
    try:
        value = convert(raw)
    except ValueError:
        kind = "a whole number" if convert is int else "a number"
        raise argparse.ArgumentTypeError(f"{raw!r} is not {kind}") from None
    if high is not None and not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is not a probability between {low:g} and {high:g}")
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is less than {low:g}")
    return value


def probability(raw: str) -> float:
    return number(raw, float, low=0.0, high=1.0)


def count(raw: str) -> int:
    return int(number(raw, int, low=0))


def seconds(raw: str) -> float:
    return number(raw, float, low=0.0)


class Command(BaseCommand):
    help = "Serve generated Sell users and visits on /v3/users/stream and /v3/visits/stream until Ctrl-C."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--token", default="demo-token")
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--reps", type=int, default=25)
        parser.add_argument("--weeks", type=int, default=8)
        parser.add_argument("--live", type=float, metavar="SECONDS", help="add a new visit every SECONDS")
        parser.add_argument("--no-updates", action="store_true", help="no edits, renames or status changes")
        parser.add_argument("--no-deletes", action="store_true")
        parser.add_argument("--home-rep", action="store_true", help="one rep logs a third of their visits from home")
        parser.add_argument("--malformed", action="store_true", help="mix in items a client must reject")
        parser.add_argument(
            "--history-weeks", type=int, default=0, metavar="N",
            help="N weeks of visits before the Firehose's window, in the Core API only",
        )  # fmt: skip
        parser.add_argument(
            "--heavy-rep", type=int, default=0, metavar="N",
            help="one more rep with N visits before the window (over 20,000 makes a backfill split twice)",
        )  # fmt: skip
        parser.add_argument(
            "--core-forbidden", default="", metavar="FEATURES",
            help="Core API features that answer 403, comma-separated: users, outcomes, visits",
        )  # fmt: skip
        parser.add_argument("--core-server-errors", type=probability, default=0.0, metavar="P")
        parser.add_argument("--core-rate-limit", type=probability, default=0.0, metavar="P")
        parser.add_argument("--core-drop-connection", type=probability, default=0.0, metavar="P")
        parser.add_argument(
            "--core-past-cap", choices=PAST_CAP, default="empty", help="what a list page past 100 answers"
        )
        parser.add_argument(
            "--core-lists-deleted", action="store_true", help="the Core API still lists visits the Firehose deleted"
        )
        parser.add_argument("--core-malformed", action="store_true", help="/v2/visits lists items a client must reject")
        for name in FAULT_OPTIONS:
            parser.add_argument(
                f"--{name.replace('_', '-')}", type=probability, metavar="P", help="probability per request, 0..1"
            )
        parser.add_argument("--retry-after", type=int, metavar="S", help="send Retry-After: S with every 429")
        parser.add_argument(
            "--expire-after-pages",
            type=count,
            metavar="N",
            help="after every N pages served, every position issued so far answers 410 (an expiry mid-sync)",
        )
        parser.add_argument(
            "--expire-times",
            type=count,
            metavar="K",
            help="with --expire-after-pages: expire K times, every N pages (0: for ever; default 1)",
        )
        parser.add_argument(
            "--retention-hours",
            type=float,
            metavar="H",
            help="drop events older than H hours (Sell keeps 72); default keeps everything",
        )
        parser.add_argument("--fault-seed", type=int, default=0)
        parser.add_argument(
            "--all-faults",
            action="store_true",
            help="a mix of every fault plus malformed items; explicit flags override it",
        )

    def handle(self, *args: object, **options: object) -> None:
        seed = options["fault_seed"]
        base = Faults.chaos(seed=seed) if options["all_faults"] else Faults(seed=seed)
        knobs = (*FAULT_OPTIONS, "retry_after", "expire_after_pages", "expire_times")
        chosen = {name: options[name] for name in knobs if options[name] is not None}
        faults = dataclasses.replace(base, **chosen)
        try:
            data = team_generate(
                seed=options["seed"],
                reps=options["reps"],
                weeks=options["weeks"],
                updates=not options["no_updates"],
                deletes=not options["no_deletes"],
                malformed=options["malformed"] or options["all_faults"],
                now=datetime.now(UTC),  # the demo's team works up to today; tests pass a fixed clock
                history_weeks=options["history_weeks"],
                heavy_rep_visits=options["heavy_rep"],
                home_rep=options["home_rep"],
            )
            core_faults = CoreFaults(
                forbidden=frozenset(part.strip() for part in options["core_forbidden"].split(",") if part.strip()),
                server_errors=options["core_server_errors"],
                rate_limit=options["core_rate_limit"],
                drop_connection=options["core_drop_connection"],
                past_cap=options["core_past_cap"],
                lists_deleted=options["core_lists_deleted"],
                malformed=options["core_malformed"],
                seed=seed,
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        hours = options["retention_hours"]
        server = DemoFirehose(
            data,
            token=options["token"],
            host=options["host"],
            port=options["port"],
            faults=faults,
            retention=timedelta(hours=hours) if hours is not None else None,
            live_interval=options["live"],
            core_faults=core_faults,
        )
        knobs = [f"{name}={value}" for name, value in {**faults.active(), **core_faults.active()}.items()]
        if data.malformed_count["visits"]:
            knobs.append("malformed")
        extras = f", live every {options['live']}s" if options["live"] else ""
        extras += f", retention {hours}h" if hours is not None else ""
        self.stdout.write(
            f"Demo Firehose on {server.url} token={options['token']} "
            f"users={len(data.users_events)} visits={len(data.visits_events)} events{extras}, "
            f"Core API /v2: {len(data.core_visits())} visits, {len(data.core_users())} users, "
            f"faults: {' '.join(knobs) or 'none'} (Ctrl-C to stop)"
        )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
