"""The weekly digest and the too-far rate alerts, sent to a real SMTP server on 127.0.0.1 (the
one of test_alerts.py) and read back: each manager's own reps only, figures against a count made
here in Python, once a week, skipped, opted out, failed and retried, dry-run, the command's
options, the schedules' next runs, alerts once per crossing, hostile names escaped."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django_q.conf import Conf
from django_q.models import Schedule

from tests.conftest import user_make
from visits.ingest.pages import visits_upsert
from visits.models import AccountSettings, MailKind, MailSent, RateAlert, Rep, SellLink, Visit
from visits.notify.digest import Digest, digest_build, percent
from visits.notify.rate_alerts import chain_up, rate_alerts_send, rate_rise
from visits.notify.send import digests_send
from visits.notify.weeks import next_run_at, week_parse
from visits.reports.analytics import Counts
from visits.tasks import DIGESTS_SCHEDULE_NAME, RATE_ALERTS_SCHEDULE_NAME, schedules_setup

from .test_alerts import free_port, smtp  # noqa: F401 (the SMTP server fixture, shared)

pytestmark = pytest.mark.django_db

LAST, WEEK, NEXT = date(2026, 1, 5), date(2026, 1, 12), date(2026, 1, 19)  # Mondays
AFTER_ALL = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)  # every week above has ended
NOTICE = "Positions are kept 90 days for the visit checks (test notice)."

# Sell users: a director over two regional managers, two reps each. The managers visit too.
REPS = {
    1: ("Dana Director", None),
    10: ("Mona North", 1), 11: ("Nora North", 10), 12: ("Ned North", 10),
    20: ("Mike South", 1), 21: ("Sam South", 20), 22: ("Sue South", 20),
}  # fmt: skip
NORTH, SOUTH = {10, 11, 12}, {20, 21, 22}
# Visits per rep and week: (visits, too far). Ned's too-far rate jumps 10% -> 50% in WEEK and stays
# there; Sam's jumps too but from 19 visits; Sue's rises by exactly 15 points.
PLAN = {
    10: {LAST: (20, 2), WEEK: (21, 2), NEXT: (20, 2)},
    11: {LAST: (25, 5), WEEK: (30, 6), NEXT: (25, 5)},
    12: {LAST: (30, 3), WEEK: (30, 15), NEXT: (30, 15)},
    21: {LAST: (19, 0), WEEK: (25, 20), NEXT: (25, 20)},
    22: {LAST: (20, 2), WEEK: (20, 5), NEXT: (20, 5)},
}


@dataclass(frozen=True)
class Team:
    north: User
    south: User
    director: User
    rows: dict[int, dict]


def status_of(i: int, far: int) -> str:
    """The i-th visit's status: the first `far` too far, then one in four location unknown."""
    if i < far:
        return "resource_location_too_far"
    return "location_unknown" if i % 4 == 1 else "verified"


