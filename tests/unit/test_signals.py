"""SIGTERM made an interruption (`sds.kernel.signals`): the one mechanism behind `sds`'s and
`python -m training.train`'s handling of `timeout`, systemd, `docker stop` and ECS StopTask.

The commands' side (a real `sds score`, `backfill`, `train`, `serve` sent SIGTERM) is
tests/e2e/test_terminate.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sds.kernel.registry import open_registry
from sds.kernel.signals import Terminated, reworded, sigterm_as_interrupt, stop_reason


@pytest.fixture(autouse=True)
def default_sigterm() -> Iterator[None]:
    """Each test starts from SIGTERM's default and leaves it so, whatever it does."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def kill_me() -> None:
    """`kill PID` of this process; returns once Python has run the handler (or it is ignored)."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.01)  # a signal to oneself is delivered at once; this is the next bytecode


def test_sigterm_raises_an_interruption_that_runs_the_cleanup_and_says_it_was_sigterm() -> None:
    cleaned: list[str] = []

    # Given code that cleans up after an interruption, under the entry point's handling
    with pytest.raises(Terminated) as raised, sigterm_as_interrupt():
        try:
            # When SIGTERM arrives
            kill_me()
            pytest.fail("SIGTERM did not interrupt")
        finally:
            cleaned.append("partial file removed")

    # Then the cleanup ran, and it is Ctrl-C's kind of exception, reported as SIGTERM with 143
    assert cleaned == ["partial file removed"]
    assert isinstance(raised.value, KeyboardInterrupt)
    assert stop_reason(raised.value) == ("stopped by SIGTERM", 143)
    assert stop_reason(KeyboardInterrupt()) == ("interrupted", 130)


def test_a_second_sigterm_does_not_cut_the_cleanup_short() -> None:
    cleaned = []

    # Given a first SIGTERM being handled
    with pytest.raises(Terminated), sigterm_as_interrupt():
        try:
            kill_me()
        finally:
            # When another arrives during the cleanup (a second `kill`, or the process group's)
            kill_me()
            cleaned.append(True)

    # Then the cleanup went on to its end
    assert cleaned == [True]


def test_a_sigterm_that_library_code_swallows_is_raised_again() -> None:
    # Given a first SIGTERM swallowed by code that catches everything (numpy.random's import
    # can swallow one that lands while it initializes)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        with contextlib.suppress(BaseException):
            kill_me()

        # When the command goes on with its work
        deadline = time.monotonic() + 20  # a bound for a hang, not a speed target
        while time.monotonic() < deadline:
            time.sleep(0.05)

        # Then it is interrupted again, not left to run until SIGKILL
        pytest.fail("the swallowed SIGTERM was not raised again")


def test_no_thread_outlives_the_block() -> None:
    before = threading.active_count()

    with pytest.raises(Terminated), sigterm_as_interrupt():
        kill_me()

    assert threading.active_count() == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_the_previous_handling_is_restored_after_the_block() -> None:
    # Given the handling installed, then left
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)

    # Then SIGTERM's disposition is the default again
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_ignored_on_purpose_stays_ignored() -> None:
    # Given SIGTERM ignored by whoever started the process
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    # When the handling is asked for and SIGTERM arrives
    with sigterm_as_interrupt():
        kill_me()
        # Then nothing was raised, and it is still ignored
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


def test_outside_the_main_thread_it_changes_nothing() -> None:
    seen: list[object] = []

    def other_thread() -> None:
        with sigterm_as_interrupt():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()

    assert seen == [signal.SIG_DFL]


def test_a_message_added_on_the_way_out_keeps_the_kind_of_interruption() -> None:
    # Given an interruption of each kind, reworded with what the command knows (how to resume)
    terminated = reworded(Terminated(), "run the same command again to resume")
    interrupted = reworded(KeyboardInterrupt(), "run the same command again to resume")

    # Then each is still reported as what it was
    assert stop_reason(terminated) == ("stopped by SIGTERM", 143)
    assert stop_reason(interrupted) == ("interrupted", 130)
    assert str(terminated) == "run the same command again to resume"


@pytest.mark.parametrize("after", ["model.onnx", "model.skops"])
def test_sigterm_between_a_registration_s_objects_leaves_no_version_and_no_alias_moved(
    tmp_path: Path, after: str
) -> None:
    # Given a registry with a version and an alias on it, and a registration (the training
    # task's last step) that SIGTERM reaches once `after` is stored: after the claim of its
    # number, or between its artifacts, before its manifest
    registry = open_registry((tmp_path / "registry").as_uri(), "fraud")
    artifacts = {"model.onnx": b"onnx bytes", "model.skops": b"skops bytes"}
    registry.register(artifacts, {}, actor="ci")
    registry.move_alias("dev", 1, expected=None, kind="promoted", actor="ci", reason="")
    aliases = registry.list_aliases()

    def on_upload(name: str, stored: int, total: int) -> None:
        if name == after:
            kill_me()

    # When
    with pytest.raises(Terminated), sigterm_as_interrupt():
        registry.register(artifacts, {}, actor="ci", on_upload=on_upload)

    # Then a reader sees no new version, and the alias where it was
    assert registry.list_versions() == [1]
    assert registry.list_aliases() == aliases
    # And the interrupted number is never reused: the next registration is complete under the next
    assert registry.register(artifacts, {}, actor="ci").number == 3
    assert registry.verify_version(3).number == 3
