"""Capture records: what the inference handler served, one record per scored payment.

The contract between the handler, which writes them, and everything that reads them back
(training from capture, `sds monitor`, an analyst's query): `Capturer` builds and writes the
records, `parse` reads one back and checks it, both here. A record is one JSON object on one
line. On AWS the handler writes the lines to stdout (with the request's metric lines, in one
write: `lambdas.inference.app.StdoutLines`), so they become log events of the function's log
group, and a subscription filter (`SUBSCRIPTION_FILTER`) ships them through Firehose to S3 with
no network call on the request path; `sds serve` writes the same lines to JSON Lines files under
`.sds/capture/<env>/`. Both are partitioned by UTC day, `dt=YYYY-MM-DD/` (`partition`): locally
the day the record was written, on AWS the day the oldest record of its S3 object reached
Firehose. So a record can sit in the partition of the day before or after the one it was served
(`received_at`): readers select by the record's own times and read each day's neighbours too.

Record, schema version 2 (fields in this order: first what every record of a served model
repeats, then the request's and the payment's; `*` marks the ones `capture.exclude` may drop):

| field | value |
|---|---|
| `record` | `"sds.capture"`: what the line is (the subscription filter selects on it) |
| `schema_version` | `2`; a reader reads versions 1 and 2 and refuses one it does not know |
| `env` | the environment that served it |
| `model` | `{"name", "version", "sha256"}` of the model that scored it |
| `threshold` | the model's decision threshold |
| `sample_rate` | the environment's sampling rate when it was captured (weight = 1 / rate) |
| `feature_schema` | `feature_fingerprint()`: the feature names, in order, and the aggregate definitions |
| `request_id` * | the API Gateway request id (what the client sees as `x-amzn-RequestId`) |
| `received_at` | when the handler started scoring the request (UTC, microseconds, `Z`) |
| `latency_ms` * | from `received_at` to the decision, for the whole request |
| `event_id` | the payment's id: captures and labels are joined on it |
| `account_id` * | the payment's account |
| `occurred_at` | the payment's own time, as sent |
| `score` | the fraud probability, unrounded (the response shows 6 decimals, rounded toward `decision`) |
| `decision` | `score >= threshold`: what the response said (`is_fraud`) |
| `online_features` | whether the account aggregates were read (false: scored with zeros) |
| `features` * | the model's input exactly as scored: float32 values in `FEATURE_NAMES` order |
| `event` * | the payment as the client sent it |
| `shadow` | only when the environment runs a challenger (`sds shadow`): see below |

Version 2 added `shadow`, and only it: a version 1 record is a version 2 record without a
challenger, and this parser reads both. When the environment pins a shadow, the challenger scores
the same feature matrix as the live model (the aggregates read once) and its result sits beside
the live one; it decided nothing:

| `shadow` field | value |
|---|---|
| `model` | `{"name", "version", "sha256"}` of the challenger |
| `score`, `decision`, `threshold` | its fraud probability, `score >= threshold`, its own threshold |
| `cost_us` | its scoring time for the request divided by the request's payments (warm-path cost) |
| `error` | instead of the three above, when it failed to score this request |

`capture.exclude` names fields to leave out of every record: `request_id`, `latency_ms`,
`features`, `event`, or a payment field (`account_id`, `card_country`, ...), which is then left
out wherever it appears (the top-level copy and the raw event). The join key and the time
(`event_id`, `occurred_at`) and what the model decided cannot be excluded: without them a record
serves neither training nor monitoring. Note that the features are derived from the payment
(an amount's logarithm is the amount): exclude `features` too if a field must not be inferable.

Sampling is deterministic per event id (`sampled`): the first 8 bytes of the id's MD5 as an
unsigned integer, below `rate * 2**64`. A replay of the same events captures the same ones, and any
tool can recompute the choice (Athena: `from_big_endian_64(substr(md5(to_utf8(event_id)), 1, 8))`
read as unsigned).

Building the records is on the warm path: the fields every record repeats are serialized once
(`Capturer`), then one orjson call per record for the rest (the float32 feature row is
serialized straight from the matrix, as float32's shortest text, which reads back to the same
float32), one sink call per request. Readers find fields by name, never by position.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sds.kernel.errors import SdsError
from sds.kernel.features import FIELD_NAMES, feature_schema, format_time, parse_time

RECORD = "sds.capture"
SCHEMA_VERSION = 2
# Versions `parse` reads: 1 is 2 without the optional `shadow`.
READABLE_VERSIONS = (1, 2)
# What the function's log subscription selects (CloudWatch Logs filter pattern syntax).
SUBSCRIPTION_FILTER = '{ $.record = "sds.capture" }'
# Where captures and labels live in the environment's captures bucket (and, locally, the folder
# names under .sds/): one prefix each, then one partition per UTC day.
CAPTURES_PREFIX = "captures/"
LABELS_PREFIX = "labels/"
PARTITION_KEY = "dt"

# Fields `capture.exclude` may name, besides the payment fields below.
RECORD_FIELDS_EXCLUDABLE = ("request_id", "latency_ms", "features", "event")
# Payment fields that cannot be excluded: the join key and the time every reader needs.
KEPT_PAYMENT_FIELDS = ("event_id", "occurred_at")
PAYMENT_FIELDS_EXCLUDABLE = tuple(f for f in FIELD_NAMES if f not in KEPT_PAYMENT_FIELDS)
EXCLUDABLE = (*RECORD_FIELDS_EXCLUDABLE, *PAYMENT_FIELDS_EXCLUDABLE)

_TWO_TO_64 = 1 << 64

logger = logging.getLogger("sds.capture")

# What a sink receives: the request's records, one JSON object per line, each line ending in \n.
CaptureSink = Callable[[bytes], None]


class CaptureError(SdsError, ValueError):
    """A capture record (or a capture setting) is not what this contract says; the message
    names the field."""


def feature_fingerprint() -> str:
    """16 hex digits naming the feature vector's layout: the feature names in order and the
    account aggregates' definitions. A reader decodes `features` only under the same one."""
    schema = feature_schema()
    document = {"features": schema["features"], "aggregates": schema["aggregates"]["fingerprint"]}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def sampled(event_id: str, rate: float) -> bool:
    """Whether the event is captured at `rate`: the same answer for the same id, everywhere."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.md5(event_id.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") < rate * _TWO_TO_64


def check_sample_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise CaptureError(f"the capture sample rate must be a number from 0 to 1, got {rate!r}")
    return float(rate)


def check_exclude(names: Sequence[str]) -> tuple[str, ...]:
    """The exclusions, checked: each one a field `capture.exclude` may name, none twice."""
    unknown = [n for n in names if n not in EXCLUDABLE]
    if unknown:
        kept = ", ".join((*KEPT_PAYMENT_FIELDS, "model", "score", "decision", "threshold"))
        raise CaptureError(
            f"capture cannot exclude {', '.join(map(repr, unknown))}: it may exclude "
            f"{', '.join(EXCLUDABLE)}; it always keeps {kept}"
        )
    if len(set(names)) != len(names):
        raise CaptureError("a capture exclusion is named twice")
    return tuple(names)


def partition(micros: int) -> str:
    """The partition of a record served at `micros` (or a label received then): `dt=YYYY-MM-DD`."""
    return f"{PARTITION_KEY}={format_time(micros)[:10]}"


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # a numpy row
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def _dumps(document: Any) -> bytes:
    """One line: the document and its newline."""
    try:
        return orjson.dumps(document, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # Validation refuses what orjson cannot write in an event (a lone surrogate, an integer
        # beyond 64 bits); should anything else reach here, the standard library writes it, as
        # the handler's responses do, rather than fail the request.
        text = json.dumps(document, ensure_ascii=True, separators=(",", ":"), default=_plain)
        return text.encode() + b"\n"


class Capturer:
    """Builds and writes the capture records of one served model in one environment."""

    def __init__(
        self,
        *,
        env: str,
        model: Mapping[str, Any],
        threshold: float,
        sink: CaptureSink,
        sample_rate: float = 1.0,
        exclude: Sequence[str] = (),
    ) -> None:
        self.env = env
        self.sink = sink
        self.sample_rate = check_sample_rate(sample_rate)
        self.exclude = check_exclude(exclude)
        excluded = set(self.exclude)
        # Top-level fields left out, and the payment fields left out of the raw event too.
        self._dropped = tuple(n for n in (*RECORD_FIELDS_EXCLUDABLE, "account_id") if n in excluded)
        self._event_exclude = frozenset(excluded & set(PAYMENT_FIELDS_EXCLUDABLE))
        self._excluding = bool(self._dropped or self._event_exclude)
        self._model = {
            "name": model["name"],
            "version": model["version"],
            "sha256": model["sha256"],
        }
        self._threshold = float(threshold)
        self._fingerprint = feature_fingerprint()
        self._shadow: dict[str, Any] | None = None
        self._shadow_threshold = 0.0
        self._settle()

    def with_shadow(self, *, model: Mapping[str, Any], threshold: float) -> None:
        """Record the challenger's result beside the live one in every record from now on."""
        self._shadow = {
            "name": model["name"],
            "version": model["version"],
            "sha256": model["sha256"],
        }
        self._shadow_threshold = float(threshold)
        self._settle()

    @property
    def shadowing(self) -> bool:
        """Whether records carry a challenger's result (`with_shadow`)."""
        return self._shadow is not None

    def _settle(self) -> None:
        # The record's first fields, the same in every record, as JSON once: `{"record": ...,`
        # up to and with the comma before the request's own fields (`capture` appends them).
        head = {
            "record": RECORD,
            "schema_version": SCHEMA_VERSION,
            "env": self.env,
            "model": self._model,
            "threshold": self._threshold,
            "sample_rate": self.sample_rate,
            "feature_schema": self._fingerprint,
        }
        # What `capture` reads for every request, in one attribute load.
        self._constants = (
            _dumps(head)[:-2] + b",",
            self._threshold,
            self.sample_rate,
            self._excluding,
            self._shadow,
            self._shadow_threshold,
        )

    def capture(
        self,
        *,
        request_id: str | None,
        received_us: int,
        started_ns: int,
        events: Sequence[Mapping[str, Any]],
        features: Any,
        scores: Sequence[float],
        online_features: bool,
        shadow_scores: Sequence[float] | None = None,
        shadow_ns: int = 0,
        shadow_error: str | None = None,
        decided_ns: int | None = None,
    ) -> int:
        """Write the records of one request's sampled events (one sink call); how many.

        `latency_ms` runs from `started_ns` to `decided_ns` (perf counter, nanoseconds; now if
        None). With a challenger (`with_shadow`): its scores for the same events and how long
        scoring them took (`shadow_ns`, for the whole request), or `shadow_error` if it failed."""
        decided = time.perf_counter_ns() if decided_ns is None else decided_ns
        head, threshold, rate, excluding, shadow_model, shadow_threshold = self._constants
        chosen: Sequence[int] = (
            range(len(events))
            if rate >= 1.0
            else [i for i, e in enumerate(events) if sampled(str(e["event_id"]), rate)]
        )
        if not chosen:
            return 0
        received_at = _iso(received_us)
        # Milliseconds to 3 decimals, from whole microseconds: a float's round() to 3 digits is a
        # decimal conversion, rarely run code and the slowest step of a one-payment capture.
        latency = (decided - started_ns + 500) // 1000 / 1000
        failed: dict[str, Any] | None = None
        cost_us = 0.0
        if shadow_model is not None:
            if shadow_scores is None:
                failed = {"model": shadow_model, "error": shadow_error or "not scored"}
            else:
                cost_us = round(shadow_ns / 1000 / len(events), 3)
        lines = []
        for i in chosen:
            event = events[i]
            score = scores[i]
            record = {
                "request_id": request_id,
                "received_at": received_at,
                "latency_ms": latency,
                "event_id": event["event_id"],
                "account_id": event["account_id"],
                "occurred_at": event["occurred_at"],
                "score": score,
                "decision": score >= threshold,
                "online_features": online_features,
                "features": features[i],
                "event": event,
            }
            if shadow_model is not None:
                if failed is not None:
                    record["shadow"] = failed
                else:
                    challenger = shadow_scores[i]  # type: ignore[index]
                    record["shadow"] = {
                        "model": shadow_model,
                        "score": challenger,
                        "decision": challenger >= shadow_threshold,
                        "threshold": shadow_threshold,
                        "cost_us": cost_us,
                    }
            if excluding:
                self._drop(record)
            # The head's '{...,', then this record's own fields and its '}'.
            lines.append(head + _dumps(record)[1:])
        self.sink(b"".join(lines))
        return len(lines)

    def _drop(self, record: dict[str, Any]) -> None:
        for name in self._dropped:
            record.pop(name, None)
        if self._event_exclude and "event" in record:
            record["event"] = {
                k: v for k, v in record["event"].items() if k not in self._event_exclude
            }


