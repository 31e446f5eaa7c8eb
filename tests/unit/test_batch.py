"""Batch runs over a history, partitioned by account: backfill, scoring, resuming, refusing.

The partitioned computation must give exactly what one process computing the whole history
gives (item 2 of issue 17), and a batch score must be the score the API gives the same payment
with the same account history.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.inference.app import InferenceApp
from sds.kernel import pointintime
from sds.kernel.aggregates import NAMES
from sds.kernel.batch import run as batch_run
from sds.kernel.batch.run import ModelRef
from sds.kernel.batch.shuffle import (
    MAX_GZ_RANGES,
    HistoryError,
    Origin,
    Source,
    item_lines,
    plan_items,
    shuffle_item,
)
from sds.kernel.batch.storage import LocalStorage
from sds.kernel.errors import Refused, UsageError
from sds.kernel.features import featurize_batch, parse_time
from sds.kernel.featurestore import open_feature_store
from sds.kernel.online import OnlineFeatures
from sds.kernel.registry import open_registry
from sds.kernel.serving import LoadedModel, ModelUnavailable, shown_scores
from sds.ops.batch import run_locally
from tests.support.trained_model import TrainedModel
from training.data import LABEL, read_history, write_jsonl
from training.synthetic import generate_activity


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        rows.extend(json.loads(line) for line in gzip.decompress(part.read_bytes()).splitlines())
    return rows


def _single_process(history_path: Path) -> dict[str, dict[str, float]]:
    """Each payment's aggregates, computed by one process over the whole history at once."""
    history = read_history(history_path)
    payments = history.payment_events
    computed = pointintime.compute(
        history.events,
        history.times,
        [e["account_id"] for e in payments],
        history.payment_times,
    )
    return {
        e["event_id"]: {name: float(computed[name][i]) for name in NAMES}
        for i, e in enumerate(payments)
    }


def _model(trained: TrainedModel) -> ModelRef:
    return ModelRef("fraud", trained.version.number, trained.version.sha256, trained.registry_uri)


# Backfill: partitioned = one process -------------------------------------------------------------


def test_the_partitioned_backfill_equals_the_single_process_computation(
    tmp_path: Path, small_history: Path
) -> None:
    # Given a history split over a plain file cut into many ranges, a gzipped file and a
    # subfolder, with some events redelivered
    records = generate_activity(1500, seed=11)
    third = len(records) // 3
    data = tmp_path / "data"
    write_jsonl(records[:third] + records[5:40], data / "a.jsonl")
    write_jsonl(records[third : 2 * third], data / "b.jsonl.gz")
    write_jsonl(records[2 * third :], data / "sub" / "c.jsonl")
    write_jsonl(records, tmp_path / "whole.jsonl")

    # When the aggregates are backfilled in 7 partitions from items of 20 kB
    done = run_locally(
        "features",
        data=str(data),
        out=str(tmp_path / "out"),
        workers=1,
        partitions=7,
        range_bytes=20_000,
    )

    # Then every payment has exactly the values of the single-process computation
    expected = _single_process(tmp_path / "whole.jsonl")
    rows = _rows(tmp_path / "out")
    assert len(rows) == len(expected)
    assert {r["event_id"]: {n: r[n] for n in NAMES} for r in rows} == expected
    # And the manifest accounts for every event, the redelivered ones once
    totals = done.manifest["totals"]
    assert done.manifest["complete"] and done.manifest["partitions"] == 7
    assert totals["events"] == len(records) and totals["duplicates"] == 35
    assert totals["rows"] == totals["payments"] == len(expected)
    assert len(done.manifest["parts"]) == 7 and done.manifest["items"] > 3


