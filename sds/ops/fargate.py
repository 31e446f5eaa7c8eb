"""`sds train --on-fargate`: run the environment's training task on ECS Fargate and wait for it.

Cluster, task definition, subnets and security group come from SSM (`/sds/<env>/training-*`);
the container runs the same `python -m training.train` as `sds train --local`, with the task
definition's own command (registry, model, data) plus the data location and model parameters the
caller gave, `--reason` and a fresh `--run-id` (`task_command`). The
task definition's registry is where the environment's promotion chain starts (versions are
allocated there only), so prod's task trains on prod's data and registers in dev. The task
records its own identity (its role and task ARN: `training.train.task_actor`) as the actor, and
`SDS_ACTOR`, set to whoever started it (their identity, and what they declared), as an
annotation. While it runs, every
status change is reported; when it stops, the command reports the version it registered: the
one whose manifest carries the run id. A task that failed is reported with ECS's reasons and the
last line of its log stream (a version it completed first is named: it is not to be trained
again); a wait that ends, or cannot go on, says the task keeps running and how to stop it.
Ctrl-C (or SIGTERM) stops the command, never the task, and says what there is to stop
(`Launch`): the task and the command that stops it once ECS named it; while RunTask (or the
training run's StartExecution) has not answered, that a task (or run) may have started and the
command that finds it (ECS records the task as started by `sds-cli-<run id>`, the execution is
named after the run); before, that none was.

Where the isolated network's interface endpoints are leased per run (`infra.network.endpoints:
during_runs`), the command does not start the task itself: it starts an execution of the
training run's state machine (`/sds/<env>/training-state-machine`), named after the run id, with
the same command and actor as its input; the state machine leases the endpoints, starts the task
and releases them. The command finds the task in the execution's history and follows it as
before; a run that fails before its task starts (a lease that failed or timed out) is reported
with the state machine's error.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sds.kernel.aws.errors import explain
from sds.kernel.discovery import TRAINING_STACK, parameter_name
from sds.kernel.errors import UsageError
from sds.kernel.registry import Version
from sds.kernel.signals import Terminated, reworded
from sds.ops.aws import (
    AwsError,
    Clients,
    NotDeployed,
    error_code,
    failure,
    start_execution,
)
from sds.ops.promotion import OperationError, registering_environment
from sds.ops.workspace import Workspace
from training.params import HISTORY_ONLY, flag, parameter_arguments

# The training entry point's exit status when SIGTERM stopped it (sds.kernel.signals).
STOPPED_BY_SIGTERM = Terminated.exit_code

Say = Callable[[str], None]

# How long the CLI waits for a run's state machine to start the task: its lease waits at most
# 10 minutes for the endpoints (stacks/components/training_runs.py), plus the calls around it.
LEASE_TIMEOUT_S = 15 * 60
# What the state machine's steps before the task mean to the person waiting.
_STEPS = {
    "LeaseEndpoints": "leasing the training network's interface endpoints",
    "WaitForEndpoints": "waiting for the endpoints to be available (typically a minute or two)",
}
_LEASE_ERRORS = ("EndpointsPending", "LeaseFailed", "LeaseSettingsError")


@dataclass(frozen=True)
class TrainingRun:
    env: str
    registered_in: str
    task_arn: str
    exit_code: int | None
    version: Version
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "registered_in": self.registered_in,
            "task_arn": self.task_arn,
            "exit_code": self.exit_code,
            "version": self.version.number,
            "sha256": self.version.sha256,
            "metrics": dict(self.version.metrics),
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True)
class TaskLog:
    """Where the training container logs: its task definition's `awslogs` group, and the stream
    each task gets in it (`<prefix>/<container>/<task id>`)."""

    group: str
    stream_prefix: str
    container: str

    def stream(self, task_arn: str) -> str:
        return f"{self.stream_prefix}/{self.container}/{task_arn.rsplit('/', 1)[-1]}"

    @classmethod
    def of(cls, container: dict[str, Any]) -> TaskLog | None:
        """The container definition's log, if it goes to CloudWatch Logs under a stream prefix
        (without one, the stream is named after an id only ECS knows)."""
        config = container.get("logConfiguration") or {}
        options = config.get("options") or {}
        group, prefix = options.get("awslogs-group"), options.get("awslogs-stream-prefix")
        if config.get("logDriver") != "awslogs" or not group or not prefix:
            return None
        return cls(group=str(group), stream_prefix=str(prefix), container=str(container["name"]))


@dataclass(frozen=True)
class StartedTask:
    cluster: str
    arn: str
    log: TaskLog | None


@dataclass
class Launch:
    """How far the command got in starting the run: what an interruption says about it. An
    interruption stops the command, not the task; the person needs to know whether there is a
    task (or a training run) to stop, and how, without waiting for an answer AWS never gave."""

    asked: str = ""  # set while a start is asked for and not answered: how to find what started
    execution: str = ""  # the training run's execution (endpoints leased per run), once started
    task: tuple[str, str] | None = None  # (cluster, task ARN), once ECS named the task

    def interrupted(self) -> str:
        """The line printed after `sds: interrupted` (or `stopped by SIGTERM`)."""
        if self.task is not None:
            return f"stopped waiting; {_task_keeps_running(*self.task)}"
        if self.execution:
            return f"stopped following; {_run_keeps_going(self.execution)}"
        if self.asked:
            return self.asked
        return "stopped before the training task was started; no task was started"


def start_training_task(
    ws: Workspace,
    *,
    env: str,
    clients: Clients,
    run_id: str,
    launch: Launch,
    reason: str = "",
    data: str | None = None,
    parameters: Mapping[str, int | float] | None = None,
    say: Say = print,
    poll_s: float = 5.0,
    lease_timeout_s: float = LEASE_TIMEOUT_S,
) -> StartedTask:
    """Start the task (its version's manifest will carry `run_id`): its cluster, ARN and log.
    `launch` is kept up to date with what has been started, for an interruption to say.

    Where the endpoints are leased per run, through the training run's state machine: this
    returns once the execution has started the task (after the lease, typically a minute or
    two)."""
    discovery = ws.discovery
    cluster = discovery.get(env, "training-cluster")
    task_definition = discovery.get(env, "training-task-definition")
    ecs = clients["ecs"]
    try:
        definition = ecs.describe_task_definition(taskDefinition=task_definition)
    except Exception as exc:
        raise failure(
            exc,
            doing=f"reading {env}'s training task definition {task_definition} (from "
            f"{parameter_name(env, 'training-task-definition')}, deployed by "
            f"'{env}/{TRAINING_STACK}')",
        ) from exc
    container = definition["taskDefinition"]["containerDefinitions"][0]
    log = TaskLog.of(container)
    command = task_command(
        list(container.get("command", [])),
        env=env,
        run_id=run_id,
        reason=reason,
        data=data,
        parameters=parameters,
    )
    network = ws.config.env(env).infra.network
    if network.leased_endpoints:
        task_arn = start_training_run(
            clients,
            env=env,
            machine=discovery.get(env, "training-state-machine"),
            run_id=run_id,
            command=command,
            actor=started_by(ws),
            launch=launch,
            say=say,
            poll_s=poll_s,
            timeout_s=lease_timeout_s,
        )
        launch.task = (cluster, task_arn)
        return StartedTask(cluster, task_arn, log)
    subnets = [s for s in discovery.get(env, "training-subnets").split(",") if s]
    if not subnets:
        raise NotDeployed(
            f"SSM parameter {parameter_name(env, 'training-subnets')} names no subnet: "
            f"redeploy {env}'s training network (cdk deploy '{env}/{TRAINING_STACK}')"
        )
    security_group = discovery.get(env, "training-security-group")
    isolated = network.isolated
    # Who started the task, as ECS records it: this run, so that the task can be found by it.
    by = f"sds-cli-{run_id}"
    launch.asked = (
        "stopped before ECS answered RunTask; the training task may have started: find it with: "
        f"aws ecs list-tasks --cluster {cluster} --started-by {by} (stop it with: aws ecs "
        f"stop-task --cluster {cluster} --task <its ARN>)"
    )
    try:
        response = ecs.run_task(
            cluster=cluster,
            taskDefinition=task_definition,
            launchType="FARGATE",
            count=1,
            startedBy=by,
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": subnets,
                    "securityGroups": [security_group],
                    # Public subnets (no NAT) need a public IP to reach ECR and S3's APIs.
                    "assignPublicIp": "DISABLED" if isolated else "ENABLED",
                }
            },
            overrides={
                "containerOverrides": [
                    {
                        "name": container["name"],
                        "command": command,
                        "environment": [{"name": "SDS_ACTOR", "value": started_by(ws)}],
                    }
                ]
            },
        )
    except Exception as exc:
        raise failure(
            exc,
            doing=f"starting {env}'s training task in cluster {cluster} (from "
            f"{parameter_name(env, 'training-cluster')}, deployed by '{env}/{TRAINING_STACK}')",
        ) from exc
    failures = response.get("failures") or []
    tasks = response.get("tasks") or []
    if failures or not tasks:
        detail = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')}".strip() for f in failures)
        raise AwsError(f"ECS could not start the training task in {cluster}: {detail or 'no task'}")
    launch.task = (cluster, str(tasks[0]["taskArn"]))
    return StartedTask(cluster, launch.task[1], log)


def task_command(
    deployed: list[str],
    *,
    env: str,
    run_id: str,
    reason: str = "",
    data: str | None = None,
    parameters: Mapping[str, int | float] | None = None,
) -> list[str]:
    """The container's command for this run: the task definition's (`deployed`), its data
    location replaced by `data`, then the model `parameters` given (later flags win), the reason
    and the run id. Each flag and its value are one word (`--reason=...`), so a value that
    starts with a dash is still the flag's value to the entry point's parser.

    A task deployed to train from capture (`infra.training.source: capture`) reads no history:
    `data`, or a parameter only a history's training uses, is refused rather than ignored."""
    parameters = dict(parameters or {})
    command = list(deployed)
    if "--from-capture" in command:
        unused = (["--data"] if data is not None else []) + [
            flag(name) for name in HISTORY_ONLY if name in parameters
        ]
        if unused:
            raise UsageError(
                f"{', '.join(unused)}: {env}'s training task trains from capture "
                "(infra.training.source: capture), not on a history"
            )
    elif data is not None:
        if "--data" in command:
            at = command.index("--data")
            del command[at : at + 2]
        command.append(f"--data={data}")
    command += parameter_arguments(parameters)
    if reason:
        command.append(f"--reason={reason}")
    return [*command, f"--run-id={run_id}"]


def start_training_run(
    clients: Clients,
    *,
    env: str,
    machine: str,
    run_id: str,
    command: list[str],
    actor: str,
    launch: Launch,
    say: Say,
    poll_s: float = 5.0,
    timeout_s: float = LEASE_TIMEOUT_S,
) -> str:
    """Start an execution of the training run's state machine (named `run_id`) and return the
    ARN of the task it started, once it has (`launch` keeps the execution meanwhile)."""
    sfn = clients["stepfunctions"]
    document = {"run_id": run_id, "command": command, "actor": actor}
    # The execution's ARN, known before it starts: it is named after the run.
    named = machine.replace(":stateMachine:", ":execution:", 1) + f":{run_id}"
    launch.asked = (
        "stopped before Step Functions answered StartExecution; the training run may have "
        f"started: check with: aws stepfunctions describe-execution --execution-arn {named} "
        f"(stop it with: aws stepfunctions stop-execution --execution-arn {named})"
    )
    launch.execution = start_execution(
        sfn,
        machine=machine,
        name=run_id,
        document=document,
        what=f"{env}'s training run state machine",
    )
    say(f"started training run {run_id} on {env}'s training state machine")
    return task_of_execution(
        sfn, launch.execution, env=env, say=say, poll_s=poll_s, timeout_s=timeout_s
    )


def task_of_execution(
    sfn: Any, execution: str, *, env: str, say: Say, poll_s: float, timeout_s: float
) -> str:
    """Follow the execution until its history shows the task it submitted to ECS; report each
    step before it; fail with the execution's error if it ends first."""
    started = time.monotonic()
    reported: set[str] = set()
    interval = min(0.25, poll_s)
    while True:
        try:
            events = _history(sfn, execution)
        except Exception as exc:
            raise _not_followed(exc, f"{env}'s training run", _run_keeps_going(execution)) from exc
        for event in events:
            entered = (event.get("stateEnteredEventDetails") or {}).get("name", "")
            if entered in _STEPS and entered not in reported:
                reported.add(entered)
                say(f"[{time.monotonic() - started:6.0f} s] {_STEPS[entered]}")
            submitted = event.get("taskSubmittedEventDetails") or {}
            if submitted.get("resourceType") == "ecs":
                return _submitted_task(submitted.get("output", ""), execution)
        try:
            described = sfn.describe_execution(executionArn=execution)
        except Exception as exc:
            raise _not_followed(exc, f"{env}'s training run", _run_keeps_going(execution)) from exc
        status = str(described.get("status"))
        if status != "RUNNING":
            raise _before_the_task(env, execution, status, described)
        if time.monotonic() - started > timeout_s:
            raise AwsError(
                f"stopped following after {timeout_s:.0f} s: {env}'s training run started no "
                f"task; {_run_keeps_going(execution)}"
            )
        time.sleep(interval)
        interval = min(interval * 2, poll_s)


def _task_keeps_running(cluster: str, task_arn: str) -> str:
    return (
        f"the task keeps running: {task_arn} (stop it with: aws ecs stop-task --cluster "
        f"{cluster} --task {task_arn})"
    )


def _run_keeps_going(execution: str) -> str:
    return (
        f"the training run keeps going: {execution} (stop it with: aws stepfunctions "
        f"stop-execution --execution-arn {execution})"
    )


def _not_followed(exc: Exception, what: str, keeps: str) -> AwsError:
    """A failure to follow a run that has started: what AWS said, and that the run goes on (a
    caller who took "try again" for "start it again" would run it twice)."""
    said = explain(exc) or exc
    return AwsError(f"could not follow {what} ({said}); {keeps}")


def _history(sfn: Any, execution: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in sfn.get_paginator("get_execution_history").paginate(executionArn=execution):
        events.extend(page.get("events", []))
    return events


def _submitted_task(output: str, execution: str) -> str:
    """The task ARN in the RunTask answer the execution's history recorded (Step Functions
    spells the ECS fields in PascalCase; the API's own camelCase is accepted too)."""
    try:
        answer = json.loads(output)
        tasks = answer.get("Tasks") or answer.get("tasks") or []
        return str(tasks[0].get("TaskArn") or tasks[0]["taskArn"])
    except (ValueError, LookupError, AttributeError, TypeError) as exc:
        raise AwsError(f"{execution} started a task but its history does not name it") from exc


def _before_the_task(
    env: str, execution: str, status: str, described: dict[str, Any]
) -> OperationError:
    error = str(described.get("error") or status)
    cause = str(described.get("cause") or "no cause given")
    with_message = cause
    with contextlib.suppress(ValueError, AttributeError):  # a Lambda error's cause is JSON
        with_message = str(json.loads(cause).get("errorMessage") or cause)
    if error in _LEASE_ERRORS:
        return OperationError(
            f"could not lease {env}'s training network endpoints ({error}): {with_message}; "
            f"no task was started ({execution})"
        )
    return OperationError(
        f"{env}'s training run {status.lower()} before its task started ({error}): "
        f"{with_message} ({execution})"
    )


def started_by(ws: Workspace) -> str:
    """What the task records as its annotation: who started it (the caller's actor), and what
    they declared about themselves, if anything."""
    declared = ws.declared_actor
    return ws.actor if not declared or declared == ws.actor else f"{ws.actor} ({declared})"


def wait_for_task(
    clients: Clients,
    *,
    cluster: str,
    task_arn: str,
    say: Say,
    poll_s: float = 5.0,
    timeout_s: float = 6 * 3600,
) -> dict[str, Any]:
    """Poll until the task stops, reporting each status change; return the stopped task.

    Polls quickly at first (a task that fails to start stops within seconds), then every
    `poll_s` seconds.
    """
    ecs = clients["ecs"]
    started = time.monotonic()
    last = ""
    interval = min(0.25, poll_s)
    while True:
        try:
            described = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])
        except Exception as exc:
            keeps = _task_keeps_running(cluster, task_arn)
            raise _not_followed(exc, "the training task", keeps) from exc
        tasks = described.get("tasks") or []
        if not tasks:
            raise AwsError(f"task {task_arn} disappeared from {cluster}")
        task: dict[str, Any] = tasks[0]
        status = str(task.get("lastStatus", "?"))
        elapsed = time.monotonic() - started
        if status != last:
            say(f"[{elapsed:6.0f} s] {status.lower()}")
            last = status
        if status == "STOPPED":
            return task
        if elapsed > timeout_s:
            raise AwsError(
                f"stopped waiting after {timeout_s:.0f} s, the training task still "
                f"{status.lower()}; {_task_keeps_running(cluster, task_arn)}"
            )
        time.sleep(interval)
        interval = min(interval * 2, poll_s)


