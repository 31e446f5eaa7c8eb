"""The batch function: each step of a batch run, as the environment's state machine calls it.

Built from the inference bundle (the same asset, this other entry point): the steps are the
kernel's (`sds.kernel.batch.run`), the same `sds score` and `sds backfill` run on one machine,
so a part computed here is the part a local run writes. The state machine calls:

- `plan`: check the locations, verify the model can be served, write (or resume) the run's plan
  and the list of items left to shuffle (the first Distributed Map's items);
- `shuffle` (one per input item, in a Distributed Map): partition the item's events by account;
- `collect`: merge the items' offsets, write the list of parts left to compute; a history
  with no events, or no payments, fails the run here, which removes what it wrote
  (`discard_failed`);
- `part` (one per partition, in a Distributed Map): score, or compute the aggregates of, one
  partition and store its part;
- `summarize`: the run's manifest, with every failed item named (from the maps' ResultWriter
  output), written when every part is finished.

Each call reads the plan from the run's output location, so items carry only their number.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from sds.kernel.batch.local import load_cached
from sds.kernel.batch.run import (
    MANIFEST,
    PLAN,
    WORK,
    ModelRef,
    RunPlan,
    begin,
    check_locations,
    collect_run,
    discard_failed,
    finished_parts,
    make_plan,
    part_step,
    read_json,
    shuffle_step,
    shuffled_items,
    shuffled_segments,
    summarize,
    work_prefix,
)
from sds.kernel.batch.settings import BatchFunctionSettings, BatchSettingsError
from sds.kernel.batch.shuffle import HistoryError, Shuffled
from sds.kernel.batch.storage import S3Storage, Storage, open_storage

logger = logging.getLogger("sds.batch")

# The maps' item lists, with the run's work (`work_prefix`): "items.json", "parts.json".
MAP = "map/"
RESULTS = "_run/sfn/"
MAX_FAILURES_RETURNED = 20  # in the state's output (256 KiB at most); all are in the manifest


class BatchApp:
    def __init__(self, settings: BatchFunctionSettings) -> None:
        self.settings = settings
        # The segments of the run a warm function computes parts of: by location and when it was
        # planned, as a local run's workers keep them (`sds.kernel.batch.local`): a restart at
        # the same location has segments of its own.
        self._segments: dict[tuple[str, str], list[tuple[str, Shuffled]]] = {}

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        action = event.get("action")
        steps = {
            "plan": self.plan,
            "shuffle": self.shuffle,
            "collect": self.collect,
            "part": self.part,
            "summarize": self.summarize,
        }
        if action not in steps:
            raise BatchSettingsError(f"unknown action {action!r}; one of {', '.join(steps)}")
        return steps[str(action)](event)

    # Steps -----------------------------------------------------------------------------------

    def plan(self, event: Mapping[str, Any]) -> dict[str, Any]:
        input_uri, output_uri = str(event["input"]), str(event["output"]).rstrip("/")
        self.settings.check_locations(input_uri, output_uri)
        check_locations(input_uri, output_uri)
        model = event.get("model")
        ref = (
            None
            if model is None
            else ModelRef(
                self.settings.model_name,
                int(model["version"]),
                str(model["sha256"]),
                self.settings.registry_uri,
            )
        )
        if ref is not None:
            load_cached(ref)  # a model that cannot be served fails the run before it starts
        partitions = event.get("partitions")
        output = open_storage(output_uri)
        plan, resumed = begin(
            make_plan(
                str(event["job"]),
                open_storage(input_uri),
                output_uri,
                model=ref,
                partitions=None if partitions is None else int(partitions),
                run_id=str(event.get("run_id", "")),
            ),
            output,
            chosen_partitions=partitions is not None,
        )
        finished = resumed and output.exists(MANIFEST)
        done = shuffled_items(plan, output)
        todo = [{"item": i.index} for i in plan.items if i.index not in done]
        items_key = work_prefix(plan) + MAP + "items.json"
        if not finished:
            output.put_bytes(items_key, json.dumps(todo).encode())
        logger.info(
            "plan: %s of %s, %d items (%d to shuffle), %d partitions%s",
            plan.job,
            plan.input,
            len(plan.items),
            len(todo),
            plan.partitions,
            " (resumed)" if resumed else "",
        )
        return {
            "finished": finished,
            "resumed": resumed,
            "shuffle": bool(todo) and not finished,
            "items": len(plan.items),
            "partitions": plan.partitions,
            "items_key": _key(output, items_key),
            "results_prefix": _key(output, RESULTS + str(event.get("run_id") or "run")),
        }

    def shuffle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        output = open_storage(str(event["output"]))
        plan = RunPlan.from_json(read_json(output, PLAN))
        done = shuffle_step(plan, open_storage(plan.input), output, int(event["item"]))
        return {"item": done.item, "events": done.events}

    def collect(self, event: Mapping[str, Any]) -> dict[str, Any]:
        output = open_storage(str(event["output"]))
        plan = RunPlan.from_json(read_json(output, PLAN))
        try:
            shuffled = collect_run(plan, output)
        except HistoryError:
            # As on one machine (sds.ops.batch): a history the run refuses (no events, no
            # payments) wrote no result and leaves the output prefix as it found it, the maps'
            # result files under it too. The execution fails on the error raised, which the CLI
            # reports; its own error is the one raised, whatever the cleanup meets. Any other
            # error (S3 unreachable a moment) keeps the shuffle, which may have taken hours:
            # running the command again resumes from it.
            with contextlib.suppress(Exception):
                discard_failed(plan, output)
            raise
        finished = finished_parts(plan, output)
        todo = [{"part": p} for p in range(plan.partitions) if p not in finished]
        parts_key = work_prefix(plan) + MAP + "parts.json"
        output.put_bytes(parts_key, json.dumps(todo).encode())
        return {
            "parts": len(todo),
            "parts_key": _key(output, parts_key),
            "events": shuffled["events"],
        }

    def part(self, event: Mapping[str, Any]) -> dict[str, Any]:
        output_uri = str(event["output"])
        output = open_storage(output_uri)
        plan = RunPlan.from_json(read_json(output, PLAN))
        run = (output_uri, plan.created_at)
        if run not in self._segments:  # a warm function keeps them for the next part
            self._segments = {run: shuffled_segments(plan, output)}
        status = part_step(
            plan, output, int(event["part"]), load=load_cached, segments=self._segments[run]
        )
        return {"part": status["part"], "rows": status["rows"]}

    def summarize(self, event: Mapping[str, Any]) -> dict[str, Any]:
        output = open_storage(str(event["output"]))
        plan = RunPlan.from_json(read_json(output, PLAN))
        execution = str(event.get("run_id") or "")
        if output.exists(MANIFEST):
            manifest = read_json(output, MANIFEST)
        else:
            failures = failed_items(output, RESULTS + execution + "/") if execution else []
            manifest = summarize(plan, output, failures=failures, execution=execution or None)
            if manifest["complete"]:
                output.delete_prefix(WORK)
        return {
            "complete": manifest["complete"],
            "manifest": _key(output, MANIFEST) if manifest["complete"] else None,
            "rows": manifest["totals"]["rows"],
            "events": manifest["totals"]["events"],
            "parts": len(manifest["parts"]),
            "missing_parts": len(manifest["missing_parts"]),
            "failures": manifest["failures"][:MAX_FAILURES_RETURNED],
            "failed": len(manifest["failures"]),
        }


def failed_items(output: Storage, prefix: str) -> list[dict[str, Any]]:
    """Every failed map item of an execution, from the maps' ResultWriter files: which item or
    part, and the error and message the function raised."""
    failures: list[dict[str, Any]] = []
    for found in output.list(prefix):
        if not found.key.rsplit("/", 1)[-1].startswith("FAILED_"):
            continue
        for entry in json.loads(output.read(found.key)):
            failures.append(_failure(entry))
    return sorted(failures, key=lambda f: (f.get("step", ""), f.get("part", f.get("item", -1))))


def _failure(entry: Mapping[str, Any]) -> dict[str, Any]:
    try:
        given = json.loads(entry.get("Input") or "{}")
    except ValueError:
        given = {}
    failure: dict[str, Any] = {"step": given.get("action", "unknown")}
    for name in ("item", "part"):
        if name in given:
            failure[name] = given[name]
    failure["error"] = entry.get("Error")
    cause = str(entry.get("Cause") or "")
    raised = function_error(cause)
    if raised is not None:
        cause = f"{raised[0]}: {raised[1]}".strip(": ")
    failure["cause"] = cause[:1000]
    return failure


def function_error(cause: str | None) -> tuple[str, str] | None:
    """(type, message) of the error the function raised, from the cause Step Functions reports
    for it (the function's own error document, in JSON); None for any other cause."""
    try:
        document = json.loads(cause or "")
    except ValueError:
        return None
    if not isinstance(document, dict) or not {"errorType", "errorMessage"} & document.keys():
        return None
    return str(document.get("errorType", "")), str(document.get("errorMessage", ""))


def _key(storage: Storage, key: str) -> str:
    """The object key in its bucket (what a map's ItemReader and ResultWriter take)."""
    assert isinstance(storage, S3Storage), "batch runs on AWS read and write S3"
    return f"{storage.prefix}/{key}" if storage.prefix else key


_app: BatchApp | None = None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _app
    if _app is None:
        logging.getLogger().setLevel(os.environ.get("LOG_LEVEL", "INFO"))
        _app = BatchApp(BatchFunctionSettings.from_environ(os.environ))
    return _app.handle(event)


__all__ = ["BatchApp", "failed_items", "function_error", "lambda_handler"]
