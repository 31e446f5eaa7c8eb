"""Alarm-guarded traffic shifting: CodeDeploy moves `live` to a new version and rolls back on alarm."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.config import AlarmSettings, DeploymentSettings

DEPLOYMENT_CONFIGS: dict[str, codedeploy.ILambdaDeploymentConfig] = {
    "all_at_once": codedeploy.LambdaDeploymentConfig.ALL_AT_ONCE,
    "canary_10_percent_5_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_5_MINUTES,
    "canary_10_percent_10_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_10_MINUTES,
    "canary_10_percent_15_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_15_MINUTES,
    "canary_10_percent_30_minutes": codedeploy.LambdaDeploymentConfig.CANARY_10_PERCENT_30_MINUTES,
    "linear_10_percent_every_1_minute": (
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_1_MINUTE
    ),
    "linear_10_percent_every_2_minutes": (
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_2_MINUTES
    ),
    "linear_10_percent_every_3_minutes": (
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_3_MINUTES
    ),
    "linear_10_percent_every_10_minutes": (
        codedeploy.LambdaDeploymentConfig.LINEAR_10_PERCENT_EVERY_10_MINUTES
    ),
}

_PERIOD = cdk.Duration.minutes(1)


def api_server_errors(*, api_name: str, stage_name: str) -> cloudwatch.Metric:
    """5xx count of the API's deployment stage, built from names only.

    `Stage.metric_server_error` would reference the stage resource: the alarm would then depend
    on the stage, the stage on the methods, the methods on alias `live`, and the alias (through
    its CodeDeploy update policy) on the deployment group that watches this alarm - a cycle.
    """
    return cloudwatch.Metric(
        namespace="AWS/ApiGateway",
        metric_name="5XXError",
        dimensions_map={"ApiName": api_name, "Stage": stage_name},
        period=_PERIOD,
        statistic="Sum",
    )


class SafeDeployment(Construct):
    """Alarms on the alias (error rate, throttles, p99 duration) and the API stage (5xx), and a
    CodeDeploy deployment group that shifts `live` with the environment's strategy and rolls back
    automatically when any of them fires, or any of `model_alarms` (the pinned version's own
    behaviour). `pre_traffic_hook` runs before any traffic shifts (the AppSpec's
    `BeforeAllowTraffic`); a `Failed` from it fails the deployment."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        alias: lambda_.Alias,
        api_name: str,
        stage_name: str,
        deployment: DeploymentSettings,
        alarms: AlarmSettings,
        topics: Sequence[sns.ITopic],
        pre_traffic_hook: lambda_.IFunction | None = None,
        model_alarms: Sequence[cloudwatch.Alarm] = (),
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms = [
            *self._build_alarms(
                environment=environment,
                alias=alias,
                api_5xx_count=api_server_errors(api_name=api_name, stage_name=stage_name),
                settings=alarms,
            ),
            *model_alarms,
        ]
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
                    "Its consumer is CodeDeploy, which watches it during every deployment of "
                    "live and rolls back when it fires; this environment notifies no one "
                    "(infra.alarms.topic_email / topic_arn unset; prod requires a target).",
                )
        self.application = codedeploy.LambdaApplication(self, "Application", application_name=None)
        self.group = self._build_deployment_group(
            alias=alias, settings=deployment, pre_traffic_hook=pre_traffic_hook
        )

    def _build_alarms(
        self,
        *,
        environment: str,
        alias: lambda_.Alias,
        api_5xx_count: cloudwatch.Metric,
        settings: AlarmSettings,
    ) -> list[cloudwatch.Alarm]:
        """Error rate, throttles and p99 duration of alias `live`, and the API stage's 5xx."""
        errors = alias.metric_errors(period=_PERIOD, statistic="Sum")
        invocations = alias.metric_invocations(period=_PERIOD, statistic="Sum")
        error_rate_percent = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * errors / invocations, 0)",
            using_metrics={"errors": errors, "invocations": invocations},
            period=_PERIOD,
            label="Error rate (%)",
        )
        error_rate = cloudwatch.Alarm(
            self,
            "ErrorRate",
            alarm_description=f"sds {environment}: live alias error rate above "
            f"{settings.error_rate_percent}% (rolls back a deployment)",
            metric=error_rate_percent,
            threshold=settings.error_rate_percent,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        throttles = cloudwatch.Alarm(
            self,
            "Throttles",
            alarm_description=f"sds {environment}: live alias throttled "
            f">= {settings.throttles} invocations in a minute",
            metric=alias.metric_throttles(period=_PERIOD, statistic="Sum"),
            threshold=settings.throttles,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        p99_duration = cloudwatch.Alarm(
            self,
            "P99Duration",
            alarm_description=f"sds {environment}: live alias p99 duration above "
            f"{settings.p99_duration_ms} ms",
            metric=alias.metric_duration(period=_PERIOD, statistic="p99"),
            threshold=settings.p99_duration_ms,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        api_5xx = cloudwatch.Alarm(
            self,
            "Api5xx",
            alarm_description=f"sds {environment}: API answered >= {settings.api_5xx} 5xx "
            "in a minute",
            metric=api_5xx_count,
            threshold=settings.api_5xx,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return [error_rate, throttles, p99_duration, api_5xx]

    def _build_deployment_group(
        self,
        *,
        alias: lambda_.Alias,
        settings: DeploymentSettings,
        pre_traffic_hook: lambda_.IFunction | None,
    ) -> codedeploy.LambdaDeploymentGroup:
        # CDK names the hook in the alias's update policy (BeforeAllowTrafficHook), lets the
        # group's role invoke it, and grants it PutLifecycleEventHookExecutionStatus on this
        # deployment group only.
        group = codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            application=self.application,
            alias=alias,
            deployment_config=DEPLOYMENT_CONFIGS[settings.strategy],
            alarms=list(self.alarms),
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True,
                stopped_deployment=True,
                deployment_in_alarm=True,
            ),
            pre_hook=pre_traffic_hook,
        )
        acknowledge(
            group,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AWSCodeDeployRoleForLambdaLimited]",
            "AWS's purpose-built CodeDeploy service-role policy for Lambda: it can only shift "
            "aliases of functions and read the alarms CodeDeploy watches.",
        )
        if pre_traffic_hook is not None:
            acknowledge_wildcard_resource(
                group.role,
                f"{pre_traffic_hook.function_arn}:*",
                "CDK's grant for CodeDeploy to invoke the pre-traffic hook function: the hook's "
                "own versions and aliases (qualified ARNs), nothing else.",
            )
        acknowledge_own_policy(
            group.role,
            "CodeDeploy's service role for this deployment group (invoke the pre-traffic hook)",
        )
        return group
