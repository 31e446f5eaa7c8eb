"""Progress of long commands on stderr: a live bar on a terminal, plain lines in logs.

    progress = Progress(7)
    model = progress.run("fitting", lambda: fit(x, y), lambda m: f"{m.n_iter_} trees")
    with progress.uploading("uploading 3 objects") as on_upload:
        registry.register(artifacts, metadata, actor=actor, on_upload=on_upload)

Three modes, chosen once per `Progress`:

- live (the stream is a terminal, TERM is not "dumb"): one line redrawn in place by a daemon
  ticker thread, then replaced by a permanent line when the step ends. No colour is used, so
  NO_COLOR has nothing to turn off.
- plain (pipes, CI and CloudWatch logs): `[3/7] label ...` when a step starts and
  `      done in 1.2 s: summary` when it ends; no control characters at all.
- disabled: nothing is printed.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TextIO, TypeVar

T = TypeVar("T")

UploadCallback = Callable[[str, int, int], None]
"""(object name, bytes stored so far, total bytes): the registry's `on_upload` hook."""

CLEAR_TO_END = "\x1b[K"
BAR_CELLS = 14
TICK_SECONDS = 0.15
_UNITS = ("KiB", "MiB", "GiB")
_INDENT = "      "


def human_bytes(n: int) -> str:
    """`512 B`, `1.5 KiB`, `3.4 MiB`, `2.0 GiB` (powers of 1024; GiB is the largest unit)."""
    if abs(n) < 1024:
        return f"{n} B"
    value = float(n)
    for i, unit in enumerate(_UNITS):
        value /= 1024
        if round(abs(value), 1) < 1024 or i == len(_UNITS) - 1:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_bytes_of(done: int, total: int) -> str:
    """Both amounts in the unit of the total: `1.2/3.4 MiB`, `300/900 B`."""
    if abs(total) < 1024:
        return f"{done}/{total} B"
    scale = 1.0
    for i, unit in enumerate(_UNITS):
        scale *= 1024
        if round(abs(total) / scale, 1) < 1024 or i == len(_UNITS) - 1:
            return f"{done / scale:.1f}/{total / scale:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def truncate(text: str, width: int, ellipsis: str = "…") -> str:
    """`text` cut to at most `width` characters, ending in `ellipsis` when it was cut."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= len(ellipsis):
        return text[:width]
    return text[: width - len(ellipsis)] + ellipsis


def is_live_terminal(stream: TextIO) -> bool:
    """Whether `stream` can take a line redrawn in place (a terminal that is not TERM=dumb)."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class _Ticker:
    """A daemon thread calling `draw` every `interval` seconds until `stop()`."""

    def __init__(self, draw: Callable[[], None], interval: float) -> None:
        self._draw = draw
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sds-progress", daemon=True)

    def start(self) -> None:
        self._draw()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.ident is not None:  # started
            self._thread.join()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._draw()
            except (OSError, ValueError):  # the stream went away: stop drawing, quietly
                return


