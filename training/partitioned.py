"""Training rows from a history of any length, in bounded memory: the backfill's account
partitions, the time-ordered split and negative downsampling applied while streaming.

Point-in-time aggregates need every event of an account, in time order, but not every account's
at once. So training reads a history the way `sds backfill` does (`sds.kernel.batch`): one
shuffle writes each event to its account's partition on local disk (validated on the way: a bad
record stops the run and names its file and line), then each partition is loaded alone. Two
passes over the partitions:

1. the payments' times (and labels): from them, the payments' order in time over the whole
   history, the time-ordered split (`time_ordered_split`) and the sample (`downsample`), exactly
   as if the history were in memory. This pass holds about 18 bytes per payment, not the events;
2. each partition's kept payments only: their account aggregates as of just before each
   (`sds.kernel.pointintime`, from the partition's events, which are all of those accounts'
   events) and their features (`featurize_batch`), placed at their row in time order.

What stays in memory is the kept sample (features, label, weight) and one partition per worker;
the history itself is on disk, uncompressed, for the length of the run (about 200 bytes per
event). The rows, split, sample and fingerprint are those of `training.data.read_history` and
the in-memory computation on the same history (tested).
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sds.kernel.batch import local
from sds.kernel.batch.jobs import aggregates_at_payments
from sds.kernel.batch.run import RunPlan, collect_step, make_plan, shuffled_segments
from sds.kernel.batch.shuffle import (
    HistoryError,
    Origin,
    PartitionHistory,
    Shuffled,
    default_workers,
    load_partition,
    read_partition,
)
from sds.kernel.batch.storage import Storage, StorageError, open_storage
from sds.kernel.errors import counted
from sds.kernel.features import N_FEATURES, featurize_batch
from sds.progress import Progress
from training.data import DataError, fingerprint_entry

HASH_CHUNK = 8 * 1024 * 1024


def time_ordered_split(n: int, holdout_fraction: float) -> int:
    """Index of the first holdout row: everything before it is the past, used for training."""
    cut = round(n * (1 - holdout_fraction))
    if cut < 10 or n - cut < 10:
        raise ValueError(
            f"need at least 10 training and 10 holdout payments; the {n} payments give {cut} "
            f"before the holdout and {n - cut} in it (--holdout-fraction {holdout_fraction:g})"
        )
    return cut


def check_classes(labels: np.ndarray, cut: int) -> None:
    """Refuse, before a feature is computed, a history the fit or the evaluation cannot use: the
    payments before the time-ordered split (the fit's) and after it (the holdout) must each hold
    fraud and legitimate payments. `labels` are in time order, `cut` the first holdout row."""
    n, fraud = len(labels), int(labels.sum())
    if fraud in (0, n):
        raise DataError(
            f"the history's {n} payments "
            + ("hold no fraud" if not fraud else "are all fraud")
            + ": a model learns from fraud and legitimate payments, labelled is_fraud"
        )
    before, after = int(labels[:cut].sum()), int(labels[cut:].sum())
    if before in (0, cut):
        kind, count = ("fraud", fraud) if not before else ("legitimate", n - fraud)
        raise DataError(
            f"the {cut} payments before the holdout (the training part) hold no {kind} (the "
            f"history's {count} {kind} payments are all in the holdout): the fit needs both; "
            "use more data or a smaller --holdout-fraction"
        )
    if after in (0, n - cut):
        kind, count = ("fraud", fraud) if not after else ("legitimate", n - fraud)
        raise DataError(
            f"the holdout (the most recent {n - cut} payments) holds no {kind} (the history's "
            f"{count} {kind} payments are all before it): its metrics and the decision "
            "threshold need both; use more data or a larger --holdout-fraction"
        )


def downsample(labels: np.ndarray, rate: float, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices kept, in order; their weights): every fraud payment, and each legitimate one with
    probability `rate`, weighted 1/rate so sums over the sample estimate sums over the history.

    The draw depends only on the seed and the payments' order, so a run is reproducible.
    """
    if rate >= 1:
        return np.arange(len(labels)), np.ones(len(labels))
    draw = np.random.default_rng(seed).random(len(labels))
    kept = np.flatnonzero((labels == 1) | (draw < rate))
    weights = np.where(labels[kept] == 1, 1.0, 1.0 / rate)
    return kept, weights


@dataclass(frozen=True)
class TrainingSet:
    """The kept payments' rows in time order, and what the history was."""

    features: np.ndarray  # (kept, N_FEATURES) float32
    labels: np.ndarray  # int64, per kept row
    weights: np.ndarray  # float64, per kept row (1/rate for a sampled legitimate payment)
    kept: np.ndarray  # each kept row's position among all payments in time order (int64)
    train_rows: int  # kept rows before the split
    cut: int  # position of the first holdout payment among all payments
    holdout_from: str  # its occurred_at, as written in the data
    payments: int  # distinct payments in the history
    fraud: int  # of which labelled fraud
    events: int  # distinct events
    duplicates: int  # redelivered events, counted once
    fingerprint: str
    sources: list[str]
    partitions: int
    largest_partition: int  # events in the largest partition: what one worker held at a time


def history_fingerprint(storage: Storage, sources: list[tuple[str, str]]) -> str:
    """`read_history`'s fingerprint (each file's name and the sha256 of its bytes, in order),
    reading each file as a stream."""
    digest = hashlib.sha256()
    for key, name in sources:
        content = hashlib.sha256()
        with closing(storage.stream(key)) as raw:
            while chunk := raw.read(HASH_CHUNK):
                content.update(chunk)
        digest.update(fingerprint_entry(name, content.digest()))
    return digest.hexdigest()


def training_set(
    location: str | Path,
    *,
    holdout_fraction: float,
    negative_rate: float,
    seed: int,
    progress: Progress,
    workers: int | None = None,
    work_dir: str | Path | None = None,
    partition_bytes: int | None = None,
    partitions: int | None = None,
) -> TrainingSet:
    """Read the history at `location` (file, folder or s3:// prefix) into the kept training rows.

    The shuffle's files go to a temporary folder under `work_dir` (the system's temporary
    folder by default), removed when the rows are built, whatever happens. Partitions hold about
    `partition_bytes` of JSON each (the backfill's default) unless `partitions` says how many.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if work_dir is not None and not Path(work_dir).is_dir():
        raise ValueError(f"{work_dir}: no such folder for the partitioned history")
    workers = workers or default_workers()
    try:
        source = open_storage(location)
        with tempfile.TemporaryDirectory(prefix="sds-train-", dir=work_dir) as work:
            return _build(
                source,
                str(Path(work) / "run"),
                holdout_fraction=holdout_fraction,
                negative_rate=negative_rate,
                seed=seed,
                progress=progress,
                workers=workers,
                partition_bytes=partition_bytes,
                partitions=partitions,
            )
    except (HistoryError, StorageError) as exc:
        raise DataError(str(exc)) from None


def _build(
    source: Storage,
    work: str,
    *,
    holdout_fraction: float,
    negative_rate: float,
    seed: int,
    progress: Progress,
    workers: int,
    partition_bytes: int | None,
    partitions: int | None,
) -> TrainingSet:
    plan = make_plan(
        "features",
        source,
        work,
        model=None,
        partitions=partitions,
        partition_bytes=partition_bytes,
        plan_id="",  # written nowhere: `work` is this training's own (no run's plan is there)
    )
    output = open_storage(work)
    named = [(s.key, s.name) for s in plan.sources]

    def shuffle() -> int:
        tasks = [(plan.to_json(), item.index, True, None) for item in plan.items]
        events = 0
        for _, done in local.parallel(local.shuffle_worker, tasks, workers=workers):
            events += int(done["events"])
        collect_step(plan, output)
        return events

    progress.run(
        f"partitioning {source.uri} by account into {counted(plan.partitions, 'partition')} "
        f"({counted(len(plan.sources), 'file')}, {counted(workers, 'worker')})",
        shuffle,
        lambda n: counted(n, "event"),
    )
    fingerprint = history_fingerprint(source, named)

    # Pass 1: every payment's time, input order and label, partition by partition.
    keys = progress.run(
        "ordering the payments in time: the split and the sample",
        lambda: _order(plan, workers, holdout_fraction, negative_rate, seed),
        lambda k: (
            f"{k.events} events, {k.payments} payments, {k.fraud} fraud"
            + (f", {k.duplicates} redelivered" if k.duplicates else "")
            + f"; {len(k.kept)} kept"
        ),
    )

    # Pass 2: the kept payments' aggregates and features, each into its row.
    features = np.empty((len(keys.kept), N_FEATURES), np.float32)
    stamps: dict[int, str] = {}

    def rows() -> int:
        tasks = [
            (plan.to_json(), p, positions, keys.cut_at[1] if keys.cut_at[0] == p else -1)
            for p, (positions, _) in keys.per_partition.items()
        ]
        order = [p for p in keys.per_partition]
        for index, (matrix, stamp) in local.parallel(_rows_worker, tasks, workers=workers):
            features[keys.per_partition[order[index]][1]] = matrix
            if stamp is not None:
                stamps[0] = stamp
        return len(keys.kept)

    progress.run(
        "computing the kept payments' account aggregates (sds.kernel.pointintime) and "
        "features (featurize_batch), partition by partition",
        rows,
        lambda n: f"{n} x {N_FEATURES}",
    )
    if keys.cut_at[0] not in keys.per_partition:  # no kept payment shares its partition
        stamps[0] = _stamp(plan.to_json(), *keys.cut_at)
    return TrainingSet(
        features=features,
        labels=keys.labels,
        weights=keys.weights,
        kept=keys.kept,
        train_rows=int(np.searchsorted(keys.kept, keys.cut)),
        cut=keys.cut,
        holdout_from=stamps[0],
        payments=keys.payments,
        fraud=keys.fraud,
        events=keys.events,
        duplicates=keys.duplicates,
        fingerprint=fingerprint,
        sources=[name for _, name in named],
        partitions=plan.partitions,
        largest_partition=keys.largest_partition,
    )


@dataclass(frozen=True)
class _Order:
    kept: np.ndarray  # positions in time order of the kept payments, ascending
    labels: np.ndarray
    weights: np.ndarray
    cut: int
    cut_at: tuple[int, int]  # (partition, position among its payments) of the cut payment
    # partition -> (positions of its kept payments among its payments, their rows)
    per_partition: dict[int, tuple[np.ndarray, np.ndarray]]
    payments: int
    fraud: int
    events: int
    duplicates: int
    largest_partition: int


def _order(
    plan: RunPlan, workers: int, holdout_fraction: float, negative_rate: float, seed: int
) -> _Order:
    tasks = [(plan.to_json(), p) for p in range(plan.partitions)]
    parts: list[dict[str, Any]] = [{}] * plan.partitions
    for index, keys in local.parallel(_keys_worker, tasks, workers=workers):
        parts[index] = keys
    events = sum(int(k["events"]) for k in parts)
    if not events:
        raise DataError(f"{plan.input}: no events")
    sizes = np.array([len(k["times"]) for k in parts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    n = int(offsets[-1])
    if not n:
        raise DataError(f"{plan.input}: no payments among {events} events")
    # About 18 bytes per payment from here on (times, input order, label), not the events.
    labels = np.concatenate([k.pop("labels") for k in parts]).view(np.int8)
    times = np.concatenate([k.pop("times") for k in parts])
    order = np.concatenate([k.pop("order") for k in parts])
    duplicates = sum(int(k["duplicates"]) for k in parts)
    largest = max(int(k["events"]) for k in parts)
    del parts
    # Time order over the whole history, ties in input order: read_history's order.
    ranked = np.lexsort((order, times))
    del times, order
    cut = time_ordered_split(n, holdout_fraction)
    check_classes(labels[ranked], cut)
    kept, weights = downsample(labels[ranked], negative_rate, seed=seed)
    rank_of = np.empty(n, np.int64)
    rank_of[ranked] = np.arange(n)
    is_kept = np.zeros(n, bool)
    is_kept[kept] = True
    per_partition: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for p in range(plan.partitions):
        ranks = rank_of[offsets[p] : offsets[p + 1]]
        positions = np.flatnonzero(is_kept[ranks])
        if len(positions):
            per_partition[p] = (positions, np.searchsorted(kept, ranks[positions]))
    first = int(ranked[cut])
    where = int(np.searchsorted(offsets, first, side="right")) - 1
    return _Order(
        kept=kept,
        labels=labels[ranked[kept]].astype(np.int64),
        weights=weights,
        cut=cut,
        cut_at=(where, first - int(offsets[where])),
        per_partition=per_partition,
        payments=n,
        fraud=int(labels.sum()),
        events=events,
        duplicates=duplicates,
        largest_partition=largest,
    )


# Worker functions (module level: a worker process imports them) ----------------------------------

_SEGMENTS: dict[str, list[tuple[str, Shuffled]]] = {}


def _load(plan: dict[str, Any], partition: int, *, check_ids: bool = False) -> PartitionHistory:
    """The partition's history; with `check_ids` (the first pass, which reads every partition),
    refused if an event id it checks is held under two accounts (`read_partition`)."""
    run = RunPlan.from_json(plan)
    output = open_storage(run.output)
    if run.output not in _SEGMENTS:  # read once per process: every partition needs them
        _SEGMENTS.clear()
        _SEGMENTS[run.output] = shuffled_segments(run, output)
    origin = Origin(run.items, open_storage(run.input))
    return load_partition(
        read_partition(
            output, _SEGMENTS[run.output], partition, check_ids=origin if check_ids else None
        ),
        origin,
    )


def _keys_worker(plan: dict[str, Any], partition: int) -> dict[str, Any]:
    """A partition's payments (in its time order): time, input order, label; its event count."""
    history = _load(plan, partition, check_ids=True)
    payments = history.payments
    labels = history.labels
    return {
        "times": history.times[payments],
        "order": history.order[payments],
        "labels": np.fromiter(
            (labels[history.events[i]["event_id"]] for i in payments.tolist()), bool, len(payments)
        ),
        "events": len(history.events),
        "duplicates": history.duplicates,
    }


def _rows_worker(
    plan: dict[str, Any], partition: int, positions: np.ndarray, stamp_at: int
) -> tuple[np.ndarray, str | None]:
    """The features of the partition's payments at `positions` (and the occurred_at of the one
    at `stamp_at`, if it is not -1)."""
    history = _load(plan, partition)
    everyone = history.payments
    payments, computed = aggregates_at_payments(history, everyone[positions])
    events = [history.events[i] for i in payments.tolist()]
    matrix = featurize_batch(events, {name: v.tolist() for name, v in computed.items()})
    stamp = None if stamp_at < 0 else str(history.events[int(everyone[stamp_at])]["occurred_at"])
    return matrix, stamp


def _stamp(plan: dict[str, Any], partition: int, position: int) -> str:
    history = _load(plan, partition)
    return str(history.events[int(history.payments[position])]["occurred_at"])
