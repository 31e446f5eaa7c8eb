"""Training on a history in bounded memory (issue 17): the rows, split, sample and metrics of the
streamed, account-partitioned path are those of the in-memory computation, only the kept rows
are ever built, and a bad record is still named by file and line."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.partitioned as partitioned
from sds.kernel import pointintime
from sds.kernel.features import featurize_batch
from sds.kernel.registry import open_registry
from tests.support.trained_model import MODEL, SMALL_PARAMS, TRAINER
from training.data import LABEL, DataError, read_history, write_jsonl
from training.evaluate import evaluate
from training.onnx_export import onnx_scores, to_onnx
from training.partitioned import TrainingSet, downsample, time_ordered_split, training_set
from training.synthetic import activity_chunks, generate_activity
from training.train import STEPS, Progress, fit, train

QUIET = Progress(3, enabled=False)
SMALL_PARTITIONS = 64 * 1024  # bytes of JSON per partition: a small history spreads over many


@dataclasses.dataclass(frozen=True)
class InMemory:
    """What training computed before issue 17: the whole history in memory, then the sample."""

    kept: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    cut: int
    holdout_from: str
    fingerprint: str
    events: int
    payments: int
    duplicates: int


def in_memory(location: Path, *, rate: float, seed: int, holdout_fraction: float) -> InMemory:
    history = read_history(location)
    labels = np.asarray(history.labels, dtype=np.int64)
    cut = time_ordered_split(len(labels), holdout_fraction)
    kept, weights = downsample(labels, rate, seed=seed)
    payments = [history.payment_events[i] for i in kept]
    computed = pointintime.compute(
        history.events,
        history.times,
        [e["account_id"] for e in payments],
        history.payment_times[kept],
    )
    features = featurize_batch(payments, {n: v.tolist() for n, v in computed.items()})
    return InMemory(
        kept=kept,
        features=features,
        labels=labels[kept],
        weights=weights,
        cut=cut,
        holdout_from=history.timestamp(cut),
        fingerprint=history.fingerprint,
        events=len(history.events),
        payments=len(labels),
        duplicates=history.duplicates,
    )


@pytest.fixture(scope="module")
def scattered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated history over three files (plain, gzip, in a subfolder), some events redelivered,
    one file's events out of time order."""
    records = generate_activity(6000, seed=21)
    third = len(records) // 3
    root = tmp_path_factory.mktemp("scattered")
    write_jsonl(records[:third] + records[40:90], root / "a.jsonl")
    write_jsonl(list(reversed(records[third : 2 * third])), root / "b.jsonl.gz")
    write_jsonl(records[2 * third :], root / "sub" / "c.jsonl")
    return root


def _streamed(location: Path, *, rate: float, seed: int = 5, **kwargs: Any) -> TrainingSet:
    return training_set(
        location,
        holdout_fraction=0.2,
        negative_rate=rate,
        seed=seed,
        progress=QUIET,
        workers=kwargs.pop("workers", 1),
        partition_bytes=kwargs.pop("partition_bytes", SMALL_PARTITIONS),
        **kwargs,
    )


@pytest.mark.parametrize("rate", [1.0, 0.1])
def test_the_streamed_rows_are_the_in_memory_rows_of_the_same_history_and_seed(
    scattered: Path, rate: float
) -> None:
    # Given a history over several files, redelivered events and all, read into many partitions
    # When its training rows are built partition by partition, and in memory as before
    streamed = _streamed(scattered, rate=rate)
    expected = in_memory(scattered, rate=rate, seed=5, holdout_fraction=0.2)

    # Then it took several partitions, and the same payments are kept, in the same order, with
    # the same features (bit for bit), labels and weights
    assert streamed.partitions > 8
    assert np.array_equal(streamed.kept, expected.kept)
    assert streamed.features.dtype == expected.features.dtype
    assert np.array_equal(streamed.features, expected.features)
    assert np.array_equal(streamed.labels, expected.labels)
    assert np.array_equal(streamed.weights, expected.weights)
    # and the time-ordered split and the description of the history are the same
    assert (streamed.cut, streamed.holdout_from) == (expected.cut, expected.holdout_from)
    assert streamed.train_rows == int(np.searchsorted(expected.kept, expected.cut))
    assert streamed.fingerprint == expected.fingerprint
    assert (streamed.events, streamed.payments, streamed.duplicates) == (
        expected.events,
        expected.payments,
        expected.duplicates,
    )
    assert streamed.duplicates == 50
    if rate < 1:
        assert len(streamed.kept) < streamed.payments / 4  # a sample, not the history


