"""The managed policy for people and pipelines allowed to promote and roll back one environment."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.data_key import READ_WRITE, key_use
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.promotion_source_policy import TRUSTED_ACTIONS
from stacks.components.registry_paths import RegistryPaths
from stacks.components.s3_listing import list_under
from stacks.config import PromotionSource, promotion_source_role_name


def promotion_source_role_arn(scope: Construct, *, model_name: str, source: PromotionSource) -> str:
    """The ARN of `source`'s promotion source role, in its account (IAM is global: no region)."""
    return cdk.Stack.of(scope).format_arn(
        service="iam",
        region="",
        account=source.account,
        resource="role",
        resource_name=promotion_source_role_name(model_name, source.env),
    )


class PromoterPolicy(Construct):
    """What `sds promote --to <env>` and `sds rollback --env <env>` need in this environment.

    Promotion copies a version from the source environment, so promoting into staging needs this
    policy for staging plus dev's read-only `PromotionSourcePolicy` (never dev's promoter
    policy). When the source is in another account (`sources`), this policy may assume the
    source's promotion source role instead, which holds exactly that read-only policy there.
    Nothing here can delete.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        registry: s3.IBucket,
        key: kms.IKey | None,
        function: lambda_.IFunction,
        group: codedeploy.ILambdaDeploymentGroup,
        sources: Sequence[PromotionSource] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        paths = RegistryPaths(model_name)
        stack = cdk.Stack.of(self)
        parameters_arn = stack.format_arn(
            service="ssm", resource="parameter", resource_name=f"sds/{environment}/*"
        )
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: promote model versions to and roll back {model_name}",
            statements=[
                iam.PolicyStatement(
                    sid="MoveAliases",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[registry.arn_for_objects(paths.aliases)],
                ),
                iam.PolicyStatement(
                    sid="CopyAndReadVersions",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[registry.arn_for_objects(paths.versions)],
                ),
                iam.PolicyStatement(
                    sid="AuditEvents",
                    actions=["s3:GetObject", "s3:PutObject"],
                    resources=[registry.arn_for_objects(paths.events)],
                ),
                list_under("ListModel", registry.bucket_arn, [paths.root]),
                iam.PolicyStatement(
                    sid="SwitchLiveAlias",
                    actions=[
                        "lambda:GetAlias",
                        "lambda:UpdateAlias",
                        "lambda:ListVersionsByFunction",
                        "lambda:GetFunctionConfiguration",
                        # Re-activates an Inactive target version before the switch (an
                        # invocation is what starts its re-creation; sds.kernel.activation).
                        "lambda:InvokeFunction",
                    ],
                    resources=[function.function_arn, f"{function.function_arn}:*"],
                ),
                iam.PolicyStatement(
                    sid="StopDeployments",
                    actions=[
                        "codedeploy:GetDeployment",
                        "codedeploy:ListDeployments",
                        "codedeploy:StopDeployment",
                    ],
                    resources=[group.deployment_group_arn],
                ),
                iam.PolicyStatement(
                    sid="Discover",
                    actions=["ssm:GetParameter", "ssm:GetParameters"],
                    resources=[parameters_arn],
                ),
            ],
        )
        if key is not None:
            self.policy.add_statements(
                key_use(self, sid="UseRegistryKey", key=key, buckets=[registry], actions=READ_WRITE)
            )
        if sources:
            self.policy.add_statements(
                iam.PolicyStatement(
                    sid="AssumePromotionSourceRoles",
                    # SetSourceIdentity: for callers whose session carries a source identity,
                    # which role chaining passes on (the role's trust allows it too).
                    actions=list(TRUSTED_ACTIONS),
                    resources=[
                        promotion_source_role_arn(self, model_name=model_name, source=source)
                        for source in sources
                    ],
                )
            )
        reasons = {
            registry.arn_for_objects(paths.aliases): "alias objects of this model only; moves "
            "are compare-and-swap (If-Match) and audited",
            registry.arn_for_objects(paths.versions): "this model's versions only: read, and "
            "write-once copies (If-None-Match) when a version is promoted into this environment",
            registry.arn_for_objects(paths.events): "append-only audit events of this model, one "
            "fresh key per event",
            f"{function.function_arn}:*": "the function's own versions and aliases (qualified "
            "ARNs): rollback switches alias live between published versions, and invokes an "
            "Inactive target version once to start its re-creation",
            parameters_arn: "the discovery parameters of this one environment (/sds/<env>/)",
        }
        for resource, reason in reasons.items():
            acknowledge_wildcard_resource(self.policy, resource, f"Scoped to {reason}.")
