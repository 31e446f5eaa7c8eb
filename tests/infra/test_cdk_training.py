"""Training stack: network without NAT, the Fargate task and its least-privilege role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.infra.infra_helpers import actions_of, one, resource_text, resources, role_statements
from tests.infra.synth import VARIANT, SynthesizedApp


def _training(synthesized: SynthesizedApp, env: str) -> dict:
    return synthesized.template(env, "Training").to_json()


def test_never_a_nat_gateway(synthesized: SynthesizedApp, env: str) -> None:
    template = _training(synthesized, env)
    assert not resources(template, "AWS::EC2::NatGateway")
    assert not resources(template, "AWS::EC2::EIP")


def test_isolated_environments_reach_aws_only_through_endpoints(
    synthesized: SynthesizedApp, env: str
) -> None:
    network = synthesized.project.env(env).infra.network
    template = _training(synthesized, env)
    endpoints = resources(template, "AWS::EC2::VPCEndpoint").values()
    gateway = [e for e in endpoints if e["Properties"].get("VpcEndpointType") == "Gateway"]
    interface = [e for e in endpoints if e["Properties"].get("VpcEndpointType") == "Interface"]
    assert len(gateway) == 1
    assert "s3" in str(gateway[0]["Properties"]["ServiceName"])
    subnets = resources(template, "AWS::EC2::Subnet").values()
    assert len(subnets) == network.azs
    for subnet in subnets:
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
    if network.leased_endpoints:
        # staging, prod: isolated, and the interface endpoints exist only while a run needs
        # them (the training run's state machine creates and deletes them): none in the template
        assert interface == []
        assert not resources(template, "AWS::EC2::InternetGateway")
    elif network.isolated:
        services = sorted(str(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1] for e in interface)
        # ECR (image), CloudWatch Logs (log driver): nothing else bills by the hour; the task
        # names itself without STS (its role from the task definition, its ARN from ECS metadata)
        assert services == ["api", "dkr", "logs"]
        assert not resources(template, "AWS::EC2::InternetGateway")
    else:
        # dev: public subnets and the free S3 gateway endpoint only (no hourly endpoint cost)
        assert interface == []
        assert len(resources(template, "AWS::EC2::InternetGateway")) == 1


def test_task_security_group_allows_no_inbound(synthesized: SynthesizedApp, env: str) -> None:
    template = _training(synthesized, env)
    groups = resources(template, "AWS::EC2::SecurityGroup")
    task_group = next(v for k, v in groups.items() if k.startswith("NetworkTaskSecurityGroup"))
    assert "SecurityGroupIngress" not in task_group["Properties"]
    for ingress in resources(template, "AWS::EC2::SecurityGroupIngress").values():
        # only interface endpoints accept traffic, and only from the task security group
        assert "SourceSecurityGroupId" in ingress["Properties"]
        assert "CidrIp" not in ingress["Properties"]


def _versions_registry(template: dict, env: str, start: str) -> Any:
    """How `env`'s Training template names the bucket of the registry where versions are
    allocated: its own bucket at the chain start, else `start`'s, read from SSM at deploy time."""
    if env == start:
        return {"Fn::GetStackOutput": {"StackName": f"{env}-Registry", "OutputName": _NAME}}
    (parameter_id,) = [
        key
        for key, parameter in template.get("Parameters", {}).items()
        if parameter.get("Default") == f"/sds/{start}/registry-bucket"
    ]
    assert template["Parameters"][parameter_id]["Type"] == "AWS::SSM::Parameter::Value<String>"
    return {"Ref": parameter_id}


_NAME = "RegistryBucketName"


