"""One access choke point: every URL pattern of the project either carries an access rule from
`visits.access` or is on a short allow-list with its reason, and every app page, asked for by
each kind of user, answers as the rule says and reads what it shows through `visits.access`."""

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import user_make
from visits import access
from visits.ingest.pages import visits_upsert
from visits.models import Customer, Decision, Flag, FlagRule, Outcome, Rep, Visit

pytestmark = pytest.mark.django_db

# Patterns with no access rule of ours, and why that is right. A key is the pattern's name
# (with its namespace; "admin:*" is every pattern in that namespace), else its route.
ALLOWED = {
    "admin:*": "the admin: admin.site.admin_view makes its own staff and permission checks on every page",
    "login": "the sign-in page: public by its nature (throttled by axes)",
    "logout": "signs out: shows no data",
    "password_change": "Django's PasswordChangeView: login_required itself, shows no data",
    "password_change_done": "Django's PasswordChangeDoneView: login_required itself, shows no data",
    "favicon.ico": "a redirect to a static file",
    "visits:healthz": "health for monitors: a status and four figures, no names, counts of visits or errors",
}
RULES = {
    access.RULE_REPORTS, access.RULE_DECIDE, access.RULE_ACCEPT_LOW, access.RULE_STAFF, access.RULE_SIGNED_IN,
    access.RULE_SUPERUSER,
}  # fmt: skip
POST_ONLY = {
    "visits:review_decide",
    "visits:address_mark",
}  # asked for with GET, these answer 405 (require_POST), whoever asks
# The access functions that hand a view visits (or a report's scope, which is visits; or customers).
VISITS_FROM = {
    "visits_for_user", "visit_for_user", "visit_lookup_for_user", "scope_for_user", "customers_for_user",
    "customer_for_user",
}  # fmt: skip


def patterns_walk(resolver: URLResolver | None = None, *, route: str = "", namespace: str = ""):
    """(key, route, pattern) for every URL pattern of the project, included ones too."""
    for entry in (resolver or get_resolver()).url_patterns:
        here = route + str(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = ":".join(n for n in (namespace, entry.namespace) if n)
            yield from patterns_walk(entry, route=here, namespace=inner)
        else:
            assert isinstance(entry, URLPattern)
            key = ":".join(n for n in (namespace, entry.name) if n) if entry.name else here
            yield key, here, namespace, entry


def allowed_reason(key: str, namespace: str) -> str | None:
    return ALLOWED.get(key) or (ALLOWED.get(f"{namespace.split(':')[0]}:*") if namespace else None)


def test_every_url_pattern_carries_an_access_rule_or_is_allowed_with_a_reason():
    seen_allowed, missing = set(), []
    walked = list(patterns_walk())
    for key, route, namespace, pattern in walked:
        rule = getattr(pattern.callback, "access_rule", None)
        if allowed_reason(key, namespace):
            seen_allowed.add(key if key in ALLOWED else f"{namespace.split(':')[0]}:*")
            continue
        if rule not in RULES:
            missing.append(f"{key} ({route!r}, view {pattern.lookup_str})")
    assert len(walked) > 20, "the walk should see the app's, the admin's and auth's patterns"
    assert not missing, (
        "URL patterns with no access rule: decorate their views with one of visits.access's "
        "(reports_required, decide_required, staff_required, signed_in_required, superuser_required), or add them "
        "to ALLOWED with the reason: " + "; ".join(missing)
    )
    assert seen_allowed == set(ALLOWED), f"ALLOWED names patterns that no longer exist: {set(ALLOWED) - seen_allowed}"


SHAPED = {"visit_for_user", "visit_lookup_for_user"}  # they take a `queryset=` to narrow


def model_reads(source: str) -> list[str]:
    """`Model.objects` in a module, except as the `queryset=` an access function narrows."""
    tree = ast.parse(source)
    shaping = {
        id(node)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and ast.unparse(call.func).split(".")[-1] in SHAPED
        for keyword in call.keywords
        if keyword.arg == "queryset"
        for node in ast.walk(keyword.value)
    }
    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "objects" and id(node) not in shaping
    ]


def test_the_views_read_no_visit_rep_or_permission_by_themselves():
    """What the behavioural walk can miss (a second read beside the access call) is kept out by
    reading the views' source: they fetch and check nothing themselves."""
    forbidden = [
        "get_object_or_404", "get_list_or_404", "has_perm", "filters.scope()", "filters.visits()",
        "login_required", "permission_required", "staff_member_required", "user_passes_test",
    ]  # fmt: skip
    found = []
    for path in sorted((Path(access.__file__).parent / "views").glob("*.py")):
        source = path.read_text()
        found += [f"{path.name}: {word}" for word in forbidden if word in source]
        found += [f"{path.name} {read}" for read in model_reads(source)]
    assert not found, f"views must get visits, reps, scopes and rules from visits.access: {found}"


