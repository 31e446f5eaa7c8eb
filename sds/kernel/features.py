"""Event-driven features for card-payment fraud: one pure function from one event to one vector.

`featurize(event)` is the only feature implementation. Training maps it over history
(`featurize_batch`), the inference Lambda calls it per request; there is no second version for
serving. `validate_event` checks an event against `FIELDS`, the published input schema that the
manifest records and the API documents, and names every problem it finds.

Aggregates such as `num_failed_logins_last_24_hours` arrive with the event (computed upstream):
the feature function never looks anything up, so the same event always gives the same vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1

MERCHANT_CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "online_retail",
    "digital_goods",
    "gambling",
    "pharmacy",
    "other",
)

# Fixed reference rates to USD: features must not depend on a live FX feed (same event, same
# vector), and a tree model only needs amounts on a comparable scale.
USD_PER_UNIT: Mapping[str, float] = {
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.12,
    "CAD": 0.73,
    "AUD": 0.66,
    "JPY": 0.0067,
    "SEK": 0.095,
    "MXN": 0.058,
    "BRL": 0.20,
    "INR": 0.012,
    "SGD": 0.74,
}
CURRENCIES: tuple[str, ...] = tuple(USD_PER_UNIT)

MAX_AMOUNT = 1_000_000_000.0
MAX_COUNT = 1_000_000
MAX_ACCOUNT_AGE_DAYS = 36_500
MAX_EVENT_ID_LENGTH = 128


@dataclass(frozen=True)
class Field:
    """One input field of an event: its JSON type and the values it may take."""

    name: str
    kind: str  # "number", "integer", "boolean", "enum" or "country"
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
        return schema


FIELDS: tuple[Field, ...] = (
    Field("amount", "number", "Transaction amount in `currency`", 0, MAX_AMOUNT),
    Field("currency", "enum", "ISO 4217 currency code", allowed=CURRENCIES),
    Field("merchant_category", "enum", "Merchant category", allowed=MERCHANT_CATEGORIES),
    Field("country", "country", "ISO 3166-1 alpha-2 country where the transaction happens"),
    Field("card_country", "country", "ISO 3166-1 alpha-2 country that issued the card"),
    Field("hour_of_day", "integer", "Local hour of the transaction", 0, 23),
    Field("account_age_days", "integer", "Days since the account opened", 0, MAX_ACCOUNT_AGE_DAYS),
    Field("is_new_device", "boolean", "First transaction seen from this device"),
    Field(
        "num_failed_logins_last_24_hours",
        "integer",
        "Failed logins on the account in the 24 hours before the event (computed upstream)",
        0,
        MAX_COUNT,
    ),
    Field(
        "txn_count_last_1h",
        "integer",
        "Transactions on the card in the hour before the event (computed upstream)",
        0,
        MAX_COUNT,
    ),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)

FEATURE_NAMES: tuple[str, ...] = (
    "amount_log1p",
    "amount_usd_log1p",
    "is_foreign",
    "hour_of_day",
    "is_night",
    "account_age_days_log1p",
    "is_new_device",
    "num_failed_logins_last_24_hours",
    "txn_count_last_1h",
    *(f"merchant_category={c}" for c in MERCHANT_CATEGORIES),
)
N_FEATURES = len(FEATURE_NAMES)
_CATEGORY_INDEX = {c: i for i, c in enumerate(MERCHANT_CATEGORIES)}


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


def _check_field(spec: Field, value: Any, where: str) -> Problem | None:
    if spec.kind in ("number", "integer"):
        if spec.kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
            return Problem(where, "must be an integer")
        if not _is_number(value):
            return Problem(where, "must be a number")
        try:
            as_float = float(value)
        except OverflowError:
            return Problem(where, f"must be at most {spec.maximum:g}")
        if not math.isfinite(as_float):
            return Problem(where, "must be a finite number")
        if spec.minimum is not None and as_float < spec.minimum:
            return Problem(where, f"must be >= {spec.minimum:g}")
        if spec.maximum is not None and as_float > spec.maximum:
            return Problem(where, f"must be <= {spec.maximum:g}")
        return None
    if spec.kind == "boolean":
        return None if isinstance(value, bool) else Problem(where, "must be true or false")
    if not isinstance(value, str):
        return Problem(where, "must be a string")
    if spec.kind == "enum" and value not in spec.allowed:
        shown = value if len(value) <= 40 else value[:40] + "..."
        return Problem(where, f"{shown!r} is not one of {', '.join(spec.allowed)}")
    # isupper() alone accepts "A1": require letters, as the published pattern ^[A-Z]{2}$ does.
    if spec.kind == "country" and not (
        len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()
    ):
        return Problem(where, "must be a two-letter ISO 3166-1 code such as 'US'")
    return None


def validate_event(
    event: Any, *, where: str = "event", extra_fields: Iterable[str] = ()
) -> list[Problem]:
    """Every problem with one event: missing, unknown and invalid fields, in schema order."""
    if not isinstance(event, Mapping):
        return [Problem(where, "must be a JSON object")]
    problems: list[Problem] = []
    for spec in FIELDS:
        if spec.name not in event:
            problems.append(Problem(f"{where}.{spec.name}", "is required"))
            continue
        problem = _check_field(spec, event[spec.name], f"{where}.{spec.name}")
        if problem is not None:
            problems.append(problem)
    allowed_extra = set(extra_fields)
    for key in event:
        if key not in FIELD_NAMES and key not in allowed_extra:
            shown = str(key) if len(str(key)) <= 40 else str(key)[:40] + "..."
            problems.append(Problem(f"{where}.{shown}", "is not a known field"))
    return problems


def featurize(event: Mapping[str, Any]) -> list[float]:
    """Turn one validated event into its feature vector (order: FEATURE_NAMES)."""
    amount = float(event["amount"])
    hour = int(event["hour_of_day"])
    vector = [
        math.log1p(amount),
        math.log1p(amount * USD_PER_UNIT[event["currency"]]),
        1.0 if event["country"] != event["card_country"] else 0.0,
        float(hour),
        1.0 if hour < 6 else 0.0,
        math.log1p(int(event["account_age_days"])),
        1.0 if event["is_new_device"] else 0.0,
        float(event["num_failed_logins_last_24_hours"]),
        float(event["txn_count_last_1h"]),
    ]
    one_hot = [0.0] * len(MERCHANT_CATEGORIES)
    one_hot[_CATEGORY_INDEX[event["merchant_category"]]] = 1.0
    vector.extend(one_hot)
    return vector


def featurize_batch(events: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Features for history: `featurize` mapped over the events, nothing else."""
    return [featurize(event) for event in events]
