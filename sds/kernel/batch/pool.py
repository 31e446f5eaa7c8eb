"""Worker processes for the batch steps on this machine, stopped promptly and quietly on Ctrl-C
or SIGTERM.

`run_in_processes` runs a module-level function over argument tuples in `spawn`ed processes (a
fresh interpreter each: ONNX Runtime's and OpenMP's threads do not survive a fork), one pipe per
worker, and yields each result as it arrives. The pool is this module's own and not
`concurrent.futures.ProcessPoolExecutor` because of how a run ends when it does not finish: the
terminal's Ctrl-C sends SIGINT to the whole process group, workers included, and the executor's
workers then either die with a traceback (the signal lands while they wait for a task, or while
they start) or keep waiting for a task the main process never sends, while the main process waits
for them at exit: a hang. Here one path ends every unfinished run (Ctrl-C, a task's error, a
worker that died, a consumer that stopped iterating):

- a worker starts with SIGINT and SIGTERM blocked (the main process blocks them while spawning,
  and the mask is inherited across exec), so neither can land while the interpreter starts; the
  worker unblocks them once its own handlers are installed, and a signal that arrived meanwhile
  is delivered then;
- in a worker, the first SIGINT or SIGTERM raises KeyboardInterrupt in the task (not an
  `Exception`: the task's `finally` blocks and context managers remove what it had half-written,
  as in the main process) and the worker exits quietly with 128 + the signal's number; later
  signals are ignored, so that this cleanup is not cut short (one that lands where Python
  cannot raise, in a callback, is dropped without a traceback and the next signal raises);
- the main process, however its loop ends before every task is done, sends each worker SIGTERM
  (`kill -INT` may have reached the main process alone; SIGTERM also reaches a worker that
  inherited an ignored SIGINT, as a script's `cmd &` does), waits up to `GRACE_SECONDS` for
  them, then kills what is left: it returns only when no worker is alive. A Ctrl-C meanwhile
  waits until then, and so does a SIGTERM where the entry point turned it into an interruption
  (`sds.kernel.signals.Terminated`, a KeyboardInterrupt: the main process then ends its run the
  same way).

A task's exception is raised in the main process as it was raised in the worker, with the worker's
traceback as its cause; a worker that dies (the out-of-memory killer, a crash) raises `WorkerLost`
instead of leaving its task waiting forever.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing import get_context, resource_tracker
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from sds.kernel.errors import SdsError

GRACE_SECONDS = 5.0
"""How long stopped workers get to clean up (remove the files they were writing) and exit,
before they are killed. A worker handles SIGINT between two Python bytecodes, so only a long
native call (one ONNX Runtime batch, one zlib block) delays it: milliseconds in practice."""


class WorkerLost(SdsError):
    """A worker process exited while it had a task: killed (out of memory?) or crashed."""


class _RemoteTraceback(SdsError):
    """The worker's traceback, as text: the cause of the exception raised in the main process
    (never raised itself)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection
    task: int | None = None  # the index of the task it is running


def run_in_processes(
    function: Callable[..., Any], tasks: Sequence[tuple[Any, ...]], *, processes: int
) -> Generator[tuple[int, Any], None, None]:
    """(task index, result) of `function(*task)` for each task, in completion order, computed in
    `processes` worker processes (at most one per task). Tasks start in order; the first error
    stops the run (the other workers are interrupted, their tasks left for the next run)."""
    todo = deque((index, (function, *arguments)) for index, arguments in enumerate(tasks))
    workers: list[_Worker] = []
    finished = False
    try:
        _start(workers, min(processes, len(tasks)))
        for worker in workers:
            _give(worker, todo)
        while busy := [w for w in workers if w.task is not None]:
            ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.connection in ready:
                    yield _result(worker)
                    _give(worker, todo)
                elif worker.process.sentinel in ready:
                    raise _lost(worker)
        finished = True
    finally:
        _stop(workers, interrupt=not finished)


def _start(workers: list[_Worker], count: int) -> None:
    """Spawn `count` workers into `workers` (the caller stops them, even if this is interrupted)."""
    context = get_context("spawn")
    # A Ctrl-C (or SIGTERM) meanwhile is deferred: a thread that does not block the signal (ONNX
    # Runtime's, in this process) takes it at once, and a KeyboardInterrupt between spawning a
    # worker and sending it its start-up data would leave it to die with a traceback, unknown to
    # us.
    with _interrupts_deferred(raise_after=True):
        # Started first: starting it unblocks SIGINT and SIGTERM in this thread afterwards (it
        # blocks them around its own start, as below), which would undo the blocking for the
        # workers.
        resource_tracker.ensure_running()
        with _interrupts_blocked():  # inherited by the workers: see the module's docstring
            for _ in range(count):
                mine, theirs = context.Pipe()
                process = context.Process(target=_serve, args=(theirs,), name="sds-worker")
                # Daemonic: should this process exit without stopping them, multiprocessing's
                # exit handler terminates them rather than waiting for them.
                process.daemon = True
                try:
                    process.start()
                finally:
                    theirs.close()  # the worker's end: it sees EOF when this process ends
                workers.append(_Worker(process, mine))