# --- The behavioural walk ------------------------------------------------------------------

AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def visit_row(**fields) -> dict:
    return {
        "rep_id": 31, "resource_type": "lead", "resource_id": 7, "visited_at": AT, "created_at": AT,
        "summary": "Met the buyer", "outcome_id": 3, "latitude": 41.88, "longitude": -87.63,
        "verification_status": "resource_location_too_far", "sequence": 1, "event_time": AT, "deleted_at": None,
        **fields,
    }  # fmt: skip


@pytest.fixture
def world(db) -> dict[str, int]:
    """A rep, an outcome, a located and flagged visit and one deleted in Sell: the ids URL patterns take."""
    Rep.objects.create(id=31, name="Walker")
    Outcome.objects.create(id=3, name="Demo booked")
    with transaction.atomic():
        visits_upsert(rows={3100: visit_row(), 3101: visit_row(deleted_at=AT, summary="Gone from Sell")})
    Flag.objects.create(visit_id=3100, rule=FlagRule.values[0], numbers={}, sentence="flagged for the walk")
    customer = Customer.objects.create(resource_type="lead", resource_id=7, address="1 Main St", suspect=True)
    return {"visit_id": 3100, "rep_id": 31, "customer_id": customer.id}


def app_patterns():
    return [(key, pattern) for key, _, namespace, pattern in patterns_walk() if namespace == "visits"]


# The query a URL needs to answer at all (the map's JSON: a box and a zoom level).
QUERIES = {"visits:map_clusters": "?bbox=-180,-90,180,90&zoom=2", "visits:map_points": "?bbox=-180,-90,180,90&zoom=13"}


def url_for(key: str, pattern: URLPattern, ids: dict[str, int]) -> str:
    names = set(pattern.pattern.converters)
    unknown = names - set(ids)
    assert not unknown, f"{key}: no id to fill {unknown}; give the world fixture one"
    return reverse(key, kwargs={name: ids[name] for name in names}) + QUERIES.get(key, "")


def traced_get(client, url: str, *, method: str = "get", data: dict | None = None):
    with access.access_trace() as calls:
        response = getattr(client, method)(url, data or {})
    return response, calls


def assert_went_through_access(key: str, pattern: URLPattern, calls: list, ids: dict[str, int]) -> None:
    names = {name for name, _ in calls}
    rule = pattern.callback.access_rule
    if rule == access.RULE_STAFF:
        assert "user_is_staff" in names, f"{key}: the staff rule was not asked ({calls})"
        return
    if rule == access.RULE_SUPERUSER:  # the access log: no visits, only who saw them
        assert "user_is_superuser" in names, f"{key}: the superuser rule was not asked ({calls})"
        return
    assert names & VISITS_FROM, f"{key}: served with no visits from visits.access (called only {sorted(names)})"
    wanted = {
        "visit_id": {"visit_for_user", "visit_lookup_for_user"}, "rep_id": {"rep_for_user"},
        "customer_id": {"customer_for_user"},
    }  # fmt: skip
    for param in pattern.pattern.converters:
        asked = [name for name, args in calls if name in wanted[param] and args.get(param) == ids[param]]
        assert asked, f"{key}: {param}={ids[param]} was not looked up through visits.access ({calls})"


