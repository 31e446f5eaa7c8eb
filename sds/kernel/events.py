"""Activity events: the typed records the account aggregates are computed from.

Every activity event has a `type` and the envelope `event_id`, `account_id`, `occurred_at`; its
other fields depend on the kind. `payment` is the scored event (its fields are the feature
schema's inputs, `sds.kernel.features.FIELDS`); `login` is an attempt to log in; a new kind is one
entry in `KINDS`. `validate_batch` names every problem of a batch, like a bad request does, so a
batch with a problem is refused whole: nothing of it is stored.

A `label` says what a scored payment turned out to be: its `event_id`, `is_fraud`, when it was
known (`labelled_at`) and where from (`source`: chargeback, review, ...). Labels travel the same
event path but feed no aggregate: they land in S3 (locally under `.sds/labels/`) and are joined
with the captures by event id when a model is trained from what was served. `validate` checks the
activity kinds (`ACTIVITY_KINDS`) unless asked for others, so the feature store's updaters never
see a label.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sds.kernel.features import FIELDS, Field, Problem, TimeCheck, parse_time, validate_fields

TYPE = "type"
ENVELOPE: tuple[Field, ...] = tuple(
    f for f in FIELDS if f.name in ("event_id", "account_id", "occurred_at")
)


@dataclass(frozen=True)
class Kind:
    """One event type: all its fields (the envelope first) and what it means."""

    name: str
    fields: tuple[Field, ...]
    description: str


PAYMENT = Kind("payment", FIELDS, "A card payment from the account (the event the API scores)")
# The envelope's fields as a login has them: the same checks, described for a login.
_LOGIN_DESCRIPTIONS = {
    "event_id": "Unique id of the login attempt",
    "account_id": "The account logged in to: the account aggregates are kept per account",
    "occurred_at": "When the login was attempted (ISO 8601 with a time zone)",
}
LOGIN = Kind(
    "login",
    (
        *(replace(f, description=_LOGIN_DESCRIPTIONS[f.name]) for f in ENVELOPE),
        Field("outcome", "enum", "Whether the login succeeded", allowed=("success", "failure")),
    ),
    "An attempt to log in to the account",
)
LABEL = Kind(
    "label",
    (
        Field("event_id", "id", "The labelled payment's event_id"),
        Field("is_fraud", "boolean", "Whether the payment was fraud"),
        Field("labelled_at", "time", "When the label became known (ISO 8601 with a time zone)"),
        Field(
            "source",
            "id",
            "Where the label comes from: chargeback, review, customer_report, ...",
        ),
    ),
    "What a scored payment turned out to be (a chargeback, a review's verdict)",
)
KINDS: Mapping[str, Kind] = {kind.name: kind for kind in (PAYMENT, LOGIN, LABEL)}
# The kinds the account aggregates are computed from (what the feature store's updaters take).
ACTIVITY_KINDS: tuple[str, ...] = (PAYMENT.name, LOGIN.name)
LABEL_KINDS: tuple[str, ...] = (LABEL.name,)


def validate(
    event: Any,
    *,
    where: str = "event",
    kinds: Iterable[str] | None = None,
    extra_fields: Iterable[str] = (),
    check_time: TimeCheck | None = None,
) -> list[Problem]:
    """Every problem with one event of one of `kinds` (default: the activity kinds), in its
    fields' order. `check_time` is the caller's further rule for the event's time, whatever its
    kind (`sds.kernel.online.ahead_of_clock` at its clock): an activity event's `occurred_at`,
    what the feature store folds, and a label's `labelled_at`, which training would take as the
    latest word on its payment once that date came. Its reason is that field's problem, in the
    field's place among the others, as /predict places it (`sds.kernel.features.validate_event`)."""
    if not isinstance(event, Mapping):
        return [Problem(where, "must be a JSON object")]
    known = ACTIVITY_KINDS if kinds is None else tuple(kinds)
    kind = event.get(TYPE)
    if kind is None:
        return [Problem(f"{where}.{TYPE}", f"is required: one of {', '.join(known)}")]
    if not isinstance(kind, str) or kind not in known:
        shown = str(kind) if len(str(kind)) <= 40 else str(kind)[:40] + "..."
        return [Problem(f"{where}.{TYPE}", f"{shown!r} is not one of {', '.join(known)}")]
    return validate_fields(
        event,
        KINDS[kind].fields,
        where=where,
        extra_fields=(TYPE, *extra_fields),
        check_time=check_time,
    )


