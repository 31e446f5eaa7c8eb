"""The CodeDeploy `BeforeAllowTraffic` hook of alias `live`: no traffic shifts to a Lambda version
that cannot serve (not Active, e.g. an Inactive SnapStart version whose snapshot is gone)."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from sds.kernel.activation import hook_environment
from stacks.bundling import source_bundle
from stacks.components.nag import (
    acknowledge,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.retention import log_group
from stacks.components.small_function import function_role, small_function
from stacks.config import LogSettings

HANDLER = "lambdas.activation_hook.handler.lambda_handler"
PACKAGES = ("sds.kernel", "lambdas.activation_hook")
# The repository the stacks are synthesized from (this file is stacks/components/...).
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
# Lambda's longest timeout: the most time the hook can give an Inactive target to be re-created
# (CodeDeploy itself waits up to an hour for a hook's status). The handler stops waiting 30 s
# before it, to report `Failed` in time.
TIMEOUT = cdk.Duration.minutes(15)


class ActivationHook(Construct):
    """A small function CodeDeploy runs before every traffic shift of `live` (a deploy, a
    deployment created by hand, CodeDeploy's own rollback). It reads the deployment's target
    version, re-activates it if Lambda reports it Inactive, waits for Active, and reports
    `Succeeded`; otherwise `Failed`, and the deployment fails with `live` unchanged.

    Its code is `lambdas/activation_hook` and the kernel, its own small asset (no wheels: it
    imports only the kernel and the AWS SDK the runtime provides), so an edit to it never
    publishes a new inference version. Its role can read and
    invoke the guarded function's versions, read deployment targets, and (granted by the
    deployment group when this is its pre-traffic hook) report a status on that one deployment
    group; nothing else.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        guarded: lambda_.IFunction,
        logs: LogSettings,
        source_root: Path = _SOURCE_ROOT,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = log_group(self, "Logs", settings=logs)
        self.role = self._build_role(environment=environment, guarded=guarded)
        self.function = small_function(
            self,
            "Function",
            description=f"sds {environment}: CodeDeploy BeforeAllowTraffic hook of alias live "
            "(shifts traffic only to an Active version)",
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(source_bundle(PACKAGES, name="lambda-hook", source_root=source_root))
            ),
            role=self.role,
            log_group=self.log_group,
            memory_mb=256,
            timeout=TIMEOUT,
            environment=hook_environment(function_name=guarded.function_name),
            why_no_dead_letter_queue="Invoked only by CodeDeploy, once per deployment; whatever "
            "happens it reports a status, and without one CodeDeploy fails the deployment after "
            "an hour: a failed invocation has nothing to replay from a queue.",
            why_no_reserved_concurrency="Only CodeDeploy invokes it, once per deployment of this "
            "environment (one at a time per deployment group), so it cannot be flooded; a "
            "reservation would be carved out of the account's pool, which new accounts start at "
            "10, too few to reserve from.",
            reaches="Lambda, CodeDeploy, X-Ray",
        )
        self._acknowledge()

    def _build_role(self, *, environment: str, guarded: lambda_.IFunction) -> iam.Role:
        role = function_role(
            self,
            "Role",
            description=f"sds {environment}: activation hook (reads and wakes the inference "
            "function's versions)",
            log_group=self.log_group,
        )
        versions = f"{guarded.function_arn}:*"
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadAndWakeVersions",
                actions=["lambda:GetFunctionConfiguration", "lambda:InvokeFunction"],
                resources=[versions],
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadDeploymentTargets",
                actions=["codedeploy:ListDeploymentTargets", "codedeploy:GetDeploymentTarget"],
                resources=["*"],
            )
        )
        acknowledge_wildcard_resource(
            role,
            versions,
            "The guarded inference function's own versions (qualified ARNs): the hook reads the "
            "state of the version a deployment shifts to and invokes it once if Lambda reports it "
            "Inactive, which is what starts its re-creation.",
        )
        return role

    def _acknowledge(self) -> None:
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "codedeploy:ListDeploymentTargets and codedeploy:GetDeploymentTarget support no "
            "resource-level permissions (Service Authorization Reference for CodeDeploy); both "
            "are read-only and return deployment metadata. X-Ray's PutTraceSegments/"
            "PutTelemetryRecords likewise accept only '*'.",
        )
        acknowledge_own_policy(
            self.role,
            "the activation hook: read and wake the guarded function's versions, read this "
            "deployment's targets, report its status",
        )