def test_fargate_task_trains_on_its_own_data_and_registers_where_versions_are_allocated(
    synthesized: SynthesizedApp, env: str
) -> None:
    config = synthesized.project.env(env)
    training = config.infra.training
    template = _training(synthesized, env)
    _, task = one(template, "AWS::ECS::TaskDefinition")
    props = task["Properties"]
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["Cpu"] == str(training.cpu)
    assert props["Memory"] == str(training.memory_mb)
    # with more local disk than Fargate's 20 GiB only when the environment asks for it
    disk = training.ephemeral_storage_gib
    assert props.get("EphemeralStorage") == ({"SizeInGiB": disk} if disk > 20 else None)
    (container,) = props["ContainerDefinitions"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    command = container["Command"]
    assert command[0] == "--registry" and command[2:4] == ["--model", "fraud"]
    # Versions go to the registry where the chain starts (dev's, for staging and prod too)
    registry = _versions_registry(template, env, config.chain_start)
    assert command[1] == {"Fn::Join": ["", ["s3://", registry]]}
    # And the data is the environment's own, in its own training-data bucket, never a registry
    assert command[4] == "--data"
    assert command[5] == {
        "Fn::Join": [
            "",
            ["s3://", _output(env, "TrainingDataBucketName"), f"/{training.data_prefix}"],
        ]
    }
    # with the environment's negative downsampling, if it has any (cdk.json's environments fit
    # every payment; tests/unit/test_sampling.py covers the flag itself)
    rate = training.negative_rate
    sampling = ["--negative-rate", f"{rate:g}"] if rate < 1 else []
    assert command[6:] == sampling
    # Its environment: its own role, for the audit trail (task_actor), and the code it runs
    assert [v["Name"] for v in container["Environment"]] == [
        "SDS_CODE_VERSION",
        "SDS_TASK_ROLE_ARN",
    ]
    # the image is a CDK asset built from training/Dockerfile (synth needs no Docker engine)
    assert "cdk-hnb659fds-container-assets" in str(container["Image"])


def test_the_task_records_the_content_hash_of_the_image_it_runs_as_its_code_version(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the training image asset synth staged for the environment (the image has no git)
    stack = synthesized.stages[env].training
    assert stack is not None
    assets = Path(synthesized.stages[env].outdir) / f"{stack.artifact_id}.assets.json"
    (asset_hash,) = json.loads(assets.read_text())["dockerImages"]
    # When the task definition's container is read
    _, task = one(_training(synthesized, env), "AWS::ECS::TaskDefinition")
    (container,) = task["Properties"]["ContainerDefinitions"]
    # Then it runs the image of that hash, and names it as the code its manifests record
    assert json.dumps(container["Image"]).endswith(f':{asset_hash}"}}')
    environment = {v["Name"]: v["Value"] for v in container["Environment"]}
    assert environment["SDS_CODE_VERSION"] == f"image:{asset_hash}"


def _output(env: str, name: str) -> dict[str, Any]:
    return {"Fn::GetStackOutput": {"StackName": f"{env}-Registry", "OutputName": name}}


def test_task_role_reads_data_writes_versions_and_events_never_aliases_or_deletes(
    synthesized: SynthesizedApp, env: str
) -> None:
    config = synthesized.project.env(env)
    template = _training(synthesized, env)
    _, task = one(template, "AWS::ECS::TaskDefinition")
    role_id = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = {s["Sid"]: s for s in role_statements(template, role_id)}
    kms = config.infra.registry.kms
    allocates = config.allocates_versions
    assert set(statements) == {
        "ReadTrainingData",
        "ListTrainingData",
        "ListModel",
        "RegisterVersions",
        "WriteAuditEvents",
        *(["DecryptTrainingData"] if kms else []),
        # the chain start's registry is SSE-S3 in the shipped config: no key to use there
        *(["UseRegistryKey"] if kms and allocates else []),
    }
    data = _output(env, "TrainingDataBucketArn")
    if allocates:
        registry = _output(env, "RegistryBucketArn")
    else:
        # Versions, events and the model's listing in the chain start's registry, by the name
        # its discovery parameter holds; the data stays the environment's own
        name = json.dumps(_versions_registry(template, env, config.chain_start))
        for sid in ("ListModel", "RegisterVersions", "WriteAuditEvents"):
            assert name in resource_text(statements[sid]), sid
        for sid in ("ReadTrainingData", "ListTrainingData"):
            assert name not in resource_text(statements[sid]), sid
        registry = statements["ListModel"]["Resource"]
    assert actions_of(statements["ReadTrainingData"]) == ["s3:GetObject"]
    assert statements["ReadTrainingData"]["Resource"] == {
        "Fn::Join": ["", [data, "/training-data/*"]]
    }
    assert statements["ListTrainingData"]["Resource"] == data
    assert statements["ListModel"]["Resource"] == registry
    assert "/models/fraud/versions/*" in resource_text(statements["RegisterVersions"])
    assert actions_of(statements["WriteAuditEvents"]) == ["s3:PutObject"]
    assert "/models/fraud/events/*" in resource_text(statements["WriteAuditEvents"])
    for statement in statements.values():
        assert "aliases" not in resource_text(statement)
        assert not [a for a in actions_of(statement) if "Delete" in a or a.endswith("*")]
    if kms:
        # Decrypts training data only; encrypts and decrypts registry objects only
        assert actions_of(statements["DecryptTrainingData"]) == ["kms:Decrypt"]
        assert (
            data
            in statements["DecryptTrainingData"]["Condition"]["StringLike"][
                "kms:EncryptionContext:aws:s3:arn"
            ]
        )
    if kms and allocates:
        assert actions_of(statements["UseRegistryKey"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert (
            registry
            in statements["UseRegistryKey"]["Condition"]["StringLike"][
                "kms:EncryptionContext:aws:s3:arn"
            ]
        )


def test_operator_policies_are_published_as_stack_outputs(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _training(synthesized, env)
    outputs = template["Outputs"]
    policies = resources(template, "AWS::IAM::ManagedPolicy")
    for output, prefix in (
        ("TrainingOperatorPolicyArn", "OperatorPolicy"),
        ("DataReaderPolicyArn", "DataReaderPolicy"),
    ):
        (policy_id,) = [k for k in policies if k.startswith(prefix)]
        assert outputs[output]["Value"] == {"Ref": policy_id}
        assert outputs[output]["Description"].startswith("Attach to ")
        assert policies[policy_id]["Properties"]["Description"].startswith(f"sds {env}: ")


def training_schedules(template: dict) -> dict[str, dict]:
    """The rules that start training runs (not the hourly sweep of leftover endpoints)."""
    return {
        logical_id: rule
        for logical_id, rule in resources(template, "AWS::Events::Rule").items()
        if not logical_id.startswith("RunsSweep")
    }


def test_schedule_only_where_configured(synthesized: SynthesizedApp, env: str) -> None:
    infra = synthesized.project.env(env).infra
    rules = training_schedules(_training(synthesized, env))
    if infra.training.schedule is None:
        assert rules == {}
        return
    # Only where versions are allocated (the config refuses a schedule anywhere else)
    assert synthesized.project.env(env).allocates_versions
    (rule,) = rules.values()
    assert rule["Properties"]["ScheduleExpression"] == infra.training.schedule
    (target,) = rule["Properties"]["Targets"]
    if infra.network.leased_endpoints:
        # the run's state machine starts the task (tests/infra/test_cdk_training_runs.py)
        assert "StateMachine" in json.dumps(target["Arn"])
    else:
        network = target["EcsParameters"]["NetworkConfiguration"]["AwsVpcConfiguration"]
        assert network["AssignPublicIp"] == ("DISABLED" if infra.network.isolated else "ENABLED")
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 2


def test_the_weekly_schedule_runs_where_versions_are_allocated(
    synthesized: SynthesizedApp,
) -> None:
    scheduled = [
        env
        for env in synthesized.project.environments
        if training_schedules(_training(synthesized, env))
    ]
    # dev on its history; above the chain start only a retraining from served traffic (the
    # variant's), which registers in dev too
    assert scheduled == ["dev", VARIANT]
    assert synthesized.project.env(VARIANT).infra.training.source == "capture"


def test_a_training_task_gets_the_local_disk_its_environment_asks_for(
    synthesized: SynthesizedApp,
) -> None:
    # Given the variant environment asking for 60 GiB (a history of about 240M events)
    assert synthesized.project.env(VARIANT).infra.training.ephemeral_storage_gib == 60
    # Then its task definition has it, and cdk.json's environments keep Fargate's free 20 GiB
    for env, size in [(VARIANT, {"SizeInGiB": 60})] + [
        (name, None) for name in synthesized.project.environments if name != VARIANT
    ]:
        _, task = one(_training(synthesized, env), "AWS::ECS::TaskDefinition")
        assert task["Properties"].get("EphemeralStorage") == size, env


def test_training_discovery_parameters(synthesized: SynthesizedApp, env: str) -> None:
    network = synthesized.project.env(env).infra.network
    names = {
        p["Properties"]["Name"]
        for p in resources(_training(synthesized, env), "AWS::SSM::Parameter").values()
    }
    assert names == {
        f"/sds/{env}/{key}"
        for key in (
            "training-cluster",
            "training-task-definition",
            "training-subnets",
            "training-security-group",
            # where the endpoints are leased per run, what the CLI starts a run with
            *(["training-state-machine"] if network.leased_endpoints else []),
        )
    }
