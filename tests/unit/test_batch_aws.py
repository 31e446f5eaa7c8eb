"""How `sds --aws score|backfill` reports a run that failed.

A step of the batch function that fails a run with an error of sds's own fails the command with
that error: found by the name Step Functions reports (`step_error`), raised with its message,
type, exit code and label (`failed_as`), as the same step fails it on this machine. Any other
failure fails it as `BatchRunFailed` (`run_failed`), its cause on one line (the raw cause in
--json).
tests/integration/test_batch_aws.py runs both end to end on the moto server."""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections import defaultdict
from typing import Any

import pytest

import lambdas.inference
from sds.kernel.aws.errors import AwsError
from sds.kernel.aws.s3 import S3Error
from sds.kernel.batch.run import RunMismatch
from sds.kernel.batch.settings import BatchSettingsError
from sds.kernel.batch.shuffle import HistoryError
from sds.kernel.batch.storage import StorageError
from sds.kernel.errors import Refused, SdsError, UsageError
from sds.kernel.serving import ModelUnavailable
from sds.ops.batch_aws import (
    CAUSE_CHARS,
    FUNCTION_CODE,
    AwsRun,
    BatchRunFailed,
    failed_as,
    run_failed,
    step_error,
    step_failed,
)


def _subclasses(cls: type[SdsError]) -> set[type[SdsError]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def function_errors() -> list[type[SdsError]]:
    """Every error class of the code the batch function runs (the inference bundle: the kernel
    and its handlers), each module of it imported."""
    for root in (importlib.import_module("sds.kernel"), lambdas.inference):
        for module in pkgutil.walk_packages(root.__path__, prefix=f"{root.__name__}."):
            importlib.import_module(module.name)
    return sorted(
        (c for c in _subclasses(SdsError) if c.__module__.startswith(FUNCTION_CODE)),
        key=lambda c: (c.__module__, c.__name__),
    )


def test_classes_of_the_function_s_code_that_share_a_name_exit_alike() -> None:
    # Step Functions reports an error by its class's name only
    by_name: dict[str, set[tuple[int, str]]] = defaultdict(set)
    for kind in function_errors():
        by_name[kind.__name__].add((kind.exit_code, kind.label))
    assert {name: said for name, said in by_name.items() if len(said) > 1} == {}


@pytest.mark.parametrize("kind", function_errors(), ids=lambda kind: kind.__name__)
def test_a_step_s_error_fails_the_command_as_that_error(kind: type[SdsError]) -> None:
    # Given the type Step Functions reports for an error the function raised
    found = step_error(kind.__name__)

    # When the command raises it
    assert found is not None and found.__name__ == kind.__name__
    error = failed_as(found)(
        "the step's message", execution="arn", output="s3://b/o", status="FAILED", cause="{}"
    )

    # Then it exits, is introduced and is typed as that error, with the run's details in --json
    assert isinstance(error, BatchRunFailed) and str(error) == "the step's message"
    assert (error.exit_code, error.label) == (kind.exit_code, kind.label)
    assert error.to_dict() == {
        "execution": "arn",
        "output": "s3://b/o",
        "status": "FAILED",
        "cause": "{}",
        "failures": [],
        "error": {
            "message": "the step's message",
            "type": kind.__name__,
            "exit_code": kind.exit_code,
        },
    }


def test_refusals_of_a_run_keep_their_exit_codes() -> None:
    assert step_error("RunMismatch") is RunMismatch and RunMismatch.exit_code == 3
    assert step_error("Refused") is Refused and step_error("UsageError") is UsageError
    assert step_error("HistoryError") is HistoryError and HistoryError.exit_code == 1


@pytest.mark.parametrize(
    "name", ["MemoryError", "Sandbox.Timedout", "States.Runtime", "BatchRunFailed", "ConfigError"]
)
def test_other_errors_are_no_step_s_error_of_sds_s(name: str) -> None:
    # A fault (the run resumes), the service's own, or an error of the CLI's, not the function's
    assert step_error(name) is None


RESUME = "run the same command again to compute what is missing (finished parts are kept)"


@pytest.mark.parametrize("kind", [AwsError, S3Error, StorageError], ids=lambda k: k.__name__)
def test_a_step_that_aws_failed_says_that_the_same_command_resumes_the_run(
    kind: type[SdsError],
) -> None:
    # Given a run whose collect step failed because S3 did (no step discards a run for that:
    # its shuffle, and any finished part, are kept for the next execution)
    found = step_error(kind.__name__)
    assert found is not None
    message = "s3://b/batch/x/_run/work/shuffled.json: SlowDown: Please reduce your request rate"

    # When the command fails with it
    failure = step_failed(aws_run(), found, message, cause="{}")

    # Then its one line is the step's message, then that running the same command resumes, and
    # it is still that error (type, exit code)
    assert str(failure) == f"{message}; {RESUME}"
    assert type(failure).__name__ == kind.__name__ and failure.exit_code == kind.exit_code


@pytest.mark.parametrize(
    "kind",
    [HistoryError, RunMismatch, Refused, UsageError, BatchSettingsError, ModelUnavailable],
    ids=lambda k: k.__name__,
)
def test_a_step_that_refused_the_run_does_not_say_that_running_it_again_helps(
    kind: type[SdsError],
) -> None:
    # Given a run a step refused (the input, --out, the arguments, the model): the same command
    # would meet it again
    found = step_error(kind.__name__)
    assert found is not None

    # When the command fails with it
    failure = step_failed(aws_run(), found, "the step's message", cause="{}")

    # Then it says the step's message alone
    assert str(failure) == "the step's message"


def aws_run() -> AwsRun:
    return AwsRun(
        env="dev",
        job="features",
        execution="arn:aws:states:us-east-1:123456789012:execution:sds-dev-batch:features-1",
        output="s3://b/batch/x",
        status="FAILED",
    )


@pytest.mark.parametrize(("parts", "said"), [(1, "into 1 part in"), (4, "into 4 parts in")])
def test_a_finished_run_s_summary_counts_its_parts_in_words(parts: int, said: str) -> None:
    # Given a run on AWS that finished into one part, or four
    run = aws_run()
    run.status = "SUCCEEDED"
    run.manifest = {"complete": True, "totals": {"rows": 1, "events": 1}, "parts": [{}] * parts}

    # Then its summary says "1 part" (and "1 row from 1 event"), "4 parts"
    assert said in run.summary()
    assert run.summary().startswith("1 row from 1 event into "), run.summary()


def failed_run(
    error: str | None, cause: str | None, failures: list[dict[str, Any]] | None = None
) -> BatchRunFailed:
    return run_failed(aws_run(), error, cause, failures or [])


def test_a_failed_run_names_its_step_s_fault_in_one_line_without_its_error_document() -> None:
    # Given an execution a step failed with a fault (the function's error document as the cause)
    document = {
        "errorMessage": "S3 did not answer",
        "errorType": "ConnectionError",
        "requestId": "c0ffee00-0000-4000-8000-000000000000",
        "stackTrace": ['  File "/var/task/lambdas/inference/batch.py", line 1, in collect\n'],
    }
    failure = failed_run("ConnectionError", json.dumps(document))

    # Then the error names it by type and message, and keeps the document for --json
    (line,) = str(failure).splitlines()
    assert line.startswith("features-1 on dev ended FAILED: ConnectionError: S3 did not answer; ")
    assert "stackTrace" not in line and failure.to_dict()["cause"] == json.dumps(document)
    assert type(failure) is BatchRunFailed and failure.exit_code == 1 and failure.listing() == []


def test_a_failed_run_cuts_a_long_cause_of_the_service_s_own() -> None:
    # Given an execution the service failed, its cause carrying the state's input
    state_input = json.dumps({"output": "s3://b/batch/x", "plan": {"items": list(range(200))}})
    cause = (
        "An error occurred while executing the state 'Shuffle'. The JSONPath "
        f"'$.plan.items_key' could not be found in the input\n'{state_input}'"
    )
    failure = failed_run("States.Runtime", cause)

    # Then the error says it on one line, cut, and --json has all of it
    (line,) = str(failure).splitlines()
    assert "ended FAILED: States.Runtime: An error occurred while executing the state" in line
    assert "... (the whole cause: --json); run the same command again" in line
    assert len(line) < CAUSE_CHARS + 300 and failure.to_dict()["cause"] == cause


def test_a_run_with_failed_items_names_them_after_its_line_the_history_s_refusal_first() -> None:
    # Given a run whose parts map failed: eleven parts out of memory, one refusing the history
    failures = [
        {"step": "part", "part": p, "error": "MemoryError", "cause": "MemoryError: too big"}
        for p in range(11)
    ]
    refusal = "s3://b/h.jsonl:9: event e-1 appears twice with different content"
    failures.append(
        {"step": "part", "part": 11, "error": "HistoryError", "cause": f"HistoryError: {refusal}"}
    )
    failure = failed_run("States.ExceedToleratedFailureThreshold", "threshold", failures)

    # Then it fails as the history's error, in its words, saying to fix the input (a resumed
    # run meets it again), with every failure in --json and the first ten after its line
    assert (type(failure).__name__, failure.exit_code) == ("HistoryError", 1)
    assert str(failure).startswith(
        f"{refusal}; features-1 on dev ended FAILED (12 failed items): fix the input"
    )
    assert failure.to_dict()["failures"] == failures
    assert failure.listing() == [
        *(f"  part {p}: MemoryError: too big" for p in range(10)),
        "  ... and 2 more (--json lists every one)",
    ]


def test_a_run_that_ended_without_an_error_and_without_its_parts_says_so() -> None:
    # A parts map whose failures stayed within its tolerance: the execution succeeded
    failures = [{"step": "part", "part": 1, "error": "Sandbox.Timedout", "cause": ""}]
    run = AwsRun(
        env="dev", job="score", execution="arn:x:score-1", output="s3://b/o", status="SUCCEEDED"
    )

    failure = run_failed(run, None, None, failures)

    assert str(failure) == (
        "score-1 on dev ended SUCCEEDED without finishing every part (1 failed item); run the "
        "same command again to compute what is missing (finished parts are kept)"
    )
    assert failure.listing() == ["  part 1: Sandbox.Timedout"]
