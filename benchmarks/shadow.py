"""What shadow scoring adds to the warm path: the same handler with and without a challenger.

    python -m benchmarks.shadow              # the section alone, full size (a few minutes)
    python -m benchmarks.shadow --quick      # a smoke run (its figures mean nothing)

Two HistGradientBoosting versions are trained with `sds train`'s defaults (200 iterations) on
generated events and registered in a local registry. Two `InferenceApp`s serve version 1, as one
warm execution environment each, with capture on (into a sink that drops the bytes, so the figure
is the process's work, not a disk's): one alone, one with version 2 as its shadow. Both read the
same SQLite feature store. The requests are distinct, as traffic is (the history's last 3,200
payments as 1-payment requests, and as 32 requests of 100; `warm_worker.requests_of`), and each
goes to both apps: the calls alternate between the two (alone, shadowed, alone, ...) so a busy
machine's drift hits both alike, and each call is timed with `perf_counter_ns`. Per
block of consecutive calls, the added latency is the median of the shadowed calls minus the median
of the alone ones; divided by the request's payments it is the cost per event. It is taken in wall
time and in the thread's CPU time: on a shared machine a call's wall time stretches with every
preemption, its CPU time does not, so CPU time is the figure to trust when the load is high.
Reported: the median (min-max) over the blocks, for 1-payment and 100-payment requests, and the
floor, the challenger's own `InferenceSession.run` on the same requests' rows, in the same order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.measure import stats
from benchmarks.warm_worker import proxy_event, requests_of

MODEL = "fraud"
TARGET_US_PER_EVENT = 15.0
REQUEST_PAYMENTS = 3_200  # the distinct requests' payments (quick runs: 300)


def _drop(lines: bytes) -> None:
    """A capture sink that keeps nothing: the benchmark measures the handler, not a disk."""


def _no_metrics(values: Any, dimensions: Any) -> None:
    """Metrics are not part of the comparison (both apps would emit the same lines)."""


def _train(root: Path, events: int, max_iter: int | None) -> tuple[Path, Path]:
    from sds.kernel.registry import open_registry
    from training.data import write_jsonl
    from training.synthetic import generate_activity
    from training.train import STEPS, Progress, TrainParams, train

    history = write_jsonl(generate_activity(events, seed=11), root / "history.jsonl.gz")
    registry_root = root / "registry"
    registry = open_registry(registry_root.as_uri(), MODEL)
    for seed, rate in ((0, 0.1), (1, 0.2)):
        params = TrainParams(seed=seed, learning_rate=rate)
        if max_iter is not None:
            params = TrainParams(seed=seed, learning_rate=rate, max_iter=max_iter)
        train(
            data=history,
            registry=registry,
            params=params,
            actor="bench",
            reason="shadow benchmark",
            progress=Progress(STEPS, enabled=False),
        )
    return history, registry_root


def _apps(registry_root: Path, store: Path) -> tuple[Any, Any]:
    from lambdas.inference.app import InferenceApp
    from sds.kernel.registry import open_registry
    from sds.kernel.settings import ServingSettings

    registry = open_registry(registry_root.as_uri(), MODEL)
    one, two = registry.get_version(1), registry.get_version(2)
    settings = ServingSettings(
        model_name=MODEL,
        model_version=1,
        model_sha256=one.sha256,
        registry_uri=registry_root.as_uri(),
        environment="bench",
        feature_store_uri=f"sqlite://{store}",
    )
    shadowed_settings = ServingSettings(
        **{**settings.__dict__, "shadow_version": 2, "shadow_sha256": two.sha256}
    )
    alone = InferenceApp(settings, metrics=_no_metrics, capture=_drop)
    shadowed = InferenceApp(shadowed_settings, metrics=_no_metrics, capture=_drop)
    if alone.model is None or shadowed.shadow is None:
        raise RuntimeError(f"the apps did not load: {alone.unavailable} {shadowed.unavailable}")
    return alone, shadowed


def _payments(history: Path, count: int) -> list[dict[str, Any]]:
    import gzip

    with gzip.open(history, "rt") as source:
        payments = [r for r in map(json.loads, source) if r.get("type", "payment") == "payment"]
    events = []
    for record in payments[-count:]:
        record.pop("is_fraud", None)
        events.append(record)
    return events


def _paired(
    alone: Callable[[Any], Any],
    shadowed: Callable[[Any], Any],
    requests: Sequence[Any],
    calls: int,
    blocks: int,
) -> dict[str, Any]:
    """Per block: the median shadowed call minus the median alone call, in microseconds, of
    wall time (`perf_counter_ns`) and of the thread's CPU time (`thread_time_ns`: what the call
    itself computed, which a busy machine's preemptions do not stretch). Calls alternate, both
    apps answering each request in turn."""
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    added_wall: list[float] = []
    added_cpu: list[float] = []
    alone_wall: list[float] = []
    for _ in range(blocks):
        a_wall: list[int] = []
        s_wall: list[int] = []
        a_cpu: list[int] = []
        s_cpu: list[int] = []
        for i in range(calls):
            request = requests[i % len(requests)]
            c0, t0 = cpu(), wall()
            alone(request)
            t1, c1 = wall(), cpu()
            shadowed(request)
            t2, c2 = wall(), cpu()
            a_wall.append(t1 - t0)
            s_wall.append(t2 - t1)
            a_cpu.append(c1 - c0)
            s_cpu.append(c2 - c1)
        alone_wall.append(statistics.median(a_wall) / 1000)
        added_wall.append((statistics.median(s_wall) - statistics.median(a_wall)) / 1000)
        added_cpu.append((statistics.median(s_cpu) - statistics.median(a_cpu)) / 1000)
    return {
        "added_wall_us": stats(added_wall),
        "added_cpu_us": stats(added_cpu),
        "alone_wall_us": stats(alone_wall),
    }


def run(
    *,
    events: int,
    calls: int,
    blocks: int,
    max_iter: int | None,
    log: Callable[[str], None],
    request_payments: int = REQUEST_PAYMENTS,
) -> dict[str, Any]:
    import numpy as np

    from sds.kernel.features import Columns, featurize_columns

    with tempfile.TemporaryDirectory(prefix="sds-bench-shadow-") as folder:
        root = Path(folder)
        log(f"shadow: training two versions on {events} generated events")
        history, registry_root = _train(root, events, max_iter)
        alone, shadowed = _apps(registry_root, root / "features.db")
        trees = shadowed.shadow.manifest.get("params", {}).get("max_iter")
        results: dict[str, Any] = {
            "model": "HistGradientBoostingClassifier",
            "trees": trees,
            "trained_on_events": events,
            "calls_per_block": calls,
            "blocks": blocks,
            "target_us_per_event": TARGET_US_PER_EVENT,
        }
        payments = _payments(history, request_payments)
        for size in (1, 100):
            batches = requests_of(payments, size)
            requests = [proxy_event(batch) for batch in batches]
            # Same answers, or the figure compares two different things (also the warm-up).
            for request in requests:
                if alone.handle(request) != shadowed.handle(request):
                    raise RuntimeError("the shadowed app answered differently")
            log(
                f"shadow: {blocks} blocks of {calls} paired calls over {len(requests)} distinct "
                f"{size}-payment requests"
            )
            figures = _paired(alone.handle, shadowed.handle, requests, calls, blocks)
            # The floor: the challenger's own run on the rows the handler scored, nothing else.
            matrices = []
            for batch in batches:
                columns, _ = alone._with_aggregates(Columns.of(batch), {})
                matrices.append(np.asarray(featurize_columns(columns), dtype=np.float32))
            floor = []
            for _ in range(blocks):
                samples = []
                for i in range(calls):
                    features = matrices[i % len(matrices)]
                    t0 = time.perf_counter_ns()
                    shadowed.shadow.predict(features)
                    samples.append(time.perf_counter_ns() - t0)
                floor.append(statistics.median(samples) / 1000)
            results[f"{size}_event"] = {
                "requests": len(requests),
                "added_wall_us_per_request": figures["added_wall_us"],
                "added_wall_us_per_event": stats(
                    [v / size for v in figures["added_wall_us"]["values"]]
                ),
                "added_cpu_us_per_request": figures["added_cpu_us"],
                "added_cpu_us_per_event": stats(
                    [v / size for v in figures["added_cpu_us"]["values"]]
                ),
                "request_alone_wall_us": figures["alone_wall_us"],
                "floor_shadow_run_us": stats(floor),
            }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shadow", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        figures = run(
            events=3000, calls=200, blocks=2, max_iter=20, log=print, request_payments=300
        )
    else:
        figures = run(events=20_000, calls=2000, blocks=5, max_iter=None, log=print)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
