"""The batch steps' worker processes (`sds.kernel.batch.pool`): results as they come, and every
way a run can end before its last task (an error, Ctrl-C, SIGTERM, a consumer that stops, a
worker that dies) stops every worker promptly, lets it clean up, and prints no traceback of its
own.

The e2e side (Ctrl-C to the whole process group of a real `sds score`) is
tests/e2e/test_interrupt.py.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest

from sds.kernel.batch import pool
from sds.kernel.batch.pool import WorkerLost, run_in_processes
from sds.kernel.signals import Terminated, sigterm_as_interrupt

# A hang test's bound, not a speed target: stopping takes milliseconds, a hang forever.
PROMPTLY = 20.0


def square(x: int) -> int:
    return x * x


def linger(marker: str) -> None:
    """A long task that cleans up after itself, as the batch steps do (partial files)."""
    Path(f"{marker}.started").touch()
    try:
        time.sleep(120)
    finally:
        Path(f"{marker}.cleaned").touch()


def fail(message: str, once_started: str) -> None:
    wait_for(Path(f"{once_started}.started"))
    raise ValueError(message)


def ctrl_c(marker: str, once_started: str) -> None:
    """The terminal's Ctrl-C as it lands: SIGINT to the main process and to this worker."""
    wait_for(Path(f"{once_started}.started"))
    Path(f"{marker}.started").touch()
    try:
        os.kill(os.getppid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(120)
    finally:
        Path(f"{marker}.cleaned").touch()


def sigterm(marker: str, once_started: str, *, group: bool) -> None:
    """`kill PID` of the main process (and, with `group`, of this worker too: `kill -- -PGID`,
    `timeout`)."""
    wait_for(Path(f"{once_started}.started"))
    Path(f"{marker}.started").touch()
    try:
        os.kill(os.getppid(), signal.SIGTERM)
        if group:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(120)
    finally:
        Path(f"{marker}.cleaned").touch()


def sigterm_alone(marker: str, once_started: str) -> None:
    sigterm(marker, once_started, group=False)


def sigterm_to_group(marker: str, once_started: str) -> None:
    sigterm(marker, once_started, group=True)


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def stopped_in_a_callback() -> str:
    """A signal landing where Python cannot raise: in a weakref's callback, as in the module lock
    an import drops; then the task goes on."""

    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: (os.kill(os.getpid(), signal.SIGTERM), time.sleep(1)))
    del thing  # the callback runs here, and the signal's handler inside it
    assert ref() is None
    return "finished"


def call(function: object, *arguments: object) -> object:
    assert callable(function)
    return function(*arguments)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + PROMPTLY
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_every_task_s_result_comes_back_once_with_its_index() -> None:
    results = dict(run_in_processes(square, [(x,) for x in range(7)], processes=2))

    assert results == {x: x * x for x in range(7)}
    assert multiprocessing.active_children() == []


