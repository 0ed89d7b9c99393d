"""Teams: the `team` filter on every report, list, map and CSV, the teams report and its CSV, the
reps' CSV's team columns, each against counts made here in Python from the visits, with the reps
spread over Sell groups at random; hostile group names shown as text."""

import csv
import io
import random
import re
from collections import Counter, defaultdict
from datetime import date, timedelta

import pytest
from django.http import QueryDict
from django.utils.html import escape

from visits.ingest.sync import streams_sync
from visits.models import Rep, VerificationStatus, Visit
from visits.reports.filters import NO_GROUP, ReportFilters
from visits.review.flags import flags_refresh

pytestmark = pytest.mark.django_db

STATUSES = VerificationStatus.values
GROUPS = {501: "Central", 502: "East", 503: ""}  # 503 has no name: shown by its reps' team_name


@pytest.fixture
def teams(serve, small_team):
    """The small team synced, its reps spread at random over three groups and none (at least one
    rep in each), a manager each."""
    serve(small_team)
    streams_sync()
    flags_refresh()
    reps = list(Rep.objects.order_by("id").values_list("id", flat=True))
    assert len(reps) >= 5
    dice = random.Random(14)
    dice.shuffle(reps)
    places = [501, 502, 503, None] + [dice.choice([501, 502, 503, None]) for _ in reps[4:]]
    for rep_id, group_id in zip(reps, places, strict=True):
        Rep.objects.filter(id=rep_id).update(
            group_id=group_id,
            group_name=GROUPS.get(group_id, "") if group_id else "",
            team_name="South desk" if group_id == 503 else "",
            reports_to=rep_id + 1 if group_id else None,
        )
    return dict(Rep.objects.values_list("id", "group_id"))


@pytest.fixture
def manager(client, cast):
    client.force_login(cast.manager)
    return client


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(body.removeprefix("\ufeff"))))


def chosen_reps(groups: dict[int, int | None], values: list[str]) -> set[int]:
    return {rep for rep, group in groups.items() if (NO_GROUP if group is None else str(group)) in values}


def in_range(visit: Visit, start: date | None, end: date | None) -> bool:
    from django.utils import timezone

    day = timezone.localtime(visit.visited_at).date()
    return (start is None or day >= start) and (end is None or day <= end)


def query_of(values: list[str], start: date | None, end: date | None, extra: str = "") -> str:
    parts = [f"team={v}" for v in values]
    parts += [f"start={start}"] if start else []
    parts += [f"end={end}"] if end else []
    return "&".join(parts) + extra


def random_cases(groups: dict[int, int | None]) -> list[tuple[list[str], date | None, date | None]]:
    """Team choices (one, two, no group) with ranges: all time, a few days, from a day on."""
    dice = random.Random(41)
    days = sorted({d for d in Visit.objects.dates("visited_at", "day")})
    values = ["501", "502", "503", NO_GROUP]
    cases: list[tuple[list[str], date | None, date | None]] = [(["501"], None, None), ([NO_GROUP], None, None)]
    for _ in range(5):
        start = dice.choice([None, *days])
        end = dice.choice([None, *[d for d in days if start is None or d >= start]])
        cases.append((dice.sample(values, dice.randint(1, 2)), start, end))
    return cases


