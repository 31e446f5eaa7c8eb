"""SIGTERM, as `timeout`, systemd, Kubernetes, CI runners, `docker stop` and ECS StopTask send it,
stops every long-running command as cleanly as Ctrl-C does (test_interrupt.py): the same cleanup
(no worker left, no `.partial` file, nothing half-registered), the same line saying how to resume,
naming SIGTERM, and exit code 143 (128 + 15). The signal goes to the main process alone (`kill
PID`; ECS signals a container's PID 1) or to the whole process group (`kill -- -PGID`, `timeout`).
`sds serve` stops gracefully instead: it stops accepting, answers the request in flight, exits 0.

Each case signals the real command when it reaches a phase it can observe (a progress line on
stderr, a part's status file, a file appearing), not after a guessed delay.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.registry import open_registry
from tests.e2e.cli_project import Project
from tests.e2e.stopping import (
    SCORE,
    STOPS_WITHIN,
    Running,
    assert_stopped_quietly,
    line_starting,
    results,
    workers_starting,
)
from tests.e2e.test_serve import EVENT, free_port

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process group from /proc (Linux)"
)

MAIN_ALONE, GROUP = False, True


def parts_under_way(out: Path) -> Callable[[], bool]:
    return lambda: any((out / "_run" / "parts").glob("*/part-*.json"))


@pytest.mark.parametrize(
    ("phase", "group"),
    [
        ("workers starting to read", GROUP),
        ("scoring under way", MAIN_ALONE),
        ("scoring under way", GROUP),
    ],
    ids=["starting-group", "scoring-main", "scoring-group"],
)
def test_sigterm_during_score_stops_it_as_ctrl_c_does_and_a_rerun_finishes_the_same_output(
    trained_project: Project,
    history: Path,
    uninterrupted: Path,
    tmp_path: Path,
    phase: str,
    group: bool,
) -> None:
    # Given `sds score` running in its own process group
    out = tmp_path / "scores"
    running = Running(trained_project, *SCORE, "--data", str(history), "--out", str(out))

    # When SIGTERM reaches it (or its whole group) in that phase
    reached = {
        "workers starting to read": workers_starting(running, "[1/4]"),
        "scoring under way": parts_under_way(out),
    }[phase]
    running.signal_when(reached, signal.SIGTERM, group=group)

    # Then it stops promptly with 143 and one line naming SIGTERM and how to resume, no
    # traceback, no worker left behind, no partial file
    assert_stopped_quietly(running, out, code=143, how="stopped by SIGTERM")

    # And running it again finishes the run, with the output of an uninterrupted run
    again = trained_project.sds(*SCORE, "--data", str(history), "--out", str(out), "--quiet")
    assert f"into 16 parts in {out}" in again.stdout
    assert results(out) == results(uninterrupted)


def test_sigterm_during_backfill_stops_it_as_ctrl_c_does_and_a_rerun_resumes(
    trained_project: Project, history: Path, tmp_path: Path
) -> None:
    # Given `sds backfill` computing its parts
    out = tmp_path / "features"
    args = ("backfill", "--data", str(history), "--out", str(out), "--workers", "2")
    args += ("--partitions", "16")
    running = Running(trained_project, *args)

    # When `kill PID` reaches its main process alone while parts are under way
    running.signal_when(parts_under_way(out), signal.SIGTERM, group=MAIN_ALONE)

    # Then it stops as Ctrl-C stops it, saying SIGTERM, with 143
    assert_stopped_quietly(running, out, code=143, how="stopped by SIGTERM")

    # And the same command resumes and finishes the run
    again = trained_project.sds(*args, "--json")
    assert again.json()["manifest"]["complete"] is True


def registry_state(root: Path) -> dict[str, Any]:
    """What a reader of a local registry sees: its complete versions (each verified against its
    manifest) and its aliases."""
    registry = open_registry(root.as_uri(), "fraud")
    versions = registry.list_versions()
    for number in versions:
        registry.verify_version(number)
    aliases = {name: state.version for name, state in registry.list_aliases().items()}
    return {"versions": versions, "aliases": aliases}


@pytest.mark.parametrize(
    ("phase", "group"),
    [("second pool starting", GROUP), ("fitting", MAIN_ALONE)],
    ids=["reading-group", "fitting-main"],
)
def test_sigterm_during_sds_train_stops_it_and_registers_nothing(
    fresh_copy: Callable[[], Project], history: Path, tmp_path: Path, phase: str, group: bool
) -> None:
    # Given `sds train` reading a history with two workers, its partitions under a folder of ours,
    # in a project whose dev registry has versions and an alias
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    registry = project.path / ".sds" / "registries" / "dev"
    before = registry_state(registry)
    assert before["aliases"]
    work = tmp_path / "work"
    work.mkdir()
    running = Running(
        project, "train", "--data", str(history), "--workers", "2", "--work-dir", str(work),
        "--reason", "stopped",
    )  # fmt: skip

    # When SIGTERM reaches it in that phase
    reached = {
        "second pool starting": workers_starting(running, "[2/8]"),
        "fitting": line_starting("[4/8]", running),
    }[phase]
    running.signal_when(reached, signal.SIGTERM, group=group)

    # Then it stops promptly with 143, no traceback, no worker left, nothing registered, no alias
    # moved, and its partitioned history removed
    code, took, stderr = running.wait()
    assert code == 143, stderr
    assert took < STOPS_WITHIN
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == "sds: stopped by SIGTERM"
    assert running.survivors() == []
    assert registry_state(registry) == before
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("phase", ["reading", "fitting"])
def test_sigterm_to_the_training_task_s_entry_point_leaves_the_registry_as_it_was(
    fresh_copy: Callable[[], Project], history: Path, tmp_path: Path, phase: str
) -> None:
    # Given the training container's ENTRYPOINT (`python -m training.train`), configured as the
    # ECS task is (environment variables), registering into a registry with versions and an alias
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    registry = project.path / ".sds" / "registries" / "dev"
    before = registry_state(registry)
    work = tmp_path / "work"
    work.mkdir()
    project.env.update(
        TRAINING_DATA_URI=str(history), REGISTRY_URI=registry.as_uri(), TRAINING_WORK_DIR=str(work)
    )
    running = Running(project, "--workers", "2", module="training.train")

    # When ECS StopTask's SIGTERM reaches the container's PID 1 (the main process alone)
    reached = {
        "reading": workers_starting(running, "[1/8]"),
        "fitting": line_starting("[4/8]", running),
    }[phase]
    running.signal_when(reached, signal.SIGTERM, group=MAIN_ALONE)

    # Then it exits 143 within the stop timeout, saying so; no worker is left (PID 1's children
    # would be killed with the container), nothing is registered, no alias moved, no partitions left
    code, took, stderr = running.wait()
    assert code == 143, stderr
    assert took < STOPS_WITHIN
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == (
        "training stopped by SIGTERM: a version is registered only once complete, so nothing "
        "half-written is left"
    )
    assert running.survivors() == []
    assert registry_state(registry) == before
    assert list(work.iterdir()) == []


def unshare_works() -> bool:
    try:
        done = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


@pytest.mark.skipif(not unshare_works(), reason="needs a PID namespace of its own (unshare, root)")
def test_the_training_entry_point_as_a_container_s_pid_1_stops_on_sigterm(
    fresh_copy: Callable[[], Project], history: Path, tmp_path: Path
) -> None:
    # Given `python -m training.train` as PID 1 of a PID namespace of its own, as in the ECS
    # task's container (its ENTRYPOINT, no init process): the kernel delivers PID 1 only the
    # signals it has a handler for, so with Python's default SIGTERM was not even received
    # (the task ran on until SIGKILL, the stop timeout later)
    project = fresh_copy()
    registry = project.path / ".sds" / "registries" / "dev"
    before = registry_state(registry)
    work = tmp_path / "work"
    work.mkdir()
    project.env.update(
        TRAINING_DATA_URI=str(history), REGISTRY_URI=registry.as_uri(), TRAINING_WORK_DIR=str(work)
    )
    running = Running(project, "--workers", "2", module="training.train", prefix=UNSHARE)

    # When the container's PID 1 is sent SIGTERM from outside (ECS StopTask, `docker stop`)
    # while it fits
    running.wait_for(line_starting("[4/8]", running))
    init = next(m for m in Path("/proc").glob("[0-9]*") if parent_of(m) == running.process.pid)
    os.kill(int(init.name), signal.SIGTERM)

    # Then it stops with 143 (unshare passes its exit status on), registering nothing
    code, took, stderr = running.wait()
    assert code == 143, stderr
    assert took < STOPS_WITHIN
    assert stderr.splitlines()[-1].startswith("training stopped by SIGTERM"), stderr
    assert running.survivors() == []
    assert registry_state(registry) == before
    assert list(work.iterdir()) == []


def parent_of(proc: Path) -> int | None:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_sigterm_during_generate_leaves_no_partial_file(
    trained_project: Project, tmp_path: Path
) -> None:
    # Given `sds generate` writing a large history
    out = tmp_path / "events.jsonl.gz"
    running = Running(trained_project, "generate", "--events", "2000000", "--out", str(out))

    # When `kill PID` reaches it while the file is being written
    running.signal_when(lambda: any(tmp_path.glob(".*.partial")), signal.SIGTERM, group=MAIN_ALONE)

    # Then it stops with 143 and one line, and neither the file nor its partial one is there
    code, took, stderr = running.wait()
    assert code == 143, stderr
    assert took < STOPS_WITHIN
    assert stderr.splitlines()[-1] == "sds: stopped by SIGTERM", stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_serve_stops_accepting_answers_the_request_in_flight_and_exits_0(
    fresh_copy: Callable[[], Project], signum: int
) -> None:
    # Given `sds serve` with a model, and a client whose request is in flight: its headers are
    # in (the server has answered `100 Continue`), its body not yet sent
    project = fresh_copy()
    project.sds("promote", "1", "--to", "dev")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sds", "serve", "--env", "dev", "--port", str(port)],
        cwd=project.path,
        env=project.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = connect(port, server)
        body = json.dumps({"events": [EVENT]}).encode()
        client.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert client.recv(4096).startswith(b"HTTP/1.1 100")

        # When the server is told to stop
        server.send_signal(signum)

        # Then it stops accepting new connections
        deadline = time.monotonic() + STOPS_WITHIN
        while accepts(port):
            assert time.monotonic() < deadline, "still accepting connections"
            time.sleep(0.05)
        # And the request in flight is answered, closing its connection
        client.sendall(body)
        response = read_response(client)
        assert response.startswith(b"HTTP/1.1 200"), response
        assert b"Connection: close" in response
        assert b'"fraud_probability"' in response
        # And it exits 0, saying why it stopped
        code = server.wait(STOPS_WITHIN)
        stderr = server.stderr.read() if server.stderr else ""
        assert code == 0, stderr
        how = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
        assert f"sds serve: {how}: finishing the requests in flight" in stderr
        assert stderr.splitlines()[-1] == "sds serve: stopped"
        assert "Traceback" not in stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def connect(port: int, server: subprocess.Popen[str]) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=STOPS_WITHIN)
        except OSError:
            assert server.poll() is None, "sds serve exited"
            assert time.monotonic() < deadline, "sds serve did not start"
            time.sleep(0.05)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def read_response(client: socket.socket) -> bytes:
    """Until the server closes the connection (it was told to)."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)
