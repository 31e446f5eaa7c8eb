"""What the operator commands call on AWS, and whether a synthesized policy allows each call.

The least-privilege suite deploys an environment's resources on the moto server (names the
templates leave to CloudFormation are invented here), runs a real command (`sds --aws promote`,
`rollback`, `train --on-fargate`, `score`, `backfill`, the training container, the data reader) while `recording()`
captures every SDK call any boto3 client makes, turns each call into the IAM requests AWS would
authorize (`requests_of`: the action, the resource ARN, the condition keys, and what the call
implies: `kms:Decrypt` to read an SSE-KMS object, `iam:PassRole` for the roles of a task that
`ecs:RunTask` starts), and evaluates them against the policy statements of the synthesized
templates with their intrinsic functions resolved to those resources (`Resolver`, `allows`).

Environments may live in different accounts (`deploy(..., account=...)`): their resources are
created with credentials of that account on the moto server, and their ARNs carry it.

The evaluator implements what these policies use (Allow statements; `*`/`?` wildcards in actions
and resources; StringEquals, StringLike, ArnEquals, ArnLike and Bool conditions, a missing key
failing the condition as in IAM) and refuses anything else loudly, so a policy that grows a
construct it cannot judge fails the suite instead of passing it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.s3_denials import Listless

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
PARTITION = "aws"
URL_SUFFIX = "amazonaws.com"
MODEL = "fraud"
ECS_TASKS = "ecs-tasks.amazonaws.com"


@dataclass(frozen=True)
class Call:
    """One SDK call: service (IAM prefix), operation, the parameters the caller passed."""

    service: str
    operation: str
    params: Mapping[str, Any]

    def __str__(self) -> str:
        interesting = {k: v for k, v in self.params.items() if k not in ("Body", "overrides")}
        return f"{self.service}.{self.operation}({json.dumps(interesting, default=str)[:160]})"


@contextlib.contextmanager
def recording() -> Iterator[list[Call]]:
    """Every call made by boto3 clients created in the block through boto3's default session
    (`sds.kernel.sdk.client`, `training.data`), in order.

    S3 answers them as it answers the policies judged here, which grant s3:ListBucket only
    under an `s3:prefix` condition: a read of a key that does not exist is 403 AccessDenied,
    not moto's 404 (`tests.support.s3_denials.Listless`)."""
    import boto3

    calls: list[Call] = []

    def record(params: Mapping[str, Any], model: Any, **_: Any) -> None:
        calls.append(Call(model.service_model.signing_name, model.name, dict(params)))

    session = boto3.Session()
    session.events.register("provide-client-params", record)
    Listless().install(session.events)
    previous = boto3.DEFAULT_SESSION
    boto3.DEFAULT_SESSION = session
    try:
        yield calls
    finally:
        boto3.DEFAULT_SESSION = previous


_ACCOUNT_CREDENTIALS: dict[str, dict[str, str]] = {}


def private_client(service: str, account: str = ACCOUNT) -> Any:
    """A client outside the recorded default session (the test's own setup and "container"),
    acting in `account` (moto: with credentials of a role assumed in it)."""
    import boto3

    if account == ACCOUNT:
        return boto3.Session().client(service, region_name=REGION)
    return boto3.Session(region_name=REGION, **credentials_in(account)).client(service)


def credentials_in(account: str) -> dict[str, str]:
    """Credentials that act in `account` on the moto server (an administrator's session there)."""
    import boto3

    if account not in _ACCOUNT_CREDENTIALS:
        found = (
            boto3.Session()
            .client("sts", region_name=REGION)
            .assume_role(
                RoleArn=f"arn:{PARTITION}:iam::{account}:role/Admin", RoleSessionName="setup"
            )["Credentials"]
        )
        _ACCOUNT_CREDENTIALS[account] = {
            "aws_access_key_id": found["AccessKeyId"],
            "aws_secret_access_key": found["SecretAccessKey"],
            "aws_session_token": found["SessionToken"],
        }
    return _ACCOUNT_CREDENTIALS[account]


# ------------------------------------------------------------------------------------------
# The environments as deployed on moto


