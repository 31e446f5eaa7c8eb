"""On Lambda, importing an entry point starts no OpenBLAS thread pool (`lambdas/__init__.py`);
on this machine, numpy keeps its defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys, threadpoolctl
if sys.argv[1:] == ["entry-point"]:
    import lambdas.inference.app  # imports numpy, as the inference function's cold start does
else:
    import numpy
blas = [p for p in threadpoolctl.threadpool_info() if p["internal_api"] == "openblas"]
print(json.dumps([p["num_threads"] for p in blas]))
"""


def _blas_threads(*, entry_point: bool = True, **env: str) -> list[int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OPENBLAS", "OMP"))}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *(["entry-point"] if entry_point else [])],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    threads: list[int] = json.loads(done.stdout)
    return threads


@pytest.fixture(scope="module")
def default_threads() -> int:
    """numpy's own default here (one thread per core), without any entry point imported."""
    [threads] = _blas_threads(entry_point=False)
    return threads


def test_on_lambda_openblas_runs_one_thread() -> None:
    assert _blas_threads(AWS_LAMBDA_FUNCTION_NAME="sds-dev-inference") == [1]


def test_a_thread_count_the_function_configures_is_kept() -> None:
    threads = _blas_threads(AWS_LAMBDA_FUNCTION_NAME="sds-dev-inference", OPENBLAS_NUM_THREADS="2")
    assert threads == [2]


def test_off_lambda_numpy_keeps_its_default(default_threads: int) -> None:
    # A process that is not a Lambda function (sds serve, sds prune) is left alone
    assert _blas_threads() == [default_threads]
