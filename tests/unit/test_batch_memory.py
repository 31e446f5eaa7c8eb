"""What `sds score` and `sds backfill` report as their workers' peak memory: each worker's own
high-water mark, not the size of the process that spawned it."""

from __future__ import annotations

import pytest

from sds.kernel.batch import local

MIB = 1024 * 1024


def hold(mebibytes: int) -> int:
    """A worker task: touch `mebibytes` of memory, then let it go."""
    block = bytearray(mebibytes * MIB)
    block[::4096] = b"x" * len(block[::4096])
    return len(block)


@pytest.fixture
def large_main() -> object:
    """This process holding 400 MiB, as a main process that has read a big plan might."""
    block = bytearray(400 * MIB)
    block[::4096] = b"x" * len(block[::4096])
    return block


def test_small_workers_of_a_large_process_report_their_own_peak(large_main: object) -> None:
    # Given a 400 MiB main process
    assert local.peak_rss_bytes() >= 400 * MIB
    # When two workers run tasks that hold almost nothing
    local.reset_worker_peak()
    results = dict(local.parallel(hold, [(1,), (1,)], workers=2))
    # Then the largest worker's peak is its own interpreter's, far under the main's 400 MiB
    assert results == {0: MIB, 1: MIB}
    assert 0 < local.worker_peak_bytes() < 250 * MIB


def test_the_largest_worker_is_the_one_that_held_the_most() -> None:
    # When one of two workers holds 300 MiB
    local.reset_worker_peak()
    list(local.parallel(hold, [(300,), (1,)], workers=2))
    # Then that is the workers' peak
    assert local.worker_peak_bytes() >= 300 * MIB


def test_work_that_runs_in_this_process_reports_no_worker() -> None:
    # With one worker the tasks run here: the main process's peak covers them
    local.reset_worker_peak()
    list(local.parallel(hold, [(1,), (1,)], workers=1))
    assert local.worker_peak_bytes() == 0
