"""Event-driven features for card-payment fraud: each feature defined once, as an expression.

A batch of events is read as columns (`Columns`: one sequence per input, in event order). Each
entry of `FEATURES` is one Python expression over an event's inputs (`log1p(amount)`), compiled
at import into the forms a batch needs: the feature's columns (`Feature.compute`), from which a
large batch's matrix is assembled; a term of one generated comprehension that writes a small
batch's rows (`_compile_rows`); and a term of one generated function of a single event's inputs
(`_compile_row`), for the one-event requests that are most of serving. That one definition
serves every caller: the inference Lambda featurizes a request's events together
(`featurize_columns`, which builds the float32 matrix ONNX Runtime scores) and a one-event
request from its fields alone (`featurize_row`), training maps it over history in chunks
(`featurize_batch`), and `featurize(event)` is that row as floats. There is no second version for
serving: every form is compiled from the same text.

`validate_event` checks one event against `FIELDS`, the published input schema that the manifest
records and the API documents, and names every problem it finds. It is the one gate every entry
point shares (/predict, /events, `sds ingest`, `sds label`, the feature updater, the training and
batch readers): a string that is not valid Unicode (a lone surrogate, which the standard
library's JSON parser reads from an escape) is refused there, so no store or capture ever holds
one. `BatchDecoder` is its fast counterpart for a request body: the JSON read and every event
validated together, in C, with types generated from `FIELDS`; it returns the columns only when
every event certainly passes `validate_event`, and None otherwise, so the problems a client sees
always come from `validate_event`.

A payment carries its envelope (`event_id`, `account_id`, `occurred_at`) and its own fields. The
account aggregates (`sds.kernel.aggregates`: failed logins, payments and amounts in a window,
...) are never sent: the system computes them from events, online from the feature store at
scoring time and offline point in time in training, and they join the batch as more columns
(`Columns.with_inputs`) that the aggregate features read by name. A request that carries one is
told so.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from operator import attrgetter, itemgetter, sub
from string import ascii_uppercase
from struct import pack
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt

from sds.kernel import aggregates

# Re-exported: the payment's reference data is part of the feature schema's public names.
from sds.kernel.reference import CURRENCIES as CURRENCIES
from sds.kernel.reference import MERCHANT_CATEGORIES as MERCHANT_CATEGORIES
from sds.kernel.reference import USD_PER_UNIT as USD_PER_UNIT

# 2: payments carry event_id, account_id and occurred_at; the aggregates are computed, not sent.
SCHEMA_VERSION = 2


MAX_AMOUNT = 1_000_000_000.0
MAX_ACCOUNT_AGE_DAYS = 36_500
MAX_EVENT_ID_LENGTH = 128
MAX_ID_LENGTH = MAX_EVENT_ID_LENGTH

# occurred_at: RFC 3339 / ISO 8601 with a time zone, between EARLIEST_YEAR and LATEST_YEAR (a time
# outside is a unit mix-up or a typo, not a payment). Inside, times are integer microseconds since
# the Unix epoch, so window arithmetic is exact.
EARLIEST_YEAR = 2000
LATEST_YEAR = 2099
# ASCII digits only (as the published pattern): `\d` would let other scripts' digits through.
# An offset's minutes run 00 to 59 (RFC 3339): `datetime.fromisoformat` reads "+00:99" as +01:39.
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-5][0-9])"
)
_YEARS = (f"{EARLIEST_YEAR:04d}", f"{LATEST_YEAR:04d}")  # four ASCII digits compare as numbers
TIME_PATTERN = (
    r"^(20[0-9]{2})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-][0-9]{2}:[0-5][0-9])$"
)
# A column's shapes and years in one match (`parse_times`): each time the published pattern, its
# groups not captured, then a newline. Its years, 20xx, are exactly EARLIEST_YEAR to LATEST_YEAR.
assert (EARLIEST_YEAR, LATEST_YEAR) == (2000, 2099), "TIME_PATTERN spells the years out"
_TIMES = re.compile(f"(?:{TIME_PATTERN[1:-1].replace('(', '(?:')}\n)*")
# Times per match: a longer string costs more per time (measured: 65,536 joined take twice as
# long as 16 matches of 4,096).
_TIMES_PER_MATCH = 4096
# The shape of `format_time` (27 characters: six fraction digits and "Z"), which sds writes and
# most producers send, each followed by the newline that joins a column: a column of only those
# is checked as bytes (`_formatted`), its digits made "0" and the whole compared to this shape
# repeated, its years' first two digits read at their offsets. A subset of `_TIMES`' language.
_FORMATTED = b"0000-00-00T00:00:00.000000Z\n"
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
# A `_FORMATTED` time without its "Z" and newline, as numpy reads it: a naive ISO 8601 date and
# time (taken as UTC), parsed to microseconds since the epoch, refused (ValueError) if the month,
# day, hour, minute or second is out of range, as `datetime.fromisoformat` refuses it.
_STAMP = np.dtype("S26")
_MICROSECONDS = np.dtype("datetime64[us]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
TIME_FORMAT_HINT = "an ISO 8601 time with a time zone, e.g. 2026-03-01T12:00:00Z"


def parse_time(text: Any) -> int:
    """Microseconds since the epoch of an `occurred_at`; ValueError says what is wrong.

    Once per payment on the scoring path (and per event when training reads a history): the
    shape is checked by one match without groups, the year on the text, and the offset from the
    epoch added up in integers (exact, as `timedelta` floor division is, at a third of its cost).
    """
    if not (isinstance(text, str) and _TIME.fullmatch(text)):
        raise ValueError(f"must be {TIME_FORMAT_HINT}")
    low, high = _YEARS
    if not low <= text[:4] <= high:
        raise ValueError(f"must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"must be a real date and time ({TIME_FORMAT_HINT})") from None
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# From this many times, `parse_times` checks and parses a column with one C-level pass per step.
_COLUMN_PARSE_FROM = 4


def parse_times(texts: Sequence[Any]) -> list[int]:
    """`parse_time` of each text, in order; ValueError names what is wrong with the first
    invalid one, as `parse_time` does.

    A column of times is checked and parsed a step at a time over the whole column, without a
    Python call per time. A column of `format_time`'s shape only (what sds writes and most
    producers send) is checked as bytes (`_formatted`) and read by numpy's ISO 8601 parser,
    which refuses the dates and times Python's refuses (`datetime64[us]`: exact microseconds
    since the epoch); measured by instructions under Python 3.12, 100 times cost 146k against
    498k read by `datetime.fromisoformat` one at a time. Any other column is checked in one
    regular-expression match of the joined texts (per `_TIMES_PER_MATCH`), then read by
    `datetime.fromisoformat` (measured alone, 100 times: 17 us for the match against 33 for a
    match per text and the years compared). Shorter columns, and any column with an invalid
    time, go through `parse_time` one by one.
    """
    if len(texts) < _COLUMN_PARSE_FROM:
        return list(map(parse_time, texts))
    try:
        data = _formatted(texts)
        if data is not None:
            # Each time's 26 characters before its "Z\n", read in place.
            stamps = np.ndarray((len(texts),), _STAMP, data, strides=(len(_FORMATTED),))
            micros: list[int] = stamps.astype(_MICROSECONDS).view(np.int64).tolist()
            return micros
        if _are_times(texts):
            deltas = map(sub, map(datetime.fromisoformat, texts), repeat(_EPOCH))
            return [
                (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
                for delta in deltas
            ]
    except (TypeError, ValueError):  # not a string, or not a real date: named below
        pass
    return list(map(parse_time, texts))


def _formatted(texts: Sequence[Any]) -> bytes | None:
    """The column joined as ASCII bytes, each time followed by a newline, if every text has
    `format_time`'s shape and a year from 2000 to 2099 (`_YEARS`); else None. Checked without
    the regular expression: its digits made "0" and the whole compared to `_FORMATTED`
    repeated, its years' first two digits read at their offsets (100 times in 3.8 us against
    19.6, Python 3.12, alone). A text holding a newline cannot pass: the joined column would
    hold more newlines than `_FORMATTED` repeated. TypeError: a text is not a string."""
    width, count = len(_FORMATTED), len(texts)
    if count and len(texts[0]) == width - 1 and (joined := "\n".join(texts) + "\n").isascii():
        data = joined.encode()
        if (
            data.translate(_DIGITS_AS_ZERO) == _FORMATTED * count
            and data[0::width] == b"2" * count
            and data[1::width] == b"0" * count
        ):
            return data  # the years 2000 to 2099 (`_YEARS`): 20, then two ASCII digits
    return None


def _are_times(texts: Sequence[Any]) -> bool:
    """Whether every text has the published pattern's shape and years, by one regular-expression
    match of the joined column per `_TIMES_PER_MATCH` (TypeError: one is not a string). A text
    holding a newline either breaks the match or holds two times, which
    `datetime.fromisoformat` then refuses, as `parse_time` does."""
    for start in range(0, len(texts), _TIMES_PER_MATCH):
        if _TIMES.fullmatch("\n".join(texts[start : start + _TIMES_PER_MATCH]) + "\n") is None:
            return False
    return True


def times_of(events: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.int64]:
    """Each validated event's `occurred_at` in microseconds (`parse_times`), a chunk at a time
    (bounded extra memory for a history of millions)."""
    times = np.empty(len(events), dtype=np.int64)
    for start in range(0, len(events), FEATURIZE_CHUNK):
        chunk = events[start : start + FEATURIZE_CHUNK]
        times[start : start + len(chunk)] = parse_times([e["occurred_at"] for e in chunk])
    return times


def format_time(micros: int) -> str:
    """The canonical form of a time: UTC, microseconds, 'Z'."""
    return (_EPOCH + micros * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Field:
    """One input field of an event: its JSON type and the values it may take."""

    name: str
    kind: str  # "number", "integer", "boolean", "enum", "country", "id" or "time"
    description: str
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] = ()

    def to_json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"description": self.description}
        if self.kind in ("number", "integer"):
            schema["type"] = self.kind
            if self.minimum is not None:
                schema["minimum"] = self.minimum
            if self.maximum is not None:
                schema["maximum"] = self.maximum
        elif self.kind == "boolean":
            schema["type"] = "boolean"
        elif self.kind == "enum":
            schema["type"] = "string"
            schema["enum"] = list(self.allowed)
        elif self.kind == "country":
            schema["type"] = "string"
            schema["pattern"] = "^[A-Z]{2}$"
        elif self.kind == "id":
            schema["type"] = "string"
            schema["minLength"] = 1
            schema["maxLength"] = MAX_ID_LENGTH
        elif self.kind == "time":
            schema["type"] = "string"
            schema["format"] = "date-time"
            schema["pattern"] = TIME_PATTERN
        return schema


FIELDS: tuple[Field, ...] = (
    Field("event_id", "id", "Unique id of the payment: captures and labels are joined on it"),
    Field("account_id", "id", "The account paying: the account aggregates are kept per account"),
    Field("occurred_at", "time", "When the payment happened (ISO 8601 with a time zone)"),
    Field("amount", "number", "Transaction amount in `currency`", 0, MAX_AMOUNT),
    Field("currency", "enum", "ISO 4217 currency code", allowed=CURRENCIES),
    Field("merchant_category", "enum", "Merchant category", allowed=MERCHANT_CATEGORIES),
    Field("country", "country", "ISO 3166-1 alpha-2 country where the transaction happens"),
    Field("card_country", "country", "ISO 3166-1 alpha-2 country that issued the card"),
    Field("hour_of_day", "integer", "Local hour of the transaction", 0, 23),
    Field("account_age_days", "integer", "Days since the account opened", 0, MAX_ACCOUNT_AGE_DAYS),
    Field("is_new_device", "boolean", "First transaction seen from this device"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
# The column of `occurred_at` in microseconds that every `Columns` carries (see `Columns.of_rows`).
TIME_US = "occurred_at_us"
COMPUTED_REASON = (
    "is computed by sds from the account's events (logins, payments) and must not be sent"
)


def feature_schema() -> dict[str, Any]:
    """The published schema: input fields with their ranges, and the output feature order."""
    return {
        "schema_version": SCHEMA_VERSION,
        "inputs": {
            "type": "object",
            "required": list(FIELD_NAMES),
            "additionalProperties": False,
            "properties": {f.name: f.to_json_schema() for f in FIELDS},
        },
        "features": list(FEATURE_NAMES),
        "aggregates": {
            "fingerprint": aggregates.fingerprint(),
            "definitions": [a.declaration() for a in aggregates.AGGREGATES],
        },
    }


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (a dotted path) and why."""

    field: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


