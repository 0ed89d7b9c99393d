"""The admin's visit lists at scale (visits/admin.py): live visits by default, a capped count that
says so, fixed filter choices, sorting only on indexed columns; the review state filter reads the
visit's own review_status."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from visits.admin import CappedPaginator
from visits.ingest.pages import visits_upsert
from visits.models import Decision, Rep, Visit
from visits.review.flags import flags_rebuild
from visits.review.queue import decisions_record

pytestmark = pytest.mark.django_db
AT = datetime(2026, 9, 3, 9, 0, tzinfo=UTC)


def visits_make(count: int) -> list[int]:
    Rep.objects.create(id=5, name="Ana")
    rows = {
        100 + i: {
            "rep_id": 5,
            "resource_type": "lead" if i % 3 else "contact",
            "resource_id": i,
            "visited_at": AT + timedelta(minutes=7 * i),
            "created_at": AT + timedelta(minutes=7 * i),
            "summary": f"visit number {i}",
            "outcome_id": None,
            "latitude": 41.0,
            "longitude": -87.0,
            "verification_status": "resource_location_too_far" if i % 2 else "verified",
            "sequence": 1,
            "event_time": AT,
            "deleted_at": AT if i % 10 == 9 else None,
        }  # fmt: skip
        for i in range(count)
    }
    with transaction.atomic():
        visits_upsert(rows=rows)
    return sorted(rows)


def listed(response) -> list[int]:
    return [v.id for v in response.context["cl"].result_list]


def test_the_visit_list_shows_live_visits_by_default_and_deleted_ones_on_request(admin_client):
    visits_make(30)
    live = set(Visit.objects.live().values_list("id", flat=True))
    deleted = set(Visit.objects.filter(deleted_at__isnull=False).values_list("id", flat=True))
    assert set(listed(admin_client.get("/admin/visits/visit/"))) == live
    assert set(listed(admin_client.get("/admin/visits/visit/?in_sell=deleted"))) == deleted
    assert set(listed(admin_client.get("/admin/visits/visit/?in_sell=all"))) == live  # not a choice: the default
    contacts = listed(admin_client.get("/admin/visits/visit/?resource_type=contact"))
    assert contacts and set(contacts) == set(
        Visit.objects.live().filter(resource_type="contact").values_list("id", flat=True)
    )
    page = admin_client.get("/admin/visits/visit/").content.decode()
    assert "prospect_and_customer" in page  # the resource types are written down, not read from the rows
    assert listed(admin_client.get("/admin/visits/visit/?o=1")) == sorted(live)  # visited_at, oldest first


def test_the_count_stops_at_the_cap_and_says_so(admin_client, monkeypatch):
    visits_make(40)
    monkeypatch.setattr(CappedPaginator, "CAP", 12)
    monkeypatch.setattr("visits.admin.BigListAdmin.list_per_page", 5)
    response = admin_client.get("/admin/visits/visit/")
    body = response.content.decode()
    assert "More than 12 visits: filter or search to narrow them" in body
    assert response.context["cl"].result_count == 13
    last = admin_client.get("/admin/visits/visit/?p=3")  # pages up to the cap (13 rows: 3 pages of 5)
    assert len(listed(last)) == 3
    narrow = admin_client.get("/admin/visits/visit/?resource_type=contact").content.decode()
    assert "More than" not in narrow and "12 visits" in narrow  # 12 live contacts: counted exactly


def test_only_indexed_columns_sort(admin_client):
    visits_make(5)
    flags_rebuild()
    for path in ("/admin/visits/visit/", "/admin/visits/flaggedvisit/"):
        body = admin_client.get(path).content.decode()
        headers = re.findall(r'<th scope="col" class="([^"]*)column-(\w+)', body)
        assert {name for classes, name in headers if "sortable" in classes} == {"id", "visited_at"}, path
        assert {name for _, name in headers} > {"id", "visited_at", "rep"}, path


def test_the_flagged_list_filters_on_the_review_state_kept_on_the_visit(admin_client, django_user_model):
    visits_make(20)
    flags_rebuild()
    flagged = list(Visit.objects.filter(flagged=True).order_by("id").values_list("id", flat=True))
    reviewer = django_user_model.objects.get(username="admin")
    decisions_record(visit_ids=flagged[:2], kind="reject", note="", user=reviewer)
    # An older decision recorded later does not supersede the newer one.
    Decision.objects.create(visit_id=flagged[0], kind="accept", decided_by=reviewer, decided_at=AT)
    Decision.objects.create(visit_id=flagged[2], kind="follow_up", decided_by=reviewer)
    assert dict(Visit.objects.filter(id__in=flagged[:3]).values_list("id", "review_status")) == {
        flagged[0]: "reject",
        flagged[1]: "reject",
        flagged[2]: "follow_up",
    }
    rejected = listed(admin_client.get("/admin/visits/flaggedvisit/?review=reject"))
    assert sorted(rejected) == flagged[:2]
    awaiting = listed(admin_client.get("/admin/visits/flaggedvisit/?review=awaiting"))
    assert sorted(awaiting) == flagged[3:]
    body = admin_client.get("/admin/visits/flaggedvisit/?review=follow_up").content.decode()
    assert "Follow up" in body


def test_the_search_takes_an_id_a_rep_name_or_else_summary_text(admin_client):
    ids = visits_make(30)
    Rep.objects.create(id=6, name="Zed Quinn")
    Visit.objects.filter(id__in=ids[4:6]).update(rep_id=6)
    flags_rebuild()
    for path in ("/admin/visits/visit/", "/admin/visits/flaggedvisit/"):
        pool = Visit.objects.live() if path.endswith("/visit/") else Visit.objects.live().filter(flagged=True)
        newest = pool.order_by("-visited_at")
        found = listed(admin_client.get(path, {"q": str(ids[3])}))
        assert found == list(pool.filter(id=ids[3]).values_list("id", flat=True)), path
        assert listed(admin_client.get(path, {"q": "quinn"})) == list(
            newest.filter(rep_id=6).values_list("id", flat=True)
        )
        assert listed(admin_client.get(path, {"q": '"Zed Q"'})) == list(
            newest.filter(rep_id=6).values_list("id", flat=True)
        )
        words = listed(admin_client.get(path, {"q": "number 1"}))  # no rep is called that: the summaries
        assert words == list(newest.filter(summary__contains="number 1").values_list("id", flat=True)) != [], path


def test_the_mails_sent_and_rate_alerts_are_listed_for_superusers_only(admin_client, client, django_user_model):
    from datetime import date

    from django.contrib.auth.models import Permission

    from visits.models import MailSent, RateAlert

    Rep.objects.create(id=5, name="Ana")
    alert = RateAlert.objects.create(
        rep_id=5, week=date(2026, 9, 7), visits_before=20, far_before=1, visits_after=22, far_after=9
    )
    MailSent.objects.create(
        username="max", to="max@example.com", kind="rate_alert", week=date(2026, 9, 7), rate_alert=alert,
        subject="Ana's too-far rate rose", ok=True,
    )  # fmt: skip
    MailSent.objects.create(
        username="nina", to="nina@example.com", kind="digest", week=date(2026, 9, 7), subject="Week of 7 Sep",
        error="The mail server did not take the mail to nina@example.com: refused.",
    )  # fmt: skip
    mails = admin_client.get("/admin/visits/mailsent/").content.decode()
    assert "max@example.com" in mails and "The mail server did not take the mail" in mails
    assert "Ana" in admin_client.get("/admin/visits/ratealert/").content.decode()
    staff = django_user_model.objects.create_user("staffer", password="pw", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_mailsent", "view_ratealert"]))
    client.force_login(staff)
    assert client.get("/admin/visits/mailsent/").status_code == 403
    assert client.get("/admin/visits/ratealert/").status_code == 403
