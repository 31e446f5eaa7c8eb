"""Label delivery: label events from the environment's event bus to the captures bucket.

Producers put labels (`sds.kernel.events.LABEL`: a chargeback, a review's verdict) on the same
bus as the activity events, as every activity event is put: detail-type the event's `type`
(`label`), detail the event itself. A rule selects them by detail-type and hands the event
itself (`detail`, not EventBridge's envelope) to a Firehose stream, which writes one per line to
`labels/dt=YYYY-MM-DD/` as gzipped JSON Lines, where training from capture reads them. The bus
is a parameter: this construct does not care which stack owns it.
"""

from __future__ import annotations

from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.capture import LABELS_PREFIX
from sds.kernel.events import LABEL_KINDS
from stacks.components.firehose_to_s3 import FirehoseToS3, processor
from stacks.components.nag import acknowledge, acknowledge_own_policy
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
        stream = firehose.DeliveryStream.from_delivery_stream_attributes(
            self, "Stream", delivery_stream_arn=self.delivery.arn
        )
        self.rule = events.Rule(
            self,
            "Labels",
            description=f"sds {environment}: label events to the captures bucket (labels/)",
            event_bus=bus,
            event_pattern=events.EventPattern(detail_type=list(LABEL_KINDS)),
            targets=[
                targets.FirehoseDeliveryStream(
                    stream, message=events.RuleTargetInput.from_event_path("$.detail")
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
        # The target's role, which CDK creates next to the stream it may put records into.
        acknowledge_own_policy(
            stream.node.find_child("EventsRole"),
            "EventBridge's role for the label rule: put records into the label stream",
        )