@dataclass
class Deployed:
    """One environment's resources on moto, and how its templates' references resolve to them."""

    env: str
    registry_bucket: str
    data_bucket: str
    key_arn: str | None
    account: str = ACCOUNT
    parameters: dict[str, str] = field(default_factory=dict)
    function: str | None = None
    application: str | None = None
    group: str | None = None
    cluster: str | None = None
    task_definition_arn: str | None = None
    task_role_arn: str | None = None
    execution_role_arn: str | None = None
    log_group: str | None = None
    archive: str | None = None  # the activity bus's archive (Features stack)
    state_machine: str | None = None  # the training run's (network.endpoints: during_runs)
    batch_machine: str | None = None  # the Batch stack's state machine

    @property
    def function_arn(self) -> str:
        return f"arn:{PARTITION}:lambda:{REGION}:{self.account}:function:{self.function}"

    @property
    def group_arn(self) -> str:
        return (
            f"arn:{PARTITION}:codedeploy:{REGION}:{self.account}:deploymentgroup:"
            f"{self.application}/{self.group}"
        )

    @property
    def archive_arn(self) -> str:
        return f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:archive/{self.archive}"

    @property
    def cluster_arn(self) -> str:
        return f"arn:{PARTITION}:ecs:{REGION}:{self.account}:cluster/{self.cluster}"

    @property
    def state_machine_arn(self) -> str:
        return f"arn:{PARTITION}:states:{REGION}:{self.account}:stateMachine:{self.state_machine}"

    @property
    def batch_machine_arn(self) -> str:
        return f"arn:{PARTITION}:states:{REGION}:{self.account}:stateMachine:{self.batch_machine}"

    def identifiers(self) -> list[str]:
        """Strings that appear in the ARN of every resource of this environment."""
        found = [self.registry_bucket, self.data_bucket, f"parameter/sds/{self.env}/"]
        for value in (
            self.key_arn,
            self.function,
            self.application,
            self.cluster,
            self.task_definition_arn,
            self.task_role_arn,
            self.execution_role_arn,
            self.archive,
            self.state_machine,
            self.batch_machine,
        ):
            if value:
                found.append(value)
        if self.archive:
            found.append(f":replay/sds-{self.env}-features-")
        return found


def _names(env: str) -> str:
    return f"sds-{env}-{uuid.uuid4().hex[:8]}"


def deploy(
    env: str,
    *,
    kms: bool,
    function: bool = False,
    training: bool = False,
    account: str = ACCOUNT,
    activity: bool = False,
    training_runs: bool = False,
    batch: bool = False,
) -> Deployed:
    """Create what `<env>/*` creates (buckets, discovery parameters, and on request the function
    with its deployment group, the training cluster and task, or the batch state machine) through
    the moto server, in `account`."""
    s3, ssm = private_client("s3", account), private_client("ssm", account)
    name = _names(env)
    deployed = Deployed(
        env=env,
        registry_bucket=f"{name}-registry",
        data_bucket=f"{name}-data",
        key_arn=f"arn:{PARTITION}:kms:{REGION}:{account}:key/{uuid.uuid4()}" if kms else None,
        account=account,
    )
    for bucket in (deployed.registry_bucket, deployed.data_bucket):
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    parameters = {
        "registry-bucket": deployed.registry_bucket,
        "training-data-bucket": deployed.data_bucket,
    }
    if function:
        parameters |= _deploy_function(deployed, name)
    if training:
        parameters |= _deploy_training(deployed, name)
    if training_runs:  # the training run's state machine (it leases the endpoints per run)
        deployed.state_machine = f"{name}-training-runs"
        private_client("stepfunctions", account).create_state_machine(
            name=deployed.state_machine,
            definition=json.dumps({"StartAt": "Run", "States": {"Run": {"Type": "Succeed"}}}),
            roleArn=_role(f"{name}-runs", "states.amazonaws.com", account),
        )
        parameters["training-state-machine"] = deployed.state_machine_arn
    if activity:
        parameters |= _deploy_activity(deployed, name)
    if batch:  # moto runs no execution: a test plays what the state machine does
        deployed.batch_machine = f"{name}-batch"
        private_client("stepfunctions", account).create_state_machine(
            name=deployed.batch_machine,
            definition=json.dumps({"StartAt": "Plan", "States": {"Plan": {"Type": "Succeed"}}}),
            roleArn=_role(f"{name}-batch", "states.amazonaws.com", account),
        )
        parameters["batch-state-machine"] = deployed.batch_machine_arn
    for key, value in parameters.items():
        ssm.put_parameter(Name=f"/sds/{env}/{key}", Value=value, Type="String")
    deployed.parameters = parameters
    return deployed


