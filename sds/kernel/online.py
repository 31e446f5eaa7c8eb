"""Online account features: fold arriving events into the store, read values at scoring time.

`OnlineFeatures` is the one implementation behind the feature-updater Lambda, `sds ingest`,
the local API's `POST /events` and the inference handler's enrichment; only the store differs
(DynamoDB on AWS, SQLite locally). Updates are idempotent per event id and safe under
concurrency: an entity is read, folded and committed with compare-and-swap, and a commit that
finds an event already recorded drops it and folds the rest again.

The store records each event id with the digest of its content (`sds.kernel.events.
content_digest`): a copy with the same content is a duplicate (a retry, an at-least-once
redelivery: counted, silent), one with other content is a conflict, never applied and reported
per event id (`ApplyResult.conflicts`). `recorded_conflicts` finds them before anything is
committed, so a caller can refuse a whole input (`sds ingest`, `POST /events`); a writer racing
in between is still caught at commit.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.aggregates import (
    AGGREGATES,
    LATENESS,
    MINUTE,
    SECOND,
    Aggregate,
    EntityState,
    evaluator,
    fold,
    row_evaluator,
)
from sds.kernel.events import conflict_message, content_digest, recorded_conflict_message
from sds.kernel.featurestore import (
    EMPTY,
    DuplicateEvents,
    FeatureStore,
    FeatureStoreError,
    Stored,
    VersionConflict,
    split_recorded,
)

COMMIT_ATTEMPTS = 10
TimedEvent = tuple[int, Mapping[str, Any]]  # (occurred_at in microseconds, the event)


def now_micros() -> int:
    return _time.time_ns() // 1000


# How far ahead of the clock folding them an event may be dated (producers' clocks drift a
# little). A later one is refused wherever events enter (the feature updater, `sds ingest`, the
# local `POST /events`): its producer's clock is wrong, and folding it would keep a bucket until
# that date.
FUTURE_TOLERANCE = 5 * MINUTE


def ahead_of_clock(occurred: int, now: int) -> str | None:
    """Why an event dated `occurred` may not be folded at `now`, or None if it may."""
    if occurred <= now + FUTURE_TOLERANCE:
        return None
    # Whole seconds rounded up: 300.5 s is "301 s", never "300 s (more than 300 s)".
    return (
        f"is {-((now - occurred) // SECOND)} s ahead of the clock (more than "
        f"{FUTURE_TOLERANCE // SECOND} s): is the producer's clock right?"
    )


@dataclass
class ApplyResult:
    """What one batch did; `failed` maps event ids to the reason they were not applied (the
    store failed: try again), `conflicts` event ids to why they never will be (the id is
    recorded with other content)."""

    applied: int = 0
    duplicates: int = 0
    too_old: int = 0
    ignored: int = 0
    entities: int = 0
    commits: int = 0
    retries: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "too_old": self.too_old,
            "ignored": self.ignored,
            "entities": self.entities,
            "commits": self.commits,
            "retries": self.retries,
            "failed": dict(self.failed),
            "conflicts": dict(self.conflicts),
        }


class OnlineFeatures:
    def __init__(
        self,
        store: FeatureStore,
        *,
        aggregates: tuple[Aggregate, ...] = AGGREGATES,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        self.store = store
        self.aggregates = aggregates
        self.clock = clock
        self.names = tuple(a.name for a in aggregates)
        self._evaluate = evaluator(aggregates)  # `evaluate_columns`, found once
        self._evaluate_row = row_evaluator(aggregates)
        entities = {a.entity for a in aggregates}
        if len(entities) > 1:
            raise ValueError("all aggregates must share one entity key")
        self.entity_key = entities.pop() if entities else "account_id"
        # How long after it happened an event can still count under these definitions (what
        # `fold` drops past): its id is kept that long, so a redelivery is never folded twice.
        self.id_lifetime = max((a.window + a.bucket for a in aggregates), default=0) + LATENESS

    def apply(
        self,
        events: Sequence[TimedEvent],
        *,
        now: int | None = None,
        out_of_time: Callable[[], bool] | None = None,
    ) -> ApplyResult:
        """Fold validated events into the store: one read for all their entities, then one
        commit per entity that changed (retried on conflicts and duplicates). Once
        `out_of_time()` says so, no further commit is started: the events left are in
        `result.failed`, not attempted (a caller with a deadline, the updater's invocation, gives
        them back instead of being stopped with every event of its batch in doubt)."""
        now = self.clock() if now is None else now
        result = ApplyResult()
        by_entity: dict[str, list[TimedEvent]] = {}
        digests: dict[str, str] = {}
        first: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for index, (occurred, event) in enumerate(events):
            event_id = str(event["event_id"])
            digest = content_digest(event)
            if event_id in digests:
                if digests[event_id] == digest:
                    result.duplicates += 1
                elif event_id not in result.conflicts:
                    # Callers refuse such an input first (`first_conflict`); never fold either.
                    known_index, known = first[event_id]
                    result.conflicts[event_id] = conflict_message(
                        event_id,
                        (str(known[self.entity_key]), f"events[{known_index}]"),
                        (str(event[self.entity_key]), f"events[{index}]"),
                    )
                continue
            digests[event_id] = digest
            first[event_id] = (index, event)
            by_entity.setdefault(str(event[self.entity_key]), []).append((occurred, event))
        if result.conflicts:
            by_entity = {
                entity: kept
                for entity, items in by_entity.items()
                if (
                    kept := [(t, e) for t, e in items if str(e["event_id"]) not in result.conflicts]
                )
            }
        result.entities = len(by_entity)
        try:
            stored = dict(self.store.read(list(by_entity)))
        except FeatureStoreError as exc:
            for items in by_entity.values():
                result.failed.update({str(e["event_id"]): str(exc) for _, e in items})
            return result
        limit = self.store.max_events_per_commit
        for entity, items in by_entity.items():
            current: Stored | None = stored.get(entity, EMPTY)
            # A store may bound the events one commit records (DynamoDB: 99): an account with
            # more in this batch is committed in parts, each atomic with its event ids.
            step = limit or len(items)
            for start in range(0, len(items), step):
                part = items[start : start + step]
                if out_of_time is not None and out_of_time():
                    reason = f"{entity}: not attempted, out of time before its commit"
                    result.failed.update({str(e["event_id"]): reason for _, e in part})
                    continue
                current = self._apply_entity(entity, part, current, now, digests, result)
        return result

    def _apply_entity(
        self,
        entity: str,
        items: list[TimedEvent],
        current: Stored | None,
        now: int,
        digests: Mapping[str, str],
        result: ApplyResult,
    ) -> Stored | None:
        """Fold and commit one part of an entity's events; the state it left (None: unknown,
        read it again), and each event that could not be applied in `result.failed`."""
        if current is None:
            try:
                current = self.store.read([entity]).get(entity, EMPTY)
            except FeatureStoreError as exc:
                result.failed.update({str(e["event_id"]): str(exc) for _, e in items})
                return None
        for _attempt in range(COMMIT_ATTEMPTS):
            folded = fold(current.state, items, now=now, aggregates=self.aggregates)
            if not folded.applied:
                break
            times = {str(e["event_id"]): t for t, e in items}
            try:
                self.store.commit(
                    entity,
                    expected_version=current.version,
                    state=folded.state,
                    events={i: times[i] + self.id_lifetime for i in folded.applied},
                    expires_at=self._expiry(folded.state, now),
                    digests={i: digests[i] for i in folded.applied},
                )
                result.commits += 1
                current = Stored(folded.state, current.version + 1)
                break
            except DuplicateEvents as exc:
                result.duplicates += sum(1 for _, e in items if str(e["event_id"]) in exc.event_ids)
                for _, event in items:
                    if (event_id := str(event["event_id"])) in exc.conflicts:
                        result.conflicts[event_id] = recorded_conflict_message(
                            event_id, (entity, None)
                        )
                recorded = exc.event_ids | exc.conflicts
                items = [(t, e) for t, e in items if str(e["event_id"]) not in recorded]
            except VersionConflict:
                # Another writer changed the account first: fold again onto what it wrote. (A
                # commit made again without events already stored is no retry: they are counted
                # as duplicates.)
                result.retries += 1
            except FeatureStoreError as exc:
                result.failed.update({str(e["event_id"]): str(exc) for _, e in items})
                return None
            try:
                current = self.store.read([entity]).get(entity, EMPTY)
            except FeatureStoreError as exc:
                result.failed.update({str(e["event_id"]): str(exc) for _, e in items})
                return None
        else:
            reason = f"{entity}: still conflicting after {COMMIT_ATTEMPTS} attempts"
            result.failed.update({str(e["event_id"]): reason for _, e in items})
            return None
        result.applied += len(folded.applied)
        result.too_old += len(folded.too_old)
        result.ignored += len(folded.ignored)
        return current

    def recorded_conflicts(
        self, located: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[tuple[str, str]]:
        """(where, `recorded_conflict_message`) for each validated event (with where it is)
        whose id the store already holds with other content, in input order: what refuses an
        input before anything of it is committed. One consistent read of the ids."""
        if not located:
            return []
        recorded = self.store.recorded([str(event["event_id"]) for _, event in located])
        if not recorded:
            return []
        digests = {
            event_id: content_digest(e)
            for _, e in located
            if (event_id := str(e["event_id"])) in recorded
        }
        _, conflicting = split_recorded(recorded, digests)
        refused = set(conflicting)
        found: list[tuple[str, str]] = []
        for where, event in located:
            event_id = str(event["event_id"])
            if event_id in refused:
                account = str(event[self.entity_key])
                found.append((where, recorded_conflict_message(event_id, (account, where))))
        return found

    def _expiry(self, state: EntityState, now: int) -> int:
        """When nothing in `state` can count any more (DynamoDB TTL, SQLite expiry)."""
        ends = [
            max(buckets) + aggregate.bucket + aggregate.window + LATENESS
            for aggregate in self.aggregates
            if (buckets := state.get(aggregate.name))
        ]
        return max(ends, default=now)

    def read(self, queries: Sequence[tuple[str, int]]) -> list[dict[str, float]]:
        """Each (entity, time)'s aggregate values, with one store read for the whole batch:
        `read_columns` as one mapping per query."""
        columns = self.read_columns([e for e, _ in queries], [t for _, t in queries])
        return [{name: column[i] for name, column in columns.items()} for i in range(len(queries))]

    def read_columns(self, entities: Sequence[str], times: Sequence[int]) -> dict[str, list[float]]:
        """`read` as columns, the scoring path's form: `columns[name][i]` is aggregate `name` of
        `entities[i]` at `times[i]`, with one store read for the whole batch."""
        stored = self.store.read(list(dict.fromkeys(entities)))
        empty = EMPTY.state
        states = [(found.state if (found := stored.get(e)) else empty) for e in entities]
        return self._evaluate(list(zip(states, times, strict=True)))

    def read_row(self, entity: str, time: int) -> tuple[float, ...]:
        """`read_columns` of one query as a row: the values of the aggregates (in `names` order)
        of `entity` at `time`, read and evaluated with no list or dict around them (a one-event
        request's, `sds.kernel.features.featurize_row`)."""
        found = self.store.read([entity]).get(entity)
        return self._evaluate_row(EMPTY.state if found is None else found.state, time)
