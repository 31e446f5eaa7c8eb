"""Prune one inference function's published versions: read what the retention rule needs from
Lambda, CodeDeploy and the registry, decide with `sds.kernel.retention`, delete the rest.

The pruner Lambda (`handler.py`) and `sds --aws prune` both call `prune`, with their own clients.
Every read happens before anything is deleted, and a read that fails deletes nothing. Deletions
are independent: one that fails is reported and the others go on. A version already gone (a
concurrent run) counts as deleted; `$LATEST` is never a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sds.kernel.aws.errors import error_code
from sds.kernel.lock import Pin
from sds.kernel.registry import AliasState, Registry
from sds.kernel.retention import (
    IN_FLIGHT_DEPLOYMENT_STATUSES,
    LATEST,
    AliasRouting,
    InFlightDeployment,
    PruneTarget,
    PublishedVersion,
    RetentionPlan,
    in_flight_deployment,
    plan_retention,
    version_number,
)
from sds.kernel.settings import model_pins


@dataclass(frozen=True)
class Observation:
    """What the retention rule needs, as read from AWS and the registry."""

    versions: list[PublishedVersion]
    configuration: dict[str, Pin]  # what $LATEST pins, by role: the last deploy's settings
    aliases: list[AliasRouting]
    deployments: list[InFlightDeployment]
    registry_alias: AliasState | None


@dataclass
class PruneReport:
    target: PruneTarget
    plan: RetentionPlan
    dry_run: bool
    deleted: list[int] = field(default_factory=list)
    already_gone: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "prune",
            "env": self.target.environment,
            "function": self.target.function,
            "dry_run": self.dry_run,
            "kept": [d.version for d in self.plan.kept],
            "to_delete": [d.version for d in self.plan.to_delete],
            "deleted": sorted(self.deleted + self.already_gone),
            "failed": {str(v): message for v, message in sorted(self.failed.items())},
            **self.plan.to_dict(),
        }


def observe(
    target: PruneTarget, *, lambda_client: Any, codedeploy: Any, registry: Registry
) -> Observation:
    versions: list[PublishedVersion] = []
    configuration: dict[str, Pin] = {}
    for page in lambda_client.get_paginator("list_versions_by_function").paginate(
        FunctionName=target.function
    ):
        for config in page.get("Versions", []):
            pins = model_pins((config.get("Environment") or {}).get("Variables") or {})
            if config.get("Version") == LATEST:
                configuration = dict(pins)
                continue
            number = version_number(config.get("Version"))
            if number is not None:
                versions.append(PublishedVersion(number=number, pins=pins))
    aliases = [
        AliasRouting.from_response(alias)
        for page in lambda_client.get_paginator("list_aliases").paginate(
            FunctionName=target.function
        )
        for alias in page.get("Aliases", [])
    ]
    return Observation(
        versions=versions,
        configuration=configuration,
        aliases=aliases,
        deployments=in_flight(codedeploy, target),
        # None before the first promotion; S3 refuses the pruner's read of an alias that does not
        # exist (its role may list only that key), which the store tells from a refusal
        # (sds.kernel.aws.s3.is_missing)
        registry_alias=registry.get_alias(target.environment),
    )


def in_flight(codedeploy: Any, target: PruneTarget) -> list[InFlightDeployment]:
    """The deployment group's deployments that may still move an alias."""
    found = []
    for page in codedeploy.get_paginator("list_deployments").paginate(
        applicationName=target.application,
        deploymentGroupName=target.deployment_group,
        includeOnlyStatuses=list(IN_FLIGHT_DEPLOYMENT_STATUSES),
    ):
        for deployment_id in page.get("deployments", []):
            info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
            if info.get("status") in IN_FLIGHT_DEPLOYMENT_STATUSES:
                found.append(in_flight_deployment(str(deployment_id), info))
    return found


def plan(observation: Observation, target: PruneTarget) -> RetentionPlan:
    return plan_retention(
        versions=observation.versions,
        versions_to_keep=target.versions_to_keep,
        aliases=observation.aliases,
        deployments=observation.deployments,
        registry_alias=observation.registry_alias,
        configuration_pins=observation.configuration,
    )


def prune(
    target: PruneTarget,
    *,
    lambda_client: Any,
    codedeploy: Any,
    registry: Registry,
    dry_run: bool = False,
) -> PruneReport:
    """Delete the published versions the retention rule does not keep (none with `dry_run`)."""
    observation = observe(
        target, lambda_client=lambda_client, codedeploy=codedeploy, registry=registry
    )
    report = PruneReport(target=target, plan=plan(observation, target), dry_run=dry_run)
    if dry_run:
        return report
    for decision in report.plan.to_delete:
        try:
            lambda_client.delete_function(
                FunctionName=target.function, Qualifier=str(decision.version)
            )
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                report.already_gone.append(decision.version)
            else:
                report.failed[decision.version] = f"{type(exc).__name__}: {exc}"
            continue
        report.deleted.append(decision.version)
    return report
