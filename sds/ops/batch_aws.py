"""`sds --aws score` and `sds --aws backfill`: start the environment's batch state machine and
follow it.

The state machine (`/sds/<env>/batch-state-machine`, the Batch stack) runs the same steps as a
local run, each item in the batch function. This module checks the locations first (the input
in the environment's training-data bucket, the output under its batch prefix and not inside the
input: what the plan step would refuse), pins the model (the environment's pin, or `--version`
from its registry), starts an execution, reports each map's progress while it runs, and reads
the run's manifest when it ends. Starting the same command again after a failure resumes the
run: finished parts are not computed again. An execution that still writes `--out` (started
with `--no-wait`, or whose following stopped: the run goes on) is no run to resume yet: the
command refuses to start another one into it (`RunInProgress`, exit 3), naming the execution
and how to wait for it or stop it.

A run that ends without its manifest fails the command (`BatchRunFailed`), reported as every
error is: one line naming what failed and what to do, then the map items that failed (`listing`;
in `--json`, the error's document carries them, with the execution and Step Functions' raw
cause). A run that a step of the function failed with an error of sds's own (the plan refusing a
run at `--out` it cannot resume, a history with no events or no files, a bad line in it) fails
as that error (`step_error`, `failed_as`): its message, type and exit code, the ones the same run
gives on this machine, so a script sees the same exit code whichever target ran it. A step that
AWS failed (S3 through the run's storage: `StorageError`, `AwsError`) fails as its error too,
and its line adds that running the same command again resumes the run (`step_failed`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from lambdas.inference.batch import RESULTS, failed_items, function_error
from sds.kernel.aws.errors import one_line
from sds.kernel.batch.run import MANIFEST, check_locations, read_json
from sds.kernel.batch.settings import BatchFunctionSettings, run_input
from sds.kernel.batch.shuffle import HistoryError
from sds.kernel.batch.storage import StorageError, open_storage
from sds.kernel.errors import Refused, SdsError, UsageError, counted
from sds.kernel.signals import reworded
from sds.ops.aws import AwsError, failure, start_execution
from sds.ops.batch import model_for
from sds.ops.workspace import Workspace

Say = Callable[[str], None]
POLL_SECONDS = 5.0
MAP_LABELS = {"Shuffle": "partitioning by account", "ComputeParts": "parts"}
RUNNING = "RUNNING"


class BatchRunFailed(SdsError):
    """A run on AWS that ended without finishing: its message names what failed and what to do,
    on one line; `listing` names the map items that failed, for the lines after it. `--json` adds
    the execution, the output, its status, the cause Step Functions reported and every failed
    item. Raised as the error of sds's own that a step failed the run with, if one did
    (`failed_as`)."""

    def __init__(
        self,
        message: str,
        *,
        execution: str,
        output: str,
        status: str,
        cause: str | None,
        failures: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.execution, self.output, self.status, self.cause = execution, output, status, cause
        self.failures = failures or []

    def details(self) -> dict[str, Any]:
        return {
            "execution": self.execution,
            "output": self.output,
            "status": self.status,
            "cause": self.cause,
            "failures": self.failures,
        }

    def listing(self) -> list[str]:
        """The failed map items, one a line (the first ten; `--json` has every one)."""
        lines = [_describe(f) for f in self.failures[:LISTED]]
        if len(self.failures) > LISTED:
            lines.append(f"  ... and {len(self.failures) - LISTED} more (--json lists every one)")
        return lines


LISTED = 10


class RunInProgress(Refused):
    """`--out` is being written by an execution of the batch state machine that is still running
    (one started with `--no-wait`, or whose following stopped: Ctrl-C, a network failure). A
    second run into it would not be refused by the plan step (the same input and model resume
    the run there), and the two would compute the same parts and write its manifest at once.
    Nothing was started; `--json` adds the running execution and the output. One of the
    refusals the exit codes' list calls "--out holds another run" (sds/kernel/errors.py)."""

    def __init__(self, message: str, *, execution: str, output: str) -> None:
        super().__init__(message)
        self.execution, self.output = execution, output

    def details(self) -> dict[str, Any]:
        return {"execution": self.execution, "output": self.output}


# Where the errors the batch function raises on purpose are defined: the code it runs (the
# inference bundle: the kernel and its handlers).
FUNCTION_CODE = ("sds.kernel.", "lambdas.inference.")


def step_error(kind: str) -> type[SdsError] | None:
    """The class of the error a step of the batch function raised, from the type Step Functions
    reports for it (the class's name): one of sds's own errors in the code the function runs,
    which carries its exit code; None for any other error (MemoryError, a timeout, the service's
    `States.*`). This module imports the function's code, so each such class is defined here;
    classes of it that share a name share their exit code and label too
    (tests/unit/test_batch_aws.py), so the first by module is as good as any."""
    found = [
        c
        for c in _subclasses(SdsError)
        if c.__name__ == kind and c.__module__.startswith(FUNCTION_CODE)
    ]
    return min(found, key=lambda c: c.__module__) if found else None


