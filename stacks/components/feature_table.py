"""The feature table: each account's bucketed aggregates and the ids of the events folded in.

Its items are described by the store that writes them (`sds.kernel.featurestore.dynamodb`): one
string partition key, and a TTL attribute that lets DynamoDB delete what can no longer count.
On-demand (nothing to pay while idle, no capacity to plan), point-in-time recovery (35 days of
restores; billed by the table's size, nothing for an empty one), encrypted with the environment's
data key where the environment's other data is (`registry.kms`), else DynamoDB's own key.

Stateful: retained when its stack is deleted where the environment retains its data
(`retain_data`), and protected from deletion there; its logical id is pinned by a test. It can
also be rebuilt from the activity archive (`sds --aws replay`), which is why dev lets it go.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from sds.kernel.featurestore.dynamodb import PARTITION_KEY, TTL_ATTRIBUTE
from stacks.components.nag import acknowledge_compliance


class FeatureTable(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey | None,
        retain: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = key
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=(
                dynamodb.TableEncryption.CUSTOMER_MANAGED
                if key is not None
                else dynamodb.TableEncryption.DEFAULT
            ),
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            deletion_protection=retain,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
        )
        acknowledge_compliance(
            self.table,
            "DynamoDBInBackupPlan",
            "Point-in-time recovery restores it to any second of the last 35 days (the packs' "
            "PITR rule passes), and its items are derived data: `sds --aws replay` rebuilds them "
            "from the activity archive, which keeps at least the longest window plus its "
            "lateness (infra.features.archive_retention_days refuses less). An AWS Backup plan "
            "would add a vault and a third copy billed per GB-month, for nothing either cannot "
            "restore.",
        )