NOT_UNICODE = "is not valid Unicode (a lone surrogate)"
# Python converts at most this many digits of an integer (`sys.get_int_max_str_digits`, a guard
# against quadratic conversions).
_INT_DIGITS = 4300


def json_int(text: str) -> int:
    """A JSON integer, as the standard library's parser's `parse_int`: `int(text)`, except for
    one too long to convert, which Python refuses with an error that names no field and tells
    the client to change an interpreter setting. That one reads as a power of ten of its sign and
    number of digits: more than any field takes, so the field's own range check names it (the
    value is never used, only refused)."""
    digits = len(text) - text.startswith("-")
    if digits <= _INT_DIGITS:
        return int(text)
    magnitude: int = 10 ** (digits - 1)
    return -magnitude if text.startswith("-") else magnitude


def is_unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: no lone surrogate, which the standard library's JSON
    parser reads from an escape such as "\\ud800" (orjson refuses it), and which no UTF-8 file,
    SQLite store, DynamoDB item or orjson reader can hold. `isascii` is O(1) in CPython (the
    string records it), so an ASCII id costs one call."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# A further rule for a valid time (microseconds): why it is refused, or None (see `validate_event`).
TimeCheck = Callable[[int], str | None]


def _check_field(
    spec: Field, value: Any, where: str, check_time: TimeCheck | None = None
) -> Problem | None:
    if spec.kind in ("number", "integer"):
        if spec.kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
            return Problem(where, "must be an integer")
        if not _is_number(value):
            return Problem(where, "must be a number")
        try:
            as_float = float(value)
        except OverflowError:  # an integer beyond a float's range: past one of the bounds
            if value < 0 and spec.minimum is not None:
                return Problem(where, f"must be >= {spec.minimum:g}")
            if value > 0 and spec.maximum is not None:
                return Problem(where, f"must be <= {spec.maximum:g}")
            return Problem(where, "must be a finite number")
        if not math.isfinite(as_float):
            return Problem(where, "must be a finite number")
        if spec.minimum is not None and as_float < spec.minimum:
            return Problem(where, f"must be >= {spec.minimum:g}")
        if spec.maximum is not None and as_float > spec.maximum:
            return Problem(where, f"must be <= {spec.maximum:g}")
        return None
    if spec.kind == "boolean":
        return None if isinstance(value, bool) else Problem(where, "must be true or false")
    if spec.kind == "time":
        try:
            micros = parse_time(value)
        except ValueError as exc:
            return Problem(where, str(exc))
        reason = None if check_time is None else check_time(micros)
        return None if reason is None else Problem(where, reason)
    if not isinstance(value, str):
        return Problem(where, "must be a string")
    if spec.kind == "id":
        if not 0 < len(value) <= MAX_ID_LENGTH:
            return Problem(where, f"must be 1 to {MAX_ID_LENGTH} characters")
        # Every other kind of string is checked against the allowed values or a pattern, which
        # no lone surrogate matches; an id is free text.
        if not is_unicode(value):
            return Problem(where, NOT_UNICODE)
        return None
    if spec.kind == "enum" and value not in spec.allowed:
        shown = value if len(value) <= 40 else value[:40] + "..."
        return Problem(where, f"{shown!r} is not one of {', '.join(spec.allowed)}")
    # isupper() alone accepts "A1": require letters, as the published pattern ^[A-Z]{2}$ does.
    if spec.kind == "country" and not (
        len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()
    ):
        return Problem(where, "must be a two-letter ISO 3166-1 code such as 'US'")
    return None


