"""The demo's team accounts (`manage.py demo_accounts`): a Managers account per regional manager,
linked by e-mail to their Sell user once the Core API's users are stored, seeing their own team;
a Directors account seeing every rep."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from visits.access import rep_filter_for_user
from visits.accounts import links_refresh
from visits.demo.generator import leaders
from visits.models import Rep, SellLink

pytestmark = pytest.mark.django_db


def core_users_store(data) -> None:
    """The Core API's users as Rep rows, as ingest.core stores them (the fields access reads)."""
    Rep.objects.bulk_create([
        Rep(id=u["id"], name=u["name"], email=u["email"], group_id=(u["group"] or {}).get("id"),
            group_name=(u["group"] or {}).get("name", ""), team_name=u["team_name"], reports_to=u["reports_to"])
        for u in data.core_users().values()
    ])  # fmt: skip


def test_leaders_are_the_generated_director_and_managers(full_team):
    users = full_team.core_users()
    by_email = {u["email"]: u for u in users.values()}
    director, central, east = leaders()
    assert by_email[director["email"]]["group"] is None and by_email[director["email"]]["reports_to"] is None
    for manager in (central, east):
        user = by_email[manager["email"]]
        assert user["name"] == manager["name"] and user["group"]["name"] == manager["group"]
        assert user["reports_to"] == by_email[director["email"]]["id"]


def test_demo_accounts_print_their_credentials_and_see_their_team(full_team):
    out = io.StringIO()
    call_command("demo_accounts", stdout=out)
    call_command("demo_accounts", stdout=out)  # again: reset, not duplicated
    text = out.getvalue()
    for username, password in (("central-manager", "demo-central"), ("east-manager", "demo-east"),
                               ("director", "demo-director")):  # fmt: skip
        assert f"username {username!r}, password {password!r}" in text
        assert User.objects.get(username=username).check_password(password)
    assert User.objects.filter(username__in=["central-manager", "east-manager", "director"]).count() == 3
    assert not SellLink.objects.exists()  # no Sell users yet: linked once they are stored
    core_users_store(full_team)
    links_refresh()
    users = full_team.core_users()
    for username, group in (("central-manager", "Central"), ("east-manager", "East")):
        account = User.objects.get(username=username)
        assert account.groups.get().name == "Managers"
        manager_id = SellLink.objects.get(user=account, via="email").rep_id
        team = {
            i for i, u in users.items() if (u["group"] or {}).get("name") == group and u["reports_to"] == manager_id
        }
        assert len(team) >= 5
        assert rep_filter_for_user(User.objects.get(username=username)) == frozenset(team | {manager_id})
    director = User.objects.get(username="director")
    assert director.groups.get().name == "Directors" and rep_filter_for_user(director) is None
