"""Who sees whom: a Manager sees their reporting line (any depth, cycles ended), Directors,
Reviewers and superusers see every rep, an unlinked Manager sees a page saying why and no data;
accounts are linked to Sell users by e-mail or by an admin. Every app URL is asked for by each
role with a visit, a rep and a customer from inside and from outside a Manager's scope."""

from datetime import UTC, datetime

import pytest
from django.db import transaction
from django.urls import reverse

from tests.conftest import user_make
from tests.test_access import POST_ONLY, allowed_reason, app_patterns, url_for, visit_row
from visits import access
from visits.accounts import links_refresh
from visits.ingest.pages import visits_upsert
from visits.models import RULE_BITS, Customer, Flag, FlagRule, Outcome, Rep, SellLink, SellLinkVia, Visit

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
INSIDE_NAME, OUTSIDE_NAME = "Ivy Insideline", "Oscar Outsideline"


# --- The reporting line, as a pure function ----------------------------------------------------


def test_a_reporting_line_reaches_every_depth_and_stops_at_a_cycle():
    pairs = [(2, 1), (3, 2), (4, 3), (5, 1), (9, 8), (1, 4)]  # 1 -> 2 -> 3 -> 4 -> 1: a cycle
    assert access.reporting_line(rep_id=2, reports_to=pairs) == {1, 2, 3, 4, 5}
    assert access.reporting_line(rep_id=8, reports_to=pairs) == {8, 9}
    assert access.reporting_line(rep_id=5, reports_to=pairs) == {5}
    assert access.reporting_line(rep_id=7, reports_to=[(7, 7)]) == {7}  # reports to themselves
    chain = [(n + 1, n) for n in range(1, 500)]  # 500 deep: no recursion limit
    assert access.reporting_line(rep_id=1, reports_to=chain) == set(range(1, 501))


# --- The cast: a director over two managers, each with their own line -------------------------


@pytest.fixture
def org(db) -> dict:
    """Sell users: director 1; manager 10 (team lead 11, rep 12 under 11: two deep) and manager 20
    (rep 21), both reporting to 1; reps 30 and 31 report to each other (a cycle, under nobody).
    Visits and customers of rep 12 (inside manager 10's line) and rep 21 (outside it)."""
    reps = [
        (1, "Dana Director", None, "dana@example.com"), (10, "Max Manager", 1, "MAX@Example.com"),
        (11, "Tess Teamlead", 10, ""), (12, INSIDE_NAME, 11, ""), (20, "Nina Northmanager", 1, "nina@example.com"),
        (21, OUTSIDE_NAME, 20, ""), (30, "Cy Cycle", 31, ""), (31, "Cora Cycle", 30, ""),
    ]  # fmt: skip
    for rep_id, name, boss, email in reps:
        Rep.objects.create(id=rep_id, name=name, reports_to=boss, email=email)
    Outcome.objects.create(id=3, name="Demo booked")
    rows = {
        1200: visit_row(rep_id=12, resource_id=7, summary="inside summary"),
        2100: visit_row(rep_id=21, resource_id=8, summary="outside summary"),
        1201: visit_row(rep_id=12, resource_id=7, deleted_at=AT),
    }
    with transaction.atomic():
        visits_upsert(rows=rows)
    rule = FlagRule.values[0]
    for visit_id in (1200, 2100):
        Flag.objects.create(visit_id=visit_id, rule=rule, numbers={}, sentence="flagged for the walk")
    Visit.objects.filter(id__in=(1200, 2100)).update(
        flagged=True, flag_rules=RULE_BITS[rule], risk=80, risk_tier="high"
    )
    inside = Customer.objects.create(resource_type="lead", resource_id=7, address="1 Inside St", suspect=True)
    outside = Customer.objects.create(resource_type="lead", resource_id=8, address="9 Outside Rd", suspect=True)
    manager = user_make("max", group="Managers", email="max@example.com")  # linked by e-mail, case aside
    return {
        "inside": {"visit_id": 1200, "rep_id": 12, "customer_id": inside.id},
        "outside": {"visit_id": 2100, "rep_id": 21, "customer_id": outside.id},
        "manager": manager,
        "director": user_make("dana-account", group="Directors"),
        "reviewer": user_make("rita", group="Reviewers"),
        "unlinked": user_make("ulla", group="Managers", email="ulla@example.com"),
        "superuser": user_make("root", is_staff=True, is_superuser=True),
    }