def _role(name: str, service: str, account: str = ACCOUNT) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }
    return str(
        private_client("iam", account).create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(trust)
        )["Role"]["Arn"]
    )


def _deploy_function(deployed: Deployed, name: str) -> dict[str, str]:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    deployed.function = f"{name}-inference"
    private_client("lambda", deployed.account).create_function(
        FunctionName=deployed.function,
        Runtime="python3.12",
        Role=_role(f"{name}-fn", "lambda.amazonaws.com", deployed.account),
        Handler="handler.lambda_handler",
        Code={"ZipFile": buffer.getvalue()},
        Environment={"Variables": {"MODEL_NAME": MODEL, "ENVIRONMENT": deployed.env}},
    )
    codedeploy = private_client("codedeploy", deployed.account)
    deployed.application, deployed.group = f"{name}-app", f"{name}-group"
    codedeploy.create_application(applicationName=deployed.application, computePlatform="Lambda")
    codedeploy.create_deployment_group(
        applicationName=deployed.application,
        deploymentGroupName=deployed.group,
        serviceRoleArn=_role(f"{name}-cd", "codedeploy.amazonaws.com", deployed.account),
        deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
        deploymentStyle={
            "deploymentType": "BLUE_GREEN",
            "deploymentOption": "WITH_TRAFFIC_CONTROL",
        },
    )
    return {
        "function-name": deployed.function,
        "alias-name": "live",
        "api-url": f"https://example.execute-api.{REGION}.{URL_SUFFIX}/{deployed.env}/",
        "deployment-group": deployed.group,
        "codedeploy-application": deployed.application,
    }


def _deploy_activity(deployed: Deployed, name: str) -> dict[str, str]:
    """The Features stack's bus, its archive and the feature rule."""
    events = private_client("events")
    bus = f"{name}-activity"
    bus_arn = events.create_event_bus(Name=bus)["EventBusArn"]
    deployed.archive = f"{name}-archive"
    events.create_archive(
        ArchiveName=deployed.archive,
        EventSourceArn=bus_arn,
        EventPattern=json.dumps({"account": [ACCOUNT]}),
    )
    rule_arn = events.put_rule(
        Name=f"{name}-features",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["sds.activity"]}),
    )["RuleArn"]
    return {"event-bus": bus, "event-archive": deployed.archive, "feature-rule": rule_arn}


