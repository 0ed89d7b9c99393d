"""The review tally (ingest/review_tally.py): equal to a count of the live flagged visits made here
(conftest.assert_review_tally_match) after random sequences of every kind of write; the queue per
rep, the rules' precision and its CSV the same through it as through the visits; read instead of
the visits whenever the filters allow; its triggers installed, missed by visits.E001, and a tally
left empty by migration 0020 built after `migrate`."""

import random
from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.conftest import assert_review_tally_match, review_tally_counted
from visits import triggers
from visits.checks import triggers_check
from visits.geo.customers import customers_refresh
from visits.ingest import review_tally, tallies
from visits.ingest.pages import VISIT_FIELDS, visits_upsert
from visits.ingest.sync import streams_sync
from visits.models import Customer, FlagRule, Rep, ReviewTally, RiskTier, Visit
from visits.reports.scope import Scope
from visits.review import flags, precision, queue
from visits.review.addresses import address_mark
from visits.review.rules import tier_scores

pytestmark = pytest.mark.django_db

STATES = list(queue.REVIEW_STATES)


@pytest.fixture
def synced(serve, small_team):
    serve(small_team)
    streams_sync()
    flags.flags_refresh()
    assert Visit.objects.filter(flagged=True, deleted_at__isnull=True).exists()
    return small_team


def random_choice(rng: random.Random) -> tuple[Scope, list[str], list[str], str]:
    """A scope the tally can count (reps only), rules, tiers and a review state, each often empty."""
    reps = sorted(Rep.objects.values_list("id", flat=True))
    scope = Scope(reps=rng.choice([None, None, frozenset(rng.sample(reps, min(2, len(reps))))]))
    rules = rng.choice([[], [], rng.sample(FlagRule.values, 2)])
    tiers = rng.choice([[], [], rng.sample(RiskTier.values, rng.randint(1, 2))])
    return scope, rules, tiers, rng.choice(STATES)


def assert_same_both_ways(rng: random.Random, *, choices: int = 6) -> None:
    """rep_queues and rules_precision give the same answers from the tally as from the visits."""
    fixed = [(Scope(), [], [], "all"), *((Scope(), [], [tier], "all") for tier in RiskTier.values)]
    for n in range(len(fixed) + choices):
        scope, rules, tiers, state = fixed[n] if n < len(fixed) else random_choice(rng)
        tallied = review_tally.review_filter(scope=scope, reps=None, rules=rules, tiers=tiers, state=state)
        assert tallied is not None
        visits = queue.flagged_visits(visits=scope.visits(), rules=rules or None, state=state, tiers=tiers or None)
        through_tally = queue.rep_queues(visits=None, tallied=tallied)
        assert through_tally == queue.rep_queues(visits=visits), (scope, rules, tiers, state)
        if not n:  # everything flagged: the tally holds something to compare
            assert sum(row.total for row in through_tally) == sum(review_tally_counted().values()) > 0
        chosen = review_tally.review_filter(scope=scope, reps=None, tiers=tiers)
        got = precision.rules_precision(visits=scope.visits(), tiers=tiers or None, tallied=chosen)
        assert got == precision.rules_precision(visits=scope.visits(), tiers=tiers or None), (scope, tiers)


def row_of(visit: Visit, **change) -> dict:
    """The visit as ingestion writes it (ingest.pages.visits_upsert), its sequence one higher."""
    row = {name: getattr(visit, name) for name in VISIT_FIELDS}
    return {**row, "sequence": visit.sequence + 1, **change}


def events_ingest(rng: random.Random) -> str:
    """A page of changes as Sell would send them: a rep change, a deletion in Sell, a new status,
    a visit moved by hours, a new visit (a copy of another, elsewhere in time)."""
    live = list(Visit.objects.filter(deleted_at__isnull=True).order_by("id"))
    reps = sorted(Rep.objects.values_list("id", flat=True))
    flagged = [v for v in live if v.flagged] or live
    rows = {}
    moved = rng.choice(flagged)
    rows[moved.id] = row_of(moved, rep_id=rng.choice([r for r in reps if r != moved.rep_id]))
    gone = rng.choice(flagged)
    rows[gone.id] = row_of(gone, deleted_at=gone.visited_at + timedelta(hours=1))
    for visit in rng.sample(live, 3):
        if visit.id not in rows:
            rows[visit.id] = row_of(
                visit, verification_status=rng.choice(["verified", "location_unknown", "resource_location_too_far"]),
                visited_at=visit.visited_at + timedelta(hours=rng.randint(-3, 3)),
            )  # fmt: skip
    model = rng.choice(live)
    new_id = Visit.objects.order_by("-id").values_list("id", flat=True)[0] + 1
    rows[new_id] = row_of(model, sequence=1, visited_at=model.visited_at + timedelta(minutes=7))
    with transaction.atomic():
        visits_upsert(rows=rows)
    flags.flags_rebuild()  # ingestion's own record of what changed is not made by visits_upsert
    return "ingest"