def test_a_task_s_error_is_raised_as_raised_in_the_worker_and_stops_the_others(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose second worker is busy with a long task when the first one fails
    marker = tmp_path / "long"
    tasks = [(linger, str(marker)), (fail, "part 3 is corrupt", str(marker))]

    # When the other task fails
    started = time.monotonic()
    with pytest.raises(ValueError, match="part 3 is corrupt") as raised:
        list(run_in_processes(call, tasks, processes=2))

    # Then the error is the worker's, with its traceback as the cause
    assert "raise ValueError(message)" in str(raised.value.__cause__)
    # And the long task was stopped, not waited for, after it cleaned up
    assert time.monotonic() - started < PROMPTLY
    assert Path(f"{marker}.cleaned").exists()
    assert multiprocessing.active_children() == []
    assert "Traceback" not in capfd.readouterr().err


def test_ctrl_c_stops_every_worker_promptly_after_its_cleanup_and_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # Given two workers busy with long tasks, and Ctrl-C reaching the main process and one
    # worker (the other never sees it: `kill -INT` of the main process alone)
    tasks = [(linger, str(tmp_path / "a")), (ctrl_c, str(tmp_path / "b"), str(tmp_path / "a"))]

    # When
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        list(run_in_processes(call, tasks, processes=2))

    # Then both stopped promptly, each after its cleanup, and no worker printed a traceback
    assert time.monotonic() - started < PROMPTLY
    assert (tmp_path / "a.cleaned").exists()
    assert (tmp_path / "b.cleaned").exists()
    assert multiprocessing.active_children() == []
    assert "Traceback" not in capfd.readouterr().err


def test_a_signal_in_a_callback_prints_no_traceback_and_the_next_one_stops_the_task(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker's task whose SIGTERM lands inside a callback, where Python cannot raise
    # When it runs, then the task finishes and the worker printed nothing
    assert list(run_in_processes(stopped_in_a_callback, [()], processes=1)) == [(0, "finished")]
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err, err
    # And the worker's hook, which did that, armed the handler again: the next signal raises
    monkeypatch.setattr(sys, "unraisablehook", pool._unraisable)
    monkeypatch.setattr(pool, "_stopped_by", 0)
    raising_in_a_callback(lambda: pool._stopped(signal.SIGTERM, None))
    assert pool._stopped_by == 0
    with pytest.raises(KeyboardInterrupt):
        pool._stopped(signal.SIGTERM, None)
    assert pool._stopped_by == signal.SIGTERM
    # while anything else raised in a callback is printed as Python prints it
    raising_in_a_callback(lambda: int("boom"))
    assert "ValueError: invalid literal for int() with base 10: 'boom'" in capfd.readouterr().err


def raising_in_a_callback(function: Callable[[], object]) -> None:
    class Thing:
        pass

    thing = Thing()
    ref = weakref.ref(thing, lambda _: function())
    del thing
    assert ref() is None


def test_a_consumer_that_stops_iterating_stops_the_workers(tmp_path: Path) -> None:
    # Given a run with a quick task and a long one
    runner = run_in_processes(call, [(square, 3), (linger, str(tmp_path / "long"))], processes=2)

    # When its consumer takes the first result and goes away
    assert next(runner) == (0, 9)
    wait_for(tmp_path / "long.started")
    started = time.monotonic()
    runner.close()

    # Then the long task was stopped (after its cleanup), not waited for
    assert time.monotonic() - started < PROMPTLY
    assert (tmp_path / "long.cleaned").exists()
    assert multiprocessing.active_children() == []


def test_a_worker_that_dies_raises_worker_lost_instead_of_hanging() -> None:
    with pytest.raises(WorkerLost, match=r"killed by SIGKILL \(out of memory\?\) while on task 1"):
        list(run_in_processes(call, [(square, 2), (killed,)], processes=2))

    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("task", [sigterm_alone, sigterm_to_group], ids=["main alone", "group"])
def test_sigterm_stops_every_worker_after_its_cleanup_as_ctrl_c_does(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], task: object
) -> None:
    # Given two workers busy with long tasks under an entry point that handles SIGTERM
    # (`sigterm_as_interrupt`, as `sds` and `python -m training.train` do), and SIGTERM reaching
    # the main process (and, to the group, the worker that sends it)
    tasks = [(linger, str(tmp_path / "a")), (task, str(tmp_path / "b"), str(tmp_path / "a"))]

    # When
    started = time.monotonic()
    with pytest.raises(Terminated), sigterm_as_interrupt():
        list(run_in_processes(call, tasks, processes=2))

    # Then it ended as an interruption that says it was SIGTERM; both workers stopped promptly,
    # each after its cleanup, quietly
    assert time.monotonic() - started < PROMPTLY
    assert (tmp_path / "a.cleaned").exists()
    assert (tmp_path / "b.cleaned").exists()
    assert multiprocessing.active_children() == []
    assert "Traceback" not in capfd.readouterr().err


def test_sigterm_while_workers_are_spawned_is_held_until_each_is_known_then_stops_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given SIGTERM landing in the instant after the first worker process is started, before
    # the pool has it in hand (the entry point handles SIGTERM)
    start = multiprocessing.context.SpawnProcess.start
    sent = []

    def start_then_sigterm(process: multiprocessing.context.SpawnProcess) -> None:
        start(process)
        if not sent:
            sent.append(process)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start_then_sigterm)
    tasks = [(linger, str(tmp_path / "a")), (linger, str(tmp_path / "b"))]

    # When the run starts
    with pytest.raises(Terminated), sigterm_as_interrupt():
        list(run_in_processes(call, tasks, processes=2))

    # Then the interruption came once the workers were the pool's, and none is left running
    assert sent
    assert multiprocessing.active_children() == []
