"""Incidents and their alert mails, sent to a real SMTP server (aiosmtpd) on 127.0.0.1 and read
back from it: one mail per incident over many checks, one when it ends, for a token the demo
Firehose refuses, a real 410 gap and a stale sync; concurrent checks never send twice."""

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.models import Schedule

from visits.ingest.alerts import ingestion_check
from visits.ingest.health import incident_open
from visits.ingest.sync import streams_sync
from visits.models import Gap, Incident, SyncState
from visits.tasks import CHECK_SCHEDULE_NAME, ingestion_check_task

from .conftest import TOKEN, command_env

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = ["ops@example.com", "oncall@example.org"]
SENDER = "visitsdash alerts <alerts@example.com>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Inbox:
    """What the SMTP server received: each message with its envelope."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.original_content, policy=policy.default))
        return "250 Message accepted for delivery"

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    def raw_body(self, index: int = -1) -> str:
        return self.messages[index].get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")

    def body(self, index: int = -1) -> str:
        """The text with its lines unwrapped (mails wrap at 78 characters)."""
        return " ".join(self.raw_body(index).split())


@pytest.fixture
def smtp(settings):
    """A real SMTP server on a free port, and the app's settings pointing at it."""
    inbox = Inbox(port=free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"  # pytest-django set locmem
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", inbox.port
    settings.DEFAULT_FROM_EMAIL = SENDER
    settings.ALERT_EMAILS = RECIPIENTS
    settings.SITE_URL = "https://visits.example.com"
    yield inbox
    controller.stop()


def checks(times: int = 3) -> None:
    for _ in range(times):
        ingestion_check()


def synced() -> None:
    assert [r.error for r in streams_sync()] == ["", ""]


def success_moved_back(hours: float) -> None:
    back = timedelta(hours=hours)
    state = SyncState.objects.get(stream="visits")
    SyncState.objects.filter(stream="visits").update(
        last_success_at=state.last_success_at - back, caught_up_at=state.caught_up_at - back
    )


def test_a_refused_token_mails_once_over_many_checks_then_once_recovered(smtp, serve, small_team, settings):
    serve(small_team)
    synced()
    checks()
    assert smtp.messages == []  # healthy: nothing to say
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    streams_sync()
    checks()
    assert smtp.subjects() == ["[visitsdash] Sell refused the access token"]
    mail, body = smtp.messages[0], smtp.body()
    assert smtp.envelopes[0] == ("alerts@example.com", RECIPIENTS)
    assert mail["From"] == SENDER and set(mail["To"].split(", ")) == set(RECIPIENTS)
    assert "Sell refuses visitsdash's access token" in body
    assert "Required access token is missing, malformed, expired, or invalid." in body  # what Sell said
    assert "set SELL_ACCESS_TOKEN to it" in body and "Sell keeps events for 72 hours: act before" in body
    assert "https://visits.example.com/status/" in body
    incident = Incident.objects.get()
    assert incident.kind == "token" and incident.mailed_at and incident.closed_at is None

    settings.SELL_ACCESS_TOKEN = TOKEN
    synced()
    checks()
    assert smtp.subjects()[1:] == ["[visitsdash] Recovered: Sell accepts the access token again"]
    assert "a sync succeeded at" in smtp.body() and "It lasted" in smtp.body()
    incident.refresh_from_db()
    assert incident.closed_at and incident.recovered_mailed_at
    checks()
    assert len(smtp.messages) == 2


def test_the_demo_switch_refuses_the_token_and_the_check_mails_it(smtp, serve, small_team, capsys):
    server = serve(small_team)
    synced()
    call_command("demo_fault", "refuse-token", "on", url=server.url)
    assert "refuse-token is on" in capsys.readouterr().out
    assert streams_sync()[0].error_kind == "token"
    assert server.requests[-1].status == 401
    checks(2)
    assert smtp.subjects() == ["[visitsdash] Sell refused the access token"]
    call_command("demo_fault", "refuse-token", "off", url=server.url)
    synced()
    checks(2)
    assert smtp.subjects()[-1] == "[visitsdash] Recovered: Sell accepts the access token again"
    assert len(smtp.messages) == 2


def test_the_demo_switch_says_so_when_no_demo_answers():
    with pytest.raises(Exception, match="no demo Firehose answers"):
        call_command("demo_fault", "refuse-token", "on", url=f"http://127.0.0.1:{free_port()}")


def test_the_demo_control_path_refuses_unknown_faults_and_wrong_values(serve, small_team):
    import requests

    server = serve(small_team)
    assert requests.post(f"{server.url}/_demo/faults", json={"explode": True}, timeout=5).status_code == 400
    assert requests.post(f"{server.url}/_demo/faults", json={"refuse_token": "yes"}, timeout=5).status_code == 400
    assert requests.post(f"{server.url}/_demo/faults", json={"short_pages": 2}, timeout=5).status_code == 400
    assert requests.post(f"{server.url}/_demo/else", json={}, timeout=5).status_code == 404
    assert not server.faults.refuse_token
    answer = requests.post(f"{server.url}/_demo/faults", json={"refuse_token": True}, timeout=5)
    assert answer.json() == {"faults": {"refuse_token": 1}} and server.faults.refuse_token


def test_a_real_410_gap_mails_its_range_then_once_when_filled(smtp, serve, small_team):
    server = serve(small_team)
    synced()
    server.expire_positions()
    synced()
    gaps = list(Gap.objects.order_by("stream"))
    assert [g.stream for g in gaps] == ["users", "visits"]
    checks()
    assert sorted(smtp.subjects()) == [
        "[visitsdash] Gap in the users stream: events may be missing",
        "[visitsdash] Gap in the visits stream: events may be missing",
    ]
    visits_gap = gaps[1]
    body = next(smtp.body(i) for i, s in enumerate(smtp.subjects()) if "visits stream" in s)
    assert "Missing range: " in body and timezone.localtime(visits_gap.end).strftime("%Y-%m-%d %H:%M") in body
    assert "HTTP 410" in body and "filled" in body and "Core API" in body
    # The backfill (another module) fills the visits gap from the Core API.
    Gap.objects.filter(id=visits_gap.id).update(filled_at=timezone.now(), filled_visits=42)
    checks()
    assert smtp.subjects()[2:] == ["[visitsdash] Filled: the gap in the visits stream"]
    assert "42 visits" in smtp.body()
    assert Incident.objects.filter(kind="gap", closed_at__isnull=True).get().gap.stream == "users"


def test_a_gap_filled_before_the_first_check_gets_one_mail_saying_both(smtp, serve, small_team):
    server = serve(small_team)
    synced()
    server.expire_positions()
    synced()
    Gap.objects.update(filled_at=timezone.now(), filled_visits=7)
    checks()
    assert len(smtp.messages) == 2 and all(s.endswith("(ended since)") for s in smtp.subjects())
    assert "Update: this has ended. The gap from" in smtp.body() and "7 visits" in smtp.body()


def test_an_old_gap_from_an_archive_is_no_news(smtp):
    old = Gap.objects.create(stream="visits", end=timezone.now() - timedelta(days=30), reason="expired")
    Gap.objects.filter(id=old.id).update(recorded_at=timezone.now() - timedelta(days=30))
    checks()
    assert smtp.messages == [] and not Incident.objects.exists()


def test_stale_sync_mails_once_with_what_to_do_then_once_recovered(smtp, serve, small_team):
    serve(small_team)
    synced()
    success_moved_back(6.5)
    checks()
    assert smtp.subjects() == ["[visitsdash] No successful sync for 6 hours"]
    body = smtp.body()
    assert "No sync of the visits stream has succeeded for over 6 hours" in body
    assert "python manage.py qcluster" in body and "sync_visits" in body
    assert "Last error: none recorded" in body
    synced()
    checks()
    assert smtp.subjects()[1] == "[visitsdash] Recovered: the visits stream syncs again"
    assert len(smtp.messages) == 2


def test_a_new_install_is_not_alarmed_before_its_first_sync_has_had_time(smtp, settings):
    settings.SELL_ACCESS_TOKEN = "a-token"
    checks()
    incident = Incident.objects.get()
    assert incident.kind == "stale" and incident.message == "No sync of the visits stream has succeeded yet."
    assert smtp.messages == []
    Incident.objects.filter(id=incident.id).update(opened_at=timezone.now() - timedelta(hours=6, minutes=1))
    checks()
    assert smtp.subjects() == ["[visitsdash] No successful sync for 6 hours"]
    assert "Last success: never" in smtp.body()


def test_archive_mode_closes_sync_incidents_and_opens_none(smtp, serve, small_team, settings):
    serve(small_team)
    synced()
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    checks()
    settings.SELL_ACCESS_TOKEN = ""
    success_moved_back(100)
    checks()
    assert smtp.subjects() == [
        "[visitsdash] Sell refused the access token",
        "[visitsdash] Closed: access token refused",
    ]
    assert "read-only archive" in smtp.body()
    assert not Incident.objects.filter(closed_at__isnull=True).exists()


def test_without_alert_emails_incidents_open_but_nobody_is_mailed(smtp, serve, small_team, settings, client, cast):
    serve(small_team)
    synced()
    settings.ALERT_EMAILS = []
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    checks()
    assert smtp.messages == [] and Incident.objects.get().mailed_at is None
    client.force_login(cast.superuser)
    assert "not mailed: ALERT_EMAILS is empty" in client.get("/status/").content.decode()


def test_a_mail_server_down_is_retried_by_the_next_check_and_sent_once(smtp, serve, small_team, settings):
    serve(small_team)
    synced()
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    settings.EMAIL_PORT = free_port()  # nothing listens there
    result = ingestion_check()
    assert result.alerts.failed and "could not be sent" in result.alerts.failed[0]
    assert "mails_failed=1" in result.line
    incident = Incident.objects.get()
    assert incident.mailed_at is None and "ConnectionRefusedError" in incident.mail_error
    settings.EMAIL_PORT = smtp.port
    checks()
    assert smtp.subjects() == ["[visitsdash] Sell refused the access token"]
    incident.refresh_from_db()
    assert incident.mailed_at and incident.mail_error == ""


def test_sell_text_in_a_mail_is_one_plain_capped_line(smtp, settings):
    settings.SELL_ACCESS_TOKEN = "a-token"
    hostile = "refused\r\nBcc: victim@example.net\r\n\r\n<script>x</script>\u202e" + "A" * 5000
    SyncState.objects.create(
        stream="users", last_error=hostile, last_error_kind="token", last_success_at=timezone.now()
    )
    SyncState.objects.create(stream="visits", last_success_at=timezone.now())
    checks(1)
    mail, body = smtp.messages[0], smtp.raw_body()
    assert mail["Bcc"] is None and smtp.envelopes[0][1] == RECIPIENTS
    said = "Sell said: " + body.split("\nSell said: ", 1)[1].split("\n\n", 1)[0].replace("\n", " ")
    assert [line for line in body.splitlines() if len(line) > 78 and " " in line] == []  # wrapped, words whole
    assert said.startswith("Sell said: refused Bcc: victim@example.net <script>x</script>")
    assert len(said) <= len("Sell said: ") + 300 and said.endswith("…") and "\u202e" not in body
    assert str(mail["Subject"]) == "[visitsdash] Sell refused the access token"


def test_one_open_incident_per_kind_is_a_database_rule():
    now = timezone.now()
    assert incident_open(kind="token", message="first", now=now)
    assert incident_open(kind="token", message="second", now=now) is None
    with pytest.raises(IntegrityError), transaction.atomic():
        Incident.objects.create(kind="token", message="twice")
    Incident.objects.filter(kind="token").update(closed_at=now)
    assert incident_open(kind="token", message="again, once the first ended", now=now)
    gap = Gap.objects.create(stream="visits", end=now, reason="expired")
    assert incident_open(kind="gap", message="gap", now=now, gap=gap)
    assert incident_open(kind="gap", message="gap again", now=now, gap=gap) is None
    with pytest.raises(IntegrityError), transaction.atomic():
        Incident.objects.create(kind="gap", message="no gap")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_check_processes_send_one_mail_through_the_environment(smtp, serve, small_team):
    server = serve(small_team)
    synced()
    server.expire_positions()
    synced()  # two gaps
    env = command_env(
        server.url, SELL_ACCESS_TOKEN="wrong", EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port),
        ALERT_EMAILS=",".join(RECIPIENTS), DEFAULT_FROM_EMAIL=SENDER,
    )  # fmt: skip
    SyncState.objects.filter(stream="users").update(last_error="refused", last_error_kind="token")
    runs = [
        subprocess.Popen(
            [sys.executable, "manage.py", "ingestion_check"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(4)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [1] * 4, outputs
    assert sorted(smtp.subjects()) == [
        "[visitsdash] Gap in the users stream: events may be missing",
        "[visitsdash] Gap in the visits stream: events may be missing",
        "[visitsdash] Sell refused the access token",
    ]
    assert Incident.objects.count() == 3
    assert sum(int(out.split("mails_sent=")[1].split()[0]) for out, _ in outputs) == 3


def test_the_status_page_shows_the_open_incident_and_recent_ended_ones(smtp, serve, small_team, settings, client, cast):
    client.force_login(cast.superuser)
    serve(small_team)
    synced()
    checks(1)
    body = client.get("/status/").content.decode()
    assert "none open" in body and "No open incident" in body
    assert '<span class="badge badge-ok" id="healthz-status">ok</span>' in body
    settings.SELL_ACCESS_TOKEN = "wrong"
    streams_sync()
    checks(1)
    body = client.get("/status/").content.decode()
    assert "1 open" in body and 'data-incident="token"' in body and "Access token refused" in body
    assert "Sell refused the access token: the access token was refused (HTTP 401" in body and "mailed" in body
    assert "Alert mails go to 2 addresses" in body
    assert '<span class="badge badge-error" id="healthz-status">failing</span>, HTTP 503' in body
    settings.SELL_ACCESS_TOKEN = TOKEN
    synced()
    checks(1)
    body = client.get("/status/").content.decode()
    assert "No open incident" in body and "Ended in the last week" in body
    assert 'data-incident-closed="token"' in body and "end mailed" in body


def test_the_status_page_escapes_what_sell_said(client, cast, settings):
    settings.SELL_ACCESS_TOKEN = "a-token"
    SyncState.objects.create(stream="users", last_error="<img src=x onerror=alert(1)>", last_error_kind="token")
    checks(1)
    client.force_login(cast.superuser)
    body = client.get("/status/").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in body and "<img src=x" not in body


def test_the_schedule_runs_the_check_every_alert_check_minutes(settings, capsys):
    settings.ALERT_CHECK_MINUTES = 5
    call_command("setup_schedules")
    settings.ALERT_CHECK_MINUTES = 2
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name=CHECK_SCHEDULE_NAME)
    assert schedule.func == "visits.tasks.ingestion_check_task" and schedule.minutes == 2
    assert Schedule.objects.filter(name=CHECK_SCHEDULE_NAME).count() == 1
    assert "'ingestion-check' updated: every 2 minutes" in capsys.readouterr().out
    settings.SELL_ACCESS_TOKEN = "a-token"
    assert ingestion_check_task().startswith("status=stale ")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, value",
    [
        ("ALERT_EMAILS", "ops@example.com, not-an-address"),
        ("ALERT_STALE_HOURS", "0"),
        ("ALERT_STALE_HOURS", "72"),
        ("ALERT_CHECK_MINUTES", "often"),
        ("EMAIL_PORT", "smtp"),
        ("EMAIL_USE_TLS", "sometimes"),
        ("DEFAULT_FROM_EMAIL", "visitsdash"),
    ],
)
def test_nonsense_alert_settings_stop_startup_naming_the_variable(name, value):
    result = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='visitsdash.settings'; "
         "django.setup()"],
        cwd=ROOT, env={**command_env("http://127.0.0.1:9"), name: value}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "ImproperlyConfigured" in result.stderr
    assert name in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_mail_goes_to_the_console_without_email_host_and_to_smtp_with_it():
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='visitsdash.settings'; django.setup();"
        "from django.conf import settings as s; print(s.EMAIL_BACKEND.rsplit('.', 2)[1], s.EMAIL_PORT, s.ALERT_EMAILS)"
    )
    env = {k: v for k, v in command_env("http://127.0.0.1:9").items() if not k.startswith(("EMAIL_", "ALERT_"))}
    console = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert console.stdout.strip().split(maxsplit=2) == ["console", "25", "[]"], console.stderr
    smtp_env = {
        **env,
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_USE_TLS": "true",
        "ALERT_EMAILS": "a@example.com,b@x.org",
    }
    smtp = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=smtp_env, capture_output=True, text=True)
    assert smtp.stdout.strip().split(maxsplit=2) == ["smtp", "587", "['a@example.com', 'b@x.org']"], smtp.stderr


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_path_prints_the_mail_in_the_log_without_email_host(serve, small_team):
    """bin/demo's way: no EMAIL_HOST, so the check's process prints the mail (the worker's log)."""
    server = serve(small_team)
    synced()
    call_command("demo_fault", "refuse-token", "on", url=server.url)
    env = {k: v for k, v in command_env(server.url).items() if not k.startswith(("EMAIL_", "ALERT_"))}
    pulled = subprocess.run(
        [sys.executable, "manage.py", "sync_visits"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert pulled.returncode == 1 and "the access token was refused" in pulled.stderr
    checked = subprocess.run(
        [sys.executable, "manage.py", "ingestion_check"], cwd=ROOT, env={**env, "ALERT_EMAILS": "admin@example.com"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 1, checked.stderr
    assert "Subject: [visitsdash] Sell refused the access token" in checked.stdout
    assert "To: admin@example.com" in checked.stdout and "Required access token is missing" in checked.stdout
    assert checked.stdout.rstrip().splitlines()[-1].startswith("status=failing ")
