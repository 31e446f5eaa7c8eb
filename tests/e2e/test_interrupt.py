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

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_project import Project

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process group from /proc (Linux)"
)

# A bound for a hang, not a speed target: the command stops in well under a second.
STOPS_WITHIN = 20.0
SCORE = ("score", "--env", "dev", "--version", "1", "--workers", "2", "--partitions", "16")


@pytest.fixture(scope="module")
def history(trained_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A history of two files (one item each, so each step has a worker per file) that takes
    two workers a few seconds to score."""
    folder = tmp_path_factory.mktemp("history")
    whole = folder.parent / f"{folder.name}.jsonl.gz"
    trained_project.sds("generate", "--events", "20000", "--seed", "11", "--out", str(whole))
    lines = gzip.decompress(whole.read_bytes()).splitlines(keepends=True)
    for half, name in ((lines[: len(lines) // 2], "a"), (lines[len(lines) // 2 :], "b")):
        (folder / f"{name}.jsonl.gz").write_bytes(gzip.compress(b"".join(half)))
    return folder


@pytest.fixture(scope="module")
def uninterrupted(trained_project: Project, history: Path) -> Path:
    out = history.parent / "uninterrupted"
    trained_project.sds(*SCORE, "--data", str(history), "--out", str(out), "--quiet")
    return out


class Running:
    """`sds ...` started in its own process group, its stderr read as it comes."""

    def __init__(self, project: Project, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sds", *args],
            cwd=project.path,
            env=project.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def interrupt_when(self, reached: Callable[[], bool]) -> None:
        """Ctrl-C, as the terminal sends it (to the whole group), once `reached()`."""
        deadline = time.monotonic() + 120
        while not reached():
            assert self.process.poll() is None, f"finished before the phase: {self.lines}"
            assert time.monotonic() < deadline, f"never reached the phase: {self.lines}"
            time.sleep(0.005)
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self) -> tuple[int, float, str]:
        """(exit code, seconds it took to stop, stderr), killing the group if it hangs."""
        signalled = time.monotonic()
        try:
            code = self.process.wait(STOPS_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"still running {STOPS_WITHIN} s after Ctrl-C: {self.lines}")
        took = time.monotonic() - signalled
        self._reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code, took, "\n".join(self.lines)

    def survivors(self) -> list[str]:
        """Live processes (not zombies) left in its process group, after a moment to exit."""
        deadline = time.monotonic() + 5
        while (left := group_members(self.process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return [member.cmdline for member in left]


@dataclass
class Member:
    cmdline: str
    handles_sigint: bool  # a Python interpreter well under way: its SIGINT handler is installed


def group_members(pgid: int) -> list[Member]:
    """The live processes (not zombies) in process group `pgid`."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        state, _, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            caught = int(status.split("SigCgt:")[1].split()[0], 16)
            members.append(Member(cmdline, bool(caught & 1 << (signal.SIGINT - 1))))
    return members


def workers_starting(running: Running, step: str) -> Callable[[], bool]:
    """Once `step`'s progress line is out and one of its worker processes is starting up: its
    interpreter has installed its SIGINT handler and is importing (about a second, where a
    worker used to print a KeyboardInterrupt traceback)."""
    return lambda: (
        any(line.startswith(step) for line in running.lines)
        and any(
            "spawn_main" in member.cmdline and member.handles_sigint
            for member in group_members(running.process.pid)
        )
    )


def line_starting(prefix: str, running: Running) -> Callable[[], bool]:
    return lambda: any(line.startswith(prefix) for line in running.lines)


def assert_stopped_quietly(running: Running, out: Path) -> None:
    code, took, stderr = running.wait()
    assert code == 130, stderr
    assert took < STOPS_WITHIN
    assert "Traceback" not in stderr, stderr
    last = stderr.splitlines()[-1]
    assert (
        last
        == f"sds: interrupted: run the same command again to resume: {out} keeps what was finished"
    )
    assert [line for line in stderr.splitlines() if line.startswith("sds:")] == [last]
    assert running.survivors() == []
    assert not list(out.rglob("*.partial"))  # nothing half-written left beside the results


def results(out: Path) -> dict[str, Any]:
    """What a run wrote, less when and where: each part's rows and the manifest."""
    parts = {p.name: gzip.decompress(p.read_bytes()) for p in sorted(out.glob("part-*.jsonl.gz"))}
    manifest = json.loads((out / "_run" / "manifest.json").read_text())
    for key in ("started_at", "finished_at", "output"):
        manifest.pop(key)
    return {"parts": parts, "manifest": manifest}


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
        "scoring under way": lambda: any((out / "_run" / "parts").glob("part-*.json")),
    }[phase]
    running.interrupt_when(reached)

    # Then it stops promptly with 130 and one line, no traceback, no worker left behind
    assert_stopped_quietly(running, out)

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