_clock: tuple[int, str] = (-1, "")


def _iso(micros: int) -> str:
    """`format_time`, with the second's text kept from the previous call: strftime is most of
    a one-event request's capture cost otherwise."""
    global _clock
    seconds, fraction = divmod(micros, 1_000_000)
    known, text = _clock
    if seconds != known:
        text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        _clock = (seconds, text)
    # The fraction's six digits as the tail of 1,000,000 + fraction: no format spec to parse.
    return text + str(1_000_000 + fraction)[1:] + "Z"


# Reading records back ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowScore:
    """The challenger's result for one captured payment (`score` None: it failed, `error`)."""

    model_name: str
    model_version: int
    model_sha256: str
    score: float | None
    decision: bool | None
    threshold: float | None
    cost_us: float | None
    error: str | None = None


@dataclass(frozen=True)
class Capture:
    """One record, read back and checked (`parse`). Excluded fields are None."""

    env: str
    event_id: str
    occurred_at_us: int
    received_at_us: int
    model_name: str
    model_version: int
    model_sha256: str
    score: float
    decision: bool
    threshold: float
    online_features: bool
    sample_rate: float
    feature_schema: str
    request_id: str | None = None
    latency_ms: float | None = None
    account_id: str | None = None
    features: tuple[float, ...] | None = None
    event: Mapping[str, Any] | None = None
    shadow: ShadowScore | None = None


