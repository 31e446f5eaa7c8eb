"""`sds train --on-fargate`: run the environment's training task on ECS Fargate and wait for it.

Cluster, task definition, subnets and security group come from SSM (`/sds/<env>/training-*`);
the container runs the same `python -m training.train` as `sds train --local`, with the task
definition's own command (registry, model, data) plus `--reason` and a fresh `--run-id`. The
task definition's registry is where the environment's promotion chain starts (versions are
allocated there only), so prod's task trains on prod's data and registers in dev. The task
records its own identity (its role, from STS) as the actor, and `SDS_ACTOR`, set to whoever
started it (their identity, and what they declared), as an annotation. While it runs, every
status change is reported; when it stops, the command reports the version it registered: the
one whose manifest carries the run id.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sds.kernel.registry import Version
from sds.ops.aws import AwsError, Clients
from sds.ops.promotion import OperationError, registering_environment
from sds.ops.workspace import Workspace

Say = Callable[[str], None]


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


def start_training_task(
    ws: Workspace,
    *,
    env: str,
    clients: Clients,
    run_id: str,
    reason: str = "",
    data: str | None = None,
) -> tuple[str, str]:
    """Start the task (its version's manifest will carry `run_id`); return (cluster, task ARN)."""
    discovery = ws.discovery
    cluster = discovery.get(env, "training-cluster")
    task_definition = discovery.get(env, "training-task-definition")
    subnets = [s for s in discovery.get(env, "training-subnets").split(",") if s]
    security_group = discovery.get(env, "training-security-group")
    ecs = clients["ecs"]
    definition = ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
    container = definition["containerDefinitions"][0]
    command = list(container.get("command", []))
    if data is not None:
        if "--data" in command:
            command[command.index("--data") + 1] = data
        else:
            command += ["--data", data]
    if reason:
        command += ["--reason", reason]
    command += ["--run-id", run_id]
    isolated = ws.config.env(env).infra.network.isolated
    response = ecs.run_task(
        cluster=cluster,
        taskDefinition=task_definition,
        launchType="FARGATE",
        count=1,
        startedBy="sds-cli",
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
    failures = response.get("failures") or []
    tasks = response.get("tasks") or []
    if failures or not tasks:
        detail = "; ".join(f"{f.get('arn', '')} {f.get('reason', '')}".strip() for f in failures)
        raise AwsError(f"ECS could not start the training task in {cluster}: {detail or 'no task'}")
    return cluster, str(tasks[0]["taskArn"])


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
        described = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])
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
                f"training task {task_arn} still {status.lower()} after {timeout_s:.0f} s; "
                "it keeps running: follow it in the ECS console or its log group"
            )
        time.sleep(interval)
        interval = min(interval * 2, poll_s)


def run_training(
    ws: Workspace,
    *,
    env: str,
    reason: str = "",
    data: str | None = None,
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
    cluster, task_arn = start_training_task(
        ws, env=env, clients=clients, run_id=run_id, reason=reason, data=data
    )
    where = "" if registered_in == env else f"; it registers in {registered_in}"
    say(f"started training task {task_arn.rsplit('/', 1)[-1]} in {cluster}{where}")
    try:
        task = wait_for_task(
            clients, cluster=cluster, task_arn=task_arn, say=say, poll_s=poll_s, timeout_s=timeout_s
        )
    except KeyboardInterrupt:
        say(f"stopped waiting; the task keeps running: {task_arn}")
        raise
    containers = task.get("containers") or [{}]
    exit_code = containers[0].get("exitCode")
    if exit_code != 0:
        reason_text = task.get("stoppedReason") or containers[0].get("reason") or "no reason given"
        raise OperationError(
            f"training task failed (exit code {exit_code}, {reason_text}); "
            "its log group (Training stack) has the details"
        )
    new = [registry.get_version(n) for n in sorted(set(registry.list_versions()) - before)]
    mine = [v for v in new if v.manifest.get("run_id") == run_id]
    if not mine:
        raise OperationError(
            f"training task {task_arn} finished but registered no version in "
            f"{registered_in}'s registry ({registry.uri})"
        )
    return TrainingRun(
        env=env,
        registered_in=registered_in,
        task_arn=task_arn,
        exit_code=exit_code,
        version=mine[-1],
        duration_s=round(time.monotonic() - started, 1),
    )