def _deploy_training(deployed: Deployed, name: str) -> dict[str, str]:
    ec2, ecs = private_client("ec2"), private_client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
        for i in range(2)
    ]
    group = ec2.create_security_group(GroupName=name, Description="training", VpcId=vpc)
    deployed.cluster = ecs.create_cluster(clusterName=f"{name}-training")["cluster"]["clusterName"]
    deployed.task_role_arn = _role(f"{name}-task", ECS_TASKS)
    deployed.execution_role_arn = _role(f"{name}-exec", ECS_TASKS)
    deployed.log_group = f"{name}-train-logs"
    deployed.task_definition_arn = ecs.register_task_definition(
        family=f"{name}-train",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="8192",
        taskRoleArn=deployed.task_role_arn,
        executionRoleArn=deployed.execution_role_arn,
        containerDefinitions=[
            {
                "name": "train",
                "image": f"{ACCOUNT}.dkr.ecr.{REGION}.{URL_SUFFIX}/train:latest",
                "essential": True,
                "memory": 8192,  # moto sums container memory to place the task
                "command": [
                    "--registry",
                    f"s3://{deployed.registry_bucket}",
                    "--model",
                    MODEL,
                    "--data",
                    f"s3://{deployed.data_bucket}/training-data/",
                ],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    return {
        "training-cluster": deployed.cluster,
        "training-task-definition": deployed.task_definition_arn,
        "training-subnets": ",".join(subnets),
        "training-security-group": group["GroupId"],
    }


# ------------------------------------------------------------------------------------------
# Calls -> the IAM requests AWS authorizes


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: Mapping[str, str]
    call: str  # the SDK call it comes from

    def __str__(self) -> str:
        context = f" {dict(self.context)}" if self.context else ""
        return f"{self.action} on {self.resource}{context} (from {self.call})"


@dataclass
class World:
    """Every environment deployed for one scenario."""

    environments: Sequence[Deployed]

    def by_bucket(self, bucket: str) -> Deployed:
        for deployed in self.environments:
            if bucket in (deployed.registry_bucket, deployed.data_bucket):
                return deployed
        raise KeyError(f"no deployed environment owns bucket {bucket}")

    def by_function(self, name_or_arn: str) -> Deployed:
        name = name_or_arn.split(":function:")[-1].split(":")[0]
        for deployed in self.environments:
            if deployed.function == name:
                return deployed
        raise KeyError(f"no deployed environment owns function {name_or_arn}")

    def by_cluster(self, name_or_arn: str) -> Deployed:
        for deployed in self.environments:
            if deployed.cluster and name_or_arn.rsplit("/", 1)[-1] == deployed.cluster:
                return deployed
        raise KeyError(f"no deployed environment owns cluster {name_or_arn}")

    def by_group(self, application: str | None = None) -> Deployed:
        groups = [d for d in self.environments if d.group]
        if application is not None:
            groups = [d for d in groups if d.application == application]
        if len(groups) != 1:
            raise KeyError(f"cannot tell which deployment group is meant ({application})")
        return groups[0]

    def account_of_parameter(self, name: str) -> str:
        for deployed in self.environments:
            if name.startswith(f"/sds/{deployed.env}/"):
                return deployed.account
        return ACCOUNT

    def owner(self, request: Request) -> str | None:
        owners = {
            d.env for d in self.environments if any(i in request.resource for i in d.identifiers())
        }
        if len(owners) > 1:
            raise AssertionError(f"{request} names resources of {sorted(owners)}")
        return next(iter(owners), None)


def _object_requests(
    call: Call, world: World, actions: Sequence[str], kms_actions: Sequence[str]
) -> list[Request]:
    bucket = call.params["Bucket"]
    resource = f"arn:{PARTITION}:s3:::{bucket}/{call.params['Key']}"
    found = [Request(action, resource, {}, str(call)) for action in actions]
    key = world.by_bucket(bucket).key_arn
    if key is not None:
        # What S3 asks KMS for, on the caller's behalf, with S3 Bucket Keys on
        context = {
            "kms:ViaService": f"s3.{REGION}.{URL_SUFFIX}",
            "kms:EncryptionContext:aws:s3:arn": f"arn:{PARTITION}:s3:::{bucket}",
        }
        found += [Request(action, key, context, str(call)) for action in kms_actions]
    return found


def _s3(call: Call, world: World) -> list[Request]:
    op, params = call.operation, call.params
    if op in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
        action = "s3:ListBucketVersions" if op == "ListObjectVersions" else "s3:ListBucket"
        resource = f"arn:{PARTITION}:s3:::{params['Bucket']}"
        return [Request(action, resource, {"s3:prefix": params.get("Prefix", "")}, str(call))]
    if op == "GetObject":
        return _object_requests(call, world, ["s3:GetObject"], ["kms:Decrypt"])
    if op == "HeadObject":
        return _object_requests(call, world, ["s3:GetObject"], [])
    if op in ("PutObject", "CreateMultipartUpload"):
        return _object_requests(call, world, ["s3:PutObject"], ["kms:GenerateDataKey"])
    if op in ("UploadPart", "CompleteMultipartUpload"):
        return _object_requests(
            call, world, ["s3:PutObject"], ["kms:GenerateDataKey", "kms:Decrypt"]
        )
    if op in ("AbortMultipartUpload", "DeleteObject"):
        return _object_requests(call, world, [f"s3:{op}"], [])
    return [Request(f"s3:{op}", f"arn:{PARTITION}:s3:::{params.get('Bucket', '*')}", {}, str(call))]


def _ssm(call: Call, world: World) -> list[Request]:
    names = call.params.get("Names") or [call.params.get("Name", "*")]
    return [
        Request(
            f"ssm:{call.operation}",
            f"arn:{PARTITION}:ssm:{REGION}:{world.account_of_parameter(name)}:parameter{name}",
            {},
            str(call),
        )
        for name in names
    ]


def _sts(call: Call) -> list[Request]:
    if call.operation == "AssumeRole":
        return [Request("sts:AssumeRole", call.params["RoleArn"], {}, str(call))]
    return [Request(f"sts:{call.operation}", "*", {}, str(call))]


def _ecs(call: Call, world: World) -> list[Request]:
    op, params = call.operation, call.params
    if op == "DescribeTaskDefinition":  # no resource-level permissions
        return [Request("ecs:DescribeTaskDefinition", "*", {}, str(call))]
    deployed = world.by_cluster(params["cluster"])
    on_cluster = {"ecs:cluster": deployed.cluster_arn}
    if op == "RunTask":
        assert params["taskDefinition"] == deployed.task_definition_arn, params["taskDefinition"]
        passed = {"iam:PassedToService": ECS_TASKS}
        return [
            Request("ecs:RunTask", str(deployed.task_definition_arn), on_cluster, str(call)),
            # ECS hands the task its roles: the caller must be allowed to pass both
            Request("iam:PassRole", str(deployed.task_role_arn), passed, str(call)),
            Request("iam:PassRole", str(deployed.execution_role_arn), passed, str(call)),
        ]
    tasks = params.get("tasks") or [params.get("task", "*")]
    # The long ARN format (task/<cluster>/<id>), whatever form moto answered with
    arns = [
        f"arn:{PARTITION}:ecs:{REGION}:{deployed.account}:task/{deployed.cluster}/"
        f"{t.rsplit('/', 1)[-1]}"
        for t in tasks
    ]
    return [Request(f"ecs:{op}", arn, on_cluster, str(call)) for arn in arns]


def _states(call: Call) -> list[Request]:
    """Step Functions authorizes StartExecution and ListExecutions on the state machine,
    DescribeMapRun on the map run, the rest on the execution."""
    params = call.params
    resource = (
        params.get("stateMachineArn")
        or params.get("executionArn")
        or params.get("mapRunArn")
        or "*"
    )
    return [Request(f"states:{call.operation}", str(resource), {}, str(call))]


def _lambda(call: Call, world: World) -> list[Request]:
    deployed = world.by_function(call.params["FunctionName"])
    resource = deployed.function_arn
    qualifier = call.params.get("Qualifier")
    if qualifier:
        resource = f"{resource}:{qualifier}"
    return [Request(f"lambda:{call.operation}", resource, {}, str(call))]


def _events(call: Call) -> list[Request]:
    op, params = call.operation, call.params
    if op in ("DescribeArchive", "StartReplay"):
        name = params.get("ArchiveName") or str(params["EventSourceArn"]).rsplit("/", 1)[-1]
        resource = f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:archive/{name}"
    elif op in ("DescribeReplay", "CancelReplay"):
        resource = f"arn:{PARTITION}:events:{REGION}:{ACCOUNT}:replay/{params['ReplayName']}"
    else:
        resource = "*"
    return [Request(f"events:{op}", resource, {}, str(call))]


def _codedeploy(call: Call, world: World) -> list[Request]:
    deployed = world.by_group(call.params.get("applicationName"))
    return [Request(f"codedeploy:{call.operation}", deployed.group_arn, {}, str(call))]


def requests_of(calls: Sequence[Call], world: World) -> list[Request]:
    """The IAM requests behind the calls, each once."""
    found: list[Request] = []
    for call in calls:
        if call.service == "sts" and call.operation == "GetCallerIdentity":
            continue  # needs no permission: it answers even when everything is denied
        if call.service == "s3":
            made = _s3(call, world)
        elif call.service == "ssm":
            made = _ssm(call, world)
        elif call.service == "sts":
            made = _sts(call)
        elif call.service == "ecs":
            made = _ecs(call, world)
        elif call.service == "lambda":
            made = _lambda(call, world)
        elif call.service == "codedeploy":
            made = _codedeploy(call, world)
        elif call.service == "events":
            made = _events(call)
        elif call.service == "states":
            made = _states(call)
        else:  # something new: judged as an action on everything, which no policy here grants
            made = [Request(f"{call.service}:{call.operation}", "*", {}, str(call))]
        for request in made:
            if not any(
                (r.action, r.resource, r.context)
                == (request.action, request.resource, request.context)
                for r in found
            ):
                found.append(request)
    return found


# ------------------------------------------------------------------------------------------
# Templates -> concrete statements


class Resolver:
    """Resolves the intrinsic functions of one environment's templates to the moto resources."""

    def __init__(
        self,
        templates: Mapping[str, Mapping[str, Any]],
        deployed: Deployed,
        chain_start: Deployed | None = None,
    ) -> None:
        self.refs: dict[str, str] = {
            "AWS::AccountId": deployed.account,
            "AWS::Region": REGION,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": URL_SUFFIX,
        }
        # Above the chain start, the Training template reads the chain start's registry bucket
        # name from its discovery parameter (a template parameter of SSM type)
        if chain_start is not None:
            for stack in templates.values():
                for name, parameter in stack.get("Parameters", {}).items():
                    if parameter.get("Default") == f"/sds/{chain_start.env}/registry-bucket":
                        self.refs[name] = chain_start.registry_bucket
        self.attrs: dict[tuple[str, str], str] = {}
        registry = f"{deployed.env}-Registry"
        self.outputs: dict[tuple[str, str], str] = {
            (registry, "RegistryBucketName"): deployed.registry_bucket,
            (registry, "RegistryBucketArn"): f"arn:{PARTITION}:s3:::{deployed.registry_bucket}",
            (registry, "TrainingDataBucketName"): deployed.data_bucket,
            (registry, "TrainingDataBucketArn"): f"arn:{PARTITION}:s3:::{deployed.data_bucket}",
            # No command reads the feature table; policies that name it resolve to this name
            (registry, "FeatureTableName"): f"{deployed.registry_bucket}-features",
        }
        if deployed.key_arn is not None:
            self.outputs[(registry, "DataKeyArn")] = deployed.key_arn
        # No Training stack for an environment in another account than its chain start
        inference, training = templates["Inference"], templates.get("Training", {})
        # The function's own log group: no command touches it, its role writes to it
        self.attrs[(_logical_id(inference, "AWS::Logs::LogGroup", "ModelLogs"), "Arn")] = (
            f"arn:{PARTITION}:logs:{REGION}:{deployed.account}:log-group:{deployed.env}-inference:*"
        )
        if deployed.function is not None:
            function = _logical_id(inference, "AWS::Lambda::Function", "ModelFunction")
            self.refs[function] = deployed.function
            self.attrs[(function, "Arn")] = deployed.function_arn
            self.refs[_logical_id(inference, "AWS::CodeDeploy::Application", "Deployment")] = str(
                deployed.application
            )
            self.refs[_logical_id(inference, "AWS::CodeDeploy::DeploymentGroup", "Deployment")] = (
                str(deployed.group)
            )
        if deployed.archive is not None:
            archive = _logical_id(templates["Features"], "AWS::Events::Archive", "ActivityArchive")
            self.attrs[(archive, "Arn")] = deployed.archive_arn
        if deployed.cluster is not None:
            cluster = _logical_id(training, "AWS::ECS::Cluster", "JobCluster")
            self.refs[cluster] = deployed.cluster
            self.attrs[(cluster, "Arn")] = deployed.cluster_arn
            self.refs[_logical_id(training, "AWS::ECS::TaskDefinition", "JobTask")] = str(
                deployed.task_definition_arn
            )
            self.attrs[(_logical_id(training, "AWS::IAM::Role", "JobTaskRole"), "Arn")] = str(
                deployed.task_role_arn
            )
            execution = _logical_id(training, "AWS::IAM::Role", "JobTaskExecutionRole")
            self.attrs[(execution, "Arn")] = str(deployed.execution_role_arn)
            if deployed.state_machine is not None:
                machine = _logical_id(training, "AWS::StepFunctions::StateMachine", "Runs")
                self.refs[machine] = deployed.state_machine_arn
                self.attrs[(machine, "Name")] = deployed.state_machine
            logs = _logical_id(training, "AWS::Logs::LogGroup", "JobLogs")
            self.refs[logs] = str(deployed.log_group)
            self.attrs[(logs, "Arn")] = (
                f"arn:{PARTITION}:logs:{REGION}:{deployed.account}:log-group:{deployed.log_group}:*"
            )

        if deployed.batch_machine is not None:
            machine = _logical_id(templates["Batch"], "AWS::StepFunctions::StateMachine", "Runs")
            self.refs[machine] = deployed.batch_machine_arn
            self.attrs[(machine, "Name")] = deployed.batch_machine

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str | bool | int):
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, dict) and len(value) == 1:
            ((function, argument),) = value.items()
            if function == "Ref":
                return self._lookup(self.refs, argument, value)
            if function == "Fn::GetAtt":
                return self._lookup(self.attrs, (argument[0], argument[1]), value)
            if function == "Fn::GetStackOutput":
                key = (argument["StackName"], argument["OutputName"])
                return self._lookup(self.outputs, key, value)
            if function == "Fn::Join":
                delimiter, parts = argument
                return str(delimiter).join(str(self(part)) for part in parts)
            if function == "Fn::Select":
                index, items = argument
                return self(items)[int(index)]
            if function == "Fn::Split":
                delimiter, text = argument
                return str(self(text)).split(delimiter)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        raise ValueError(f"cannot resolve {json.dumps(value)}")

    @staticmethod
    def _lookup(table: Mapping[Any, str], key: Any, value: Any) -> str:
        if key not in table:
            raise KeyError(f"{json.dumps(value)} has no deployed counterpart in this test")
        return str(table[key])


def _logical_id(template: Mapping[str, Any], type_: str, prefix: str) -> str:
    found = [
        k for k, v in template["Resources"].items() if v["Type"] == type_ and k.startswith(prefix)
    ]
    if len(found) != 1:
        raise AssertionError(f"expected one {type_} named {prefix}*, found {found}")
    return found[0]


def policy_statements(
    templates: Mapping[str, Mapping[str, Any]], stack: str, logical_prefix: str, resolve: Resolver
) -> list[dict[str, Any]]:
    """The statements of the managed policy (or a role's default policy) `logical_prefix*` in
    `stack`, resolved."""
    template = templates[stack]
    found = [
        k
        for k, v in template["Resources"].items()
        if v["Type"] in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy")
        and k.startswith(logical_prefix)
    ]
    if len(found) != 1:
        raise AssertionError(f"expected one policy named {logical_prefix}* in {stack}: {found}")
    document = template["Resources"][found[0]]["Properties"]["PolicyDocument"]
    statements = document["Statement"]
    return [resolve(s) for s in (statements if isinstance(statements, list) else [statements])]


# ------------------------------------------------------------------------------------------
# The evaluator


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda expected, actual: expected == actual,
    "StringLike": _like,
    "ArnEquals": lambda expected, actual: expected == actual,
    "ArnLike": _like,
    "Bool": lambda expected, actual: str(expected).lower() == str(actual).lower(),
}


