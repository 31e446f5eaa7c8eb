"""Capture: its in-process cost per event in the warm handler, and its cost per million
predictions on AWS.

    python -m benchmarks.capture [--quick] [--out FILE]      (also `make bench --only capture`)

In one process: a small model is trained on generated payments and served by `InferenceApp` with
an empty SQLite feature store, composed as the Lambda handler composes it: metric lines and
capture records kept per request and written to stdout in one write at its end
(`StdoutLines`), stdout flushed after every write as the Lambda runtime's is
(`warm_worker.LambdaStdout`), into /dev/null. Three series, each timed per call with
`perf_counter_ns` over `blocks` blocks of `calls` calls (after a warm-up pass), with requests of 1
and of 100 payments, distinct as traffic is (the history's payments, each in one request of each
size; `warm_worker.requests_of`), the calls cycling through them:

1. the whole handler with capture on and 2. with capture off, interleaved block by block: the
   difference of their p50s, per event, is what capture costs in the warm handler (the target);
3. `Capturer.capture` alone, on the same feature rows and scores, in a tight loop, into a sink
   that keeps the last request's lines: a lower bound (its code and data stay hot; in the
   handler, everything else a request runs comes between two captures, and a capture there
   takes about three times as long).

The cost per million predictions on AWS prices what the capture path bills for each record: the
log bytes CloudWatch Logs ingests (the record as measured here, plus the 26 bytes of overhead
CloudWatch Logs counts per event), the bytes Firehose ingests (the same, decompressed: Firehose
prices the data it receives; CloudWatch Logs sends it in batches, so the 5 KB rounding per record
adds little), S3 storage of the gzipped objects for a month (gzip ratio measured on the records)
and Lambda's extra compute (the measured per-event cost at the function's memory). Prices are
us-east-1 list prices, each with its source, in `PRICES`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.warm_worker import LambdaStdout, requests_of

ROOT = Path(__file__).resolve().parents[1]

# us-east-1 list prices (USD), each with where it is published.
PRICES: dict[str, tuple[float, str, str]] = {
    "cloudwatch_logs_ingestion": (
        0.50,
        "per GB ingested (Standard log class)",
        "https://aws.amazon.com/cloudwatch/pricing/",
    ),
    "firehose_ingestion": (
        0.029,
        "per GB ingested, first 500 TB a month (Direct PUT, billed in 5 KB increments per record)",
        "https://aws.amazon.com/firehose/pricing/",
    ),
    "s3_standard_storage": (
        0.023,
        "per GB-month, first 50 TB",
        "https://aws.amazon.com/s3/pricing/",
    ),
    "lambda_compute_x86_64": (
        0.0000166667,
        "per GB-second (x86_64)",
        "https://aws.amazon.com/lambda/pricing/",
    ),
}
CLOUDWATCH_EVENT_OVERHEAD_BYTES = 26  # CloudWatch Logs bills each event's size plus 26 bytes
GB = 1024**3
LAMBDA_MEMORY_MB = 1024  # every environment's function in cdk.json


def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000

    return {
        "p50_us": at(0.5),
        "p90_us": at(0.9),
        "p99_us": at(0.99),
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def _timed(call: Callable[[int], Any], calls: int, count: int) -> list[int]:
    """Each call's time; call i is given request number i modulo `count`."""
    samples = []
    for i in range(calls):
        number = i % count
        started = time.perf_counter_ns()
        call(number)
        samples.append(time.perf_counter_ns() - started)
    return samples


def _proxy(events: list[dict[str, Any]], number: int) -> dict[str, Any]:
    return {
        "resource": "/{proxy+}",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"events": events}),
        "isBase64Encoded": False,
        "requestContext": {"requestId": f"bench-{number}", "stage": "live", "path": "/predict"},
    }


