"""Which published versions of the inference function to keep, and why.

Every deploy publishes a Lambda version (one code revision with one model pin) and CloudFormation
keeps the previous ones, so `sds --aws rollback` has something to switch back to. Kept forever,
they cost: SnapStart bills a snapshot cache per active version, and code storage counts against a
regional quota. Pruning deletes the versions nothing can need; both pruners (the scheduled pruner
Lambda in `lambdas/pruner`, and `sds --aws prune`) apply the rule here, which does no I/O.

A published version is kept when any of these holds, each with the reason the pruners report:

1. **recent**: it is one of the newest `versions_to_keep`;
2. **alias**: an alias (`live`) points at it, or routes a canary weight to it;
3. **deploying**: a CodeDeploy deployment still in flight moves an alias from it or to it (the
   versions are read from the deployment's AppSpec; if one cannot be read, nothing is deleted);
4. **rollback target**: it is the newest version that pins a protected model, one per pin role
   and pin. The protected models are the registry alias's current version, the last
   `history_depth` entries of its history (what `sds rollback` returns to, one step at a time;
   `versions_to_keep` by default) and every model the function's current configuration
   (`$LATEST`, what the last deploy set) pins. Pins are read with `sds.kernel.settings.model_pins`,
   so a model pinned by any pin variable counts (today the live pin; the shadow pin is one more
   line in `settings.PIN_VARIABLES`). The newest, because that is the one `sds --aws rollback`
   switches to when several versions serve the target model; older ones with the same pin only
   differ by older code, and keeping them would make the cost grow with every code deploy.

`$LATEST` is not a published version: it is never a candidate. Versions are numbered by Lambda
("1", "2", ...); anything else (an alias on `$LATEST`) protects nothing here.

The pruner Lambda's settings are a contract between the stack and its handler: `PruneTarget`
writes them (`to_environ`) and parses them (`from_environ`), here, like `settings` does for the
inference function.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.errors import SdsError, counted
from sds.kernel.lock import Pin
from sds.kernel.registry.core import AliasState

LATEST = "$LATEST"
# CodeDeploy statuses of a deployment that may still move the alias.
IN_FLIGHT_DEPLOYMENT_STATUSES: tuple[str, ...] = (
    "Created",
    "Queued",
    "InProgress",
    "Baking",
    "Ready",
)


class RetentionError(SdsError, ValueError):
    """The retention rule or the pruner's settings are invalid; the message names the problem."""


def version_number(value: Any) -> int | None:
    """A published version's number from `"7"` or a qualified ARN `...:function:f:7`; None for
    `$LATEST`, an alias name or anything else."""
    if value is None:
        return None
    text = str(value).rsplit(":", 1)[-1].strip()
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    return None


# What the pruners observe ---------------------------------------------------------------------


@dataclass(frozen=True)
class PublishedVersion:
    """One published version and the models its environment pins, by role."""

    number: int
    pins: Mapping[str, Pin] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasRouting:
    """Where an alias sends traffic: its version, and any canary weights."""

    name: str
    version: int | None
    weights: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def from_response(cls, alias: Mapping[str, Any]) -> AliasRouting:
        """From a `GetAlias` / `ListAliases` entry."""
        routing = alias.get("RoutingConfig") or {}
        weights = routing.get("AdditionalVersionWeights") or {}
        parsed = {
            number: float(weight)
            for version, weight in weights.items()
            if (number := version_number(version)) is not None
        }
        return cls(
            name=str(alias.get("Name", "")),
            version=version_number(alias.get("FunctionVersion")),
            weights=parsed,
        )


@dataclass(frozen=True)
class InFlightDeployment:
    """A CodeDeploy deployment that may still move an alias, and the versions it moves between
    (`readable` is False when its AppSpec did not say)."""

    id: str
    from_version: int | None
    to_version: int | None
    readable: bool = True


