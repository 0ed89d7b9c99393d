"""Decisions of issue 13: an accept's reasons (and "other"'s note), the Lead reviewers' bulk accept of
a filter's low tier, the queue as CSV in its order, and the rules' precision, on hand-made visits
checked against counts made another way (the flags table, Python)."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction

from tests.conftest import user_make
from visits.ingest.pages import visits_upsert
from visits.models import RULE_BITS, Decision, Flag, FlagRule, Visit
from visits.review import queue
from visits.review.flags import flags_rebuild

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HOSTILE = '=HYPERLINK("http://evil.example","click")'
# id: (rep, hours after AT, Sell's status, risk, tier, deleted in Sell)
VISITS = {
    5101: (51, 0, "resource_location_too_far", 10, "low", False),
    5102: (51, 3, "location_unknown", 10, "low", False),
    5103: (51, 6, "resource_location_too_far", 90, "high", False),
    5104: (51, 9, "resource_location_too_far", 5, "low", False),  # rejected before
    5105: (51, 12, "verified", 0, "", False),  # not flagged
    5106: (51, 15, "resource_location_too_far", 10, "low", True),  # deleted in Sell
    5107: (51, 18, "location_services_disabled", 50, "medium", False),
    5201: (52, 3, "resource_location_too_far", 10, "low", False),  # ties with 5102 on risk and time
    5202: (52, 7, "location_unknown", 15, "low", False),
    5203: (52, 11, "resource_location_too_far", 60, "medium", False),
}


def row(visit_id: int) -> dict:
    rep, hours, status, _, _, deleted = VISITS[visit_id]
    at = AT + timedelta(hours=hours)
    return {
        "rep_id": rep, "resource_type": "lead", "resource_id": visit_id, "visited_at": at, "created_at": at,
        "summary": "", "outcome_id": None, "latitude": 41.88 + visit_id % 100 / 1000, "longitude": -87.63,
        "verification_status": status, "sequence": 1, "event_time": at, "deleted_at": at if deleted else None,
    }  # fmt: skip


@pytest.fixture
def world(cast):
    from visits.models import Rep

    Rep.objects.create(id=51, name=HOSTILE)
    Rep.objects.create(id=52, name="Lopez")
    with transaction.atomic():
        visits_upsert(rows={visit_id: row(visit_id) for visit_id in VISITS})
    flags_rebuild()
    queue.decisions_record(visit_ids=[5104], kind="reject", note="no", user=cast.reviewer)
    risks_set()
    return cast


def risks_set() -> None:
    """The hand-made risks of VISITS, set after any rejection (which rescores the rep's visits
    from their flags, review/stored.risk_refresh)."""
    for visit_id, (_, _, _, risk, tier, _) in VISITS.items():
        Visit.objects.filter(id=visit_id).update(risk=risk, risk_tier=tier)


@pytest.fixture
def lead(db):
    return user_make("lead", group="Lead reviewers")


def csv_rows(response) -> list[list[str]]:
    assert response.status_code == 200, response
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


# --- An accept's reason ------------------------------------------------------------------------


def test_an_accept_needs_a_reason_and_other_needs_a_note(client, world):
    client.force_login(world.reviewer)
    cases = [
        ({"kind": "accept"}, "reason: an accept needs a reason"),
        ({"kind": "accept", "reason": "other", "note": "  "}, "note: an accept for another reason needs a note"),
        ({"kind": "accept", "reason": "sunspots"}, "reason: sunspots is not one of gps_noise"),
    ]
    for post, problem in cases:
        response = client.post("/review/decide/", {"visit": [5101], **post})
        assert response.status_code == 400 and problem in response.content.decode(), post
    assert list(Decision.objects.values_list("visit_id", flat=True)) == [5104]
    with pytest.raises(ValueError, match="an accept needs a reason"):
        queue.decisions_record(visit_ids=[5101], kind="accept", note="", user=world.reviewer)
    with pytest.raises(ValueError, match="only an accept takes a reason"):
        queue.decisions_record(visit_ids=[5101], kind="reject", reason="gps_noise", note="", user=world.reviewer)
    with pytest.raises(IntegrityError), transaction.atomic():  # and the database refuses a reject with a reason
        Decision.objects.create(visit_id=5101, kind="reject", reason="gps_noise", decided_by=world.reviewer)


def test_reject_and_follow_up_need_no_reason_and_keep_none(client, world):
    client.force_login(world.reviewer)
    assert client.post("/review/decide/", {"visit": [5101], "kind": "reject"}).status_code == 302
    # a reason left picked (no script hid it) is not kept on a follow-up
    post = {"visit": [5102], "kind": "follow_up", "reason": "gps_noise", "note": "ask the rep"}
    assert client.post("/review/decide/", post).status_code == 302
    assert set(Decision.objects.exclude(visit_id=5104).values_list("visit_id", "kind", "reason", "note")) == {
        (5101, "reject", "", ""),
        (5102, "follow_up", "", "ask the rep"),
    }


def test_the_reason_is_stored_and_shown_wherever_decisions_are(client, admin_client, world):
    client.force_login(world.reviewer)
    response = client.post("/review/decide/", {"visit": [5101], "kind": "accept", "reason": "gps_noise"})
    assert response.status_code == 302
    post = {"visit": [5201], "kind": "accept", "reason": "other", "note": "The customer moved"}
    client.post("/review/decide/", post)
    assert set(Decision.objects.filter(kind="accept").values_list("visit_id", "reason", "note")) == {
        (5101, "gps_noise", ""),
        (5201, "other", "The customer moved"),
    }
    page = client.get("/visits/5101/").content.decode()
    assert 'Accepted: legitimate</span> <span class="reason">(GPS noise)</span> by reviewer' in page
    assert 'name="reason" value="address_wrong"' in page  # the visit's own decide form offers the reasons
    queue_page = client.get("/review/?review=accept").content.decode()
    assert "Last decision: Accepted: legitimate (GPS noise) by reviewer" in queue_page
    assert (
        "Accepted: legitimate (Other (see the note)) by reviewer" in queue_page and "The customer moved" in queue_page
    )
    assert queue_page.count('name="reason" value="explained"') == 1  # the queue's decide fieldset
    listed = admin_client.get("/admin/visits/decision/").content.decode()
    assert "GPS noise" in listed and "Other (see the note)" in listed
    assert "GPS noise" in admin_client.get("/admin/visits/flaggedvisit/5101/change/").content.decode()
    assert admin_client.get("/admin/visits/decision/?reason=gps_noise").context["cl"].result_count == 1


def test_the_admin_accepts_in_bulk_with_reason_other_and_its_note(admin_client, world):
    response = admin_client.post(
        "/admin/visits/flaggedvisit/", {"action": "decide_accept", "_selected_action": [5101, 5203]}, follow=True
    )
    assert "recorded for 2 visits" in response.content.decode()
    assert set(Decision.objects.filter(kind="accept").values_list("visit_id", "reason", "note")) == {
        (5101, "other", "Decided in bulk in the admin."),
        (5203, "other", "Decided in bulk in the admin."),
    }


# --- The bulk accept of a filter's low tier ------------------------------------------------------


def low_awaiting(**narrow) -> set[int]:
    """The oracle: from VISITS and the decisions, not from the queue's code."""
    decided = set(Decision.objects.values_list("visit_id", flat=True))
    flagged = set(Flag.objects.values_list("visit_id", flat=True))
    return {
        v for v, (rep, _, status, _, tier, deleted) in VISITS.items()
        if tier == "low" and not deleted and v not in decided and v in flagged
        and narrow.get("rep", rep) == rep and narrow.get("status", status) == status
    }  # fmt: skip


