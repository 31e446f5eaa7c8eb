"""SIGTERM stops a command the way Ctrl-C does: one exception path for every way a run is stopped.

`timeout`, systemd, Kubernetes, CI runners, `docker stop` and ECS StopTask ask a process to stop
with SIGTERM (and kill it a grace period later). Python's default for SIGTERM is to die at once:
no `finally` block, no context manager's exit, so half-written files stay and worker processes
are orphaned. `sigterm_as_interrupt()` (used by the `sds` CLI's `main` and by the training
task's `python -m training.train`) turns SIGTERM into `Terminated`, a `KeyboardInterrupt`:
every `except KeyboardInterrupt` and `finally` that cleans up after Ctrl-C runs for it too
(the batch pool stops its workers, a part removes its `.partial` file, training removes its
partitioned history), and the entry point tells the two apart by type for its last line and
its exit code: 130 (128 + SIGINT) for Ctrl-C, 143 (128 + SIGTERM) for SIGTERM, as a shell
reports a process those signals killed.

The handler is installed in the main thread only (Python runs signal handlers there, and only
there may they be changed) and by the entry points only: worker processes handle their own
signals (`sds.kernel.batch.pool`), told to stop by the main process. The first SIGTERM raises;
later ones are ignored while the cleanup runs, so that a second `kill` (or one sent to the whole
process group after the main process alone) does not cut it short.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The process was asked to stop with SIGTERM: handled as Ctrl-C is, reported as SIGTERM."""

    signal_name = "SIGTERM"
    exit_code = 128 + signal.SIGTERM


def stop_reason(exc: KeyboardInterrupt) -> tuple[str, int]:
    """How an interruption is reported: (`interrupted`, 130) for Ctrl-C, (`stopped by SIGTERM`,
    143) for SIGTERM."""
    if isinstance(exc, Terminated):
        return f"stopped by {exc.signal_name}", exc.exit_code
    return "interrupted", 128 + signal.SIGINT


def reworded(exc: KeyboardInterrupt, message: str) -> KeyboardInterrupt:
    """The same kind of interruption (Ctrl-C or SIGTERM) with `message`: for code that adds
    what it knows (how to resume) while the interruption propagates."""
    return Terminated(message) if isinstance(exc, Terminated) else KeyboardInterrupt(message)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, the first SIGTERM raises `Terminated` in the main thread (later ones are
    ignored); the previous handling is restored after it. Outside the main thread, or where
    SIGTERM is ignored on purpose (`nohup`-style), it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return
    received = False

    def terminate(signum: int, frame: FrameType | None) -> None:
        nonlocal received
        if not received:
            received = True
            raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