def _statement_allows(statement: Mapping[str, Any], request: Request) -> bool:
    unsupported = set(statement) - {"Sid", "Effect", "Action", "Resource", "Condition"}
    if unsupported:
        raise ValueError(f"the evaluator does not judge {sorted(unsupported)}: {statement}")
    if statement["Effect"] != "Allow":
        raise ValueError(f"the evaluator does not judge Deny statements: {statement}")
    action = request.action.lower()
    if not any(_like(str(a).lower(), action) for a in _as_list(statement["Action"])):
        return False
    if not any(_like(str(r), request.resource) for r in _as_list(statement["Resource"])):
        return False
    for operator, entries in statement.get("Condition", {}).items():
        if operator not in _OPERATORS:
            raise ValueError(f"the evaluator does not judge {operator}: {statement}")
        for key, expected in entries.items():
            actual = request.context.get(key)
            if actual is None:  # a condition on a key the request does not carry fails
                return False
            if not any(_OPERATORS[operator](str(e), actual) for e in _as_list(expected)):
                return False
    return True


def allows(statements: Sequence[Mapping[str, Any]], request: Request) -> bool:
    return any(_statement_allows(statement, request) for statement in statements)


def refused(
    requests: Sequence[Request], policies: Mapping[str, Sequence[Mapping[str, Any]]], world: World
) -> list[str]:
    """Each request that no statement of the policy of its environment allows. `policies` maps an
    environment to the statements that judge requests on its resources; "*" judges requests on
    no environment's resource (an action without resource-level permissions)."""
    problems = []
    for request in requests:
        owner = world.owner(request)
        statements = policies.get(owner or "*", [])
        if not allows(statements, request):
            problems.append(f"{owner or '*'}: {request}")
    return problems
