"""The captures bucket: what each environment served (`captures/`) and the labels (`labels/`).

Both arrive through Firehose (`capture_delivery`, `label_delivery`) in day partitions
(`sds.kernel.capture`: `captures/dt=YYYY-MM-DD/`), gzipped JSON Lines. Encrypted like the other
data buckets (the environment's data key with `infra.registry.kms`, else S3-managed keys),
TLS-only, private, access-logged to the registry's access-log bucket, retained with the registry
unless `infra.registry.removal_policy` is "destroy". Captures and Firehose's error output expire
after `capture.retention_days`; labels are kept (they are small, and retraining needs their
history). Not versioned: nothing here is ever overwritten, and versioning would keep what the
retention deletes as noncurrent versions, defeating it.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.capture import CAPTURES_PREFIX
from stacks.components.nag import acknowledge_compliance
from stacks.components.registry_bucket import (
    account_perimeter,
    acknowledge_s3_managed_key,
    encryption,
    removal,
)
from stacks.config import CaptureSettings, RegistrySettings

# Where Firehose puts what it could not deliver as asked (under its own prefix, per stream).
ERRORS_PREFIX = "errors/"


class CapturesBucket(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_logs: s3.IBucket,
        settings: RegistrySettings,
        capture: CaptureSettings,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        retention = cdk.Duration.days(capture.retention_days)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=encryption(key),
            encryption_key=key,
            bucket_key_enabled=True if key else None,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="captures/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-captures", prefix=CAPTURES_PREFIX, expiration=retention
                ),
                s3.LifecycleRule(
                    id="expire-delivery-errors", prefix=ERRORS_PREFIX, expiration=retention
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                ),
            ],
            removal_policy=removal(settings.retain),
            auto_delete_objects=not settings.retain,
        )
        # What was served (payments as sent) stays in this account, as the registry and the
        # training data do: no Allow can open it to another account's principals.
        self.bucket.add_to_resource_policy(account_perimeter(self.bucket))
        acknowledge_compliance(
            self.bucket,
            "S3BucketReplicationEnabled",
            "Captures and labels are copies: of what the inference function logged (its log "
            "group keeps the same records for infra.log_retention_days) and of the label events "
            "the activity bus's archive keeps. A lost day costs retraining and the drift report "
            "that day's data, not a served decision; a replica in a second region would double "
            "the storage and need a second key, for a regional outage that the serving function "
            "(regional too) would share.",
        )
        acknowledge_compliance(
            self.bucket,
            "S3BucketVersioningEnabled",
            "Nothing here is ever overwritten: Firehose writes each object once, under a name it "
            "generates, and no role of this project may delete from it (the bucket's lifecycle "
            "rule expires captures; CDK's auto-delete empties it only when its stack is deleted "
            "with infra.registry.removal_policy 'destroy'). Versioning would keep every expired "
            "capture as a noncurrent version, holding served payments past "
            "capture.retention_days.",
        )
        if key is None:
            acknowledge_s3_managed_key(
                self.bucket,
                "infra.registry.kms is off in this environment (dev, as committed: synthetic "
                "traffic, and a key costs 1 USD a month); staging and prod use a customer key.",
            )