def run(
    *, quick: bool = False, log: Callable[[str], None] = print, request_payments: int = 3_200
) -> dict[str, Any]:
    from lambdas.inference.app import InferenceApp, StdoutLines
    from sds.kernel.capture import Capturer
    from sds.kernel.features import Columns, featurize_columns
    from sds.kernel.registry import open_registry
    from sds.kernel.settings import ServingSettings
    from training.data import write_jsonl
    from training.synthetic import generate_activity
    from training.train import STEPS, Progress, TrainParams, train

    calls, blocks = (200, 2) if quick else (2000, 5)
    work = Path(tempfile.mkdtemp(prefix="sds-bench-capture-"))
    history = generate_activity(2000 if quick else 4000, seed=11)
    log("capture: training the served model")
    version = train(
        data=write_jsonl(history, work / "history.jsonl"),
        registry=open_registry((work / "registry").as_uri(), "fraud"),
        params=TrainParams(max_iter=20, seed=1),
        actor="bench",
        reason="capture benchmark",
        progress=Progress(STEPS, enabled=False),
    )
    settings = ServingSettings(
        model_name="fraud",
        model_version=version.number,
        model_sha256=version.sha256,
        registry_uri=(work / "registry").as_uri(),
        environment="prod",
        feature_store_uri=f"sqlite://{work / 'features.db'}",
    )
    # As a client sends them: no label.
    payments = [
        {k: v for k, v in e.items() if k != "is_fraud"} for e in history if e["type"] == "payment"
    ]
    payments = payments[-request_payments:]
    requests = {"single": requests_of(payments, 1), "batch100": requests_of(payments, 100)}
    apps = {}
    for name, captured in (("on", True), ("off", False)):
        stdout = StdoutLines()  # as `lambdas.inference.handler` composes the function's app
        app = InferenceApp(
            settings, metrics=stdout.metrics, capture=stdout.capture if captured else None
        )
        apps[name] = _handler(app, stdout)
        if captured:
            assert app.model is not None and app.capturer is not None
            model = app.model
            alone = Capturer(
                env=settings.environment,
                model={"name": "fraud", "version": version.number, "sha256": version.sha256},
                threshold=app.model.threshold,
                sink=_keep_last,
            )

    real_stdout = sys.stdout
    devnull = open(os.devnull, "w")  # noqa: SIM115 - restored in finally
    sys.stdout = LambdaStdout(devnull)
    results: dict[str, Any] = {"calls_per_block": calls, "blocks": blocks}
    try:
        for label, batches in requests.items():
            results[label] = _series(
                apps["on"], apps["off"], model, alone, batches, calls=calls, blocks=blocks
            )
            log(
                f"capture {label}: {results[label]['capture_per_event_us']['p50']:.2f} us per "
                f"event (capture alone, p50), handler on-off "
                f"{results[label]['handler_difference_per_event_us']['median']:.2f} us per event"
            )
        lines: list[bytes] = []
        sample = Capturer(
            env="prod",
            model={"name": "fraud", "version": version.number, "sha256": version.sha256},
            threshold=0.5,
            sink=lines.append,
        )
        for start in range(0, min(len(payments), 2000), 100):
            events = payments[start : start + 100]
            columns = Columns.of(events).with_inputs(
                {name: [0.0] * len(events) for name in _aggregates()}
            )
            features = featurize_columns(columns)
            sample.capture(
                request_id="r" * 36,
                received_us=time.time_ns() // 1000,
                started_ns=time.perf_counter_ns(),
                events=events,
                features=features,
                scores=[float(v) for v in model.predict(features)],
                online_features=True,
            )
    finally:
        sys.stdout = real_stdout
        devnull.close()
    data = b"".join(lines)
    records = data.count(b"\n")
    record_bytes = len(data) / records
    gzip_ratio = len(gzip.compress(data)) / len(data)
    results["record"] = {
        "mean_bytes": round(record_bytes, 1),
        "gzip_ratio": round(gzip_ratio, 4),
        "records_measured": records,
    }
    results["cost_per_million_usd"] = cost_per_million(
        record_bytes=record_bytes,
        gzip_ratio=gzip_ratio,
        # the costlier figure: one payment per request, in the handler
        per_event_us=max(0.0, results["single"]["handler_difference_per_event_us"]["median"]),
    )
    results["target_us_per_event"] = 10.0
    results["python"] = sys.version.split()[0]
    return results


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


def _series(
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
    from sds.kernel.features import Columns, featurize_columns

    n = len(batches[0])
    prepared = []
    for number, events in enumerate(batches):
        features = featurize_columns(
            Columns.of(events).with_inputs({name: [0.0] * n for name in _aggregates()})
        )
        scores = [float(s) for s in model.predict(features)]
        prepared.append((events, features, scores, _proxy(events, number)))
    for *_, proxy in prepared:  # the series time scoring, not a refusal
        for handle in (on, off):
            answer = handle(proxy)
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

    series: dict[str, Callable[[int], Any]] = {
        "capture": capture_only,
        "on": lambda number: on(prepared[number][3]),
        "off": lambda number: off(prepared[number][3]),
    }
    count = len(prepared)
    for call in series.values():
        _timed(call, max(200, count), count)  # warm-up: every request at least once
    per_block: dict[str, list[dict[str, float]]] = {name: [] for name in series}
    for _ in range(blocks):  # interleaved: the machine's drift hits the three alike
        for name, call in series.items():
            per_block[name].append(_percentiles(_timed(call, calls, count)))

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


def _aggregates() -> tuple[str, ...]:
    from sds.kernel.aggregates import NAMES

    return tuple(NAMES)


def cost_per_million(
    *, record_bytes: float, gzip_ratio: float, per_event_us: float
) -> dict[str, Any]:
    """USD per million captured predictions, by line item (storage: one month)."""
    million = 1_000_000
    logged_gb = million * (record_bytes + CLOUDWATCH_EVENT_OVERHEAD_BYTES) / GB
    delivered_gb = million * record_bytes / GB
    stored_gb = delivered_gb * gzip_ratio
    compute_gb_s = million * per_event_us / 1e6 * LAMBDA_MEMORY_MB / 1024
    items = {
        "cloudwatch_logs_ingestion": logged_gb * PRICES["cloudwatch_logs_ingestion"][0],
        "firehose_ingestion": delivered_gb * PRICES["firehose_ingestion"][0],
        "s3_storage_first_month": stored_gb * PRICES["s3_standard_storage"][0],
        "lambda_compute": compute_gb_s * PRICES["lambda_compute_x86_64"][0],
    }
    return {
        "items": {k: round(v, 5) for k, v in items.items()},
        "total": round(sum(items.values()), 4),
        "assumptions": {
            "lambda_memory_mb": LAMBDA_MEMORY_MB,
            "prices": {k: {"usd": p, "unit": u, "source": s} for k, (p, u, s) in PRICES.items()},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capture", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few calls (a smoke run)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results = run(quick=args.quick, log=lambda m: print(m, file=sys.stderr))
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
