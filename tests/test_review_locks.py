"""Two writers of one rep's visits at once: a decision (the visit's review_status, then the risk of
the rep's flagged visits) and either a flags refresh of that rep (its visits' flags and risk) or an
ingested page of its visits. On PostgreSQL each runs in its own connection, interleaved on purpose:
the decision holds its visit's row when the other starts writing. Both must complete, in the lock
order of visits/review/stored.py (the reps' rows first), never a deadlock; on SQLite (one writer at
a time) they run one after the other. Either way the stored flags, review status and risk end as a
computation from scratch."""

import threading
import time

import pytest
from django.db import connection, connections

from tests.conftest import assert_flags_match, user_make
from tests.test_customers import visit_add
from tests.test_risk import apply, visit_event
from visits.models import DecisionKind, DirtyRep, SyncState, Visit
from visits.review import flags, stored
from visits.review.queue import decisions_record

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20  # seconds at most for any step: a hang fails the test, it never stops the suite


def world() -> None:
    """Rep 1's five visits, flagged (by Sell's unknown location), with their risk."""
    for n in range(1, 6):
        visit_add(n, position=None, status="location_unknown")
    flags.flags_rebuild()
    assert Visit.objects.filter(flagged=True).count() == 5


def in_thread(name: str, work, errors: dict, pids: dict) -> threading.Thread:
    """Run `work` in a thread with its own connection, with low lock and deadlock timeouts."""

    def run() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '10s'")
                cursor.execute("SET deadlock_timeout = '50ms'")
                cursor.execute("SELECT pg_backend_pid()")
                pids[name] = cursor.fetchone()[0]
            work()
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors[name] = exc
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def waiting_on_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


def decide_while(other, monkeypatch) -> None:
    """Reject visit 5 while `other` runs: on PostgreSQL, the decision stops after writing the
    visit's review_status (before its rep's risk) until `other`, in its own connection, waits for a
    lock (the decision's, which it must wait for); on SQLite, one after the other."""
    reviewer = user_make("reviewer")

    def decide() -> None:
        decisions_record(visit_ids=[5], kind=DecisionKind.REJECT, note="", user=reviewer)

    if connection.vendor != "postgresql":
        decide()
        other()
        return
    held, go = threading.Event(), threading.Event()
    risk_refresh = stored.risk_refresh

    def paused(*, rep_ids):
        if threading.current_thread().name == "decision":
            held.set()
            go.wait(WAIT)
        risk_refresh(rep_ids=rep_ids)

    monkeypatch.setattr(stored, "risk_refresh", paused)  # models.review_status_refresh imports it per call
    errors: dict[str, Exception] = {}
    pids: dict[str, int] = {}
    decision = in_thread("decision", decide, errors, pids)
    assert held.wait(WAIT), f"the decision never reached its risk refresh: {errors}"
    second = in_thread("other", other, errors, pids)
    deadline = time.monotonic() + WAIT
    while second.is_alive() and time.monotonic() < deadline:
        if "other" in pids and waiting_on_lock(pids["other"]):
            break  # it waits for the decision: for rep 1's row, or (without the order) visit 5's
        time.sleep(0.01)
    go.set()
    decision.join(WAIT)
    second.join(WAIT)
    assert not decision.is_alive() and not second.is_alive(), "a transaction still hangs"
    assert not errors, f"a transaction failed: {errors}"


def test_a_decision_and_a_flags_refresh_of_the_same_rep_both_complete(monkeypatch):
    world()
    # The stored risks made wrong and the rep marked whole: the refresh rewrites every visit's risk,
    # visits 1 to 4 (which the decision's risk refresh wants) before visit 5 (which it holds).
    Visit.objects.update(risk=1)
    DirtyRep.objects.create(rep_id=1, whole=True)
    decide_while(flags.flags_refresh, monkeypatch)
    assert Visit.objects.get(id=5).review_status == DecisionKind.REJECT
    assert_flags_match()  # flags, Visit.flagged and risk as a computation from scratch; no rep left dirty
    risks = dict(Visit.objects.values_list("id", "risk"))
    assert risks[1] == risks[4] > risks[5] > 1  # the others count visit 5's rejection


def test_a_decision_and_an_ingested_page_of_the_same_rep_both_complete(monkeypatch):
    world()
    SyncState.objects.create(stream="visits", lock_owner="me")
    # A page updating visit 1 (which the decision's risk refresh wants) before visit 5 (which it
    # holds), both now of a lead; the flags then refreshed as a pull does.
    times = dict(Visit.objects.filter(id__in=[1, 5]).values_list("id", "visited_at"))
    page = [visit_event(vid, 2, rep=1, at=times[vid], lat=None, lng=None, status="location_unknown") for vid in (1, 5)]
    decide_while(lambda: apply(*page), monkeypatch)
    assert Visit.objects.get(id=5).review_status == DecisionKind.REJECT
    assert set(Visit.objects.filter(id__in=[1, 5]).values_list("resource_type", "sequence")) == {("lead", 2)}
    assert_flags_match()
    risks = dict(Visit.objects.values_list("id", "risk"))
    assert risks[1] == risks[4] > risks[5]
