"""Switches a fault on the running demo Firehose (bin/demo's), e.g. `demo_fault refuse-token on`:
from then on it answers 401 to every request, as Sell does when a token is revoked, so the
worker's ingestion check mails an alert (to the worker's log in the demo).
"""

import os

import requests
from django.core.management.base import BaseCommand, CommandError

from visits.demo.server import CONTROL_PATH

FAULTS = {"refuse-token": "refuse_token"}  # the command's name: the Faults field it switches


class Command(BaseCommand):
    help = "Switch a fault of the running demo Firehose on or off (refuse-token: answer 401 to everything)."

    def add_arguments(self, parser):
        parser.add_argument("fault", choices=sorted(FAULTS))
        parser.add_argument("state", choices=["on", "off"])
        parser.add_argument(
            "--url",
            default=f"http://127.0.0.1:{os.environ.get('DEMO_FIREHOSE_PORT', '8765')}",
            help="the demo Firehose (default: bin/demo's, on DEMO_FIREHOSE_PORT or 8765)",
        )

    def handle(self, *args, fault, state, url, **options):
        try:
            response = requests.post(url.rstrip("/") + CONTROL_PATH, json={FAULTS[fault]: state == "on"}, timeout=10)
        except requests.RequestException as exc:
            raise CommandError(
                f"no demo Firehose answers at {url} ({type(exc).__name__}): is bin/demo running?"
            ) from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200:
            raise CommandError(
                f"the demo Firehose at {url} said no (HTTP {response.status_code}): {answer.get('error', '')}"
            )
        on = ", ".join(f"{name}={value}" for name, value in answer.get("faults", {}).items()) or "none"
        self.stdout.write(f"{fault} is {state} at {url}; faults on now: {on}")
        if fault == "refuse-token" and state == "on":
            self.stdout.write(
                "The next sync fails on the refused token; the ingestion check then mails an alert "
                "(bin/demo: in var/log/qcluster.log within about two minutes). `demo_fault refuse-token off` ends it."
            )