def test_the_manager_is_linked_by_e_mail_whatever_its_case_and_sees_their_whole_line(org):
    link = SellLink.objects.get(user=org["manager"])
    assert (link.rep_id, link.via) == (10, SellLinkVia.EMAIL)
    assert access.rep_filter_for_user(org["manager"]) == {10, 11, 12}
    assert set(access.visits_for_user(org["manager"]).values_list("id", flat=True)) == {1200}
    assert set(access.reps_for_user(org["manager"]).values_list("id", flat=True)) == {10, 11, 12}
    assert access.rep_filter_for_user(org["director"]) is None
    assert access.rep_filter_for_user(org["reviewer"]) is None
    assert access.rep_filter_for_user(org["superuser"]) is None
    assert access.rep_filter_for_user(org["unlinked"]) == frozenset()
    assert not access.visits_for_user(org["unlinked"]).exists()


def test_the_header_says_whose_line_a_manager_sees_and_nothing_for_others(client, org):
    client.force_login(org["manager"])
    assert "Max Manager&#x27;s reporting line: 3 reps" in client.get("/").content.decode()
    for role in ("director", "superuser"):
        client.force_login(org[role])
        assert "reporting line:" not in client.get("/").content.decode()
    client.force_login(org["unlinked"])
    assert "reporting line:" not in client.get("/").content.decode()


def test_a_manager_inside_a_cycle_sees_the_cycle_once(org):
    cyclist = user_make("cy", group="Managers")
    SellLink.objects.create(user=cyclist, rep_id=30, via=SellLinkVia.ADMIN)
    assert access.rep_filter_for_user(cyclist) == {30, 31}


def test_links_follow_the_e_mails_but_an_admins_link_stays(org):
    manager = org["manager"]
    manager.email = "someone-else@example.com"
    manager.save()
    assert not SellLink.objects.filter(user=manager).exists()  # the e-mail no longer matches
    Rep.objects.filter(id=20).update(email="someone-else@example.com")
    assert links_refresh() == 1  # after the reps' e-mails changed (each pull calls it)
    assert SellLink.objects.get(user=manager).rep_id == 20
    Rep.objects.filter(id=21).update(email="Someone-Else@example.com")
    links_refresh()
    assert not SellLink.objects.filter(user=manager).exists(), "two Sell users share it: no guess"
    SellLink.objects.create(user=manager, rep_id=10, via=SellLinkVia.ADMIN)
    Rep.objects.filter(id=21).update(email="")
    links_refresh()
    assert SellLink.objects.get(user=manager).rep_id == 10, "an admin's link is not overridden by e-mail"


def test_an_admin_links_an_account_on_its_admin_page(client, org):
    client.force_login(org["superuser"])
    user = org["unlinked"]
    url = reverse("admin:auth_user_change", args=[user.id])
    page = client.get(url)
    assert page.status_code == 200 and b"Sell user" in page.content
    form = {
        "username": user.username, "email": user.email, "is_active": "on", "groups": [g.id for g in user.groups.all()],
        "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00", "sell_link-TOTAL_FORMS": "1", "sell_link-INITIAL_FORMS": "0",
        "sell_link-MIN_NUM_FORMS": "0", "sell_link-MAX_NUM_FORMS": "1", "sell_link-0-rep": "20",
        "sell_link-0-user": str(user.id),
    }  # fmt: skip
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    link = SellLink.objects.get(user=user)
    assert (link.rep_id, link.via) == (20, SellLinkVia.ADMIN)
    assert access.rep_filter_for_user(type(user).objects.get(id=user.id)) == {20, 21}


# --- Every URL, each role, inside and outside -------------------------------------------------


