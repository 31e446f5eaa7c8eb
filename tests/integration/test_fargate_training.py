"""`sds train --on-fargate`: the ECS RunTask contract, progress while waiting, and the result.

moto's ECS records tasks but runs no containers, so the test plays the container: once the task
is started it registers a version the way `python -m training.train` would (with the run id the
CLI put in the task's command), then stops the task. One test runs the real entry point in a
separate process, with the task role's own credentials, as the container would.

Every environment's task registers where its promotion chain starts (dev): prod's and staging's
tasks train on their own data and register in dev's registry. Staging's and prod's isolated
networks lease their interface endpoints per run (`infra.network.endpoints: during_runs`): there
the CLI starts the training run's state machine, which moto cannot run, so
`tests.integration.training_runs` plays it (it starts the task as the deployed one would).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

import sds.kernel.sdk
from sds.kernel.signals import Terminated
from sds.ops.aws import AwsError, Clients
from sds.ops.fargate import TrainingRun, run_training
from sds.ops.promotion import OperationError
from sds.ops.workspace import Workspace
from tests.integration.deployed import ACTOR, ROOT, CliResult, Deployed, act_as, assume_role
from tests.integration.training_runs import PlayedStateMachine, publish_state_machine
from training.data import write_jsonl
from training.synthetic import generate_activity
from training.train import build_parser


def the_override(sent: list[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """The container's command and environment, as the CLI asked ECS to run them."""
    (override,) = sent[0]["overrides"]["containerOverrides"]
    return list(override["command"]), {e["name"]: e["value"] for e in override["environment"]}


def as_the_container_reads(command: list[str]) -> argparse.Namespace:
    """`command` as the container's entry point (`python -m training.train`) parses it."""
    return build_parser().parse_args(command)


def wait_for_the_task(deployed: Deployed) -> str:
    ecs = deployed.clients("ecs")
    cluster = deployed.extra["training-cluster"]
    deadline = time.monotonic() + 10
    while not (arns := ecs.list_tasks(cluster=cluster)["taskArns"]):
        assert time.monotonic() < deadline, "no task was started"
        time.sleep(0.05)
    return str(arns[0])


def the_log(deployed: Deployed, task: str) -> tuple[str, str]:
    """(log group, stream) of `task`'s container, as its task definition's awslogs options say."""
    ecs = deployed.clients("ecs")
    found = ecs.describe_task_definition(taskDefinition=deployed.extra["training-task-definition"])
    (container,) = found["taskDefinition"]["containerDefinitions"]
    options = container["logConfiguration"]["options"]
    stream = f"{options['awslogs-stream-prefix']}/{container['name']}/{task.rsplit('/', 1)[-1]}"
    return options["awslogs-group"], stream