def decisions_make(rng: random.Random, cast) -> str:
    flagged = list(Visit.objects.filter(flagged=True, deleted_at__isnull=True).values_list("id", flat=True))
    kind = rng.choice(["accept", "reject", "follow_up"])
    queue.decisions_record(
        visit_ids=rng.sample(flagged, min(4, len(flagged))), kind=kind, reason="gps_noise" if kind == "accept" else "",
        note="", user=cast.reviewer,
    )  # fmt: skip
    return f"decide {kind}"


def low_tier_accept(rng: random.Random, cast) -> str:
    queue.low_tier_accept(visits=Visit.objects.live(), reason="gps_noise", note="", user=cast.reviewer)
    return "accept low"


def hard_delete(rng: random.Random, cast) -> str:
    undecided = list(Visit.objects.filter(flagged=True, decisions__isnull=True).values_list("id", flat=True))
    Visit.objects.filter(id=rng.choice(undecided)).delete()
    return "delete"


def mark_address(rng: random.Random, cast) -> str:
    customers_refresh()
    flagged = Visit.objects.filter(flagged=True, deleted_at__isnull=True).values_list("resource_type", "resource_id")
    keys = set(flagged)
    customer = rng.choice([c for c in Customer.objects.order_by("id") if (c.resource_type, c.resource_id) in keys])
    address_mark(customer=customer, wrong=not customer.address_wrong, note="", user=cast.reviewer)
    return "address mark"


def flags_refresh(rng: random.Random, cast) -> str:
    flags.flags_refresh()
    return "refresh"


def flags_rebuild(rng: random.Random, cast) -> str:
    flags.flags_rebuild()
    return "rebuild"


def events_step(rng: random.Random, cast) -> str:
    return events_ingest(rng)


def tier_set(rng: random.Random, cast) -> str:
    """An ORM update of risks and their tiers, past the risk helper (as tests/test_decisions.py
    writes them): a tier is always its risk's (rules.tier_of), which the queue's tier filter reads."""
    ids = list(Visit.objects.filter(flagged=True).values_list("id", flat=True))
    tier = rng.choice(RiskTier.values)
    chosen = Visit.objects.filter(id__in=rng.sample(ids, min(5, len(ids))))
    chosen.update(risk=rng.choice(tier_scores([tier])), risk_tier=tier)
    return "tier"


@pytest.mark.parametrize("seed,in_bulk", [(1, True), (2, False), (3, True)], ids=["bulk", "row-by-row", "bulk-3"])
def test_the_tally_equals_the_flagged_visits_through_any_writes(synced, cast, seed, in_bulk, monkeypatch):
    # in_bulk: SQLite moves the tallies in grouped statements however few visits are flagged at once
    monkeypatch.setattr(tallies, "BULK_FROM", 1 if in_bulk else 10**9)
    rng = random.Random(seed)
    assert_review_tally_match()
    assert_same_both_ways(rng)
    steps = [
        events_step, flags_refresh, flags_rebuild, decisions_make, decisions_make, low_tier_accept, hard_delete,
        tier_set,
    ]  # fmt: skip
    done = []
    for _ in range(10):
        done.append(rng.choice(steps)(rng, cast))
        assert_review_tally_match()
        assert_same_both_ways(rng, choices=3)
    for step in (mark_address, low_tier_accept, events_step, hard_delete, tier_set):  # each at least once
        done.append(step(rng, cast))
        assert_review_tally_match()
    assert_same_both_ways(rng)
    assert Visit.objects.filter(review_status="accept").exists(), done


def test_the_first_flags_of_many_visits_move_the_tally_in_bulk_with_the_triggers_back(serve, small_team, monkeypatch):
    serve(small_team)
    streams_sync()
    monkeypatch.setattr(tallies, "BULK_FROM", 1)
    assert not ReviewTally.objects.filter(visits__gt=0).exists()
    flags.flags_rebuild()
    assert ReviewTally.objects.filter(visits__gt=0).exists()
    assert_review_tally_match()
    present = triggers.triggers_on(connection=connection, table="visits_visit")
    assert set(review_tally.TRIGGER_SET.names(connection.vendor)) <= present


# --- The pages read it --------------------------------------------------------------------------