def test_every_app_url_answers_each_role_inside_and_outside_a_managers_scope(client, org):
    checked = []
    for key, pattern in app_patterns():
        if allowed_reason(key, "visits") or key in POST_ONLY:
            continue
        rule = pattern.callback.access_rule
        if rule in (access.RULE_STAFF, access.RULE_SIGNED_IN, access.RULE_SUPERUSER):
            # the ingestion status pages: staff only, no one's visits; one's own mail settings: no
            # visits at all; the access log: superusers only (test_access walks the three)
            continue
        takes_ids = bool(pattern.pattern.converters)
        inside, outside = url_for(key, pattern, org["inside"]), url_for(key, pattern, org["outside"])
        for role in ("director", "reviewer", "superuser", "manager", "unlinked"):
            client.force_login(org[role])
            if rule == access.RULE_ACCEPT_LOW and role != "superuser":
                continue  # only a Lead reviewer (or a superuser) gets past it; test_access walks it
            if rule == access.RULE_DECIDE and role in ("director", "manager"):
                assert client.get(inside).status_code == 403, (key, role)
                continue
            answers = {where: client.get(url) for where, url in (("inside", inside), ("outside", outside))}
            if role == "unlinked":
                for where, response in answers.items():
                    body = content_of(response)
                    assert response.status_code == 403 and "not linked to a Sell user" in body, (key, where)
                    assert INSIDE_NAME not in body and OUTSIDE_NAME not in body, (key, where)
                continue
            if role == "manager":
                assert answers["inside"].status_code == 200, (key, answers["inside"])
                if takes_ids:
                    assert answers["outside"].status_code in (404, 400), (key, answers["outside"])
                body = content_of(answers["inside"]) + content_of(answers["outside"])
                assert OUTSIDE_NAME not in body and "outside summary" not in body and "9 Outside Rd" not in body, key
                continue
            for where, response in answers.items():
                assert response.status_code == 200, (key, role, where, response)
            if key in LISTS_EVERYONE:  # and the whole company is there: the check above can fail
                assert OUTSIDE_NAME in content_of(answers["inside"]) and INSIDE_NAME in content_of(answers["inside"]), (
                    key,
                    role,
                )
        checked.append(key)
    assert {"visits:visit", "visits:rep", "visits:visit_map", "visits:reps", "visits:review"} <= set(checked), checked


# Pages that name every rep with a visit, for whoever sees every rep.
LISTS_EVERYONE = {"visits:reps", "visits:reps_csv", "visits:visits", "visits:visits_csv", "visits:review"}


def content_of(response) -> str:
    """The body, read once (a streamed one can be read only once) and kept on the response."""
    if not hasattr(response, "_text"):
        streamed = getattr(response, "streaming", False)
        response._text = (b"".join(response.streaming_content) if streamed else response.content).decode()
    return response._text


def test_a_manager_sees_their_reps_in_the_reports_and_csvs_and_the_director_sees_everyone(client, org):
    client.force_login(org["manager"])
    reps_csv = content_of(client.get("/reports/reps.csv"))
    assert INSIDE_NAME in reps_csv and OUTSIDE_NAME not in reps_csv
    visits_csv = content_of(client.get("/visits.csv"))
    assert "inside summary" in visits_csv and "outside summary" not in visits_csv
    # Naming a rep outside the line is a bad filter, not a way in.
    refused = client.get("/reports/reps/", {"rep": 21})
    assert refused.status_code == 400 and OUTSIDE_NAME not in refused.content.decode()
    client.force_login(org["director"])
    reps_csv = content_of(client.get("/reports/reps.csv"))
    assert INSIDE_NAME in reps_csv and OUTSIDE_NAME in reps_csv


def test_the_admins_lists_of_visits_apply_the_same_scope(client, org):
    manager = org["manager"]
    manager.is_staff = True
    manager.save()
    client.force_login(manager)
    page = client.get("/admin/visits/flaggedvisit/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "/admin/visits/flaggedvisit/1200/" in body and "/admin/visits/flaggedvisit/2100/" not in body
    assert OUTSIDE_NAME not in body  # nor in the rep filter's choices
    assert client.get("/admin/visits/flaggedvisit/2100/change/").status_code in (302, 404)
    client.force_login(org["superuser"])
    body = client.get("/admin/visits/flaggedvisit/").content.decode()
    assert "/admin/visits/flaggedvisit/2100/" in body
    assert Visit.objects.count() == 3
