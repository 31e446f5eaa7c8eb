"""The activity event bus: where producers put logins and payments, with an archive for replays.

A custom EventBridge bus per environment (free while idle), whose archive keeps every event put
on it for `infra.features.archive_retention_days` (0: forever; billed by the GB archived), so
that the feature table can be rebuilt, or new aggregate definitions filled, by replaying it
(`sds --aws replay`). Replayed events are not archived again (EventBridge's own rule).

The producer policy is the one way in: `events:PutEvents` on this bus only, and only with the
activity source (`events:source`), so a producer can neither write to another bus nor pass its
events off as another system's. Attach it to whatever produces activity events (the payment
service after it scored a payment, the login service). Other rules on this bus (labels, later)
attach to `bus` from outside.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from sds.kernel.activity import SOURCE
from stacks.config import FeatureSettings


class ActivityBus(Construct):
    """`bus`, its `archive`, and the `producer_policy` that may put events on it."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        settings: FeatureSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.bus = events.EventBus(
            self,
            "Bus",
            description=f"sds {environment}: activity events (logins, payments) for the account "
            "aggregates",
        )
        retention = settings.archive_retention_days
        self.archive = events.Archive(
            self,
            "Archive",
            source_event_bus=self.bus,
            # Every event put on the bus (an archive needs a pattern; this one matches all).
            event_pattern=events.EventPattern(account=[stack.account]),
            retention=cdk.Duration.days(retention) if retention else None,
            description=f"sds {environment}: every activity event, for replays into the feature "
            "table",
        )
        self.producer_policy = iam.ManagedPolicy(
            self,
            "ProducerPolicy",
            description=f"sds {environment}: put activity events on the environment's bus only",
            statements=[
                iam.PolicyStatement(
                    sid="PutActivityEvents",
                    actions=["events:PutEvents"],
                    resources=[self.bus.event_bus_arn],
                    conditions={"StringEquals": {"events:source": SOURCE}},
                )
            ],
        )