def test_the_result_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    # Given one history
    data = write_jsonl(generate_activity(800, seed=5), tmp_path / "h.jsonl.gz")

    # When it is backfilled by one process and by a pool of two
    run_locally("features", data=str(data), out=str(tmp_path / "one"), workers=1, partitions=4)
    run_locally("features", data=str(data), out=str(tmp_path / "two"), workers=2, partitions=4)

    # Then the parts are the same bytes
    for part in sorted((tmp_path / "one").glob("part-*")):
        assert part.read_bytes() == (tmp_path / "two" / part.name).read_bytes()


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=60),
    range_bytes=st.integers(1, 200),
    trailing_newline=st.booleans(),
    compression=st.sampled_from(["none", "gzip", "gzip members", "gzip members, padded"]),
    misestimate=st.sampled_from([0.0, 0.3, 1.0, 3.0]),
)
def test_every_line_of_a_file_belongs_to_exactly_one_range_and_is_named_by_its_line(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    range_bytes: int,
    trailing_newline: bool,
    compression: str,
    misestimate: float,
) -> None:
    # Given a file of lines of any lengths (empty ones too), plain or gzipped (in one member, or
    # in three cut at a third and a half of the content, wherever that falls, with zero padding
    # after each, as gzip.GzipFile reads them)
    lines = [(f"{i}:" + "x" * n).encode() for i, n in enumerate(lengths)]
    content = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    stored = content
    if compression != "none":
        cuts = [0, len(content) // 3, len(content) // 2, len(content)]
        members = (
            [content]
            if compression == "gzip"
            else [content[a:b] for a, b in itertools.pairwise(cuts)]
        )
        padding = b"\x00" * 7 if compression.endswith("padded") else b""
        stored = b"".join(gzip.compress(m, mtime=0) + padding for m in members)
    path = tmp_path_factory.mktemp("ranges") / ("h.jsonl" if compression == "none" else "h.gz")
    path.write_bytes(stored)
    storage = LocalStorage(path)
    source = Source("", str(path), len(stored), "1")
    # (a .gz file's size is estimated: the estimate may be far off, either way)
    estimate = len(content) if compression == "none" else round(len(content) * misestimate)

    # When it is cut into ranges and each range reads its lines
    items = plan_items([source], [estimate], range_bytes)
    read = [
        (item.index, where, line) for item in items for where, line in item_lines(storage, item)
    ]

    # Then together they read every line once, in order
    assert [line for _, _, line in read] == lines
    # And a .gz file's lines are named by their line number, in any range, as a problem in one
    # is named after the shuffle (`Origin.where`)
    if compression != "none":
        assert [where for _, where, _ in read] == [f"{path}:{n + 1}" for n in range(len(lines))]
        origin = Origin(items, storage)
        by_item = itertools.groupby(read, key=lambda entry: entry[0])
        positions = [(index, p) for index, group in by_item for p, _ in enumerate(group)]
        assert [origin.where(index, p) for index, p in positions] == [w for _, w, _ in read]
        assert len(items) <= MAX_GZ_RANGES and items[-1].to_end


def test_a_truncated_or_corrupt_gzip_file_is_named_whatever_range_reads_it(tmp_path: Path) -> None:
    # Given a gzipped history cut short, and one with garbage after its member
    content = b"".join(b'{"line": %d}\n' % i for i in range(2000))
    packed = gzip.compress(content, mtime=0)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(packed[: len(packed) - 9])
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(packed + b"not gzip")

    for path in (truncated, garbage):
        storage = LocalStorage(path)
        source = Source("", str(path), path.stat().st_size, "1")
        # When each of its ranges is read
        for item in plan_items([source], [len(content)], 4096):
            # Then the one that reaches the damage says the file is not valid gzip; the others
            # read their lines
            try:
                list(item_lines(storage, item))
            except HistoryError as exc:
                assert str(exc).startswith(f"{path}: not a valid gzip file (")
                assert item.to_end
            else:
                assert not item.to_end


# Scoring = the API --------------------------------------------------------------------------------


def test_a_batch_score_is_the_score_the_api_gives_with_the_same_account_history(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # Given the history of a few accounts, among them some with bursts of failed logins
    records = generate_activity(4000, seed=3)
    busy = {r["account_id"] for r in records if r["type"] == "login" and r["outcome"] == "failure"}
    accounts = sorted(busy)[:12] + sorted({r["account_id"] for r in records} - busy)[:8]
    history = [r for r in records if r["account_id"] in accounts]
    data = write_jsonl(history, tmp_path / "h.jsonl")

    # When it is scored as a batch
    run_locally(
        "score", data=str(data), out=str(tmp_path / "out"), model=_model(trained), workers=1
    )
    batch = {r["event_id"]: r for r in _rows(tmp_path / "out")}

    # And each payment is sent to the API as it happens, its account's events folded into the
    # feature store as they arrive
    app = InferenceApp(
        trained.settings(feature_store_uri=f"sqlite://{tmp_path / 'store.db'}"),
        metrics=lambda values, dimensions: None,
    )
    online = OnlineFeatures(open_feature_store(f"sqlite://{tmp_path / 'store.db'}"))
    api: dict[str, dict[str, Any]] = {}
    for record in sorted(history, key=lambda r: parse_time(r["occurred_at"])):
        event = {k: v for k, v in record.items() if k != LABEL}
        time = parse_time(event["occurred_at"])
        if event["type"] == "payment":
            response = app.handle(
                {"httpMethod": "POST", "path": "/predict", "body": json.dumps({"events": [event]})}
            )
            assert response["statusCode"] == 200, response["body"]
            api[event["event_id"]] = json.loads(response["body"])["predictions"][0]
        online.apply([(time, event)], now=time)

    # Then every payment has the API's score and decision, and names the model
    assert set(batch) == set(api) and len(api) > 50
    threshold = trained.version.manifest["decision_threshold"]
    for event_id, prediction in api.items():
        row = batch[event_id]
        assert row["fraud_probability"] == prediction["fraud_probability"], event_id
        assert row["is_fraud"] == prediction["is_fraud"], event_id
        assert row["is_fraud"] == (row["fraud_probability"] >= threshold), event_id
        assert (row["model_version"], row["model_sha256"]) == (
            trained.version.number,
            trained.version.sha256,
        )
    # And the failed logins did move scores (the aggregates are not all zero)
    assert len({row["fraud_probability"] for row in batch.values()}) > 10


def test_a_history_dated_ahead_of_the_clock_is_scored_which_the_api_refuses(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # Given a history of payments and logins dated in 2098 (the API refuses such a payment: its
    # account's events cannot have been folded yet; a history holds them all)
    records = [
        {**r, "occurred_at": "2098" + r["occurred_at"].removeprefix("2026")}
        for r in generate_activity(400, seed=3)
    ]
    assert all(r["occurred_at"].startswith("2098-") for r in records)
    data = write_jsonl(records, tmp_path / "h.jsonl")

    # When it is scored as a batch, then every payment is scored
    run_locally(
        "score", data=str(data), out=str(tmp_path / "out"), model=_model(trained), workers=1
    )
    payments = {r["event_id"] for r in records if r["type"] == "payment"}
    assert {r["event_id"] for r in _rows(tmp_path / "out")} == payments


def test_a_scored_history_with_labels_reports_a_backtest_and_keeps_each_label(
    tmp_path: Path, trained: TrainedModel, small_history: Path
) -> None:
    # When the labelled training history is scored
    done = run_locally(
        "score",
        data=str(small_history),
        out=str(tmp_path / "out"),
        model=_model(trained),
        workers=1,
        partitions=3,
    )

    # Then each row carries its payment's label, and the manifest how the decisions did
    rows = _rows(tmp_path / "out")
    labels = {
        e["event_id"]: lab
        for e, lab in zip(
            read_history(small_history).payment_events,
            read_history(small_history).labels,
            strict=True,
        )
    }
    assert {r["event_id"]: r["label"] for r in rows} == labels
    backtest = done.manifest["backtest"]
    flagged_fraud = sum(r["is_fraud"] and r["label"] for r in rows)
    assert backtest["labelled"] == len(rows) and backtest["fraud"] == sum(labels.values())
    assert backtest["flagged"] == sum(r["is_fraud"] for r in rows) > 0
    assert backtest["precision"] == pytest.approx(flagged_fraud / backtest["flagged"])
    assert backtest["recall"] == pytest.approx(flagged_fraud / backtest["fraud"])


def test_every_row_s_decision_is_its_shown_score_against_the_version_s_threshold(
    tmp_path: Path, trained: TrainedModel, small_history: Path
) -> None:
    # Given each payment's score, as the API's model gives it with the account's history
    history = read_history(small_history)
    payments = history.payment_events
    computed = pointintime.compute(
        history.events,
        history.times,
        [e["account_id"] for e in payments],
        history.payment_times,
    )
    model = LoadedModel(trained.registry().read_artifact(1), trained.version.manifest)
    matrix = featurize_batch(payments, {n: v.tolist() for n, v in computed.items()})
    scores = dict(zip([e["event_id"] for e in payments], model.predict(matrix), strict=True))
    # and a version whose threshold is one of them (as training chooses it), one that
    # round(score, 6) would show below the threshold
    below_when_rounded = sorted(s for s in scores.values() if round(s, 6) < s and s > 0.5)
    assert below_when_rounded, "no high score rounds down: the case is not exercised"
    threshold = below_when_rounded[0]
    root = trained.copy_registry(tmp_path / "registry")
    version = open_registry(root.as_uri(), "fraud").register(
        {"model.onnx": trained.registry().read_artifact(1)},
        {**trained.version.manifest, "decision_threshold": threshold},
        actor="t",
    )

    # When the history is scored with it (a backtest)
    done = run_locally(
        "score",
        data=str(small_history),
        out=str(tmp_path / "out"),
        model=ModelRef("fraud", version.number, version.sha256, root.as_uri()),
        workers=1,
        partitions=3,
    )

    # Then each row's decision is its fraud_probability against the version's threshold
    rows = _rows(tmp_path / "out")
    assert len(rows) == len(scores)
    undecidable = [r for r in rows if r["is_fraud"] != (r["fraud_probability"] >= threshold)]
    assert undecidable == [], threshold
    # the decision made on its score, the score shown toward it
    for row in rows:
        score = scores[row["event_id"]]
        assert row["is_fraud"] == (score >= threshold)
        assert [row["fraud_probability"]] == shown_scores([score], threshold)
    # and recomputing the decisions from the output finds those the run counted
    flagged = sum(r["fraud_probability"] >= threshold for r in rows)
    assert (
        flagged
        == done.manifest["backtest"]["flagged"]
        == sum(s >= threshold for s in scores.values())
    )
    assert flagged > 0


# Resuming -------------------------------------------------------------------------------------------


def test_an_interrupted_run_resumes_with_only_the_parts_that_are_not_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run that stops with an error in its fourth part
    data = write_jsonl(generate_activity(600, seed=8), tmp_path / "h.jsonl")
    out = tmp_path / "out"
    computed: list[int] = []
    real = batch_run.jobs.feature_rows

    def failing(history: Any) -> Any:
        if len(computed) == 3:
            raise RuntimeError("the machine went away")
        computed.append(1)
        return real(history)

    monkeypatch.setattr(batch_run.jobs, "feature_rows", failing)
    with pytest.raises(RuntimeError):
        run_locally("features", data=str(data), out=str(out), workers=1, partitions=6)
    finished = sorted(p.name for p in out.glob("part-*"))
    assert len(finished) == 3 and not (out / "_run" / "manifest.json").exists()
    stamps = {name: (out / name).stat().st_mtime_ns for name in finished}
    # And a part that was half written when it stopped (no status: it does not count)
    half = out / "part-00005.jsonl.gz"
    half.write_bytes(b"\x1f\x8b half a part")

    # When the same command runs again
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real)
    done = run_locally("features", data=str(data), out=str(out), workers=1, partitions=6)

    # Then it computed only the three unfinished parts, the half-written one among them
    assert done.resumed and (done.parts_skipped, done.parts_computed) == (3, 3)
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == stamps
    assert len(gzip.decompress(half.read_bytes())) > 0
    assert done.manifest["complete"] and done.manifest["totals"]["events"] > 600
    # And the result is the one an uninterrupted run gives
    run_locally("features", data=str(data), out=str(tmp_path / "again"), workers=1, partitions=6)
    assert _rows(out) == _rows(tmp_path / "again")
    # And a third run has nothing to do
    assert run_locally("features", data=str(data), out=str(out), workers=1).nothing_to_do


def test_a_resumed_run_s_rate_counts_only_the_events_it_scored_itself(
    tmp_path: Path, trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a scoring run that stopped with an error in its third part (two were finished)
    data = write_jsonl(generate_activity(600, seed=8), tmp_path / "h.jsonl")
    out = tmp_path / "out"
    real = batch_run.jobs.score_rows
    calls: list[int] = []

    def failing(history: Any, model: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the machine went away")
        return real(history, model)

    monkeypatch.setattr(batch_run.jobs, "score_rows", failing)
    with pytest.raises(RuntimeError):
        run_locally(
            "score", data=str(data), out=str(out), model=_model(trained), workers=1, partitions=4
        )
    before = {p.name for p in (out / "_run" / "parts").glob("*/part-*.json")}
    assert len(before) == 2

    # When the same command resumes it, taking 4 seconds by its clock
    monkeypatch.setattr(batch_run.jobs, "score_rows", real)
    ticks = iter([100.0, 104.0])
    done = run_locally(
        "score",
        data=str(data),
        out=str(out),
        model=_model(trained),
        workers=1,
        partitions=4,
        clock=lambda: next(ticks),
    )

    # Then its rate is the events of the two parts it scored over its 4 seconds, not the run's
    # every event (those of the parts the first run finished included)
    statuses = [json.loads(p.read_text()) for p in (out / "_run" / "parts").glob("*/part-*.json")]
    mine = sum(s["events"] for s in statuses if f"part-{s['part']:05d}.json" not in before)
    assert done.resumed and done.parts_computed == 2 and done.seconds == 4.0
    assert 0 < mine < done.manifest["totals"]["events"]
    assert done.events_computed == mine
    assert done.events_per_second == mine / 4.0
    assert done.to_dict()["events_per_second"] == round(mine / 4.0, 1)


def test_a_restarted_run_in_the_same_process_computes_from_its_own_shuffle(
    tmp_path: Path,
) -> None:
    # Given a run of one history, its parts computed in this process (one worker)
    first = write_jsonl(generate_activity(300, seed=8), tmp_path / "a.jsonl")
    other = write_jsonl(generate_activity(200, seed=9), tmp_path / "b.jsonl")
    out = tmp_path / "out"
    run_locally("features", data=str(first), out=str(out), workers=1, partitions=2)

    # When the same process starts over there on another history
    run_locally("features", data=str(other), out=str(out), workers=1, partitions=2, restart=True)

    # Then its parts are that history's, as a run into a new folder gives them
    fresh = tmp_path / "fresh"
    run_locally("features", data=str(other), out=str(fresh), workers=1, partitions=2)
    assert _rows(out) == _rows(fresh)


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "empty folder"])
def test_a_run_that_fails_before_finishing_a_part_leaves_out_as_it_found_it(
    tmp_path: Path, existing: bool
) -> None:
    # Given a history with a line that is not JSON
    path = write_jsonl(generate_activity(50, seed=1), tmp_path / "h.jsonl")
    path.write_text(path.read_text() + "junk\n")
    out = tmp_path / "out"
    if existing:
        out.mkdir()

    # When a run fails on it
    with pytest.raises(HistoryError, match="invalid JSON"):
        run_locally("features", data=str(path), out=str(out), workers=1)

    # Then it left nothing: no plan to refuse the next run, no folder it made
    assert sorted(out.rglob("*")) == [] and out.exists() == existing
    # And a run of another input there goes ahead
    good = write_jsonl(generate_activity(50, seed=2), tmp_path / "good.jsonl")
    done = run_locally("features", data=str(good), out=str(out), workers=1)
    assert done.manifest["complete"] and not done.resumed


@pytest.mark.parametrize("job", ["features", "score"])
@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "empty folder"])
def test_a_history_with_no_events_is_refused_and_leaves_out_as_it_found_it(
    tmp_path: Path, trained: TrainedModel, job: str, existing: bool
) -> None:
    # Given a folder of history files without a single event (and more partitions than one)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text("\n\n")
    (data / "b.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    model = _model(trained) if job == "score" else None

    # When a run is asked to read it
    with pytest.raises(HistoryError) as raised:
        run_locally(job, data=str(data), out=str(out), model=model, workers=1, partitions=3)

    # Then it says so, naming the input, as training and ingest do
    assert str(raised.value) == f"{data}: no events"
    # And it left nothing: no plan, no manifest, no empty parts, no folder it made
    assert sorted(out.rglob("*")) == [] and out.exists() == existing


@pytest.mark.parametrize("job", ["features", "score"])
@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "empty folder"])
def test_a_history_of_logins_only_is_refused_and_leaves_out_as_it_found_it(
    tmp_path: Path, trained: TrainedModel, job: str, existing: bool
) -> None:
    # Given a folder of history files holding logins and no payment (one redelivered)
    logins = [r for r in generate_activity(300, seed=7) if r["type"] == "login"]
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(logins[:10], data / "a.jsonl")
    write_jsonl([*logins[10:], logins[3]], data / "b.jsonl.gz")
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    model = _model(trained) if job == "score" else None

    # When a run is asked to read it
    with pytest.raises(HistoryError) as raised:
        run_locally(job, data=str(data), out=str(out), model=model, workers=1, partitions=3)

    # Then it says there is nothing to compute, as training does (counting the lines read)
    assert str(raised.value) == f"{data}: no payments among {len(logins) + 1} events"
    # And it left nothing: no plan, no manifest, no empty parts, no folder it made
    assert sorted(out.rglob("*")) == [] and out.exists() == existing


