"""The managed policy for people and pipelines that start an environment's training task.

Exactly what `sds train --env <env> --on-fargate` (sds/ops/fargate.py) does, and what an operator
does around it by hand: start this environment's task definition (its current revision) in its
cluster, hand ECS the task's own two roles and no other (or, where the interface endpoints are
leased per run, start and follow the training run's state machine instead, and no task
directly), watch and stop tasks of that cluster (and list them, where it starts the task itself:
the command an interrupted start prints finds the task that way), read the task's log group, and
read the registry to report the version the task registered.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.components.data_key import READ, key_use
from stacks.components.nag import acknowledge, acknowledge_wildcard_resource
from stacks.components.promotion_source_policy import discovery_parameters_arn
from stacks.components.registry_paths import RegistryPaths
from stacks.components.s3_listing import list_under

ECS_TASKS = "ecs-tasks.amazonaws.com"


class TrainingOperatorPolicy(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        cluster: ecs.ICluster,
        task_definition: ecs.TaskDefinition,
        log_group: logs.ILogGroup,
        registry: s3.IBucket,
        key: kms.IKey | None,
        versions_in: str | None = None,
        state_machine: sfn.StateMachine | None = None,
    ) -> None:
        """`registry` is where the task registers versions; `versions_in` names the environment
        that registry belongs to when it is not this one (the chain start), whose discovery
        parameters the operator then reads too (to find the registered version).

        With `state_machine` (the training run's, where the endpoints are leased per run) the
        operator starts an execution of it and follows it, and may not run the task directly:
        a task started without the state machine would find no endpoints."""
        super().__init__(scope, construct_id)
        paths = RegistryPaths(model_name)
        stack = cdk.Stack.of(self)
        tasks = stack.format_arn(
            service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*"
        )
        versions = registry.arn_for_objects(paths.versions)
        parameters_arn = discovery_parameters_arn(self, environment)
        discovered = [parameters_arn]
        if versions_in is not None:
            discovered.append(discovery_parameters_arn(self, versions_in))
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description=f"sds {environment}: run the {model_name} training task and follow it",
            statements=[
                *(
                    _start_task(task_definition, cluster)
                    if state_machine is None
                    else self._start_execution(state_machine)
                ),
                iam.PolicyStatement(
                    sid="ReadTaskDefinition",
                    actions=["ecs:DescribeTaskDefinition"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="WatchAndStopTasks",
                    actions=["ecs:DescribeTasks", "ecs:StopTask"],
                    resources=[tasks],
                ),
                iam.PolicyStatement(
                    sid="ReadTaskLogs",
                    actions=[
                        "logs:DescribeLogStreams",
                        "logs:FilterLogEvents",
                        "logs:GetLogEvents",
                    ],
                    resources=[log_group.log_group_arn],
                ),
                iam.PolicyStatement(
                    sid="ReadVersions", actions=["s3:GetObject"], resources=[versions]
                ),
                list_under("ListModel", registry.bucket_arn, [paths.root]),
                iam.PolicyStatement(
                    sid="Discover",
                    actions=["ssm:GetParameter", "ssm:GetParameters"],
                    resources=discovered,
                ),
            ],
        )
        if key is not None:
            self.policy.add_statements(
                key_use(self, sid="DecryptRegistry", key=key, buckets=[registry], actions=READ)
            )
        acknowledge(
            self.policy,
            "AwsSolutions-IAM5[Resource::*]",
            "ecs:DescribeTaskDefinition does not support resource-level permissions; it reads "
            "the task's container command, which the CLI extends with the run's reason. "
            "ecs:ListTasks (where the CLI starts the task itself) is authorized on container "
            "instances, which Fargate tasks have none of: the ecs:cluster condition limits it to "
            "this cluster.",
        )
        reasons = {
            tasks: "tasks of this environment's training cluster only (task ids are generated "
            "at launch)",
            versions: "read-only, this model's versions, to report the version the task registered",
            parameters_arn: "read-only, the discovery parameters of this one environment "
            "(/sds/<env>/)",
        }
        if versions_in is not None:
            reasons[discovered[1]] = (
                f"read-only, the discovery parameters of {versions_in} (/sds/{versions_in}/), "
                "where this environment's task registers its versions"
            )
        if state_machine is not None:
            reasons[self._executions] = (
                "the executions of this environment's training run state machine (execution "
                "names are chosen at start: the run id)"
            )
        for resource, reason in reasons.items():
            acknowledge_wildcard_resource(self.policy, resource, f"Scoped to {reason}.")

    def _start_execution(self, state_machine: sfn.StateMachine) -> list[iam.PolicyStatement]:
        """Start the training run's state machine, follow its executions (status, and the
        history that names the task it started), stop one."""
        self._executions = cdk.Stack.of(self).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{state_machine.state_machine_name}:*",
            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
        )
        return [
            iam.PolicyStatement(
                sid="StartTrainingRun",
                actions=["states:StartExecution"],
                resources=[state_machine.state_machine_arn],
            ),
            iam.PolicyStatement(
                sid="FollowTrainingRuns",
                actions=[
                    "states:DescribeExecution",
                    "states:GetExecutionHistory",
                    "states:StopExecution",
                ],
                resources=[self._executions],
            ),
        ]


def run_task(
    task_definition: ecs.TaskDefinition, cluster: ecs.ICluster
) -> list[iam.PolicyStatement]:
    """Run the task definition in its cluster, handing ECS the task's own two roles and no other:
    what the operator needs where it starts the task, and the training run's state machine."""
    roles = [
        task_definition.task_role.role_arn,
        task_definition.obtain_execution_role().role_arn,
    ]
    return [
        iam.PolicyStatement(
            sid="RunTrainingTask",
            actions=["ecs:RunTask"],
            resources=[task_definition.task_definition_arn],
            conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
        ),
        iam.PolicyStatement(
            sid="PassTaskRoles",
            actions=["iam:PassRole"],
            resources=roles,
            conditions={"StringEquals": {"iam:PassedToService": ECS_TASKS}},
        ),
    ]


def _start_task(
    task_definition: ecs.TaskDefinition, cluster: ecs.ICluster
) -> list[iam.PolicyStatement]:
    """`run_task`, and list the cluster's tasks (to find one whose start was interrupted before
    ECS answered)."""
    return [
        *run_task(task_definition, cluster),
        iam.PolicyStatement(
            sid="FindStartedTasks",
            actions=["ecs:ListTasks"],
            resources=["*"],
            conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
        ),
    ]
