"""A batch run: its plan, its steps and its manifest, written next to its results.

One layout under the output location, the same in a local folder and under an S3 prefix, and
the same steps, whoever runs them (`sds score` / `sds backfill` with a process per core, or the
environment's Step Functions state machine with a Lambda per item):

    part-00000.jsonl.gz ...        the results: one part per partition of accounts
    _run/plan.json                 what the run is: job, input files, model, items, partitions,
                                   and its plan id (P below), new with every plan
    _run/work/P/items/item-N.json  item N is shuffled (its object: _run/work/P/shuffle/
                                   item-N.jsonl, each partition's events and id rows:
                                   sds.kernel.batch.shuffle)
    _run/work/P/shuffled.json      every item is shuffled (their segment offsets, in one place)
    _run/parts/P/part-N.json       part N is finished (written after the part, with its counts)
    _run/manifest.json             the run is finished: totals, every part, and any failures

Resumable by part: a part counts as finished only when its status exists, and a status is
written only after its part is stored whole, so a run interrupted at any point and started again
with the same arguments recomputes exactly the parts that are not finished (and the items not yet
shuffled). The plan pins the input (each file's size and version), the model (version and
sha256) and the partitioning: a run with other input, model or partitions is refused instead of
mixing results, saying what differs (`differences`). So is a run planned by a version of sds
whose work files were laid out otherwise (`FORMAT`): the steps would misread them. The caller may
discard the old run instead (`begin(restart=True)`, `discard_run`), only where the location
holds an sds run and nothing else. A run that fails with an error before it finishes a part is
discarded by its caller (`discard_failed`): it wrote no result, and its plan would only refuse
the next run (an interrupted one is kept, to resume).

Two runs started at once into one location can both find no plan there. The plan is only ever
created where none is (`Storage.create_bytes`), so one of them writes it; the other reads it and
goes on as a run started a moment later would: it joins the run if its own plan is the same, and
is refused (`differences`) if not. Such a run computes the parts it finds unfinished, as the
first does (the same bytes: a part depends on the plan and the input only).

A run's records live under its plan id, so a process still working on a run that another process
discarded (`--restart`, or a failed run's cleanup) can never make its records count in the run
planned after it: they are in a folder that run never reads. Before it stores a part, and again
before it writes that part's status, a step checks that its plan is still the one in force
(`check_in_force`), and so does the manifest before it is written: such a process stops with
`RunReplaced`, and never reports a run complete. Plans written before plan ids (none) keep the
layout without P.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sds.kernel.batch import jobs, shuffle
from sds.kernel.batch.shuffle import (
    HistoryError,
    Item,
    Origin,
    Shuffled,
    Source,
    estimated_sizes,
    list_sources,
    load_partition,
    partition_count,
    plan_items,
    read_partition,
    shuffle_item,
)
from sds.kernel.batch.storage import AlreadyExists, Storage, open_storage
from sds.kernel.errors import Refused, UsageError, counted
from sds.kernel.serving import LoadedModel

# 2: each partition's segment of an item's object is followed by its id rows (the check that an
# event id is not held under two accounts); a run of format 1 has none, and is refused.
# 3: a .gz file's items are ranges of its decompressed content (format 2: one item, whole).
FORMAT = "sds-batch-run/3"
PLAN = "_run/plan.json"
WORK = "_run/work/"  # every plan's work (the plan's own: `work_prefix`)
PARTS = "_run/parts/"  # every plan's part statuses
MANIFEST = "_run/manifest.json"
_PLAN_ID = re.compile(r"([0-9a-f]{32})?")  # uuid4's hex; none in a plan from before ids


def _scoped(prefix: str, plan: RunPlan) -> str:
    """`prefix` for `plan`'s own records: under its plan id (a plan from before ids: `prefix`)."""
    return f"{prefix}{plan.plan_id}/" if plan.plan_id else prefix


def work_prefix(plan: RunPlan) -> str:
    return _scoped(WORK, plan)


def shuffled_key(plan: RunPlan) -> str:
    return work_prefix(plan) + "shuffled.json"


def item_object(plan: RunPlan, index: int) -> str:
    return f"{work_prefix(plan)}shuffle/item-{index:05d}.jsonl"