PAGES = ("/review/reps/", "/review/rules/", "/review/rules.csv")
TALLIED_QUERIES = (
    "", "?review=all", "?rule=impossible_travel&rule=resource_location_too_far", "?tier=high&review=accept",
)  # fmt: skip


def page_answer(client, url: str):
    response = client.get(url)
    assert response.status_code == 200, url
    if url.startswith("/review/rules.csv"):
        return b"".join(response.streaming_content)
    if url.startswith("/review/reps/"):
        return [(row.rep.id, counts, rules) for row, counts, rules in response.context["rows"]]
    counts = response.context["counts"]
    return counts.rules, counts.tiers, counts.total


def test_the_pages_read_the_tally_not_the_visits_when_the_filters_allow(client, synced, cast, monkeypatch):
    flagged = list(Visit.objects.filter(flagged=True).values_list("id", flat=True))
    queue.decisions_record(visit_ids=flagged[::3], kind="accept", reason="gps_noise", note="", user=cast.reviewer)
    client.force_login(cast.manager)
    rep = Visit.objects.filter(flagged=True).values_list("rep_id", flat=True).first()
    day = Visit.objects.filter(flagged=True).order_by("visited_at").values_list("local_day", flat=True).first()
    tallied = [*TALLIED_QUERIES, f"?rep={rep}"]
    direct = [f"?start={day}", f"?rep={rep}&status=resource_location_too_far", "?resource_type=lead"]
    answers = {}
    for page in PAGES:
        for query in tallied + direct:
            with CaptureQueriesContext(connection) as queries:
                answers[page + query] = page_answer(client, page + query)
            read = " ".join(q["sql"] for q in queries.captured_queries)
            assert ("visits_visit" in read) == (query in direct), page + query
            assert ("visits_reviewtally" in read) == (query in tallied), page + query
    assert answers["/review/reps/"] and answers["/review/rules/"][2].flagged > 0
    monkeypatch.setattr(review_tally, "review_filter", lambda **kwargs: None)  # every page from the visits
    for url, answer in answers.items():
        assert page_answer(client, url) == answer, url


def test_a_filter_out_of_the_tally_is_none_and_the_users_reps_narrow_it():
    assert review_tally.review_filter(scope=Scope(), reps=None) == review_tally.ReviewFilter()
    both = review_tally.review_filter(scope=Scope(reps=frozenset({1, 2})), reps=frozenset({2, 3}), state="awaiting")
    assert both == review_tally.ReviewFilter(reps=frozenset({2}), state="awaiting")
    assert review_tally.review_filter(scope=Scope(reps=None), reps=frozenset({3})).reps == frozenset({3})
    for scope in (
        Scope(start=date(2026, 1, 1)), Scope(end=date(2026, 1, 1)), Scope(outcomes=frozenset({1})),
        Scope(statuses=frozenset({"verified"})), Scope(resource_type="lead"),
    ):  # fmt: skip
        assert review_tally.review_filter(scope=scope, reps=None) is None, scope


# --- Triggers and building ------------------------------------------------------------------------


def test_its_triggers_are_installed_and_the_check_names_a_missing_one():
    names = set(review_tally.TRIGGER_SET.names(connection.vendor))
    assert names and names <= triggers.triggers_on(connection=connection, table="visits_visit")
    assert review_tally.TRIGGER_SET in triggers.trigger_sets()
    triggers.triggers_drop(connection=connection, table="visits_visit", names=["visits_review_update_new"])
    errors = triggers_check(databases=["default"])
    assert [e.id for e in errors] == ["visits.E001"] and "visits_review_update_new" in errors[0].msg
    call_command("migrate", verbosity=0)
    assert names <= triggers.triggers_on(connection=connection, table="visits_visit")
    assert triggers_check(databases=["default"]) == []


def test_a_tally_left_empty_beside_flagged_visits_is_built_after_migrate(synced):
    ReviewTally.objects.all().delete()  # as migration 0020 leaves it
    assert review_tally.review_tally_unbuilt()
    call_command("migrate", verbosity=0)  # after_migrate: tallies.tallies_ensure
    assert not review_tally.review_tally_unbuilt()
    assert_review_tally_match()
    Visit.objects.update(flagged=False)  # nothing flagged: an empty tally is the right one
    ReviewTally.objects.all().delete()
    assert not review_tally.review_tally_unbuilt()


def test_the_tallies_rebuild_makes_the_review_tally_too(synced):
    with connection.cursor() as cursor:  # wrong counts, past the triggers
        cursor.execute("UPDATE visits_reviewtally SET visits = visits + 3")
    with pytest.raises(AssertionError, match="review tally differs"):
        assert_review_tally_match()
    tallies.tallies_rebuild()
    assert_review_tally_match()
