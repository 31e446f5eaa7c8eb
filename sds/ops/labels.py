"""`sds label`: label events from files into an environment's local labels (`.sds/labels/<env>`).

A label says what a scored payment turned out to be (`sds.kernel.events.LABEL`: `event_id`,
`is_fraud`, `labelled_at`, `source`). Training from capture joins them with the captures by event
id. The whole input is validated first, every problem named: a file with a problem stores
nothing. On AWS, labels are not ingested from this machine: producers put them on the
environment's event bus, which delivers them to the captures bucket's `labels/` prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sds.kernel.errors import UsageError
from sds.kernel.events import LABEL_KINDS, validate
from sds.kernel.features import json_int
from sds.ops.capture_store import LabelFiles
from sds.ops.ingest import refused_input
from sds.ops.workspace import Workspace
from training.data import DataError, decoded, sources


@dataclass(frozen=True)
class LabelResult:
    env: str
    stored: int
    fraud: int
    duplicates: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "stored": self.stored,
            "fraud": self.fraud,
            "legitimate": self.stored - self.fraud,
            "duplicates": self.duplicates,
            "path": self.path,
        }


def read_labels(location: str) -> tuple[list[dict[str, Any]], int]:
    """Every label of a file, directory or s3:// prefix, validated, and how many lines repeated
    an earlier one exactly. A problem anywhere raises before anything is stored."""
    found: dict[str, dict[str, Any]] = {}
    duplicates = 0
    problems: list[str] = []
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
            found_problems = validate(record, where=where, kinds=LABEL_KINDS)
            if found_problems:
                problems.extend(f"{p.field}: {p.reason}" for p in found_problems)
                continue
            key = json.dumps(record, sort_keys=True)
            if key in found:
                duplicates += 1
                continue
            found[key] = record
    if problems:
        raise refused_input(problems)
    if not found:
        raise DataError(f"{location}: no labels")
    return list(found.values()), duplicates


def ingest_labels(ws: Workspace, env: str, location: str) -> LabelResult:
    """Validate every label of `location`, then store them as one batch in `env`'s labels."""
    if ws.on_aws:
        raise UsageError(
            "sds label stores labels on this machine; on AWS, producers put label events on the "
            f"environment's event bus, which delivers them to {env}'s captures bucket (labels/)"
        )
    labels, duplicates = read_labels(location)
    path = LabelFiles(ws.labels_dir(env)).store(labels)
    return LabelResult(
        env=env,
        stored=len(labels),
        fraud=sum(1 for label in labels if label["is_fraud"]),
        duplicates=duplicates,
        path=str(path),
    )