def test_team_filter_narrows_every_csv_to_the_teams_reps(manager, teams):
    live = list(Visit.objects.filter(deleted_at__isnull=True))
    for values, start, end in random_cases(teams):
        reps = chosen_reps(teams, values)
        visits = [v for v in live if v.rep_id in reps and in_range(v, start, end)]
        query = query_of(values, start, end)
        case = (values, start, end)
        by_rep = Counter(v.rep_id for v in visits)
        got = {int(r["rep_id"]): int(r["visits"]) for r in csv_rows(manager.get(f"/reports/reps.csv?{query}"))}
        assert got == dict(by_rep), case
        got = {r["outcome_id"]: int(r["visits"]) for r in csv_rows(manager.get(f"/reports/outcomes.csv?{query}"))}
        assert got == {str(k or ""): n for k, n in Counter(v.outcome_id for v in visits).items()}, case
        cells = csv_rows(manager.get(f"/reports/matrix.csv?{query}"))
        got = {(int(c["rep_id"]), c["outcome_id"]): int(c["visits"]) for c in cells}
        assert got == {(k[0], str(k[1] or "")): n for k, n in Counter((v.rep_id, v.outcome_id) for v in visits).items()}
        got_ids = sorted(int(r["id"]) for r in csv_rows(manager.get(f"/visits.csv?{query}")))
        assert got_ids == sorted(v.id for v in visits), case
        flagged = sorted(v.id for v in visits if v.flagged)
        got_ids = sorted(int(r["visit_id"]) for r in csv_rows(manager.get(f"/review.csv?{query}&review=all")))
        assert got_ids == flagged, case
        teams_csv = csv_rows(manager.get(f"/reports/teams.csv?{query}"))
        want = Counter(NO_GROUP if teams[v.rep_id] is None else str(teams[v.rep_id]) for v in visits)
        assert {r["team_id"] or NO_GROUP: int(r["visits"]) for r in teams_csv} == dict(want), case


def test_team_filter_narrows_the_pages_map_and_queue(manager, teams):
    live = list(Visit.objects.filter(deleted_at__isnull=True))
    names = dict(Rep.objects.values_list("id", "name"))
    for values, start, end in random_cases(teams):
        reps = chosen_reps(teams, values)
        visits = [v for v in live if v.rep_id in reps and in_range(v, start, end)]
        query = query_of(values, start, end)
        case = (values, start, end)
        # The map's single visits: every located visit of the teams' reps in range, and none other;
        # its clusters count them all.
        points = manager.get(f"/map/points.json?bbox=-180,-90,180,90&zoom=13&{query}").json()
        located = sorted(v.id for v in visits if v.latitude is not None)
        assert not points["truncated"] and sorted(row[6] for row in points["rows"]) == located, case
        world = manager.get(f"/map/clusters.json?bbox=-180,-90,180,90&zoom=0&{query}").json()
        assert world["total"] == len(located), case
        # The overview's total, the visits list's total, the queue's count.
        overview = manager.get(f"/?{query}").content.decode()
        assert f'<span class="num">{len(visits):,}</span>' in overview, case
        listed = manager.get(f"/visits/?{query}").content.decode()
        assert re.search(rf"\b{len(visits):,} visits?\b", listed), case
        flagged = sum(v.flagged for v in visits)
        queue = manager.get(f"/review/?{query}&review=all").content.decode()
        if flagged:
            assert re.search(rf"\b{flagged:,} flagged visits?\b", queue), (case, flagged)
        else:
            assert "No flagged visit matches these filters." in queue, case
        # The reps report and the matrix name the teams' reps with visits, and no other rep.
        for url in ("/reports/reps/", "/reports/matrix/", "/review/reps/?review=all"):
            page = manager.get(f"{url}?{query}" if "?" not in url else f"{url}&{query}").content.decode()
            shown = {rep for rep in names if f"/reports/reps/{rep}/" in page or f'data-rep="{rep}"' in page}
            wanted = (
                {v.rep_id for v in visits}
                if url != "/review/reps/?review=all"
                else {v.rep_id for v in visits if v.flagged}
            )
            assert shown == wanted, (url, case)
        for url in ("/reports/teams/", "/reports/outcomes/", "/review/rules/", "/map/"):
            assert manager.get(f"{url}?{query}").status_code == 200, (url, case)


