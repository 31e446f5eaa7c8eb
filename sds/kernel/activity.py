"""Activity events on AWS: what producers put on the environment's event bus, what the feature
updater reads back, and the updater function's settings.

Producers send each activity event (`sds.kernel.events`: a `login`, a `payment` after it was
scored) as one EventBridge entry: source `sds.activity`, detail-type the event's `type`, detail
the event itself (`put_events_entry`). The bus archives every entry; a rule sends the types the
aggregates read (`FEATURE_DETAIL_TYPES`) to the updater's queue, which receives each entry in
EventBridge's envelope (`{"id", "source", "detail-type", "time", "detail", ...}`; a replay from the
archive adds `"replay-name"`); `activity_event` takes the event back out of it and names every
problem. Dedupe is by the activity event's own `event_id`, not EventBridge's `id`: a producer
that retries `PutEvents` creates new envelopes around the same event.

The updater function's environment is written by `UpdaterSettings.to_environ` (the stack) and
parsed by `UpdaterSettings.from_environ` (its handler): one writer, one parser.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sds.kernel.aggregates import SOURCES
from sds.kernel.errors import SdsError
from sds.kernel.events import KINDS, TYPE, validate
from sds.kernel.features import Problem, TimeCheck, json_int

SOURCE = "sds.activity"
# The detail-types the feature rule sends to the updater: the event kinds an aggregate reads.
FEATURE_DETAIL_TYPES: tuple[str, ...] = tuple(sorted(SOURCES))
# PutEvents takes at most 10 entries per call, 256 KB in all.
MAX_ENTRIES_PER_PUT = 10


def replay_prefix(environment: str) -> str:
    """How the names of an environment's feature replays start (`sds --aws replay` names them;
    the replay policy may follow only those)."""
    return f"sds-{environment}-features-"


def put_events_entry(event: Mapping[str, Any], *, bus: str) -> dict[str, Any]:
    """One `PutEvents` entry for a validated activity event, on the bus named (or ARN) `bus`."""
    kind = event.get("type")
    if kind not in KINDS:
        raise ValueError(f"an activity event's type is one of {', '.join(KINDS)}, got {kind!r}")
    return {
        "EventBusName": bus,
        "Source": SOURCE,
        "DetailType": str(kind),
        "Detail": json.dumps(dict(event), separators=(",", ":"), ensure_ascii=False),
    }


def envelope(
    event: Mapping[str, Any],
    *,
    id: str,
    time: str,
    account: str = "123456789012",
    region: str = "us-east-1",
    replay_name: str | None = None,
) -> dict[str, Any]:
    """The EventBridge event an entry from `put_events_entry` becomes on the bus, as a rule's
    target receives it (what local runs, tests and benchmarks feed the updater)."""
    document: dict[str, Any] = {
        "version": "0",
        "id": id,
        "detail-type": str(event.get("type")),
        "source": SOURCE,
        "account": account,
        "time": time,
        "region": region,
        "resources": [],
        "detail": dict(event),
    }
    if replay_name is not None:
        document["replay-name"] = replay_name
    return document


def activity_event(
    body: Any, *, check_time: TimeCheck | None = None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The activity event inside one EventBridge envelope (an SQS message body, as text or
    parsed), or every problem found with it, a time `check_time` refuses among them
    (`sds.kernel.events.validate`)."""
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body, parse_int=json_int)
        except RecursionError:
            return None, [Problem("body", "is not JSON (nested too deeply)")]
        except ValueError as exc:
            return None, [Problem("body", f"is not JSON ({str(exc)[:80]})")]
    if not isinstance(body, Mapping):
        return None, [Problem("body", "must be an EventBridge event (a JSON object)")]
    if body.get("source") != SOURCE:
        shown = str(body.get("source"))[:60]
        return None, [Problem("source", f"{shown!r} is not {SOURCE!r}")]
    detail = body.get("detail")
    if not isinstance(detail, Mapping):
        return None, [Problem("detail", "must be the activity event (a JSON object)")]
    problems = validate(detail, where="detail", check_time=check_time)
    type_known = not any(p.field == f"detail.{TYPE}" for p in problems)
    if type_known and body.get("detail-type") != detail.get("type"):
        problems.append(
            Problem("detail-type", f"{str(body.get('detail-type'))[:40]!r} is not the event's type")
        )
    return (None, problems) if problems else (dict(detail), [])


class UpdaterSettingsError(SdsError, ValueError):
    """The updater function's environment is invalid; the message names the variable."""


FEATURE_STORE_URI = "FEATURE_STORE_URI"
ENVIRONMENT = "ENVIRONMENT"


@dataclass(frozen=True)
class UpdaterSettings:
    """Where the updater folds events (`dynamodb://<table>`), and for which environment."""

    feature_store_uri: str
    environment: str

    def to_environ(self) -> dict[str, str]:
        return {FEATURE_STORE_URI: self.feature_store_uri, ENVIRONMENT: self.environment}

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> UpdaterSettings:
        uri = environ.get(FEATURE_STORE_URI, "").strip()
        if not uri:
            raise UpdaterSettingsError(
                f"{FEATURE_STORE_URI} is required (dynamodb://<table>, set by the stack)"
            )
        return cls(
            feature_store_uri=uri, environment=environ.get(ENVIRONMENT, "").strip() or "unknown"
        )
