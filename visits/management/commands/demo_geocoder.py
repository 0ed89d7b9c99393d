"""Serve the bundled Nominatim-compatible stand-in (visits/demo/geocoder.py) for the demo's customers.

Point GEOCODER_URL at the printed URL. It knows the addresses of the demo Firehose's customers
for the same --seed and --reps, a few of them wrong (10-40 km off) or unknown (no result).
"""

import argparse

from django.core.management.base import BaseCommand

from visits.demo.generator import team_generate
from visits.demo.geocoder import DemoGeocoder
from visits.management.commands.demo_firehose import count, probability, seconds


class Command(BaseCommand):
    help = "Serve GET /search like Nominatim for the demo's customers until Ctrl-C."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--seed", type=int, default=7, help="the demo Firehose's seed")
        parser.add_argument("--reps", type=int, default=25, help="the demo Firehose's number of reps")
        parser.add_argument("--min-delay", type=seconds, default=1.0, metavar="SECONDS",
                            help="a request sooner than this after the previous one gets 429")  # fmt: skip
        parser.add_argument("--errors", type=probability, default=0.0, metavar="P", help="answer 503 this often")
        parser.add_argument("--wrong", type=count, default=3, metavar="N", help="customers whose address is far off")
        parser.add_argument("--unknown", type=count, default=2, metavar="N", help="customers without a result")

    def handle(self, *args, **options) -> None:
        # The customers and their addresses depend on the seed, the reps and updates only (not on the
        # window, its dates or its history), so one week is generated, with the demo Firehose's defaults.
        data = team_generate(seed=options["seed"], reps=options["reps"], weeks=1)
        server = DemoGeocoder(
            data, host=options["host"], port=options["port"], min_delay=options["min_delay"],
            error_rate=options["errors"], wrong_addresses=options["wrong"], unknown_addresses=options["unknown"],
        )  # fmt: skip
        self.stdout.write(
            f"Demo geocoder on {server.url}: {len(server.places)} addresses, {len(server.wrong)} wrong, "
            f"{len(server.unknown)} unknown; set GEOCODER_URL={server.url}"
        )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
