"""Capture's cost in the warm handler, measured in an execution environment's own process.

    python3.12 -S -P benchmarks/capture_worker.py CONFIG_JSON OUT_JSON    (PYTHONPATH: the bundle)

Run by `benchmarks/capture.py` with the Lambda's Python (3.12) on the inference bundle, as the
warm benchmark's worker is: a fresh process holding only what a function's holds, so no other
section's modules and heap share its caches. CONFIG_JSON names the served model (a registry URI,
version and sha256), the feature store, the payments the requests are made of, and the calls and
blocks of each series. Two `InferenceApp`s serve the model, composed as
`lambdas/inference/handler.py` composes the function's (metric lines and capture records written
in one write at the end of each request, `StdoutLines`), one with capture and one without, into
stdout flushed after every write as the Lambda runtime flushes it (`Unbuffered`, /dev/null).
Series, interleaved block by block, for requests of 1 and of 100 payments (distinct, cycled):
the handler with capture, without, and `Capturer.capture` alone on the same rows and scores.
Only the standard library and the bundle are importable here.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))  # after the bundle: warm_worker only
from warm_worker import Unbuffered, proxy_event, requests_of, summarize

REQUEST_SIZES = (("single", 1), ("batch100", 100))


def _timed(call: Callable[[int], Any], calls: int, count: int) -> list[int]:
    """Each call's time; call i is given request number i modulo `count`."""
    samples = []
    for i in range(calls):
        number = i % count
        started = time.perf_counter_ns()
        call(number)
        samples.append(time.perf_counter_ns() - started)
    return samples


def request(events: list[dict[str, Any]], number: int) -> dict[str, Any]:
    """The warm benchmark's proxy event for `events`, with a request id of its own."""
    event = proxy_event(events)
    event["requestContext"]["requestId"] = f"bench-{number}"
    return event


def _handler(app: Any, stdout: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`app` as `lambdas.inference.handler.lambda_handler` serves it: the request's stdout
    lines written in one write when it ends."""

    def handle(event: dict[str, Any]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = app.handle(event, None)
            return response
        finally:
            stdout.flush()

    return handle


_last: list[bytes] = []


def _keep_last(lines: bytes) -> None:
    """The sink of capture alone: keeps the last request's lines (nothing is written)."""
    _last[:] = [lines]


def series(
    on: Callable[[dict[str, Any]], dict[str, Any]],
    off: Callable[[dict[str, Any]], dict[str, Any]],
    model: Any,
    capturer: Any,
    batches: list[list[dict[str, Any]]],
    *,
    calls: int,
    blocks: int,
) -> dict[str, Any]:
    """Capture alone, and the handler with and without it, on distinct requests of the same
    size, block by block."""
    from sds.kernel.aggregates import NAMES
    from sds.kernel.features import Columns, featurize_columns

    n = len(batches[0])
    prepared = []
    for number, events in enumerate(batches):
        features = featurize_columns(
            Columns.of(events).with_inputs({name: [0.0] * n for name in NAMES})
        )
        scores = [float(s) for s in model.predict(features)]
        prepared.append((events, features, scores, request(events, number)))
    for *_, event in prepared:  # the series time scoring, not a refusal
        for handle in (on, off):
            answer = handle(event)
            if answer["statusCode"] != 200:
                raise RuntimeError(f"the benchmark request was refused: {answer['body'][:300]}")

    def capture_only(number: int) -> None:
        events, features, scores, _ = prepared[number]
        capturer.capture(
            request_id=f"bench-{number}",
            received_us=time.time_ns() // 1000,
            started_ns=time.perf_counter_ns(),
            events=events,
            features=features,
            scores=scores,
            online_features=True,
        )

    timed: dict[str, Callable[[int], Any]] = {
        "capture": capture_only,
        "on": lambda number: on(prepared[number][3]),
        "off": lambda number: off(prepared[number][3]),
    }
    count = len(prepared)
    for call in timed.values():
        _timed(call, max(200, count), count)  # warm-up: every request at least once
    per_block: dict[str, list[dict[str, float]]] = {name: [] for name in timed}
    for _ in range(blocks):  # interleaved: the machine's drift hits the three alike
        for name, call in timed.items():
            per_block[name].append(summarize(_timed(call, calls, count)))

    def median(name: str, key: str) -> float:
        return statistics.median(b[key] for b in per_block[name])

    difference = [
        (on["p50_us"] - off["p50_us"]) / n
        for on, off in zip(per_block["on"], per_block["off"], strict=True)
    ]
    return {
        "events": n,
        "requests": count,
        "capture_call": {
            k: median("capture", k) for k in ("p50_us", "p90_us", "p99_us", "mean_us")
        },
        "capture_per_event_us": {
            "p50": median("capture", "p50_us") / n,
            "mean": median("capture", "mean_us") / n,
            "blocks": [round(b["p50_us"] / n, 3) for b in per_block["capture"]],
        },
        "handler_p50_us": {
            "capture_on": median("on", "p50_us"),
            "capture_off": median("off", "p50_us"),
        },
        "handler_difference_per_event_us": {
            "median": statistics.median(difference),
            "blocks": [round(d, 3) for d in difference],
        },
    }


def main(argv: list[str]) -> int:
    config_path, out_path = argv[:2]
    config = json.loads(Path(config_path).read_text())
    from lambdas.inference.app import InferenceApp, StdoutLines
    from sds.kernel.capture import Capturer
    from sds.kernel.settings import ServingSettings

    settings = ServingSettings(
        model_name=config["model_name"],
        model_version=config["model_version"],
        model_sha256=config["model_sha256"],
        registry_uri=config["registry_uri"],
        environment=config["environment"],
        feature_store_uri=config["feature_store_uri"],
    )
    payments = json.loads(Path(config["payments"]).read_text())
    # The runtime's stdout, set before the handler is made as the runtime sets it before the
    # import (`StdoutLines` writes to the descriptor under it).
    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    sys.stdout = Unbuffered(devnull)
    handlers = {}
    for name, captured in (("on", True), ("off", False)):
        stdout = StdoutLines()  # as `lambdas.inference.handler` composes the function's app
        app = InferenceApp(
            settings,
            metrics=stdout.metrics,
            capture=stdout.capture if captured else None,
            lines=stdout.line,
        )
        if app.model is None:
            raise RuntimeError(f"the model did not load: {app.unavailable}")
        handlers[name] = _handler(app, stdout)
        if captured:
            model = app.model
    alone = Capturer(
        env=settings.environment,
        model={"name": model.name, "version": model.version, "sha256": model.sha256},
        threshold=model.threshold,
        sink=_keep_last,
    )
    results: dict[str, Any] = {"python": sys.version.split()[0]}
    for label, size in REQUEST_SIZES:
        results[label] = series(
            handlers["on"],
            handlers["off"],
            model,
            alone,
            requests_of(payments, size),
            calls=config["calls"],
            blocks=config["blocks"],
        )
    Path(out_path).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
