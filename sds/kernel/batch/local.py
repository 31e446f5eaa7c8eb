"""The steps of a batch run on this machine: one worker process per core, bounded memory each.

`parallel` runs a module-level function over argument tuples in worker processes
(`sds.kernel.batch.pool`: `spawn`ed, stopped promptly and quietly on Ctrl-C) and yields results
as they complete; with one worker, or one task, it runs them in this process. The first error
stops the other workers and is raised as it was raised in the worker.

The worker functions below take plain, picklable arguments (the plan as JSON, locations as
strings) and open what they need themselves; a worker keeps the model it loaded for the next
partitions it gets.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sds.kernel.batch.pool import run_in_processes
from sds.kernel.batch.run import ModelRef, RunPlan, part_step, shuffle_step, shuffled_segments
from sds.kernel.batch.shuffle import Shuffled
from sds.kernel.batch.storage import open_storage
from sds.kernel.serving import LoadedModel, load_model
from sds.kernel.settings import ServingSettings

T = TypeVar("T")

# The largest peak resident set a worker of `parallel` reported since `reset_worker_peak`.
_worker_peak = 0


def vm_hwm_bytes(pid: int | str = "self") -> int:
    """A process's peak resident set so far, its VmHWM (Linux; what Lambda reports as Max Memory
    Used); 0 where it cannot be read (the process has exited, or this is not Linux)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """This process's peak resident set: VmHWM, which starts afresh at exec. Not `ru_maxrss`
    (only where there is no /proc), which Linux carries across fork and exec: a worker spawned
    by a large process would report at least that process's size."""
    return vm_hwm_bytes() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_worker_peak() -> None:
    global _worker_peak
    _worker_peak = 0


def worker_peak_bytes() -> int:
    """The largest peak resident set of a worker process since `reset_worker_peak` (0: none
    ran, the work ran in this process)."""
    return _worker_peak


def _measured(function: Callable[..., T], *arguments: Any) -> tuple[T, int]:
    """In a worker: the function's result and the worker's peak resident set so far."""
    return function(*arguments), peak_rss_bytes()


def parallel(
    function: Callable[..., T], tasks: Sequence[tuple[Any, ...]], *, workers: int
) -> Iterator[tuple[int, T]]:
    """(task index, result) for each task, in completion order; each worker's peak resident set
    is kept for `worker_peak_bytes`."""
    global _worker_peak
    if workers <= 1 or len(tasks) <= 1:
        for index, arguments in enumerate(tasks):
            yield index, function(*arguments)
        return
    measured = [(function, *arguments) for arguments in tasks]
    for index, (result, peak) in run_in_processes(_measured, measured, processes=workers):
        _worker_peak = max(_worker_peak, peak)
        yield index, result


# Worker functions ----------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str, int, str], LoadedModel] = {}


def load_cached(ref: ModelRef) -> LoadedModel:
    """The verified model of `ref`, loaded once per process (the API's own loader)."""
    key = (ref.registry, ref.name, ref.version, ref.sha256)
    if key not in _MODELS:
        _MODELS[key] = load_model(
            ServingSettings(
                model_name=ref.name,
                model_version=ref.version,
                model_sha256=ref.sha256,
                registry_uri=ref.registry,
                environment="batch",
            )
        )
    return _MODELS[key]


def shuffle_worker(
    plan: dict[str, Any], index: int, labels_required: bool, spool_root: str | None
) -> dict[str, Any]:
    run = RunPlan.from_json(plan)
    done = shuffle_step(
        run,
        open_storage(run.input),
        open_storage(run.output),
        index,
        labels_required=labels_required,
        spool_root=Path(spool_root) if spool_root else None,
    )
    return done.to_json()


# The shuffle's segments of the run a process computes parts of, by run: its output location
# and when it was planned. Not by location alone: a process that runs parts of two runs in turn
# (with one worker, parts run in the calling process) may meet the same location twice, after
# `--restart` or in another folder of the same relative name, with other segments each time.
_SEGMENTS: dict[tuple[str, str], list[tuple[str, Shuffled]]] = {}


def part_worker(plan: dict[str, Any], partition: int) -> dict[str, Any]:
    run = RunPlan.from_json(plan)
    output = open_storage(run.output)
    key = (run.output, run.created_at)
    if key not in _SEGMENTS:  # read once per process: every partition needs them
        _SEGMENTS.clear()
        _SEGMENTS[key] = shuffled_segments(run, output)
    return part_step(run, output, partition, load=load_cached, segments=_SEGMENTS[key])
