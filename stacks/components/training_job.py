"""The training job: an ECS cluster and a Fargate task running `python -m training.train`.

What it trains on is `infra.training.source`: `history` (the activity events under the
training-data bucket's `data_prefix`) or `capture` (the environment's own captures joined with its
labels, the `window_days` before each run, under the `labels` maturity policy: the flags
`training.from_capture` reads)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from sds.config import CODE_VERSION, TASK_ROLE_ARN, training_code_version
from sds.kernel.capture import CAPTURES_PREFIX, LABELS_PREFIX
from stacks.components.data_key import READ, READ_WRITE, key_use
from stacks.components.nag import (
    acknowledge,
    acknowledge_own_policy,
    acknowledge_wildcard_resource,
)
from stacks.components.registry_paths import RegistryPaths
from stacks.components.retention import log_group
from stacks.components.s3_listing import list_under
from stacks.components.service_role import rules_on, service_role
from stacks.config import LabelSettings, LogSettings, TrainingImage, TrainingSettings


def training_command(
    *,
    bucket_name: str,
    data_bucket_name: str,
    model_name: str,
    data_prefix: str,
    negative_rate: float = 1.0,
) -> list[str]:
    """Arguments after the image's entrypoint: the same flags `sds train` uses locally."""
    sampling = ["--negative-rate", f"{negative_rate:g}"] if negative_rate < 1 else []
    return [
        "--registry",
        f"s3://{bucket_name}",
        "--model",
        model_name,
        "--data",
        f"s3://{data_bucket_name}/{data_prefix}",
        *sampling,
    ]


def capture_training_command(
    *,
    bucket_name: str,
    captures_bucket_name: str,
    model_name: str,
    environment: str,
    settings: TrainingSettings,
    labels: LabelSettings,
) -> list[str]:
    """The task's arguments when it trains from capture: each run takes the `window_days` before
    it, labels known by then, the maturity policy and holdout from config."""
    return [
        "--registry",
        f"s3://{bucket_name}",
        "--model",
        model_name,
        "--from-capture",
        "--captures",
        f"s3://{captures_bucket_name}/{CAPTURES_PREFIX}",
        "--labels",
        f"s3://{captures_bucket_name}/{LABELS_PREFIX}",
        "--capture-env",
        environment,
        "--window-days",
        str(settings.window_days),
        "--maturity-days",
        str(labels.maturity_days),
        "--unlabelled",
        labels.unlabelled,
        "--holdout-days",
        str(settings.holdout_days),
    ]