def batch_envelope(
    body: Any, *, limit: int, key: str = "events"
) -> tuple[list[Any] | None, list[Problem]]:
    """A batch request's items and every problem with its envelope, `{key: [1 to limit items]}`:
    the body not an object, `key` missing, not a list, empty or too long, any other key. The
    items are None when they cannot be checked one by one (anything wrong with `key` itself).
    One gate for every endpoint that takes a batch (/predict, the local API's /events)."""
    if not isinstance(body, dict):
        return None, [Problem("body", "must be a JSON object")]
    problems = [
        # An empty key would give a problem that names nothing.
        Problem(str(name)[:40] or '""', f"is not a known field (expected only '{key}')")
        for name in body
        if name != key
    ]
    items = body.get(key)
    if key not in body:
        problems.insert(0, Problem(key, "is required"))
    elif not isinstance(items, list):
        problems.insert(0, Problem(key, f"must be a list of {key}"))
    elif not items:
        problems.insert(0, Problem(key, f"must contain at least one {key.removesuffix('s')}"))
    elif len(items) > limit:
        problems.insert(0, Problem(key, f"has {len(items)} {key}; the limit is {limit}"))
    else:
        return items, problems
    return None, problems


def validate_event(
    event: Any,
    *,
    where: str = "event",
    extra_fields: Iterable[str] = (),
    check_time: TimeCheck | None = None,
) -> list[Problem]:
    """Every problem with one payment: missing, unknown and invalid fields, in schema order.
    `check_time` is a caller's own rule for a valid `occurred_at` (/predict's: not ahead of the
    clock); its reason is the field's problem, in the field's place."""
    return validate_fields(
        event, FIELDS, where=where, extra_fields=extra_fields, check_time=check_time
    )