class Progress:
    """Numbered steps of a long command, each with its duration (and byte transfers within)."""

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        live: bool | None = None,
        width: int | None = None,
        interval: float = TICK_SECONDS,
    ) -> None:
        """`live=None`: live when `stream` (default stderr) is a terminal. `width`: the longest
        line drawn in place (default: the terminal's width minus one)."""
        self.total = total
        self.step = 0
        self.stream: TextIO = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.live = enabled and (is_live_terminal(self.stream) if live is None else live)
        self.width = width
        self.interval = interval
        self._lock = threading.Lock()
        self._render: Callable[[int], str] | None = None  # what the ticker draws, given a width
        self._ticker: _Ticker | None = None
        self._in_step = False
        self._glyphs = _glyphs(self.stream)

    # Steps --------------------------------------------------------------------------------------

    def run(
        self, label: str, work: Callable[[], T], summary: Callable[[T], str] | None = None
    ) -> T:
        """Run one step: `work()`'s result is returned and its exceptions propagate unchanged."""
        self.step += 1
        prefix = f"[{self.step}/{self.total}]"
        if not self.enabled:
            return work()
        if not self.live:
            return self._run_plain(prefix, label, work, summary)
        return self._run_live(prefix, label, work, summary)

    def _run_plain(
        self, prefix: str, label: str, work: Callable[[], T], summary: Callable[[T], str] | None
    ) -> T:
        self._print(f"{prefix} {label} ...")
        started = time.perf_counter()
        self._in_step = True
        try:
            result = work()
        finally:
            self._in_step = False
        note = f": {summary(result)}" if summary else ""
        self._print(f"{_INDENT}done in {time.perf_counter() - started:.1f} s{note}")
        return result

    def _run_live(
        self, prefix: str, label: str, work: Callable[[], T], summary: Callable[[T], str] | None
    ) -> T:
        started = time.perf_counter()
        bar = self._step_bar()

        def render(width: int) -> str:
            elapsed = time.perf_counter() - started
            return self._compose(f"{prefix} {bar}  ", label, f"  {elapsed:.1f} s", width)

        ticker = _Ticker(self._draw, self.interval)
        with self._lock:
            self._render, self._ticker = render, ticker
        outcome, note = "failed", ""
        try:
            self._in_step = True
            ticker.start()
            result = work()
            note = f": {summary(result)}" if summary else ""
            outcome = "done"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            self._in_step = False
            ticker.stop()
            with self._lock:
                self._render, self._ticker = None, None
            elapsed = time.perf_counter() - started
            if outcome == "done":
                final = f"{prefix} {label} ... done in {elapsed:.1f} s{note}"
            else:
                final = f"{prefix} {label} ... {outcome} after {elapsed:.1f} s"
            self._write(f"\r{final}{CLEAR_TO_END}\n")
        return result

    def _step_bar(self) -> str:
        full, current, empty, _ = self._glyphs
        total = max(self.total, 1)
        done = min(BAR_CELLS, round(BAR_CELLS * (self.step - 1) / total))
        upto = min(BAR_CELLS, max(done, round(BAR_CELLS * self.step / total)))
        return full * done + current * (upto - done) + empty * (BAR_CELLS - upto)

    # Transfers ----------------------------------------------------------------------------------

    @contextmanager
    def transfer(
        self, label: str, total_bytes: int, *, unit: str | None = None
    ) -> Iterator[Callable[[int], None]]:
        """A byte transfer: yields `advance(nbytes)`, to call as bytes are moved (any thread).
        With `unit`, a count of things instead of bytes (`3/16 parts`).

        Live: a byte bar, drawn in the current step's line if inside `run`, else on its own line
        which ends as `label: 3.4 MiB in 0.8 s`. Plain: one line at the start and one at the end.
        """
        done = 0
        lock = threading.Lock()

        def advance(nbytes: int) -> None:
            nonlocal done
            with lock:
                done += nbytes

        if not self.enabled:
            yield advance
            return
        indent = _INDENT if self._in_step else ""
        started = time.perf_counter()

        def amount(n: int) -> str:
            return human_bytes(n) if unit is None else f"{n} {unit}"

        def amounts(n: int, total: int) -> str:
            return human_bytes_of(n, total) if unit is None else f"{n}/{total} {unit}"

        def ending(outcome: str) -> str:
            elapsed = time.perf_counter() - started
            if outcome == "done":
                return f"{indent}{label}: {amount(done)} in {elapsed:.1f} s"
            moved = amounts(done, total_bytes)
            return f"{indent}{label}: {outcome} after {elapsed:.1f} s ({moved})"

        if not self.live:
            self._print(f"{indent}{label} ({amount(total_bytes)}) ...")
            outcome = "failed"
            try:
                yield advance
                outcome = "done"
            except KeyboardInterrupt:
                outcome = "interrupted"
                raise
            finally:
                self._print(ending(outcome))
            return

        full, _, empty, _ = self._glyphs
        step_prefix = f"[{self.step}/{self.total}] " if self._in_step else ""

        def render(width: int) -> str:
            moved = min(done, total_bytes)
            cells = BAR_CELLS if total_bytes <= 0 else round(BAR_CELLS * moved / total_bytes)
            bar = full * cells + empty * (BAR_CELLS - cells)
            sizes = amounts(done, total_bytes)
            return self._compose(step_prefix, label, f"  {bar}  {sizes}", width)

        with self._lock:
            outer, nested = self._render, self._ticker is not None
            self._render = render
        own = None if nested else _Ticker(self._draw, self.interval)
        outcome = "failed"
        try:
            if own is not None:
                own.start()
            yield advance
            outcome = "done"
        except KeyboardInterrupt:
            outcome = "interrupted"
            raise
        finally:
            if own is not None:
                own.stop()
            with self._lock:
                self._render = outer
            if own is not None:  # on its own, the transfer leaves a permanent line
                self._write(f"\r{ending(outcome)}{CLEAR_TO_END}\n")

    @contextmanager
    def uploading(self, label: str) -> Iterator[UploadCallback]:
        """A registry `on_upload` callback that shows the upload as a `transfer`.

        The transfer starts at the first call (the registry knows the total only then) and
        ends, or is reported failed, when the `with` block ends.
        """
        with ExitStack() as stack:
            advance: Callable[[int], None] | None = None
            reported = 0

            def on_upload(name: str, done: int, total: int) -> None:
                nonlocal advance, reported
                if advance is None:
                    advance = stack.enter_context(self.transfer(label, total))
                advance(done - reported)
                reported = done

            yield on_upload

    # Drawing ------------------------------------------------------------------------------------

    def _compose(self, left: str, label: str, right: str, width: int) -> str:
        """`left + label + right` within `width`, shortening the label first."""
        ellipsis = self._glyphs[3]
        room = width - len(left) - len(right)
        if len(left) + len(label) + len(right) <= width:
            return left + label + right
        if room >= 8:
            return left + truncate(label, room, ellipsis) + right
        return truncate(left + label + right, width, ellipsis)

    def _line_width(self) -> int:
        if self.width is not None:
            return self.width
        # One column short of the edge: writing the last column makes some terminals wrap.
        return max(shutil.get_terminal_size().columns - 1, 20)

    def _draw(self) -> None:
        with self._lock:
            if self._render is None:
                return
            line = self._render(self._line_width())
            self.stream.write(f"\r{line}{CLEAR_TO_END}")
            self.stream.flush()

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def _print(self, line: str) -> None:
        self._write(line + "\n")


def _glyphs(stream: TextIO) -> tuple[str, str, str, str]:
    """(done, current, empty, ellipsis): block characters if the stream can encode them."""
    fancy = ("█", "▒", "░", "…")
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return fancy
    try:
        "".join(fancy).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ("#", "=", "-", "...")
    return fancy
