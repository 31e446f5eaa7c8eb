"""The pruner: a small Lambda that deletes the inference function's published versions nothing
can need (`sds.kernel.retention`), daily and after each successful deployment.

Zero idle cost: two EventBridge rules (a daily schedule, and CodeDeploy's "deployment succeeded"
event for this deployment group) invoke a 256 MB function for a few seconds; no always-on
resource. Its role can list this function's versions and aliases, delete its published versions
(qualified ARNs only: never the function itself), read (and list the one key of) this
environment's registry alias and read this deployment group's deployments, nothing else.

Its code is the kernel and `lambdas/pruner` only (no third-party wheels: boto3 comes with the
runtime), assembled under build/ like the inference bundle, so an edit to the pruner never
changes the inference function's asset.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.retention import PruneTarget
from stacks.bundling import source_bundle
from stacks.components.data_key import READ, key_use
from stacks.components.nag import (
    acknowledge,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import log_group
from stacks.components.small_function import function_role, small_function
from stacks.config import LogSettings

HANDLER = "lambdas.pruner.handler.lambda_handler"
PACKAGES = ("sds.kernel", "lambdas.pruner")
# The repository the stacks are synthesized from (this file is stacks/components/pruner.py).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_SCHEDULE = events.Schedule.rate(cdk.Duration.days(1))
DEPLOYMENT_SUCCEEDED = "CodeDeploy Deployment State-change Notification"
_NO_QUEUE = (
    "A missed or failed run changes nothing and the next one (daily, and after every "
    "deployment) does the same work; failures show in the function's Errors metric and logs. A "
    "queue would only hold events nobody replays."
)


def pruner_code(source_root: Path = _SOURCE_ROOT, build_root: Path | None = None) -> Path:
    """The pruner's code folder, `build/lambda-pruner/<hash of its sources>`, built once."""
    return source_bundle(
        PACKAGES, name="lambda-pruner", source_root=source_root, build_root=build_root
    )


class VersionPruner(Construct):
    """The pruner function, its least-privilege role and log group, and the two rules."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        function: lambda_.IFunction,
        registry: s3.IBucket,
        key: kms.IKey | None,
        application: codedeploy.ILambdaApplication,
        group: codedeploy.ILambdaDeploymentGroup,
        versions_to_keep: int,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        target = PruneTarget(
            function=function.function_name,
            environment=environment,
            model=model_name,
            registry_uri=f"s3://{registry.bucket_name}",
            application=application.application_name,
            deployment_group=group.deployment_group_name,
            versions_to_keep=versions_to_keep,
        )
        self.log_group = log_group(self, "Logs", settings=logs)
        self.role = self._build_role(
            environment=environment,
            function=function,
            registry=registry,
            key=key,
            alias_key=f"{RegistryPaths(model_name).root}aliases/{environment}.json",
            group=group,
        )
        self.function = small_function(
            self,
            "Function",
            description=f"sds {environment}: prunes published versions of the inference function",
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(pruner_code())),
            role=self.role,
            log_group=self.log_group,
            memory_mb=256,
            timeout=cdk.Duration.minutes(5),
            environment=target.to_environ(),
            why_no_dead_letter_queue=_NO_QUEUE,
            why_no_reserved_concurrency="Only its two EventBridge rules invoke it (a daily "
            "schedule, a finished deployment): it runs a few times a day and cannot be flooded; "
            "a reservation would be carved out of the account's pool, which new accounts start "
            "at 10, too few to reserve from.",
            reaches="Lambda, CodeDeploy, S3, X-Ray",
        )
        self.rules = [
            events.Rule(
                self,
                "Daily",
                description=f"sds {environment}: prune inference function versions daily",
                schedule=_SCHEDULE,
            ),
            events.Rule(
                self,
                "AfterDeployment",
                description=f"sds {environment}: prune after each successful deployment of live",
                event_pattern=events.EventPattern(
                    source=["aws.codedeploy"],
                    detail_type=[DEPLOYMENT_SUCCEEDED],
                    detail={
                        "state": ["SUCCESS"],
                        "application": [application.application_name],
                        "deploymentGroup": [group.deployment_group_name],
                    },
                ),
            ),
        ]
        for rule in self.rules:
            rule.add_target(targets.LambdaFunction(self.function, retry_attempts=2))
            acknowledge(
                rule,
                "Serverless-EventBusDLQ",
                "An undelivered event loses nothing: the next daily run (or deployment) prunes "
                "the same versions, and pruning is idempotent.",
            )
        self._acknowledge()

    def _build_role(
        self,
        *,
        environment: str,
        function: lambda_.IFunction,
        registry: s3.IBucket,
        key: kms.IKey | None,
        alias_key: str,
        group: codedeploy.ILambdaDeploymentGroup,
    ) -> iam.Role:
        role = function_role(
            self,
            "Role",
            description=f"sds {environment}: pruner (deletes unneeded inference versions only)",
            log_group=self.log_group,
        )
        self._versions = f"{function.function_arn}:*"
        statements = [
            iam.PolicyStatement(
                sid="ListVersionsAndAliases",
                actions=["lambda:ListVersionsByFunction", "lambda:ListAliases"],
                resources=[function.function_arn],
            ),
            # Qualified ARNs only: DeleteFunction with a Qualifier deletes that one version; the
            # unqualified ARN (the whole function) is not granted.
            iam.PolicyStatement(
                sid="DeletePublishedVersions",
                actions=["lambda:DeleteFunction"],
                resources=[self._versions],
            ),
            iam.PolicyStatement(
                sid="ReadRegistryAlias",
                actions=["s3:GetObject"],
                resources=[registry.arn_for_objects(alias_key)],
            ),
            # Listing that one key says whether the alias exists: to a caller that may not list
            # the bucket, S3 answers the read of a missing key with 403, not 404
            # (sds.kernel.aws.s3.is_missing).
            iam.PolicyStatement(
                sid="FindRegistryAlias",
                actions=["s3:ListBucket"],
                resources=[registry.bucket_arn],
                conditions={"StringEquals": {"s3:prefix": alias_key}},
            ),
            iam.PolicyStatement(
                sid="ReadDeployments",
                actions=["codedeploy:ListDeployments", "codedeploy:GetDeployment"],
                resources=[group.deployment_group_arn],
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        if key is not None:
            role.add_to_policy(
                key_use(role, sid="DecryptRegistry", key=key, buckets=[registry], actions=READ)
            )
        return role

    def _acknowledge(self) -> None:
        acknowledge_wildcard_resource(
            self.role,
            self._versions,
            "Scoped to the inference function's own published versions (qualified ARNs): the "
            "pruner deletes versions the retention rule does not keep, and cannot delete the "
            "function itself (its unqualified ARN is not granted).",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords do not support resource-level "
            "permissions; '*' is the only valid resource for active tracing.",
        )
        acknowledge_own_policy(
            self.role,
            "the pruner: list and delete this function's published versions, read the registry "
            "alias and this deployment group's deployments",
        )
