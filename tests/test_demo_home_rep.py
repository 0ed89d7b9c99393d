"""The demo's rep who logs visits from home (team_generate(home_rep=True)): opt-in, so every
seed gives the data it gave before; with it, only that rep's visits change."""

from tests.conftest import DEMO_NOW
from visits.demo.generator import team_generate
from visits.geo.distance import km_between


def test_home_rep_is_off_by_default_and_changes_nothing_then(small_team):
    again = team_generate(seed=11, reps=6, weeks=1, malformed=True, now=DEMO_NOW, home_rep=False)
    assert small_team.home is None and again.home is None
    assert again.visits_events == small_team.visits_events and again.users_events == small_team.users_events


def test_home_rep_logs_a_third_of_their_visits_from_home_and_no_one_else_changes(small_team):
    home_team = team_generate(seed=11, reps=6, weeks=1, malformed=True, now=DEMO_NOW, home_rep=True)
    assert home_team.home is not None
    rep_id, home = home_team.home
    assert rep_id not in home_team.suspicious
    before, after = small_team.visits_events, home_team.visits_events
    assert len(before) == len(after) and home_team.users_events == small_team.users_events
    from_home = located = 0
    for old, new in zip(before, after, strict=True):
        data = new.get("data") if isinstance(new, dict) else None
        if not isinstance(data, dict) or data.get("creator_id") != rep_id:  # malformed items too
            assert new == old
            continue
        location = data.get("sales_rep_location") or {}
        if not isinstance(location, dict) or location.get("latitude") is None:
            continue
        located += 1
        point = (location["latitude"], location["longitude"])
        if km_between(point, home) <= 0.03:
            from_home += 1
            customer = home_team.customers[(data["resource_type"], data["resource_id"])]
            if km_between(home, customer) >= 1.0:
                assert location["verification_status"] == "resource_location_too_far"
    assert located and 0.15 * located <= from_home <= 0.6 * located
