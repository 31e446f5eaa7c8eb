"""What the integration tests deploy on the moto server, and how they look at it."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sds.kernel.registry import Registry, Version, open_registry

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
ACTOR = "tester@ci"
# Good enough for every gate in cdk.json (staging and prod need roc_auc >= 0.8, pr_auc >= 0.2,
# calibration error <= 0.05).
GOOD_METRICS = {"roc_auc": 0.93, "pr_auc": 0.41, "expected_calibration_error": 0.01}


def lambda_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


@dataclass
class Deployed:
    """One environment's deployed resources on the moto server."""

    env: str
    bucket: str
    function: str
    application: str
    group: str
    role_arn: str
    clients: Callable[[str], Any]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        return open_registry(f"s3://{self.bucket}", MODEL)

    def publish(self, model: Version | None, shadow: Version | None = None) -> str:
        """What `cdk deploy` does after a promotion: new environment, new published version
        (with `shadow`, the challenger `sds shadow` pinned beside the model)."""
        variables = {"MODEL_NAME": MODEL, "ENVIRONMENT": self.env}
        if model is not None:
            variables |= {"MODEL_VERSION": str(model.number), "MODEL_SHA256": model.sha256}
        if shadow is not None:
            variables |= {
                "SHADOW_MODEL_VERSION": str(shadow.number),
                "SHADOW_MODEL_SHA256": shadow.sha256,
            }
        lam = self.clients("lambda")
        lam.update_function_configuration(
            FunctionName=self.function, Environment={"Variables": variables}
        )
        return str(lam.publish_version(FunctionName=self.function)["Version"])

    def point_live(self, version: str, weights: Mapping[str, float] | None = None) -> None:
        lam = self.clients("lambda")
        routing = {"AdditionalVersionWeights": dict(weights or {})}
        try:
            lam.update_alias(
                FunctionName=self.function, Name="live", FunctionVersion=version,
                RoutingConfig=routing,
            )  # fmt: skip
        except lam.exceptions.ResourceNotFoundException:
            lam.create_alias(
                FunctionName=self.function, Name="live", FunctionVersion=version,
                RoutingConfig=routing,
            )  # fmt: skip

    def live(self) -> dict[str, Any]:
        return dict(self.clients("lambda").get_alias(FunctionName=self.function, Name="live"))

    def register(self, tag: str, metrics: Mapping[str, float] | None = None) -> Version:
        return self.registry.register(
            {"model.onnx": f"onnx {tag} {uuid.uuid4()}".encode(), "model.skops": tag.encode()},
            {"metrics": dict(GOOD_METRICS if metrics is None else metrics)},
            actor=ACTOR,
        )


