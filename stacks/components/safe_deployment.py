"""Alarm-guarded traffic shifting: CodeDeploy moves `live` to a new version and rolls back on alarm."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codedeploy as codedeploy
from aws_cdk import aws_iam as iam
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
            environment=environment,
            alias=alias,
            settings=deployment,
            pre_traffic_hook=pre_traffic_hook,
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
        environment: str,
        alias: lambda_.Alias,
        settings: DeploymentSettings,
        pre_traffic_hook: lambda_.IFunction | None,
    ) -> codedeploy.LambdaDeploymentGroup:
        # CDK names the hook in the alias's update policy (BeforeAllowTrafficHook) and grants it
        # PutLifecycleEventHookExecutionStatus on this deployment group only. The group gets a
        # role CDK cannot add to: it would attach AWSCodeDeployRoleForLambdaLimited, which
        # updates the aliases of every function in the account (another environment's `live`,
        # where environments share one) and reads objects under CodeDeploy/ in any bucket.
        self.service_role = self._build_service_role(
            environment=environment,
            function=alias.version.lambda_,
            pre_traffic_hook=pre_traffic_hook,
        )
        return codedeploy.LambdaDeploymentGroup(
            self,
            "DeploymentGroup",
            application=self.application,
            alias=alias,
            role=self.service_role.without_policy_updates(),
            deployment_config=DEPLOYMENT_CONFIGS[settings.strategy],
            alarms=list(self.alarms),
            auto_rollback=codedeploy.AutoRollbackConfig(
                failed_deployment=True,
                stopped_deployment=True,
                deployment_in_alarm=True,
            ),
            pre_hook=pre_traffic_hook,
        )

    def _build_service_role(
        self,
        *,
        environment: str,
        function: lambda_.IFunction,
        pre_traffic_hook: lambda_.IFunction | None,
    ) -> iam.Role:
        """What AWSCodeDeployRoleForLambdaLimited grants CodeDeploy for a Lambda deployment,
        scoped to this environment's function (its alias calls) and hook; nothing for S3, since
        CloudFormation hands CodeDeploy the AppSpec itself.

        The alias and alarm grants are inline in the role, so the deployment group (which names
        the role) exists only once they do: a deployment the same stack update starts finds them
        in place. The hook's is in the role's own policy, which the hook's role names the group
        in: inline, it would make the group wait for the hook and the hook for the group."""
        versions = f"{function.function_arn}:*"
        role = iam.Role(
            self,
            "ServiceRole",
            assumed_by=iam.ServicePrincipal("codedeploy.amazonaws.com"),
            description=f"sds {environment}: CodeDeploy's role for the deployment group (shifts "
            "alias live of the inference function)",
            inline_policies={
                "ShiftLiveAlias": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="ShiftLiveAlias",
                            actions=[
                                "lambda:GetAlias",
                                "lambda:UpdateAlias",
                                "lambda:GetProvisionedConcurrencyConfig",
                            ],
                            resources=[function.function_arn, versions],
                        ),
                        iam.PolicyStatement(
                            sid="ReadAlarms",
                            actions=["cloudwatch:DescribeAlarms"],
                            resources=["*"],
                        ),
                    ]
                )
            },
        )
        acknowledge_wildcard_resource(
            role,
            versions,
            "The inference function's own alias and versions (qualified ARNs): CodeDeploy reads "
            "alias live, its versions' provisioned concurrency, and shifts live between them.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Resource::*]",
            "cloudwatch:DescribeAlarms, read-only, on '*' as in AWS's own service-role policy "
            "for CodeDeploy on Lambda (AWSCodeDeployRoleForLambdaLimited): CodeDeploy reads the "
            "state of the alarms this deployment group lists, whose names CloudFormation "
            "generates.",
        )
        if pre_traffic_hook is not None:
            hook_versions = f"{pre_traffic_hook.function_arn}:*"
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="InvokePreTrafficHook",
                    actions=["lambda:InvokeFunction"],
                    resources=[pre_traffic_hook.function_arn, hook_versions],
                )
            )
            acknowledge_wildcard_resource(
                role,
                hook_versions,
                "CodeDeploy invokes the pre-traffic hook function: the hook's own versions and "
                "aliases (qualified ARNs), nothing else.",
            )
        acknowledge_own_policy(
            role,
            "CodeDeploy's service role for this deployment group: read and shift alias live of "
            "this environment's inference function, read its alarms, invoke the pre-traffic hook",
        )
        return role
