"""The drift monitor: a small scheduled Lambda that publishes an environment's daily drift figures
as CloudWatch metrics, and the alarms on them.

An EventBridge schedule (config `monitor.schedule`, daily by default) invokes the function
(`lambdas/monitor`), which reads the last whole days of the environment's captures
(`captures/dt=YYYY-MM-DD/` of the captures bucket), each served version's manifest from the
registry, and prints the figures in embedded metric format (`sds.kernel.drift.NAMESPACE`): no
API call, no always-on resource. Three alarms watch them, on the `Environment` dimension (the
largest value any version published, the smallest for the low side of the band): the score's PSI
against the training holdout reaching `monitor.score_psi_alarm`, and the alert rate leaving the
band `monitor.alert_rate_ratio_min` .. `max` around the rate the version's manifest expects (one
alarm above it, one below). A fourth watches the monitor itself: a run
that fails (after Lambda's two retries of a scheduled one) would otherwise leave the drift alarms
quietly without data, which they read as "no drift". A fifth, only where
`monitor.min_daily_payments` is set, watches the volume: a day on which the environment scored
fewer payments than that (`Payments`, every version together, 0 on a day without any) raises it,
whatever broke the traffic (a client, DNS, the API, capture); missing data keeps its state
(docs/decisions.md, 60).

Its role reads the captures prefix and the registry's version manifests, nothing else. The code
needs the kernel's capture parser, which imports numpy and orjson: `monitor_bundle_spec` is its
bundle (the kernel, `lambdas/monitor` and those two wheels), built like the inference bundle but
as its own asset, so an edit to the monitor never publishes an inference version. The stack
builds it and passes it as `code`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from sds.config import MonitorSettings
from sds.kernel.capture import CAPTURES_PREFIX
from sds.kernel.drift import NAMESPACE, MonitorTarget
from stacks.bundling import BundleSpec
from stacks.components.data_key import READ, key_use
from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import log_group
from stacks.components.s3_listing import list_under
from stacks.components.small_function import function_role, small_function
from stacks.config import LogSettings

HANDLER = "lambdas.monitor.handler.lambda_handler"
PACKAGES = ("sds.kernel", "lambdas.monitor")
ARCHITECTURE = "arm64"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_NO_QUEUE = (
    "A failed scheduled run loses nothing: the captures stay in S3, Lambda retries the run "
    'twice, and an invocation with {"day": "YYYY-MM-DD"} publishes that day again; its Errors '
    "metric shows the failure. A queue would only hold schedule events, which carry nothing."
)


def monitor_bundle_spec(*, python: str, root: Path = _SOURCE_ROOT) -> BundleSpec:
    """The monitor function's bundle: the kernel, the handler and the wheels the kernel's capture
    parser imports (`lambdas/monitor/requirements.txt`), for arm64."""
    return BundleSpec(
        source_root=root,
        packages=PACKAGES,
        requirements=root / "lambdas" / "monitor" / "requirements.txt",
        architecture=ARCHITECTURE,
        python=python,
        build_root=root / "build",
    )


class DriftMonitor(Construct):
    """The monitor function, its least-privilege role and log group, its schedule and alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        captures: s3.IBucket,
        registry: s3.IBucket,
        key: kms.IKey | None,
        code: lambda_.Code,
        settings: MonitorSettings,
        logs: LogSettings,
        topics: Sequence[sns.ITopic] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        target = MonitorTarget(
            environment=environment,
            model=model_name,
            registry_uri=f"s3://{registry.bucket_name}",
            captures_uri=f"s3://{captures.bucket_name}/{CAPTURES_PREFIX}",
            days=settings.days,
        )
        self.log_group = log_group(self, "Logs", settings=logs)
        self.role = self._build_role(
            environment=environment,
            model_name=model_name,
            captures=captures,
            registry=registry,
            key=key,
        )
        self.function = small_function(
            self,
            "Function",
            description=f"sds {environment}: publishes daily drift figures of served traffic",
            handler=HANDLER,
            code=code,
            architecture=ARCHITECTURE,  # what its bundle is built for
            role=self.role,
            log_group=self.log_group,
            memory_mb=1024,
            timeout=cdk.Duration.minutes(15),
            environment=target.to_environ(),
            why_no_dead_letter_queue=_NO_QUEUE,
            why_no_reserved_concurrency="Only its schedule (monitor.schedule, daily by default) "
            "and operators invoke it: it runs about once a day and cannot be flooded; a "
            "reservation would be carved out of the account's pool, which new accounts start at "
            "10, too few to reserve from.",
            reaches="S3 for captures and manifests, X-Ray",
        )
        self.schedule = (
            None
            if settings.schedule is None
            else self._build_schedule(environment=environment, expression=settings.schedule)
        )
        self.alarms = self._build_alarms(environment=environment, settings=settings)
        for topic in topics:
            action = cw_actions.SnsAction(topic)
            for alarm in self.alarms:
                alarm.add_alarm_action(action)
                alarm.add_ok_action(action)
        if not topics:
            for alarm in self.alarms:
                acknowledge_compliance(
                    alarm,
                    "CloudWatchAlarmAction",
                    "This environment notifies no one (infra.alarms.topic_email / topic_arn "
                    "unset; prod requires a target): the drift alarms' state is read where it "
                    "is kept, in CloudWatch, next to the figures `sds monitor` reports.",
                )
        self._acknowledge()

    def _build_role(
        self,
        *,
        environment: str,
        model_name: str,
        captures: s3.IBucket,
        registry: s3.IBucket,
        key: kms.IKey | None,
    ) -> iam.Role:
        role = function_role(
            self,
            "Role",
            description=f"sds {environment}: drift monitor (reads captures and manifests only)",
            log_group=self.log_group,
        )
        self._captures = captures.arn_for_objects(f"{CAPTURES_PREFIX}*")
        self._manifests = registry.arn_for_objects(
            f"{RegistryPaths(model_name).root}versions/*/manifest.json"
        )
        statements = [
            list_under("ListCaptures", captures.bucket_arn, [CAPTURES_PREFIX]),
            iam.PolicyStatement(
                sid="ReadCaptures", actions=["s3:GetObject"], resources=[self._captures]
            ),
            iam.PolicyStatement(
                sid="ReadManifests", actions=["s3:GetObject"], resources=[self._manifests]
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        if key is not None:
            role.add_to_policy(
                key_use(
                    role, sid="DecryptData", key=key, buckets=[captures, registry], actions=READ
                )
            )
        return role

    def _build_schedule(self, *, environment: str, expression: str) -> events.Rule:
        rule = events.Rule(
            self,
            "Schedule",
            description=f"sds {environment}: publish the drift figures of served traffic",
            schedule=events.Schedule.expression(expression),
        )
        rule.add_target(targets.LambdaFunction(self.function, retry_attempts=2))
        acknowledge(
            rule,
            "Serverless-EventBusDLQ",
            "An undelivered run loses no data: the captures stay in S3, and the function can be "
            'invoked with {"day": "YYYY-MM-DD"} to publish that day again.',
        )
        return rule

    def _metric(self, name: str, environment: str, statistic: str) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=name,
            dimensions_map={"Environment": environment},
            statistic=statistic,
            period=cdk.Duration.days(1),
        )

    def _alarm(
        self,
        construct_id: str,
        *,
        description: str,
        metric: cloudwatch.Metric,
        threshold: float,
        operator: cloudwatch.ComparisonOperator,
    ) -> cloudwatch.Alarm:
        # One datapoint a day: missing data (no traffic, or a version too small to measure) is
        # not a breach; the function's own Errors metric says whether it ran (alarm "Failed").
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_description=description,
            metric=metric,
            threshold=threshold,
            comparison_operator=operator,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _build_volume_alarm(self, *, environment: str, minimum: int) -> cloudwatch.Alarm:
        # The day's smallest figure: a run reporting several days (monitor.days), or a day
        # published again, puts several in one period, and each is a day to judge. Missing data
        # keeps the state: the 24-hour window slides, so it is empty for a moment whenever two
        # runs are more than a day apart (breaching would flap; not breaching would clear an
        # outage every day), and a run that failed is the Failed alarm's to report.
        return cloudwatch.Alarm(
            self,
            "PaymentsLow",
            alarm_description=f"sds {environment}: fewer than {minimum} payments scored on a day "
            "(monitor.min_daily_payments; the monitor's Payments metric, every version together, "
            "estimated from the captures). Check the API's request count and the clients' "
            "integrations (a broken caller, a DNS change, a bad deploy of theirs), then the "
            "captures' delivery; docs/runbook.md, section 10",
            metric=self._metric("Payments", environment, "Minimum"),
            threshold=minimum,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.IGNORE,
        )

    def _build_alarms(
        self, *, environment: str, settings: MonitorSettings
    ) -> list[cloudwatch.Alarm]:
        operators = cloudwatch.ComparisonOperator
        volume = (
            []
            if settings.min_daily_payments is None
            else [
                self._build_volume_alarm(
                    environment=environment, minimum=settings.min_daily_payments
                )
            ]
        )
        return [
            cloudwatch.Alarm(
                self,
                "Failed",
                alarm_description=f"sds {environment}: the drift monitor failed; until it runs "
                "again the drift alarms have no data (re-run a day with "
                '{"day": "YYYY-MM-DD"} once fixed)',
                metric=self.function.metric_errors(period=cdk.Duration.days(1), statistic="Sum"),
                threshold=1,
                comparison_operator=operators.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                datapoints_to_alarm=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            self._alarm(
                "ScorePsi",
                description=f"sds {environment}: a served version's score distribution drifted "
                f"from its training holdout (PSI >= {settings.score_psi_alarm})",
                metric=self._metric("ScorePSI", environment, "Maximum"),
                threshold=settings.score_psi_alarm,
                operator=operators.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            ),
            self._alarm(
                "AlertRateHigh",
                description=f"sds {environment}: a served version flags more than "
                f"{settings.alert_rate_ratio_max}x the alert rate its manifest expects",
                metric=self._metric("AlertRateRatio", environment, "Maximum"),
                threshold=settings.alert_rate_ratio_max,
                operator=operators.GREATER_THAN_THRESHOLD,
            ),
            self._alarm(
                "AlertRateLow",
                description=f"sds {environment}: a served version flags less than "
                f"{settings.alert_rate_ratio_min}x the alert rate its manifest expects",
                metric=self._metric("AlertRateRatio", environment, "Minimum"),
                threshold=settings.alert_rate_ratio_min,
                operator=operators.LESS_THAN_THRESHOLD,
            ),
            *volume,
        ]

    def _acknowledge(self) -> None:
        acknowledge_own_policy(
            self.role,
            "the drift monitor: write its logs, list and read the captures, read the version "
            "manifests",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords do not support resource-level "
            "permissions; '*' is the only valid resource for active tracing.",
        )
        for resource, why in (
            (self._captures, "the day partitions under captures/ the function reads"),
            (self._manifests, "the version manifests the function reads references from"),
        ):
            acknowledge_wildcard_resource(self.role, resource, f"Scoped to {why}; read only.")
