"""`sds rollback --aws` against a function, published versions and alias `live` on moto's Lambda API.

The function, its versions and the alias are created through the Lambda API the way a deploy
creates them (one published version per model pin); the rollback then has to find its way back
through SSM, the Lambda API, CodeDeploy and the S3 registry.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

import sds.kernel.activation
import sds.kernel.sdk
from sds.kernel.registry import Registry, Version
from sds.ops.aws import Clients
from sds.ops.aws_rollback import ConcurrentRollback, rollback_live, stop_deployments
from sds.ops.workspace import Workspace
from tests.integration import snapstart
from tests.integration.deployed import ACTOR, CliResult, Deployed, read_pin
from tests.integration.snapstart import LambdaStates, with_states


def deploy_two_models(deployed: Deployed, cli: Callable[..., CliResult]) -> tuple[Version, ...]:
    """Given v1 promoted and deployed, then v2 promoted and deployed (live -> v2's version)."""
    models = []
    for tag in ("one", "two"):
        model = deployed.register(tag)
        assert cli("promote", str(model.number), "--to", deployed.env).code == 0
        deployed.point_live(deployed.publish(model))
        models.append(model)
    return tuple(models)


def test_rollback_switches_live_to_the_lambda_version_serving_the_previous_model(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given two deploys: Lambda version 2 serves model 1, version 3 serves model 2 (live)
    dev = deploy("dev")
    one, two = deploy_two_models(dev, cli)
    assert dev.live()["FunctionVersion"] == "3"

    # When an operator rolls back on AWS
    started = time.monotonic()
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "false positives spiking")
    wall = time.monotonic() - started

    # Then live points at the version pinning model 1, with no routing weights, in under 2 s
    assert result.code == 0, result.err
    assert wall < 2.0, f"rollback took {wall:.2f} s"
    live = dev.live()
    assert live["FunctionVersion"] == "2"
    assert not live.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    assert "model version 2 -> 1" in result.out and "Lambda version 3 -> 2" in result.out
    # And the registry alias moved back, the pin follows it, and the event says who/why/how long
    state = dev.registry.get_alias("dev")
    assert state is not None and (state.version, state.previous) == (1, 2)
    assert read_pin(project, "dev") == {"version": 1, "sha256": one.sha256}
    (event,) = [e for e in dev.registry.events(alias="dev") if e["type"] == "rolled_back"]
    caller = dev.clients("sts").get_caller_identity()["Arn"]  # who, on AWS: STS says
    assert (event["by"], event["declared_actor"]) == (caller, ACTOR)
    assert event["reason"] == "false positives spiking"
    assert event["lambda_from"] == "3" and event["lambda_to"] == "2"
    assert event["function"] == dev.function and event["from_version"] == 2
    assert 0 < event["duration_ms"] < 2000
    assert event["id"] == state.event_id
    del two

    # And running it again with --to 1 is a no-op
    again = cli("--aws", "rollback", "--env", "dev", "--to", "1", "--reason", "again")
    assert again.code == 0 and "nothing to do" in again.out
    assert len([e for e in dev.registry.events() if e["type"] == "rolled_back"]) == 1


def test_rollback_to_a_model_no_deploy_published_is_refused_and_changes_nothing(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given model 3 once live in the registry (promoted, then rolled back from) but never
    # deployed to a Lambda version
    dev = deploy("dev")
    one, two = deploy_two_models(dev, cli)
    three = dev.register("three")
    assert cli("promote", str(three.number), "--to", "dev").code == 0
    assert cli("--aws", "rollback", "--env", "dev", "--reason", "not deployed yet").code == 0
    rolled_back = len([e for e in dev.registry.events() if e["type"] == "rolled_back"])
    pin_before = project.read_text()

    # When an operator asks to roll back to it
    result = cli("--aws", "rollback", "--env", "dev", "--to", str(three.number), "--reason", "x")

    # Then the command refuses, says to deploy, and neither alias nor the pin moved
    assert result.code == 1
    assert "deploy it first" in result.err and f"model version {three.number}" in result.err
    assert dev.live()["FunctionVersion"] == "3"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == two.number
    assert project.read_text() == pin_before
    assert len([e for e in dev.registry.events() if e["type"] == "rolled_back"]) == rolled_back
    del one


def test_the_command_a_refused_rollback_names_run_as_printed_rolls_forward_on_aws(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two deploys, rolled back once: dev serves model 1 on Lambda version 2
    dev = deploy("dev")
    one, two = deploy_two_models(dev, cli)
    assert cli("--aws", "rollback", "--env", "dev", "--reason", "first").code == 0

    # When rolling back again, past the oldest version on dev's history
    refused = cli("--aws", "rollback", "--env", "dev", "--reason", "second")

    # Then it names the command that returns to model 2, with --aws
    assert refused.code == 1
    hint = re.search(r"(sds [^:]*?) returns to it\)", refused.err)
    assert hint is not None, refused.err
    assert hint[1] == "sds --aws rollback --env dev --to 2"

    # And that command, run as printed in a shell without SDS_TARGET, switches live on AWS
    # (without --aws it would find nothing live in the local registry, or move it)
    monkeypatch.delenv("SDS_TARGET")
    again = cli(*shlex.split(hint[1])[1:], "--reason", "as the hint says")
    assert again.code == 0, again.err
    assert dev.live()["FunctionVersion"] == "3"
    assert dev.registry.get_alias("dev").version == two.number  # type: ignore[union-attr]
    assert read_pin(project, "dev") == {"version": 2, "sha256": two.sha256}
    del one


def test_a_rollback_already_in_place_on_aws_says_it_rewrote_a_stale_pin(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given dev rolled back to model 1 on AWS, and a lock file whose pin still says model 2
    dev = deploy("dev")
    one, two = deploy_two_models(dev, cli)
    assert cli("--aws", "rollback", "--env", "dev", "--reason", "first").code == 0
    document = json.loads(project.read_text())
    document["environments"]["dev"] = {"version": 2, "sha256": two.sha256}
    project.write_text(json.dumps(document))

    # When rolling back to model 1 again, where dev already is
    result = cli("--aws", "rollback", "--env", "dev", "--to", "1", "--reason", "again")

    # Then nothing moves on Lambda, and the output says the pin was rewritten, from what
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"dev already serves model version 1 (Lambda {dev.function}:live -> version 2)",
        f"  pin rewritten in {project.resolve()} to follow the alias (was version 2): commit it",
    ]
    assert read_pin(project, "dev") == {"version": 1, "sha256": one.sha256}
    # And --json says the same in lock_file; once in line, a re-run has nothing to do
    project.write_text(json.dumps(document))
    change = cli("--aws", "rollback", "--env", "dev", "--to", "1", "--json").json()
    assert change["changed"] is False
    assert change["lock_file"]["pin_was"] == {"version": 2, "sha256": two.sha256}
    again = cli("--aws", "rollback", "--env", "dev", "--to", "1", "--reason", "again")
    assert again.out.endswith("; nothing to do\n")


def test_rollback_to_a_model_the_environment_never_served_is_refused_before_live_moves(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given two deploys, and model 3 in dev's registry that never went live there
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    three = dev.register("three")
    pin_before = project.read_text()

    # When an operator asks the emergency exit (no gates) to put it live
    result = cli("--aws", "rollback", "--env", "dev", "--to", str(three.number), "--reason", "x")

    # Then it is refused (exit 3) with the promotion to run instead, and nothing moved
    assert result.code == 3, result.err
    assert f"version {three.number} was never live in dev" in result.err
    assert f"sds --aws promote {three.number} --to dev" in result.err
    assert dev.live()["FunctionVersion"] == "3"
    assert dev.registry.get_alias("dev").version == 2  # type: ignore[union-attr]
    assert project.read_text() == pin_before


def test_rollback_to_a_model_that_does_not_exist_is_an_error_before_live_moves(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given models 1 then 2 live in dev and in staging, and model 3 registered in dev only
    dev, staging = deploy("dev"), deploy("staging")
    for model in deploy_two_models(dev, cli):
        assert cli("--aws", "promote", str(model.number), "--to", "staging").code == 0
    three = dev.register("three")
    pin_before = project.read_text()

    # When an operator rolls staging back to a version that was never registered
    result = cli("--aws", "rollback", "--env", "staging", "--to", "99", "--reason", "x")

    # Then it is an error (exit 1), as for `show 99`, and nothing moved
    assert (result.code, result.err) == (
        1,
        "sds: error: version 99 is not in staging's registry, nor in dev's, where versions are "
        "registered: a rollback returns only to a version staging served (versions 1 and 2)\n",
    )
    # And model 3, which exists but staging never served, is still refused (exit 3)
    refused = cli("--aws", "rollback", "--env", "staging", "--to", str(three.number))
    assert refused.code == 3, refused.err
    assert f"version {three.number} was never live in staging" in refused.err
    assert staging.registry.get_alias("staging").version == 2  # type: ignore[union-attr]
    assert project.read_text() == pin_before


def test_a_lock_file_with_a_merge_conflict_refuses_the_rollback_before_live_moves(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given two deploys, and models.lock.json left with git's conflict markers
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    conflicted = "<<<<<<< HEAD\n" + project.read_text() + "=======\n{}\n>>>>>>> theirs\n"
    project.write_text(conflicted)

    # When an operator rolls back on AWS
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "mid-merge")

    # Then it is refused naming the file and the conflict, before live or the alias moved
    assert result.code == 1
    assert "resolve the merge conflict" in result.err and "nothing was changed" in result.err
    assert dev.live()["FunctionVersion"] == "3"
    assert dev.registry.get_alias("dev").version == 2  # type: ignore[union-attr]
    assert project.read_text() == conflicted


class StopDeploymentStub:
    """moto's CodeDeploy has no StopDeployment. Every other CodeDeploy call goes to the moto
    server; this one call is answered by a botocore Stubber, which also checks the exact
    parameters sent (deployment id, CodeDeploy's own rollback disabled)."""

    def __init__(self, real: Any, calls: list[str]) -> None:
        self.real = real
        self.calls = calls
        self.stubbed = boto3.client("codedeploy")
        self.stubber = Stubber(self.stubbed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def stop_deployment(self, **kwargs: Any) -> Any:
        self.calls.append(f"StopDeployment {kwargs['deploymentId']}")
        with self.stubber:
            return self.stubbed.stop_deployment(**kwargs)


def test_rollback_during_an_in_flight_deployment_stops_it_first_then_clears_the_canary(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    workspace: Callable[[], Workspace],
) -> None:
    # Given model 1 live, and model 2 deployed with CodeDeploy mid-canary (10 % on version 3)
    dev = deploy("dev")
    one = dev.register("one")
    assert cli("promote", "1", "--to", "dev").code == 0
    dev.point_live(dev.publish(one))
    two = dev.register("two")
    assert cli("promote", "2", "--to", "dev").code == 0
    canary = dev.publish(two)
    dev.point_live("2", weights={canary: 0.1})
    assert dev.live()["RoutingConfig"]["AdditionalVersionWeights"] == {canary: 0.1}
    codedeploy = dev.clients("codedeploy")
    deployment = codedeploy.create_deployment(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "{}"}},
    )["deploymentId"]
    calls: list[str] = []
    stub = StopDeploymentStub(codedeploy, calls)
    stub.stubber.add_response(
        "stop_deployment",
        {"status": "Succeeded", "statusMessage": "Deployment stopped"},
        expected_params={"deploymentId": deployment, "autoRollbackEnabled": False},
    )
    lam = dev.clients("lambda")
    lam.meta.events.register(
        "provide-client-params.lambda.UpdateAlias",
        lambda params, **_: calls.append(f"UpdateAlias {params['FunctionVersion']}"),
    )

    # When the operator rolls back
    done = rollback_live(
        workspace(),
        env="dev",
        reason="canary alarms",
        clients=Clients(overrides={"codedeploy": stub, "lambda": lam}),
    )

    # Then the deployment was stopped before the alias moved, and live serves model 1 only
    stub.stubber.assert_no_pending_responses()
    assert calls == [f"StopDeployment {deployment}", "UpdateAlias 2"]
    assert done.stopped_deployments == [deployment]
    live = dev.live()
    assert live["FunctionVersion"] == "2"
    assert not live.get("RoutingConfig", {}).get("AdditionalVersionWeights")
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 1
    (event,) = [e for e in dev.registry.events() if e["type"] == "rolled_back"]
    assert event["stopped_deployments"] == [deployment]


def test_rollback_names_the_missing_stack_when_discovery_fails(
    cli: Callable[..., CliResult],
) -> None:
    # Given nothing deployed: no /sds/dev/ parameters
    # When rolling back on AWS, Then the error names the parameter and the deploy to run
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x")
    assert result.code == 1
    assert "/sds/dev/" in result.err and "cdk deploy 'dev/" in result.err


@pytest.mark.parametrize("target", ["local"])
def test_local_mode_never_touches_aws(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    # Given SDS_TARGET=local (the default) and an endpoint that would fail if used
    monkeypatch.setenv("SDS_TARGET", target)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # When listing environments, Then registries are local folders and nothing calls AWS
    result = cli("envs", "--json")
    assert result.code == 0, result.err
    assert all(row["registry"].startswith("file://") for row in result.json())


def test_a_deploy_moving_live_meanwhile_makes_the_rollback_stop_without_changing_anything(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    workspace: Callable[[], Workspace],
    project: Path,
) -> None:
    # Given two deploys, and Lambda answering the alias switch as AWS does when the alias's
    # RevisionId changed since it was read (moto ignores RevisionId, so this one answer is
    # injected at the HTTP layer; every other call reaches the server)
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    pin_before = project.read_text()
    lam = dev.clients("lambda")

    def precondition_failed(request: Any, **_: Any) -> AWSResponse:
        body = b'{"Type": "User", "message": "The Revision Id provided does not match"}'
        headers = {"x-amzn-ErrorType": "PreconditionFailedException"}
        return AWSResponse(request.url, 412, headers, _Raw(body))  # type: ignore[arg-type]

    lam.meta.events.register("before-send.lambda.UpdateAlias", precondition_failed)

    # When rolling back, Then it refuses as a concurrent change and moves nothing
    with pytest.raises(ConcurrentRollback, match="changed while this rollback ran"):
        rollback_live(
            workspace(), env="dev", reason="x", clients=Clients(overrides={"lambda": lam})
        )
    assert dev.live()["FunctionVersion"] == "3"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 2
    assert project.read_text() == pin_before


def test_a_promotion_winning_the_race_makes_sds_rollback_exit_3_with_live_put_back(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two deploys (live on Lambda version 3, model 2), and model 3 registered
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    three = dev.register("three")
    pin_before = project.read_text()

    # And another operator promoting model 3 between the rollback's read of the registry alias
    # and its compare-and-swap (after `live` was switched)
    real_move = Registry.move_alias
    raced: list[str] = []

    def racing_move(self: Registry, alias: str, version: int, **kwargs: Any) -> Any:
        if kwargs.get("kind") == "rolled_back" and not raced:
            raced.append(alias)
            current = self.get_alias(alias)
            real_move(
                self,
                alias,
                three.number,
                expected=current,
                kind="promoted",
                actor="other@ci",
                reason="meanwhile",
            )
        return real_move(self, alias, version, **kwargs)

    monkeypatch.setattr(Registry, "move_alias", racing_move)

    # When the operator rolls back through the CLI
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "incident", "--json")

    # Then it is refused with exit 3 (as the same loss locally), in one line and as JSON
    assert raced == ["dev"]
    assert result.code == 3, result.err
    assert "a promotion moved the registry alias while this rollback ran" in result.err
    error = result.json()["error"]
    assert (error["type"], error["exit_code"]) == ("ConcurrentRollback", 3)
    # And live is back where it was, the alias is the promoter's and the pin is untouched
    assert dev.live()["FunctionVersion"] == "3"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == three.number
    assert project.read_text() == pin_before


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data


def test_a_stop_that_codedeploy_reports_pending_is_waited_for_until_stopped() -> None:
    # Given CodeDeploy answering the stop with Pending, then reporting the deployment as still
    # in progress once and stopped after that (all stubbed: moto has no StopDeployment)
    codedeploy = boto3.client("codedeploy", region_name="us-east-1")
    with Stubber(codedeploy) as stub:
        stub.add_response(
            "list_deployments",
            {"deployments": ["d-1"]},
            {
                "applicationName": "app",
                "deploymentGroupName": "group",
                "includeOnlyStatuses": ["Created", "Queued", "InProgress", "Baking", "Ready"],
            },
        )
        stub.add_response(
            "stop_deployment",
            {"status": "Pending"},
            {"deploymentId": "d-1", "autoRollbackEnabled": False},
        )
        for status in ("InProgress", "Stopped"):
            stub.add_response(
                "get_deployment", {"deploymentInfo": {"status": status}}, {"deploymentId": "d-1"}
            )
        # When stopping the group's deployments
        stopped = stop_deployments(codedeploy, application="app", group="group", poll_s=0.01)
        # Then it returned only once CodeDeploy said Stopped
        stub.assert_no_pending_responses()
    assert stopped == ["d-1"]


def test_a_tampered_target_is_refused_and_live_is_put_back(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given model 1's ONNX bytes changed in the registry after it was deployed
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    pin_before = project.read_text()
    dev.clients("s3").put_object(
        Bucket=dev.bucket, Key="models/fraud/versions/1/model.onnx", Body=b"tampered"
    )

    # When rolling back to it
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x")

    # Then the sha256 check refuses it, live is back where it was and nothing else moved
    assert result.code == 1
    assert "does not match its manifest" in result.err and "live is back" in result.err
    assert dev.live()["FunctionVersion"] == "3"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 2
    assert project.read_text() == pin_before


def test_an_interrupted_rollback_names_the_command_that_finishes_it_and_the_trail_completes(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two deploys, and S3 refusing the audit event of the next alias move (after the alias
    # itself was written): 403 is not retried, like a policy that forgot the events prefix
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    refuse = [True]

    def no_events(request: Any, **_: Any) -> AWSResponse | None:
        if refuse[0] and "/models/fraud/events/" in request.url:
            return AWSResponse(
                request.url, 403, {}, _Raw(b"<Error><Code>AccessDenied</Code></Error>")
            )  # type: ignore[arg-type]
        return None

    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "s3":
            made.meta.events.register("before-send.s3.PutObject", no_events)
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)

    # When a rollback is interrupted between the alias move and its audit event
    first = cli("--aws", "rollback", "--env", "dev", "--reason", "alarms")

    # Then it says it may have landed and which command finishes it safely
    assert first.code == 1
    assert "finish it with: sds --aws rollback --env dev --to 1 (safe to repeat)" in first.err
    assert dev.live()["FunctionVersion"] == "2"

    # And running that command completes the trail without moving anything further
    refuse[0] = False
    second = cli("--aws", "rollback", "--env", "dev", "--to", "1", "--reason", "finish")
    assert second.code == 0, second.err
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 1
    (event,) = [e for e in dev.registry.events() if e["type"] == "rolled_back"]
    assert event["id"] == state.event_id and event["recovered"] is True
    assert event["reason"] == "alarms"


# The target's state: SnapStart versions that cannot serve (moto reports every version Active,
# so `LambdaStates` scripts what Lambda would say; every other call reaches the server) --------


@pytest.fixture
def states(monkeypatch: pytest.MonkeyPatch) -> LambdaStates:
    """Every Lambda client the CLI makes carries the scripted states; waits poll fast."""
    found = LambdaStates()
    monkeypatch.setattr(sds.kernel.sdk, "client", with_states(found, sds.kernel.sdk.client))
    monkeypatch.setattr(sds.kernel.activation, "POLL_S", 0.01)
    monkeypatch.setattr(sds.kernel.activation, "REPORT_S", 0.05)
    return found


def nothing_moved(dev: Deployed, project: Path, pin_before: str, states: LambdaStates) -> None:
    """live, the registry alias, the pin, the trail and the lease are as before the rollback."""
    assert dev.live()["FunctionVersion"] == "3"
    assert not dev.live().get("RoutingConfig", {}).get("AdditionalVersionWeights")
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 2
    assert project.read_text() == pin_before
    assert not [e for e in dev.registry.events() if e["type"] in ("rolled_back", "live_switched")]
    assert states.count("UpdateAlias") == 0
    lease_document = json.loads(dev.registry.store.get("models/fraud/aliases/dev.lease").data)
    assert lease_document["holder"] is None  # released: the next rollback need not wait


def test_an_active_target_costs_one_state_read_and_the_rollback_is_unchanged(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
) -> None:
    # Given two deploys (live on Lambda version 3) and version 2 Active, as Lambda reports it
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    states.calls.clear()

    # When rolling back
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "alarms")

    # Then one GetFunctionConfiguration of the target, no invocation, then the switch
    assert result.code == 0, result.err
    assert [c for c in states.calls if not c.startswith("GetFunctionConfiguration $")] == [
        "GetFunctionConfiguration 2",
        "UpdateAlias 2",
    ]
    # And nothing about it on the terminal: the output is what it always was
    assert result.err == ""
    assert "was Inactive" not in result.out and "Lambda version 3 -> 2" in result.out
    (event,) = [e for e in dev.registry.events() if e["type"] == "rolled_back"]
    assert (event["lambda_to_state"], event["activation_ms"]) == ("Active", 0.0)


def test_an_inactive_target_is_re_activated_and_waited_for_before_live_moves(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
    project: Path,
) -> None:
    # Given two deploys, and Lambda version 2 (model 1) Inactive: its SnapStart snapshot is
    # gone; an invocation is refused and starts its re-creation, which takes a few polls
    dev = deploy("dev")
    one, _ = deploy_two_models(dev, cli)
    states.script("2", snapstart.INACTIVE, snapstart.PENDING, snapstart.PENDING, snapstart.ACTIVE)
    states.calls.clear()

    # When rolling back
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "false positives")

    # Then the version was invoked once (with the API's health check), waited for, and only
    # then did live move
    assert result.code == 0, result.err
    target_calls = [c for c in states.calls if c.endswith(" 2")]
    assert target_calls[:2] == ["GetFunctionConfiguration 2", "Invoke 2"]
    assert target_calls[-2:] == ["GetFunctionConfiguration 2", "UpdateAlias 2"]
    assert states.count("Invoke") == 1
    assert snapstart.wake_payload(states.invoked[0])["path"] == "/health"
    assert dev.live()["FunctionVersion"] == "2"
    # And the step was visible on stderr, in Lambda's own words, and in the summary
    err = result.err.splitlines()
    assert err[0] == (
        "target Lambda version 2 is Inactive (Idle: The function version is inactive: its "
        "snapshot was deleted): re-activating, waiting up to 300 s ..."
    )
    assert any("Pending (Restoring: The function is being restored)" in line for line in err)
    assert err[-1].endswith("Active: target Lambda version 2 can serve")
    assert "  Lambda version 2 was Inactive: Active after 0 s, then switched" in result.out
    # And the trail records it; registry alias and pin moved as always
    (event,) = [e for e in dev.registry.events() if e["type"] == "rolled_back"]
    assert event["lambda_to_state"] == "Inactive" and event["activation_ms"] > 0
    assert read_pin(project, "dev") == {"version": 1, "sha256": one.sha256}


def test_an_inactive_target_under_json_waits_quietly_and_reports_it(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
) -> None:
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    states.script("2", snapstart.INACTIVE, snapstart.PENDING, snapstart.ACTIVE)
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x", "--json")
    assert result.code == 0, result.err
    assert result.err == ""  # nothing but the JSON document
    done = result.json()
    assert (done["lambda_to"], done["target_state"]) == ("2", "Inactive")
    assert done["activation_ms"] > 0


def test_a_failed_target_is_refused_with_exit_3_and_nothing_moves(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
    project: Path,
) -> None:
    # Given two deploys and Lambda version 2 Failed (its snapshot could not be created), with a
    # CodeDeploy deployment in flight that a rollback would stop
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    codedeploy = dev.clients("codedeploy")
    codedeploy.create_deployment(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "{}"}},
    )
    states.script("2", snapstart.FAILED)
    pin_before = project.read_text()
    states.calls.clear()

    # When rolling back
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "incident", "--json")

    # Then it is refused (exit 3), in one line naming Lambda's reason and what to do
    assert result.code == 3, result.err
    error = result.json()["error"]
    assert (error["type"], error["exit_code"]) == ("TargetNotServable", 3)
    assert error["message"].startswith(
        f"dev: target Lambda version 2 of {dev.function} (model version 1) is Failed "
        "(FunctionError: Init failed: ModuleNotFoundError: No module named 'x'): running its "
        "initialization code or creating its SnapStart snapshot failed, so it cannot serve; "
        "nothing was switched or moved. Roll back to another version (--to N)"
    )
    assert result.json()["state"] == "Failed"
    # And nothing was invoked, no deployment stopped, nothing moved, the lease released
    assert states.count("Invoke") == 0
    nothing_moved(dev, project, pin_before, states)
    in_flight = codedeploy.list_deployments(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        includeOnlyStatuses=["Created", "Queued", "InProgress"],
    )["deployments"]
    assert len(in_flight) == 1  # still there: the refusal came before any StopDeployment


def test_a_target_whose_re_creation_fails_is_refused(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
    project: Path,
) -> None:
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    states.script("2", snapstart.INACTIVE, snapstart.PENDING, snapstart.INACTIVE)
    pin_before = project.read_text()
    states.calls.clear()
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "incident")
    assert result.code == 3
    assert "went back to Inactive after" in result.err
    assert "Lambda could not re-create it, so it cannot serve" in result.err
    assert result.err.splitlines()[-1].startswith("sds: refused: dev: target Lambda version 2")
    nothing_moved(dev, project, pin_before, states)


def test_a_target_not_active_within_the_timeout_is_refused_and_says_how_to_wait_longer(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
    project: Path,
) -> None:
    # Given Lambda version 2 Inactive and re-created more slowly than the operator will wait
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    states.script("2", snapstart.INACTIVE, snapstart.PENDING)
    pin_before = project.read_text()
    states.calls.clear()

    # When rolling back with a short activation timeout
    result = cli(
        "--aws", "rollback", "--env", "dev", "--reason", "x", "--activation-timeout", "0.3"
    )

    # Then it is refused after that long, saying the state and how to go on
    assert result.code == 3
    last = result.err.splitlines()[-1]
    assert last.startswith("sds: refused: dev: target Lambda version 2 of ")
    assert "is still Pending after 0 s (Restoring: The function is being restored)" in last
    assert "run the same rollback again to keep waiting" in last
    assert "--activation-timeout SECONDS" in last
    assert states.count("Invoke") == 1  # the re-creation was started, and goes on
    nothing_moved(dev, project, pin_before, states)


def test_ctrl_c_while_waiting_for_the_target_leaves_everything_as_it_was(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    states: LambdaStates,
    project: Path,
) -> None:
    # Given Lambda version 2 Inactive, and the operator pressing Ctrl-C during the wait
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    states.script("2", snapstart.INACTIVE, snapstart.PENDING)
    pin_before = project.read_text()
    states.calls.clear()
    real_state = states._state
    reads: list[int] = []

    def interrupted(parsed: dict[str, Any], **kwargs: Any) -> None:
        real_state(parsed, **kwargs)
        if parsed.get("Version") == "2":
            reads.append(1)
            if len(reads) == 3:
                raise KeyboardInterrupt

    states._state = interrupted  # type: ignore[method-assign]

    # When rolling back
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x")

    # Then the command ends as interrupted (130), says what goes on, and nothing moved
    assert result.code == 130
    assert "interrupted while target Lambda version 2 was Pending" in result.err
    assert result.err.splitlines()[-1] == "sds: interrupted"
    nothing_moved(dev, project, pin_before, states)
