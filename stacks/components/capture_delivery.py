"""Capture delivery: the inference function's capture records, from its log group to S3.

The handler writes one JSON line per scored payment to stdout (`sds.kernel.capture`): no network
call on the request path. Each line is a log event of the function's log group; a subscription
filter selects the capture records (`SUBSCRIPTION_FILTER`: EMF metric lines and ordinary logs stay
out) and CloudWatch Logs hands them, gzipped in batches, to a Firehose stream, which decompresses
them, extracts each log event's message (the record, unchanged), puts one per line, and writes
them to the captures bucket's `captures/dt=YYYY-MM-DD/` as gzipped JSON Lines, within
`BUFFER_SECONDS`.

The log group must stay in the Standard class: the Infrequent Access class takes no subscription
filters (and no embedded metrics).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.capture import CAPTURES_PREFIX, SUBSCRIPTION_FILTER
from stacks.components.firehose_to_s3 import FirehoseToS3, processor
from stacks.components.nag import acknowledge_own_policy
from stacks.components.service_role import service_role
from stacks.config import LogSettings


class CaptureDelivery(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        log_group: logs.ILogGroup,
        bucket: s3.IBucket,
        key: kms.IKey | None,
        logs_settings: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.delivery = FirehoseToS3(
            self,
            "Delivery",
            purpose=f"sds {environment}: capture delivery",
            bucket=bucket,
            key=key,
            prefix=CAPTURES_PREFIX,
            processors=[
                processor("Decompression", CompressionFormat="GZIP"),
                processor("CloudWatchLogProcessing", DataMessageExtraction="true"),
                processor("AppendDelimiterToRecord"),
            ],
            logs_settings=logs_settings,
        )
        # CloudWatch Logs assumes it for the function's log group only, whichever form of the
        # group's ARN it passes as the source (the group's, or its streams' with `:*`).
        group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name=log_group.log_group_name,
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        self.role = service_role(
            self,
            "SubscriptionRole",
            service="logs.amazonaws.com",
            sources=[group, f"{group}:*"],
            description=f"sds {environment}: CloudWatch Logs puts capture records into Firehose",
        )
        policy = iam.Policy(
            self,
            "SubscriptionPolicy",
            statements=[
                iam.PolicyStatement(
                    sid="PutCaptures",
                    actions=["firehose:PutRecord", "firehose:PutRecordBatch"],
                    resources=[self.delivery.arn],
                )
            ],
            roles=[self.role],
        )
        acknowledge_own_policy(
            policy, "the capture subscription: put records into this environment's capture stream"
        )
        self.subscription = logs.CfnSubscriptionFilter(
            self,
            "Subscription",
            log_group_name=log_group.log_group_name,
            filter_pattern=SUBSCRIPTION_FILTER,
            destination_arn=self.delivery.arn,
            role_arn=self.role.role_arn,
        )
        # CloudWatch Logs tests the destination when the filter is created: the role's policy
        # must exist first (the stream comes first anyway: its ARN is the destination).
        self.subscription.node.add_dependency(policy)