def stopped_as(exit_code: int | None, container_reason: str | None = None) -> Callable[..., None]:
    """A DescribeTasks handler: the stopped task's container exited with `exit_code` (None: it
    never ran) for `container_reason`, as ECS reports it (moto's stopped container says 0)."""

    def handler(parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("tasks", []):
            if task.get("lastStatus") == "STOPPED":
                for container in task.get("containers", []):
                    container.pop("exitCode", None)
                    if exit_code is not None:
                        container["exitCode"] = exit_code
                    if container_reason is not None:
                        container["reason"] = container_reason

    return handler


def play_the_container(
    deployed: Deployed,
    sent: list[dict[str, Any]],
    *,
    registry: Deployed | None,
    register: bool,
    reason: str = "Essential container exited",
    log: list[str] | None = None,
) -> threading.Thread:
    """Play `deployed`'s task: register in `registry` (where the task definition says) a version
    whose manifest carries the run id from the command, as the entry point does; write `log`'s
    lines to its log stream, as the awslogs driver does."""

    def container() -> None:
        task = wait_for_the_task(deployed)
        time.sleep(0.3)  # let the CLI report the task as pending for a moment
        try:
            if register:
                assert registry is not None
                command, environment = the_override(sent)
                read = as_the_container_reads(command)
                assert read.registry == f"s3://{registry.bucket}"
                registry.registry.register(
                    {"model.onnx": b"trained on fargate"},
                    {"metrics": {"roc_auc": 0.9}, "run_id": read.run_id},
                    actor="the task's role",
                    reason=environment.get("SDS_ACTOR", ""),
                )
            if log:
                logs = deployed.clients("logs")
                group, stream = the_log(deployed, task)
                logs.create_log_stream(logGroupName=group, logStreamName=stream)
                now = int(time.time() * 1000)
                logs.put_log_events(
                    logGroupName=group,
                    logStreamName=stream,
                    logEvents=[{"timestamp": now, "message": line} for line in log],
                )
        finally:  # a container that cannot read its command still stops (the CLI then says so)
            deployed.clients("ecs").stop_task(
                cluster=deployed.extra["training-cluster"],
                task=task,
                reason=reason,
            )

    thread = threading.Thread(target=container, daemon=True)
    thread.start()
    return thread


def stopping_any_task(deployed: Deployed) -> Callable[[], None]:
    """Stop every task `deployed`'s cluster runs from now on (a run the test expects refused
    then ends instead of waiting for it); call the function returned to stop watching."""
    ecs = deployed.clients("ecs")
    cluster = deployed.extra["training-cluster"]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            for task in ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING")["taskArns"]:
                ecs.stop_task(cluster=cluster, task=task, reason="stopped by the test")

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()

    return stop


def start(
    workspace: Callable[[], Workspace],
    deployed: Deployed,
    *,
    events: dict[str, Callable[..., None]] | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[str], Callable[[], TrainingRun]]:
    """The run as the CLI starts it, on one ECS client: its RunTask parameters are recorded, and
    `events` (botocore event name -> handler) are registered on it."""
    ecs = deployed.clients("ecs")
    for name, handler in (events or {}).items():
        ecs.meta.events.register(name, handler)
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


def watch_run_task(
    monkeypatch: pytest.MonkeyPatch, runs: Deployed | None = None, **played: Any
) -> tuple[list[dict[str, Any]], PlayedStateMachine | None]:
    """The parameters of every RunTask sent (the CLI makes its own clients); with `runs`, the
    environment whose training run state machine is played (its RunTask is recorded too)."""
    sent: list[dict[str, Any]] = []
    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "ecs":
            made.meta.events.register(
                "provide-client-params.ecs.RunTask", lambda params, **_: sent.append(dict(params))
            )
        return made

    machine = None
    if runs is not None:
        publish_state_machine(runs)
        machine = PlayedStateMachine(runs, watched("ecs"), **played)

    def client(service: str) -> Any:
        if service == "stepfunctions" and machine is not None:
            return machine
        return watched(service)

    monkeypatch.setattr(sds.kernel.sdk, "client", client)
    return sent, machine


def test_on_fargate_runs_the_task_from_ssm_waits_with_progress_and_reports_the_version(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given dev's training stack (cluster, task definition, public subnets, security group)
    dev = deploy("dev", training=True)
    sent, lines, run = start(workspace, dev)
    container = play_the_container(dev, sent, registry=dev, register=True)

    # When training on Fargate
    result = run()
    container.join()

    # Then RunTask got everything from SSM, with the task's own command plus reason and run id
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
    command = override["command"]
    assert command[:2] == ["--registry", f"s3://{dev.bucket}"]
    read = as_the_container_reads(command)
    assert (read.reason, read.data) == ("weekly", f"s3://{dev.bucket}/training-data/")
    # And the task is told who started it, as an annotation: the caller's identity (STS) and
    # what the caller declared ($SDS_ACTOR)
    caller = dev.clients("sts").get_caller_identity()["Arn"]
    assert {"name": "SDS_ACTOR", "value": f"{caller} ({ACTOR})"} in override["environment"]
    # And it reported progress until the task stopped, and the version of this run
    assert any("started training task" in line for line in lines)
    assert any(line.endswith("stopped") for line in lines)
    assert result.version.number == 1 and result.version.manifest["run_id"] == read.run_id
    assert (result.env, result.registered_in, result.exit_code) == ("dev", "dev", 0)


@pytest.mark.parametrize("reason", ["-CHG-4711", "weekly retrain: café ✓ — après l'incident"])
def test_model_parameters_and_a_reason_of_any_shape_reach_the_container_as_given(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    reason: str,
) -> None:
    # Given dev's training task
    dev = deploy("dev", training=True)
    sent, _ = watch_run_task(monkeypatch)
    container = play_the_container(dev, sent, registry=dev, register=True)

    # When training on Fargate with model parameters, and a reason that starts with a dash or
    # holds spaces and non-ASCII letters
    result = cli(
        "train", "--env", "dev", "--on-fargate", "--max-iter", "300", "--negative-rate", "0.5",
        f"--reason={reason}",
    )  # fmt: skip
    container.join()

    # Then the container reads each of them as given, and the others at their defaults
    assert result.code == 0, result.err
    command, _ = the_override(sent)
    read = as_the_container_reads(command)
    assert (read.max_iter, read.negative_rate, read.reason) == (300, 0.5, reason)
    assert read.learning_rate is None and read.data == f"s3://{dev.bucket}/training-data/"


def test_a_task_that_trains_from_capture_refuses_data_and_a_historys_parameters(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given dev's task deployed to train from capture (infra.training.source: capture)
    dev = deploy("dev", training=True)
    ecs = dev.clients("ecs")
    deployed = ecs.describe_task_definition(taskDefinition=dev.extra["training-task-definition"])
    (container,) = deployed["taskDefinition"]["containerDefinitions"]
    container["command"] = [
        *container["command"][:4],
        *("--from-capture", "--captures", f"s3://{dev.bucket}/captures/"),
        *("--labels", f"s3://{dev.bucket}/labels/", "--capture-env", "dev"),
    ]
    capture = ecs.register_task_definition(
        family="sds-dev-train-capture",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="2048",
        memory="8192",
        containerDefinitions=[container],
    )["taskDefinition"]["taskDefinitionArn"]
    dev.clients("ssm").put_parameter(
        Name="/sds/dev/training-task-definition", Value=capture, Type="String", Overwrite=True
    )
    sent, _ = watch_run_task(monkeypatch)
    stop_watching = stopping_any_task(dev)

    # When running it with a history and a history's sampling
    result = cli(
        "train", "--env", "dev", "--on-fargate", "--data", "s3://elsewhere/history/",
        "--negative-rate", "0.5",
    )  # fmt: skip
    stop_watching()

    # Then both are refused, naming them and why, and no task started
    assert result.code == 2, result.err
    assert (
        "sds: error: --data, --negative-rate: dev's training task trains from capture "
        "(infra.training.source: capture), not on a history" in result.err
    )
    assert sent == []


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        (
            "training-cluster",
            "sds-dev-training-gone",
            "starting dev's training task in cluster sds-dev-training-gone (from "
            "/sds/dev/training-cluster, deployed by 'dev/Training'): RunTask: "
            "ClusterNotFoundException: ",
        ),
        (
            "training-task-definition",
            "arn:aws:ecs:us-east-1:123456789012:task-definition/sds-dev-train-gone:3",
            "reading dev's training task definition arn:aws:ecs:us-east-1:123456789012:"
            "task-definition/sds-dev-train-gone:3 (from /sds/dev/training-task-definition, "
            "deployed by 'dev/Training'): DescribeTaskDefinition: ",
        ),
        (
            "training-subnets",
            ",",
            "SSM parameter /sds/dev/training-subnets names no subnet: redeploy dev's training "
            "network (cdk deploy 'dev/Training')",
        ),
    ],
)
def test_a_task_that_cannot_start_says_what_is_missing_where_it_was_found_and_what_deploys_it(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    value: str,
    said: str,
) -> None:
    # Given dev's training stack, one of whose discovery parameters names nothing usable
    dev = deploy("dev", training=True)
    dev.clients("ssm").put_parameter(
        Name=f"/sds/dev/{key}", Value=value, Type="String", Overwrite=True
    )
    sent, _ = watch_run_task(monkeypatch)

    # When training on Fargate
    result = cli("train", "--env", "dev", "--on-fargate", "--reason", "weekly")

    # Then the error names it, the parameter it came from and the stack that deploys it
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith(f"sds: error: {said}"), line
    assert len(sent) == (1 if key == "training-cluster" else 0)  # ECS refused the one sent
    assert dev.clients("ecs").list_tasks(cluster=dev.extra["training-cluster"])["taskArns"] == []


def test_a_version_another_run_registered_meanwhile_is_not_reported_as_this_one(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given a task that registers nothing, while someone else registers a version in dev
    dev = deploy("dev", training=True)
    sent, _lines, run = start(workspace, dev)
    container = play_the_container(dev, sent, registry=dev, register=False)
    dev.register("someone else's")

    # When the task stops, Then the command says it registered nothing
    with pytest.raises(OperationError, match="registered no version in dev's registry"):
        run()
    container.join()


def test_a_task_stopped_from_outside_says_why_it_registered_nothing(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given a task someone stops (ECS StopTask) before it registers anything, its exit code 0
    dev = deploy("dev", training=True)
    sent, _lines, run = start(workspace, dev)
    container = play_the_container(
        dev, sent, registry=dev, register=False, reason="Task stopped by alice: wrong data"
    )

    # When the task stops, Then the error says it registered nothing, and ECS's reason
    with pytest.raises(OperationError) as raised:
        run()
    container.join()
    assert "registered no version in dev's registry" in str(raised.value)
    assert str(raised.value).endswith("; ECS says: Task stopped by alice: wrong data")


def test_a_task_stopped_by_sigterm_says_so_and_that_nothing_is_half_written(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given a task stopped (ECS StopTask) while it trains: the entry point exits 143, as
    # `python -m training.train` does on SIGTERM (moto's stopped container reports 0: set it)
    def exited_143(parsed: dict[str, Any], **_: Any) -> None:
        for task in parsed.get("tasks", []):
            if task.get("lastStatus") == "STOPPED":
                for container in task.get("containers", []):
                    container["exitCode"] = 143

    dev = deploy("dev", training=True)
    sent, _lines, run = start(workspace, dev, events={"after-call.ecs.DescribeTasks": exited_143})
    container = play_the_container(
        dev, sent, registry=dev, register=False, reason="Task stopped by alice: wrong data"
    )

    # When the task stops, Then the error names SIGTERM and ECS's reason, and says the run can
    # simply start again (a version is registered only once complete)
    with pytest.raises(OperationError) as raised:
        run()
    container.join()
    assert str(raised.value) == (
        "training task stopped by SIGTERM (Task stopped by alice: wrong data) before it "
        "registered a version; nothing half-written is left: start it again when ready"
    )


def test_a_retrain_from_capture_with_nothing_captured_fails_in_the_containers_own_words(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace], tmp_path: Path
) -> None:
    # Given what the container says when it trains from capture and nothing was captured (the
    # real entry point, on empty folders)
    said = subprocess.run(
        [
            sys.executable, "-m", "training.train", "--from-capture",
            "--captures", str(tmp_path / "captures"), "--labels", str(tmp_path / "labels"),
            "--capture-env", "dev", "--registry", (tmp_path / "registry").as_uri(),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert said.returncode == 1, said.stderr
    last = said.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: {tmp_path / 'captures'}: no capture records of payments made from "
    )
    # And dev's task, which exits with it
    dev = deploy("dev", training=True)
    sent, _lines, run = start(
        workspace, dev, events={"after-call.ecs.DescribeTasks": stopped_as(said.returncode)}
    )
    container = play_the_container(
        dev,
        sent,
        registry=dev,
        register=False,
        reason="Essential container in task exited",
        log=said.stderr.splitlines(),
    )

    # When the task stops
    with pytest.raises(OperationError) as raised:
        run()
    container.join()

    # Then the error says it failed, how, what its log ends with, and where the log is
    task = wait_for_the_task(dev)
    group, stream = the_log(dev, task)
    assert str(raised.value) == (
        f"training task {task} failed (exit code 1; Essential container in task exited); its "
        f"log ends: {last} (log group {group}, stream {stream})"
    )


@pytest.mark.parametrize(
    ("exit_code", "container_reason", "register", "log", "expected"),
    [
        (
            137,
            "OutOfMemoryError: Container killed due to memory usage",
            False,
            ["[3/8] fitting HistGradientBoosting on 41000000 payments before 2026-05-01"],
            "training task {task} failed (exit code 137; OutOfMemoryError: Container killed due "
            "to memory usage; Essential container in task exited); its log ends: [3/8] fitting "
            "HistGradientBoosting on 41000000 payments before 2026-05-01 ({where})",
        ),
        (
            None,
            "CannotPullContainerError: pull image manifest has been retried 7 time(s)",
            False,
            None,
            "training task {task} stopped before its container ran (CannotPullContainerError: "
            "pull image manifest has been retried 7 time(s); Essential container in task "
            "exited); nothing was registered",
        ),
        (
            1,
            None,
            True,
            ["error: version 1 was registered in full (sha256 ...), then registering failed: ..."],
            "training task {task} failed (exit code 1; Essential container in task exited) after "
            "it registered version 1 in full in dev (sha256 {sha256}...): it is there to "
            "promote, not to train again; its log ends: error: version 1 was registered in full "
            "(sha256 ...), then registering failed: ... ({where})",
        ),
    ],
    ids=["out of memory", "never ran", "failed after registering"],
)
def test_a_failed_task_says_what_ecs_and_its_log_say_and_whether_its_version_is_complete(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    exit_code: int | None,
    container_reason: str | None,
    register: bool,
    log: list[str] | None,
    expected: str,
) -> None:
    # Given dev's task, whose container stops as ECS reports it
    dev = deploy("dev", training=True)
    handler = stopped_as(exit_code, container_reason)
    sent, _lines, run = start(workspace, dev, events={"after-call.ecs.DescribeTasks": handler})
    container = play_the_container(
        dev,
        sent,
        registry=dev,
        register=register,
        reason="Essential container in task exited",
        log=log,
    )

    # When the task stops, Then the error says so in one line
    with pytest.raises(OperationError) as raised:
        run()
    container.join()
    task = wait_for_the_task(dev)
    group, stream = the_log(dev, task)
    sha256 = dev.registry.get_version(1).sha256[:12] if register else ""
    where = f"log group {group}, stream {stream}"
    assert str(raised.value) == expected.format(task=task, sha256=sha256, where=where)


@pytest.mark.parametrize("kind", [KeyboardInterrupt, Terminated])
def test_ctrl_c_while_waiting_leaves_the_task_running_and_says_how_to_stop_it(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    kind: type[KeyboardInterrupt],
) -> None:
    # Given a training task on Fargate, and Ctrl-C (or SIGTERM's `Terminated`, which must stay
    # what it is: it exits 143) as soon as it is reported running
    dev = deploy("dev", training=True)
    ecs = dev.clients("ecs")
    cluster = dev.extra["training-cluster"]

    def say(line: str) -> None:
        if line.endswith(("pending", "running", "provisioning")):
            raise kind()

    # When the waiting is interrupted
    with pytest.raises(kind) as raised:
        run_training(
            workspace(),
            env="dev",
            reason="weekly",
            clients=Clients(overrides={"ecs": ecs}),
            say=say,
            poll_s=0.05,
        )

    # Then the interruption (of the same kind) says the task keeps running and the command that
    # stops it, in one line; and the task is still running
    (task,) = ecs.list_tasks(cluster=cluster)["taskArns"]
    assert str(raised.value) == (
        f"stopped waiting; the task keeps running: {task} "
        f"(stop it with: aws ecs stop-task --cluster {cluster} --task {task})"
    )
    (described,) = ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"]
    assert described["lastStatus"] != "STOPPED"


def interrupting(kind: type[KeyboardInterrupt]) -> Callable[..., None]:
    """A botocore event handler: Ctrl-C (or SIGTERM's `Terminated`) as the event fires."""

    def handler(**_: Any) -> None:
        raise kind()

    return handler


@pytest.mark.parametrize(
    ("event", "kind"),
    [("before-call", KeyboardInterrupt), ("after-call", Terminated)],
    ids=["before-ecs-started-it", "after-ecs-started-it"],
)
def test_ctrl_c_while_ecs_starts_the_task_says_it_may_have_started_and_how_to_find_it(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    event: str,
    kind: type[KeyboardInterrupt],
) -> None:
    # Given Ctrl-C (or SIGTERM) while RunTask is in flight: before ECS got it, or after ECS
    # started the task but before its answer was read
    dev = deploy("dev", training=True)
    sent, _lines, run = start(workspace, dev, events={f"{event}.ecs.RunTask": interrupting(kind)})

    # When the start is interrupted
    with pytest.raises(kind) as raised:
        run()

    # Then the interruption (of the same kind) says the task may have started, the command that
    # finds it (started by this run: its run id) and the one that stops it
    (params,) = sent
    by = params["startedBy"]
    cluster = dev.extra["training-cluster"]
    assert str(raised.value) == (
        "stopped before ECS answered RunTask; the training task may have started: find it with: "
        f"aws ecs list-tasks --cluster {cluster} --started-by {by} (stop it with: aws ecs "
        f"stop-task --cluster {cluster} --task <its ARN>)"
    )
    command, _environment = the_override(sent)
    assert by == f"sds-cli-{as_the_container_reads(command).run_id}"
    # And that command finds the task if ECS started it, and nothing if not
    found = dev.clients("ecs").list_tasks(cluster=cluster, startedBy=by)["taskArns"]
    assert len(found) == (1 if event == "after-call" else 0)


@pytest.mark.parametrize("kind", [KeyboardInterrupt, Terminated])
def test_ctrl_c_once_the_task_started_before_the_wait_names_it_and_how_to_stop_it(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    kind: type[KeyboardInterrupt],
) -> None:
    # Given Ctrl-C (or SIGTERM) the instant RunTask answered, before the waiting starts
    dev = deploy("dev", training=True)
    ecs = dev.clients("ecs")
    cluster = dev.extra["training-cluster"]

    def say(line: str) -> None:
        if line.startswith("started training task"):
            raise kind()

    # When the command is interrupted there
    with pytest.raises(kind) as raised:
        run_training(
            workspace(),
            env="dev",
            reason="weekly",
            clients=Clients(overrides={"ecs": ecs}),
            say=say,
            poll_s=0.05,
        )

    # Then it names the task, which keeps running, and the command that stops it
    (task,) = ecs.list_tasks(cluster=cluster)["taskArns"]
    assert str(raised.value) == (
        f"stopped waiting; the task keeps running: {task} "
        f"(stop it with: aws ecs stop-task --cluster {cluster} --task {task})"
    )


def test_ctrl_c_before_the_task_is_asked_for_says_no_task_was_started(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given Ctrl-C while the command reads the task definition, before RunTask is sent
    dev = deploy("dev", training=True)
    events = {"before-call.ecs.DescribeTaskDefinition": interrupting(KeyboardInterrupt)}
    sent, _lines, run = start(workspace, dev, events=events)

    # When the command is interrupted there
    with pytest.raises(KeyboardInterrupt) as raised:
        run()

    # Then it says no task was started (there is nothing to look for, nor to stop)
    assert str(raised.value) == "stopped before the training task was started; no task was started"
    assert sent == []
    assert dev.clients("ecs").list_tasks(cluster=dev.extra["training-cluster"])["taskArns"] == []


class _Refused:
    status_code = 400


def test_a_run_that_cannot_be_followed_says_the_task_keeps_running_and_how_to_stop_it(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given a training task on Fargate, and ECS throttling every DescribeTasks once it started
    # (after the SDK's retries)
    def throttled(**_: Any) -> tuple[Any, dict[str, Any]]:
        return _Refused(), {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}

    dev = deploy("dev", training=True)
    _sent, _lines, run = start(workspace, dev, events={"before-call.ecs.DescribeTasks": throttled})

    # When the command cannot follow it
    with pytest.raises(AwsError) as raised:
        run()

    # Then it says what AWS said, that the task keeps running, and the command that stops it
    # (told only "try again", the caller would start a second task)
    task = wait_for_the_task(dev)
    cluster = dev.extra["training-cluster"]
    assert str(raised.value) == (
        "could not follow the training task (AWS throttled the request (ThrottlingException) "
        f"after retries: try again shortly); the task keeps running: {task} (stop it with: aws "
        f"ecs stop-task --cluster {cluster} --task {task})"
    )
    (described,) = dev.clients("ecs").describe_tasks(cluster=cluster, tasks=[task])["tasks"]
    assert described["lastStatus"] != "STOPPED"


def test_a_task_still_running_when_the_wait_ends_says_how_to_stop_it(
    deploy: Callable[..., Deployed], workspace: Callable[[], Workspace]
) -> None:
    # Given a training task that outlasts the command's wait
    dev = deploy("dev", training=True)
    _sent, _lines, run = start(workspace, dev, timeout_s=0.3)

    # When the wait ends, Then the error says the task keeps running and how to stop it
    with pytest.raises(AwsError) as raised:
        run()
    task = wait_for_the_task(dev)
    cluster = dev.extra["training-cluster"]
    assert re.fullmatch(
        r"stopped waiting after 0 s, the training task still \w+; the task keeps running: "
        + re.escape(f"{task} (stop it with: aws ecs stop-task --cluster {cluster} --task {task})"),
        str(raised.value),
    ), str(raised.value)


def test_a_training_run_that_cannot_be_followed_says_it_keeps_going_and_how_to_stop_it(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose training run leases its endpoints, and a caller whose role may start
    # the run but not read its history
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    _sent, machine = watch_run_task(monkeypatch, runs=staging)
    assert machine is not None

    def denied(operation: str) -> Any:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}
        raise ClientError(error, "GetExecutionHistory")

    monkeypatch.setattr(machine, "get_paginator", denied)

    # When the command cannot follow it
    with pytest.raises(AwsError) as raised:
        run_training(workspace(), env="staging", reason="weekly", say=lambda _: None, poll_s=0.05)

    # Then it says what AWS said, that the run keeps going, and the command that stops it
    (execution,) = machine.started
    arn = (
        f"arn:aws:states:us-east-1:123456789012:execution:RunsStateMachine-test:{execution['name']}"
    )
    message = str(raised.value)
    assert message.startswith("could not follow staging's training run (access denied")
    assert message.endswith(
        f"; the training run keeps going: {arn} (stop it with: aws stepfunctions stop-execution "
        f"--execution-arn {arn})"
    )


def test_ctrl_c_while_the_run_leases_its_endpoints_says_how_to_stop_the_execution(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose training run leases its endpoints before its task starts, and Ctrl-C
    # while the CLI follows the lease
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    _sent, machine = watch_run_task(monkeypatch, runs=staging)

    def say(line: str) -> None:
        if "leasing the training network" in line:
            raise KeyboardInterrupt

    # When the following is interrupted
    with pytest.raises(KeyboardInterrupt) as raised:
        run_training(workspace(), env="staging", reason="weekly", say=say, poll_s=0.05)

    # Then it says the run keeps going, and the command that stops it
    assert machine is not None
    (execution,) = machine.started
    arn = (
        f"arn:aws:states:us-east-1:123456789012:execution:RunsStateMachine-test:{execution['name']}"
    )
    assert str(raised.value) == (
        f"stopped following; the training run keeps going: {arn} "
        f"(stop it with: aws stepfunctions stop-execution --execution-arn {arn})"
    )


def test_ctrl_c_while_step_functions_starts_the_run_says_it_may_have_started_and_how_to_check(
    deploy: Callable[..., Deployed],
    workspace: Callable[[], Workspace],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose training run leases its endpoints, and Ctrl-C once Step Functions
    # started the execution, before its answer was read
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    _sent, machine = watch_run_task(monkeypatch, runs=staging)
    assert machine is not None
    started = machine.start_execution

    def start_execution(**params: Any) -> dict[str, str]:
        started(**params)
        raise KeyboardInterrupt

    monkeypatch.setattr(machine, "start_execution", start_execution)

    # When the start is interrupted
    with pytest.raises(KeyboardInterrupt) as raised:
        run_training(workspace(), env="staging", reason="weekly", say=lambda _: None, poll_s=0.05)

    # Then it says the run may have started, and the commands that check and stop it: the
    # execution's own ARN (named after the run)
    (execution,) = machine.started
    arn = (
        f"arn:aws:states:us-east-1:123456789012:execution:RunsStateMachine-test:{execution['name']}"
    )
    assert str(raised.value) == (
        "stopped before Step Functions answered StartExecution; the training run may have "
        f"started: check with: aws stepfunctions describe-execution --execution-arn {arn} "
        f"(stop it with: aws stepfunctions stop-execution --execution-arn {arn})"
    )
    assert machine.describe_execution(executionArn=arn)["status"] == "RUNNING"


def test_the_cli_trains_staging_on_its_isolated_network_and_registers_in_dev(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose training network is isolated with its endpoints leased per run, and
    # whose task registers in dev
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    sent, machine = watch_run_task(monkeypatch, runs=staging)
    container = play_the_container(staging, sent, registry=dev, register=True)

    # When training on Fargate through the CLI
    result = cli("train", "--env", "staging", "--on-fargate", "--reason", "weekly")
    container.join()

    # Then the CLI started one execution of the training run's state machine, named after the
    # run id, with the task's command (reason and run id added) and who started it
    assert result.code == 0, result.err
    assert machine is not None
    (execution,) = machine.started
    command = execution["input"]["command"]
    assert command[:2] == ["--registry", f"s3://{dev.bucket}"]
    read = as_the_container_reads(command)
    assert (read.reason, read.run_id) == ("weekly", execution["name"])
    caller = dev.clients("sts").get_caller_identity()["Arn"]
    assert execution["input"]["actor"] == f"{caller} ({ACTOR})"
    # And the CLI started no task itself: the one task is the state machine's
    (run_task,) = sent
    assert run_task["overrides"]["containerOverrides"][0]["command"] == command
    # And it said what the run waits for before the task starts
    assert "leasing the training network's interface endpoints" in result.err
    assert "waiting for the endpoints to be available" in result.err
    # And the task ran without a public IP, and the CLI names where the version went
    assert sent[0]["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
    assert (
        "registered fraud version 1 in dev (versions are allocated there) on staging's Fargate "
        "task" in result.out
    )
    assert "running" in result.err and "stopped" in result.err
    assert "it registers in dev" in result.err
    # And the version is in dev's registry; staging's holds none (it receives them by promotion)
    assert dev.registry.list_versions() == [1]
    assert staging.registry.list_versions() == []


def test_prods_task_trains_on_prods_data_and_registers_in_dev_as_its_own_role(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    aws: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Given prod's training data in prod's bucket, and prod's task registering in dev
    dev = deploy("dev")
    prod = deploy("prod", training=True, registers_in=dev)
    history = write_jsonl(generate_activity(3000, seed=5), tmp_path / "history.jsonl")
    prod.clients("s3").upload_file(str(history), prod.bucket, "training-data/history.jsonl")
    # And alice, who starts it with her own role, saying who she is in SDS_ACTOR
    act_as(monkeypatch, assume_role(aws, "Deployer", "alice"))
    monkeypatch.setenv("SDS_ACTOR", "alice, CHG-4711")
    sent, _ = watch_run_task(monkeypatch, runs=prod)
    task_identity: dict[str, str] = {}

    def container() -> None:
        # The real entry point, in its own process, with the task role's credentials (ECS names
        # the session after the task here; any name would do)
        task = wait_for_the_task(prod)
        task_id = task.rsplit("/", 1)[-1]
        credentials = assume_role(aws, "TrainingTaskRole", task_id)
        task_identity["arn"] = f"arn:aws:sts::123456789012:assumed-role/TrainingTaskRole/{task_id}"
        command, environment = the_override(sent)
        done = subprocess.run(
            # A quick model: this is about where it registers and who it says registered it
            [sys.executable, "-m", "training.train", *command, "--max-iter", "10"],
            cwd=ROOT,
            env={**os.environ, **credentials, **environment},
            capture_output=True,
            text=True,
            timeout=300,
        )
        task_identity["log"] = done.stdout + done.stderr
        prod.clients("ecs").stop_task(
            cluster=prod.extra["training-cluster"], task=task, reason="Essential container exited"
        )

    thread = threading.Thread(target=container, daemon=True)
    thread.start()

    # When alice runs prod's training task
    result = cli("train", "--env", "prod", "--on-fargate", "--reason", "on prod data", "--json")
    thread.join()

    # Then the version is registered in dev, trained on prod's data
    assert result.code == 0, (result.err, task_identity.get("log"))
    report = result.json()
    assert (report["env"], report["registered_in"], report["version"]) == ("prod", "dev", 1)
    assert prod.registry.list_versions() == []
    manifest = dev.registry.get_version(1).manifest
    assert manifest["data"]["uri"] == f"s3://{prod.bucket}/training-data/"
    # And who registered it is the task's own role (from STS), not a name it was handed
    assert manifest["created_by"] == task_identity["arn"]
    # And who started it, with what she declared, is kept as an annotation
    started_by = "arn:aws:sts::123456789012:assumed-role/Deployer/alice (alice, CHG-4711)"
    assert manifest["declared_by"] == started_by
    (event,) = [e for e in dev.registry.events() if e["type"] == "registered"]
    assert (event["by"], event["declared_actor"]) == (task_identity["arn"], started_by)
    assert event["reason"] == "on prod data"


def test_a_lease_that_fails_is_reported_and_no_task_is_started(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose endpoints never became available within the state machine's bound
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    sent, _ = watch_run_task(
        monkeypatch,
        runs=staging,
        fails_before_task=(
            "EndpointsPending",
            "not available yet: com.amazonaws.us-east-1.logs pending",
        ),
    )

    # When training on Fargate through the CLI
    result = cli("train", "--env", "staging", "--on-fargate", "--reason", "weekly")

    # Then it fails naming the lease, the endpoint and the execution, and no task ever started
    assert result.code == 1
    assert "could not lease staging's training network endpoints (EndpointsPending)" in result.err
    assert "com.amazonaws.us-east-1.logs pending; no task was started" in result.err
    assert "execution:RunsStateMachine-test:" in result.err
    assert sent == []
    assert (
        staging.clients("ecs").list_tasks(cluster=staging.extra["training-cluster"])["taskArns"]
        == []
    )
    assert dev.registry.list_versions() == []


def test_a_run_that_fails_before_its_task_for_another_reason_says_so(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given staging, whose state machine leased the endpoints but could not start the task
    dev = deploy("dev")
    staging = deploy("staging", training=True, registers_in=dev)
    watch_run_task(
        monkeypatch,
        runs=staging,
        fails_before_task=("ECS.AmazonECSException", "No Container Instances were found"),
    )

    # When training on Fargate, Then the error is the state machine's, not a lease failure
    result = cli("train", "--env", "staging", "--on-fargate")
    assert result.code == 1
    assert (
        "staging's training run failed before its task started (ECS.AmazonECSException): "
        "No Container Instances were found" in result.err
    )
    assert "could not lease" not in result.err