def item_status(plan: RunPlan, index: int) -> str:
    return f"{work_prefix(plan)}items/item-{index:05d}.json"


def part_object(partition: int) -> str:
    return f"part-{partition:05d}.jsonl.gz"


def part_status(plan: RunPlan, partition: int) -> str:
    return f"{_scoped(PARTS, plan)}part-{partition:05d}.json"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ModelRef:
    """The model a scoring run uses: pinned by version and sha256, read from `registry`."""

    name: str
    version: int
    sha256: str
    registry: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "registry": self.registry,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> ModelRef:
        return cls(
            str(document["name"]),
            int(document["version"]),
            str(document["sha256"]),
            str(document["registry"]),
        )


@dataclass(frozen=True)
class RunPlan:
    job: str
    input: str
    output: str
    sources: tuple[Source, ...]
    items: tuple[Item, ...]
    partitions: int
    model: ModelRef | None
    created_at: str
    run_id: str = ""
    # Names this plan among every plan ever written at its output location (one per start or
    # restart; not part of `identity`): its records are kept under it.
    plan_id: str = ""

    def identity(self) -> dict[str, Any]:
        """What must be the same for a run to resume another (not where, when or who)."""
        return {
            "format": FORMAT,
            "job": self.job,
            "sources": [[s.name, s.size, s.version] for s in self.sources],
            "items": [[i.source.name, i.start, i.end, i.to_end] for i in self.items],
            "partitions": self.partitions,
            "model": None
            if self.model is None
            else {
                "name": self.model.name,
                "version": self.model.version,
                "sha256": self.model.sha256,
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "job": self.job,
            "input": self.input,
            "output": self.output,
            "sources": [s.to_json() for s in self.sources],
            "items": [i.to_json() for i in self.items],
            "partitions": self.partitions,
            "model": None if self.model is None else self.model.to_json(),
            "created_at": self.created_at,
            "run_id": self.run_id,
            "plan_id": self.plan_id,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RunPlan:
        if document.get("format") != FORMAT:
            raise Refused(
                f"the run's plan has format {document.get('format')!r}, and this version of sds "
                f"reads {FORMAT}: the run was planned by another version; finish it with that "
                "version, or remove it (or use another output location) to start over"
            )
        model = document.get("model")
        plan_id = str(document.get("plan_id", ""))
        if not _PLAN_ID.fullmatch(plan_id):  # a part of every key the run writes
            raise Refused(f"the run's plan has plan_id {plan_id[:80]!r}: not an sds plan id")
        return cls(
            job=str(document["job"]),
            input=str(document["input"]),
            output=str(document["output"]),
            sources=tuple(Source.from_json(s) for s in document["sources"]),
            items=tuple(Item.from_json(i) for i in document["items"]),
            partitions=int(document["partitions"]),
            model=None if model is None else ModelRef.from_json(model),
            created_at=str(document["created_at"]),
            run_id=str(document.get("run_id", "")),
            plan_id=plan_id,
        )


def make_plan(
    job: str,
    source: Storage,
    output: str,
    *,
    model: ModelRef | None,
    partitions: int | None = None,
    range_bytes: int | None = None,
    partition_bytes: int | None = None,
    run_id: str = "",
    plan_id: str | None = None,
) -> RunPlan:
    """List the input, cut it into items and choose the number of partitions (sizes default to
    `shuffle.RANGE_BYTES` and `shuffle.PARTITION_BYTES`). The plan id is new unless given: ""
    for a plan that is never written at its output location (training's private work folder),
    whose steps then check nothing against one (`check_in_force`)."""
    if job not in jobs.JOBS:
        raise UsageError(f"unknown batch job {job!r}; one of {', '.join(jobs.JOBS)}")
    if (job == "score") != (model is not None):
        raise UsageError("a scoring run needs a model, and only a scoring run uses one")
    if partitions is not None and not 1 <= partitions <= 10_000:
        raise UsageError(f"--partitions must be between 1 and 10000, got {partitions}")
    sources = list_sources(source)
    sizes = estimated_sizes(source, sources)
    if partitions is None:
        partitions = partition_count(
            sum(sizes), partition_bytes=partition_bytes or shuffle.PARTITION_BYTES
        )
    return RunPlan(
        job=job,
        input=source.uri,
        output=output,
        sources=tuple(sources),
        items=tuple(plan_items(sources, sizes, range_bytes or shuffle.RANGE_BYTES)),
        partitions=partitions,
        model=model,
        created_at=now_iso(),
        run_id=run_id,
        plan_id=uuid.uuid4().hex if plan_id is None else plan_id,
    )


def read_json(storage: Storage, key: str) -> dict[str, Any]:
    document = json.loads(storage.read(key))
    if not isinstance(document, dict):
        raise Refused(f"{storage.name(key)}: not a JSON object")
    return document


def put_json(storage: Storage, key: str, document: dict[str, Any]) -> None:
    storage.put_bytes(key, _json_bytes(document))


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


class RunMismatch(Refused):
    """The output location holds a run this one cannot resume: other input, model, partitions
    or job (resuming would mix the results of both)."""


# What a run writes at the top of its output location, besides `_run/`: its parts, and a part
# being written (a local file is written under a hidden name, then renamed: the writer's process
# id and a random token, or the process id alone where an earlier version wrote it).
_RUN_FILE = re.compile(r"\.?part-[0-9]{5}\.jsonl\.gz(\.[0-9]+(\.[0-9a-f]{8})?\.partial)?")
START_OVER = "use another output location, or remove it to start over"


def begin(
    plan: RunPlan,
    output: Storage,
    *,
    chosen_partitions: bool = True,
    restart: bool = False,
    start_over: str = START_OVER,
) -> tuple[RunPlan, bool]:
    """Start the run, or resume the one already at `output`: (the plan in force, resumed).

    Refused (nothing written) when `output` holds a run of other input or model, of another
    number of partitions when `plan`'s was chosen by the caller (otherwise the existing run's is
    kept), or files that are not a run's. `start_over` ends the refusal of a run that cannot be
    resumed (what the caller offers to do about it).

    With `restart`, the run already at `output` (if any) is discarded first, whatever it was:
    only when `output` holds an sds run's files and nothing else (`discard_run`).

    A run that finds no plan creates its own only if there is still none: where another run
    started at the same moment wrote its plan first, this one resumes it or is refused, as it
    would be a moment later (a restart does not discard that run too)."""
    if restart and output.exists(PLAN):
        discard_run(output)
    if not output.exists(PLAN):
        strangers = [f.key for f in output.list() if not f.key.startswith("_run/")]
        if strangers == [""]:
            raise Refused(
                f"{output.uri} is a file: a run writes its parts into a folder (or under an S3 "
                "prefix); name a new or empty one"
            )
        if strangers:
            raise Refused(
                f"{output.uri} is not empty and holds no sds run ({_some(strangers)}): refusing "
                "to write results among other files; choose an empty or new output location"
            )
        try:
            output.create_bytes(PLAN, _json_bytes(plan.to_json()))
            return plan, False
        except AlreadyExists:
            # Another run started here at the same moment and wrote its plan first (a restart
            # does not discard it): this one goes on as if started just after it.
            pass
    return _resume(plan, output, chosen_partitions=chosen_partitions, start_over=start_over)


def _resume(
    plan: RunPlan, output: Storage, *, chosen_partitions: bool, start_over: str
) -> tuple[RunPlan, bool]:
    """The run at `output`, which `plan` resumes; refused if `plan` is another run (`begin`)."""
    try:
        existing = RunPlan.from_json(read_json(output, PLAN))
    except Refused as exc:
        raise Refused(f"{output.uri}: {exc}") from None
    mine, theirs = plan.identity(), existing.identity()
    if not chosen_partitions:
        mine["partitions"] = theirs["partitions"]
    if mine != theirs:
        raise RunMismatch(
            f"{output.uri} holds a run this one cannot resume (started "
            f"{existing.created_at}): {'; '.join(differences(existing, plan, mine, theirs))}; "
            f"resuming would mix the results of both; {start_over}"
        )
    return existing, True


def differences(
    existing: RunPlan, plan: RunPlan, mine: dict[str, Any], theirs: dict[str, Any]
) -> list[str]:
    """What makes `plan` another run than `existing`, in words (their `identity()`s differ)."""
    found: list[str] = []
    if mine["job"] != theirs["job"]:
        found.append(f"it is a {existing.job} run, this one a {plan.job} run")
    before = {s.name: s for s in existing.sources}
    after = {s.name: s for s in plan.sources}
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            found.append(f"{name} is no longer in the input")
        elif (old.size, old.version) != (new.size, new.version):
            found.append(f"{name} changed since ({_change(old, new)})")
    found += [f"{name} is new in the input" for name in after if name not in before]
    if not found and mine["items"] != theirs["items"]:
        found.append("the input is cut into other items")
    if mine["model"] != theirs["model"]:
        found.append(f"it scored with {_model(existing.model)}, this one with {_model(plan.model)}")
    if mine["partitions"] != theirs["partitions"]:
        found.append(
            f"it has {counted(existing.partitions, 'partition')}, this one {plan.partitions}"
        )
    return found


def _change(old: Source, new: Source) -> str:
    said = [] if old.size == new.size else [f"{old.size} -> {new.size} bytes"]
    if old.version != new.version:
        said.append(f"modified {_version(old.version)} -> {_version(new.version)}")
    return ", ".join(said)


def _version(version: str) -> str:
    """A file's version as a person reads it: a local file's mtime (nanoseconds) as a UTC time;
    an S3 object's ETag as it is."""
    if version.isdigit():
        moment = datetime.fromtimestamp(int(version) / 1e9, UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # two saves in one second
    return version


def _model(model: ModelRef | None) -> str:
    return (
        "no model" if model is None else f"{model.name} v{model.version} ({model.sha256[:12]}...)"
    )


def _some(keys: Sequence[str], shown: int = 3) -> str:
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" and {more} more" if more > 0 else "")


def discard_run(output: Storage) -> None:
    """Remove the run at `output`: its plan, work, statuses, manifest and parts.

    Refused, removing nothing, unless `output` is an sds run: a plan that says so, and no file
    besides the run's own. The plan goes last, so an interrupted discard is still a run, which
    another discard finishes."""
    try:
        document = read_json(output, PLAN)
    except (ValueError, Refused):
        document = {}
    if not str(document.get("format", "")).startswith("sds-batch-run/"):
        raise Refused(
            f"{output.name(PLAN)} is not an sds run's plan: not removing anything at {output.uri}"
        )
    files = [f.key for f in output.list()]
    strangers = [k for k in files if not k.startswith("_run/") and not _RUN_FILE.fullmatch(k)]
    if strangers:
        raise Refused(
            f"{output.uri} holds files that are not the run's ({_some(strangers)}): not removing "
            "anything; move them, or use another output location"
        )
    output.delete_prefix(MANIFEST)  # first: the run no longer looks finished
    for key in files:
        if _RUN_FILE.fullmatch(key):
            output.delete_prefix(key)
    for prefix in (PARTS, WORK):
        output.delete_prefix(prefix)
    for key in files:  # anything else of the run's (none in this version's layout)
        if key.startswith("_run/") and key != PLAN and not key.startswith((PARTS, WORK)):
            output.delete_prefix(key)
    output.delete_prefix(PLAN)


def discard_failed(plan: RunPlan, output: Storage) -> bool:
    """After `plan`'s run failed with an error (not an interruption): discard it, as
    `discard_run` does, if it finished no part, and say whether it did.

    Such a run wrote no result, so nothing would mix; left in place, its plan would refuse every
    other run at `output` (a failure on a bad line is fixed by changing the input, which makes
    the next run another one). Only its shuffle is lost, which the next run redoes. A run that
    finished parts is kept: the same command resumes it, and so is a run planned since by
    another process (the plan in force is not `plan`)."""
    if output.exists(MANIFEST) or finished_parts(plan, output):
        return False
    try:
        check_in_force(plan, output)
    except RunReplaced:
        return False
    discard_run(output)
    return True


def check_locations(input_uri: str, output_uri: str) -> None:
    """Results must not land inside the history they are computed from (a later run would
    read them as input)."""
    source, target = input_uri.rstrip("/"), output_uri.rstrip("/")
    if not source.startswith("s3://"):
        source, target = str(Path(source).resolve()), str(Path(target).resolve())
    if target == source or target.startswith(source + "/"):
        raise UsageError(
            f"the output {output_uri} is inside the input {input_uri}: put it elsewhere"
        )


# Steps ---------------------------------------------------------------------------------------------


def shuffle_step(
    plan: RunPlan,
    source: Storage,
    output: Storage,
    index: int,
    *,
    labels_required: bool = False,
    spool_root: Path | None = None,
) -> Shuffled:
    """Shuffle item `index` (a no-op returning its record if it is already done)."""
    status = item_status(plan, index)
    if output.exists(status):
        return Shuffled.from_json(read_json(output, status))
    done = shuffle_item(
        source,
        plan.items[index],
        plan.partitions,
        output,
        item_object(plan, index),
        labels_required=labels_required,
        spool_root=spool_root,
    )
    check_in_force(plan, output)
    put_json(output, status, done.to_json())
    return done


def collect_step(plan: RunPlan, output: Storage) -> dict[str, Any]:
    """Every item's record in one document each partition reads; what the shuffle read."""
    shuffled = shuffled_key(plan)
    if output.exists(shuffled):
        return read_json(output, shuffled)
    records = []
    for item in plan.items:
        if not output.exists(item_status(plan, item.index)):
            raise HistoryError(f"item {item.index} ({item.source.name}) is not shuffled yet")
        records.append(read_json(output, item_status(plan, item.index)))
    document = {
        "items": records,
        "events": sum(r["events"] for r in records),
        "payments": sum(r["payments"] for r in records),
        "read_bytes": sum(r["read_bytes"] for r in records),
    }
    check_in_force(plan, output)
    put_json(output, shuffled, document)
    return document


def collect_run(plan: RunPlan, output: Storage) -> dict[str, Any]:
    """`collect_step`, and the history refused (`HistoryError`) where it gives the run nothing
    to compute, as `sds train` refuses it and in its words: no events, or no payments (both jobs
    write one row per payment, so the run would finish with empty parts and a manifest of
    nothing). The shuffle's counts are the first to know it. They count the lines read, so the
    events of "no payments among N events" include redeliveries, which training counts once.

    Every runner (`sds score` and `sds backfill` on one machine, the batch function's collect
    step on AWS) calls this, and discards the run when it raises (`discard_failed`): the run
    finished no part, so its output location is left as it was."""
    document = collect_step(plan, output)
    if not document["events"]:
        raise HistoryError(f"{plan.input}: no events")
    if not document["payments"]:
        raise HistoryError(f"{plan.input}: no payments among {document['events']} events")
    return document


def shuffled_segments(plan: RunPlan, output: Storage) -> list[tuple[str, Shuffled]]:
    document = read_json(output, shuffled_key(plan))
    done = [Shuffled.from_json(r) for r in document["items"]]
    return [(item_object(plan, d.item), d) for d in done]


def shuffled_items(plan: RunPlan, output: Storage) -> set[int]:
    """The items of `plan` whose status is written (an item's object is stored before it)."""
    names = {f.key for f in output.list(work_prefix(plan) + "items/")}
    return {i.index for i in plan.items if item_status(plan, i.index) in names}


def finished_parts(plan: RunPlan, output: Storage) -> set[int]:
    """The parts of `plan` whose status is written (a part is stored whole before it)."""
    names = {f.key for f in output.list(_scoped(PARTS, plan))}
    return {p for p in range(plan.partitions) if part_status(plan, p) in names}


class RunReplaced(Refused):
    """The run this process works on is no longer the one at its output location: another
    process discarded it (`--restart`, or a failed run's cleanup), and may have planned another
    there. Nothing this process would still write could count in that run."""


def check_in_force(plan: RunPlan, output: Storage) -> None:
    """Raise `RunReplaced` unless `plan` is still the run at `output` (its plan, by plan id).
    A plan without an id (written before ids, or never written: `make_plan`) has nothing to
    check against."""
    if not plan.plan_id:
        return
    current = read_json(output, PLAN) if output.exists(PLAN) else None
    if current is not None and str(current.get("plan_id", "")) == plan.plan_id:
        return
    now = (
        "its output location holds no run any more"
        if current is None
        else f"another run was planned there since ({current.get('created_at')})"
    )
    raise RunReplaced(
        f"{output.uri}: the run planned {plan.created_at} was discarded by another process while "
        f"this one worked on it ({now}): stopping without writing more; nothing of it counts "
        "in any other run. Start the command again to resume or start the run in force"
    )


ModelLoader = Callable[[ModelRef], LoadedModel]


def part_step(
    plan: RunPlan,
    output: Storage,
    partition: int,
    *,
    load: ModelLoader,
    segments: Sequence[tuple[str, Shuffled]] | None = None,
) -> dict[str, Any]:
    """Compute part `partition` and store it, then its status (a no-op if it is finished).

    Refused (HistoryError, nothing stored) when an event id whose check falls to this
    partition is held under two accounts anywhere in the history (`read_partition`)."""
    status_key = part_status(plan, partition)
    if output.exists(status_key):
        return read_json(output, status_key)
    started = time.perf_counter()
    segments = shuffled_segments(plan, output) if segments is None else segments
    origin = Origin(plan.items, open_storage(plan.input))
    history = load_partition(read_partition(output, segments, partition, check_ids=origin), origin)
    if plan.job == "score":
        assert plan.model is not None
        model = load(plan.model)
        rows, counts = jobs.score_rows(history, model)
    else:
        rows, counts = jobs.feature_rows(history)
    # Stored, and then marked finished, only while the run is still the one at `output`: a part
    # computed for a run discarded meanwhile is never written over the run planned since.
    check_in_force(plan, output)
    with output.open_write(part_object(partition)) as handle:
        jobs.write_rows(handle, rows)
    check_in_force(plan, output)
    status = {
        "part": partition,
        "object": part_object(partition),
        **counts.to_json(),
        "seconds": round(time.perf_counter() - started, 3),
        "finished_at": now_iso(),
    }
    put_json(output, status_key, status)
    return status


TOTALS = (
    "events",
    "payments",
    "rows",
    "duplicates",
    "flagged",
    "labelled",
    "fraud",
    "flagged_labelled",
    "flagged_fraud",
)


def summarize(
    plan: RunPlan,
    output: Storage,
    *,
    failures: Sequence[dict[str, Any]] = (),
    started_at: str | None = None,
    execution: str | None = None,
) -> dict[str, Any]:
    """The run's manifest from every finished part's status; written only when every part is
    finished (a run with failed parts reports them and stays resumable). Refused
    (`RunReplaced`) once `plan` is no longer the run at `output`, before the manifest as at the
    start."""
    check_in_force(plan, output)
    statuses = [
        read_json(output, part_status(plan, p)) for p in sorted(finished_parts(plan, output))
    ]
    missing = sorted(set(range(plan.partitions)) - {int(s["part"]) for s in statuses})
    totals = {key: sum(int(s.get(key, 0)) for s in statuses) for key in TOTALS}
    if plan.job == "features":
        for key in ("flagged", "flagged_labelled", "flagged_fraud"):
            totals.pop(key)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "job": plan.job,
        "run_id": plan.run_id,
        "plan_id": plan.plan_id,
        "input": plan.input,
        "output": plan.output,
        "files": len(plan.sources),
        "items": len(plan.items),
        "partitions": plan.partitions,
        "model": None if plan.model is None else plan.model.to_json(),
        "complete": not missing,
        "totals": totals,
        "parts": [
            {"part": int(s["part"]), "object": s["object"], "rows": s["rows"]} for s in statuses
        ],
        "missing_parts": missing,
        "failures": list(failures),
        "started_at": started_at or plan.created_at,
        "finished_at": now_iso(),
    }
    if plan.job == "score" and totals["labelled"]:
        # The input carried labels: how the version's decisions did on them (a backtest).
        flagged = totals["flagged_labelled"]
        manifest["backtest"] = {
            "labelled": totals["labelled"],
            "fraud": totals["fraud"],
            "flagged": flagged,
            "precision": totals["flagged_fraud"] / flagged if flagged else None,
            "recall": totals["flagged_fraud"] / totals["fraud"] if totals["fraud"] else None,
        }
    if execution:
        manifest["execution"] = execution
    if not missing:
        check_in_force(plan, output)  # a run discarded meanwhile is never reported finished
        put_json(output, MANIFEST, manifest)
    return manifest
