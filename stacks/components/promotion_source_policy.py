"""The read-only managed policy for promoting *out of* one environment, and the role that
carries it across accounts.

`sds promote N --to staging` copies version N out of dev's registry: the person or pipeline
holds staging's promoter policy and this policy of dev, which can only read. Nothing in it writes,
moves an alias, touches a function or a deployment, or deletes.

When an environment that reads this one (it promotes from it, or its `require_live_in` gate
looks at it) is in another account, the policy is also attached to a role of that fixed name
(`sds.config.promotion_source_role_name`) that only those accounts may assume: their promoter
policies grant `sts:AssumeRole` on it, and `sds promote` assumes it to read this registry. The
reader is then a principal of this account, so neither the registry's bucket policy nor its KMS
key policy grants anything to another account (docs/decisions.md, "Promotion across accounts
assumes a read-only role in the source account").
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.registry_paths import RegistryPaths
from stacks.components.s3_listing import list_under
from stacks.config import promotion_source_role_name


def discovery_parameters_arn(scope: Construct, environment: str) -> str:
    """Every `/sds/<env>/...` discovery parameter of one environment."""
    return cdk.Stack.of(scope).format_arn(
        service="ssm", resource="parameter", resource_name=f"sds/{environment}/*"
    )


# Assuming a role from a session that carries a source identity (set by an identity provider,
# kept through role chaining) also needs sts:SetSourceIdentity in the role's trust policy.
TRUSTED_ACTIONS = ("sts:AssumeRole", "sts:SetSourceIdentity")
ROLE_OUTPUT = "PromotionSourceRoleArn"


class PromotionSourcePolicy(Construct):
    """Read this model's versions, aliases and audit events, list its prefix, read `/sds/<env>/*`;
    with `readers` (accounts), the role they assume to do so from there."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        registry: s3.IBucket,
        key: kms.IKey | None,
        readers: Sequence[str] = (),
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
                list_under("ListModel", registry.bucket_arn, [paths.root]),
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
        self.role = (
            self._build_role(environment=environment, model_name=model_name, readers=readers)
            if readers
            else None
        )

    def _build_role(self, *, environment: str, model_name: str, readers: Sequence[str]) -> iam.Role:
        """The read-only role the promoters of `readers` assume; it holds this policy only."""
        accounts = [iam.AccountPrincipal(account) for account in readers]
        role = iam.Role(
            self,
            "Role",
            role_name=promotion_source_role_name(model_name, environment),
            assumed_by=iam.CompositePrincipal(*accounts),
            description=f"sds {environment}: read-only, for promoters in "
            f"{', '.join(readers)} to promote {model_name} versions out of {environment}",
            managed_policies=[self.policy],
            max_session_duration=cdk.Duration.hours(1),
        )
        role.assume_role_policy.add_statements(  # type: ignore[union-attr]
            iam.PolicyStatement(actions=["sts:SetSourceIdentity"], principals=accounts)
        )
        cdk.CfnOutput(
            cdk.Stack.of(self),
            ROLE_OUTPUT,
            value=role.role_arn,
            description=f"Read-only role that promoters in {', '.join(readers)} assume to "
            f"promote versions out of {environment}",
        )
        return role