def test_the_rows_do_not_depend_on_how_many_partitions_or_workers_read_them(
    scattered: Path,
) -> None:
    # Given the history read in one partition by this process, and in many by two workers
    one = _streamed(scattered, rate=0.3, partitions=1)
    many = _streamed(scattered, rate=0.3, workers=2)

    # Then the rows are the same
    assert (one.partitions, many.partitions) == (1, many.partitions) and many.partitions > 8
    for field in ("kept", "features", "labels", "weights"):
        assert np.array_equal(getattr(one, field), getattr(many, field)), field
    assert (one.cut, one.holdout_from) == (many.cut, many.holdout_from)


@pytest.mark.parametrize(
    ("files", "partitions", "workers", "said"),
    [
        (1, 1, 1, "by account into 1 partition (1 file, 1 worker) ..."),
        (3, 4, 2, "by account into 4 partitions (3 files, 2 workers) ..."),
    ],
)
def test_the_partitioning_step_counts_partitions_files_and_workers_in_words(
    scattered: Path, files: int, partitions: int, workers: int, said: str
) -> None:
    # Given a history in one file, or in three
    location = scattered / "a.jsonl" if files == 1 else scattered
    lines = io.StringIO()

    # When its rows are built into one partition by one worker, or into four by two
    training_set(
        location,
        holdout_fraction=0.2,
        negative_rate=0.1,
        seed=5,
        progress=Progress(STEPS, stream=lines, live=False),
        workers=workers,
        partitions=partitions,
    )

    # Then the step's line says "1 partition (1 file, 1 worker)", or "4 partitions (3 files, 2
    # workers)", and what it read in events
    first, done = lines.getvalue().splitlines()[:2]
    assert first.endswith(said), first
    assert re.fullmatch(r"\s+done in [0-9.]+ s: \d+ events", done), done


