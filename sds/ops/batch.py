"""`sds score` and `sds backfill` on this machine: a batch run with a worker process per core.

The run's steps, layout and resumability are the kernel's (`sds.kernel.batch.run`); this module
chooses the model, runs the steps in parallel (`sds.kernel.batch.local`), shows progress, and
reports what the run did: rows, throughput, and the peak memory of the largest worker (each holds
one partition, so it does not grow with the history). The throughput is this invocation's: the
events of the parts it computed over its own time, so a resumed run does not count the parts an
earlier one finished.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sds.kernel.batch import local
from sds.kernel.batch.run import (
    MANIFEST,
    WORK,
    ModelRef,
    RunPlan,
    begin,
    check_locations,
    collect_run,
    discard_failed,
    finished_parts,
    make_plan,
    read_json,
    shuffled_items,
    summarize,
)
from sds.kernel.batch.shuffle import default_workers
from sds.kernel.batch.storage import open_storage
from sds.kernel.errors import SdsError, UsageError, counted
from sds.kernel.lock import read_pin
from sds.kernel.registry import RegistryError, VersionNotFound
from sds.ops.workspace import Workspace
from sds.progress import Progress

STEPS = 3


@dataclass
class LocalRun:
    """What one invocation did (the manifest is the run's, over every invocation)."""

    manifest: dict[str, Any]
    resumed: bool
    workers: int
    items_shuffled: int
    parts_computed: int
    parts_skipped: int
    seconds: float
    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    nothing_to_do: bool = False  # the output held a finished run already
    # The events of the parts this invocation computed (the manifest's are every part's, those
    # an interrupted run finished before included).
    events_computed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "resumed": self.resumed,
            "workers": self.workers,
            "items_shuffled": self.items_shuffled,
            "parts_computed": self.parts_computed,
            "parts_skipped": self.parts_skipped,
            "seconds": round(self.seconds, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "nothing_to_do": self.nothing_to_do,
            "events_computed": self.events_computed,
            "events_per_second": round(self.events_per_second, 1),
        }

    @property
    def events_per_second(self) -> float:
        """This invocation's throughput: its events over its time, whatever was resumed."""
        return self.events_computed / self.seconds if self.seconds else 0.0


def model_for(ws: Workspace, env: str, version: int | None) -> ModelRef:
    """The version `env` serves (its pin in the lock file), or `version` from its registry."""
    registry = ws.registry(env)
    if version is None:
        pin = read_pin(ws.lock_path, model=ws.model, env=env)
        if pin is None:
            raise SdsError(
                f"{env} has no pinned model to score with: promote one "
                f"({ws.command(f'promote VERSION --to {env}')}) or name a version with --version"
            )
        return ModelRef(ws.model, pin.version, pin.sha256, registry.uri)
    try:
        found = registry.get_version(version)
    except VersionNotFound:
        # The same error (exit 1) as every command given a version that does not exist.
        raise VersionNotFound(f"version {version} is not in {env}'s registry") from None
    except RegistryError as exc:
        raise type(exc)(f"version {version} cannot be used from {env}'s registry: {exc}") from exc
    return ModelRef(ws.model, found.number, found.sha256, registry.uri)


def run_locally(
    job: str,
    *,
    data: str,
    out: str,
    model: ModelRef | None = None,
    workers: int | None = None,
    partitions: int | None = None,
    progress: Progress | None = None,
    keep_work: bool = False,
    range_bytes: int | None = None,
    restart: bool = False,
    start_over: str = "discard it with restart, or use another output location",
    clock: Callable[[], float] = time.perf_counter,
) -> LocalRun:
    """Plan (or resume) a run of `job` over `data` into `out`, and run every step not done.

    With `restart`, a run already at `out` is discarded first (only if `out` holds an sds run
    and nothing else); `start_over` ends the refusal of a run that cannot be resumed. A run this
    call planned that fails with an error before finishing a part is discarded (`discard_failed`),
    and so are the folders this call made (`out` and any of its parents that did not exist); an
    interrupted one (Ctrl-C, SIGTERM) is kept, to resume, and so is a run this call resumed or
    joined (another process may be computing it). `clock` times the call (its `seconds`, and so its
    `events_per_second`)."""
    started = clock()
    local.reset_worker_peak()
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    check_locations(data, out)
    made = None if out.startswith("s3://") else _folders_to_make(Path(out))
    progress = progress or Progress(STEPS, enabled=False)
    source, output = open_storage(data), open_storage(out)
    if job == "score" and model is not None:
        local.load_cached(model)  # a model that cannot be served fails the run before it starts
    plan, resumed = begin(
        make_plan(job, source, out, model=model, partitions=partitions, range_bytes=range_bytes),
        output,
        chosen_partitions=partitions is not None,
        restart=restart,
        start_over=start_over,
    )
    if resumed and output.exists(MANIFEST):
        manifest = read_json(output, MANIFEST)
        return LocalRun(manifest, True, workers, 0, 0, plan.partitions, 0.0, nothing_to_do=True)

    try:
        done = shuffled_items(plan, output)
        todo = [i.index for i in plan.items if i.index not in done]
        shuffled = _shuffle(plan, todo, workers, progress)
        progress.run(
            "collecting the shuffle",
            lambda: collect_run(plan, output),
            lambda document: f"{document['events']} events",
        )

        finished = finished_parts(plan, output)
        parts = [p for p in range(plan.partitions) if p not in finished]
        events = _compute(plan, parts, workers, progress)
        manifest = progress.run(
            "writing the run's manifest",
            lambda: summarize(plan, output, started_at=plan.created_at),
            lambda m: (
                f"{counted(m['totals']['rows'], 'row')} in {counted(len(m['parts']), 'part')}"
            ),
        )
    except Exception:
        # An error (a bad line, a full disk), not Ctrl-C: a run that finished no part leaves
        # --out as it found it, so that it does not refuse the next run (the workers are stopped
        # by now). Only a run this call planned: one it resumed or joined may be another
        # process's, still working. The run's own error is the one reported, whatever the
        # cleanup meets.
        with contextlib.suppress(Exception):
            if not resumed and discard_failed(plan, output) and not out.startswith("s3://"):
                _remove_empty_folders(Path(out) / "_run")
                if made is not None:
                    _remove_made_folders(Path(out), made)
        raise
    if manifest["complete"] and not keep_work:
        output.delete_prefix(WORK)
    return LocalRun(
        manifest=manifest,
        resumed=resumed,
        workers=workers,
        items_shuffled=shuffled,
        parts_computed=len(parts),
        parts_skipped=len(finished),
        seconds=clock() - started,
        peak_rss_bytes=peak_rss(),
        events_computed=events,
    )


def _folders_to_make(out: Path) -> Path | None:
    """The outermost folder of `out` (`out` itself included) that does not exist yet: the run
    makes it and those under it, and a run that fails removes them again. None if `out` exists.
    A file where one of its folders must be is a usage error, said before anything is made."""
    outermost = None
    for folder in (out, *out.parents):
        if folder.exists():
            if folder != out and not folder.is_dir():
                raise UsageError(
                    f"the output {out}: {folder} is a file, not a folder; name a folder elsewhere"
                )
            return outermost
        outermost = folder
    return outermost


def _remove_made_folders(out: Path, made: Path) -> None:
    """`out` and its parents up to `made`, the folders the failed run made, while empty."""
    for folder in (out, *out.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == made:
            return


def _remove_empty_folders(root: Path) -> None:
    """`root` and the folders under it, those that hold no file (`rmdir` refuses the others)."""
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _shuffle(plan: RunPlan, todo: list[int], workers: int, progress: Progress) -> int:
    total = sum(plan.items[i].size for i in todo)
    label = (
        f"partitioning {counted(len(plan.items), 'input item')} by account into "
        f"{counted(plan.partitions, 'partition')} ({counted(workers, 'worker')})"
    )
    if not todo:
        progress.run(label, lambda: None, lambda _: "already done (resumed)")
        return 0
    tasks = [(plan.to_json(), index, False, None) for index in todo]

    def work() -> int:
        with progress.transfer("read", total) as advance:
            for _, done in local.parallel(local.shuffle_worker, tasks, workers=workers):
                advance(int(done["read_bytes"]))
        return len(todo)

    return progress.run(label, work, lambda n: f"{counted(n, 'item')} shuffled")


def _compute(plan: RunPlan, parts: list[int], workers: int, progress: Progress) -> int:
    """Compute `parts`; the events they hold (what this invocation scored or aggregated)."""
    verb = "scoring" if plan.job == "score" else "computing the account aggregates of"
    label = f"{verb} {counted(plan.partitions, 'partition')} ({counted(workers, 'worker')})"
    if not parts:
        progress.run(label, lambda: None, lambda _: "every part was finished (resumed)")
        return 0
    tasks = [(plan.to_json(), p) for p in parts]
    rows = events = 0

    def work() -> int:
        nonlocal rows, events
        # Progress in parts: each is about the same size (accounts hash evenly).
        unit = "part" if len(parts) == 1 else "parts"  # "1/1 part", "3/16 parts"
        with progress.transfer("parts", len(parts), unit=unit) as advance:
            for _, status in local.parallel(local.part_worker, tasks, workers=workers):
                rows += int(status["rows"])
                events += int(status["events"])
                advance(1)
        return rows

    progress.run(label, work, lambda n: f"{counted(n, 'row')} in {counted(len(parts), 'part')}")
    return events


def peak_rss() -> dict[str, int]:
    """Peak resident memory of this process and of the largest worker of this run (each
    worker's own high-water mark, as it reported it: `sds.kernel.batch.local.parallel`)."""
    return {"main": local.peak_rss_bytes(), "largest_worker": local.worker_peak_bytes()}
