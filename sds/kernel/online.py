"""Online account features: fold arriving events into the store, read values at scoring time.

`OnlineFeatures` is the one implementation behind the feature-updater Lambda, `sds ingest`,
the local API's `POST /events` and the inference handler's enrichment; only the store differs
(DynamoDB on AWS, SQLite locally). Updates are idempotent per event id and safe under
concurrency: an entity is read, folded and committed with compare-and-swap, and a commit that
finds an event already recorded drops it and folds the rest again.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.aggregates import (
    AGGREGATES,
    LATENESS,
    LONGEST_WINDOW,
    Aggregate,
    EntityState,
    evaluate_columns,
    fold,
)
from sds.kernel.featurestore import (
    EMPTY,
    DuplicateEvents,
    FeatureStore,
    FeatureStoreError,
    Stored,
    VersionConflict,
)

COMMIT_ATTEMPTS = 10
TimedEvent = tuple[int, Mapping[str, Any]]  # (occurred_at in microseconds, the event)


def now_micros() -> int:
    return _time.time_ns() // 1000


@dataclass
class ApplyResult:
    """What one batch did; `failed` maps event ids to the reason they were not applied."""

    applied: int = 0
    duplicates: int = 0
    too_old: int = 0
    ignored: int = 0
    entities: int = 0
    commits: int = 0
    retries: int = 0
    failed: dict[str, str] = field(default_factory=dict)

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
        entities = {a.entity for a in aggregates}
        if len(entities) > 1:
            raise ValueError("all aggregates must share one entity key")
        self.entity_key = entities.pop() if entities else "account_id"

    def apply(self, events: Sequence[TimedEvent], *, now: int | None = None) -> ApplyResult:
        """Fold validated events into the store: one read for all their entities, then one
        commit per entity that changed (retried on conflicts and duplicates)."""
        now = self.clock() if now is None else now
        result = ApplyResult()
        by_entity: dict[str, list[TimedEvent]] = {}
        seen: set[str] = set()
        for occurred, event in events:
            event_id = str(event["event_id"])
            if event_id in seen:
                result.duplicates += 1
                continue
            seen.add(event_id)
            by_entity.setdefault(str(event[self.entity_key]), []).append((occurred, event))
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
                current = self._apply_entity(
                    entity, items[start : start + step], current, now, result
                )
        return result

    def _apply_entity(
        self,
        entity: str,
        items: list[TimedEvent],
        current: Stored | None,
        now: int,
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
                    events={i: times[i] + LONGEST_WINDOW + LATENESS for i in folded.applied},
                    expires_at=self._expiry(folded.state, now),
                )
                result.commits += 1
                current = Stored(folded.state, current.version + 1)
                break
            except DuplicateEvents as exc:
                result.duplicates += sum(1 for _, e in items if str(e["event_id"]) in exc.event_ids)
                items = [(t, e) for t, e in items if str(e["event_id"]) not in exc.event_ids]
            except VersionConflict:
                pass
            except FeatureStoreError as exc:
                result.failed.update({str(e["event_id"]): str(exc) for _, e in items})
                return None
            result.retries += 1
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
        return evaluate_columns(list(zip(states, times, strict=True)), aggregates=self.aggregates)
