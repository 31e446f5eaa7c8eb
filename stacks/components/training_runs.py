"""Training runs that lease the isolated network's interface endpoints (`network.endpoints:
during_runs`): a Step Functions state machine, the one way a training task starts there.

    LeaseEndpoints -> WaitForEndpoints -> RunTask(.sync) -> ReleaseEndpoints -> done
          \\________________\\________________\\__(any failure)__> ReleaseAfterFailure -> failed

- Lease: create the ECR API, ECR Docker and CloudWatch Logs interface endpoints (private DNS, in
  the training subnets, behind the endpoint security group, tagged with the environment), or
  reuse the tagged ones another run created.
- Wait: until every endpoint is `available`, retried every 15 s for at most 10 minutes; then the
  run fails naming the endpoints still pending.
- RunTask: `ecs:runTask.sync` with the command and actor of the execution's input (`sds train
  --on-fargate`), or the task definition's own command when the input has none (the schedule).
- Release, on success and after every failure (Catch): delete the tagged endpoints unless a
  training task is still pending or running in the cluster or another execution is running.

The same release runs hourly (EventBridge) as a sweep: an execution stopped by hand or timed out
skips its release, and the sweep deletes what it left within the hour. The lease function runs
outside the VPC (it calls the EC2, ECS and Step Functions APIs only); its role may create
interface endpoints only for the three services, in this VPC, its training subnets and the
endpoint security group, and only tagged as this environment's, and may delete only endpoints
carrying that tag.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from sds.kernel.endpoints import TAG_KEY, EndpointLease
from stacks.bundling import source_bundle
from stacks.components.nag import (
    acknowledge,
    acknowledge_compliance,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.retention import log_group
from stacks.components.service_role import rules_on, service_role
from stacks.components.small_function import function_role, small_function
from stacks.components.state_machine_role import deliver_logs_and_traces
from stacks.components.training_operator_policy import run_task
from stacks.config import LogSettings

HANDLER = "lambdas.training_endpoints.handler.lambda_handler"
PACKAGES = ("sds.kernel", "lambdas.training_endpoints")
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
# How long a run waits for its endpoints (AWS does not state a bound; typically a minute or two).
WAIT_INTERVAL = cdk.Duration.seconds(15)
WAIT_ATTEMPTS = 40  # 40 x 15 s: 10 minutes
# A run longer than this is stopped by Step Functions (the CLI waits 6 hours by default).
RUN_TIMEOUT = cdk.Duration.hours(24)
SWEEP = events.Schedule.rate(cdk.Duration.hours(1))
PENDING_ERROR = "EndpointsPending"
# Step Functions errors a Lambda invocation may raise that are worth a retry.
_LAMBDA_TRANSIENT = [
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
]


def lease_function_code(source_root: Path = _SOURCE_ROOT, build_root: Path | None = None) -> Path:
    """The lease function's code folder, `build/lambda-training-endpoints/<hash>`, built once."""
    return source_bundle(
        PACKAGES, name="lambda-training-endpoints", source_root=source_root, build_root=build_root
    )


