"""The account aggregates of many events at once, each as of its own time (point in time).

Training asks "what did the account look like just before each payment?" over millions of
payments, and must get exactly what the online store returns at scoring time (the window rule
in `sds.kernel.aggregates`). This module answers it vectorized, from the same declarations:
for each aggregate, the events it reads and the query times are sorted together by (entity,
time), queries first at equal times, and a running count (or sum) of events at each query's
position gives "events of this entity before t"; the difference between the positions of t and
of the window start is the aggregate. Distinct counts do the same per distinct value.

Values are exact integers (counts, cents), so the result equals the online fold bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sds.kernel.aggregates import AGGREGATES, VALUES, Aggregate


def _codes(values: Sequence[str], *more: Sequence[str]) -> list[np.ndarray]:
    """Integer codes for strings, consistent across the given sequences."""
    table: dict[str, int] = {}
    out = []
    for sequence in (values, *more):
        out.append(np.fromiter((table.setdefault(v, len(table)) for v in sequence), np.int64))
    return out


def _before(
    entity: np.ndarray,
    time: np.ndarray,
    weight: np.ndarray,
    query_entity: np.ndarray,
    query_time: np.ndarray,
) -> np.ndarray:
    """For each query: the sum of `weight` over events of its entity strictly before its time,
    up to a per-entity constant (differences between two queries of one entity are exact)."""
    n = len(entity)
    entities = np.concatenate([entity, query_entity])
    times = np.concatenate([time, query_time])
    # Queries sort before events at the same (entity, time): "strictly before".
    kinds = np.concatenate([np.ones(n, np.int8), np.zeros(len(query_entity), np.int8)])
    order = np.lexsort((kinds, times, entities))
    weights = np.concatenate([weight, np.zeros(len(query_entity), weight.dtype)])
    running = np.cumsum(weights[order])
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    return running[position[n:]]


def compute(
    events: Sequence[Mapping[str, Any]],
    times: np.ndarray,
    query_entities: Sequence[str],
    query_times: np.ndarray,
    *,
    aggregates: tuple[Aggregate, ...] = AGGREGATES,
) -> dict[str, np.ndarray]:
    """Each aggregate's value (float64) for each query (entity, time), from `events`.

    `events` are distinct (deduplicated by event id) activity events with `times` their
    `occurred_at` in microseconds; a query counts the events of its entity in
    [window_start(t), t). Order does not matter.
    """
    times = np.asarray(times, dtype=np.int64)
    query_times = np.asarray(query_times, dtype=np.int64)
    if len(times) != len(events) or len(query_times) != len(query_entities):
        raise ValueError("each event needs a time, and each query an entity and a time")
    columns: dict[str, np.ndarray] = {}

    def column(name: str) -> np.ndarray:
        if name not in columns:
            columns[name] = np.array([str(e.get(name)) for e in events], dtype=object)
        return columns[name]

    keys = {a.entity for a in aggregates}
    codes = {key: _codes([str(e.get(key)) for e in events], query_entities) for key in keys}
    results: dict[str, np.ndarray] = {}
    for aggregate in aggregates:
        mask = column("type") == aggregate.source
        for key, value in aggregate.where:
            mask &= column(key) == value
        selected = np.flatnonzero(mask).tolist()
        all_entities, query_entity = codes[aggregate.entity]
        entity, time = all_entities[selected], times[selected]
        reach = query_times - aggregate.window
        starts = reach - reach % aggregate.bucket  # Aggregate.window_start, for every query
        if aggregate.function == "count_distinct":
            of = VALUES[str(aggregate.of)]
            values = np.array([str(of(events[i])) for i in selected])
            total = np.zeros(len(query_times), np.int64)
            for value in sorted(set(values.tolist())):
                has = values == value
                ones = np.ones(int(has.sum()), np.int64)
                inside = _window(entity[has], time[has], ones, query_entity, query_times, starts)
                total += inside > 0
            results[aggregate.name] = total / aggregate.scale
            continue
        if aggregate.function == "count":
            weight = np.ones(len(selected), np.int64)
        else:
            of = VALUES[str(aggregate.of)]
            weight = np.fromiter((int(of(events[i])) for i in selected), np.int64, len(selected))
        inside = _window(entity, time, weight, query_entity, query_times, starts)
        results[aggregate.name] = inside / aggregate.scale
    return results


def _window(
    entity: np.ndarray,
    time: np.ndarray,
    weight: np.ndarray,
    query_entity: np.ndarray,
    query_time: np.ndarray,
    query_start: np.ndarray,
) -> np.ndarray:
    """Sum of weights of the query entity's events in [query_start, query_time)."""
    m = len(query_time)
    both = _before(
        entity,
        time,
        weight,
        np.concatenate([query_entity, query_entity]),
        np.concatenate([query_time, query_start]),
    )
    return np.asarray(both[:m] - both[m:])