def validate_batch(
    events: Sequence[Any],
    *,
    where: str = "events",
    kinds: Iterable[str] | None = None,
    extra_fields: Iterable[str] = (),
    check_time: TimeCheck | None = None,
) -> list[Problem]:
    """Every problem of every event in a batch (`validate`), each located by its index, event
    by event."""
    kinds = None if kinds is None else tuple(kinds)
    problems: list[Problem] = []
    for index, event in enumerate(events):
        problems.extend(
            validate(
                event,
                where=f"{where}[{index}]",
                kinds=kinds,
                extra_fields=extra_fields,
                check_time=check_time,
            )
        )
    return problems


def conflict_message(event_id: str, first: tuple[str, str], second: tuple[str, str]) -> str:
    """How an event id with two contents in one input is refused, everywhere (training, batch
    runs, ingest, POST /events, the feature updater's batch): (account, where it is) of each
    occurrence."""
    if first[0] != second[0]:
        return (
            f"event {event_id} appears twice with different content, under two accounts: "
            f"{first[0]} ({first[1]}) and {second[0]} ({second[1]})"
        )
    return (
        f"event {event_id} appears twice with different content, under account {first[0]}: "
        f"{first[1]} and {second[1]}"
    )


def recorded_conflict_message(event_id: str, copy: tuple[str, str | None]) -> str:
    """`conflict_message`'s sibling for an event id the feature store already holds with other
    content (folded from an earlier input, whose place is not kept): (account, where it is, if
    known) of the copy that is refused."""
    account, where = copy
    place = f"{account}, {where}" if where else account
    return (
        f"event {event_id} was already stored from an earlier input with different content; "
        f"this copy (account {place}) is refused: event ids must not be reused"
    )


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_SCALARS = (str, int, bool, type(None))


def _canonical(value: Any) -> Any:
    # 5 and 5.0 are one JSON number (and equal in Python): one form, whichever a producer wrote.
    if type(value) is float and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def content_digest(event: Mapping[str, Any]) -> str:
    """The sha256 (hex) of a validated event's canonical JSON (keys sorted, no spaces, integral
    numbers without a fraction): the one test of "same content" for an event id, within one
    input (`first_conflict`) and against the ids the feature store has recorded."""
    # The updater digests every event it folds: a flat event's scalars go through as they are.
    canonical = {
        str(key): value if type(value) in _SCALARS else _canonical(value)
        for key, value in event.items()
    }
    return hashlib.sha256(_ENCODER.encode(canonical).encode("utf-8", "surrogatepass")).hexdigest()


def first_conflict(located: Iterable[tuple[str, Mapping[str, Any]]]) -> str | None:
    """`conflict_message` for the first event id of validated activity events (each with where
    it is) that appears again with other content (`content_digest`), or None. An exact copy is
    a redelivery, not a conflict: the updater counts it once."""
    seen: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for where, event in located:
        known = seen.setdefault(str(event["event_id"]), (where, event))
        if known[1] is not event and content_digest(known[1]) != content_digest(event):
            return conflict_message(
                str(event["event_id"]),
                (str(known[1]["account_id"]), known[0]),
                (str(event["account_id"]), where),
            )
    return None


def timed(events: Iterable[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Validated events with their time in microseconds, as the online updater takes them."""
    return [(parse_time(event["occurred_at"]), event) for event in events]