def test_only_lead_reviewers_may_accept_a_filters_low_tier(client, world, lead):
    post = {"reason": "gps_noise", "expected": "3"}
    for user in (world.manager, world.reviewer):
        client.force_login(user)
        assert client.get("/review/accept-low/").status_code == 403
        response = client.post("/review/accept-low/", post)
        assert response.status_code == 403
        assert "Accept all low-tier" not in client.get("/review/?review=all").content.decode()
    assert client.post("/review/accept-low/", post).content.decode().count("Only Lead reviewers") == 1
    assert Decision.objects.count() == 1
    client.force_login(lead)
    queue_page = client.get("/review/?review=all&rep=51").content.decode()
    assert 'href="/review/accept-low/?review=all&amp;rep=51"' in queue_page


def test_the_bulk_accept_confirms_then_accepts_only_low_tier_awaiting_visits_in_filter(
    client, world, lead, monkeypatch
):
    monkeypatch.setattr(queue, "BULK_CHUNK", 1)  # every visit its own chunk: the loop is exercised
    client.force_login(lead)
    expected = low_awaiting(rep=51)
    assert expected == {5101, 5102}
    query = "?rep=51&tier=high&review=accept"  # the tier and review filters do not change what is accepted
    page = client.get("/review/accept-low/" + query)
    assert "Accept 2 low-tier visits awaiting a decision for these filters?" in page.content.decode()
    assert page.context["count"] == 2
    other = "note: an accept for another reason needs a note"
    for post, problem in (
        ({"expected": "2"}, "reason: choose a reason"),
        ({"expected": "2", "reason": "other"}, other),
    ):
        response = client.post("/review/accept-low/" + query, post)
        assert response.status_code == 400 and problem in response.content.decode()
    stale = client.post("/review/accept-low/" + query, {"expected": "7", "reason": "gps_noise"})
    assert stale.status_code == 200 and "The count changed" in stale.content.decode()
    assert Decision.objects.count() == 1
    response = client.post("/review/accept-low/" + query, {"expected": "2", "reason": "explained", "note": "Rounds"})
    assert response.status_code == 302 and response["Location"] == "/review/" + query
    accepted = set(Decision.objects.filter(kind="accept").values_list("visit_id", flat=True))
    assert accepted == expected
    assert set(Decision.objects.filter(kind="accept").values_list("reason", "note", "decided_by")) == {
        ("explained", "Rounds", lead.id)
    }
    assert set(Visit.objects.filter(review_status="accept").values_list("id", flat=True)) == expected
    message = client.get("/review/").content.decode()
    assert "Accepted (Explained by the rep): recorded for 2 low-tier visits." in message
    # then the rest, by a rule filter: only Sell's location_unknown among the low tier still awaiting
    remaining = low_awaiting(status="location_unknown")
    assert remaining == {5202}
    page = client.get("/review/accept-low/?rule=location_unknown")
    assert page.context["count"] == 1 and "Accept 1 low-tier visit awaiting" in page.content.decode()
    client.post("/review/accept-low/?rule=location_unknown", {"expected": "1", "reason": "gps_noise"})
    assert set(Decision.objects.filter(kind="accept").values_list("visit_id", flat=True)) == expected | remaining
    assert low_awaiting() == {5201}  # left: the one low-tier visit not in either filter
    assert Visit.objects.get(id=5104).review_status == "reject" and Visit.objects.get(id=5106).review_status is None
    client.post("/review/accept-low/", {"expected": "1", "reason": "gps_noise"})
    assert low_awaiting() == set() and "No low-tier visit awaits" in client.get("/review/accept-low/").content.decode()