class TrainingRuns(Construct):
    """The lease function, the training run's state machine, its optional schedule and the
    hourly sweep."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        endpoint_subnet_ids: list[str],
        task_security_group: ec2.ISecurityGroup,
        endpoint_security_group: ec2.ISecurityGroup,
        services: list[str],
        cluster: ecs.ICluster,
        task_definition: ecs.TaskDefinition,
        container: ecs.ContainerDefinition,
        schedule: str | None,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self._environment = environment
        lease = EndpointLease(
            vpc_id=vpc.vpc_id,
            subnet_ids=tuple(endpoint_subnet_ids),
            security_group_id=endpoint_security_group.security_group_id,
            services=tuple(services),
            environment=environment,
            cluster=cluster.cluster_name,
        )
        self.function_logs = log_group(self, "FunctionLogs", settings=logs)
        self.role = self._build_function_role(
            lease=lease, vpc=vpc, subnet_ids=endpoint_subnet_ids, services=services
        )
        self.function = small_function(
            self,
            "LeaseFunction",
            description=f"sds {environment}: leases the training network's interface endpoints "
            "for a training run, and releases them",
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(lease_function_code())),
            role=self.role,
            log_group=self.function_logs,
            memory_mb=256,
            timeout=cdk.Duration.minutes(1),
            environment=lease.to_environ(),
            why_no_dead_letter_queue="Invoked synchronously by the state machine (which retries "
            "and catches every failure) and by the hourly sweep, whose next run does the same "
            "work.",
            why_no_reserved_concurrency="Only the training run's state machine and the hourly "
            "sweep invoke it, a few times per run: it cannot be flooded, and a reservation would "
            "come out of an account pool new accounts start at 10.",
            reaches="EC2, ECS, Step Functions, X-Ray",
        )
        self.machine_logs = log_group(self, "StateMachineLogs", settings=logs)
        self.machine_role = self._build_machine_role(
            cluster=cluster, task_definition=task_definition
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            role=self.machine_role.without_policy_updates(),
            comment=f"sds {environment}: a {model_name} training run (sds train --on-fargate, "
            "the schedule): lease the interface endpoints, run the task, release them",
            definition_body=sfn.DefinitionBody.from_chainable(
                self._definition(
                    cluster=cluster,
                    task_definition=task_definition,
                    container=container,
                    subnets=subnets,
                    task_security_group=task_security_group,
                )
            ),
            state_machine_type=sfn.StateMachineType.STANDARD,
            timeout=RUN_TIMEOUT,
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.machine_logs, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        self._grant_release_checks(cluster)
        self.sweep = events.Rule(
            self,
            "Sweep",
            description=f"sds {environment}: delete training endpoints no run needs any more",
            schedule=SWEEP,
        )
        self.sweep.add_target(
            targets.LambdaFunction(
                self.function,
                event=events.RuleTargetInput.from_object(
                    {"action": "release", "state_machine": self.state_machine.state_machine_arn}
                ),
                retry_attempts=2,
            )
        )
        self.schedule = (
            None
            if schedule is None
            else self._build_schedule(
                expression=schedule,
                description=f"sds {environment}: scheduled training of {model_name}",
            )
        )
        self._acknowledge()

    def _build_schedule(self, *, expression: str, description: str) -> events.Rule:
        """A rule that starts an execution on the configured schedule, through a role EventBridge
        may assume for this account's rules only."""
        self.schedule_role = service_role(
            self,
            "ScheduleRole",
            service="events.amazonaws.com",
            sources=[rules_on(self)],
            description=f"{description}: EventBridge starts a training run",
        )
        return events.Rule(
            self,
            "Schedule",
            description=description,
            schedule=events.Schedule.expression(expression),
            targets=[
                targets.SfnStateMachine(
                    self.state_machine,
                    # No command: the task definition's own (as the ECS target ran it).
                    input=events.RuleTargetInput.from_object({}),
                    role=self.schedule_role,
                    retry_attempts=2,
                    max_event_age=cdk.Duration.hours(2),
                )
            ],
        )

    # The lease function --------------------------------------------------------------------------

    def _build_function_role(
        self, *, lease: EndpointLease, vpc: ec2.IVpc, subnet_ids: list[str], services: list[str]
    ) -> iam.Role:
        role = function_role(
            self,
            "LeaseRole",
            description=f"sds {self._environment}: creates and deletes the training network's "
            "tagged interface endpoints",
            log_group=self.function_logs,
        )
        stack = cdk.Stack.of(self)

        def ec2_arn(resource: str, name: str) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name)

        self._endpoints_arn = ec2_arn("vpc-endpoint", "*")
        self._hosted_zones = stack.format_arn(
            service="route53", region="", account="", resource="hostedzone", resource_name="*"
        )
        statements = [
            # EC2 authorizes CreateVpcEndpoint against the endpoint it creates (its service and
            # tags, in the request) and against each VPC, subnet and security group it names.
            iam.PolicyStatement(
                sid="CreateTaggedEndpoints",
                actions=["ec2:CreateVpcEndpoint"],
                resources=[self._endpoints_arn],
                conditions={
                    "StringEquals": {
                        f"aws:RequestTag/{TAG_KEY}": lease.environment,
                        "ec2:VpceServiceName": services,
                    },
                    "ForAllValues:StringEquals": {"aws:TagKeys": [TAG_KEY]},
                },
            ),
            iam.PolicyStatement(
                sid="InTheTrainingNetworkOnly",
                actions=["ec2:CreateVpcEndpoint"],
                resources=[
                    ec2_arn("vpc", vpc.vpc_id),
                    *(ec2_arn("subnet", subnet) for subnet in subnet_ids),
                    ec2_arn("security-group", lease.security_group_id),
                ],
            ),
            iam.PolicyStatement(
                sid="TagOnCreate",
                actions=["ec2:CreateTags"],
                resources=[self._endpoints_arn],
                conditions={"StringEquals": {"ec2:CreateAction": "CreateVpcEndpoint"}},
            ),
            iam.PolicyStatement(
                sid="DeleteTaggedEndpoints",
                actions=["ec2:DeleteVpcEndpoints"],
                resources=[self._endpoints_arn],
                conditions={"StringEquals": {f"aws:ResourceTag/{TAG_KEY}": lease.environment}},
            ),
            # Private DNS: EC2 associates the VPC with the service's private hosted zone, which
            # AWS owns (its id is not known here); a dependent action of CreateVpcEndpoint.
            iam.PolicyStatement(
                sid="PrivateDns",
                actions=["route53:AssociateVPCWithHostedZone"],
                resources=[self._hosted_zones],
            ),
            iam.PolicyStatement(
                sid="DescribeEndpoints",
                actions=["ec2:DescribeVpcEndpoints"],
                resources=["*"],
            ),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        return role

    def _grant_release_checks(self, cluster: ecs.ICluster) -> None:
        """What a release looks at before deleting: the cluster's tasks, the state machine's
        running executions. A policy of its own: the role's default policy cannot name the state
        machine (the state machine names the function, which waits for that policy)."""
        self.release_checks = iam.Policy(
            self,
            "ReleaseChecks",
            statements=[
                iam.PolicyStatement(
                    sid="ListTrainingTasks",
                    actions=["ecs:ListTasks"],
                    resources=["*"],
                    conditions={"ArnEquals": {"ecs:cluster": cluster.cluster_arn}},
                ),
                iam.PolicyStatement(
                    sid="ListRunningExecutions",
                    actions=["states:ListExecutions"],
                    resources=[self.state_machine.state_machine_arn],
                ),
            ],
            roles=[self.role],
        )

    # The state machine ---------------------------------------------------------------------------

    def _build_machine_role(
        self, *, cluster: ecs.ICluster, task_definition: ecs.TaskDefinition
    ) -> iam.Role:
        """Invokes the lease function, runs the training task definition in its cluster (passing
        its two roles to ECS tasks), follows and stops that cluster's tasks, delivers its logs
        and traces; nothing else. What CDK would grant for `ecs:runTask.sync`, but with
        DescribeTasks and StopTask on this cluster's tasks instead of every task in the account,
        and the cluster and the service to pass roles to as conditions."""
        stack = cdk.Stack.of(self)
        role = service_role(
            self,
            "StateMachineRole",
            # Step Functions of this account only, for its state machines (as CDK trusts it).
            service="states.amazonaws.com",
            sources=[
                stack.format_arn(
                    service="states",
                    resource="stateMachine",
                    resource_name="*",
                    arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                )
            ],
            description=f"sds {self._environment}: training run state machine (leases the "
            "endpoints, runs the training task)",
        )
        self._function_versions = f"{self.function.function_arn}:*"
        self._cluster_tasks = stack.format_arn(
            service="ecs", resource="task", resource_name=f"{cluster.cluster_name}/*"
        )
        statements = [
            iam.PolicyStatement(
                sid="InvokeLeaseFunction",
                actions=["lambda:InvokeFunction"],
                resources=[self.function.function_arn, self._function_versions],
            ),
            *run_task(task_definition, cluster),
            iam.PolicyStatement(
                sid="FollowAndStopTasks",
                actions=["ecs:DescribeTasks", "ecs:StopTask"],
                resources=[self._cluster_tasks],
            ),
            # ecs:runTask.sync learns that the task stopped from the EventBridge rule Step
            # Functions manages in the account under this fixed name.
            iam.PolicyStatement(
                sid="FollowTaskEvents",
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForECSTaskRule",
                    )
                ],
            ),
            deliver_logs_and_traces(),
        ]
        for statement in statements:
            role.add_to_policy(statement)
        return role

    def _invoke(self, construct_id: str, action: str, result_path: str) -> tasks.LambdaInvoke:
        payload: dict[str, object] = {"action": action}
        if action == "release":
            payload |= {"state_machine.$": "$$.StateMachine.Id", "execution.$": "$$.Execution.Id"}
        else:
            payload |= {"execution_name.$": "$$.Execution.Name"}
        task = tasks.LambdaInvoke(
            self,
            construct_id,
            lambda_function=self.function,
            payload=sfn.TaskInput.from_object(payload),
            payload_response_only=True,
            retry_on_service_exceptions=False,
            result_path=result_path,
        )
        task.add_retry(
            errors=_LAMBDA_TRANSIENT,
            interval=cdk.Duration.seconds(2),
            max_attempts=6,
            backoff_rate=2,
        )
        return task

    def _run_task(
        self,
        construct_id: str,
        *,
        cluster: ecs.ICluster,
        task_definition: ecs.TaskDefinition,
        subnets: ec2.SubnetSelection,
        task_security_group: ec2.ISecurityGroup,
        overrides: list[tasks.ContainerOverride] | None,
    ) -> tasks.EcsRunTask:
        return tasks.EcsRunTask(
            self,
            construct_id,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            cluster=cluster,
            task_definition=task_definition,
            launch_target=tasks.EcsFargateLaunchTarget(
                platform_version=ecs.FargatePlatformVersion.LATEST
            ),
            subnets=subnets,
            security_groups=[task_security_group],
            assign_public_ip=False,
            container_overrides=overrides,
            result_path=sfn.JsonPath.DISCARD,
        )

    def _definition(
        self,
        *,
        cluster: ecs.ICluster,
        task_definition: ecs.TaskDefinition,
        container: ecs.ContainerDefinition,
        subnets: ec2.SubnetSelection,
        task_security_group: ec2.ISecurityGroup,
    ) -> sfn.IChainable:
        lease = self._invoke("LeaseEndpoints", "lease", "$.lease")
        wait = self._invoke("WaitForEndpoints", "wait", "$.lease")
        wait.add_retry(
            errors=[PENDING_ERROR],
            interval=WAIT_INTERVAL,
            max_attempts=WAIT_ATTEMPTS,
            backoff_rate=1,
        )
        network = {
            "cluster": cluster,
            "task_definition": task_definition,
            "subnets": subnets,
            "task_security_group": task_security_group,
        }
        as_asked = self._run_task(
            "RunTaskAsAsked",
            **network,  # type: ignore[arg-type]
            overrides=[
                tasks.ContainerOverride(
                    container_definition=container,
                    command=sfn.JsonPath.list_at("$.command"),
                    environment=[
                        tasks.TaskEnvironmentVariable(
                            name="SDS_ACTOR", value=sfn.JsonPath.string_at("$.actor")
                        )
                    ],
                )
            ],
        )
        as_defined = self._run_task("RunTask", **network, overrides=None)  # type: ignore[arg-type]
        release = self._invoke("ReleaseEndpoints", "release", "$.release")
        release_after_failure = self._invoke("ReleaseAfterFailure", "release", "$.release")
        failed = sfn.Fail(
            self,
            "TrainingRunFailed",
            error_path=sfn.JsonPath.string_at("$.failure.Error"),
            cause_path=sfn.JsonPath.string_at("$.failure.Cause"),
        )
        # The run's own failure is what the execution reports, even if its release failed too
        # (the hourly sweep deletes what that release left).
        release_after_failure.add_catch(failed, errors=["States.ALL"], result_path="$.release")
        release_after_failure.next(failed)
        for step in (lease, wait, as_asked, as_defined):
            step.add_catch(release_after_failure, errors=["States.ALL"], result_path="$.failure")
        as_asked.next(release)
        as_defined.next(release)
        release.next(sfn.Succeed(self, "Done"))
        return lease.next(wait).next(
            sfn.Choice(self, "CommandGiven")
            .when(sfn.Condition.is_present("$.command"), as_asked)
            .otherwise(as_defined)
        )

    # Acknowledgments -----------------------------------------------------------------------------

    def _acknowledge(self) -> None:
        machine_role = self.machine_role
        acknowledge_wildcard_resource(
            machine_role,
            self._function_versions,
            "The lease function's own versions (qualified ARNs), as Step Functions invokes a "
            "function; the state machine invokes nothing else.",
        )
        acknowledge_wildcard_resource(
            machine_role,
            self._cluster_tasks,
            "ecs:DescribeTasks and ecs:StopTask on the training cluster's tasks only: task ids "
            "are generated at launch, and ecs:runTask.sync follows (and, when the execution "
            "stops, stops) the one task the run started.",
        )
        acknowledge(
            machine_role,
            "AwsSolutions-IAM5[Resource::*]",
            "CloudWatch Logs' log delivery actions (CreateLogDelivery, ..., DescribeLogGroups) "
            "and X-Ray's accept only '*' (Service Authorization Reference); they deliver this "
            "state machine's own logs and traces.",
        )
        acknowledge_own_policy(
            machine_role,
            "the training run's state machine: invoke the lease function, run this task "
            "definition and pass its two roles, follow the task through the EventBridge rule "
            "Step Functions manages, deliver its logs and traces",
        )
        acknowledge_wildcard_resource(
            self.role,
            self._endpoints_arn,
            "Interface endpoint ids are generated at creation: creating is allowed only for the "
            "ECR API, ECR Docker and CloudWatch Logs services with this environment's tag (and "
            "only in the training VPC, its subnets and the endpoint security group, a separate "
            "statement), tagging only while creating, deleting only endpoints with that tag.",
        )
        acknowledge_wildcard_resource(
            self.role,
            self._hosted_zones,
            "route53:AssociateVPCWithHostedZone is what EC2 needs to give an interface endpoint "
            "private DNS; the hosted zone is AWS's own for the service, its id unknown here.",
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "ec2:DescribeVpcEndpoints and X-Ray's PutTraceSegments/PutTelemetryRecords do not "
            "support resource-level permissions.",
        )
        acknowledge(
            self.release_checks,
            "AwsSolutions-IAM5[Resource::*]",
            "ecs:ListTasks takes no task resource; the ecs:cluster condition limits it to this "
            "environment's training cluster.",
        )
        acknowledge_compliance(
            self.release_checks,
            "IAMNoInlinePolicy",
            "The lease function's check before a release (list this cluster's tasks, this state "
            "machine's executions), a policy of its own because the state machine names the "
            "function; attached to that one role only.",
        )
        acknowledge_own_policy(
            self.role,
            "the endpoint lease function: create, tag and delete this environment's tagged "
            "interface endpoints in the training network",
        )
        acknowledge(
            self.sweep,
            "Serverless-EventBusDLQ",
            "A missed sweep loses nothing: the next one, an hour later, does the same work.",
        )
        if self.schedule is not None:
            acknowledge_own_policy(
                self.schedule_role,
                "the schedule's EventBridge role: start this state machine's executions",
            )
            acknowledge(
                self.schedule,
                "Serverless-EventBusDLQ",
                "A missed scheduled run is retried by EventBridge (retry policy on the target) "
                "and is otherwise harmless: the next schedule trains again, and the "
                "FailedInvocations metric shows it; nothing is lost that a queue would keep.",
            )
