"""Account aggregates declared once, computed the same way online and offline.

Each `Aggregate` says what it counts: the entity it is keyed by (`account_id`), the event type it
reads and which of those events count (`where`), how (`count`, `sum` or `count_distinct` of a
value), over which window, in buckets of which size. Everything else derives from these
declarations: the point-in-time computation over history (`sds.kernel.pointintime`), the online
state the feature updater folds events into (`fold`), the values read at scoring time
(`evaluate`), and the fingerprint a model's manifest records.

Which events count at time t (the one rule both sides implement): events of the entity whose
time lies in [floor(t - window), t), where floor rounds down to the aggregate's bucket size. The
window therefore starts on a bucket boundary and ends exactly at t, and the scored event itself
never counts. Online, the state holds one value per bucket; the buckets that start in
[floor(t - window), t) hold exactly those events as long as nothing at or after t has been
delivered yet, which holds at scoring time (docs/decisions.md, "Event-driven features"); two
events of one account at the very same microsecond are the one case it cannot order.

Values are integers (counts, sums in integer cents, sets of strings), so sums are exact in any
order of arrival: online and offline agree to the last digit, not within a tolerance.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.reference import USD_PER_UNIT

# Bump when the meaning of a declaration changes without its fields changing (e.g. the window
# rule above): models trained on the old meaning must not be served under the new one.
SEMANTICS_VERSION = 1

# msgspec where the bundle ships it (the inference function's): a state's JSON read straight into
# its types, in C (`decode_state`). Imported at the first state read, not with this module: the
# feature updater's bundle and the training image, which import it too, ship no msgspec.
_TypedDecoder = tuple[Callable[[str | bytes], Any] | None, type[Exception]]
_typed: _TypedDecoder | None = None


def _typed_decoder() -> _TypedDecoder:
    """msgspec's decoder of a state and its error, or (None, ValueError) without msgspec."""
    global _typed
    if _typed is None:
        try:
            import msgspec
        except ImportError:
            _typed = (None, ValueError)
        else:
            decoder = msgspec.json.Decoder(dict[str, dict[int, int | frozenset[str]]])
            _typed = (decoder.decode, msgspec.DecodeError)
    return _typed


SECOND = 1_000_000  # times are integer microseconds since the epoch
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

FUNCTIONS = ("count", "sum", "count_distinct")
# How far behind the updater's clock an event may be scored: buckets stay this long after they
# leave every window, so a payment scored a little after newer events were folded still sees its
# whole window.
LATENESS = HOUR

BucketValue = int | frozenset[str]
# aggregate name -> bucket start (microseconds) -> value in that bucket
EntityState = dict[str, dict[int, BucketValue]]
Query = tuple[Mapping[str, Mapping[int, BucketValue]], int]  # an entity's state, a time
AggregateColumns = dict[str, list[float]]  # aggregate name -> its value for each query


def amount_usd_cents(event: Mapping[str, Any]) -> int:
    """A payment's amount in US cents at the fixed reference rates (exact integer sums)."""
    return round(float(event["amount"]) * USD_PER_UNIT[event["currency"]] * 100)


# Values an aggregate can sum or count distinct, by name: event fields and derived values.
VALUES: Mapping[str, Callable[[Mapping[str, Any]], int | str]] = {
    "amount_usd_cents": amount_usd_cents,
    "country": lambda event: str(event["country"]),
}