def run_training(
    ws: Workspace,
    *,
    env: str,
    reason: str = "",
    data: str | None = None,
    parameters: Mapping[str, int | float] | None = None,
    clients: Clients | None = None,
    say: Say = print,
    poll_s: float = 5.0,
    timeout_s: float = 6 * 3600,
) -> TrainingRun:
    started = time.monotonic()
    registered_in = registering_environment(ws, env, on_fargate=True)
    clients = clients or ws.discovery.clients
    registry = ws.registry(registered_in)
    before = set(registry.list_versions())
    run_id = uuid.uuid4().hex
    launch = Launch()
    try:
        started_task = start_training_task(
            ws,
            env=env,
            clients=clients,
            run_id=run_id,
            launch=launch,
            reason=reason,
            data=data,
            parameters=parameters,
            say=say,
            poll_s=poll_s,
        )
        cluster, task_arn = started_task.cluster, started_task.arn
        where = "" if registered_in == env else f"; it registers in {registered_in}"
        say(f"started training task {task_arn.rsplit('/', 1)[-1]} in {cluster}{where}")
        task = wait_for_task(
            clients, cluster=cluster, task_arn=task_arn, say=say, poll_s=poll_s, timeout_s=timeout_s
        )
    except KeyboardInterrupt as exc:
        # Ctrl-C stops the command, not the task: say what was started and how to stop it, in
        # the line `main` prints after "sds: interrupted" (the same kind of interruption,
        # SIGTERM's included).
        raise reworded(exc, launch.interrupted()) from None
    exit_code = ((task.get("containers") or [{}])[0]).get("exitCode")
    why = _why_stopped(task)
    # A version is registered in full once its manifest is stored (the registry writes it last),
    # whatever happens to the task after: it is found first, and never trained again.
    new = [registry.get_version(n) for n in sorted(set(registry.list_versions()) - before)]
    mine = [v for v in new if v.manifest.get("run_id") == run_id]
    if mine and exit_code not in (0, STOPPED_BY_SIGTERM):
        version = mine[-1]
        raise OperationError(
            f"training task {task_arn} failed (exit code {exit_code}; {why}) after it registered "
            f"version {version.number} in full in {registered_in} (sha256 {version.sha256[:12]}"
            "...): it is there to promote, not to train again; " + _log_says(clients, started_task)
        )
    if not mine and exit_code is None:
        # ECS stopped it before the container ran (an image it could not pull, a network
        # without a route to ECR or to the logs): the container's log is empty, ECS's reason is
        # the story.
        raise OperationError(
            f"training task {task_arn} stopped before its container ran ({why}); nothing was "
            "registered"
        )
    if not mine and exit_code == STOPPED_BY_SIGTERM:
        # training.train's own exit on SIGTERM (ECS StopTask, a scale-in) before its version
        # was complete: it left nothing half-written, and the run can simply start again.
        raise OperationError(
            f"training task stopped by SIGTERM ({why}) before it registered a "
            "version; nothing half-written is left: start it again when ready"
        )
    if not mine and exit_code != 0:
        raise OperationError(
            f"training task {task_arn} failed (exit code {exit_code}; {why}); "
            + _log_says(clients, started_task)
        )
    if not mine:
        # A task stopped from outside (ECS StopTask, a scale-in) may still exit 0: its reason is
        # the story.
        stopped = _why_stopped(task, default="")
        raise OperationError(
            f"training task {task_arn} finished but registered no version in "
            f"{registered_in}'s registry ({registry.uri})"
            + (f"; ECS says: {stopped}" if stopped else "")
        )
    return TrainingRun(
        env=env,
        registered_in=registered_in,
        task_arn=task_arn,
        exit_code=exit_code,
        version=mine[-1],
        duration_s=round(time.monotonic() - started, 1),
    )