def test_team_and_rep_filters_intersect(manager, teams):
    central = chosen_reps(teams, ["501"])
    east = chosen_reps(teams, ["502"])
    one = min(central)
    got = {int(r["rep_id"]) for r in csv_rows(manager.get(f"/reports/reps.csv?team=501&rep={one}&rep={min(east)}"))}
    assert got == {one} & {v.rep_id for v in Visit.objects.filter(deleted_at__isnull=True)}
    assert csv_rows(manager.get(f"/reports/reps.csv?team=502&rep={one}")) == []
    for url in URLS:  # a team and a rep that do not meet: no visits, and no error
        assert manager.get(f"{url}?team=502&rep={one}&start=2000-01-01&end=2100-01-01").status_code == 200, url
        assert manager.get(f"{url}?team=502&rep={one}").status_code == 200, url


URLS = ["/", "/reports/reps/", "/reports/teams/", "/reports/outcomes/", "/reports/matrix/", "/visits/", "/map/",
        "/map/frame/", "/review/", "/review/reps/", "/review/rules/", "/reports/reps.csv", "/reports/teams.csv",
        "/reports/outcomes.csv", "/reports/matrix.csv", "/visits.csv", "/review.csv", "/review/rules.csv"]  # fmt: skip


@pytest.mark.parametrize("url", URLS)
def test_unknown_team_is_a_400_saying_so(manager, teams, url):
    for bad in ("999", "abc", "-1", "none2"):
        response = manager.get(f"{url}?team={bad}")
        assert response.status_code == 400, (url, bad)
        assert f"team: {bad} is not a known group id" in response.content.decode(), (url, bad)


def test_teams_report_and_csv_match_python_counts(manager, teams):
    live = [v for v in Visit.objects.filter(deleted_at__isnull=True)]
    by_team: dict[str, Counter] = defaultdict(Counter)
    flagged: Counter = Counter()
    for v in live:
        key = NO_GROUP if teams[v.rep_id] is None else str(teams[v.rep_id])
        by_team[key][v.verification_status] += 1
        flagged[key] += v.flagged
    rows = csv_rows(manager.get("/reports/teams.csv"))
    assert list(rows[0])[:2] == ["team_id", "team_name"]
    assert {r["team_id"] or NO_GROUP for r in rows} == set(by_team)
    names = {"501": "Central", "502": "East", "503": "South desk", NO_GROUP: "No group"}
    for row in rows:
        key = row["team_id"] or NO_GROUP
        counts, total = by_team[key], sum(by_team[key].values())
        assert row["team_name"] == names[key]
        assert int(row["visits"]) == total
        assert [int(row[s]) for s in STATUSES] == [counts[s] for s in STATUSES]
        assert row["verified_rate"] == f"{counts['verified'] / total:.4f}"
        assert row["too_far_rate"] == f"{counts['resource_location_too_far'] / total:.4f}"
        assert int(row["flagged"]) == flagged[key]
    page = manager.get("/reports/teams/?start=2000-01-01").content.decode()
    for key, name in names.items():
        if key in by_team:
            assert f'<a href="/reports/reps/?start=2000-01-01&amp;team={key}">{name}</a>' in page
            assert f'href="/review/?start=2000-01-01&amp;team={key}&amp;review=all"' in page
    # The team's reps report: exactly its reps with visits.
    reps = {int(r["rep_id"]) for r in csv_rows(manager.get("/reports/reps.csv?team=502"))}
    assert reps == {v.rep_id for v in live if teams[v.rep_id] == 502}


