"""What the Core API adds beside the Firehose: the reps' teams from GET /v2/users and every
outcome's name from GET /v2/visit_outcomes, refreshed at most hourly (every run of sync_visits),
with each feature's state kept in CoreApiState: a 403 switches a feature off, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from visits.ingest.sync import read_only_archive
from visits.models import CoreApiState, CoreFeature, Outcome, RejectedItem, Rep, Stream
from visits.review.stored import reps_lock
from visits.sell import core, events

log = logging.getLogger(__name__)

# The Rep columns only the Core API knows; always taken from it.
TEAM_FIELDS = ("team_name", "group_id", "group_name", "reports_to", "timezone")
# The columns the Firehose users stream owns; taken from the Core API only for a rep that stream
# has never described (Rep.sequence 0: known from a visit's creator_id, or from the Core API).
IDENTITY_FIELDS = ("name", "email", "status", "role")


@dataclass
class CoreRefresh:
    """What one refresh of a feature did, worded for the command and the log."""

    feature: str
    ran: bool = False  # a request was made
    items: int = 0  # users or outcomes stored
    created: int = 0  # new Rep or Outcome rows
    rejected: int = 0
    error: str = ""
    skipped: str = ""  # why nothing was asked
    capped: bool = False  # the list reached Sell's 100 pages: more may exist than were stored

    def summary(self) -> str:
        if self.error:
            return f"Core API {self.feature}: {self.error}"
        if self.skipped:
            return f"Core API {self.feature}: {self.skipped}"
        extra = f", {self.rejected} rejected" if self.rejected else ""
        extra += ", only the first 10,000 (Sell lists no more)" if self.capped else ""
        return f"Core API {self.feature}: {self.items} stored ({self.created} new){extra}"


def state_get(feature: str) -> CoreApiState:
    return CoreApiState.objects.get_or_create(feature=feature)[0]


# What happened to a feature, recorded for the status page (the backfill records "visits" with these too).


def state_refuse(feature: str, *, message: str) -> None:
    """A 403: the feature is off until an admin switches it back on."""
    log.warning("Core API %s switched off: %s", feature, message)
    CoreApiState.objects.update_or_create(
        feature=feature, defaults={"available": False, "refused_at": timezone.now(), "refused_message": message}
    )


def state_error(feature: str, *, message: str) -> None:
    log.warning("Core API %s failed: %s", feature, message)
    CoreApiState.objects.update_or_create(
        feature=feature, defaults={"last_error": message, "last_error_at": timezone.now()}
    )


def state_success(feature: str) -> None:
    """It worked: the last error is over (its time stays, for when it last failed)."""
    CoreApiState.objects.update_or_create(
        feature=feature, defaults={"last_success_at": timezone.now(), "last_error": ""}
    )


def refresh_due(state: CoreApiState, *, now: datetime) -> bool:
    """Hourly (SELL_CORE_REFRESH_SECONDS) after the last attempt, whether it worked or failed: a
    Core API that is down is not asked again on every poll of the worker."""
    last = max((t for t in (state.last_success_at, state.last_error_at) if t), default=None)
    return last is None or now - last >= timedelta(seconds=settings.SELL_CORE_REFRESH_SECONDS)


def feature_run(
    *, feature: str, force: bool, fetch: Callable[[core.CoreClient, CoreRefresh], None], client: core.CoreClient | None
) -> CoreRefresh:
    """The bookkeeping every feature shares.

    1. A feature switched off (an earlier 403) is skipped until an admin switches it back on.
    2. Unless forced, a feature refreshed (or failed) within the hour is skipped.
    3. `fetch` reads and stores; a 403 switches the feature off with Sell's sentence, any other
       SellError is recorded as the last error; neither is raised.
    """
    result = CoreRefresh(feature=feature)
    state = state_get(feature)
    now = timezone.now()
    if not state.available:
        result.skipped = f"switched off since {state.refused_at:%Y-%m-%d %H:%M} UTC ({state.refused_message})"
        return result
    if not force and not refresh_due(state, now=now):
        result.skipped = "refreshed within the hour"
        return result
    own = client is None
    client = client or core.CoreClient()
    result.ran = True
    try:
        fetch(client, result)
    except core.FeatureUnavailable as exc:
        result.error = str(exc)
        state_refuse(feature, message=str(exc))
        return result
    except core.SellError as exc:
        result.error = str(exc)
        state_error(feature, message=str(exc))
        return result
    finally:
        if own:
            client.close()
    state_success(feature)
    return result


def rejects_keep(*, rejects: list[tuple[object, str]], stream: str) -> int:
    """Store rejected Core API items like the Firehose's (RejectedItem, once per digest)."""
    rows = {}
    for raw, reason in rejects:
        text, digest = events.raw_digest(raw)
        rows[digest] = RejectedItem(stream=stream, digest=digest, raw=text, reason=events.reason_storable(reason))
    RejectedItem.objects.bulk_create(list(rows.values()), ignore_conflicts=True)
    return len(rejects)


