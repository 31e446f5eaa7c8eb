"""Capture: its in-process cost per event in the warm handler, and its cost per million
predictions on AWS.

    python -m benchmarks.capture [--quick] [--out FILE]      (also `make bench --only capture`)

A small model is trained on generated payments here; then, in a fresh process of the Lambda's
Python (3.12) on the inference bundle (`benchmarks/capture_worker.py`, as the warm benchmark's
worker runs), it is served by `InferenceApp` with an empty SQLite feature store, composed as the
Lambda handler composes it: metric lines and capture records kept per request and written to
stdout in one write at its end (`StdoutLines`), stdout flushed after every write as the Lambda
runtime's is (`warm_worker.Unbuffered`), into /dev/null. Three series, each timed per call with
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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def run(
    *,
    python: str,
    bundle: Path,
    quick: bool = False,
    log: Callable[[str], None] = print,
    request_payments: int = 3_200,
) -> dict[str, Any]:
    """Train the served model here, time the handler in a worker (`capture_worker`, `python`
    on the inference `bundle`), and price the records; nothing is left behind."""
    with tempfile.TemporaryDirectory(prefix="sds-bench-capture-") as folder:
        return _measure(
            Path(folder),
            python=python,
            bundle=bundle,
            quick=quick,
            log=log,
            request_payments=request_payments,
        )


def _measure(
    work: Path,
    *,
    python: str,
    bundle: Path,
    quick: bool,
    log: Callable[[str], None],
    request_payments: int,
) -> dict[str, Any]:
    from sds.kernel.capture import Capturer
    from sds.kernel.features import Columns, featurize_columns
    from sds.kernel.registry import open_registry
    from sds.kernel.serving import load_model
    from sds.kernel.settings import ServingSettings
    from training.data import write_jsonl
    from training.synthetic import generate_activity
    from training.train import STEPS, Progress, TrainParams, train

    # Short blocks, many of them: a pause of the machine then hits one pair of blocks, not a fifth
    # of the run, and the median difference over the pairs shrugs it off.
    calls, blocks = (200, 2) if quick else (500, 20)
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
    (work / "payments.json").write_text(json.dumps(payments))
    config = {
        "model_name": settings.model_name,
        "model_version": settings.model_version,
        "model_sha256": settings.model_sha256,
        "registry_uri": settings.registry_uri,
        "environment": settings.environment,
        "feature_store_uri": settings.feature_store_uri,
        "payments": str(work / "payments.json"),
        "calls": calls,
        "blocks": blocks,
    }
    (work / "config.json").write_text(json.dumps(config))
    results: dict[str, Any] = {"calls_per_block": calls, "blocks": blocks}
    timed = _worker(python, bundle, work / "config.json")
    results["python"] = timed.pop("python")
    for label in ("single", "batch100"):
        results[label] = timed[label]
        log(
            f"capture {label}: {results[label]['capture_per_event_us']['p50']:.2f} us per "
            f"event (capture alone, p50), handler on-off "
            f"{results[label]['handler_difference_per_event_us']['median']:.2f} us per event"
        )
    lines: list[bytes] = []
    model = load_model(settings)
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
    return results


def _worker(python: str, bundle: Path, config: Path) -> dict[str, Any]:
    """`capture_worker.py` in a fresh process of the Lambda's Python on the bundle."""
    from benchmarks import measure

    return measure.worker(
        python,
        ROOT / "benchmarks" / "capture_worker.py",
        [str(config)],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(bundle),
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only on Lambda
            "HOME": os.environ.get("HOME", "/tmp"),
        },
        what="the capture worker",
    )


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
    from benchmarks import bundles

    python = bundles.lambda_python()
    results = run(
        python=python,
        bundle=bundles.build("ours", python).path,
        quick=args.quick,
        log=lambda m: print(m, file=sys.stderr),
    )
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