class TrainingJob(Construct):
    """Task role may read training data (its environment's own bucket; with `source: capture`,
    its environment's captures and labels instead) and add versions and events to `registry`,
    where versions are allocated: its own registry where the promotion chain starts, the chain
    start's above it (`registry_key` is then that registry's key, None for an SSE-S3 one). It can
    never move an alias or delete anything (and, with KMS, decrypt what it reads and encrypt and
    decrypt registry objects, through S3 only)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        model_name: str,
        registry: s3.IBucket,
        training_data: s3.IBucket,
        captures: s3.IBucket,
        key: kms.IKey | None,
        registry_key: kms.IKey | None,
        image: TrainingImage,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        public_ip: bool,
        settings: TrainingSettings,
        labels: LabelSettings,
        logs: LogSettings,
        schedule_task: bool = True,
    ) -> None:
        """`schedule_task` False leaves `settings.schedule` to whoever starts runs instead (the
        training run's state machine, where the endpoints are leased per run)."""
        super().__init__(scope, construct_id)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        self.task_role = iam.Role(
            self,
            "TaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description=f"sds {environment}: training task (reads data, adds model versions)",
        )
        if settings.source == "capture":
            self._grant_captures(captures, key)
            command = capture_training_command(
                bucket_name=registry.bucket_name,
                captures_bucket_name=captures.bucket_name,
                model_name=model_name,
                environment=environment,
                settings=settings,
                labels=labels,
            )
        else:
            self._grant_data(training_data, settings.data_prefix, key)
            command = training_command(
                bucket_name=registry.bucket_name,
                data_bucket_name=training_data.bucket_name,
                model_name=model_name,
                data_prefix=settings.data_prefix,
                negative_rate=settings.negative_rate,
            )
        self._grant_registry(registry, model_name, registry_key)
        self.task_definition = self._build_task(
            image=image,
            command=command,
            settings=settings,
            logs=logs,
        )
        self.command = command
        self.schedule = (
            None
            if settings.schedule is None or not schedule_task
            else self._build_schedule(
                expression=settings.schedule,
                description=f"sds {environment}: scheduled training of {model_name}",
                subnets=subnets,
                security_group=security_group,
                public_ip=public_ip,
            )
        )
        self._acknowledge_platform()

    def _build_task(
        self,
        *,
        image: TrainingImage,
        command: list[str],
        settings: TrainingSettings,
        logs: LogSettings,
    ) -> ecs.FargateTaskDefinition:
        """The Fargate task definition and its one container, logging to its own log group."""
        task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=settings.cpu,
            memory_limit_mib=settings.memory_mb,
            # Where training partitions the history it reads (Fargate's default: 20 GiB).
            ephemeral_storage_gib=(
                settings.ephemeral_storage_gib if settings.ephemeral_storage_gib > 20 else None
            ),
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        self.log_group = log_group(self, "Logs", settings=logs)
        self.image = ecr_assets.DockerImageAsset(
            self,
            "Image",
            directory=str(image.context_dir),
            file=image.dockerfile,
            platform=ecr_assets.Platform.LINUX_AMD64,
        )
        self.container = task_definition.add_container(
            "train",
            image=ecs.ContainerImage.from_docker_image_asset(self.image),
            command=command,
            environment={
                # What code trains: the image has no git, so its content hash, which changes only
                # when the image does (a commit elsewhere changes neither, nor `cdk diff`).
                CODE_VERSION: training_code_version(self.image.asset_hash),
                # Who registers: the task's own role (set by the deploy; a record, as the code
                # version is, which whoever may run the task could override at launch, while the
                # role its writes are authorized by cannot be) and, from ECS's task metadata
                # endpoint, the task (task_actor).
                TASK_ROLE_ARN: self.task_role.role_arn,
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="train", log_group=self.log_group),
            essential=True,
        )
        return task_definition

    def _build_schedule(
        self,
        *,
        expression: str,
        description: str,
        subnets: ec2.SubnetSelection,
        security_group: ec2.ISecurityGroup,
        public_ip: bool,
    ) -> events.Rule:
        """An EventBridge rule that starts the task on the configured schedule, through a role
        EventBridge may assume for this account's rules only."""
        self.schedule_role = service_role(
            self,
            "ScheduleRole",
            service="events.amazonaws.com",
            sources=[rules_on(self)],
            description=f"{description}: EventBridge starts the training task",
        )
        return events.Rule(
            self,
            "Schedule",
            description=description,
            schedule=events.Schedule.expression(expression),
            targets=[
                targets.EcsTask(
                    cluster=self.cluster,
                    task_definition=self.task_definition,
                    launch_type=ecs.LaunchType.FARGATE,
                    subnet_selection=subnets,
                    security_groups=[security_group],
                    assign_public_ip=public_ip,
                    role=self.schedule_role,
                    retry_attempts=2,
                    max_event_age=cdk.Duration.hours(2),
                )
            ],
        )

    def _grant_data(self, bucket: s3.IBucket, data_prefix: str, key: kms.IKey | None) -> None:
        data = bucket.arn_for_objects(f"{data_prefix}*")
        statements = [
            iam.PolicyStatement(sid="ReadTrainingData", actions=["s3:GetObject"], resources=[data]),
            list_under("ListTrainingData", bucket.bucket_arn, [data_prefix]),
        ]
        if key is not None:
            statements.append(
                key_use(self, sid="DecryptTrainingData", key=key, buckets=[bucket], actions=READ)
            )
        for statement in statements:
            self.task_role.add_to_policy(statement)
        acknowledge_wildcard_resource(
            self.task_role,
            data,
            f"Read-only, scoped to the training data prefix ({data_prefix}) of the training-data "
            "bucket.",
        )

    def _grant_captures(self, bucket: s3.IBucket, key: kms.IKey | None) -> None:
        """Read the environment's captures and labels (what training from capture joins)."""
        prefixes = (CAPTURES_PREFIX, LABELS_PREFIX)
        objects = [bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes]
        statements = [
            iam.PolicyStatement(
                sid="ReadCapturesAndLabels", actions=["s3:GetObject"], resources=objects
            ),
            list_under("ListCapturesAndLabels", bucket.bucket_arn, prefixes),
        ]
        if key is not None:
            statements.append(
                key_use(self, sid="DecryptCaptures", key=key, buckets=[bucket], actions=READ)
            )
        for statement in statements:
            self.task_role.add_to_policy(statement)
        for resource, prefix in zip(objects, prefixes, strict=True):
            acknowledge_wildcard_resource(
                self.task_role,
                resource,
                f"Read-only, scoped to the {prefix} prefix of this environment's captures bucket.",
            )

    def _grant_registry(self, registry: s3.IBucket, model_name: str, key: kms.IKey | None) -> None:
        paths = RegistryPaths(model_name)
        versions = registry.arn_for_objects(paths.versions)
        audit = registry.arn_for_objects(paths.events)
        statements = [
            list_under("ListModel", registry.bucket_arn, [paths.root]),
            iam.PolicyStatement(
                sid="RegisterVersions",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[versions],
            ),
            iam.PolicyStatement(
                sid="WriteAuditEvents", actions=["s3:PutObject"], resources=[audit]
            ),
        ]
        if key is not None:
            statements.append(
                key_use(self, sid="UseRegistryKey", key=key, buckets=[registry], actions=READ_WRITE)
            )
        for statement in statements:
            self.task_role.add_to_policy(statement)
        reasons = {
            versions: "this model's versions only; new versions are written once (If-None-Match) "
            "with the next free number, and existing ones read to find it",
            audit: "this model's append-only audit events, one fresh key per event",
        }
        for resource, reason in reasons.items():
            acknowledge_wildcard_resource(self.task_role, resource, f"Scoped to {reason}.")

    def _acknowledge_platform(self) -> None:
        acknowledge_own_policy(
            self.task_role,
            "the training task: read its training data, add versions and audit events",
        )
        acknowledge_own_policy(
            self.task_definition.obtain_execution_role(),
            "the task's execution role: pull the training image, write the task's logs",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken (execution role, to pull the training image) does not "
            "support resource-level permissions.",
        )
        acknowledge(
            self.task_definition,
            "AwsSolutions-ECS2",
            "Two variables, no secret, both set by the deploy: the task role's own ARN "
            "(SDS_TASK_ROLE_ARN), which the task records as who registered a version, and the "
            "training image's content hash (SDS_CODE_VERSION), which it records as the code that "
            "trained it (a secret store would add nothing).",
        )
        if self.schedule is None:
            return
        acknowledge_wildcard_resource(
            self.schedule_role,
            cdk.Stack.of(self).format_arn(
                service="ecs",
                resource="task",
                account="*",
                resource_name=f"{self.cluster.cluster_name}/*",
            ),
            "EventBridge tags the task it starts; task ids are generated at launch, so the ARN "
            "is scoped to this cluster's tasks only.",
        )
        acknowledge(
            self.schedule,
            "Serverless-EventBusDLQ",
            "A missed scheduled run is retried by EventBridge (retry policy on the target) and "
            "is otherwise harmless: the next schedule trains again, and the FailedInvocations "
            "metric shows it; nothing is lost that a queue would keep.",
        )
        acknowledge_own_policy(
            self.schedule_role,
            "the schedule's EventBridge role: run this task definition, pass its two roles",
        )