def test_teams_distances_are_the_teams_visits_percentiles(manager, teams):
    """A team's median and 90th percentile are those of all its too-far visits (within the bins'
    precision), not a sum of its reps'."""
    from visits.ingest.distance_tally import PRECISION

    Visit.objects.filter(verification_status="resource_location_too_far").update(customer_distance_m=None)
    far = list(Visit.objects.filter(deleted_at__isnull=True, verification_status="resource_location_too_far"))
    assert len(far) >= 10
    dice = random.Random(3)
    for v in far:
        v.customer_distance_m = dice.uniform(600, 90_000)
        Visit.objects.filter(id=v.id).update(customer_distance_m=v.customer_distance_m)
    for query in ("", "start=2000-01-01&end=2100-12-31"):
        rows = {r["team_id"] or NO_GROUP: r for r in csv_rows(manager.get(f"/reports/teams.csv?{query}"))}
        for key, row in rows.items():
            distances = sorted(
                v.customer_distance_m
                for v in far
                if (NO_GROUP if teams[v.rep_id] is None else str(teams[v.rep_id])) == key
            )
            if not distances:
                assert row["too_far_median_m"] == "", (key, query)
                continue
            for column, share in (("too_far_median_m", 0.5), ("too_far_p90_m", 0.9)):
                exact = distances[max(1, -(-len(distances) * int(share * 10) // 10)) - 1]
                assert abs(int(row[column]) - exact) <= exact * PRECISION + 1, (key, column, query)


def test_reps_csv_appends_team_and_manager(manager, teams):
    rows = csv_rows(manager.get("/reports/reps.csv"))
    assert list(rows[0])[-2:] == ["team", "manager_id"]
    for row in rows:
        rep_id = int(row["rep_id"])
        group = teams[rep_id]
        assert row["team"] == {501: "Central", 502: "East", 503: "South desk", None: ""}[group]
        assert row["manager_id"] == (str(rep_id + 1) if group else "")


def test_the_filter_bar_offers_the_teams_by_name(manager, teams):
    page = manager.get("/reports/reps/?team=502").content.decode()
    options = re.search(r'<select name="team" multiple size="3">(.*?)</select>', page, re.S).group(1)
    assert re.findall(r'<option value="(\w+)"', options) == ["501", "502", "503", NO_GROUP]  # by name, none last
    assert '<option value="502" selected>East</option>' in options


def test_hostile_group_names_are_text_and_no_csv_formula(manager, teams):
    attacks = ["<script>alert('team')</script>", '=HYPERLINK("http://evil.example/","x")', "@SUM(A1)", "+1+1"]
    for group_id, attack in zip((501, 502), attacks, strict=False):
        Rep.objects.filter(group_id=group_id).update(group_name=attack)
    Rep.objects.filter(group_id=503).update(team_name=attacks[2])
    for url in ("/reports/teams/", "/reports/reps/", "/"):
        page = manager.get(url).content.decode()
        assert "<script>alert('team')" not in page, url
        assert escape(attacks[0]) in page, url
    for url in ("/reports/teams.csv", "/reports/reps.csv"):
        body = b"".join(manager.get(url).streaming_content).decode("utf-8-sig")
        cells = [cell for line in csv.reader(io.StringIO(body)) for cell in line]
        assert "'" + attacks[1] in cells and "'" + attacks[2] in cells, url
        assert not any(cell.startswith(("=", "@", "+")) for cell in cells), url


def test_no_group_is_offered_only_when_a_rep_has_none(manager, teams):
    Rep.objects.filter(group_id__isnull=True).update(group_id=501)
    page = manager.get("/reports/reps/").content.decode()
    assert f'value="{NO_GROUP}"' not in page
    assert manager.get(f"/reports/reps/?team={NO_GROUP}").status_code == 400


def test_teams_report_empty_states(manager, teams):
    far_future = (date.today() + timedelta(days=3650)).isoformat()
    assert "No visits match these filters." in manager.get(f"/reports/teams/?start={far_future}").content.decode()
    Rep.objects.update(group_id=None, group_name="", team_name="")
    page = manager.get("/reports/teams/").content.decode()
    assert "No rep in these visits belongs to a Sell group yet" in page


def test_team_choices_are_the_groups_of_the_reps_one_may_see(teams):
    """The form offers the groups of the reps it is given (visits.access.reps_for_user's): another
    team is an unknown group, a 400, not an empty report."""
    east = Rep.objects.filter(group_id=502)
    form = ReportFilters(QueryDict("team=502"), reps=east)
    assert form.is_valid() and [value for value, _ in form.fields["team"].choices] == ["502"]
    assert form.scope().reps == frozenset(east.values_list("id", flat=True))
    form = ReportFilters(QueryDict("team=501"), reps=east)
    assert not form.is_valid() and "team: 501 is not a known group id" in form.problems()