def test_only_one_partition_is_loaded_at_a_time_and_only_the_kept_payments_are_featurized(
    scattered: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a record of every partition loaded and every featurization call
    loaded: list[int] = []
    featurized: list[int] = []
    load, featurize = partitioned.load_partition, partitioned.featurize_batch

    def recording_load(lines: Any, origin: Any = None) -> Any:
        history = load(lines, origin)
        loaded.append(len(history.events))
        return history

    def recording_featurize(events: Any, computed: Any) -> Any:
        featurized.append(len(events))
        return featurize(events, computed)

    monkeypatch.setattr(partitioned, "load_partition", recording_load)
    monkeypatch.setattr(partitioned, "featurize_batch", recording_featurize)

    # When the rows are built with a tenth of the legitimate payments kept
    rows = _streamed(scattered, rate=0.1)

    # Then no load held more than one partition, a small share of the history
    assert max(loaded) == rows.largest_partition <= rows.events / 8
    assert sum(loaded) <= 2 * rows.events  # two passes over the partitions, nothing more
    # and the rows built are exactly the sample: each kept payment featurized once, no other
    assert sum(featurized) == len(rows.kept) == rows.features.shape[0]
    assert max(featurized) < len(rows.kept)  # a partition's share at a time


def test_a_trained_version_has_the_metrics_of_the_in_memory_rows(
    scattered: Path, tmp_path: Path
) -> None:
    # Given a sampled training run on the history (a few trees: the figures, not the model, matter)
    params = dataclasses.replace(SMALL_PARAMS, negative_rate=0.25, max_iter=5)
    version = train(
        data=scattered,
        registry=open_registry(tmp_path.as_uri(), MODEL),
        params=params,
        actor=TRAINER,
        progress=Progress(STEPS, enabled=False),
        workers=1,
    )

    # When the same model is fitted and evaluated on the rows computed in memory
    expected = in_memory(
        scattered, rate=0.25, seed=params.seed, holdout_fraction=params.holdout_fraction
    )
    rows = int(np.searchsorted(expected.kept, expected.cut))
    model = fit(
        expected.features[:rows],
        expected.labels[:rows],
        params,
        sample_weight=expected.weights[:rows],
    )
    # (evaluated as served: on its ONNX scores)
    scores = onnx_scores(to_onnx(model), expected.features[rows:])
    metrics, threshold = evaluate(
        expected.labels[rows:],
        scores,
        alert_rate=params.alert_rate,
        weights=expected.weights[rows:],
    )

    # Then the registered version's figures are those, and its manifest records the sampling
    manifest = version.manifest
    assert manifest["decision_threshold"] == threshold
    for name, value in metrics.items():
        assert manifest["metrics"][name] == value, name
    assert manifest["sampling"]["kept_payments"] == len(expected.kept)
    assert manifest["sampling"]["kept_fraud"] == int(expected.labels.sum())
    assert manifest["sampling"]["payments"] == expected.payments
    assert manifest["data"]["holdout_from"] == expected.holdout_from
    assert manifest["data"]["fingerprint"] == expected.fingerprint


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path


@pytest.mark.parametrize(
    ("name", "bad", "problem"),
    [
        ("b.jsonl", "{not json", "invalid JSON"),
        ("b.jsonl.gz", '{"type": "payment"}', "event_id"),
        ("b.jsonl", "unlabelled", "is_fraud: a payment's label must be true or false"),
    ],
)
def test_a_bad_record_stops_training_and_is_named_by_file_and_line(
    tmp_path: Path, name: str, bad: str, problem: str
) -> None:
    # Given a history whose second file has a bad third line
    records = generate_activity(200, seed=2)
    good = [json.dumps(r) for r in records]
    if bad == "unlabelled":
        payment = next(r for r in records if r["type"] == "payment")
        bad = json.dumps({k: v for k, v in payment.items() if k != LABEL})
    _lines(tmp_path / "data" / "a.jsonl", good[:100])
    bad_file = _lines(tmp_path / "data" / name, [*good[100:102], bad, *good[102:]])
    work = tmp_path / "work"
    work.mkdir()

    # When a model is trained on it
    with pytest.raises(DataError) as raised:
        train(
            data=tmp_path / "data",
            registry=open_registry((tmp_path / "registry").as_uri(), MODEL),
            params=SMALL_PARAMS,
            actor=TRAINER,
            progress=Progress(STEPS, enabled=False),
            work_dir=work,
        )

    # Then the error names the file, the line and the problem; nothing is registered and the
    # partitions written so far are gone
    assert f"{bad_file}:3" in str(raised.value)
    assert problem in str(raised.value)
    assert not (tmp_path / "registry").exists()
    assert list(work.iterdir()) == []


def test_a_history_without_payments_is_refused_by_name(tmp_path: Path) -> None:
    logins = [r for r in generate_activity(100, seed=3) if r["type"] == "login"]
    path = write_jsonl(logins, tmp_path / "logins.jsonl")
    with pytest.raises(DataError, match=r"logins\.jsonl: no payments among \d+ events"):
        _streamed(path, rate=1.0)


def test_a_history_with_too_few_payments_is_refused_counting_payments_not_events(
    tmp_path: Path,
) -> None:
    # Given a history of many logins and 40 payments
    records = generate_activity(300, seed=3)
    payments = [r for r in records if r["type"] == "payment"][:40]
    logins = [r for r in records if r["type"] == "login"]
    path = write_jsonl([*logins, *payments], tmp_path / "few.jsonl")
    assert len(logins) > 40

    # Then the error counts the payments on each side of the split, not the events
    with pytest.raises(
        ValueError,
        match=r"need at least 10 training and 10 holdout payments; the 40 payments give 32 "
        r"before the holdout and 8 in it \(--holdout-fraction 0\.2\)",
    ):
        _streamed(path, rate=1.0)


def _relabelled(tmp_path: Path, fraud: slice) -> Path:
    """A generated history of 1,000 payments whose only fraud are the payments at `fraud` in time
    order."""
    records = generate_activity(1000, seed=3)
    payments = sorted(
        (r for r in records if r["type"] == "payment"), key=lambda r: str(r["occurred_at"])
    )
    for payment in payments:
        payment[LABEL] = False
    for payment in payments[fraud]:
        payment[LABEL] = True
    return write_jsonl(records, tmp_path / "history.jsonl")


@pytest.mark.parametrize(
    ("fraud", "problem"),
    [
        (slice(0), r"the history's 1000 payments hold no fraud"),
        (slice(None), r"the history's 1000 payments are all fraud"),
        (
            slice(950, 960),
            r"the 800 payments before the holdout \(the training part\) hold no fraud "
            r"\(the history's 10 fraud payments are all in the holdout\): .*a smaller "
            r"--holdout-fraction",
        ),
        (
            slice(100, 110),
            r"the holdout \(the most recent 200 payments\) holds no fraud "
            r"\(the history's 10 fraud payments are all before it\): .*a larger "
            r"--holdout-fraction",
        ),
    ],
)
def test_a_split_without_fraud_or_legitimate_payments_on_a_side_is_refused_before_featurizing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fraud: slice, problem: str
) -> None:
    # Given a history whose fraud is nowhere, everywhere, only recent or only old
    history = _relabelled(tmp_path, fraud)

    def featurized(*args: Any) -> Any:
        raise AssertionError("the features were computed before the split was checked")

    monkeypatch.setattr(partitioned, "_rows_worker", featurized)
    # When its training rows are read (in this process: one worker)
    # Then the side of the time-ordered split that lacks a class is named, with what to change,
    # before a feature is computed
    with pytest.raises(DataError, match=problem):
        _streamed(history, rate=1.0)


