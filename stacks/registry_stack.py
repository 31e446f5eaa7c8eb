"""Registry stack (stateful): the environment's model registry bucket.

Kept apart from the stateless stacks so they can be destroyed and recreated freely; outside dev
the bucket is retained and the stack is termination-protected. The bucket's logical id is pinned
by a test: changing it would make CloudFormation replace the bucket.
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.kernel.discovery import REGISTRY_STACK
from stacks.components.discovery import publish_discovery
from stacks.components.registry_bucket import RegistryBucket
from stacks.components.registry_reference import publish_registry
from stacks.config import RegistrySettings


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
        **kwargs: Any,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description=f"sds {environment}: model registry for {model_name} (stateful)",
            termination_protection=retain_data,
            **kwargs,
        )
        registry_bucket = RegistryBucket(self, "Registry", retain=retain_data, settings=registry)
        self.bucket: s3.IBucket = registry_bucket.bucket
        publish_registry(self, registry_bucket.bucket)
        publish_discovery(
            self,
            environment=environment,
            stack=REGISTRY_STACK,
            values={"registry-bucket": registry_bucket.bucket.bucket_name},
            construct_ids={"registry-bucket": "RegistryBucketParameter"},
        )
