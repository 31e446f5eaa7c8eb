"""The managed policy for replaying the activity archive into the feature table (`sds --aws replay`).

It can read the environment's discovery parameters, describe the bus archive and start a replay
from it, and follow (or cancel) the replays it names (`sds-<env>-features-*`); it cannot put
events, read the table, or touch another environment. A replay only re-sends archived events
through the rules it names (the feature rule), so nothing else on the bus sees them twice.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from sds.kernel.activity import replay_prefix
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.promotion_source_policy import discovery_parameters_arn


class ReplayPolicy(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        archive: events.Archive,
    ) -> None:
        super().__init__(scope, construct_id)
        replays_arn = cdk.Stack.of(self).format_arn(
            service="events", resource="replay", resource_name=f"{replay_prefix(environment)}*"
        )
        parameters_arn = discovery_parameters_arn(self, environment)
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: replay the activity archive into the feature table",
            statements=[
                iam.PolicyStatement(
                    sid="ReplayTheArchive",
                    actions=["events:DescribeArchive", "events:StartReplay"],
                    resources=[archive.archive_arn],
                ),
                iam.PolicyStatement(
                    sid="FollowReplays",
                    actions=["events:DescribeReplay", "events:CancelReplay"],
                    resources=[replays_arn],
                ),
                iam.PolicyStatement(
                    sid="Discover",
                    actions=["ssm:GetParameter", "ssm:GetParameters"],
                    resources=[parameters_arn],
                ),
            ],
        )
        acknowledge_wildcard_resource(
            self.policy,
            replays_arn,
            "Replay names are chosen when a replay starts; scoped to this environment's feature "
            "replays (sds-<env>-features-*), to describe or cancel them.",
        )
        acknowledge_wildcard_resource(
            self.policy,
            parameters_arn,
            "Read-only, scoped to the discovery parameters of this one environment (/sds/<env>/).",
        )
