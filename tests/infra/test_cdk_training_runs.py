"""Training runs that lease the interface endpoints (`infra.network.endpoints: during_runs`, staging
and prod as committed): the state machine, its failure path, the schedule and the hourly sweep,
the lease function's permissions, and `always` leaving the Training stack as it was.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.infra_helpers import actions_of, one, resources, role_statements
from tests.infra.synth import SynthesizedApp, audit_nag, cdk_context, synthesize

LEASED = ["staging", "prod"]
SERVICES = ["ecr.api", "ecr.dkr", "logs"]


def _training(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Training").to_json()


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    """The state machine's definition, each CloudFormation token replaced by a readable stand-in
    (`<LogicalId>` or `<LogicalId.Attribute>`), so that it parses."""
    _, machine = one(template, "AWS::StepFunctions::StateMachine")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]

    def stand_in(token: dict[str, Any]) -> str:
        if "Ref" in token:
            return f"<{token['Ref']}>"
        if "Fn::GetAtt" in token:
            return f"<{'.'.join(token['Fn::GetAtt'])}>"
        return "<token>"

    return json.loads("".join(p if isinstance(p, str) else stand_in(p) for p in parts))


@pytest.fixture(scope="module")
def altered(
    tmp_path_factory: pytest.TempPathFactory, lock_file: Path, lambda_python: str
) -> SynthesizedApp:
    """cdk.json with staging's endpoints back to `always` (the behaviour before `during_runs`)
    and prod retraining from capture weekly (registering in dev), its endpoints leased."""
    return synthesize(
        tmp_path_factory.mktemp("altered") / "cdk.out",
        lock=lock_file,
        lambda_python=lambda_python,
        context=_altered_context(),
    )


def _altered_context() -> dict[str, Any]:
    context = copy.deepcopy(cdk_context())
    environments = context["environments"]
    environments["staging"]["infra"]["network"]["endpoints"] = "always"
    training = environments["prod"]["infra"].setdefault("training", {})
    training.update({"source": "capture", "schedule": "cron(0 4 ? * MON *)"})
    return context


def test_every_cdk_nag_finding_of_the_altered_app_is_acknowledged_and_none_is_stale(
    lock_file: Path, lambda_python: str
) -> None:
    # Given the app with the options cdk.json does not use here (a leased environment on a
    # schedule, an isolated one with endpoints always), built with acknowledgments recorded
    audit = audit_nag(_altered_context(), lock=lock_file, lambda_python=lambda_python)

    # Then every finding of the Training stacks is acknowledged (the schedule's EventBridge
    # role included), and every acknowledgment there still matches a finding
    assert any("/Training/" in path for path, _ in audit.findings)
    assert audit.unacknowledged(within="/Training/") == []
    assert audit.stale(within="/Training/") == []


@pytest.mark.parametrize("leased", LEASED)
def test_a_run_leases_waits_runs_the_task_and_releases(
    synthesized: SynthesizedApp, leased: str
) -> None:
    template = _training(synthesized, leased)
    definition = _definition(template)
    states = definition["States"]
    _, machine = one(template, "AWS::StepFunctions::StateMachine")
    assert machine["Properties"]["StateMachineType"] == "STANDARD"
    # Lease, then wait, then the task, then release, then done
    assert definition["StartAt"] == "LeaseEndpoints"
    assert states["LeaseEndpoints"]["Next"] == "WaitForEndpoints"
    assert states["WaitForEndpoints"]["Next"] == "CommandGiven"
    for step, action in [
        ("LeaseEndpoints", "lease"),
        ("WaitForEndpoints", "wait"),
        ("ReleaseEndpoints", "release"),
        ("ReleaseAfterFailure", "release"),
    ]:
        assert states[step]["Parameters"]["action"] == action
        assert states[step]["Resource"].startswith("<RunsLeaseFunction")
    # The release names its own execution, so another one still running keeps the endpoints
    assert states["ReleaseEndpoints"]["Parameters"]["execution.$"] == "$$.Execution.Id"
    # Waiting is bounded: EndpointsPending retried every 15 s, 40 times (10 minutes)
    (pending,) = [
        r for r in states["WaitForEndpoints"]["Retry"] if "EndpointsPending" in r["ErrorEquals"]
    ]
    assert (pending["IntervalSeconds"], pending["MaxAttempts"], pending["BackoffRate"]) == (
        15,
        40,
        1,
    )
    # The CLI's run (its command and actor in the input) or the schedule's (the task's own)
    choice = states["CommandGiven"]
    assert choice["Choices"] == [
        {"Variable": "$.command", "IsPresent": True, "Next": "RunTaskAsAsked"}
    ]
    assert choice["Default"] == "RunTask"
    for step in ("RunTaskAsAsked", "RunTask"):
        run = states[step]
        # .sync: the state ends when the task stops
        assert run["Resource"].endswith(":states:::ecs:runTask.sync")
        network = run["Parameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]
        # no public IP (ECS's default when the field is absent), the isolated subnet, the
        # task's own security group
        assert network.get("AssignPublicIp", "DISABLED") == "DISABLED"
        assert len(network["Subnets"]) == 1
        (group,) = network["SecurityGroups"]
        assert group.startswith("<NetworkTaskSecurityGroup")
        assert run["Next"] == "ReleaseEndpoints"
    (override,) = states["RunTaskAsAsked"]["Parameters"]["Overrides"]["ContainerOverrides"]
    assert override["Name"] == "train" and override["Command.$"] == "$.command"
    assert override["Environment"] == [{"Name": "SDS_ACTOR", "Value.$": "$.actor"}]
    assert "Overrides" not in states["RunTask"]["Parameters"]
    assert states["ReleaseEndpoints"]["Next"] == "Done"


@pytest.mark.parametrize("leased", LEASED)
def test_every_failure_releases_the_endpoints_then_fails_the_run(
    synthesized: SynthesizedApp, leased: str
) -> None:
    states = _definition(_training(synthesized, leased))["States"]
    for step in ("LeaseEndpoints", "WaitForEndpoints", "RunTaskAsAsked", "RunTask"):
        (catch,) = states[step]["Catch"]
        assert catch == {
            "ErrorEquals": ["States.ALL"],
            "ResultPath": "$.failure",
            "Next": "ReleaseAfterFailure",
        }, step
    # The run fails with its own error, whether the release after it worked or not
    release = states["ReleaseAfterFailure"]
    assert release["Next"] == "TrainingRunFailed"
    assert [c["Next"] for c in release["Catch"]] == ["TrainingRunFailed"]
    failed = states["TrainingRunFailed"]
    assert (failed["Type"], failed["ErrorPath"], failed["CausePath"]) == (
        "Fail",
        "$.failure.Error",
        "$.failure.Cause",
    )


@pytest.mark.parametrize("leased", LEASED)
def test_an_hourly_sweep_releases_what_a_stopped_run_left(
    synthesized: SynthesizedApp, leased: str
) -> None:
    template = _training(synthesized, leased)
    machine_id, _ = one(template, "AWS::StepFunctions::StateMachine")
    function_id, _ = one(template, "AWS::Lambda::Function", prefix="RunsLeaseFunction")
    _, sweep = one(template, "AWS::Events::Rule", prefix="RunsSweep")
    assert sweep["Properties"]["ScheduleExpression"] == "rate(1 hour)"
    (target,) = sweep["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    parts = target["Input"]["Fn::Join"][1]
    sent = json.loads("".join(p if isinstance(p, str) else f"<{p['Ref']}>" for p in parts))
    assert sent == {"action": "release", "state_machine": f"<{machine_id}>"}


def test_a_scheduled_run_is_an_execution_of_the_state_machine(altered: SynthesizedApp) -> None:
    template = _training(altered, "prod")
    machine_id, _ = one(template, "AWS::StepFunctions::StateMachine")
    _, rule = one(template, "AWS::Events::Rule", prefix="RunsSchedule")
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 4 ? * MON *)"
    (target,) = rule["Properties"]["Targets"]
    # The state machine, with no command (the task definition's own, as the ECS target ran it),
    # and the retry policy the ECS target had
    assert target["Arn"] == {"Ref": machine_id}
    assert json.loads(target["Input"]) == {}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 7200, "MaximumRetryAttempts": 2}
    # through a role EventBridge may assume for this account's rules only
    role = template["Resources"][target["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {
            "aws:SourceArn": {
                "Fn::Join": [
                    "",
                    ["arn:aws:events:us-east-1:", {"Ref": "AWS::AccountId"}, ":rule/*"],
                ]
            }
        },
    }
    # And no rule starts the task directly
    for found in resources(template, "AWS::Events::Rule").values():
        assert "EcsParameters" not in json.dumps(found)


@pytest.mark.parametrize("leased", LEASED)
def test_the_lease_function_creates_and_deletes_only_tagged_endpoints_of_its_network(
    synthesized: SynthesizedApp, leased: str
) -> None:
    template = _training(synthesized, leased)
    role_id, _ = one(template, "AWS::IAM::Role", prefix="RunsLeaseRole")
    statements = {s["Sid"]: s for s in role_statements(template, role_id) if "Sid" in s}
    # Creating: only interface endpoints for the three services, tagged as this environment's
    create = statements["CreateTaggedEndpoints"]
    assert actions_of(create) == ["ec2:CreateVpcEndpoint"]
    equals = create["Condition"]["StringEquals"]
    assert equals["aws:RequestTag/sds:training-endpoints"] == leased
    assert sorted(map(_service, equals["ec2:VpceServiceName"])) == SERVICES
    assert create["Condition"]["ForAllValues:StringEquals"] == {
        "aws:TagKeys": ["sds:training-endpoints"]
    }
    # ... in the training VPC, its subnets and the endpoint security group only
    network = json.dumps(statements["InTheTrainingNetworkOnly"]["Resource"])
    assert ':vpc/",{"Ref":"NetworkVpc' in network.replace(" ", "")
    assert network.count(":subnet/") == 1  # one AZ
    assert "NetworkEndpointSecurityGroup" in network
    # Tagging only while creating; deleting only what carries the environment's tag
    assert statements["TagOnCreate"]["Condition"] == {
        "StringEquals": {"ec2:CreateAction": "CreateVpcEndpoint"}
    }
    assert statements["DeleteTaggedEndpoints"]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/sds:training-endpoints": leased}
    }
    # And no EC2 action that changes anything is allowed on every resource
    for statement in role_statements(template, role_id):
        if statement.get("Resource") == "*":
            if actions_of(statement) == ["ecs:ListTasks"]:  # limited to the cluster instead
                assert "ecs:cluster" in statement["Condition"]["ArnEquals"]
                continue
            reads = all(a.startswith(("ec2:Describe", "xray:")) for a in actions_of(statement))
            assert reads, statement
    # The release's checks: this cluster's tasks, this state machine's executions
    machine_id, _ = one(template, "AWS::StepFunctions::StateMachine")
    _, checks = one(template, "AWS::IAM::Policy", prefix="RunsReleaseChecks")
    by_sid = {s["Sid"]: s for s in checks["Properties"]["PolicyDocument"]["Statement"]}
    assert by_sid["ListRunningExecutions"]["Resource"] == {"Ref": machine_id}
    assert "ecs:cluster" in by_sid["ListTrainingTasks"]["Condition"]["ArnEquals"]


@pytest.mark.parametrize("leased", LEASED)
def test_the_state_machine_runs_follows_and_stops_only_its_own_clusters_task(
    synthesized: SynthesizedApp, leased: str
) -> None:
    # Given the role of the training run's state machine
    template = _training(synthesized, leased)
    _, machine = one(template, "AWS::StepFunctions::StateMachine")
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    statements = role_statements(template, role_id)
    by_action = {a: s for s in statements for a in actions_of(s)}
    cluster_id, _ = one(template, "AWS::ECS::Cluster")
    task_id, _ = one(template, "AWS::ECS::TaskDefinition")
    lease_id, _ = one(template, "AWS::Lambda::Function", prefix="RunsLeaseFunction")

    # Then it runs the training task definition in its cluster only, as the operator may
    run = by_action["ecs:RunTask"]
    assert run["Resource"] == {"Ref": task_id}
    assert run["Condition"] == {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}
    # And follows and stops that cluster's tasks only (task ids are generated at launch)
    for action in ("ecs:DescribeTasks", "ecs:StopTask"):
        tasks = json.dumps(by_action[action]["Resource"]).replace(" ", "")
        assert tasks.endswith(f':task/",{{"Ref":"{cluster_id}"}},"/*"]]}}'), tasks
    # And passes the task's two roles to ECS tasks only
    passing = by_action["iam:PassRole"]
    assert len(passing["Resource"]) == 2
    assert passing["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
    }
    # And invokes the lease function only
    assert by_action["lambda:InvokeFunction"]["Resource"][0] == {"Fn::GetAtt": [lease_id, "Arn"]}
    # And '*' only where nothing narrower exists: log delivery and X-Ray
    wildcard = sorted(a for s in statements if s["Resource"] == "*" for a in actions_of(s))
    assert wildcard and all(a.startswith(("logs:", "xray:")) for a in wildcard), wildcard
    # And only Step Functions of this account assumes it, for its state machines
    (trust,) = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "states.amazonaws.com"}
    assert set(trust["Condition"]) == {"ArnLike", "StringEquals"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


@pytest.mark.parametrize("leased", LEASED)
def test_the_lease_function_runs_outside_the_vpc_and_knows_its_network(
    synthesized: SynthesizedApp, leased: str
) -> None:
    template = _training(synthesized, leased)
    _, function = one(template, "AWS::Lambda::Function", prefix="RunsLeaseFunction")
    assert "VpcConfig" not in function["Properties"]
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["SDS_ENV"] == leased
    assert variables["VPC_ID"] == {"Ref": next(iter(resources(template, "AWS::EC2::VPC")))}
    assert "NetworkEndpointSecurityGroup" in json.dumps(variables["ENDPOINT_SECURITY_GROUP_ID"])


def test_always_keeps_the_endpoints_in_the_template_and_starts_the_task_directly(
    altered: SynthesizedApp, synthesized: SynthesizedApp
) -> None:
    # Given staging with endpoints "always", and staging as committed ("during_runs")
    before = _training(altered, "staging")
    leased = _training(synthesized, "staging")
    # Then "always" has the three interface endpoints, one AZ, private DNS, and nothing of the runs
    interface = [
        e["Properties"]
        for e in resources(before, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert sorted(_service(e["ServiceName"]) for e in interface) == SERVICES
    assert all(e["PrivateDnsEnabled"] for e in interface)
    assert not resources(before, "AWS::StepFunctions::StateMachine")
    assert not [k for k in resources(before, "AWS::Lambda::Function") if k.startswith("Runs")]
    names = {p["Properties"]["Name"] for p in resources(before, "AWS::SSM::Parameter").values()}
    assert "/sds/staging/training-state-machine" not in names
    # And its operator still runs the task itself
    _, policy = one(before, "AWS::IAM::ManagedPolicy", prefix="OperatorPolicy")
    sids = {s["Sid"] for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert {"RunTrainingTask", "PassTaskRoles"} <= sids and "StartTrainingRun" not in sids
    # And "during_runs" differs only by what the runs add and the endpoints it no longer keeps
    kinds_before = {k: v["Type"] for k, v in resources_all(before).items()}
    kinds_leased = {k: v["Type"] for k, v in resources_all(leased).items()}
    removed = {k for k in kinds_before if k not in kinds_leased}
    added = {k for k in kinds_leased if k not in kinds_before}
    assert {kinds_before[k] for k in removed} == {"AWS::EC2::VPCEndpoint"}
    assert len(removed) == 3
    assert all(k.startswith(("Runs", "Discoverytraining")) for k in added), sorted(added)
    # (the same logical ids for everything else: the network, its security groups, the task)
    for kept in ("AWS::EC2::SecurityGroup", "AWS::EC2::Subnet", "AWS::ECS::TaskDefinition"):
        assert {k for k, t in kinds_before.items() if t == kept} == {
            k for k, t in kinds_leased.items() if t == kept
        }


def resources_all(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(template["Resources"])


def _service(name: str) -> str:
    """`ecr.api` of `com.amazonaws.us-east-1.ecr.api` (the stage has its region)."""
    return name.split(".", 3)[-1]