def validate_fields(
    event: Any,
    fields: Sequence[Field],
    *,
    where: str = "event",
    extra_fields: Iterable[str] = (),
    check_time: TimeCheck | None = None,
) -> list[Problem]:
    """Every problem with one event against `fields`: missing, unknown and invalid fields (a
    valid time also against `check_time`, when given)."""
    if not isinstance(event, Mapping):
        return [Problem(where, "must be a JSON object")]
    problems: list[Problem] = []
    for spec in fields:
        if spec.name not in event:
            problems.append(Problem(f"{where}.{spec.name}", "is required"))
            continue
        problem = _check_field(spec, event[spec.name], f"{where}.{spec.name}", check_time)
        if problem is not None:
            problems.append(problem)
    known = {spec.name for spec in fields} | set(extra_fields)
    for key in event:
        if key not in known:
            shown = str(key) if len(str(key)) <= 40 else str(key)[:40] + "..."
            reason = COMPUTED_REASON if key in aggregates.NAMES else "is not a known field"
            problems.append(Problem(f"{where}.{shown}", reason))
    return problems


# Batches as columns --------------------------------------------------------------------------

Column = Sequence[Any]
Matrix = npt.NDArray[np.float32]


class Columns:
    """A batch of events as columns: `columns[name]` holds that input's value for each event."""

    __slots__ = ("inputs", "size")

    def __init__(self, size: int, inputs: Mapping[str, Column]) -> None:
        self.size = size
        self.inputs = inputs

    def __getitem__(self, name: str) -> Column:
        return self.inputs[name]

    def with_inputs(self, more: Mapping[str, Column]) -> Columns:
        """The same batch with more input columns (for example aggregates read per request)."""
        for name, column in more.items():
            if len(column) != self.size:
                raise ValueError(f"column {name!r} has {len(column)} values for {self.size} events")
        return Columns(self.size, {**self.inputs, **more})

    @classmethod
    def of(cls, events: Sequence[Mapping[str, Any]]) -> Columns:
        """Columns of events that carry every field of `FIELDS` (validated: nothing is checked
        here; any other key is not read)."""
        return cls.of_rows(list(map(_FIELD_GETTER, events)))

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[Any, ...]]) -> Columns:
        """Columns from each event's values of `FIELDS`, in order (`_FIELD_GETTER`), and
        `TIME_US`: `occurred_at` parsed (ValueError if one is not a valid time)."""
        return cls.of_fields(len(rows), zip(*rows, strict=True))

    @classmethod
    def of_fields(cls, size: int, columns: Iterable[Column]) -> Columns:
        """Columns from `size` events' column of each field of `FIELDS`, in order (any column
        after those is not read), and `TIME_US`: `occurred_at` parsed (ValueError if one is not
        a valid time)."""
        if not size:
            columns = [()] * len(FIELD_NAMES)
        inputs: dict[str, Column] = dict(zip(FIELD_NAMES, columns, strict=False))
        inputs[TIME_US] = parse_times(inputs["occurred_at"])
        return cls(size, inputs)