def rows_make(plan: dict[int, dict[date, tuple[int, int]]], *, first_id: int = 1) -> dict[int, dict]:
    """Visits spread evenly over each week, its first at Monday 00:00:00 and its last at Sunday
    23:59:59 (DISPLAY_TIME_ZONE is UTC here), so the weeks' edges are crossed."""
    rows, visit_id = {}, first_id
    for rep_id, weeks in plan.items():
        for monday, (n, far) in weeks.items():
            start = datetime.combine(monday, time.min, tzinfo=UTC)
            for i in range(n):
                at = start + timedelta(seconds=i * (7 * 86400 - 1) // (n - 1))
                rows[visit_id] = {
                    "rep_id": rep_id, "resource_type": "lead", "resource_id": visit_id, "visited_at": at,
                    "created_at": at, "summary": "", "outcome_id": None, "latitude": 41.0, "longitude": -87.0,
                    "verification_status": status_of(i, far), "sequence": 1, "event_time": at, "deleted_at": None,
                }  # fmt: skip
                visit_id += 1
    with transaction.atomic():
        visits_upsert(rows=rows)
    return rows


def oracle(rows: dict[int, dict], *, reps: set[int], week: date) -> Counter:
    """Visits and statuses of `reps` in the week starting on `week`, counted here."""
    counted: Counter = Counter()
    for row in rows.values():
        day = row["visited_at"].date()
        if row["rep_id"] in reps and week <= day <= week + timedelta(days=6):
            counted["visits"] += 1
            counted[row["verification_status"]] += 1
    return counted


def manager_make(name: str, *, group: str, rep_id: int) -> User:
    user = user_make(name, group=group, email=f"{name}@example.com")
    SellLink.objects.create(user=user, rep_id=rep_id, via="admin")
    return user


@pytest.fixture
def team(db, settings) -> Team:
    settings.PRIVACY_NOTICE = NOTICE
    for rep_id, (name, boss) in REPS.items():
        Rep.objects.create(id=rep_id, name=name, reports_to=boss)
    rows = rows_make(PLAN)
    # The new high-risk flags: three of Nora's and one of Sam's in WEEK wait for a decision; one
    # decided, one of medium risk and one of LAST do not count.
    week_ids = sorted(i for i, r in rows.items() if r["visited_at"].date() >= WEEK and r["visited_at"].date() < NEXT)
    nora = [i for i in week_ids if rows[i]["rep_id"] == 11]
    sam = [i for i in week_ids if rows[i]["rep_id"] == 21]
    Visit.objects.filter(id__in=nora[:3] + sam[:1]).update(flagged=True, risk_tier="high", risk=90)
    Visit.objects.filter(id=nora[3]).update(flagged=True, risk_tier="high", risk=95, review_status="accept")
    Visit.objects.filter(id=nora[4]).update(flagged=True, risk_tier="medium", risk=50)
    last_nora = next(i for i, r in rows.items() if r["rep_id"] == 11 and r["visited_at"].date() < WEEK)
    Visit.objects.filter(id=last_nora).update(flagged=True, risk_tier="high", risk=99)
    return Team(
        north=manager_make("north", group="Managers", rep_id=10),
        south=manager_make("south", group="Managers", rep_id=20),
        director=manager_make("dana", group="Directors", rep_id=1),
        rows=rows,
    )


def mail_to(inbox, address: str) -> tuple[str, str]:
    """(text part, HTML part) of the one mail sent to `address`."""
    found = [m for m, (_, to) in zip(inbox.messages, inbox.envelopes, strict=True) if to == [address]]
    assert len(found) == 1, (address, inbox.envelopes)
    mail = found[0]
    text = mail.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")
    html = mail.get_body(preferencelist=("html",)).get_content().replace("\r\n", "\n")
    return text, html


def expected_figures(rows, reps: set[int]) -> dict[str, tuple[str, str]]:
    this, last = oracle(rows, reps=reps, week=WEEK), oracle(rows, reps=reps, week=LAST)
    return {
        "Visits": (str(this["visits"]), str(last["visits"])),
        "Verified": (percent(this["verified"] / this["visits"]), percent(last["verified"] / last["visits"])),
        "Too far": (
            percent(this["resource_location_too_far"] / this["visits"]),
            percent(last["resource_location_too_far"] / last["visits"]),
        ),
    }


# --- The digest ----------------------------------------------------------------------------


def test_each_manager_gets_only_their_own_reps_and_a_director_everyone(smtp, team):  # noqa: F811
    result = digests_send(week=WEEK)
    assert not result.failed and len(result.sent) == 3
    assert sorted(to for _, to in smtp.envelopes) == [
        ["dana@example.com"],
        ["north@example.com"],
        ["south@example.com"],
    ]
    for user, reps, others in (
        (team.north, NORTH, SOUTH),
        (team.south, SOUTH, NORTH),
        (team.director, NORTH | SOUTH, set()),
    ):
        text, html = mail_to(smtp, user.email)
        for label, (this, last) in expected_figures(team.rows, reps).items():
            assert re.search(rf"^{label} +{re.escape(this)} +last week +{re.escape(last)} ", text, re.M), (user, label)
            assert f"<td>{this}</td><td>{last}</td>" in html, (user, label)
        for rep_id in others:
            assert REPS[rep_id][0] not in text and REPS[rep_id][0] not in html, (user, rep_id)
        assert NOTICE in text and NOTICE in html
        assert "https://visits.example.com/account/settings/" in text
    north_text, _ = mail_to(smtp, team.north.email)
    # Ned moved most in the north: 3 of 30 -> 15 of 30.
    assert "- Ned North: 15 of 30 too far (50.0%), last week 3 of 30 (10.0%): +40.0 points" in north_text
    assert "New high-risk flags waiting for a decision: 3" in north_text
    south_text, _ = mail_to(smtp, team.south.email)
    assert "New high-risk flags waiting for a decision: 1" in south_text and "Sam South" in south_text
    dana_text, _ = mail_to(smtp, team.director.email)
    assert "New high-risk flags waiting for a decision: 4" in dana_text
    assert all("Week of 12 Jan 2026 to 18 Jan 2026" in s for s in smtp.subjects())
    assert set(MailSent.objects.values_list("username", "kind", "week", "ok", "error")) == {
        (name, MailKind.DIGEST, WEEK, True, "") for name in ("north", "south", "dana")
    }


def test_the_figures_are_this_week_against_last_week_as_counted_in_python(team):
    for user, reps in ((team.director, NORTH | SOUTH), (team.north, NORTH), (team.south, SOUTH)):
        digest = digest_build(user=user, week=WEEK)
        assert isinstance(digest, Digest)
        for counts, week in ((digest.this, WEEK), (digest.last, LAST)):
            expected = oracle(team.rows, reps=reps, week=week)
            assert (counts.visits, counts.verified, counts.resource_location_too_far, counts.location_unknown) == (
                expected["visits"], expected["verified"], expected["resource_location_too_far"],
                expected["location_unknown"],
            ), (user, week)  # fmt: skip
    movers = digest_build(user=team.director, week=WEEK).movers  # type: ignore[union-attr]
    assert [m.rep_id for m in movers][:3] == [21, 12, 22]  # Sam +80, Ned +40, Sue +15; Sam had 19 visits
    assert len({m.rep_id for m in movers}) == len(movers)


def test_a_scope_without_visits_that_week_gets_no_digest(smtp, team):  # noqa: F811
    Visit.objects.filter(rep_id__in=SOUTH, visited_at__gte=datetime.combine(WEEK, time.min, tzinfo=UTC)).update(
        deleted_at=AFTER_ALL
    )
    result = digests_send(week=WEEK)
    assert sorted(to[0] for _, to in smtp.envelopes) == ["dana@example.com", "north@example.com"]
    assert any("south's reps made no visits" in reason for reason in result.skipped), result.skipped
    assert not MailSent.objects.filter(username="south").exists()


def test_an_unlinked_manager_and_people_outside_the_groups_get_nothing(smtp, team, cast):  # noqa: F811
    user_make("lonely", group="Managers", email="lonely@example.com")
    user_make("reviewer2", group="Reviewers", email="rev@example.com")
    user_make("gone", group="Managers", email="gone@example.com", is_active=False)
    user_make("noaddress", group="Directors")
    digests_send(week=WEEK)
    assert sorted(to[0] for _, to in smtp.envelopes) == ["dana@example.com", "north@example.com", "south@example.com"]


def test_the_settings_page_turns_the_digest_off(smtp, team, client):  # noqa: F811
    client.force_login(team.north)
    settings_page = client.get("/account/settings/")
    assert settings_page.status_code == 200
    assert b'name="digest_enabled"' in settings_page.content and b"checked" in settings_page.content
    response = client.post("/account/settings/", {"alerts_enabled": "on"})
    assert response.status_code == 302
    saved = AccountSettings.objects.get(user=team.north)
    assert (saved.digest_enabled, saved.alerts_enabled) == (False, True)
    assert b'href="/account/settings/">Mail settings' in client.get("/account/settings/").content
    result = digests_send(week=WEEK)
    assert "north turned the digest off." in result.skipped
    assert "north@example.com" not in [to[0] for _, to in smtp.envelopes] and len(smtp.messages) == 2


def test_a_week_is_sent_once_however_often_it_runs(smtp, team):  # noqa: F811
    digests_send(week=WEEK)
    again = digests_send(week=WEEK)
    call_command("digests_send", "--week", "2026-01-18")
    assert len(smtp.messages) == 3 and again.sent == []
    assert MailSent.objects.filter(kind=MailKind.DIGEST).count() == 3
    # The database refuses a second digest row of a week, which is how two runs at once send one.
    with pytest.raises(IntegrityError), transaction.atomic():
        MailSent.objects.create(user=team.north, username="north", to="x@example.com", kind="digest", week=WEEK)
    digests_send(week=LAST)  # another week is another digest
    assert len(smtp.messages) == 6


def test_a_failed_send_is_recorded_as_a_sentence_and_the_next_run_sends_it(smtp, team, settings):  # noqa: F811
    settings.EMAIL_PORT = free_port()  # nothing listens there
    result = digests_send(week=WEEK, username="north")
    assert result.sent == [] and len(result.failed) == 1
    failed = MailSent.objects.get()
    assert not failed.ok and failed.error.startswith("The mail server did not take the mail to north@example.com: ")
    assert "ConnectionRefusedError" in failed.error and failed.error.endswith(".")
    settings.EMAIL_PORT = smtp.port
    with pytest.raises(CommandError, match="could not be sent"):
        settings.EMAIL_PORT = free_port()
        call_command("digests_send", "--week", "2026-01-12", "--user", "north")
    settings.EMAIL_PORT = smtp.port
    digests_send(week=WEEK, username="north")
    digests_send(week=WEEK, username="north")
    assert len(smtp.messages) == 1
    assert sorted(MailSent.objects.values_list("ok", flat=True)) == [False, False, True]


def test_a_dry_run_prints_the_mails_and_sends_and_records_nothing(smtp, team, capsys):  # noqa: F811
    call_command("digests_send", "--dry-run", "--week", "2026-01-14")
    out = capsys.readouterr().out
    assert smtp.messages == [] and not MailSent.objects.exists()
    assert "=== To: north@example.com" in out and "=== To: dana@example.com" in out
    assert "=== Subject: [visitsdash] Week of 12 Jan 2026 to 18 Jan 2026:" in out
    assert "- Ned North: 15 of 30 too far" in out and NOTICE in out
    digests_send(week=WEEK)  # the dry run claimed nothing
    assert len(smtp.messages) == 3


def test_the_commands_options_and_their_errors(smtp, team, cast, capsys):  # noqa: F811
    with pytest.raises(CommandError, match="There is no user called 'nobody'"):
        call_command("digests_send", "--user", "nobody", "--week", "2026-01-12")
    with pytest.raises(CommandError, match="outsider is in neither Managers nor Directors"):
        call_command("digests_send", "--user", "outsider", "--week", "2026-01-12")
    with pytest.raises(CommandError, match=r"--week wants a day as YYYY-MM-DD, such as 2026-01-12; '12/01/2026'"):
        call_command("digests_send", "--week", "12/01/2026")
    with pytest.raises(CommandError, match="has not ended yet"):
        call_command("digests_send", "--week", (datetime.now(UTC) + timedelta(days=1)).date().isoformat())
    assert smtp.messages == []
    call_command("digests_send", "--user", "north", "--week", "2026-01-18")  # a Sunday: the week of the 12th
    assert [to for _, to in smtp.envelopes] == [["north@example.com"]]
    assert "Week of 12 Jan 2026 to 18 Jan 2026" in smtp.subjects()[0]
    assert week_parse("2026-01-12", now=AFTER_ALL) == week_parse("2026-01-18", now=AFTER_ALL) == WEEK
    with pytest.raises(ValueError, match="latest week that has is 12 Jan 2026 to 18 Jan 2026"):
        week_parse("2026-01-19", now=datetime(2026, 1, 25, 23, 0, tzinfo=UTC))


def test_hostile_rep_names_are_escaped_in_the_html_part_and_one_line_in_the_text(smtp, team):  # noqa: F811
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;\nSubject: injected'
    Rep.objects.filter(id=12).update(name=hostile)
    Rep.objects.filter(id=11).update(name="<b>Nora</b>")
    digests_send(week=WEEK, username="north")
    text, html = mail_to(smtp, "north@example.com")
    assert "<script>" not in html and "<img" not in html and "<b>Nora</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;" in html
    assert "&lt;b&gt;Nora&lt;/b&gt;" in html
    assert '- <script>alert("x")</script><img src=x onerror=alert(1)>&amp; Subject: injected: 15 of 30' in text
    assert "injected" not in smtp.subjects()[0]


# --- The schedules -------------------------------------------------------------------------


def test_the_schedules_run_at_local_hours_across_a_change_of_clocks(settings, monkeypatch):
    # As deployed: django-q2's TIME_ZONE is Django's, which settings.py sets to DISPLAY_TIME_ZONE.
    settings.DISPLAY_TIME_ZONE = settings.TIME_ZONE = "Europe/Paris"
    monkeypatch.setattr(Conf, "TIME_ZONE", "Europe/Paris")
    now = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # a Friday; clocks go forward on Sunday the 29th
    schedules_setup(now=now)
    digests = Schedule.objects.get(name=DIGESTS_SCHEDULE_NAME)
    assert digests.schedule_type == Schedule.WEEKLY and digests.func == "visits.tasks.digests_task"
    assert digests.next_run == datetime(2026, 3, 23, 7, 0, tzinfo=UTC)  # Monday 08:00 CET
    following = digests.calculate_next_run(digests.next_run)
    assert following == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # Monday 08:00 CEST
    alerts = Schedule.objects.get(name=RATE_ALERTS_SCHEDULE_NAME)
    assert alerts.schedule_type == Schedule.DAILY and alerts.func == "visits.tasks.rate_alerts_task"
    assert alerts.next_run == datetime(2026, 3, 21, 7, 30, tzinfo=UTC)  # 08:30 CET: today's has passed
    assert alerts.calculate_next_run(datetime(2026, 3, 28, 7, 30, tzinfo=UTC)) == datetime(
        2026, 3, 29, 6, 30, tzinfo=UTC
    )
    # Run again later that week: nothing moves (a run is never skipped), nothing doubles.
    schedules_setup(now=now + timedelta(days=2, hours=3))
    assert Schedule.objects.get(name=DIGESTS_SCHEDULE_NAME).next_run == datetime(2026, 3, 23, 7, 0, tzinfo=UTC)
    assert Schedule.objects.filter(name__in=[DIGESTS_SCHEDULE_NAME, RATE_ALERTS_SCHEDULE_NAME]).count() == 2
    # A new DISPLAY_TIME_ZONE moves the runs to its 08:00.
    settings.DISPLAY_TIME_ZONE = "America/Chicago"
    schedules_setup(now=now)
    assert Schedule.objects.get(name=DIGESTS_SCHEDULE_NAME).next_run == datetime(2026, 3, 23, 13, 0, tzinfo=UTC)


def test_next_run_at_is_the_next_local_moment_strictly_after_now(settings):
    settings.DISPLAY_TIME_ZONE = "Europe/Paris"
    monday_eight = datetime(2026, 1, 12, 7, 0, tzinfo=UTC)
    assert next_run_at(weekday=0, at=time(8), now=monday_eight - timedelta(seconds=1)) == monday_eight
    assert next_run_at(weekday=0, at=time(8), now=monday_eight) == monday_eight + timedelta(days=7)


# --- The rate alerts -----------------------------------------------------------------------


def test_a_rise_mails_the_managers_up_the_chain_once_per_crossing(smtp, team):  # noqa: F811
    result = rate_alerts_send(week=WEEK)
    # Ned (+40 points, 30 visits each week) alerts; Sam (19 visits the week before) and Sue (exactly
    # 15 points) do not.
    assert list(RateAlert.objects.values_list("rep_id", "week", "visits_before", "far_before", "visits_after",
                                              "far_after")) == [(12, WEEK, 30, 3, 30, 15)]  # fmt: skip
    assert sorted(to[0] for _, to in smtp.envelopes) == ["dana@example.com", "north@example.com"]
    assert len(result.sent) == 2
    text = smtp.messages[0].get_body(preferencelist=("plain",)).get_content()
    assert "The too-far rate of Ned North rose by +40.0 points" in text
    assert "15 of 30 visits too far (50.0%)" in text and "3 of 30 visits too far (10.0%)" in text
    assert "https://visits.example.com/reports/reps/12/?start=2026-01-05&end=2026-01-18" in text
    assert NOTICE in " ".join(text.split())
    assert "Ned North" not in smtp.subjects()[0]
    rate_alerts_send(week=WEEK)  # the daily run again: nothing new
    rate_alerts_send(week=NEXT)  # the rate stays at 50%: no new crossing
    assert len(smtp.messages) == 2 and RateAlert.objects.count() == 1
    assert MailSent.objects.filter(kind=MailKind.RATE_ALERT, ok=True).count() == 2


def test_the_rule_wants_20_visits_each_week_and_more_than_the_points(settings):
    settings.ALERT_RATE_POINTS = 15

    def rise(before: tuple[int, int], after: tuple[int, int]) -> bool:
        counts = [Counts(visits=v, resource_location_too_far=f) for v, f in (before, after)]
        return rate_rise(before=counts[0], after=counts[1], threshold=settings.ALERT_RATE_POINTS)

    assert rise((20, 2), (20, 6))  # +20
    assert not rise((20, 2), (20, 5))  # +15: not more than 15
    assert rise((20, 2), (40, 11))  # +17.5
    assert not rise((19, 0), (40, 40)) and not rise((40, 0), (19, 19))
    assert not rise((20, 10), (20, 2))  # a fall


def test_alerts_respect_the_setting_and_the_scope(smtp, team, settings):  # noqa: F811
    AccountSettings.objects.create(user=team.director, alerts_enabled=False)
    settings.ALERT_RATE_POINTS = 14  # Sue's +15 now crosses too
    rate_alerts_send(week=WEEK)
    assert sorted(RateAlert.objects.values_list("rep_id", flat=True)) == [12, 22]
    assert sorted(to[0] for _, to in smtp.envelopes) == ["north@example.com", "south@example.com"]
    south = next(m for m, (_, to) in zip(smtp.messages, smtp.envelopes, strict=True) if to == ["south@example.com"])
    assert "Sue South" in south.get_body(preferencelist=("plain",)).get_content()


def test_a_failed_alert_is_recorded_and_retried_by_the_next_run(smtp, team, settings):  # noqa: F811
    settings.EMAIL_PORT = free_port()
    result = rate_alerts_send(week=WEEK)
    assert len(result.failed) == 2 and smtp.messages == []
    assert all(re.match(r"The mail server did not take the mail to \S+: ", e) for e in result.failed)
    settings.EMAIL_PORT = smtp.port
    rate_alerts_send(week=WEEK)
    rate_alerts_send(week=WEEK)
    assert len(smtp.messages) == 2
    assert Counter(MailSent.objects.values_list("ok", flat=True)) == Counter({False: 2, True: 2})


def test_the_chain_up_ends_at_a_cycle_and_at_an_unknown_user():
    assert chain_up(3, managers={3: 2, 2: 1, 1: None}) == [2, 1]
    assert chain_up(3, managers={3: 2, 2: 1, 1: 3}) == [2, 1]
    assert chain_up(3, managers={3: 3}) == []
    assert chain_up(3, managers={3: 7}) == [7]
