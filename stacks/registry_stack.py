"""Registry stack (stateful): the environment's model registry, training-data and captures buckets,
and the feature table (each account's aggregates, `stacks/components/feature_table.py`).

Kept apart from the stateless stacks so they can be destroyed and recreated freely. Both buckets
(and, with `infra.registry.kms`, the customer-managed key they are encrypted with) are retained
when the stack is deleted, in every environment, unless `infra.registry.removal_policy` says
"destroy"; the feature table, encrypted with the same key, is retained where the environment
retains its data (it can be rebuilt from the activity archive); the stack is
termination-protected where the environment retains its data. The
registry's bucket policy makes S3 itself refuse rewrites of versions and audit events, alias
writes without compare-and-swap, and deletes by anyone but the retention role
(stacks/components/registry_protection.py). The registry bucket's logical id is pinned by a
test (the feature table's too): changing it would make CloudFormation replace the resource.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.discovery import REGISTRY_STACK
from stacks.components.capture_bucket import CapturesBucket
from stacks.components.data_key import data_key
from stacks.components.discovery import publish_discovery
from stacks.components.feature_table import FeatureTable
from stacks.components.registry_bucket import RegistryBucket
from stacks.components.registry_protection import RegistryProtection
from stacks.components.registry_reference import publish_registry
from stacks.components.training_data import TrainingDataBucket
from stacks.config import CaptureSettings, RegistrySettings


class RegistryStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        retain_data: bool,
        registry: RegistrySettings,
        capture: CaptureSettings,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sds {environment}: model registry, training data, captures and feature table for "
            f"{model_name} (stateful)",
            termination_protection=retain_data,
            **kwargs,
        )
        self.key: kms.IKey | None = (
            data_key(self, "DataKey", environment=environment, retain=registry.retain)
            if registry.kms
            else None
        )
        registry_bucket = RegistryBucket(
            self, "Registry", retain_logs=retain_data, settings=registry, key=self.key
        )
        # S3 enforces write-once versions and events, compare-and-swap aliases and no deletes.
        RegistryProtection(
            self,
            "Protection",
            environment=environment,
            model_name=model_name,
            bucket=registry_bucket.bucket,
            key=self.key,
        )
        training_data = TrainingDataBucket(
            self,
            "TrainingData",
            access_logs=registry_bucket.access_logs,
            settings=registry,
            key=self.key,
        )
        features = FeatureTable(self, "FeatureTable", key=self.key, retain=retain_data)
        captures = CapturesBucket(
            self,
            "Captures",
            access_logs=registry_bucket.access_logs,
            settings=registry,
            capture=capture,
            key=self.key,
        )
        self.bucket: s3.IBucket = registry_bucket.bucket
        self.training_data: s3.IBucket = training_data.bucket
        self.captures: s3.IBucket = captures.bucket
        self.access_logs: s3.IBucket = registry_bucket.access_logs
        self.feature_table: dynamodb.ITable = features.table
        publish_registry(
            self,
            registry=self.bucket,
            training_data=self.training_data,
            captures=self.captures,
            key=self.key,
            feature_table=self.feature_table,
        )
        publish_discovery(
            self,
            environment=environment,
            stack=REGISTRY_STACK,
            values={
                "registry-bucket": self.bucket.bucket_name,
                "training-data-bucket": self.training_data.bucket_name,
                "feature-table": self.feature_table.table_name,
                "captures-bucket": self.captures.bucket_name,
            },
            construct_ids={"registry-bucket": "RegistryBucketParameter"},
        )