_FIELD_GETTER = itemgetter(*FIELD_NAMES)
_COUNTRY_CODES = tuple(a + b for a in ascii_uppercase for b in ascii_uppercase)


def _wire_type(spec: Field) -> Any:
    """The msgspec type of one field: it decodes exactly the values `_check_field` accepts, checked
    in C while the JSON is read. A time is decoded as a string, which `Columns.of_rows` parses."""
    from msgspec import Meta

    if spec.kind == "id":
        return Annotated[str, Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    if spec.kind == "time":
        return str
    if spec.kind == "boolean":
        return bool
    if spec.kind == "enum":
        return Literal[spec.allowed]
    if spec.kind == "country":
        return Literal[_COUNTRY_CODES]
    assert spec.minimum is not None and spec.maximum is not None, spec  # every number has a range
    integer = Annotated[int, Meta(ge=math.ceil(spec.minimum), le=math.floor(spec.maximum))]
    if spec.kind == "integer":
        return integer
    # A number keeps the JSON type it was sent as: an int stays an int, as the standard library
    # reads it (a capture record shows the event as sent).
    return integer | Annotated[float, Meta(ge=float(spec.minimum), le=float(spec.maximum))]


class BatchDecoder:
    """A request body, `{"events": [...]}`, read straight into columns: the JSON parsed and every
    value validated together, in C (msgspec, with a type per field generated from `FIELDS`).

    The warm path's reader. `decoder(data)` returns the batch's `Columns` and its events (msgspec
    structs: `as_dicts` gives the JSON objects) only when the body certainly passes
    `validate_event` for every event: valid UTF-8 JSON, one key, 1 to `max_events` events, each
    an object with every field of `FIELDS` valid, no other key but the `optional` ones, each of
    those one of its allowed values. Anything else answers None, and the caller's reference path
    (the standard library's parser, then `validate_event` per event) names every problem, so
    what a client sees never depends on this reader. A key sent twice is read as the standard
    library reads it (the last wins) when every copy is valid, else declined.
    """

    __slots__ = ("_as_dicts", "_decode", "_error", "_events", "_row", "_values")

    def __init__(
        self,
        *,
        max_events: int,
        optional: Mapping[str, tuple[str, ...]] | None = None,
        key: str = "events",
    ) -> None:
        # Imported here, as in `_wire_type`: the feature updater's bundle imports this module
        # too (`validate_event`) and ships no msgspec.
        import msgspec

        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
            (spec.name, _wire_type(spec)) for spec in FIELDS
        ]
        fields += [
            (name, Literal[allowed] | msgspec.UnsetType, msgspec.UNSET)
            for name, allowed in (optional or {}).items()
        ]
        # Events hold strings, numbers and booleans only: nothing for the cyclic GC to track.
        event = msgspec.defstruct("Event", fields, forbid_unknown_fields=True, gc=False)
        events = Annotated[list[event], msgspec.Meta(min_length=1, max_length=max_events)]  # type: ignore[valid-type]
        body = msgspec.defstruct("Body", [(key, events)], forbid_unknown_fields=True)
        self._decode = msgspec.json.Decoder(body).decode
        self._error = msgspec.DecodeError  # a ValidationError is one
        self._events = attrgetter(key)
        self._row = attrgetter(*FIELD_NAMES)
        # An event's values in its struct's order, read in C: `FIELDS`' first, as `columns`
        # reads them (for 100 events, 179k instructions against 402k for `_row` and a zip).
        assert event.__struct_fields__[: len(FIELD_NAMES)] == FIELD_NAMES, event.__struct_fields__
        self._values = msgspec.structs.astuple
        self._as_dicts = msgspec.to_builtins

    def __call__(self, data: bytes) -> tuple[Columns, list[Any]] | None:
        events = self.events(data)
        if events is None:
            return None
        columns = self.columns(events)
        return None if columns is None else (columns, events)

    def events(self, data: bytes) -> list[Any] | None:
        """The body's events, every field checked but `occurred_at`, still a string to parse
        (`parse_time`: a ValueError there declines the body too); None where `__call__` answers
        None for any other reason."""
        try:
            events: list[Any] = self._events(self._decode(data))
        except self._error:
            return None
        return events

    def columns(self, events: list[Any]) -> Columns | None:
        """Decoded events (`events`) as columns; None if an `occurred_at` is not a valid time."""
        try:
            return Columns.of_fields(len(events), zip(*map(self._values, events), strict=True))
        except ValueError:
            return None

    def fields(self, event: Any) -> tuple[Any, ...]:
        """A decoded event's values of `FIELD_NAMES`, in order (`featurize_row`'s `fields`)."""
        values: tuple[Any, ...] = self._row(event)
        return values

    def as_dicts(self, events: list[Any]) -> list[dict[str, Any]]:
        """Decoded events as the JSON objects they were sent as: the fields in `FIELDS` order, an
        optional one only where it was sent (what a capture record keeps of each event)."""
        dicts: list[dict[str, Any]] = self._as_dicts(events)
        return dicts


