"""The review queue: who may read and decide, decisions that cannot be altered, the queue's
filters, the flag columns of the reports and exports, and the admin's queue."""

import csv
import io

import pytest
from django.db import DatabaseError, connection, transaction

from visits.ingest.sync import streams_sync
from visits.models import Decision, Flag, Visit
from visits.review.flags import flags_refresh
from visits.review.queue import rejected_ids_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def flagged(serve, full_team):
    serve(full_team)
    streams_sync()
    flags_refresh()
    assert Flag.objects.exists()
    return full_team


def flagged_ids(n: int) -> list[int]:
    return list(
        Flag.objects.filter(visit__deleted_at__isnull=True)
        .order_by("visit_id")
        .values_list("visit_id", flat=True)
        .distinct()[:n]
    )


@pytest.mark.slow  # syncs the full team
def test_who_may_read_and_who_may_decide(client, flagged, cast):
    visit_id = flagged_ids(1)[0]
    post = {"visit": [visit_id], "kind": "reject", "note": "seen"}
    assert client.get("/review/").status_code == 302
    assert client.post("/review/decide/", post).status_code == 302  # to the login page
    client.force_login(cast.outsider)
    assert client.get("/review/").status_code == 403
    assert client.post("/review/decide/", post).status_code == 403
    client.force_login(cast.manager)
    page = client.get("/review/").content.decode()
    assert (
        "Flagged visits" in page
        and "Record the decision" not in page
        and "deciding on a visit is for Reviewers" in page
    )
    assert client.post("/review/decide/", post).status_code == 403
    assert not Decision.objects.exists()
    reviewer = cast.reviewer
    client.force_login(reviewer)
    assert "Record the decision" in client.get("/review/").content.decode()
    response = client.post("/review/decide/", {**post, "next": "/review/?review=all"})
    assert response.status_code == 302 and response["Location"] == "/review/?review=all"
    decision = Decision.objects.get()
    assert (decision.visit_id, decision.kind, decision.note, decision.decided_by) == (
        visit_id,
        "reject",
        "seen",
        reviewer,
    )
    assert client.post("/review/decide/", {**post, "next": "https://evil.example/"})["Location"] == "/review/"


@pytest.mark.slow  # syncs the full team
def test_decisions_are_never_edited_or_deleted(client, flagged, cast):
    reviewer = cast.reviewer
    visit_id = flagged_ids(1)[0]
    first = Decision.objects.create(visit_id=visit_id, kind="follow_up", note="ask", decided_by=reviewer)
    first.note = "changed"
    with pytest.raises(PermissionError):
        first.save()
    with pytest.raises(PermissionError):
        first.delete()
    with pytest.raises(PermissionError):
        Decision.objects.filter(id=first.id).update(note="changed")
    with pytest.raises(PermissionError):
        Decision.objects.all().delete()
    statements = ["UPDATE visits_decision SET note = 'changed'", "DELETE FROM visits_decision",
                  f"DELETE FROM visits_decision WHERE id = {first.id}"]  # fmt: skip
    if connection.vendor == "postgresql":
        statements.append("TRUNCATE visits_decision")
    for statement in statements:  # the database refuses too, whatever SQL asks
        with pytest.raises(DatabaseError, match="never"), transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":  # the test's open transaction holds deferred checks,
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # which TRUNCATE would refuse first
            cursor.execute(statement)
    second = Decision.objects.create(visit_id=visit_id, kind="accept", note="fine", decided_by=reviewer)
    assert list(Decision.objects.filter(visit_id=visit_id)) == [second, first]  # the newest supersedes
    assert Decision.objects.get(id=first.id).note == "ask"
    client.force_login(cast.manager)
    page = client.get(f"/visits/{visit_id}/").content.decode()
    assert page.index("Accepted: legitimate") < page.index("Follow up") and "(superseded)" in page


def test_migrate_puts_the_decision_triggers_back(db):
    from django.core.management import call_command

    from visits.review.immutable import decision_triggers_drop, decision_triggers_installed, names

    wanted = set(names(vendor=connection.vendor))
    assert decision_triggers_installed() == wanted
    decision_triggers_drop()  # as a SQLite table rebuild would
    assert not decision_triggers_installed()
    call_command("migrate", verbosity=0)
    assert decision_triggers_installed() == wanted


