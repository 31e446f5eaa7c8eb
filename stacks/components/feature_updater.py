"""The feature updater: bus rule -> queue (with a dead-letter queue) -> Lambda -> feature table.

- A rule on the activity bus sends the event kinds an aggregate reads
  (`sds.kernel.activity.FEATURE_DETAIL_TYPES`) to an SQS queue. A delivery EventBridge cannot
  make (after its own retries for a day) goes to the dead-letter queue, not nowhere.
- The function takes the queue in batches (`infra.features.batch_size`, waiting up to
  `batching_window_seconds` to fill one) and answers with partial batch failures: only the
  messages it could not apply come back; after `max_receive_count` deliveries a message moves to
  the dead-letter queue, kept 14 days, and an alarm on its depth notifies the environment's
  alarm targets (the Inference stack's topics).
- Its role reads and writes the feature table's items (`BatchGetItem`, `PutItem`: the
  transaction's puts; with the data key, its use through DynamoDB for that table only) and
  consumes its queue; nothing else.

The function is outside any VPC, like the inference function: it reaches DynamoDB on its public
endpoint, and the event source mapping (Lambda's own pollers) reads the queue. Idle cost: no
resource bills by the hour; Lambda's pollers long-poll the queue (2 to 5 requests every 20 s),
which SQS bills as requests beyond its free tier (docs/cost.py counts them).

Its code is the kernel and `lambdas/features_updater` with numpy (which the kernel's event
validation imports), built like the inference bundle but apart from it: an edit to the updater
never publishes an inference version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from sds.kernel.activity import FEATURE_DETAIL_TYPES, SOURCE, UpdaterSettings
from stacks.components.data_key import TABLE_READ_WRITE, table_key_use
from stacks.components.nag import acknowledge, acknowledge_compliance, acknowledge_own_policy
from stacks.components.retention import log_group
from stacks.components.small_function import function_role, small_function
from stacks.config import FeatureSettings, LogSettings

HANDLER = "lambdas.features_updater.handler.lambda_handler"
TIMEOUT = cdk.Duration.seconds(60)
# AWS's advice for an SQS event source: the queue's visibility timeout at least six times the
# function's timeout, so a batch retried after throttling is not delivered twice meanwhile.
VISIBILITY_TIMEOUT = cdk.Duration.seconds(6 * 60)
DEAD_LETTER_RETENTION = cdk.Duration.days(14)


class FeatureUpdater(Construct):
    """`rule`, `queue`, `dead_letters`, `function` and the `alarm` on dead letters."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        bus: events.IEventBus,
        table: dynamodb.ITable,
        key: kms.IKey | None,
        code_dir: Path,
        architecture: str,
        settings: FeatureSettings,
        logs: LogSettings,
        topics: Sequence[sns.ITopic],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            visibility_timeout=VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letters, max_receive_count=settings.max_receive_count
            ),
        )
        self.rule = events.Rule(
            self,
            "Rule",
            event_bus=bus,
            description=f"sds {environment}: activity events an aggregate reads, to the updater",
            event_pattern=events.EventPattern(
                source=[SOURCE], detail_type=list(FEATURE_DETAIL_TYPES)
            ),
        )
        self.rule.add_target(
            targets.SqsQueue(
                self.queue, dead_letter_queue=self.dead_letters, max_event_age=cdk.Duration.days(1)
            )
        )
        self.log_group = log_group(self, "Logs", settings=logs)
        self.role = self._build_role(environment=environment, table=table, key=key)
        self.function = small_function(
            self,
            "Function",
            description=f"sds {environment}: folds activity events into the feature table",
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir)),
            architecture=architecture,
            role=self.role,
            log_group=self.log_group,
            memory_mb=settings.updater_memory_mb,
            timeout=TIMEOUT,
            environment=UpdaterSettings(
                feature_store_uri=f"dynamodb://{table.table_name}", environment=environment
            ).to_environ(),
            why_no_dead_letter_queue="Invoked by its SQS event source only: failed messages go "
            "back to the queue and, after max_receive_count deliveries, to the queue's own "
            "dead-letter queue (alarmed); a function DLQ applies to asynchronous invocations, "
            "which never happen here.",
            why_no_reserved_concurrency="Only its SQS event source invokes it. Reserved "
            "concurrency would make Lambda throttle the pollers' batches, which return to the "
            "queue and count towards max_receive_count: events would reach the dead-letter queue "
            "for being throttled, not for failing (AWS advises the event source's maximum "
            "concurrency instead). The table is on demand and takes what the pollers scale to, "
            "and a reservation would be carved out of the account's pool, which new accounts "
            "start at 10, too few to reserve from.",
            reaches="DynamoDB for the feature table, SQS through its event source, X-Ray",
        )
        # Lambda's pollers read the queue: no maximum concurrency, so that while the queue is
        # empty they can drop to two long polls at a time (fewer billed requests).
        self.event_source = self.function.add_event_source_mapping(
            "FromQueue",
            event_source_arn=self.queue.queue_arn,
            batch_size=settings.batch_size,
            max_batching_window=(
                cdk.Duration.seconds(settings.batching_window_seconds)
                if settings.batching_window_seconds
                else None
            ),
            report_batch_item_failures=True,
        )
        self.queue.grant_consume_messages(self.role)
        self.alarm = cloudwatch.Alarm(
            self,
            "DeadLettersAlarm",
            alarm_description=f"sds {environment}: activity events that did not reach the feature "
            "table are waiting in the dead-letter queue (see docs/runbook.md, 'Dead letters')",
            metric=self.dead_letters.metric_approximate_number_of_messages_visible(
                period=cdk.Duration.minutes(5), statistic="Maximum"
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for topic in topics:
            action = cw_actions.SnsAction(topic)
            self.alarm.add_alarm_action(action)
            self.alarm.add_ok_action(action)
        if not topics:
            acknowledge_compliance(
                self.alarm,
                "CloudWatchAlarmAction",
                "This environment notifies no one (infra.alarms.topic_email / topic_arn unset; "
                "prod requires a target): the alarm still shows its state in the console and the "
                "dead letters stay 14 days in their queue for docs/runbook.md's 'Dead letters'.",
            )
        self._acknowledge()

    def _build_role(
        self, *, environment: str, table: dynamodb.ITable, key: kms.IKey | None
    ) -> iam.Role:
        role = function_role(
            self,
            "Role",
            description=f"sds {environment}: feature updater (reads and writes the feature table)",
            log_group=self.log_group,
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="FoldAccountAggregates",
                # TransactWriteItems is authorized per item: its puts need PutItem.
                actions=["dynamodb:BatchGetItem", "dynamodb:PutItem"],
                resources=[table.table_arn],
            )
        )
        if key is not None:
            role.add_to_policy(
                table_key_use(
                    role, sid="UseFeatureTableKey", key=key, table=table, actions=TABLE_READ_WRITE
                )
            )
        return role

    def _acknowledge(self) -> None:
        acknowledge(
            self.dead_letters,
            "Serverless-SQSRedrivePolicy",
            "This is the dead-letter queue: messages end here, kept 14 days and alarmed; a redrive "
            "policy would move them on to a third queue nobody watches.",
        )
        acknowledge(
            self.event_source,
            "Serverless-LambdaEventSourceMappingDestination",
            "On-failure destinations are for stream sources; for an SQS source, failed messages "
            "return to the queue and its redrive policy moves them to the dead-letter queue "
            "after max_receive_count deliveries (alarmed).",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords do not support resource-level "
            "permissions; '*' is the only valid resource for active tracing.",
        )
        acknowledge_own_policy(
            self.role,
            "the feature updater: write its logs, read and write the feature table's items, "
            "consume its own queue",
        )