# Features ---------------------------------------------------------------------------------------


# What a feature's expression may name besides its inputs.
_SCOPE: Mapping[str, Any] = {"log1p": math.log1p, "USD_PER_UNIT": USD_PER_UNIT}


@dataclass(frozen=True)
class Feature:
    """Model inputs computed from one event's inputs: one output column per name, in order.

    `expression` is the one definition, a Python expression over the event's input names (its
    fields, its aggregates) and `_SCOPE`'s, whose value is the feature's; a one-hot feature also
    says which input it encodes (`one_hot`: the input's name and its categories, in the order of
    `names`), and its expression is the tuple of those columns' values. Both forms a batch
    needs are compiled from that text alone (`_feature`, `_one_hot`): `compute`, the feature's
    columns over a batch, and a term of the comprehension `_compile_rows` generates, which
    writes a small batch's rows with every feature in one pass. The same text, never two
    versions of it."""

    names: tuple[str, ...]
    expression: str
    inputs: tuple[str, ...]  # the input names the expression reads, in order of appearance
    compute: Callable[[Columns], Sequence[Column]]
    one_hot: tuple[str, tuple[str, ...]] | None = None
    scope: Mapping[str, Any] = field(default_factory=dict)  # what it names beyond `_SCOPE`


def _inputs_of(name: str, expression: str, scope: Mapping[str, Any]) -> tuple[str, ...]:
    """The input names `expression` reads (ValueError: it is not one expression, or it reads a
    name that is neither an input nor in `scope`)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"feature {name}: {expression!r} is not an expression: {exc}") from None
    known = (*FIELD_NAMES, *aggregates.NAMES)
    read: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in scope and node.id not in read:
            if node.id not in known:
                raise ValueError(f"feature {name}: {node.id!r} is neither an input nor in scope")
            read.append(node.id)
    return tuple(read)


def _over(inputs: Sequence[str]) -> str:
    """A comprehension's loop over the batch's columns of `inputs`, one event at a time."""
    columns = ", ".join(f"columns[{name!r}]" for name in inputs)
    if len(inputs) == 1:
        return f"for {inputs[0]} in {columns}"
    return f"for {', '.join(inputs)} in zip({columns}, strict=True)"


def _compiled(source: str, label: str, scope: Mapping[str, Any]) -> Any:
    """`source`, a lambda generated here from declarations in this module, evaluated in `scope`
    (a name of its own in tracebacks)."""
    return eval(compile(source, f"<{label}>", "eval"), dict(scope))


def _feature(name: str, expression: str) -> Feature:
    """A feature with one column: `expression`'s value per event (an input's own column when
    the expression is just its name)."""
    inputs = _inputs_of(name, expression, _SCOPE)
    if expression == name:  # an input of its own name
        return Feature((name,), expression, inputs, lambda columns: (columns[name],))
    source = f"lambda columns: ([{expression} {_over(inputs)}],)"
    return Feature((name,), expression, inputs, _compiled(source, f"feature {name}", _SCOPE))


def _one_hot(name: str, categories: tuple[str, ...]) -> Feature:
    """One column per category of input `name`: 1.0 in the event's category's, else 0.0."""
    rows = {c: tuple(1.0 if c == other else 0.0 for other in categories) for c in categories}

    def compute(columns: Columns) -> Sequence[Column]:
        if not columns.size:
            return [()] * len(categories)
        return list(zip(*map(rows.__getitem__, columns[name]), strict=True))

    # Its term in a row: the event's category's values, unpacked.
    table = f"_ONE_HOT_{name}"
    return Feature(
        tuple(f"{name}={c}" for c in categories),
        f"*{table}[{name}]",
        (name,),
        compute,
        (name, categories),
        {table: rows},
    )


def _scope_of(features: Sequence[Feature]) -> dict[str, Any]:
    """What the generated forms of `features` name beyond their inputs."""
    scope = dict(_SCOPE)
    for f in features:
        scope.update(f.scope)
    return scope


def _compile_rows(features: Sequence[Feature]) -> Callable[[Columns], list[tuple[Any, ...]]]:
    """Each event's values of every feature, in `FEATURE_NAMES` order: one comprehension over the
    batch, its row a tuple of the features' expressions, generated from their text. For a few
    events this beats building each feature's column (a list per feature, a zip of them all)."""
    inputs = tuple(dict.fromkeys(name for f in features for name in f.inputs))
    row = ", ".join(f.expression for f in features)
    rows: Callable[[Columns], list[tuple[Any, ...]]] = _compiled(
        f"lambda columns: [({row},) {_over(inputs)}]", "feature rows", _scope_of(features)
    )
    return rows