@pytest.mark.slow  # syncs the full team
def test_the_queue_filters_and_clears(client, flagged, cast):
    reviewer = cast.reviewer
    client.force_login(reviewer)
    awaiting = client.get("/review/")
    total = awaiting.context["total"]
    assert total == Visit.objects.filter(deleted_at__isnull=True, flags__isnull=False).distinct().count()
    travel = client.get("/review/?rule=impossible_travel").context["total"]
    assert (
        travel == Visit.objects.filter(deleted_at__isnull=True, flags__rule="impossible_travel").distinct().count() > 0
    )
    chosen = flagged_ids(3)
    client.post("/review/decide/", {"visit": chosen, "kind": "accept", "reason": "gps_noise", "note": ""})
    assert client.get("/review/").context["total"] == total - 3
    assert client.get("/review/?review=accept").context["total"] == 3
    for bad in ("review=maybe", "rule=teleport", "start=soon"):
        response = client.get(f"/review/?{bad}")
        assert response.status_code == 400 and bad.split("=")[0] in response.content.decode()
    assert client.post("/review/decide/", {"visit": chosen, "kind": "shrug"}).status_code == 400
    assert client.post("/review/decide/", {"kind": "accept"}).status_code == 400
    # Clearing the queue: every flagged visit decided, the page says so.
    everything = list(
        Visit.objects.filter(deleted_at__isnull=True, flags__isnull=False).values_list("id", flat=True).distinct()
    )
    for start in range(0, len(everything), 500):  # a page shows 20; POSTs stay under Django's field limit
        client.post("/review/decide/", {"visit": everything[start : start + 500], "kind": "follow_up"})
    assert "the queue is clear" in client.get("/review/").content.decode()


def csv_of(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


@pytest.mark.slow  # syncs the full team
def test_reports_and_exports_carry_the_flags(client, flagged, cast):
    reviewer = cast.reviewer
    client.force_login(reviewer)
    rejected = flagged_ids(4)
    client.post("/review/decide/", {"visit": rejected[:2], "kind": "accept", "reason": "gps_noise"})
    client.post("/review/decide/", {"visit": rejected, "kind": "reject"})  # two of them change their mind
    client.post(
        "/review/decide/", {"visit": rejected[3:], "kind": "accept", "reason": "explained"}
    )  # and one back again
    assert rejected_ids_of(visit_ids=rejected) == set(rejected[:3])
    reps = csv_of(client.get("/reports/reps.csv"))
    # before the distances (median, p90, far visits) and the team and manager
    assert list(reps[0])[-7:-5] == ["flagged", "rejected"]
    live = Visit.objects.filter(deleted_at__isnull=True)
    for row in reps:
        rep_id = int(row["rep_id"])
        assert int(row["flagged"]) == live.filter(rep_id=rep_id, flags__isnull=False).distinct().count()
        assert int(row["rejected"]) == live.filter(rep_id=rep_id, id__in=rejected[:3]).count()
    rows = csv_of(client.get("/visits.csv"))
    assert list(rows[0])[-7:] == [
        "flags",
        "review_status",
        "source",
        "resource_address",
        "customer_distance_m",
        "customer_location",
        "position_removed",
    ]
    for row in rows:
        visit_id = int(row["id"])
        assert row["flags"] == ";".join(sorted(Flag.objects.filter(visit_id=visit_id).values_list("rule", flat=True)))
        want = "reject" if visit_id in rejected[:3] else ("accept" if visit_id == rejected[3] else "")
        assert row["review_status"] == want
    page = client.get("/reports/reps/?sort=-flagged").content.decode()
    assert "Flagged" in page and "Rejected" in page


@pytest.mark.slow  # syncs the full team
def test_the_admin_queue_decides_in_bulk(admin_client, flagged):
    assert admin_client.get("/admin/visits/flaggedvisit/").status_code == 200
    assert admin_client.get("/admin/visits/flaggedvisit/?review=awaiting&rule=late_logging").status_code == 200
    rep_id = Flag.objects.first().visit.rep_id
    listed = admin_client.get(f"/admin/visits/flaggedvisit/?rep__id__exact={rep_id}&review=awaiting")
    assert (
        listed.context["cl"].result_count
        == Visit.objects.filter(rep_id=rep_id, deleted_at__isnull=True, flags__isnull=False).distinct().count()
    )
    chosen = flagged_ids(2)
    response = admin_client.post(
        "/admin/visits/flaggedvisit/", {"action": "decide_reject", "_selected_action": chosen}, follow=True
    )
    assert response.status_code == 200 and "recorded for 2 visits" in response.content.decode()
    assert set(Decision.objects.values_list("visit_id", "kind")) == {(v, "reject") for v in chosen}
    decision = Decision.objects.first()
    assert admin_client.post(f"/admin/visits/decision/{decision.id}/delete/", {"post": "yes"}).status_code == 403
    assert Decision.objects.count() == 2


@pytest.mark.slow  # syncs the full team
def test_the_rep_page_sums_up_the_risk(client, flagged, cast):
    client.force_login(cast.reviewer)
    rep_id = Flag.objects.filter(rule="impossible_travel").first().visit.rep_id
    flagged_visits = list(Visit.objects.filter(rep_id=rep_id, deleted_at__isnull=True, flags__isnull=False).distinct())
    client.post("/review/decide/", {"visit": [flagged_visits[0].id], "kind": "reject"})
    page = client.get(f"/reports/reps/{rep_id}/")
    risk = page.context["risk"]
    assert risk.flagged == len(flagged_visits) and risk.rejected == 1 and risk.follow_up == 0
    travel = Visit.objects.filter(rep_id=rep_id, deleted_at__isnull=True, flags__rule="impossible_travel").count()
    assert ("Impossible travel", travel) in risk.by_rule
    assert sum(f for _, _, f in risk.weeks) <= risk.flagged and "rejected after review" in page.content.decode()