def assume_role(aws: Any, role: str, session: str) -> dict[str, str]:
    """Credentials of `role` assumed as `session` (the role is created first), as environment
    variables: with them, STS on the moto server says `assumed-role/<role>/<session>`."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam = aws.client("iam")
    try:
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"][
            "Arn"
        ]
    except iam.exceptions.EntityAlreadyExistsException:
        arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    credentials = aws.client("sts").assume_role(RoleArn=arn, RoleSessionName=session)
    found = credentials["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": found["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": found["SecretAccessKey"],
        "AWS_SESSION_TOKEN": found["SessionToken"],
    }


def act_as(monkeypatch: Any, credentials: Mapping[str, str]) -> None:
    """Make the SDK clients this process creates from now on sign with `credentials` (the
    default boto3 session caches the credentials it resolved first: start a fresh one)."""
    import boto3

    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def training_stack(
    aws: Any, env: str, bucket: str, suffix: str, *, registry_bucket: str | None = None
) -> dict[str, str]:
    """The training cluster and task definition; the task reads data in `bucket` and registers
    in `registry_bucket` (where versions are allocated; `bucket` itself by default)."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # As the CDK VPC has it (and moto's ECS needs it to attach the task's network interface).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
        for i in range(2)
    ]
    group = ec2.create_security_group(GroupName=f"train-{suffix}", Description="t", VpcId=vpc)
    aws.hold_state("ecs::task")  # the test plays the container and stops the task itself
    log_group = f"sds-{env}-training-logs-{suffix}"
    aws.client("logs").create_log_group(logGroupName=log_group)
    ecs = aws.client("ecs")
    cluster = ecs.create_cluster(clusterName=f"sds-{env}-training-{suffix}")["cluster"]
    task = ecs.register_task_definition(
        family=f"sds-{env}-train-{suffix}",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="8192",
        containerDefinitions=[
            {
                "name": "train",
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:latest",
                "essential": True,
                "memory": 8192,  # moto sums container memory to place the task
                # As the stack's container logs (ecs.LogDrivers.aws_logs, stream prefix "train")
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": "us-east-1",
                        "awslogs-stream-prefix": "train",
                    },
                },
                "command": [
                    "--registry",
                    f"s3://{registry_bucket or bucket}",
                    "--model",
                    MODEL,
                    "--data",
                    f"s3://{bucket}/training-data/",
                ],
            }
        ],
    )["taskDefinition"]
    return {
        "training-cluster": cluster["clusterName"],
        "training-task-definition": task["taskDefinitionArn"],
        "training-subnets": ",".join(subnets),
        "training-security-group": group["GroupId"],
    }


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def read_pin(lock: Path, env: str) -> dict[str, Any] | None:
    if not lock.exists():
        return None
    pin: dict[str, Any] | None = json.loads(lock.read_text())["environments"].get(env)
    return pin


def deploy_environment(
    aws: Any, env: str, *, training: bool = False, registers_in: Deployed | None = None
) -> Deployed:
    """Create what one environment's stacks create, and publish its SSM parameters. Its training
    task registers in `registers_in`'s registry (where its chain starts), by default its own."""
    suffix = uuid.uuid4().hex[:8]
    iam = aws.client("iam")
    role_arn = iam.create_role(
        RoleName=f"sds-{env}-{suffix}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    bucket = aws.bucket(versioned=True)
    function = f"sds-{env}-inference-{suffix}"
    aws.client("lambda").create_function(
        FunctionName=function,
        Runtime="python3.12",
        Role=role_arn,
        Handler="handler.lambda_handler",
        Code={"ZipFile": lambda_zip()},
        Environment={"Variables": {"MODEL_NAME": MODEL, "ENVIRONMENT": env}},
    )
    codedeploy = aws.client("codedeploy")
    application = f"sds-{env}-{suffix}"
    codedeploy.create_application(applicationName=application, computePlatform="Lambda")
    group = f"sds-{env}-group-{suffix}"
    codedeploy.create_deployment_group(
        applicationName=application,
        deploymentGroupName=group,
        serviceRoleArn=role_arn,
        deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
        deploymentStyle={
            "deploymentType": "BLUE_GREEN",
            "deploymentOption": "WITH_TRAFFIC_CONTROL",
        },
    )
    parameters = {
        "registry-bucket": bucket,
        "function-name": function,
        "alias-name": "live",
        "api-url": f"https://example.execute-api.us-east-1.amazonaws.com/{env}/",
        "deployment-group": group,
        "codedeploy-application": application,
    }
    deployed = Deployed(env, bucket, function, application, group, role_arn, aws.client)
    if training:
        parameters |= training_stack(
            aws,
            env,
            bucket,
            suffix,
            registry_bucket=None if registers_in is None else registers_in.bucket,
        )
        deployed.extra = parameters
    ssm = aws.client("ssm")
    for key, value in parameters.items():
        ssm.put_parameter(Name=f"/sds/{env}/{key}", Value=value, Type="String")
    # The first deploy: a published version without a pin, behind `live`.
    deployed.point_live(deployed.publish(None))
    return deployed