def _compile_row(features: Sequence[Feature]) -> Callable[..., tuple[Any, ...]]:
    """One event's values of every feature, in `FEATURE_NAMES` order, from its inputs passed as
    arguments (`FIELD_NAMES`' values, then `aggregates.NAMES`'): the row `_compile_rows` writes,
    from the same text, for an event that is not in columns at all (`featurize_row`)."""
    parameters = ", ".join((*FIELD_NAMES, *aggregates.NAMES))
    row = ", ".join(f.expression for f in features)
    function: Callable[..., tuple[Any, ...]] = _compiled(
        f"lambda {parameters}: ({row},)", "feature row", _scope_of(features)
    )
    return function


# Each value is a float, an int or a bool; the matrix holds them as float32 (True is 1.0).
FEATURES: tuple[Feature, ...] = (
    _feature("amount_log1p", "log1p(amount)"),
    _feature("amount_usd_log1p", "log1p(amount * USD_PER_UNIT[currency])"),
    _feature("is_foreign", "country != card_country"),
    _feature("hour_of_day", "hour_of_day"),
    _feature("is_night", "hour_of_day < 6"),
    _feature("account_age_days_log1p", "log1p(account_age_days)"),
    _feature("is_new_device", "is_new_device"),
    _one_hot("merchant_category", MERCHANT_CATEGORIES),
    # The account aggregates, as the feature store (online) or history (offline) computes them.
    *(_feature(name, name) for name in aggregates.NAMES),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for feature in FEATURES for name in feature.names)
N_FEATURES = len(FEATURE_NAMES)
_ROWS = _compile_rows(FEATURES)
_ROW = _compile_row(FEATURES)


# From this many events, `featurize_columns` assembles the matrix from the features' columns,
# each one-hot block written with numpy; below, row by row (counted in instructions under Python
# 3.12, the two break even between 12 and 16 events: 169k against 178k for 12, 216k against 200k
# for 16; 1.23M against 0.70M for 100).
_BLOCKS_FROM = 14