def test_every_app_page_answers_each_user_as_its_rule_says_and_reads_through_access(client, cast, world):
    patterns = app_patterns()
    assert len(patterns) > 15
    checked = []
    for key, pattern in patterns:
        if allowed_reason(key, "visits"):
            continue
        rule = getattr(pattern.callback, "access_rule", None)
        assert rule in RULES, f"{key}: its view carries no access rule"
        url = url_for(key, pattern, world)
        client.logout()
        if key in POST_ONLY:
            for user in (None, cast.outsider, cast.manager, cast.superuser):
                if user:
                    client.force_login(user)
                assert client.get(url).status_code == 405, f"{key}: GET as {user}"
            checked.append(key)
            continue
        anonymous = client.get(url)
        login = "/admin/login/" if rule == access.RULE_STAFF else "/accounts/login/"
        assert anonymous.status_code == 302 and anonymous["Location"].startswith(f"{login}?next="), (key, anonymous)
        client.force_login(cast.outsider)
        if rule == access.RULE_SIGNED_IN:  # one's own account: anyone signed in, and no data
            response, calls = traced_get(client, url)
            assert response.status_code == 200, (key, response)
            names = {name for name, _ in calls}
            assert "user_is_signed_in" in names and not names & VISITS_FROM, (key, calls)
            checked.append(key)
            continue
        response = client.get(url)
        if rule == access.RULE_STAFF:
            assert response.status_code == 302 and response["Location"].startswith(login), (key, response)
        elif rule == access.RULE_SUPERUSER:
            assert response.status_code == 403 and access.SUPERUSER_REFUSED.encode() in response.content, key
        else:
            assert response.status_code == 403 and b"neither the" in response.content, (key, response)
        client.force_login(cast.manager)
        response, calls = traced_get(client, url)
        if rule == access.RULE_ACCEPT_LOW:  # refused to a manager and a reviewer; a lead reviewer's
            assert response.status_code == 403 and access.ACCEPT_LOW_REFUSED.encode() not in response.content, key
            client.force_login(cast.reviewer)
            response = client.get(url)
            assert response.status_code == 403 and access.ACCEPT_LOW_REFUSED.encode() in response.content, key
            client.force_login(user_make(f"lead-{len(checked)}", group="Lead reviewers"))
            response, calls = traced_get(client, url)
        if rule == access.RULE_STAFF:  # a manager is not staff: the staff page is the superuser's
            assert response.status_code == 302 and response["Location"].startswith(login), (key, response)
            client.force_login(cast.superuser)
            response, calls = traced_get(client, url)
        if rule == access.RULE_SUPERUSER:  # refused to a manager, and to staff who are not superusers
            assert response.status_code == 403 and access.SUPERUSER_REFUSED.encode() in response.content, key
            client.force_login(user_make(f"staff-{len(checked)}", is_staff=True))
            assert client.get(url).status_code == 403, key
            client.force_login(cast.superuser)
            response, calls = traced_get(client, url)
        assert response.status_code == 200, (key, response)
        assert_went_through_access(key, pattern, calls, world)
        checked.append(key)
    assert {"visits:visit", "visits:rep", "visits:visit_map", "visits:visit_summary", "visits:status",
            "visits:access_log_csv"} <= set(checked)  # fmt: skip


def test_deciding_answers_each_user_as_today_and_decides_only_through_access(client, cast, world):
    url = reverse("visits:review_decide")
    post = {"visit": [world["visit_id"]], "kind": "accept", "reason": "explained", "note": "walked"}
    response = client.post(url, post)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    client.force_login(cast.outsider)
    response = client.post(url, post)
    assert response.status_code == 403 and b"neither the" in response.content
    client.force_login(cast.manager)
    response = client.post(url, post)
    assert response.status_code == 403 and b"Only Reviewers can decide on flagged visits." in response.content
    assert not Decision.objects.exists()
    client.force_login(cast.reviewer)
    response, calls = traced_get(client, url, method="post", data=post)
    assert response.status_code == 302 and response["Location"] == "/review/"
    assert "visits_for_user" in {name for name, _ in calls}, calls
    assert list(Decision.objects.values_list("visit_id", "kind")) == [(world["visit_id"], "accept")]


def test_a_deleted_visit_keeps_its_own_page_map_and_summary_and_stays_out_of_lists(client, cast, world):
    client.force_login(cast.manager)
    page = client.get("/visits/3101/")
    assert page.status_code == 200 and b"Deleted in Sell on" in page.content
    assert client.get("/visits/3101/summary.json").json() == {"id": 3101, "summary": "Gone from Sell"}
    assert client.get("/visits/3101/map/").status_code == 200
    listed = client.get("/visits/").content.decode()
    assert "/visits/3100/" in listed and "/visits/3101/" not in listed
    rows = b"".join(client.get("/visits.csv").streaming_content).decode()
    assert "Met the buyer" in rows and "Gone from Sell" not in rows
    assert client.get("/visits/3199/").status_code == 404


def test_access_functions_refuse_a_user_without_the_reports_permission(cast, world):
    from django.core.exceptions import PermissionDenied
    from django.http import Http404

    for call in (
        lambda u: access.visits_for_user(u),
        lambda u: access.visit_for_user(u, world["visit_id"]),
        lambda u: access.rep_for_user(u, world["rep_id"]),
        lambda u: access.reps_for_user(u),
    ):
        with pytest.raises(PermissionDenied):
            call(cast.outsider)
        assert call(cast.manager)
    assert set(access.visits_for_user(cast.manager).values_list("id", flat=True)) == {3100}
    with pytest.raises(Http404):
        access.visit_for_user(cast.manager, 3199)
    with pytest.raises(Http404):
        access.rep_for_user(cast.manager, 99)
    assert not Visit.objects.filter(id=3199).exists()
