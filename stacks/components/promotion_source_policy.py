"""The read-only managed policy for promoting *out of* one environment.

`sds promote N --to staging` copies version N out of dev's registry: the person or pipeline
holds staging's promoter policy and this policy of dev, which can only read. Nothing in it writes,
moves an alias, touches a function or a deployment, or deletes.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.registry_paths import RegistryPaths


def discovery_parameters_arn(scope: Construct, environment: str) -> str:
    """Every `/sds/<env>/...` discovery parameter of one environment."""
    return cdk.Stack.of(scope).format_arn(
        service="ssm", resource="parameter", resource_name=f"sds/{environment}/*"
    )


class PromotionSourcePolicy(Construct):
    """Read this model's versions, aliases and audit events, list its prefix, read `/sds/<env>/*`."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        registry: s3.IBucket,
        key: kms.IKey | None,
    ) -> None:
        super().__init__(scope, construct_id)
        paths = RegistryPaths(model_name)
        readable = {
            paths.versions: "this model's immutable versions (model, estimator, manifest)",
            paths.aliases: "this model's alias documents, to check what the environment serves",
            paths.events: "this model's audit events",
        }
        parameters_arn = discovery_parameters_arn(self, environment)
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: read-only, to promote {model_name} versions out of "
            f"{environment} (with the target environment's promoter policy)",
            statements=[
                iam.PolicyStatement(
                    sid="ReadVersionsAliasesAndEvents",
                    actions=["s3:GetObject"],
                    resources=[registry.arn_for_objects(prefix) for prefix in readable],
                ),
                iam.PolicyStatement(
                    sid="ListModel",
                    actions=["s3:ListBucket"],
                    resources=[registry.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{paths.root}*"]}},
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
                key_use(self, sid="DecryptRegistry", key=key, buckets=[registry], actions=READ)
            )
        for prefix, what in readable.items():
            acknowledge_wildcard_resource(
                self.policy, registry.arn_for_objects(prefix), f"Read-only, scoped to {what}."
            )
        acknowledge_wildcard_resource(
            self.policy,
            parameters_arn,
            "Read-only, scoped to the discovery parameters of this one environment (/sds/<env>/).",
        )