class _Layout:
    """How `featurize_columns` assembles a large batch's matrix: the features other than one-hot
    (`dense`, their values read in one pass), and the matrix's column blocks in `FEATURE_NAMES`
    order: a run of those dense columns (`slice`), or a one-hot feature's block, taken from
    the rows of an identity matrix by each event's category (the input's name, its categories'
    row numbers, the identity)."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.dense = tuple(f for f in features if f.one_hot is None)
        self.width = sum(len(f.names) for f in self.dense)
        self.blocks: list[slice | tuple[str, dict[str, int], Matrix]] = []
        start = 0
        for feature in features:
            if feature.one_hot is None:
                stop = start + len(feature.names)
                last = self.blocks[-1] if self.blocks else None
                if isinstance(last, slice):  # the run of dense columns goes on
                    self.blocks[-1] = slice(last.start, stop)
                else:
                    self.blocks.append(slice(start, stop))
                start = stop
            else:
                name, categories = feature.one_hot
                index = {category: i for i, category in enumerate(categories)}
                self.blocks.append((name, index, np.eye(len(categories), dtype=np.float32)))


_LAYOUT = _Layout(FEATURES)


def featurize_columns(columns: Columns) -> Matrix:
    """The model's input: one float32 row per event, one column per feature."""
    size = columns.size
    if size < _BLOCKS_FROM:
        # Row by row, every feature's expression per event in one comprehension (`_ROWS`), read
        # into the matrix in one pass: numpy's nested-list conversion costs a call per row or
        # column, and a list per feature dominated the one-event requests that are most of
        # them. Measured alone under Python 3.12: 5.3 against 12.0 us for one event (a list per
        # feature, then their zip), 17 against 23 for ten.
        cells = chain.from_iterable(_ROWS(columns))
        matrix = np.fromiter(cells, dtype=np.float32, count=size * N_FEATURES)
        return matrix.reshape(size, N_FEATURES)
    # The same matrix in blocks: each dense feature's column packed as doubles in C (`struct`
    # reads a float, an int or a bool as its double, as numpy does), and each one-hot block
    # taken in C from the event's category, without a Python value per cell; the blocks are
    # cast to float32 together. Counted in instructions under Python 3.12, 100 events: the
    # dense values 193k packed against 445k read one by one into float32 (`np.fromiter` over the
    # rows; docs/decisions.md 62). Blocks against rows, when the rows were a zip of the
    # features' columns (decision 46, measured alone): 82 against 109 us for 100 events, 46
    # against 75 ms for a chunk of 64,000 in training.
    layout = _LAYOUT
    form = f"{size}d"
    packed = b"".join(
        [pack(form, *column) for feature in layout.dense for column in feature.compute(columns)]
    )
    values = np.frombuffer(packed, dtype=np.float64).reshape(layout.width, size).T
    blocks = [
        values[:, block]
        if isinstance(block, slice)
        else block[2][list(map(block[1].__getitem__, columns[block[0]]))]
        for block in layout.blocks
    ]
    return np.concatenate(blocks, axis=1, dtype=np.float32)


def featurize_row(fields: Sequence[Any], computed: Sequence[float]) -> tuple[Any, ...]:
    """One validated event's features (order: FEATURE_NAMES) from its values of `FIELD_NAMES`
    (`fields`, in that order) and its account aggregates (`computed`, in `aggregates.NAMES`
    order), as the expressions give them (floats, ints, booleans): the row of a one-event
    request, scored without building columns or a list per input (docs/decisions.md 61)."""
    return _ROW(*fields, *computed)


def featurize(event: Mapping[str, Any], computed: Mapping[str, float]) -> list[float]:
    """One validated event's feature vector (order: FEATURE_NAMES), with its account aggregates
    (`computed`: a value for each of `aggregates.NAMES`)."""
    row = featurize_row(_FIELD_GETTER(event), [computed[n] for n in aggregates.NAMES])
    return [float(value) for value in row]


FEATURIZE_CHUNK = 65_536


def featurize_batch(
    events: Sequence[Mapping[str, Any]],
    computed: Mapping[str, Sequence[float]],
) -> Matrix:
    """Features for history: `featurize_columns` over chunks of events (bounded extra memory);
    `computed[name][i]` is aggregate `name` of event i, as of just before it."""

    def chunk(start: int, stop: int) -> Matrix:
        columns = Columns.of(events[start:stop]).with_inputs(
            {name: computed[name][start:stop] for name in aggregates.NAMES}
        )
        return featurize_columns(columns)

    if len(events) <= FEATURIZE_CHUNK:
        return chunk(0, len(events))
    return np.concatenate(
        [chunk(start, start + FEATURIZE_CHUNK) for start in range(0, len(events), FEATURIZE_CHUNK)]
    )