# The most of a failed task's log an error quotes: its last line (training.train's last word is
# one line: `error: ...`, or a traceback's last), from this many of the stream's last events.
_LOG_EVENTS = 20


def _why_stopped(task: dict[str, Any], default: str = "no reason given") -> str:
    """ECS's reasons for a stopped task: the container's own first (`OutOfMemoryError: ...`,
    `CannotPullContainerError: ...`), then the task's (`Essential container in task exited`)."""
    container = (task.get("containers") or [{}])[0]
    reasons = [str(r) for r in (container.get("reason"), task.get("stoppedReason")) if r]
    return "; ".join(dict.fromkeys(reasons)) or default


def _log_says(clients: Clients, task: StartedTask) -> str:
    """The end of a failed task's log, and where the whole of it is."""
    if task.log is None:
        return "its log group (Training stack) has the details"
    stream = task.log.stream(task.arn)
    where = f"log group {task.log.group}, stream {stream}"
    try:
        answer = clients["logs"].get_log_events(
            logGroupName=task.log.group,
            logStreamName=stream,
            startFromHead=False,
            limit=_LOG_EVENTS,
        )
    except Exception as exc:  # the log is a pointer for the reader: where it is says enough
        return f"its log ({where}) could not be read ({error_code(exc) or exc})"
    lines = [
        line.strip()
        for event in answer.get("events", [])
        for line in str(event.get("message", "")).splitlines()
        if line.strip()
    ]
    if not lines:
        return f"its log ({where}) is empty"
    return f"its log ends: {lines[-1]} ({where})"
