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
a later one is ignored while that interruption is being handled (an `except`, `finally` or
`__exit__` is running with it), so that a second `kill`, or `timeout`'s second SIGTERM to the
whole group, does not cut the cleanup short. Library code can swallow an interruption (a bare
`except:`; numpy's random module, imported lazily, does it to a SIGTERM that lands while it
initializes), and the process would then go on until SIGKILL: so once a SIGTERM has come, a
watchdog thread delivers it to the main thread again every `RESEND_SECONDS`, and the handler
raises again whenever no interruption is being handled.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

RESEND_SECONDS = 1.0
"""How often a SIGTERM is delivered again until the command has stopped (see above)."""


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
    """Inside the block, SIGTERM raises `Terminated` in the main thread (unless the interruption
    is already being handled); the previous handling is restored after it. Outside the main
    thread, or where SIGTERM is ignored on purpose (`nohup`-style), it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN:
        yield
        return
    received = threading.Event()
    done = threading.Event()

    def terminate(signum: int, frame: FrameType | None) -> None:
        if received.is_set() and _handling_termination():
            return  # its cleanup is running: let it finish
        received.set()
        raise Terminated()

    def resend() -> None:
        main = threading.main_thread().ident
        while received.wait() and not done.wait(RESEND_SECONDS):
            if main is not None:
                signal.pthread_kill(main, signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminate)
    watchdog = threading.Thread(target=resend, name="sds-sigterm", daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        # A delivery from the watchdog on its way lands here, not in the handler restored below
        # (which may be SIGTERM's default: death).
        signal.signal(signal.SIGTERM, _spent)
        done.set()
        received.set()  # lets the watchdog see `done`, and end
        watchdog.join()
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _spent(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while the handling is being taken down: the command has stopped already."""


def _handling_termination() -> bool:
    """Whether a `Terminated` (or an exception it caused) is being handled in this thread."""
    exc: BaseException | None = sys.exc_info()[1]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Terminated):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
