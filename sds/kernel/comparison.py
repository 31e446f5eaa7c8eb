"""A version's comparison with the models that served: the manifest's `comparison` section.

Training from capture (`training.from_capture`) holds out the most recent matured days of served
traffic. Those captures already hold the score of the model that served each event, so the
candidate and each served model are evaluated on identical events, with the same labels, and the
manifest records both sets of metrics per served model version (`Comparison.to_manifest`). The
`must_beat_live` gate (`sds.ops.promotion`) reads it back (`Comparison.from_manifest`) and looks
for the model live in the target environment, by version and sha256 (`against`).

    "comparison": {
      "env": "prod",                      # whose captured traffic
      "holdout": {"from": "...", "until": "...", "events": 4210},
      "served": [{"model": "fraud", "version": 12, "sha256": "...", "events": 4210,
                  "fraud": 131, "live": {"pr_auc": 0.61, ...}, "candidate": {"pr_auc": 0.66, ...}}]
    }

A served model whose share of the holdout cannot be evaluated (too few events, one class only)
is listed with `live` and `candidate` null and the `reason`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sds.kernel.errors import SdsError

KEY = "comparison"


class ComparisonError(SdsError, ValueError):
    """A manifest's comparison section is malformed; the message names the field."""


@dataclass(frozen=True)
class Served:
    """One served model's share of the holdout: its metrics and the candidate's on those events."""

    model: str
    version: int
    sha256: str
    events: int
    fraud: int
    live: Mapping[str, float] | None
    candidate: Mapping[str, float] | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "model": self.model,
            "version": self.version,
            "sha256": self.sha256,
            "events": self.events,
            "fraud": self.fraud,
            "live": None if self.live is None else dict(self.live),
            "candidate": None if self.candidate is None else dict(self.candidate),
        }
        if self.reason is not None:
            document["reason"] = self.reason
        return document


@dataclass(frozen=True)
class Comparison:
    env: str
    holdout_from: str
    holdout_until: str
    events: int
    served: tuple[Served, ...]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "holdout": {
                "from": self.holdout_from,
                "until": self.holdout_until,
                "events": self.events,
            },
            "served": [s.to_dict() for s in self.served],
        }

    def against(self, version: int, sha256: str) -> Served | None:
        """The comparison with the model that is this version and these bytes, if it served."""
        for served in self.served:
            if served.version == version and served.sha256 == sha256:
                return served
        return None

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> Comparison | None:
        """The manifest's comparison (None if the version was not trained from capture)."""
        section = manifest.get(KEY)
        if section is None:
            return None
        if not isinstance(section, Mapping):
            raise ComparisonError(f"{KEY}: expected an object")
        holdout = section.get("holdout")
        served = section.get("served")
        if not isinstance(holdout, Mapping) or not isinstance(served, list):
            raise ComparisonError(f"{KEY}: expected holdout and served")
        return cls(
            env=str(section.get("env", "")),
            holdout_from=str(holdout.get("from", "")),
            holdout_until=str(holdout.get("until", "")),
            events=_integer(holdout, "events", f"{KEY}.holdout"),
            served=tuple(_served(item, f"{KEY}.served[{i}]") for i, item in enumerate(served)),
        )


def _integer(document: Mapping[str, Any], name: str, where: str) -> int:
    value = document.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ComparisonError(f"{where}.{name}: expected an integer")
    return value


def _metrics(value: Any, where: str) -> Mapping[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()
    ):
        raise ComparisonError(f"{where}: expected an object of numbers")
    return {str(k): float(v) for k, v in value.items()}


def _served(item: Any, where: str) -> Served:
    if not isinstance(item, Mapping):
        raise ComparisonError(f"{where}: expected an object")
    sha = item.get("sha256")
    model = item.get("model")
    if not isinstance(sha, str) or not isinstance(model, str):
        raise ComparisonError(f"{where}: expected model and sha256 strings")
    reason = item.get("reason")
    return Served(
        model=model,
        version=_integer(item, "version", where),
        sha256=sha,
        events=_integer(item, "events", where),
        fraud=_integer(item, "fraud", where),
        live=_metrics(item.get("live"), f"{where}.live"),
        candidate=_metrics(item.get("candidate"), f"{where}.candidate"),
        reason=reason if isinstance(reason, str) else None,
    )
