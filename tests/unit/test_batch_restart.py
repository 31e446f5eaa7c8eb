"""A batch run's --out after a failure or an interruption: what is kept, what the refusal to
resume says, and `--restart`.

A run that fails with an error before it finishes a part (a bad line stops the shuffle) wrote no
result: it leaves --out as it found it, so the run on the fixed file goes ahead there. A run that
finished parts, or was interrupted, is kept to resume, and pins its input (each file's size and
version): once the input changed, resuming would mix results computed from two different inputs,
so it is refused; the refusal says what changed and the exact command that starts over.
`--restart` discards the old run's files, and only where the folder holds an sds run and nothing
else. The CLI runs in-process (`sds.cli.main.main`) on a throwaway project.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.batch import run as batch_run
from sds.ops import batch
from tests.support.trained_model import TrainedModel
from tests.unit.cli_run import Ended, sds
from training.data import write_jsonl
from training.synthetic import generate_activity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in ("SDS_HOME", "SDS_LOCK_FILE", "SDS_TARGET"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def cut_line(path: Path, number: int) -> None:
    """Line `number` cut short, as an interrupted copy leaves it."""
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = lines[number - 1][:30]
    path.write_bytes(b"\n".join(lines))


def backfill(capsys: pytest.CaptureFixture[str], *extra: str) -> Ended:
    return sds(capsys, "backfill", "--data", "h.jsonl", "--out", "s13", "--quiet", *extra)


def test_a_run_that_failed_on_a_bad_line_leaves_out_to_the_fixed_file_s_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run that failed on line 419 of h.jsonl
    good = write_jsonl(generate_activity(400, seed=5), project / "h.jsonl").read_bytes()
    cut_line(project / "h.jsonl", 419)
    failed = backfill(capsys)
    assert failed.code == 1 and "h.jsonl:419: invalid JSON" in failed.error_line, failed
    # Then it left nothing in --out (it made the folder: that is gone too)
    assert not (project / "s13").exists()

    # When h.jsonl is fixed in place and the same command runs again
    (project / "h.jsonl").write_bytes(good + b"\n")
    ended = backfill(capsys, "--json")

    # Then it runs, from the start
    assert ended.code == 0, ended
    assert ended.json()["manifest"]["complete"] is True and ended.json()["resumed"] is False


def test_a_run_that_failed_removes_the_parent_folders_it_made_and_keeps_those_it_found(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history with a bad line, and an --out two folders below one that exists
    write_jsonl(generate_activity(400, seed=5), project / "h.jsonl")
    cut_line(project / "h.jsonl", 419)
    (project / "runs").mkdir()
    out = project / "runs" / "2026" / "s13"

    # When the run fails on that line
    failed = sds(capsys, "backfill", "--data", "h.jsonl", "--out", str(out), "--quiet")

    # Then the folders it made are gone (no empty runs/2026 left behind), the one it found kept
    assert failed.code == 1 and "h.jsonl:419: invalid JSON" in failed.error_line, failed
    assert (project / "runs").is_dir()
    assert list((project / "runs").iterdir()) == []


@pytest.fixture
def failed_then_fixed(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> bytes:
    """A run interrupted in its second part (the first one finished), then h.jsonl changed in
    place; its new bytes."""
    good = write_jsonl(generate_activity(400, seed=5), project / "h.jsonl").read_bytes()
    real = batch_run.jobs.feature_rows
    calls: list[int] = []

    def interrupted(history: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(history)

    monkeypatch.setattr(batch_run.jobs, "feature_rows", interrupted)
    stopped = backfill(capsys, "--partitions", "3", "--workers", "1")
    assert stopped.code == 130 and "run the same command again to resume" in stopped.error_line
    monkeypatch.setattr(batch_run.jobs, "feature_rows", real)
    assert len(list((project / "s13").glob("part-*"))) == 1
    (project / "h.jsonl").write_bytes(good + b"\n")  # changed: not the bytes the run pinned
    return good


def test_resuming_onto_fixed_input_is_refused_saying_what_changed_and_how_to_start_over(
    project: Path, capsys: pytest.CaptureFixture[str], failed_then_fixed: bytes
) -> None:
    before = files(project / "s13")

    # When the same command runs again on the fixed file
    ended = backfill(capsys, "--json")

    # Then it is refused (exit 3), naming the file that changed and how, and the exact command
    assert ended.code == 3, ended
    message = ended.json()["error"]["message"]
    assert ended.error_line == f"sds: refused: {message}"
    assert message.startswith("s13 holds a run this one cannot resume (started ")
    assert "h.jsonl changed since (" in message and " bytes, modified " in message
    assert message.endswith(
        "to discard it and start over: sds backfill --data h.jsonl --out s13 --quiet --json "
        "--restart (or use another --out)"
    )
    assert "another sources" not in message
    # And nothing there changed
    assert files(project / "s13") == before


def test_restart_discards_the_old_run_and_gives_what_a_fresh_run_gives(
    project: Path, capsys: pytest.CaptureFixture[str], failed_then_fixed: bytes
) -> None:
    # When starting over with --restart
    ended = backfill(capsys, "--restart", "--json")

    # Then the run completes, and its parts are those of a run into a new folder
    assert ended.code == 0, ended
    assert ended.json()["manifest"]["complete"] is True
    fresh = sds(capsys, "backfill", "--data", "h.jsonl", "--out", "fresh", "--quiet")
    assert fresh.code == 0, fresh
    parts = {k: v for k, v in files(project / "s13").items() if k.startswith("part-")}
    assert parts and parts == {
        k: v for k, v in files(project / "fresh").items() if k.startswith("part-")
    }
    # And running it again resumes nothing: the finished run is kept
    again = backfill(capsys)
    assert again.code == 0 and again.out.startswith("nothing to do: s13 holds a finished run")


def test_restart_of_a_finished_run_recomputes_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(generate_activity(200, seed=5), project / "h.jsonl")
    assert backfill(capsys).code == 0
    ended = backfill(capsys, "--restart")
    assert ended.code == 0, ended
    assert not ended.out.startswith("nothing to do") and "rows" in ended.out


def test_restart_removes_nothing_where_the_folder_holds_other_files_too(
    project: Path, capsys: pytest.CaptureFixture[str], failed_then_fixed: bytes
) -> None:
    # Given the run's folder also holds a file of the user's
    (project / "s13" / "notes.txt").write_text("mine")
    before = files(project / "s13")

    # When starting over with --restart
    ended = backfill(capsys, "--restart")

    # Then it is refused and nothing is removed
    assert ended.code == 3
    assert ended.error_line == (
        "sds: refused: s13 holds files that are not the run's (notes.txt): not removing anything; "
        "move them, or use another output location"
    )
    assert files(project / "s13") == before


def test_restart_never_removes_a_folder_that_is_not_an_sds_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a folder of the user's, with a _run/plan.json that is not an sds plan
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")
    (project / "s13" / "_run").mkdir(parents=True)
    (project / "s13" / "_run" / "plan.json").write_text('{"format": "something else"}')
    (project / "s13" / "part-00000.jsonl.gz").write_bytes(b"not ours")
    before = files(project / "s13")

    ended = backfill(capsys, "--restart")

    assert ended.code == 3
    assert "is not an sds run's plan: not removing anything at s13" in ended.error_line
    assert files(project / "s13") == before


@pytest.mark.parametrize("extra", [(), ("--restart",)], ids=["plain", "--restart"])
def test_an_out_folder_of_other_files_is_refused_naming_some(
    project: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...]
) -> None:
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")
    (project / "s13").mkdir()
    for name in "abcd":
        (project / "s13" / name).write_text(name)

    ended = backfill(capsys, *extra)

    assert ended.code == 3
    assert "s13 is not empty and holds no sds run (a, b, c and 1 more)" in ended.error_line
    assert sorted(files(project / "s13")) == ["a", "b", "c", "d"]


def test_an_out_that_is_a_file_is_named_as_a_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")
    (project / "s13").write_text("a file")

    ended = backfill(capsys)

    assert ended.code == 3
    assert ended.error_line == (
        "sds: refused: s13 is a file: a run writes its parts into a folder (or under an S3 "
        "prefix); name a new or empty one"
    )
    assert (project / "s13").read_text() == "a file"


def test_an_out_under_a_file_is_a_usage_error_naming_the_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file where --out needs a folder
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")
    (project / "s13").write_text("a file")

    # When a run is asked to write under it
    ended = sds(capsys, "backfill", "--data", "h.jsonl", "--out", "s13/run", "--quiet")

    # Then one line names the file in the way (no "[Errno 20] Not a directory: s13/run/_run"),
    # and the file is left as it was
    assert ended.code == 2, ended
    assert ended.error_line == (
        "sds: error: the output s13/run: s13 is a file, not a folder; name a folder elsewhere"
    )
    assert (project / "s13").read_text() == "a file"


@pytest.mark.parametrize(
    ("target", "option", "said"),
    [
        (["--aws"], ["--restart"], "--restart: only for runs on this machine; on AWS, name a new"),
        (["--aws"], ["--workers", "2"], "--workers: only for runs on this machine; on AWS, "),
        ([], ["--no-wait"], "--no-wait: only applies with --aws; a run on this machine is "),
    ],
    ids=["--restart with --aws", "--workers with --aws", "--no-wait on this machine"],
)
@pytest.mark.parametrize("command", ["score", "backfill"])
def test_an_option_for_the_other_target_is_a_usage_error(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    target: list[str],
    option: list[str],
    said: str,
) -> None:
    # Given a history, and an option that applies only on the other target
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")
    data, out = ("s3://b/in/", "s3://b/out/") if target else ("h.jsonl", "s13")

    # When a run is asked for with it
    ended = sds(capsys, *target, command, "--data", data, "--out", out, *option)

    # Then it is refused as a usage error (exit 2) saying where the option applies, not ignored;
    # nothing ran
    assert ended.code == 2, ended.err
    assert ended.error_line.startswith(f"sds: error: {said}"), ended.err
    assert not (project / "s13").exists()


@pytest.mark.parametrize("env", [["--env", "dev"], ["--env=prod"]], ids=["--env dev", "--env=prod"])
def test_backfill_on_this_machine_refuses_env_which_only_picks_the_aws_state_machine(
    project: Path, capsys: pytest.CaptureFixture[str], env: list[str]
) -> None:
    # Given a history
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")

    # When it is backfilled on this machine for a named environment
    ended = backfill(capsys, *env)

    # Then it is refused as a usage error naming the option (the aggregates computed here are
    # the same for every environment), not silently run as if no environment were named
    assert ended.code == 2, ended.err
    assert ended.error_line.startswith("sds: error: --env: only applies with --aws; "), ended.err
    assert not (project / "s13").exists()
    # And without --env it runs
    assert backfill(capsys).code == 0


@pytest.mark.parametrize(("workers", "expected"), [("1", "(in one process)"), ("2", "per worker")])
def test_the_summary_says_where_the_peak_memory_was_measured(
    project: Path, capsys: pytest.CaptureFixture[str], workers: str, expected: str
) -> None:
    # Given a history of two files, backfilled into two partitions (work for two workers)
    (project / "history").mkdir()
    for name, seed in (("a.jsonl", 1), ("b.jsonl", 2)):
        write_jsonl(generate_activity(300, seed=seed), project / "history" / name)

    # When it runs with one worker (in this process) or two
    ended = sds(
        capsys,
        *("backfill", "--data", "history", "--out", "o", "--partitions", "2", "--quiet"),
        *("--workers", workers),
    )

    # Then the summary names a measured peak and where it was measured, never "0 B per worker"
    assert ended.code == 0, ended
    peak = re.search(r"peak memory ([0-9.]+) [KMG]iB (.*)$", ended.out.strip())
    assert peak is not None and float(peak[1]) > 0, ended.out
    assert peak[2].startswith(expected), ended.out


def test_a_run_of_one_part_counts_it_in_the_singular(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a history of one file
    write_jsonl(generate_activity(100, seed=5), project / "h.jsonl")

    # When it is backfilled into one partition by one worker, with progress shown
    ended = sds(
        capsys, "backfill", "--data", "h.jsonl", "--out", "o", "--partitions", "1", "--workers", "1"
    )

    # Then the summary and the progress say "1 part", never "1 parts"
    assert ended.code == 0, ended
    assert " into 1 part in o: " in ended.out and " with 1 worker; " in ended.out, ended.out
    assert "partitioning 1 input item by account into 1 partition (1 worker)" in ended.err
    assert "computing the account aggregates of 1 partition (1 worker)" in ended.err
    assert re.search(r"\d+ rows in 1 part\b", ended.err), ended.err
    assert not re.search(r"\b1 (part|partition|worker|item)s\b", ended.out + ended.err)
    assert "(s)" not in ended.out


def test_a_resumed_score_prints_the_rate_of_the_events_it_scored_itself(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    trained: TrainedModel,
) -> None:
    # Given `sds score` stopped by Ctrl-C in its second part (the first one finished)
    write_jsonl(generate_activity(400, seed=5), project / "h.jsonl")
    monkeypatch.setenv("SDS_REGISTRY_DEV", trained.registry_uri)
    words = ("score", "--version", str(trained.version.number), "--data", "h.jsonl")
    words += ("--out", "s13", "--partitions", "3", "--workers", "1", "--quiet")
    real = batch_run.jobs.score_rows
    calls: list[int] = []

    def interrupted(history: Any, model: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(history, model)

    monkeypatch.setattr(batch_run.jobs, "score_rows", interrupted)
    assert sds(capsys, *words).code == 130
    monkeypatch.setattr(batch_run.jobs, "score_rows", real)
    [first] = [
        json.loads(p.read_text())
        for p in (project / "s13" / "_run" / "parts").glob("*/part-*.json")
    ]

    # When the same command resumes it, in 5 seconds by its clock
    ticks = iter([10.0, 15.0])
    monkeypatch.setattr(
        batch, "run_locally", functools.partial(batch.run_locally, clock=lambda: next(ticks))
    )
    ended = sds(capsys, *words)

    # Then the rate it prints is of the events of the two parts it scored, over its 5 seconds
    assert ended.code == 0, ended
    manifest = json.loads((project / "s13" / "_run" / "manifest.json").read_text())
    mine = manifest["totals"]["events"] - first["events"]
    assert 0 < mine < manifest["totals"]["events"]
    summary = ended.out.splitlines()[0]
    assert f"in s13: 5.0 s, {mine / 5:,.0f} events/s with 1 worker;" in summary, summary
    assert summary.endswith(
        f"(resumed: 1 part was finished; this run computed 2 parts from {mine} events)"
    )
