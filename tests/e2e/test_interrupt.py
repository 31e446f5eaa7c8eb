"""Ctrl-C in the commands that run worker processes (`sds score`, `sds backfill`, `sds train`):
the terminal sends SIGINT to the whole process group, main process and workers alike. Whatever
the phase (workers starting, reading, scoring), the command stops promptly with exit code 130 and
one line saying how to resume, no process prints a traceback, no worker outlives it, and running
it again finishes with the output an uninterrupted run writes.

Each case starts the real CLI in its own process group and sends SIGINT to the group when the
run reaches a phase it can observe (a progress line on stderr, a part's status file), not after a
guessed delay, so every case lands where it says on a fast or a loaded machine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cli_project import Project
from tests.e2e.stopping import (
    SCORE,
    STOPS_WITHIN,
    Running,
    assert_stopped_quietly,
    results,
    workers_starting,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process group from /proc (Linux)"
)


@pytest.mark.parametrize(
    "phase",
    ["workers starting to read", "workers starting to score", "scoring under way"],
)
def test_ctrl_c_during_score_stops_it_quietly_and_a_rerun_finishes_the_same_output(
    trained_project: Project, history: Path, uninterrupted: Path, tmp_path: Path, phase: str
) -> None:
    # Given `sds score` running in its own process group
    out = tmp_path / "scores"
    running = Running(trained_project, *SCORE, "--data", str(history), "--out", str(out))

    # When Ctrl-C reaches the group in that phase
    reached = {
        "workers starting to read": workers_starting(running, "[1/4]"),
        "workers starting to score": workers_starting(running, "[3/4]"),
        "scoring under way": lambda: any((out / "_run" / "parts").glob("*/part-*.json")),
    }[phase]
    running.interrupt_when(reached)

    # Then it stops promptly with 130 and one line, no traceback, no worker left behind
    assert_stopped_quietly(running, out, code=130, how="interrupted")

    # And running it again finishes the run, with the output of an uninterrupted run
    again = trained_project.sds(*SCORE, "--data", str(history), "--out", str(out), "--quiet")
    assert f"into 16 parts in {out}" in again.stdout
    assert results(out) == results(uninterrupted)


def test_ctrl_c_during_train_stops_it_quietly_and_registers_nothing(
    fresh_copy: Callable[[], Project], history: Path, tmp_path: Path
) -> None:
    # Given `sds train` reading a history with two workers, its partitions under a folder of ours
    project = fresh_copy()
    before = project.sds("models", "--json").json()
    work = tmp_path / "work"
    work.mkdir()
    running = Running(
        project, "train", "--data", str(history), "--workers", "2", "--work-dir", str(work),
        "--reason", "interrupted",
    )  # fmt: skip

    # When Ctrl-C reaches the group as its second pool of workers starts (the first has read
    # the history by then)
    running.interrupt_when(workers_starting(running, "[2/8]"))

    # Then it stops promptly with 130, no traceback, no worker left, nothing registered and its
    # partitioned history removed
    code, took, stderr = running.wait()
    assert code == 130, stderr
    assert took < STOPS_WITHIN
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == "sds: interrupted"
    assert running.survivors() == []
    assert project.sds("models", "--json").json() == before
    assert list(work.iterdir()) == []
