"""Training stack: network without NAT, the Fargate task and its least-privilege role."""

from __future__ import annotations

from conftest import SynthesizedApp
from infra_helpers import actions_of, one, resource_text, resources, role_statements


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
    if network.isolated:
        services = sorted(str(e["Properties"]["ServiceName"]).rsplit(".", 1)[-1] for e in interface)
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


def test_fargate_task_runs_the_training_entry_point_against_the_registry(
    synthesized: SynthesizedApp, env: str
) -> None:
    training = synthesized.project.env(env).infra.training
    template = _training(synthesized, env)
    _, task = one(template, "AWS::ECS::TaskDefinition")
    props = task["Properties"]
    assert props["RequiresCompatibilities"] == ["FARGATE"]
    assert props["Cpu"] == str(training.cpu)
    assert props["Memory"] == str(training.memory_mb)
    (container,) = props["ContainerDefinitions"]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    command = container["Command"]
    assert command[0] == "--registry" and command[2:4] == ["--model", "fraud"]
    assert command[4] == "--data"
    assert command[5]["Fn::Join"][1][-1] == f"/{training.data_prefix}"
    assert "Environment" not in container
    # the image is a CDK asset built from training/Dockerfile (synth needs no Docker engine)
    assert "cdk-hnb659fds-container-assets" in str(container["Image"])


def test_task_role_reads_data_writes_versions_and_events_never_aliases_or_deletes(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _training(synthesized, env)
    _, task = one(template, "AWS::ECS::TaskDefinition")
    role_id = task["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0]
    statements = {s["Sid"]: s for s in role_statements(template, role_id)}
    assert set(statements) == {
        "ReadTrainingData",
        "ListTrainingDataAndModel",
        "RegisterVersions",
        "WriteAuditEvents",
    }
    assert actions_of(statements["ReadTrainingData"]) == ["s3:GetObject"]
    assert "/training-data/*" in resource_text(statements["ReadTrainingData"])
    assert "/models/fraud/versions/*" in resource_text(statements["RegisterVersions"])
    assert actions_of(statements["WriteAuditEvents"]) == ["s3:PutObject"]
    assert "/models/fraud/events/*" in resource_text(statements["WriteAuditEvents"])
    for statement in statements.values():
        assert "aliases" not in resource_text(statement)
        assert not [a for a in actions_of(statement) if "Delete" in a or a.endswith("*")]


def test_schedule_only_where_configured(synthesized: SynthesizedApp, env: str) -> None:
    infra = synthesized.project.env(env).infra
    rules = resources(_training(synthesized, env), "AWS::Events::Rule")
    if infra.training.schedule is None:
        assert rules == {}
        return
    (rule,) = rules.values()
    assert rule["Properties"]["ScheduleExpression"] == infra.training.schedule
    (target,) = rule["Properties"]["Targets"]
    network = target["EcsParameters"]["NetworkConfiguration"]["AwsVpcConfiguration"]
    assert network["AssignPublicIp"] == ("DISABLED" if infra.network.isolated else "ENABLED")


def test_training_discovery_parameters(synthesized: SynthesizedApp, env: str) -> None:
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
        )
    }
