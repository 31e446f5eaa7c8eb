"""Running the CLI in its own process group and stopping it in a phase it can observe: what the
Ctrl-C tests (test_interrupt.py) and the SIGTERM tests (test_terminate.py) share."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_project import Project

# A bound for a hang, not a speed target: the command stops in well under a second.
STOPS_WITHIN = 20.0
SCORE = ("score", "--env", "dev", "--version", "1", "--workers", "2", "--partitions", "16")


def two_file_history(project: Project, folder: Path) -> Path:
    """A history of two files in `folder` (one item each, so each step has a worker per file)
    that takes two workers a few seconds to score."""
    whole = folder.parent / f"{folder.name}.jsonl.gz"
    project.sds("generate", "--events", "20000", "--seed", "11", "--out", str(whole))
    lines = gzip.decompress(whole.read_bytes()).splitlines(keepends=True)
    for half, name in ((lines[: len(lines) // 2], "a"), (lines[len(lines) // 2 :], "b")):
        (folder / f"{name}.jsonl.gz").write_bytes(gzip.compress(b"".join(half)))
    return folder


def results(out: Path) -> dict[str, Any]:
    """What a run wrote, less when, where and which plan: each part's rows and the manifest."""
    parts = {p.name: gzip.decompress(p.read_bytes()) for p in sorted(out.glob("part-*.jsonl.gz"))}
    manifest = json.loads((out / "_run" / "manifest.json").read_text())
    for key in ("started_at", "finished_at", "output", "plan_id"):
        manifest.pop(key)
    return {"parts": parts, "manifest": manifest}


class Running:
    """`sds ...` (or `python -m MODULE ...`) started in its own process group, its stderr read as
    it comes."""

    def __init__(
        self, project: Project, *args: str, module: str = "sds", prefix: Sequence[str] = ()
    ) -> None:
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", module, *args],
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
        self.signal_when(reached, signal.SIGINT, group=True)

    def signal_when(self, reached: Callable[[], bool], signum: int, *, group: bool) -> None:
        """`signum` once `reached()`: to the whole group (a terminal, `timeout`, `kill -- -PGID`)
        or to the main process alone (`kill PID`, systemd's default, ECS to a container's PID 1)."""
        self.wait_for(reached)
        if group:
            os.killpg(self.process.pid, signum)
        else:
            os.kill(self.process.pid, signum)

    def wait_for(self, reached: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 120
        while not reached():
            assert self.process.poll() is None, f"finished before the phase: {self.lines}"
            assert time.monotonic() < deadline, f"never reached the phase: {self.lines}"
            time.sleep(0.005)

    def wait(self) -> tuple[int, float, str]:
        """(exit code, seconds it took to stop, stderr), killing the group if it hangs."""
        signalled = time.monotonic()
        try:
            code = self.process.wait(STOPS_WITHIN)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"still running {STOPS_WITHIN} s after the signal: {self.lines}")
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


def assert_stopped_quietly(running: Running, out: Path, *, code: int, how: str) -> None:
    """Stopped within the bound with `code`, one last line saying `how` and how to resume, no
    traceback, no process of the group left, nothing half-written in `out`."""
    exit_code, took, stderr = running.wait()
    assert exit_code == code, stderr
    assert took < STOPS_WITHIN
    assert "Traceback" not in stderr, stderr
    last = stderr.splitlines()[-1]
    assert (
        last == f"sds: {how}: run the same command again to resume: {out} keeps what was finished"
    )
    assert [line for line in stderr.splitlines() if line.startswith("sds:")] == [last]
    assert running.survivors() == []
    assert not list(out.rglob("*.partial"))  # nothing half-written left beside the results
