"""A Firehose stream into one prefix of a bucket: day partitions, gzipped JSON Lines, encrypted.

What capture and label delivery share (`capture_delivery`, `label_delivery`). Objects land under
`<prefix>dt=YYYY-MM-DD/` (Firehose's arrival time, UTC: the partitions of `sds.kernel.capture`)
as `.jsonl.gz`, one record a line; what Firehose cannot deliver as asked goes under
`errors/<prefix><error type>/dt=.../`. The stream encrypts what it buffers (an AWS-owned key, no
cost), the objects with the environment's data key when it has one (else the bucket's S3-managed
keys), and logs delivery errors to its own log group. Its role may write objects under those two
prefixes (and read and list what Firehose's S3 delivery needs), nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kinesisfirehose as firehose
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.capture import PARTITION_KEY
from stacks.components.capture_bucket import ERRORS_PREFIX
from stacks.components.data_key import READ_WRITE, key_use
from stacks.components.nag import acknowledge_own_policy, acknowledge_wildcard_resource
from stacks.components.retention import log_group
from stacks.components.service_role import service_role
from stacks.config import LogSettings

# Firehose flushes a buffer after this long or this much data, whichever comes first.
BUFFER_SECONDS = 300
BUFFER_MIB = 64
Processor = firehose.CfnDeliveryStream.ProcessorProperty


def processor(kind: str, **parameters: str) -> Processor:
    return Processor(
        type=kind,
        parameters=[
            firehose.CfnDeliveryStream.ProcessorParameterProperty(
                parameter_name=name, parameter_value=value
            )
            for name, value in parameters.items()
        ]
        or None,
    )


class FirehoseToS3(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        purpose: str,
        bucket: s3.IBucket,
        key: kms.IKey | None,
        prefix: str,
        processors: Sequence[Processor],
        logs_settings: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.log_group = log_group(self, "Logs", settings=logs_settings)
        self.log_stream = logs.LogStream(
            self,
            "DeliveryErrors",
            log_group=self.log_group,
            removal_policy=cdk.RemovalPolicy.RETAIN
            if logs_settings.retain
            else cdk.RemovalPolicy.DESTROY,
        )
        self.role = service_role(
            self,
            "Role",
            service="firehose.amazonaws.com",
            description=f"{purpose}: Firehose writes {prefix} of the captures bucket",
        )
        errors = f"{ERRORS_PREFIX}{prefix}"
        objects = [bucket.arn_for_objects(f"{prefix}*"), bucket.arn_for_objects(f"{errors}*")]
        statements = [
            # What Firehose's S3 delivery uses (Amazon Data Firehose Developer Guide, "Grant
            # Firehose access to an Amazon S3 destination"), on its own prefixes only.
            iam.PolicyStatement(
                sid="DeliverObjects",
                actions=["s3:PutObject", "s3:AbortMultipartUpload", "s3:GetObject"],
                resources=objects,
            ),
            iam.PolicyStatement(
                sid="FindBucket",
                actions=[
                    "s3:GetBucketLocation",
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                ],
                resources=[bucket.bucket_arn],
            ),
            iam.PolicyStatement(
                sid="LogDeliveryErrors",
                actions=["logs:PutLogEvents"],
                resources=[
                    stack.format_arn(
                        service="logs",
                        resource="log-group",
                        resource_name=(
                            f"{self.log_group.log_group_name}:log-stream:"
                            f"{self.log_stream.log_stream_name}"
                        ),
                        arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            ),
        ]
        if key is not None:
            statements.append(
                key_use(self, sid="EncryptObjects", key=key, buckets=[bucket], actions=READ_WRITE)
            )
        # Its own policy object (not the role's default one) so the stream can depend on it.
        policy = iam.Policy(self, "Policy", statements=statements, roles=[self.role])
        acknowledge_own_policy(
            policy,
            f"the Firehose role of {purpose}: write under {prefix} and its error output, log "
            "delivery errors to its own stream",
        )
        for resource in objects:
            acknowledge_wildcard_resource(
                policy,
                resource,
                f"Firehose writes new objects with generated names under {prefix} (and its error "
                "output), in this bucket only.",
            )
        self.stream = firehose.CfnDeliveryStream(
            self,
            "Stream",
            delivery_stream_type="DirectPut",
            delivery_stream_encryption_configuration_input=(
                firehose.CfnDeliveryStream.DeliveryStreamEncryptionConfigurationInputProperty(
                    key_type="AWS_OWNED_CMK"
                )
            ),
            extended_s3_destination_configuration=firehose.CfnDeliveryStream.ExtendedS3DestinationConfigurationProperty(
                bucket_arn=bucket.bucket_arn,
                role_arn=self.role.role_arn,
                prefix=f"{prefix}{PARTITION_KEY}=!{{timestamp:yyyy-MM-dd}}/",
                error_output_prefix=(
                    f"{errors}!{{firehose:error-output-type}}/{PARTITION_KEY}="
                    "!{timestamp:yyyy-MM-dd}/"
                ),
                buffering_hints=firehose.CfnDeliveryStream.BufferingHintsProperty(
                    interval_in_seconds=BUFFER_SECONDS, size_in_m_bs=BUFFER_MIB
                ),
                compression_format="GZIP",
                file_extension=".jsonl.gz",
                encryption_configuration=(
                    firehose.CfnDeliveryStream.EncryptionConfigurationProperty(
                        no_encryption_config="NoEncryption"
                    )
                    if key is None
                    else firehose.CfnDeliveryStream.EncryptionConfigurationProperty(
                        kms_encryption_config=firehose.CfnDeliveryStream.KMSEncryptionConfigProperty(
                            awskms_key_arn=key.key_arn
                        )
                    )
                ),
                processing_configuration=firehose.CfnDeliveryStream.ProcessingConfigurationProperty(
                    enabled=True, processors=list(processors)
                ),
                cloud_watch_logging_options=firehose.CfnDeliveryStream.CloudWatchLoggingOptionsProperty(
                    enabled=True,
                    log_group_name=self.log_group.log_group_name,
                    log_stream_name=self.log_stream.log_stream_name,
                ),
            ),
        )
        # Firehose checks its access when the stream is created: the policy must exist first.
        self.stream.node.add_dependency(policy)
        self.arn = self.stream.attr_arn