@dataclass(frozen=True)
class Aggregate:
    name: str
    description: str
    source: str  # the event type it reads
    function: str  # count, sum or count_distinct
    window: int  # microseconds, a whole number of buckets
    bucket: int  # microseconds
    where: tuple[tuple[str, str], ...] = ()  # field == value, all must hold
    of: str | None = None  # the value summed or counted distinct (a key of VALUES)
    entity: str = "account_id"
    scale: int = 1  # the feature is value / scale (sums in cents become amounts)

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise ValueError(f"{self.name}: function must be one of {', '.join(FUNCTIONS)}")
        if (self.function == "count") != (self.of is None):
            raise ValueError(f"{self.name}: {self.function} needs `of` exactly when not count")
        if self.of is not None and self.of not in VALUES:
            raise ValueError(f"{self.name}: unknown value {self.of!r}")
        if self.bucket <= 0 or self.window <= 0 or self.window % self.bucket:
            raise ValueError(f"{self.name}: the window must be a positive number of buckets")

    def matches(self, event: Mapping[str, Any]) -> bool:
        return event.get("type") == self.source and all(
            event.get(key) == value for key, value in self.where
        )

    def contribution(self, event: Mapping[str, Any]) -> BucketValue:
        """What one matching event adds to its bucket."""
        if self.function == "count":
            return 1
        value = VALUES[str(self.of)](event)
        return frozenset({str(value)}) if self.function == "count_distinct" else int(value)

    def bucket_of(self, time: int) -> int:
        return time - time % self.bucket

    def window_start(self, time: int) -> int:
        """The first microsecond that counts at `time`: floor(time - window) to the bucket."""
        return self.bucket_of(time - self.window)

    def declaration(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entity": self.entity,
            "source": self.source,
            "where": [list(pair) for pair in self.where],
            "function": self.function,
            "of": self.of,
            "window_us": self.window,
            "bucket_us": self.bucket,
            "scale": self.scale,
        }


AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate(
        "num_failed_logins_last_24_hours",
        "Failed logins on the account in the 24 hours before the event",
        source="login",
        where=(("outcome", "failure"),),
        function="count",
        window=24 * HOUR,
        bucket=HOUR,
    ),
    Aggregate(
        "failed_logins_last_1h",
        "Failed logins on the account in the hour before the event (a burst of guesses)",
        source="login",
        where=(("outcome", "failure"),),
        function="count",
        window=HOUR,
        bucket=5 * MINUTE,
    ),
    Aggregate(
        "txn_count_last_1h",
        "Payments on the account in the hour before the event",
        source="payment",
        function="count",
        window=HOUR,
        bucket=5 * MINUTE,
    ),
    Aggregate(
        "amount_usd_last_24h",
        "Total amount paid from the account in the 24 hours before the event, in USD",
        source="payment",
        function="sum",
        of="amount_usd_cents",
        scale=100,
        window=24 * HOUR,
        bucket=HOUR,
    ),
    Aggregate(
        "distinct_countries_last_7d",
        "Countries the account paid in during the 7 days before the event",
        source="payment",
        function="count_distinct",
        of="country",
        window=7 * DAY,
        bucket=DAY,
    ),
)
NAMES: tuple[str, ...] = tuple(a.name for a in AGGREGATES)
LONGEST_WINDOW = max(a.window + a.bucket for a in AGGREGATES)
SOURCES: frozenset[str] = frozenset(a.source for a in AGGREGATES)