def test_a_bad_filter_is_a_400_for_the_bulk_accept(client, world, lead):
    client.force_login(lead)
    for bad in ("tier=lowest", "rule=teleport", "start=soon"):
        response = client.get(f"/review/accept-low/?{bad}")
        assert response.status_code == 400 and bad.split("=")[0] in response.content.decode()


# --- /review.csv ---------------------------------------------------------------------------------

HEADER = ["visit_id", "visited_at", "rep_id", "rep_name", "risk", "tier", "flags", "review_status"]


def flags_text(visit_id: int) -> str:
    return ";".join(sorted(Flag.objects.filter(visit_id=visit_id).values_list("rule", flat=True)))


def test_review_csv_is_the_queue_in_its_order_with_its_filters(client, world):
    client.force_login(world.manager)
    rows = csv_rows(client.get("/review.csv?review=all"))
    assert rows[0] == HEADER
    live_flagged = [v for v, spec in VISITS.items() if spec[2] != "verified" and not spec[5]]

    def ordered(ids, key):
        return [str(v) for v in sorted(ids, key=key)]

    def when(v):
        return AT + timedelta(hours=VISITS[v][1])

    by_risk = ordered(live_flagged, key=lambda v: (-VISITS[v][3], -when(v).timestamp(), -v))
    assert [r[0] for r in rows[1:]] == by_risk
    assert by_risk.index("5201") == by_risk.index("5102") - 1  # same risk and time: the higher id first
    newest = csv_rows(client.get("/review.csv?review=all&sort=newest"))
    assert [r[0] for r in newest[1:]] == ordered(live_flagged, key=lambda v: (-when(v).timestamp(), -v))
    oldest = csv_rows(client.get("/review.csv?review=all&sort=oldest"))
    assert [r[0] for r in oldest[1:]] == ordered(live_flagged, key=lambda v: (when(v).timestamp(), v))
    cells = {r[0]: r for r in rows[1:]}
    for visit_id in live_flagged:
        rep, hours, _, risk, tier, _ = VISITS[visit_id]
        status = "reject" if visit_id == 5104 else "awaiting"
        name = "'" + HOSTILE if rep == 51 else "Lopez"  # the formula escaped
        want = [str(visit_id), f"{when(visit_id):%Y-%m-%dT%H:%M:%SZ}", str(rep), name, str(risk), tier,
                flags_text(visit_id), status]  # fmt: skip
        assert cells[str(visit_id)] == want
    bits = Visit.objects.get(id=5101).flag_rules
    assert cells["5101"][6] == ";".join(sorted(r for r, b in RULE_BITS.items() if bits & b)) != ""
    awaiting = csv_rows(client.get("/review.csv"))  # the queue's default: awaiting a decision
    assert [r[0] for r in awaiting[1:]] == [v for v in by_risk if v != "5104"]
    low = csv_rows(client.get("/review.csv?tier=low&rep=52&sort=oldest"))
    assert [r[0] for r in low[1:]] == ["5201", "5202"]
    travel = csv_rows(client.get("/review.csv?review=all&rule=location_unknown"))
    assert [r[0] for r in travel[1:]] == [str(v) for v in sorted(Flag.objects.filter(
        rule="location_unknown", visit__deleted_at__isnull=True).values_list("visit_id", flat=True),
        key=lambda v: (-VISITS[v][3], -when(v).timestamp(), -v))]  # fmt: skip
    assert csv_rows(client.get("/review.csv?review=reject"))[1:] == [cells["5104"]]
    for bad in ("sort=sideways", "tier=extreme", "review=maybe", "rep=99"):
        response = client.get(f"/review.csv?{bad}")
        assert response.status_code == 400 and bad.split("=")[0] in response.content.decode()