def users_refresh(*, force: bool = False, client: core.CoreClient | None = None) -> CoreRefresh:
    """Every user of GET /v2/users onto Rep: the team fields always; name, email, status and
    role only where the Firehose users stream has not described the rep (it stays the authority
    for those: it is newer, event by event). Users the Firehose never named become Reps."""

    def fetch(client: core.CoreClient, result: CoreRefresh) -> None:
        users: dict[int, dict] = {}
        rejects: list[tuple[object, str]] = []
        listing = client.users_all()
        for page in listing:
            rejects += [(r.raw, f"Core API /v2/users: {r.reason}") for r in page.rejects]
            for data in page.items:
                try:
                    user = core.user_parse(data)
                except events.Rejected as exc:
                    rejects.append(({"data": data}, f"Core API /v2/users: {exc}"))
                    continue
                users[user.pop("id")] = user
        result.items, result.created = users_store(users=users)
        result.capped = listing.capped
        if listing.capped:
            log.warning("Core API users: Sell listed only the first 10,000 users; the others keep what they had")
        result.rejected = rejects_keep(rejects=rejects, stream=Stream.USERS)

    return feature_run(feature=CoreFeature.USERS, force=force, fetch=fetch, client=client)


def users_store(*, users: dict[int, dict]) -> tuple[int, int]:
    """Write the users; returns (stored, created)."""
    now = timezone.now()
    with transaction.atomic():
        reps_lock(rep_ids=users)  # at once, in id order: the lock order of review/stored.py
        existing = Rep.objects.in_bulk(list(users))
        fresh = [
            Rep(id=user_id, **fields, sequence=0, core_synced_at=now)
            for user_id, fields in users.items()
            if user_id not in existing
        ]
        Rep.objects.bulk_create(fresh, ignore_conflicts=True)
        unnamed = []
        for user_id, rep in existing.items():
            fields = users[user_id]
            for name in TEAM_FIELDS:
                setattr(rep, name, fields[name])
            rep.core_synced_at = rep.updated_at = now
            if rep.sequence == 0:
                for name in IDENTITY_FIELDS:
                    setattr(rep, name, fields[name])
                unnamed.append(rep)
        # Two writes, so a rep the users stream has described never gets its identity written back.
        team_columns = [*TEAM_FIELDS, "core_synced_at", "updated_at"]
        Rep.objects.bulk_update(list(existing.values()), team_columns, batch_size=500)
        Rep.objects.bulk_update(unnamed, list(IDENTITY_FIELDS), batch_size=500)
    return len(users), len(fresh)


def outcomes_refresh(*, force: bool = False, client: core.CoreClient | None = None) -> CoreRefresh:
    """Every outcome's name from GET /v2/visit_outcomes, also those no visit has used yet. The
    name is as of now (name_seen_at), so an older visit event does not rename it back."""

    def fetch(client: core.CoreClient, result: CoreRefresh) -> None:
        names: dict[int, str] = {}
        rejects: list[tuple[object, str]] = []
        for page in client.outcomes_all():
            rejects += [(r.raw, f"Core API /v2/visit_outcomes: {r.reason}") for r in page.rejects]
            for data in page.items:
                try:
                    outcome_id, name = core.outcome_parse(data)
                except events.Rejected as exc:
                    rejects.append(({"data": data}, f"Core API /v2/visit_outcomes: {exc}"))
                    continue
                names[outcome_id] = name
        now = timezone.now()
        with transaction.atomic():
            existing = Outcome.objects.select_for_update().in_bulk(list(names))
            fresh = [Outcome(id=oid, name=name, name_seen_at=now) for oid, name in names.items() if oid not in existing]
            Outcome.objects.bulk_create(fresh, ignore_conflicts=True)
            for outcome in existing.values():
                outcome.name, outcome.name_seen_at = names[outcome.id], now
            Outcome.objects.bulk_update(list(existing.values()), ["name", "name_seen_at"], batch_size=500)
        result.items, result.created = len(names), len(fresh)
        # The outcomes have no stream of their own: their rejects sit with the visits'.
        result.rejected = rejects_keep(rejects=rejects, stream=Stream.VISITS)

    return feature_run(feature=CoreFeature.OUTCOMES, force=force, fetch=fetch, client=client)


def core_refresh(*, force: bool = False) -> list[CoreRefresh]:
    """Users, then outcomes, on one client (one connection)."""
    if read_only_archive():
        return []
    client = core.CoreClient()
    try:
        return [users_refresh(force=force, client=client), outcomes_refresh(force=force, client=client)]
    finally:
        client.close()
