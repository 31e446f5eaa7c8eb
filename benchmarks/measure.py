"""One function per measurement. Each returns plain data; `benchmarks.run` orchestrates and reports."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bundles import Bundle
from benchmarks.servers import RuntimeApi, peak_rss_bytes
from sds.kernel.batch.local import vm_hwm_bytes

ROOT = Path(__file__).resolve().parent.parent


def stats(values: Sequence[float]) -> dict[str, Any]:
    """Median with min and max, and every run, so a reader can see the spread."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
        "values": [round(v, 6) for v in values],
    }


@dataclass(frozen=True)
class Measured:
    wall_s: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str
    # User + system time of the process and its waited-for children: steady on a shared machine.
    cpu_s: float = 0.0
    # The peak of the process itself and the largest of its descendants (0: none), which
    # `peak_rss_bytes` is the larger of.
    peak_rss_main_bytes: int = 0
    peak_rss_descendants_bytes: int = 0


def run_measured(
    command: Sequence[str], *, env: dict[str, str], cwd: Path = ROOT, timeout: float = 900
) -> Measured:
    """Wall time, CPU time and peak RSS: the largest VmHWM of the process and its descendants
    (for example training's partition workers), polled while they run.

    Not `ru_maxrss`: Linux carries a process's high-water mark across fork and exec, so a child
    of this harness reports at least the harness's own resident set (a 13 MiB `python -c pass`
    reported 613 MiB after the harness had touched 600 MiB)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=out, stderr=err)
        deadline = started + timeout
        peaks: dict[int, int] = {}
        while True:
            for member in _process_tree(process.pid):
                peak = vm_hwm_bytes(member)
                if peak > peaks.get(member, 0):
                    peaks[member] = peak
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall_s=wall,
            peak_rss_bytes=max(peaks.values(), default=0),
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            cpu_s=usage.ru_utime + usage.ru_stime,
            peak_rss_main_bytes=peaks.get(process.pid, 0),
            peak_rss_descendants_bytes=max(
                (peak for member, peak in peaks.items() if member != process.pid), default=0
            ),
        )


def _process_tree(pid: int) -> list[int]:
    """`pid` and its living descendants (Linux: /proc/PID/task/TID/children)."""
    tree, index = [pid], 0
    while index < len(tree):
        parent = tree[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    tree.extend(int(child) for child in children.read().split())
            except OSError:
                continue
    return tree


def check(result: Measured, what: str) -> Measured:
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-3000:]
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result


# Cold start ---------------------------------------------------------------------------------


def lambda_env(
    bundle: Bundle, runtime_dir: Path, base: dict[str, str], model: dict[str, str]
) -> dict[str, str]:
    """The variables a Python 3.12 Lambda execution environment sets, pointed at local paths."""
    return {
        **base,
        **model,
        "PYTHONPATH": f"{bundle.path}:{runtime_dir}",
        # /var/task is read-only on Lambda: nothing may be compiled and cached between runs.
        "PYTHONDONTWRITEBYTECODE": "1",
        "LAMBDA_TASK_ROOT": str(bundle.path),
        "LAMBDA_RUNTIME_DIR": str(runtime_dir),
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_NAME": f"sds-bench-{bundle.name}",
        "AWS_LAMBDA_FUNCTION_VERSION": "1",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/sds-bench",
        "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
        "ENVIRONMENT": "bench",
    }


def cold_start(
    bundle: Bundle, *, python: str, env: dict[str, str], api: RuntimeApi, event: dict[str, Any]
) -> dict[str, Any]:
    """One fresh process through the runtime interface client until its first response."""
    request_id = api.queue(event)
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        # -S: the bundle and the runtime folder are the whole sys.path, as on Lambda (this
        # machine's site-packages must not leak in).
        process = subprocess.Popen(
            [python, "-S", "-m", "awslambdaric", bundle.handler],
            env={**env, "AWS_LAMBDA_RUNTIME_API": api.address},
            cwd=bundle.path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            kind, received, body = api.wait(request_id)
            elapsed = received - started
            peak = peak_rss_bytes(process.pid)
            cpu = cpu_seconds(process.pid)
        except Exception as exc:
            process.kill()
            process.wait()
            err.seek(0)
            raise RuntimeError(
                f"{bundle.name} cold start failed: {exc}\n{err.read()[-3000:]!r}"
            ) from exc
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    response = json.loads(body)
    if kind != "response" or response.get("statusCode") != 200:
        raise RuntimeError(f"{bundle.name} cold start answered {kind}: {body[:500]!r}")
    # A REST API proxy response may carry its headers as `multiValueHeaders` (Powertools does).
    headers = response.get("headers") or {
        name: values[-1] for name, values in response.get("multiValueHeaders", {}).items()
    }
    return {
        "ms": elapsed * 1000,
        "peak_rss_bytes": peak,
        "cpu_ms": cpu * 1000,
        "model_version": headers.get("X-Model-Version"),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (10 ms resolution). Unlike wall time it
    barely moves when other work shares the machine: the cold start's figure a busy machine
    can still compare."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Warm latency -------------------------------------------------------------------------------


def worker(
    python: str,
    script: Path,
    args: Sequence[str],
    *,
    env: dict[str, str],
    what: str,
    after: Sequence[str] = (),
    timeout: float = 1800,
) -> dict[str, Any]:
    """Run a benchmark worker script in a fresh process of the Lambda's `python` (`-S -P`: only
    what `env`'s PYTHONPATH names is importable), in a temporary folder, and read the JSON it
    writes to the path given after `args` (then `after`). Its stdout (EMF lines, logs) is
    dropped; `what` names it in the error, with the end of its stderr."""
    with tempfile.TemporaryDirectory(prefix="sds-bench-worker-") as tmp:
        out = Path(tmp) / "out.json"
        result = subprocess.run(
            [python, "-S", "-P", str(script), *args, str(out), *after],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{result.stderr[-3000:]}")
        return dict(json.loads(out.read_text()))


def warm(
    bundle: Bundle,
    *,
    python: str,
    env: dict[str, str],
    events_file: Path,
    calls: int,
    blocks: int,
    raw: bool,
) -> dict[str, Any]:
    return worker(
        python,
        ROOT / "benchmarks" / "warm_worker.py",
        [bundle.handler, str(events_file), str(calls), str(blocks)],
        env=env,
        what=f"warm {bundle.name}",
        after=["--raw"] if raw else [],
    )
