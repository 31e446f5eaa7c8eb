"""The managed policy for analysts and pipelines that read an environment's training data."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge_wildcard_resource
from stacks.components.s3_listing import list_under


class DataReaderPolicy(Construct):
    """Read and list the training-data prefix of the training-data bucket; nothing else, no
    writes, and nothing of the model registry."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        bucket: s3.IBucket,
        prefix: str,
        key: kms.IKey | None,
    ) -> None:
        super().__init__(scope, construct_id)
        data = bucket.arn_for_objects(f"{prefix}*")
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: read-only access to the training data ({prefix})",
            statements=[
                iam.PolicyStatement(
                    sid="ReadTrainingData", actions=["s3:GetObject"], resources=[data]
                ),
                list_under("ListTrainingData", bucket.bucket_arn, [prefix]),
            ],
        )
        if key is not None:
            self.policy.add_statements(
                key_use(self, sid="DecryptTrainingData", key=key, buckets=[bucket], actions=READ)
            )
        acknowledge_wildcard_resource(
            self.policy, data, f"Read-only, scoped to the training data prefix ({prefix})."
        )
