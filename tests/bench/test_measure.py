"""The harness's process measurement: peak memory is the measured process's own, not the
harness's (Linux carries ru_maxrss across fork and exec)."""

from __future__ import annotations

import os
import sys

from benchmarks.measure import run_measured

MIB = 2**20
# A child that touches 300 MiB and holds it a moment, so the harness's 5 ms polls see it.
HOLD = "import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3)"


def test_a_small_child_of_a_large_harness_reports_its_own_peak() -> None:
    # Given the harness holding 400 MiB (as the bench's does after loading a history)
    ballast = bytearray(400 * MIB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    # When it measures a child that does nothing
    measured = run_measured(
        [sys.executable, "-c", "import time; time.sleep(0.2)"], env=dict(os.environ)
    )
    # Then the child's peak is its own few MiB, not the harness's 400
    assert measured.returncode == 0
    assert 0 < measured.peak_rss_bytes < 100 * MIB
    assert measured.peak_rss_main_bytes == measured.peak_rss_bytes
    assert measured.peak_rss_descendants_bytes == 0
    del ballast


def test_the_largest_process_of_the_tree_is_the_peak_and_a_worker_is_told_apart() -> None:
    # Given a small main process whose worker touches 300 MiB
    main = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {HOLD!r}], check=True)"
    measured = run_measured([sys.executable, "-c", main], env=dict(os.environ))
    # Then the worker's 300 MiB is the run's peak, and the main process stays small
    assert measured.returncode == 0
    assert measured.peak_rss_descendants_bytes >= 300 * MIB
    assert measured.peak_rss_bytes == measured.peak_rss_descendants_bytes
    assert measured.peak_rss_main_bytes < 100 * MIB