def test_a_run_interrupted_before_finishing_a_part_is_kept_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run stopped by Ctrl-C in its shuffle, before any part
    data = write_jsonl(generate_activity(300, seed=8), tmp_path / "h.jsonl")
    out = tmp_path / "out"
    real = batch_run.shuffle_item

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_run, "shuffle_item", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_locally("features", data=str(data), out=str(out), workers=1)

    # Then its plan is kept: the same command resumes it
    assert (out / "_run" / "plan.json").exists()
    monkeypatch.setattr(batch_run, "shuffle_item", real)
    done = run_locally("features", data=str(data), out=str(out), workers=1)
    assert done.resumed and done.manifest["complete"]


def test_a_finished_run_keeps_no_work_files(tmp_path: Path) -> None:
    data = write_jsonl(generate_activity(300, seed=9), tmp_path / "h.jsonl")
    run_locally("features", data=str(data), out=str(tmp_path / "out"), workers=1)
    kept = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert not [k for k in kept if k.startswith("_run/work")]
    assert "_run/manifest.json" in kept and "_run/plan.json" in kept


# Refusing ---------------------------------------------------------------------------------------------


def test_given_an_output_holding_another_kind_of_run_then_it_is_refused_untouched(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # Given a finished scoring run
    data = write_jsonl(generate_activity(300, seed=9), tmp_path / "h.jsonl")
    out = tmp_path / "out"
    run_locally("score", data=str(data), out=str(out), model=_model(trained), workers=1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # When a backfill is asked to write there
    with pytest.raises(Refused) as refused:
        run_locally("features", data=str(data), out=str(out), workers=1)
    assert "cannot resume" in str(refused.value)
    assert "it is a score run, this one a features run" in str(refused.value)
    assert f"it scored with fraud v{trained.version.number} (" in str(refused.value)

    # Then nothing there changed
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_run_planned_by_a_version_with_other_work_files_is_refused_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run interrupted in its second part, as the previous version of sds planned it
    # (its work files without the id rows this version reads)
    data = write_jsonl(generate_activity(300, seed=9), tmp_path / "h.jsonl")
    out = tmp_path / "out"
    real = batch_run.jobs.feature_rows
    calls: list[int] = []

    def failing_second(history: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return real(history)

    monkeypatch.setattr(batch_run.jobs, "feature_rows", failing_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_locally("features", data=str(data), out=str(out), workers=1, partitions=3)
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real)
    plan = json.loads((out / "_run" / "plan.json").read_text())
    (out / "_run" / "plan.json").write_text(json.dumps({**plan, "format": "sds-batch-run/2"}))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # When this version is asked to resume it
    with pytest.raises(Refused) as raised:
        run_locally("features", data=str(data), out=str(out), workers=1, partitions=3)

    # Then it says where, which format and what to do, and changes nothing there
    assert str(raised.value).startswith(f"{out}: the run's plan has format 'sds-batch-run/2'")
    assert "finish it with that version, or remove it" in str(raised.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_given_a_model_that_cannot_be_served_then_the_run_fails_before_writing_anything(
    tmp_path: Path, trained: TrainedModel
) -> None:
    data = write_jsonl(generate_activity(100, seed=9), tmp_path / "h.jsonl")
    wrong = ModelRef("fraud", trained.version.number, "0" * 64, trained.registry_uri)

    with pytest.raises(ModelUnavailable, match="does not match the deployed pin"):
        run_locally("score", data=str(data), out=str(tmp_path / "out"), model=wrong, workers=1)
    assert not (tmp_path / "out").exists()


def test_given_an_output_holding_other_files_then_nothing_is_written_there(tmp_path: Path) -> None:
    data = write_jsonl(generate_activity(100, seed=9), tmp_path / "h.jsonl")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")

    with pytest.raises(Refused, match="not empty and holds no sds run"):
        run_locally("features", data=str(data), out=str(tmp_path / "out"), workers=1)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_given_an_output_inside_the_input_then_it_is_a_usage_error(tmp_path: Path) -> None:
    write_jsonl(generate_activity(100, seed=9), tmp_path / "data" / "h.jsonl")
    with pytest.raises(UsageError, match="inside the input"):
        run_locally(
            "features", data=str(tmp_path / "data"), out=str(tmp_path / "data" / "out"), workers=1
        )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "invalid JSON"),
        ('{"type": "login", "event_id": "x", "account_id": "a"}', "occurred_at: is required"),
        ('{"type": "refund", "event_id": "x"}', "'refund' is not one of payment, login"),
    ],
)
def test_given_an_invalid_event_then_the_run_names_its_file_and_line_and_writes_no_part(
    tmp_path: Path, line: str, problem: str
) -> None:
    records = generate_activity(50, seed=1)
    path = write_jsonl(records, tmp_path / "h.jsonl")
    path.write_text(path.read_text() + line + "\n")

    with pytest.raises(HistoryError, match=rf"h.jsonl:{len(records) + 1}.*{problem}"):
        run_locally("features", data=str(path), out=str(tmp_path / "out"), workers=1)
    assert not list((tmp_path / "out").glob("part-*"))


def test_a_gzip_file_named_jsonl_is_named_whatever_item_reads_it_first(tmp_path: Path) -> None:
    # Given a gzip-compressed history under a plain name, planned as several byte ranges
    plain = write_jsonl(generate_activity(300, seed=3), tmp_path / "plain.jsonl").read_bytes()
    path = tmp_path / "h.jsonl"
    path.write_bytes(gzip.compress(plain, mtime=0))
    storage = LocalStorage(path)
    plan = batch_run.make_plan(
        "features", storage, str(tmp_path / "o"), model=None, range_bytes=4096
    )
    assert len(plan.items) > 2

    # When any of its items is shuffled, first or not
    expected = f"{path}: gzip-compressed, but its name does not end in .gz: rename it h.jsonl.gz"
    for item in (plan.items[0], plan.items[-1]):
        with pytest.raises(HistoryError) as raised:
            shuffle_item(storage, item, 4, LocalStorage(tmp_path / f"s{item.index}"), "x")
        # Then the error says what the file is, not that its first line is invalid JSON
        assert str(raised.value) == expected
    # And so does the run
    with pytest.raises(HistoryError, match=re.escape(expected)):
        run_locally(
            "features", data=str(path), out=str(tmp_path / "out"), workers=2, range_bytes=4096
        )


def test_given_an_event_id_with_two_contents_then_the_run_says_which(tmp_path: Path) -> None:
    records = generate_activity(50, seed=1)
    twin = dict(records[10], occurred_at=records[11]["occurred_at"])
    path = write_jsonl([*records, twin], tmp_path / "h.jsonl")
    with pytest.raises(HistoryError, match=f"event {twin['event_id']} appears twice"):
        run_locally("features", data=str(path), out=str(tmp_path / "out"), workers=1)


def test_given_no_history_files_then_the_run_says_so(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "readme.txt").write_text("no events here")
    with pytest.raises(HistoryError, match=r"no \.jsonl or \.jsonl\.gz files"):
        run_locally("features", data=str(tmp_path / "data"), out=str(tmp_path / "o"), workers=1)
    with pytest.raises(HistoryError, match="no such file"):
        run_locally("features", data=str(tmp_path / "nope"), out=str(tmp_path / "o"), workers=1)


def test_partition_numbers_do_not_change_with_the_machine() -> None:
    from sds.kernel.batch.shuffle import partition_count, partition_of

    # Fixed values: a run resumed elsewhere must send every account to the same part
    assert [partition_of(f"acct-{i}", 64) for i in range(5)] == [
        partition_of(f"acct-{i}", 64) for i in range(5)
    ]
    assert partition_of("acct-7-000001", 64) == 37
    assert partition_count(0) == 1
    assert partition_count(10 * 1024 * 1024) == 10  # small: partitions of a MiB at least
    assert partition_count(100 * 1024 * 1024) == 64  # spread over 64 for many cores
    assert partition_count(10 * 1024**3) == 320  # large: 32 MiB each
    assert np.isfinite(partition_count(10**15))