# --- /review/rules/ ------------------------------------------------------------------------------


def direct_counts(*, rep: int | None = None, tiers: list[str] | None = None) -> dict[str, list[int]]:
    """Per rule: [flagged, decided, accepted, rejected, follow_up], from the flags table and the
    latest decisions read one visit at a time."""
    found = {}
    for rule in FlagRule.values:
        visits = Visit.objects.filter(deleted_at__isnull=True, flags__rule=rule)
        if rep:
            visits = visits.filter(rep_id=rep)
        if tiers:
            visits = visits.filter(risk_tier__in=tiers)
        latest = [Decision.objects.filter(visit_id=v.id).order_by("-decided_at", "-id").first() for v in visits]
        kinds = [d.kind for d in latest if d]
        found[rule] = [len(latest), len(kinds), kinds.count("accept"), kinds.count("reject"), kinds.count("follow_up")]
    return found


def test_the_rules_page_counts_as_a_direct_count_does(client, world):
    reviewer = world.reviewer
    queue.decisions_record(visit_ids=[5101, 5203], kind="accept", reason="gps_noise", note="", user=reviewer)
    queue.decisions_record(visit_ids=[5102], kind="follow_up", note="", user=reviewer)
    queue.decisions_record(visit_ids=[5102, 5107], kind="reject", note="", user=reviewer)  # 5102 decided twice
    risks_set()
    client.force_login(world.manager)
    for query, narrow in (("", {}), ("?rep=51", {"rep": 51}), ("?tier=low&tier=medium", {"tiers": ["low", "medium"]})):
        response = client.get("/review/rules/" + query)
        assert response.status_code == 200
        counts = response.context["counts"]
        got = {r.name: [r.flagged, r.decided, r.accepted, r.rejected, r.follow_up] for r in counts.rules}
        assert got == direct_counts(**narrow), query
        assert [r.name for r in counts.rules] == FlagRule.values  # every rule, flagging or not
        body = csv_rows(client.get("/review/rules.csv" + query))
        assert body[0] == ["rule", "flagged", "decided", "accepted", "rejected", "follow_up", "precision", "threshold"]
        assert {r[0]: [int(n) for n in r[1:6]] for r in body[1:]} == got
    too_far = next(
        r for r in client.get("/review/rules/").context["counts"].rules if r.name == "resource_location_too_far"
    )
    assert (too_far.accepted, too_far.rejected, f"{too_far.precision:.4f}") == (2, 1, "0.3333")
    page = client.get("/review/rules/").content.decode()
    assert "33.3%" in page and "Sell&#x27;s own verification status" in page and "km/h" in page
    tiers = {r.name: (r.flagged, r.accepted) for r in client.get("/review/rules/").context["counts"].tiers}
    assert tiers == {"high": (1, 0), "medium": (2, 1), "low": (5, 1)}
    empty = client.get("/review/rules/?rep=52&start=2026-04-01").content.decode()
    assert "nothing to measure the rules by" in empty
    assert client.get("/review/rules/?tier=extreme").status_code == 400