def appspec_versions(revision: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """CurrentVersion and TargetVersion of a Lambda deployment's AppSpec, or None when the
    revision has no JSON AppSpec with a Lambda resource (YAML, another shape)."""
    content = (revision.get("appSpecContent") or {}).get("content") or (
        revision.get("string") or {}
    ).get("content")
    if not content:
        return None
    try:
        spec = json.loads(content)
        for resource in spec.get("Resources", []):
            for body in resource.values():
                props = body.get("Properties", {})
                current, target = props.get("CurrentVersion"), props.get("TargetVersion")
                return (
                    None if current is None else str(current),
                    None if target is None else str(target),
                )
    except (ValueError, AttributeError, TypeError):
        return None
    return None


def in_flight_deployment(deployment_id: str, info: Mapping[str, Any]) -> InFlightDeployment:
    """From `GetDeployment`'s deploymentInfo."""
    versions = appspec_versions(info.get("revision") or {})
    if versions is None:
        return InFlightDeployment(deployment_id, None, None, readable=False)
    source, target = (version_number(v) for v in versions)
    return InFlightDeployment(deployment_id, source, target, readable=target is not None)


# The rule -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One published version: kept (with every reason) or to be deleted (no reason to keep)."""

    version: int
    pins: Mapping[str, Pin]
    reasons: tuple[str, ...]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "keep": self.keep,
            "models": {role: pin.to_dict() for role, pin in sorted(self.pins.items())},
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class RetentionPlan:
    """Every published version, newest first, with what to do about it."""

    decisions: tuple[Decision, ...]
    versions_to_keep: int
    history_depth: int
    # Why nothing may be deleted this time (the plan still says what would be kept).
    blocked: str | None = None

    @property
    def kept(self) -> list[Decision]:
        return [d for d in self.decisions if d.keep]

    @property
    def to_delete(self) -> list[Decision]:
        """What to delete, oldest first; nothing when the plan is blocked."""
        if self.blocked is not None:
            return []
        return sorted((d for d in self.decisions if not d.keep), key=lambda d: d.version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "versions_to_keep": self.versions_to_keep,
            "history_depth": self.history_depth,
            "blocked": self.blocked,
            "versions": [d.to_dict() for d in self.decisions],
        }


def plan_retention(
    *,
    versions: Iterable[PublishedVersion],
    versions_to_keep: int,
    aliases: Iterable[AliasRouting] = (),
    deployments: Iterable[InFlightDeployment] = (),
    registry_alias: AliasState | None = None,
    configuration_pins: Mapping[str, Pin] | None = None,
    history_depth: int | None = None,
) -> RetentionPlan:
    """Decide, for every published version, whether it is kept and why (see the module doc)."""
    if versions_to_keep < 1:
        raise RetentionError(f"versions_to_keep must be >= 1, got {versions_to_keep}")
    depth = versions_to_keep if history_depth is None else history_depth
    if depth < 0:
        raise RetentionError(f"history_depth must be >= 0, got {depth}")
    published = sorted(versions, key=lambda v: v.number, reverse=True)
    reasons: dict[int, list[str]] = {v.number: [] for v in published}

    def keep(number: int | None, reason: str) -> None:
        if number is not None and number in reasons and reason not in reasons[number]:
            reasons[number].append(reason)

    for version in published[:versions_to_keep]:
        keep(version.number, f"one of the {versions_to_keep} newest")
    for alias in aliases:
        keep(alias.version, f"alias {alias.name} points here")
        for number, weight in sorted(alias.weights.items()):
            keep(number, f"alias {alias.name} routes {weight:.0%} here")
    blocked = None
    for deployment in deployments:
        keep(deployment.from_version, f"deployment {deployment.id} in flight moves from here")
        keep(deployment.to_version, f"deployment {deployment.id} in flight moves here")
        if not deployment.readable:
            blocked = (
                f"deployment {deployment.id} is in flight and its AppSpec does not say which "
                "versions it moves between: nothing is deleted until it is done"
            )
    protected = _protected_models(registry_alias, depth, configuration_pins or {})
    newest: dict[tuple[str, Pin], int] = {}
    for version in published:  # newest first: the first one seen per pin is the newest
        for role, pin in version.pins.items():
            if pin.version in protected:
                newest.setdefault((role, pin), version.number)
    for (role, pin), number in newest.items():
        why = protected[pin.version]
        if role == "live":
            keep(number, f"newest version serving model v{pin.version} ({why})")
        else:
            keep(number, f"newest version with model v{pin.version} as {role} ({why})")
    decisions = tuple(
        Decision(version=v.number, pins=dict(v.pins), reasons=tuple(reasons[v.number]))
        for v in published
    )
    return RetentionPlan(decisions, versions_to_keep, depth, blocked)


def _protected_models(
    alias: AliasState | None, depth: int, configuration: Mapping[str, Pin]
) -> dict[int, str]:
    """Model versions whose serving Lambda version must survive, with why (first reason wins)."""
    protected: dict[int, str] = {}
    if alias is not None:
        protected[alias.version] = f"live in registry alias {alias.name}"
        recent = alias.history[-depth:] if depth else ()
        for steps, model in enumerate(reversed(recent), start=1):
            protected.setdefault(
                model, f"{counted(steps, 'rollback')} back in registry alias {alias.name}'s history"
            )
    for role, pin in sorted(configuration.items()):
        protected.setdefault(pin.version, f"pinned as {role} by the function's configuration")
    return protected


# The pruner Lambda's settings -----------------------------------------------------------------

FUNCTION_NAME = "FUNCTION_NAME"
ENVIRONMENT = "ENVIRONMENT"
MODEL_NAME = "MODEL_NAME"
REGISTRY_URI = "REGISTRY_URI"
CODEDEPLOY_APPLICATION = "CODEDEPLOY_APPLICATION"
DEPLOYMENT_GROUP = "DEPLOYMENT_GROUP"
VERSIONS_TO_KEEP = "VERSIONS_TO_KEEP"
_REQUIRED = (
    FUNCTION_NAME,
    ENVIRONMENT,
    MODEL_NAME,
    REGISTRY_URI,
    CODEDEPLOY_APPLICATION,
    DEPLOYMENT_GROUP,
    VERSIONS_TO_KEEP,
)


@dataclass(frozen=True)
class PruneTarget:
    """One environment's inference function and what pruning it reads: the registry alias named
    after the environment, and the CodeDeploy deployment group that moves alias `live`."""

    function: str
    environment: str
    model: str
    registry_uri: str
    application: str
    deployment_group: str
    versions_to_keep: int

    def __post_init__(self) -> None:
        if self.versions_to_keep < 1:
            raise RetentionError(f"versions_to_keep must be >= 1, got {self.versions_to_keep}")

    def to_environ(self) -> dict[str, str]:
        """The pruner Lambda's environment variables (values may be CDK tokens)."""
        return {
            FUNCTION_NAME: self.function,
            ENVIRONMENT: self.environment,
            MODEL_NAME: self.model,
            REGISTRY_URI: self.registry_uri,
            CODEDEPLOY_APPLICATION: self.application,
            DEPLOYMENT_GROUP: self.deployment_group,
            VERSIONS_TO_KEEP: str(self.versions_to_keep),
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PruneTarget:
        """Parse what `to_environ` wrote; the error names every missing or invalid variable."""
        values = {name: environ.get(name, "").strip() for name in _REQUIRED}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise RetentionError(f"pruner settings missing: {', '.join(missing)}")
        keep = values[VERSIONS_TO_KEEP]
        if not (keep.isascii() and keep.isdigit()) or int(keep) < 1:
            raise RetentionError(f"{VERSIONS_TO_KEEP} must be a positive integer, got {keep!r}")
        return cls(
            function=values[FUNCTION_NAME],
            environment=values[ENVIRONMENT],
            model=values[MODEL_NAME],
            registry_uri=values[REGISTRY_URI],
            application=values[CODEDEPLOY_APPLICATION],
            deployment_group=values[DEPLOYMENT_GROUP],
            versions_to_keep=int(keep),
        )
