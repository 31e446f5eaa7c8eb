"""One history, one answer on every path: an event id held under two accounts is refused by
`read_history`, partitioned training and the batch runs alike, although the shuffle puts the two
events in different account partitions; a true redelivery counts once on every path."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.batch import shuffle
from sds.kernel.batch.run import ModelRef
from sds.kernel.batch.shuffle import HistoryError, partition_of
from sds.ops.batch import run_locally
from tests.support.trained_model import TrainedModel
from training.data import DataError, read_history, write_jsonl
from training.partitioned import training_set
from training.synthetic import generate_activity
from training.train import Progress

PARTITIONS = 8
QUIET = Progress(3, enabled=False)


@dataclass(frozen=True)
class Conflict:
    """A history holding one event id under two accounts, in different account partitions."""

    location: Path
    event_id: str
    accounts: tuple[str, str]  # the first occurrence's account, then the other one's
    lines: tuple[str, str]  # file:line of the first occurrence, then of the other one

    @property
    def refusal(self) -> str:
        """What every partitioned path says."""
        return (
            f"event {self.event_id} appears twice with different content, under two accounts: "
            f"{self.accounts[0]} ({self.lines[0]}) and {self.accounts[1]} ({self.lines[1]})"
        )


def _conflict(root: Path, layout: str) -> Conflict:
    records = generate_activity(300, seed=31)
    index = [i for i, r in enumerate(records) if r["type"] == "payment"][5]
    twin = records[index]
    home = partition_of(twin["account_id"], PARTITIONS)
    other = min(
        r["account_id"] for r in records if partition_of(r["account_id"], PARTITIONS) != home
    )
    copy = {**twin, "account_id": other}
    if layout == "one file":
        path = write_jsonl([*records, copy], root / "h.jsonl")
        return Conflict(
            path,
            twin["event_id"],
            (twin["account_id"], other),
            (f"{path}:{index + 1}", f"{path}:{len(records) + 1}"),
        )
    half = len(records) // 2
    first = write_jsonl(records[:half], root / "data" / "a.jsonl")
    second = write_jsonl([*records[half:], copy], root / "data" / "b.jsonl")
    return Conflict(
        root / "data",
        twin["event_id"],
        (twin["account_id"], other),
        (f"{first}:{index + 1}", f"{second}:{len(records) - half + 1}"),
    )


def _model(trained: TrainedModel) -> ModelRef:
    return ModelRef("fraud", trained.version.number, trained.version.sha256, trained.registry_uri)


LAYOUTS = ["one file", "two files"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_read_history_refuses_an_event_id_under_two_accounts(tmp_path: Path, layout: str) -> None:
    conflict = _conflict(tmp_path, layout)
    with pytest.raises(DataError) as raised:
        read_history(conflict.location)
    assert str(raised.value) == (
        f"{conflict.lines[1]}: event {conflict.event_id} appears twice with different content"
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_partitioned_training_refuses_it_with_the_same_meaning(tmp_path: Path, layout: str) -> None:
    # Given the two events in different account partitions
    conflict = _conflict(tmp_path, layout)
    work = tmp_path / "work"
    work.mkdir()

    # When training reads the history with two workers (`sds train --workers 2`)
    with pytest.raises(DataError) as raised:
        training_set(
            conflict.location,
            holdout_fraction=0.2,
            negative_rate=1.0,
            seed=1,
            progress=QUIET,
            workers=2,
            partitions=PARTITIONS,
            work_dir=work,
        )

    # Then it names the id, both accounts and both lines, and leaves no partitions behind
    assert str(raised.value) == conflict.refusal
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("job", "workers"), [("features", 1), ("score", 2)])
def test_a_batch_run_refuses_it_with_the_same_meaning_and_finishes_nothing(
    tmp_path: Path, trained: TrainedModel, layout: str, job: str, workers: int
) -> None:
    # Given the two events in different account partitions
    conflict = _conflict(tmp_path, layout)
    out = tmp_path / "out"

    # When the history is backfilled or scored (`sds backfill`, `sds score`)
    with pytest.raises(HistoryError) as raised:
        run_locally(
            job,
            data=str(conflict.location),
            out=str(out),
            model=_model(trained) if job == "score" else None,
            workers=workers,
            partitions=PARTITIONS,
        )

    # Then the run names the id, both accounts and both lines, and no manifest claims it finished
    assert str(raised.value) == conflict.refusal
    assert not (out / "_run" / "manifest.json").exists()
    # And the part that checks that id stored nothing
    checker = partition_of(conflict.event_id, PARTITIONS)
    assert not (out / f"part-{checker:05d}.jsonl.gz").exists()


def test_in_one_account_partition_the_same_conflict_is_refused_alike(tmp_path: Path) -> None:
    # Given the same history read into one partition: both events land in it
    conflict = _conflict(tmp_path, "two files")
    with pytest.raises(HistoryError) as raised:
        run_locally(
            "features",
            data=str(conflict.location),
            out=str(tmp_path / "o"),
            workers=1,
            partitions=1,
        )
    assert str(raised.value) == conflict.refusal


def test_other_content_under_one_account_names_both_lines(tmp_path: Path) -> None:
    # Given an event redelivered by a second file with another time, under its own account
    records = generate_activity(300, seed=34)
    twin = [r for r in records if r["type"] == "payment"][2]
    first = write_jsonl(records, tmp_path / "data" / "a.jsonl")
    second = write_jsonl(
        [{**twin, "occurred_at": records[-1]["occurred_at"]}], tmp_path / "data" / "b.jsonl.gz"
    )

    # When it is backfilled, and read by read_history
    with pytest.raises(HistoryError) as raised:
        run_locally(
            "features",
            data=str(tmp_path / "data"),
            out=str(tmp_path / "o"),
            workers=1,
            partitions=PARTITIONS,
        )
    with pytest.raises(DataError) as read:
        read_history(tmp_path / "data")

    # Then both name the id as twice with different content; the run names the two lines
    assert str(raised.value) == (
        f"event {twin['event_id']} appears twice with different content, under account "
        f"{twin['account_id']}: {first}:{records.index(twin) + 1} and {second}:1"
    )
    assert str(read.value) == (
        f"{second}:1: event {twin['event_id']} appears twice with different content"
    )


def test_a_line_in_a_later_range_of_a_plain_file_is_named_by_its_byte(tmp_path: Path) -> None:
    # Given the conflicting copy at the end of a plain file read in ranges of 4 kB
    conflict = _conflict(tmp_path, "one file")
    data = conflict.location.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1

    # When it is backfilled
    with pytest.raises(HistoryError) as raised:
        run_locally(
            "features",
            data=str(conflict.location),
            out=str(tmp_path / "out"),
            workers=1,
            partitions=PARTITIONS,
            range_bytes=4000,
        )

    # Then its line is named as validation names it there: by the byte it starts at
    assert last > 4000
    assert f"{conflict.accounts[1]} ({conflict.location} (the line at byte {last}))" in str(
        raised.value
    )


# A true redelivery -------------------------------------------------------------------------------


def _rows(out: Path) -> list[dict[str, Any]]:
    rows = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        rows.extend(json.loads(line) for line in gzip.decompress(part.read_bytes()).splitlines())
    return rows


def test_a_redelivery_across_two_files_counts_once_on_every_path(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # Given an event delivered twice, the same content, in two files (one of them gzipped), in a
    # history training can use (fraud on both sides of its time-ordered split)
    records = generate_activity(400, seed=32)
    half = len(records) // 2
    again = records[[i for i, r in enumerate(records) if r["type"] == "payment"][3]]
    write_jsonl(records[:half], tmp_path / "data" / "a.jsonl")
    write_jsonl([*records[half:], again], tmp_path / "data" / "b.jsonl.gz")
    data = tmp_path / "data"
    payments = sum(r["type"] == "payment" for r in records)

    # When every path reads it
    history = read_history(data)
    rows = training_set(
        data,
        holdout_fraction=0.2,
        negative_rate=1.0,
        seed=1,
        progress=QUIET,
        workers=2,
        partitions=PARTITIONS,
    )
    runs = {
        job: run_locally(
            job,
            data=str(data),
            out=str(tmp_path / job),
            model=_model(trained) if job == "score" else None,
            workers=1,
            partitions=PARTITIONS,
        )
        for job in ("features", "score")
    }

    # Then each counts it once
    assert (len(history.events), history.duplicates) == (len(records), 1)
    assert (rows.events, rows.payments, rows.duplicates) == (len(records), payments, 1)
    for job, run in runs.items():
        totals = run.manifest["totals"]
        assert (totals["events"], totals["duplicates"], totals["rows"]) == (
            len(records),
            1,
            payments,
        ), job
        assert sorted(r["event_id"] for r in _rows(tmp_path / job)) == sorted(
            r["event_id"] for r in records if r["type"] == "payment"
        ), job


# Digests ------------------------------------------------------------------------------------------


def test_ids_that_share_a_digest_are_told_apart_by_the_events_themselves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a history backfilled as usual
    records = generate_activity(200, seed=33)
    data = write_jsonl(records, tmp_path / "h.jsonl")
    run_locally("features", data=str(data), out=str(tmp_path / "usual"), workers=1, partitions=4)

    # When every event id has the same digest (a collision for each pair of events)
    monkeypatch.setattr(shuffle, "_id_digest", lambda event_id: bytes(16))
    collided = run_locally(
        "features", data=str(data), out=str(tmp_path / "collided"), workers=1, partitions=4
    )

    # Then nothing is refused, and the parts are the usual ones, byte for byte
    assert collided.manifest["complete"]
    for part in sorted((tmp_path / "usual").glob("part-*")):
        assert part.read_bytes() == (tmp_path / "collided" / part.name).read_bytes()

    # And a real conflict among the collisions is still found and named
    conflict = _conflict(tmp_path / "conflict", "two files")
    with pytest.raises(HistoryError) as raised:
        run_locally(
            "features",
            data=str(conflict.location),
            out=str(tmp_path / "refused"),
            workers=1,
            partitions=PARTITIONS,
        )
    assert str(raised.value) == conflict.refusal