def fingerprint(aggregates: Iterable[Aggregate] = AGGREGATES) -> str:
    """sha256 of the declarations: a model records it; serving refuses another one."""
    document = {
        "semantics_version": SEMANTICS_VERSION,
        "aggregates": [a.declaration() for a in aggregates],
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


# Online: fold events into an entity's state, read values at a time ------------------------------


@dataclass
class FoldResult:
    """An entity's new state and what happened to the events folded into it."""

    state: EntityState
    applied: list[str] = field(default_factory=list)  # event ids that changed the state
    too_old: list[str] = field(default_factory=list)  # past the longest window + LATENESS: dropped
    ignored: list[str] = field(default_factory=list)  # no aggregate reads them


def fold(
    state: Mapping[str, Mapping[int, BucketValue]],
    events: Iterable[tuple[int, Mapping[str, Any]]],
    *,
    now: int,
    aggregates: tuple[Aggregate, ...] = AGGREGATES,
) -> FoldResult:
    """Add `(time, event)` pairs of one entity to its state, dropping expired buckets.

    Pure: the caller guarantees each event is folded once (by event id) and persists the result.
    Buckets are kept until `LATENESS` after they leave their aggregate's window, so a payment
    scored up to `LATENESS` behind `now` still reads its whole window; an event is dropped only
    when it can count for no such payment either: older than `now - LATENESS - LONGEST_WINDOW`.
    (Dropped at `now - LONGEST_WINDOW`, an event delivered a week late was missing from the
    7-day window of a payment scored minutes behind the updater's clock, which history counts.)
    """
    result = FoldResult({name: dict(buckets) for name, buckets in state.items()})
    horizon = now - LATENESS - max((a.window + a.bucket for a in aggregates), default=0)
    for time, event in events:
        event_id = str(event["event_id"])
        if time < horizon:
            result.too_old.append(event_id)
            continue
        touched = False
        for aggregate in aggregates:
            if not aggregate.matches(event):
                continue
            buckets = result.state.setdefault(aggregate.name, {})
            start = aggregate.bucket_of(time)
            buckets[start] = _combine(buckets.get(start), aggregate.contribution(event))
            touched = True
        (result.applied if touched else result.ignored).append(event_id)
    for aggregate in aggregates:
        buckets = result.state.get(aggregate.name, {})
        oldest = aggregate.window_start(now - LATENESS)
        for start in [s for s in buckets if s < oldest]:
            del buckets[start]
        if not buckets:
            result.state.pop(aggregate.name, None)
    return result


def _combine(current: BucketValue | None, added: BucketValue) -> BucketValue:
    if current is None:
        return added
    if isinstance(current, frozenset) and isinstance(added, frozenset):
        return current | added
    if isinstance(current, int) and isinstance(added, int):
        return current + added
    raise TypeError("a bucket mixes sets and numbers")


def evaluate(
    state: Mapping[str, Mapping[int, BucketValue]],
    time: int,
    *,
    aggregates: tuple[Aggregate, ...] = AGGREGATES,
) -> dict[str, float]:
    """Every aggregate's value at `time` from an entity's state (0 where nothing counts): one
    query of `evaluate_columns`, which holds the arithmetic."""
    columns = evaluate_columns([(state, time)], aggregates=aggregates)
    return {name: column[0] for name, column in columns.items()}


def evaluate_columns(
    queries: Sequence[Query], *, aggregates: tuple[Aggregate, ...] = AGGREGATES
) -> AggregateColumns:
    """Every aggregate's value for many (state, time) queries at once, as columns:
    `columns[name][i]` is aggregate `name` of `queries[i]` (0 where nothing counts).

    The columns are what the features read (`sds.kernel.features.Columns.with_inputs`). The
    scoring path holds its `evaluator` instead (`sds.kernel.online.OnlineFeatures`): finding the
    one of `aggregates` hashes every declaration, as much as evaluating one query."""
    return evaluator(aggregates)(queries)


def _evaluation(aggregates: tuple[Aggregate, ...], keep: str) -> list[str]:
    """The statements that evaluate every aggregate of `aggregates` for one query (`state`,
    `time`), each aggregate's window, bucket and scale written in as constants, and keep each
    value by `keep`, formatted with its index and value (`evaluator`, `row_evaluator`)."""
    body: list[str] = []
    for index, aggregate in enumerate(aggregates):
        distinct = aggregate.function == "count_distinct"
        value = f"{'len(seen)' if distinct else 'total'} / {aggregate.scale!r}"
        body += [
            f"buckets = state.get({aggregate.name!r})",
            "if buckets:",
            f"    first = time - {aggregate.window!r}",
            f"    first -= first % {aggregate.bucket!r}",
            "    seen = set()" if distinct else "    total = 0",
            "    for start, value in buckets.items():",
            "        if first <= start < time:",
            "            seen.update(value)" if distinct else "            total += value",
            "    " + keep.format(index=index, value=value),
            "else:",
            "    " + keep.format(index=index, value="0.0"),
        ]
    return body or ["pass"]


def _generated(source: str, name: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<aggregates' evaluation>", "exec"), namespace)
    return namespace[name]


@functools.cache
def evaluator(aggregates: tuple[Aggregate, ...]) -> Callable[[Sequence[Query]], AggregateColumns]:
    """`evaluate_columns` for `aggregates`: a function generated from their declarations (once
    per set of declarations), one pass over the queries with every aggregate's name, window,
    bucket and scale written in as constants, so evaluating reads no declaration at all. For
    each query and aggregate, the rule of this module: the buckets that start in
    [floor(time - window), time), summed (`count`, `sum`) or their sets' union counted
    (`count_distinct`), divided by `scale`; an aggregate with no buckets costs one lookup."""
    names = [aggregate.name for aggregate in aggregates]
    source = "\n".join(
        [
            "def evaluate(queries):",
            *(f"    column_{i} = []; append_{i} = column_{i}.append" for i in range(len(names))),
            "    for state, time in queries:",
            *(f"        {line}" for line in _evaluation(aggregates, "append_{index}({value})")),
            "    return {"
            + ", ".join(f"{name!r}: column_{i}" for i, name in enumerate(names))
            + "}",
        ]
    )
    evaluate: Callable[[Sequence[Query]], AggregateColumns] = _generated(source, "evaluate")
    return evaluate


@functools.cache
def row_evaluator(
    aggregates: tuple[Aggregate, ...],
) -> Callable[[Mapping[str, Mapping[int, BucketValue]], int], tuple[float, ...]]:
    """One query's values of `aggregates`, in their order: `evaluator`'s statements generated
    into a function of (state, time) that returns a tuple, no list or dict around it (the
    aggregates of a one-event request, `sds.kernel.features.featurize_row`'s `computed`)."""
    source = "\n".join(
        [
            "def evaluate_row(state, time):",
            *(f"    {line}" for line in _evaluation(aggregates, "value_{index} = {value}")),
            "    return (" + "".join(f"value_{i}, " for i in range(len(aggregates))) + ")",
        ]
    )
    evaluate_row: Callable[[Mapping[str, Mapping[int, BucketValue]], int], tuple[float, ...]] = (
        _generated(source, "evaluate_row")
    )
    return evaluate_row


def state_to_json(state: Mapping[str, Mapping[int, BucketValue]]) -> dict[str, dict[str, Any]]:
    """A JSON-able form of a state (bucket starts as strings, sets as sorted lists)."""
    return {
        name: {
            str(start): sorted(value) if isinstance(value, frozenset) else value
            for start, value in sorted(buckets.items())
        }
        for name, buckets in state.items()
    }


def state_from_json(document: Mapping[str, Mapping[str, Any]]) -> EntityState:
    return {
        name: {
            int(start): frozenset(value) if isinstance(value, list) else int(value)
            for start, value in buckets.items()
        }
        for name, buckets in document.items()
    }


def encode_state(state: Mapping[str, Mapping[int, BucketValue]]) -> str:
    """The text a feature store keeps: `state_to_json`, compact, keys sorted."""
    return json.dumps(state_to_json(state), separators=(",", ":"), sort_keys=True)


def decode_state(text: str | bytes) -> EntityState:
    """A state from the text `encode_state` wrote: what `state_from_json` makes of the standard
    library's parse of it, value for value.

    On the scoring path once per account of a request, so read by msgspec where the bundle has
    it: the JSON straight into integer bucket starts and integer or frozenset values, about three
    times faster than orjson's parse and a Python pass over the buckets (decision 49). msgspec
    takes only what `encode_state` writes (canonical integers, lists of strings): anything else
    (a float, a boolean, a lone surrogate escape, a key such as "05") is read by the standard
    library, which gives the same state or names the problem."""
    decode, refused = _typed or _typed_decoder()
    if decode is not None:
        try:
            state: EntityState = decode(text)
        except refused:  # a ValidationError is one; the standard library names the problem
            pass
        else:
            return state
    return state_from_json(json.loads(text))
