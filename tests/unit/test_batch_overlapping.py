"""Two batch runs at one folder while one of them is still working: what the other does to its run.

A run joined by a second process (same arguments), discarded by another's `--restart`, or
cleaned up by a joined run's failure: each interleaving is played deterministically, the second
run's steps run at a chosen point of the first run's part step (a hook on a kernel function), the
point two processes can reach. In none may a run report itself complete with a part missing, or
with a part computed under another plan; the process whose run was taken from it stops, naming
what happened.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.batch import local
from sds.kernel.batch import run as batch_run
from sds.kernel.batch.pool import WorkerLost
from sds.kernel.batch.run import (
    PLAN,
    RunPlan,
    RunReplaced,
    begin,
    collect_run,
    finished_parts,
    make_plan,
    part_step,
    shuffle_step,
    summarize,
)
from sds.kernel.batch.storage import LocalStorage
from sds.ops.batch import run_locally
from training.data import write_jsonl
from training.synthetic import generate_activity

PAYMENTS = 300


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return write_jsonl(generate_activity(PAYMENTS, seed=3), tmp_path / "in" / "h.jsonl")


def rows_in(out: Path, partitions: int) -> int:
    return sum(
        len(gzip.decompress((out / f"part-{p:05d}.jsonl.gz").read_bytes()).splitlines())
        for p in range(partitions)
    )


def payments_of(history: Path) -> int:
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    return sum(1 for event in lines if event.get("type", "payment") == "payment")


def planned(history: Path, out: Path, *, partitions: int, restart: bool = False) -> RunPlan:
    """A run begun at `out` and shuffled, as `sds backfill` does before its parts."""
    source, output = LocalStorage(history), LocalStorage(out)
    plan, _ = begin(
        make_plan("features", source, str(out), model=None, partitions=partitions),
        output,
        restart=restart,
    )
    for item in plan.items:
        shuffle_step(plan, source, output, item.index)
    collect_run(plan, output)
    return plan


def restart_while_computing(
    history: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> list[RunPlan]:
    """Once a part's rows are computed (the first time), another process restarts `out` with 2
    partitions and shuffles (`--restart --partitions 2`): its plan is put in the list returned."""
    real_rows = batch_run.jobs.feature_rows
    restarted: list[RunPlan] = []

    def feature_rows(partition_history: Any) -> Any:
        result = real_rows(partition_history)
        if not restarted:
            restarted.append(planned(history, out, partitions=2, restart=True))
        return result

    monkeypatch.setattr(batch_run.jobs, "feature_rows", feature_rows)
    return restarted


def test_a_joined_run_that_fails_leaves_the_run_it_joined_which_finishes_whole(
    tmp_path: Path, history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given run A storing its part, and run B (the same command) joining it then and failing
    # before it finishes a part (one of its workers killed, out of memory)
    out = tmp_path / "out"
    real_put_json = batch_run.put_json
    failed: list[BaseException] = []

    def put_json(storage: Any, key: str, document: dict[str, Any]) -> None:
        if key.startswith("_run/parts/") and not failed:  # A's part is stored, not its status
            with monkeypatch.context() as inner:

                def killed(*args: Any, **kwargs: Any) -> Iterator[Any]:
                    raise WorkerLost("worker process 1 was killed by SIGKILL (out of memory?)")

                inner.setattr(local, "parallel", killed)
                with pytest.raises(WorkerLost) as raised:
                    run_locally(
                        "features", data=str(history), out=str(out), workers=1, partitions=1
                    )
                failed.append(raised.value)
        real_put_json(storage, key, document)

    monkeypatch.setattr(batch_run, "put_json", put_json)

    # When A finishes
    a = run_locally("features", data=str(history), out=str(out), workers=1, partitions=1)

    # Then B failed without discarding A's run: A is complete, and its part is there, whole
    assert failed, "run B did not run"
    assert a.manifest["complete"] is True
    assert [p["object"] for p in a.manifest["parts"]] == ["part-00000.jsonl.gz"]
    assert rows_in(out, 1) == payments_of(history) == a.manifest["totals"]["rows"]


def test_a_run_discarded_while_it_computes_a_part_stops_and_stores_nothing(
    tmp_path: Path, history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given run A computing part 0 of a 1-partition run, while run C restarts the folder with
    # 2 partitions (`--restart --partitions 2`) and shuffles
    out = tmp_path / "out"
    output = LocalStorage(out)
    plan_a = planned(history, out, partitions=1)
    real_rows = batch_run.jobs.feature_rows
    restarted = restart_while_computing(history, out, monkeypatch)

    # When A goes on to store its part
    with pytest.raises(RunReplaced) as stopped:
        part_step(plan_a, output, 0, load=lambda ref: None)
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real_rows)

    # Then it stops, saying so, and stores neither its part nor its status
    message = str(stopped.value)
    assert message.startswith(f"{out}: the run planned {plan_a.created_at} was discarded")
    assert "another run was planned there since" in message
    assert not (out / "part-00000.jsonl.gz").exists()
    plan_c = restarted[0]
    assert finished_parts(plan_c, output) == set()

    # And C computes both its parts and is complete, one row per payment
    for p in range(2):
        part_step(plan_c, output, p, load=lambda ref: None)
    manifest = summarize(plan_c, output)
    assert manifest["complete"] is True and manifest["partitions"] == 2
    assert manifest["plan_id"] == plan_c.plan_id != plan_a.plan_id
    assert rows_in(out, 2) == payments_of(history) == manifest["totals"]["rows"]


def test_a_part_status_of_a_discarded_run_never_counts_in_the_run_planned_after_it(
    tmp_path: Path, history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given run A's part stored, and the folder restarted by run C just before A writes the
    # part's status (the narrowest window: after A's last check)
    out = tmp_path / "out"
    output = LocalStorage(out)
    plan_a = planned(history, out, partitions=1)
    restarted: list[RunPlan] = []
    real_check = batch_run.check_in_force
    checks = 0

    def check_in_force(plan: RunPlan, storage: Any) -> None:
        nonlocal checks
        real_check(plan, storage)
        checks += 1
        if plan is plan_a and checks == 2:  # A's second check passed: C restarts now
            restarted.append(planned(history, out, partitions=2, restart=True))

    monkeypatch.setattr(batch_run, "check_in_force", check_in_force)
    part_step(plan_a, output, 0, load=lambda ref: None)  # A writes its status: it is too late
    monkeypatch.setattr(batch_run, "check_in_force", real_check)

    # Then C's run counts no part of A's: it computes both, and its rows are its own
    plan_c = restarted[0]
    assert finished_parts(plan_a, output) == {0}  # A's status, in A's own folder
    assert finished_parts(plan_c, output) == set()
    for p in sorted({0, 1} - finished_parts(plan_c, output)):
        part_step(plan_c, output, p, load=lambda ref: None)
    manifest = summarize(plan_c, output)
    assert manifest["complete"] is True
    assert rows_in(out, 2) == payments_of(history) == manifest["totals"]["rows"]

    # And A, summarizing, is told its run is gone instead of writing a manifest over C's
    with pytest.raises(RunReplaced):
        summarize(plan_a, output)
    assert json.loads((out / "_run" / "manifest.json").read_text())["plan_id"] == plan_c.plan_id


def test_a_run_whose_folder_was_emptied_meanwhile_is_never_reported_complete(
    tmp_path: Path, history: Path
) -> None:
    # Given a run with every part finished, whose run another process then discards
    out = tmp_path / "out"
    output = LocalStorage(out)
    plan = planned(history, out, partitions=1)
    part_step(plan, output, 0, load=lambda ref: None)
    batch_run.discard_run(output)

    # When it writes its manifest
    with pytest.raises(RunReplaced) as stopped:
        summarize(plan, output)

    # Then it is told the run is gone, and writes nothing
    assert "its output location holds no run any more" in str(stopped.value)
    assert not (out / PLAN).exists() and not (out / "_run" / "manifest.json").exists()


def test_a_plan_written_before_plan_ids_keeps_its_layout_and_is_checked_against_nothing(
    tmp_path: Path, history: Path
) -> None:
    # Given a run planned by a version without plan ids (its plan has none)
    out = tmp_path / "out"
    output = LocalStorage(out)
    source = LocalStorage(history)
    plan = make_plan("features", source, str(out), model=None, partitions=1, plan_id="")
    document = plan.to_json()
    del document["plan_id"]
    output.create_bytes(PLAN, json.dumps(document).encode())
    old = RunPlan.from_json(json.loads((out / PLAN).read_text()))

    # When this version runs its steps
    for item in old.items:
        shuffle_step(old, source, output, item.index)
    collect_run(old, output)
    part_step(old, output, 0, load=lambda ref: None)
    manifest = summarize(old, output)

    # Then its records are where that version kept them, and the run is complete
    assert (out / "_run" / "parts" / "part-00000.json").is_file()
    assert (out / "_run" / "work" / "shuffled.json").is_file()
    assert manifest["complete"] is True and manifest["plan_id"] == ""


def test_a_run_whose_folder_was_restarted_by_another_fails_without_discarding_that_run(
    tmp_path: Path, history: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given `sds backfill` computing its part, when another process restarts the folder
    out = tmp_path / "out"
    real_rows = batch_run.jobs.feature_rows
    restarted = restart_while_computing(history, out, monkeypatch)

    # When the first run goes on
    with pytest.raises(RunReplaced):
        run_locally("features", data=str(history), out=str(out), workers=1, partitions=1)

    # Then its cleanup leaves the run planned since in place, which the same command finishes
    assert json.loads((out / PLAN).read_text())["plan_id"] == restarted[0].plan_id
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real_rows)
    done = run_locally("features", data=str(history), out=str(out), workers=1)
    assert done.resumed and done.manifest["complete"] and done.manifest["partitions"] == 2
    assert rows_in(out, 2) == payments_of(history) == done.manifest["totals"]["rows"]


@pytest.mark.parametrize("plan_id", ["../../elsewhere", "A" * 32, "0" * 31, 7])
def test_a_plan_whose_id_is_not_one_sds_writes_is_refused_before_any_key_is_made_of_it(
    tmp_path: Path, history: Path, plan_id: Any
) -> None:
    # Given a plan at --out whose plan id is not 32 hex digits (edited, or not sds's)
    out = tmp_path / "out"
    document = make_plan("features", LocalStorage(history), str(out), model=None).to_json()
    document["plan_id"] = plan_id
    out.joinpath("_run").mkdir(parents=True)
    (out / PLAN).write_text(json.dumps(document))

    # When a run would resume it, then it is refused, naming the field, and nothing is written
    with pytest.raises(batch_run.Refused, match="plan_id") as refused:
        run_locally("features", data=str(history), out=str(out), workers=1)
    assert "not an sds plan id" in str(refused.value)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["_run", PLAN]


def test_two_writers_of_one_part_with_the_same_process_id_each_write_their_own_file(
    tmp_path: Path,
) -> None:
    # Given two writers of the same part that share a process id (two containers writing into
    # one mounted folder each have a PID 1), played here by one process writing it twice at once
    output = LocalStorage(tmp_path / "out")

    # When the second writes its whole part while the first is still writing
    with output.open_write("part-00000.jsonl.gz") as first:
        first.write(b"first, ")
        with output.open_write("part-00000.jsonl.gz") as second:
            second.write(b"second\n")
        first.write(b"whole\n")

    # Then neither truncated nor moved the other's file: the last one renamed is there, whole,
    # and nothing half-written is left
    assert (tmp_path / "out" / "part-00000.jsonl.gz").read_bytes() == b"first, whole\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["part-00000.jsonl.gz"]


@pytest.mark.parametrize(
    "leftover",
    [".part-00000.jsonl.gz.1.partial", ".part-00000.jsonl.gz.1.0a1b2c3d.partial"],
    ids=["earlier version's", "this version's"],
)
def test_a_part_left_half_written_by_a_killed_writer_is_discarded_with_its_run(
    tmp_path: Path, history: Path, leftover: str
) -> None:
    # Given a run whose writer was killed while writing a part (its hidden file is left)
    out = tmp_path / "out"
    planned(history, out, partitions=1)
    (out / leftover).write_bytes(b"half")

    # When the run is discarded (`--restart`)
    batch_run.discard_run(LocalStorage(out))

    # Then the hidden file goes with it, and no file of the run is left
    assert not (out / leftover).exists()
    assert [p for p in out.rglob("*") if p.is_file()] == []