def _subclasses(cls: type[SdsError]) -> Iterator[type[SdsError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def failed_as(kind: type[SdsError]) -> type[BatchRunFailed]:
    """`BatchRunFailed` as `kind`: named so (the `--json` type), with its exit code, label and
    HTTP status. Only those: `kind`'s constructor and fields are its own (a store's key, a
    version's state), and the step reported its message alone."""
    made = type(
        kind.__name__,
        (BatchRunFailed,),
        {
            "__module__": __name__,
            "__doc__": kind.__doc__,
            "exit_code": kind.exit_code,
            "label": kind.label,
            "http_status": kind.http_status,
        },
    )
    return cast("type[BatchRunFailed]", made)


@dataclass
class AwsRun:
    env: str
    job: str
    execution: str  # its ARN
    output: str
    status: str
    seconds: float = 0.0
    manifest: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.execution.rsplit(":", 1)[-1]

    @property
    def complete(self) -> bool:
        return self.manifest is not None and bool(self.manifest.get("complete"))

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
        }

    def summary(self) -> str:
        """The run started (`--no-wait`), or finished: one line."""
        if self.status == RUNNING:
            return f"started {self.name} on {self.env}: follow it with the AWS console or CLI ({self.execution})"
        assert self.manifest is not None
        totals = self.manifest["totals"]
        return (
            f"{counted(totals['rows'], 'row')} from {counted(totals['events'], 'event')} into "
            f"{counted(len(self.manifest['parts']), 'part')} in {self.output} ({self.name} on "
            f"{self.env}, {self.seconds:.0f} s)"
        )


def run_failed(
    run: AwsRun, error: str | None, cause: str | None, failures: list[dict[str, Any]]
) -> BatchRunFailed:
    """The error a run that ended without finishing fails the command with, given the error and
    cause Step Functions reported and the map items that failed. An item that refused the history
    (a bad line, say) makes it that HistoryError, in the words the same run fails with on this
    machine: running again meets it again, and a fixed input is refused as changed, so the line
    says to fix it and start over. Any other failure (a part out of memory) passes: running
    again computes what is missing."""
    ended = f"{run.name} on {run.env} ended {run.status}"
    failed = f" ({counted(len(failures), 'failed item')})" if failures else ""
    refused = [f["cause"] for f in failures if str(f.get("cause", "")).startswith(REFUSED)]
    kind: type[BatchRunFailed] = BatchRunFailed
    if refused:
        kind = failed_as(HistoryError)
        message = (
            f"{refused[0].removeprefix(REFUSED).strip()}; {ended}{failed}: fix the input, then "
            f"run the command into a new --out prefix (or delete {run.output}'s objects first: "
            "a changed input cannot resume this run)"
        )
    else:
        why = f": {_why(error, cause)}" if error else " without finishing every part"
        message = f"{ended}{why}{failed}; {RESUME}"
    return kind(
        message,
        execution=run.execution,
        output=run.output,
        status=run.status,
        cause=cause,
        failures=failures,
    )


def step_failed(
    run: AwsRun, kind: type[SdsError], message: str, cause: str | None
) -> BatchRunFailed:
    """The error a run that a step (plan, collect, summarize) failed with an error of sds's own
    fails the command with: that error, its message and exit code, as the same step's is on this
    machine. Where AWS failed the step (`RESUMABLE`: S3 through the run's storage, any other call
    through the kernel's client), the line adds that running again resumes the run: no step
    discards a run for such an error (only a history the collect step refuses is discarded,
    `BatchApp.collect`), so its shuffle and finished parts are kept. A refusal (of the input,
    --out, the arguments, the model) says its message alone: the same command meets it again."""
    if issubclass(kind, RESUMABLE):
        message = f"{message}; {RESUME}"
    return failed_as(kind)(
        message, execution=run.execution, output=run.output, status=run.status, cause=cause
    )


# The errors of sds's own a step fails with when AWS failed it, not the run's input or settings.
RESUMABLE: tuple[type[SdsError], ...] = (AwsError, StorageError)
# What a run that ended unfinished, but that the same command resumes, tells the user to do.
RESUME = "run the same command again to compute what is missing (finished parts are kept)"


# How a failure's cause starts when a step refused the history itself (`failed_items` keeps the
# function's error type before its message).
REFUSED = f"{HistoryError.__name__}:"


# The most of a cause the summary shows (a `States.Runtime` error's carries the state's input).
CAUSE_CHARS = 300


def _why(error: str, cause: str | None) -> str:
    """Why an execution failed, on one line: a step's error document as its message (Step
    Functions names the error by its type), any other cause in the service's words, cut; the
    raw cause is in `--json`."""
    raised = function_error(cause)
    if raised is not None:
        kind, message = raised
        said = message if kind == error else f"{kind}: {message}"
    else:
        said = one_line(cause or "")
        if len(said) > CAUSE_CHARS:
            said = said[:CAUSE_CHARS] + "... (the whole cause: --json)"
    return f"{error}: {said}" if said else error


def _describe(failure: dict[str, Any]) -> str:
    """A failed map item: `part 2: MemoryError: ...`, `shuffle item 0: HistoryError: ...` (the
    error's type once, where the function's cause names it already)."""
    which = (
        f"part {failure['part']}"
        if "part" in failure
        else f"{failure.get('step')} item {failure.get('item', '?')}"
    )
    error, cause = str(failure.get("error")), str(failure.get("cause") or "")
    said = cause if cause.startswith(f"{error}:") else f"{error}: {cause}".rstrip(": ")
    return f"  {which}: {said}"


def run_on_aws(
    ws: Workspace,
    job: str,
    *,
    env: str,
    data: str,
    out: str,
    version: int | None,
    say: Say,
    partitions: int | None = None,
    wait: bool = True,
    poll_seconds: float | None = None,
) -> AwsRun:
    settings = ws.config.env(env).infra.batch
    discovery = ws.discovery
    bucket = discovery.get(env, "training-data-bucket")
    machine = discovery.get(env, "batch-state-machine")
    out = out.rstrip("/")
    # What the plan step refuses about the locations, said before anything starts.
    BatchFunctionSettings(ws.model, "", env, bucket, settings.output_prefix).check_locations(
        data, out
    )
    check_locations(data, out)
    model = None
    if job == "score":
        ref = model_for(ws, env, version)
        model = {"version": ref.version, "sha256": ref.sha256}
    document = run_input(
        job=job, input_uri=data, output_uri=out, model=model, partitions=partitions
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{job}-{stamp}-{uuid.uuid4().hex[:6]}"
    sfn = discovery.clients["stepfunctions"]
    machine_name = f"{env}'s batch state machine"
    running = running_into(sfn, machine=machine, output=out, what=machine_name)
    if running is not None:
        raise RunInProgress(
            f"{out} is being written by a run still going on {machine_name}: {running}; wait "
            f"for it to end (aws stepfunctions describe-execution --execution-arn {running}) or "
            f"stop it (aws stepfunctions stop-execution --execution-arn {running}), then run "
            "the command again",
            execution=running,
            output=out,
        )
    started = time.monotonic()
    arn = start_execution(sfn, machine=machine, name=name, document=document, what=machine_name)
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
    if run.complete:
        return run
    error, cause = described.get("error"), described.get("cause")
    raised = function_error(cause)
    kind = None if raised is None else step_error(raised[0])
    if raised is not None and kind is not None:
        raise step_failed(run, kind, raised[1], cause)
    raise run_failed(run, error, cause, failed_items(output, f"{RESULTS}{name}/"))


# How many running executions one ListExecutions call asks for (the service allows up to 1000).
RUNNING_PAGE = 100


def running_into(sfn: Any, *, machine: str, output: str, what: str) -> str | None:
    """The ARN of an execution of `machine` that is running and writes `output` (the "output" of
    its input, `run_input`'s document), or None. Every page of the running executions is read;
    each one's input is described (ListExecutions does not carry it). An execution whose input
    is no run's (started by hand) writes nothing this run would meet."""
    try:
        pages = sfn.get_paginator("list_executions").paginate(
            stateMachineArn=machine,
            statusFilter=RUNNING,
            PaginationConfig={"PageSize": RUNNING_PAGE},
        )
        for page in pages:
            for execution in page.get("executions", []):
                arn = str(execution["executionArn"])
                described = sfn.describe_execution(executionArn=arn)
                # (it may have ended since it was listed)
                if described.get("status") == RUNNING and _output_of(described) == output:
                    return arn
        return None
    except Exception as exc:
        raise failure(exc, doing=f"looking for runs of {what} still writing {output}") from exc


def _output_of(described: dict[str, Any]) -> str | None:
    """Where an execution's run writes, as the plan step reads it from the run's input (without a
    trailing slash); None for an input that names no output. Read here rather than by a parser
    in the kernel: the kernel ships in the batch function's bundle, which an edit there would
    change for a reading only the CLI does."""
    try:
        document = json.loads(str(described.get("input") or ""))
    except ValueError:
        return None
    found = document.get("output") if isinstance(document, dict) else None
    return found.rstrip("/") if isinstance(found, str) else None


def _follow(sfn: Any, arn: str, say: Say, poll_seconds: float) -> tuple[str, dict[str, Any]]:
    """Poll the execution (and its map runs, where the service reports them) until it ends."""
    reported: dict[str, str] = {}
    while True:
        try:
            described = dict(sfn.describe_execution(executionArn=arn))
        except Exception as exc:
            # The network (or AWS) failed the following, not the run: say so, and how to go on.
            raise AwsError(
                f"following {arn}: {exc}; the run keeps going on AWS: {arn} (follow it with: aws "
                f"stepfunctions describe-execution --execution-arn {arn}; stop it with: aws "
                f"stepfunctions stop-execution --execution-arn {arn})"
            ) from exc
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


__all__ = [
    "AwsRun",
    "BatchRunFailed",
    "RunInProgress",
    "UsageError",
    "run_failed",
    "run_on_aws",
    "step_error",
    "step_failed",
]
