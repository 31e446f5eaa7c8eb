"""`sds label`: label events from files into an environment's local labels (`.sds/labels/<env>`).

A label says what a scored payment turned out to be (`sds.kernel.events.LABEL`: `event_id`,
`is_fraud`, `labelled_at`, `source`). Training from capture joins them with the captures by event
id. The whole input is validated first, every problem named: a file with a problem stores
nothing, and neither does one with a label dated more than a few minutes ahead of this machine's
clock (`sds.kernel.online.ahead_of_clock`, the rule `sds ingest` applies to `occurred_at`).

Sending labels again is safe: a label already stored with the same content (`sds.kernel.events.
content_digest`) is counted as already there and not stored twice. One with the same `event_id`
and other content is a new label, stored beside the earlier one: an event may be labelled twice
(a review, then a chargeback), and training takes the latest by `labelled_at` (on a tie, fraud).

On AWS, labels are not ingested from this machine: producers put them on the environment's
event bus, which delivers them to the captures bucket's `labels/` prefix.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from sds.kernel.errors import UsageError
from sds.kernel.events import LABEL_KINDS, content_digest, validate
from sds.kernel.features import json_int
from sds.kernel.online import ahead_of_clock, now_micros
from sds.ops.capture_store import LabelFiles
from sds.ops.ingest import refused_input
from sds.ops.workspace import Workspace
from training.capture_data import decompressed, partitions
from training.data import DataError, decoded, sources


@dataclass(frozen=True)
class LabelResult:
    """What one `sds label` did: `stored` new labels (`fraud` of them fraud) in the file at
    `path` (None when none was new), `duplicates` lines repeating an earlier line of the input,
    `already_there` labels the environment had stored before with the same content."""

    env: str
    stored: int
    fraud: int
    duplicates: int
    already_there: int
    path: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "stored": self.stored,
            "fraud": self.fraud,
            "legitimate": self.stored - self.fraud,
            "duplicates": self.duplicates,
            "already_there": self.already_there,
            "path": self.path,
        }


def read_labels(location: str, *, now: int) -> tuple[list[dict[str, Any]], int]:
    """Every label of a file, directory or s3:// prefix, validated, and how many lines repeated
    an earlier one exactly. A problem anywhere (a label dated ahead of `now` included) raises
    before anything is stored."""
    found: dict[str, dict[str, Any]] = {}
    duplicates = 0
    problems: list[str] = []
    not_ahead = functools.partial(ahead_of_clock, now=now)
    for name, raw in sources(location):
        data = decoded(name, raw)
        for lineno, line in enumerate(data.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{name}:{lineno}"
            try:
                record = json.loads(line, parse_int=json_int)
            except (ValueError, RecursionError) as exc:
                problems.append(f"{where}: invalid JSON ({str(exc)[:100]})")
                continue
            # A label dated ahead of `now` is a problem like any other (`validate`'s
            # `check_time`): training would not see it until then, and then take it as the
            # latest word on the payment.
            found_problems = validate(record, where=where, kinds=LABEL_KINDS, check_time=not_ahead)
            if found_problems:
                problems.extend(f"{p.field}: {p.reason}" for p in found_problems)
                continue
            key = content_digest(record)
            if key in found:
                duplicates += 1
                continue
            found[key] = record
    if problems:
        raise refused_input(problems)
    if not found:
        raise DataError(f"{location}: no labels")
    return list(found.values()), duplicates


def stored_digests(location: str) -> set[str]:
    """The content digest of every label stored in the labels folder `location`, read as
    training reads it (every day partition); a line that is not a JSON object is left out: no
    valid label is a copy of it."""
    digests: set[str] = set()
    for name, raw in partitions(location, first_day=""):  # "": from the first day on
        for line in decompressed(name, raw).splitlines():
            try:
                record = json.loads(line, parse_int=json_int)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                digests.add(content_digest(record))
    return digests


def ingest_labels(ws: Workspace, env: str, location: str) -> LabelResult:
    """Validate every label of `location`, then store the ones `env` does not hold yet as one
    batch in its labels."""
    if ws.on_aws:
        raise UsageError(
            "sds label stores labels on this machine; on AWS, producers put label events on the "
            f"environment's event bus, which delivers them to {env}'s captures bucket (labels/)"
        )
    labels, duplicates = read_labels(location, now=now_micros())
    folder = ws.labels_dir(env)
    stored = stored_digests(str(folder))
    new = [label for label in labels if content_digest(label) not in stored]
    path = LabelFiles(folder).store(new) if new else None
    return LabelResult(
        env=env,
        stored=len(new),
        fraud=sum(1 for label in new if label["is_fraud"]),
        duplicates=duplicates,
        already_there=len(labels) - len(new),
        path=None if path is None else str(path),
    )