def _field(document: Mapping[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = document.get(name)
    if isinstance(value, bool) and bool not in kinds:
        value = None
    if not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise CaptureError(f"{name}: expected {expected}, got {type(value).__name__}")
    return value


def parse(document: Any) -> Capture:
    """A record read back from its JSON, checked against this schema (`CaptureError` names the
    field); a newer schema version is refused rather than misread."""
    if not isinstance(document, Mapping) or document.get("record") != RECORD:
        raise CaptureError(f'not a capture record (no "record": "{RECORD}")')
    version = document.get("schema_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise CaptureError(
            f"schema_version {version!r}: this sds reads capture schema versions {readable} "
            "(a newer sds wrote it? upgrade to read it)"
        )
    model = _field(document, "model", (dict,))
    try:
        occurred = parse_time(document.get("occurred_at"))
    except ValueError as exc:
        raise CaptureError(f"occurred_at: {exc}") from None
    try:
        received = parse_time(document.get("received_at"))
    except ValueError as exc:
        raise CaptureError(f"received_at: {exc}") from None
    features = document.get("features")
    if features is not None:
        if not isinstance(features, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in features
        ):
            raise CaptureError("features: expected a list of numbers")
        features = tuple(float(v) for v in features)
    event = document.get("event")
    if event is not None and not isinstance(event, dict):
        raise CaptureError("event: expected an object")
    request_id = document.get("request_id")
    latency = document.get("latency_ms")
    account = document.get("account_id")
    return Capture(
        env=_field(document, "env", (str,)),
        event_id=_field(document, "event_id", (str,)),
        occurred_at_us=occurred,
        received_at_us=received,
        model_name=_field(model, "name", (str,)),
        model_version=_field(model, "version", (int,)),
        model_sha256=_field(model, "sha256", (str,)),
        score=float(_field(document, "score", (int, float))),
        decision=_field(document, "decision", (bool,)),
        threshold=float(_field(document, "threshold", (int, float))),
        online_features=_field(document, "online_features", (bool,)),
        sample_rate=float(_field(document, "sample_rate", (int, float))),
        feature_schema=_field(document, "feature_schema", (str,)),
        request_id=request_id if isinstance(request_id, str) else None,
        latency_ms=float(latency) if isinstance(latency, (int, float)) else None,
        account_id=account if isinstance(account, str) else None,
        features=features,
        event=event,
        shadow=_shadow(document.get("shadow")) if version >= 2 else None,
    )


def _shadow(value: Any) -> ShadowScore | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CaptureError("shadow: expected an object")
    model = _field(value, "model", (dict,))
    name = _field(model, "name", (str,))
    version = _field(model, "version", (int,))
    sha = _field(model, "sha256", (str,))
    error = value.get("error")
    if error is not None:
        return ShadowScore(name, version, sha, None, None, None, None, str(error))
    try:
        score = float(_field(value, "score", (int, float)))
        decision = _field(value, "decision", (bool,))
        threshold = float(_field(value, "threshold", (int, float)))
        cost = float(_field(value, "cost_us", (int, float)))
    except CaptureError as exc:
        raise CaptureError(f"shadow.{exc}") from None
    return ShadowScore(name, version, sha, score, decision, threshold, cost)


def records(name: str, data: bytes) -> Iterator[tuple[str, Capture]]:
    """Each record of one capture file (`data`: its bytes, decompressed), with where it is
    (`name:line`), for every reader of captures (training from capture, `sds monitor`,
    `sds compare`). Blank lines are skipped.

    A line that is not a record is a `CaptureError` naming the file and line: captures are this
    project's own contract, so a malformed one is corruption, not noise. One exception, as a
    mature log reader makes it: a last line that has no newline after it and is not whole JSON
    was cut short (the writer stopped mid-write: a crash, a full disk). It is skipped with a
    warning naming the file (logger `sds.capture`), and the records before it are read."""
    lines = data.splitlines()
    last = len(lines)
    unterminated = bool(data) and not data.endswith((b"\n", b"\r"))
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if lineno == last and unterminated:
                logger.warning(
                    "warning: %s: the last line (%d) is incomplete (%d bytes, no newline at the "
                    "end: a write cut short); skipped",
                    name,
                    lineno,
                    len(line),
                )
                return
            raise CaptureError(f"{where}: not a capture record: invalid JSON ({exc})") from None
        try:
            yield where, parse(document)
        except CaptureError as exc:
            raise CaptureError(f"{where}: {exc}") from None
