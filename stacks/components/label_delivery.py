"""Label delivery: label events from the environment's event bus to the captures bucket.

Producers put labels (`sds.kernel.events.LABEL`: a chargeback, a review's verdict) on the same
bus as the activity events, as every activity event is put: source `sds.activity`, detail-type
the event's `type` (`label`), detail the event itself. A rule selects them by source and
detail-type and hands the event itself (`detail`, not EventBridge's envelope), through a role
EventBridge may assume for this bus's rules only, to a Firehose stream, which writes one per line
to `labels/dt=YYYY-MM-DD/` as gzipped JSON Lines, where training from capture reads them. The bus
is a parameter: this construct does not care which stack owns it.

No function of the project is on this path, so nothing here validates a label or refuses one
dated ahead of the clock, as `sds label` and the local `POST /events` do: Firehose stores what the
rule hands it, and training from capture skips an invalid label (counted) and one dated after
its `--as-of` (`training.capture_data.read_labels`).
"""

from __future__ import annotations

import jsii
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk.interfaces.aws_events import IRuleRef
from constructs import Construct

from sds.kernel.activity import SOURCE
from sds.kernel.capture import LABELS_PREFIX
from sds.kernel.events import LABEL_KINDS
from stacks.components.firehose_to_s3 import FirehoseToS3, processor
from stacks.components.nag import acknowledge, acknowledge_own_policy
from stacks.components.service_role import rules_on, service_role
from stacks.config import LogSettings


class LabelDelivery(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        bus: events.IEventBus,
        bucket: s3.IBucket,
        key: kms.IKey | None,
        logs_settings: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self.delivery = FirehoseToS3(
            self,
            "Delivery",
            purpose=f"sds {environment}: label delivery",
            bucket=bucket,
            key=key,
            prefix=LABELS_PREFIX,
            processors=[processor("AppendDelimiterToRecord")],
            logs_settings=logs_settings,
        )
        # EventBridge puts the labels into the stream through a role for this bus's rules only.
        self.events_role = service_role(
            self,
            "EventsRole",
            service="events.amazonaws.com",
            sources=[rules_on(self, bus)],
            description=f"sds {environment}: EventBridge puts label events into their stream",
        )
        self.events_role.add_to_policy(
            iam.PolicyStatement(
                sid="PutLabels",
                actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
                resources=[self.delivery.arn],
            )
        )
        self.rule = events.Rule(
            self,
            "Labels",
            description=f"sds {environment}: label events to the captures bucket (labels/)",
            event_bus=bus,
            # As producers put them (sds.kernel.activity.put_events_entry, with the producer
            # policy's one source): an event of another source is no label.
            event_pattern=events.EventPattern(source=[SOURCE], detail_type=list(LABEL_KINDS)),
            targets=[
                _Stream(
                    self.delivery.arn,
                    role=self.events_role,
                    message=events.RuleTargetInput.from_event_path("$.detail"),
                )
            ],
        )
        acknowledge(
            self.rule,
            "Serverless-EventBusDLQ",
            "EventBridge retries a failed delivery to Firehose for 24 hours; the bus's archive "
            "keeps every label event, so a delivery that still failed is replayed from it (the "
            "rule's FailedInvocations metric shows one). A queue would keep nothing more.",
        )
        acknowledge_own_policy(
            self.events_role,
            "EventBridge's role for the label rule: put records into the label stream",
        )


@jsii.implements(events.IRuleTarget)
class _Stream:
    """A Firehose stream as a rule's target, through a role of the caller's (CDK's own target
    makes one that trusts EventBridge for any rule of any account)."""

    def __init__(self, arn: str, *, role: iam.IRole, message: events.RuleTargetInput) -> None:
        self._arn = arn
        self._role = role
        self._message = message

    def bind(self, rule: IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        del rule, id
        return events.RuleTargetConfig(arn=self._arn, role=self._role, input=self._message)