# Generating a long history ------------------------------------------------------------------------


def test_the_generator_streams_chunks_that_make_the_same_history() -> None:
    # Given the generator's records for one seed, whole and in chunks of 1000
    whole = generate_activity(3000, seed=4)
    chunks = list(activity_chunks(3000, seed=4, chunk=1000))

    # Then no chunk holds more than its size, and together they are the same records
    assert max(len(c) for c in chunks) == 1000 and len(chunks) == -(-len(whole) // 1000)
    assert [r for c in chunks for r in c] == whole


def test_the_generated_file_is_the_one_earlier_versions_wrote_for_the_same_seed(
    tmp_path: Path,
) -> None:
    # Given the history `sds generate --events 300 --seed 1` writes whole (its sha256; ids carry
    # the seed and size since 2026-12-01, so earlier files differ in their ids alone)
    before = "d8f3cc1abc6f2240b38c1e496a9ac6bf8f1a7fe8304a1bf7a21b3ba9c20d9123"

    # When it is written now, streamed a batch of lines at a time
    path = write_jsonl(
        (r for chunk in activity_chunks(300, seed=1, chunk=64) for r in chunk),
        tmp_path / "h.jsonl.gz",
    )

    # Then the bytes are the same (gzip included), and no partial file is left beside it
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [p.name for p in tmp_path.iterdir()] == ["h.jsonl.gz"]


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    def failing() -> Any:
        yield from generate_activity(10, seed=1)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(failing(), tmp_path / "h.jsonl.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_two_writers_of_one_path_each_leave_a_whole_file(suffix: str, tmp_path: Path) -> None:
    # Given the bytes each of two histories is written as on its own
    first, second = generate_activity(30, seed=1), generate_activity(20, seed=2)
    alone = tmp_path / "alone"
    whole = {
        n: write_jsonl(r, alone / f"{n}{suffix}").read_bytes()
        for n, r in (("first", first), ("second", second))
    }

    # And a history being written to h.jsonl(.gz), with a second writer of the same path (another
    # `sds generate --force`) starting and finishing while the first is halfway
    folder = tmp_path / "out"
    path = folder / f"h{suffix}"

    def meanwhile() -> Any:
        yield from first[:10]
        assert write_jsonl(second, path).read_bytes() == whole["second"]
        yield from first[10:]

    # When the first finishes
    write_jsonl(meanwhile(), path)

    # Then the path holds the first's file, whole (the last to finish wins), and no partial file
    # of either is left beside it
    assert path.read_bytes() == whole["first"]
    assert [p.name for p in folder.iterdir()] == [path.name]
