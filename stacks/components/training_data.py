"""The training-data bucket: the history models are trained on, apart from the models themselves.

Its own bucket (not a prefix of the registry) so that no grant on the registry, the inference
function's least of all, can ever reach it; analysts and pipelines read it through the
environment's data-reader policy, the training task through its role (docs/decisions.md, "Training data in its own bucket").
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.registry_bucket import (
    account_perimeter,
    acknowledge_s3_managed_key,
    acknowledge_single_region,
    encryption,
    removal,
)
from stacks.config import RegistrySettings


class TrainingDataBucket(Construct):
    """Versioned, encrypted like the registry, TLS-only, closed to other accounts, private,
    access-logged (to the registry's access-log bucket), and retained or destroyed with the
    registry."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_logs: s3.IBucket,
        settings: RegistrySettings,
        key: kms.IKey | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            versioned=True,
            encryption=encryption(key),
            encryption_key=key,
            bucket_key_enabled=True if key else None,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="training-data/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=cdk.Duration.days(
                        settings.noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                )
            ],
            removal_policy=removal(settings.retain),
            auto_delete_objects=not settings.retain,
        )
        self.bucket.add_to_resource_policy(account_perimeter(self.bucket))
        acknowledge_single_region(
            self.bucket,
            "Training data: extracts of payment history whose source of record is upstream (the "
            "payment system), from which they can be exported again.",
            retained=settings.retain,
            deletes="the one role of this project that may delete from it is the batch "
            "function's, and only its own runs' work files under the batch output prefix",
        )
        if key is None:
            acknowledge_s3_managed_key(
                self.bucket,
                "infra.registry.kms is off in this environment (dev, as committed: synthetic or "
                "sampled data, and a key costs 1 USD a month); staging and prod use a customer key.",
            )
