"""`sds train --on-fargate`: the ECS RunTask contract, progress while waiting, and the result.

moto's ECS records tasks but runs no containers, so the test plays the container: once the task
is started it registers a version the way `python -m training.train` would (as the actor the CLI
passed in the task's environment), then stops the task.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from deployed import ACTOR, CliResult, Deployed

import sds.kernel.sdk
from sds.ops.aws import Clients
from sds.ops.fargate import TrainingRun, run_training
from sds.ops.promotion import OperationError
from sds.ops.workspace import Workspace


def play_the_container(
    deployed: Deployed, sent: list[dict[str, Any]], *, register: bool
) -> threading.Thread:
    ecs = deployed.clients("ecs")
    cluster = deployed.extra["training-cluster"]

    def container() -> None:
        deadline = time.monotonic() + 10
        while not (arns := ecs.list_tasks(cluster=cluster)["taskArns"]):
            assert time.monotonic() < deadline, "no task was started"
            time.sleep(0.05)
        time.sleep(0.3)  # let the CLI report the task as pending for a moment
        if register:
            (override,) = sent[0]["overrides"]["containerOverrides"]
            actor = {e["name"]: e["value"] for e in override["environment"]}["SDS_ACTOR"]
            deployed.registry.register(
                {"model.onnx": b"trained on fargate"},
                {"metrics": {"roc_auc": 0.9}},
                actor=actor,
                reason="weekly",
            )
        ecs.stop_task(cluster=cluster, task=arns[0], reason="Essential container exited")

    thread = threading.Thread(target=container, daemon=True)
    thread.start()
    return thread


def start(
    workspace: Callable[[], Workspace], deployed: Deployed, **kwargs: Any
) -> tuple[list[dict[str, Any]], list[str], Callable[[], TrainingRun]]:
    ecs = deployed.clients("ecs")
    sent: list[dict[str, Any]] = []
    ecs.meta.events.register(
        "provide-client-params.ecs.RunTask", lambda params, **_: sent.append(dict(params))
    )
    lines: list[str] = []

    def run() -> TrainingRun:
        return run_training(
            workspace(),
            env=deployed.env,
            reason="weekly",
            clients=Clients(overrides={"ecs": ecs}),
            say=lines.append,
            poll_s=0.05,
            **kwargs,
        )

    return sent, lines, run


def test_on_fargate_runs_the_task_from_ssm_waits_with_progress_and_reports_the_version(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given dev's training stack (cluster, task definition, public subnets, security group)
    dev = deploy("dev", training=True)
    sent, lines, run = start(workspace, dev)
    container = play_the_container(dev, sent, register=True)

    # When training on Fargate
    result = run()
    container.join()

    # Then RunTask got everything from SSM, with the task's own command plus the reason
    (params,) = sent
    assert params["cluster"] == dev.extra["training-cluster"]
    assert params["taskDefinition"] == dev.extra["training-task-definition"]
    assert params["launchType"] == "FARGATE"
    network = params["networkConfiguration"]["awsvpcConfiguration"]
    assert network["subnets"] == dev.extra["training-subnets"].split(",")
    assert network["securityGroups"] == [dev.extra["training-security-group"]]
    assert network["assignPublicIp"] == "ENABLED"  # dev trains in public subnets (no NAT)
    (override,) = params["overrides"]["containerOverrides"]
    assert override["name"] == "train"
    assert override["command"][:2] == ["--registry", f"s3://{dev.bucket}"]
    assert override["command"][-2:] == ["--reason", "weekly"]
    assert {"name": "SDS_ACTOR", "value": ACTOR} in override["environment"]
    # And it reported progress until the task stopped, and the version the task registered
    assert any("started training task" in line for line in lines)
    assert any(line.endswith("stopped") for line in lines)
    assert result.version.number == 1 and result.version.manifest["created_by"] == ACTOR
    assert result.exit_code == 0


def test_a_task_that_registers_nothing_is_an_error(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    dev = deploy("dev", training=True)
    sent, _lines, run = start(workspace, dev)
    container = play_the_container(dev, sent, register=False)
    with pytest.raises(OperationError, match="registered no version"):
        run()
    container.join()


def test_the_cli_trains_on_fargate_without_a_public_ip_in_isolated_environments(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose training network is isolated (infra.network.isolated: private subnets)
    staging = deploy("staging", training=True)
    sent: list[dict[str, Any]] = []
    # The CLI makes its own clients: watch RunTask on the ECS client it makes
    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "ecs":
            made.meta.events.register(
                "provide-client-params.ecs.RunTask", lambda params, **_: sent.append(dict(params))
            )
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)
    container = play_the_container(staging, sent, register=True)

    # When training on Fargate through the CLI
    result = cli("train", "--env", "staging", "--on-fargate", "--reason", "weekly")
    container.join()

    # Then the task ran without a public IP and the CLI names the registered version
    assert result.code == 0, result.err
    assert sent[0]["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
    assert "registered fraud version 1 in staging on Fargate" in result.out
    assert "running" in result.err and "stopped" in result.err