def _give(worker: _Worker, todo: deque[tuple[int, tuple[Any, ...]]]) -> None:
    if not todo:
        return
    worker.task, task = todo.popleft()
    with suppress(OSError):  # it died: its sentinel says so, and the loop raises WorkerLost
        worker.connection.send(task)


def _result(worker: _Worker) -> tuple[int, Any]:
    index = worker.task
    assert index is not None
    try:
        outcome, value, remote = worker.connection.recv()
    except (EOFError, OSError):
        raise _lost(worker) from None
    worker.task = None
    if outcome == "error":
        value.__cause__ = _RemoteTraceback(remote)
        raise value
    return index, value


def _lost(worker: _Worker) -> WorkerLost:
    process = worker.process
    process.join(GRACE_SECONDS)
    code = process.exitcode
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
        if code == -signal.SIGKILL:
            how += " (out of memory?)"
    elif code is not None and code > 128:
        how = f"was stopped by {signal.Signals(code - 128).name}"
    else:
        how = f"exited with code {code}"
    return WorkerLost(f"worker process {process.pid} {how} while on task {worker.task}")


def _stop(workers: list[_Worker], *, interrupt: bool) -> None:
    """Stop every worker and wait for it. A finished run tells its idle workers to exit; an
    unfinished one stops them with SIGTERM (they clean up and exit quietly). Either way, what is
    still alive after `GRACE_SECONDS` is killed. A Ctrl-C meanwhile is held until the workers are
    gone, then raised (unless the run is already ending with an exception); so is a SIGTERM the
    entry point turned into an interruption."""
    with _interrupts_deferred(raise_after=not interrupt):
        for worker in workers:
            if interrupt:
                _signal(worker.process, signal.SIGTERM)
            else:
                with suppress(OSError):
                    worker.connection.send(None)
        deadline = time.monotonic() + GRACE_SECONDS
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
            worker.process.close()


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None and process.exitcode is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signum)


# In a worker ---------------------------------------------------------------------------------


def _serve(connection: Connection) -> None:
    """A worker's life: run the tasks the pipe brings until told to stop (None), the main
    process goes away (EOF), SIGINT or SIGTERM. Never a traceback of its own."""
    signal.signal(signal.SIGTERM, _stopped)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored (`cmd &`)
        signal.signal(signal.SIGINT, _stopped)
    sys.unraisablehook = _unraisable
    try:
        # Inside the `try`: a signal that arrived while the worker started is delivered here.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
        while (task := connection.recv()) is not None:
            function, *arguments = task
            try:
                reply: tuple[str, Any, str] = ("ok", function(*arguments), "")
            except Exception as exc:
                reply = ("error", exc, traceback.format_exc())
            try:
                connection.send(reply)
            except OSError:
                raise
            except Exception as exc:  # the result or its exception does not pickle: say so
                name = getattr(function, "__name__", repr(function))
                failure = RuntimeError(f"{name}: {type(exc).__name__}: {exc}")
                connection.send(("error", failure, traceback.format_exc()))
    except KeyboardInterrupt:
        raise SystemExit(128 + (_stopped_by or signal.SIGINT)) from None
    except (EOFError, OSError):  # the main process is gone: nobody to answer
        return


_stopped_by = 0  # the signal that stopped this worker (0: none yet)


def _stopped(signum: int, frame: FrameType | None) -> None:
    # Once: a second signal (Ctrl-C reaches the worker, then the main process's SIGTERM) must not
    # cut the task's cleanup short. The handler stays in place rather than SIG_IGN: a signal
    # already on its way would then be reported as "ignored due to race condition".
    global _stopped_by
    if not _stopped_by:
        _stopped_by = signum
        raise KeyboardInterrupt  # not an Exception: no task's `except Exception` takes it


def _unraisable(unraisable: Any) -> None:
    """A worker's `sys.unraisablehook`. Where Python cannot raise (a weakref's or `__del__`'s
    callback: the module lock every import drops, for one), the KeyboardInterrupt `_stopped`
    raised is swallowed, and Python's own hook prints it with a traceback ("Exception ignored
    in ..."). Here it goes silently and `_stopped` is armed again: the SIGTERM the main process
    sends every worker of an unfinished run then stops the task. Anything else is printed as
    before."""
    global _stopped_by
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _stopped_by = 0
        return
    sys.__unraisablehook__(unraisable)


# Interruptions in the main process -----------------------------------------------------------

_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread (so in the processes it spawns meanwhile). A
    signal that arrives is not lost: it is delivered when unblocked, or to another thread at
    once."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _interrupts_deferred(*, raise_after: bool) -> Iterator[None]:
    """A Ctrl-C inside is noted, not raised, and so is a SIGTERM whose handler is Python's (the
    entry point's `sigterm_as_interrupt`; SIGTERM's default, dying at once, is left alone): only
    the main thread can change a handler, and only its handlers raise. With `raise_after`, the
    first one noted is raised at the end, by the handler it would have met."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Callable[[int, FrameType | None], Any]] = {
        signum: handler
        for signum in (signal.SIGINT, signal.SIGTERM)
        if callable(handler := signal.getsignal(signum))
    }
    for signum in previous:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught and raise_after:
        first = caught[0]
        previous[first](first, None)  # Python's own raises KeyboardInterrupt; ours, Terminated
