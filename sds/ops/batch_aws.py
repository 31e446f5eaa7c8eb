"""`sds --aws score` and `sds --aws backfill`: start the environment's batch state machine and
follow it.

The state machine (`/sds/<env>/batch-state-machine`, the Batch stack) runs the same steps as a
local run, each item in the batch function. This module checks the locations first (the input
in the environment's training-data bucket, the output under its batch prefix: what the function
may touch), pins the model (the environment's pin, or `--version` from its registry), starts an
execution, reports each map's progress while it runs, and reads the run's manifest (or names
the failed items) when it ends. Starting the same command again after a failure resumes the run:
finished parts are not computed again. A run the function refused before keeping anything (a
history with no events) is reported as its error alone (`BatchRunFailed`), as on this machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lambdas.inference.batch import RESULTS, failed_items, function_error
from sds.kernel.batch.run import MANIFEST, PLAN, read_json
from sds.kernel.batch.settings import BatchFunctionSettings, run_input
from sds.kernel.batch.shuffle import HistoryError
from sds.kernel.batch.storage import open_storage
from sds.kernel.errors import SdsError, UsageError
from sds.kernel.signals import reworded
from sds.ops.aws import AwsError, start_execution
from sds.ops.batch import model_for
from sds.ops.workspace import Workspace

Say = Callable[[str], None]
POLL_SECONDS = 5.0
MAP_LABELS = {"Shuffle": "partitioning by account", "ComputeParts": "parts"}
RUNNING = "RUNNING"


class BatchRunFailed(SdsError):
    """A run on AWS that the batch function refused before it kept anything (a history with no
    events, a model that cannot be served): the function's message, the words the same run
    gives on this machine, and nothing to resume."""

    def __init__(self, message: str, *, execution: str, output: str) -> None:
        super().__init__(message)
        self.execution, self.output = execution, output

    def details(self) -> dict[str, Any]:
        return {"execution": self.execution, "output": self.output}


@dataclass
class AwsRun:
    env: str
    job: str
    execution: str  # its ARN
    output: str
    status: str
    seconds: float = 0.0
    manifest: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest is not None and bool(self.manifest.get("complete"))

    @property
    def exit_code(self) -> int:
        return 0 if self.complete or self.status == RUNNING else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "job": self.job,
            "execution": self.execution,
            "output": self.output,
            "status": self.status,
            "complete": self.complete,
            "seconds": round(self.seconds, 1),
            "manifest": self.manifest,
            "error": self.error,
            "cause": self.cause,
            "failures": self.failures,
        }

    def summary(self) -> str:
        name = self.execution.rsplit(":", 1)[-1]
        if self.status == RUNNING:
            return f"started {name} on {self.env}: follow it with the AWS console or CLI ({self.execution})"
        if self.complete:
            assert self.manifest is not None
            totals = self.manifest["totals"]
            return (
                f"{totals['rows']} rows from {totals['events']} events into "
                f"{len(self.manifest['parts'])} parts in {self.output} ({name} on {self.env}, "
                f"{self.seconds:.0f} s)"
            )
        # A step that refused the history (a bad line, say) fails the same way when run again,
        # and once the input is fixed the run is refused as changed: resuming cannot help.
        refused = any(str(f.get("cause", "")).startswith(REFUSED) for f in self.failures)
        lines = [
            f"{name} on {self.env} ended {self.status}"
            + (f": {self.error}: {self.cause}" if self.error else "")
            + (
                "; the history has a problem named below, which running again meets again: fix "
                f"the input, then run the command into a new --out prefix (or delete {self.output}'s "
                "objects first: a changed input cannot resume this run)"
                if refused
                else "; run the same command again to compute what is missing (finished parts "
                "are kept)"
            )
        ]
        lines += [_describe(f) for f in self.failures[:10]]
        if len(self.failures) > 10:
            lines.append(f"  ... and {len(self.failures) - 10} more (see {self.output}/{RESULTS})")
        return "\n".join(lines)


# How a failure's cause starts when a step refused the history itself (`failed_items` keeps the
# function's error type before its message).
REFUSED = f"{HistoryError.__name__}:"


def _describe(failure: dict[str, Any]) -> str:
    which = f"part {failure['part']}" if "part" in failure else f"item {failure.get('item', '?')}"
    return f"  {failure.get('step')} {which}: {failure.get('error')}: {failure.get('cause')}"


def run_on_aws(
    ws: Workspace,
    job: str,
    *,
    env: str,
    data: str,
    out: str,
    version: int | None,
    say: Say,
    wait: bool = True,
    poll_seconds: float | None = None,
) -> AwsRun:
    settings = ws.config.env(env).infra.batch
    discovery = ws.discovery
    bucket = discovery.get(env, "training-data-bucket")
    machine = discovery.get(env, "batch-state-machine")
    out = out.rstrip("/")
    BatchFunctionSettings(ws.model, "", env, bucket, settings.output_prefix).check_locations(
        data, out
    )
    model = None
    if job == "score":
        ref = model_for(ws, env, version)
        model = {"version": ref.version, "sha256": ref.sha256}
    document = run_input(job=job, input_uri=data, output_uri=out, model=model, partitions=None)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{job}-{stamp}-{uuid.uuid4().hex[:6]}"
    sfn = discovery.clients["stepfunctions"]
    started = time.monotonic()
    arn = start_execution(
        sfn, machine=machine, name=name, document=document, what=f"{env}'s batch state machine"
    )
    what = f"model v{model['version']}" if model else "the account aggregates"
    say(f"started {name} on {env}'s batch state machine: {job} ({what}) of {data} into {out}")
    run = AwsRun(env=env, job=job, execution=arn, output=out, status=RUNNING)
    if not wait:
        return run
    try:
        run.status, described = _follow(sfn, arn, say, poll_seconds or POLL_SECONDS)
    except KeyboardInterrupt as exc:
        # Ctrl-C (or SIGTERM) stops the following, not the run: say so, and how to stop it
        # (`main` prints this after "sds: interrupted" or "sds: stopped by SIGTERM").
        raise reworded(
            exc,
            f"stopped following; the run keeps going on AWS: {arn} (stop it with: aws "
            f"stepfunctions stop-execution --execution-arn {arn})",
        ) from None
    run.seconds = time.monotonic() - started
    output = open_storage(out)
    if output.exists(MANIFEST):
        run.manifest = read_json(output, MANIFEST)
    if not run.complete:
        run.error, run.cause = described.get("error"), described.get("cause")
        raised = function_error(run.cause)
        if raised is not None and not output.exists(PLAN):
            # A step of the function failed the run, and the run kept nothing (it never
            # planned, or it removed what it wrote, as a history with no events does): there
            # is nothing to resume, and the function's error is the whole story.
            raise BatchRunFailed(raised[1], execution=arn, output=out)
        run.failures = failed_items(output, f"{RESULTS}{name}/")
    return run


def _follow(sfn: Any, arn: str, say: Say, poll_seconds: float) -> tuple[str, dict[str, Any]]:
    """Poll the execution (and its map runs, where the service reports them) until it ends."""
    reported: dict[str, str] = {}
    while True:
        try:
            described = dict(sfn.describe_execution(executionArn=arn))
        except Exception as exc:
            raise AwsError(f"following {arn}: {exc}") from exc
        for label, line in _map_progress(sfn, arn).items():
            if reported.get(label) != line:
                reported[label] = line
                say(f"  {label}: {line}")
        status = str(described.get("status"))
        if status != RUNNING:
            return status, described
        time.sleep(poll_seconds)


def _map_progress(sfn: Any, arn: str) -> dict[str, str]:
    """Each map run's item counts; nothing where the service does not report map runs."""
    progress: dict[str, str] = {}
    try:
        for found in sfn.list_map_runs(executionArn=arn).get("mapRuns", []):
            counts = sfn.describe_map_run(mapRunArn=found["mapRunArn"]).get("itemCounts", {})
            # arn:...:mapRun:<state machine>/<the map's label>:<id>
            label = str(found["mapRunArn"]).split(":")[-2].split("/")[-1]
            progress[MAP_LABELS.get(label, label)] = (
                f"{counts.get('succeeded', 0)}/{counts.get('total', 0)} items done, "
                f"{counts.get('running', 0)} running, {counts.get('failed', 0)} failed"
            )
    except Exception:  # progress is a courtesy; the execution's own status decides
        return {}
    return progress


__all__ = ["AwsRun", "BatchRunFailed", "UsageError", "run_on_aws"]
