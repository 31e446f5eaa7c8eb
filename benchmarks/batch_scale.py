"""Sections `scale_training` and `batch` of `make bench` (issue 17): what one machine does, and
what scoring 100M events on AWS would cost.

- `scale_training`: `python -m training.train` as its own process on 1M and 4M seeded payments
  (`--scale-sizes`; 16M is `--scale-sizes 1000000,4000000,16000000`, about 35 minutes more on two
  cores), once with every payment and once with negative downsampling (`--negative-rate`,
  `SAMPLED_RATE`): wall time, CPU time, peak RSS (VmHWM: the largest process of the run,
  the trainer or one of its partition workers), the rows kept and the holdout's quality. A size
  that fails (out of memory, say) is recorded with its error, not fatal: the curve says where
  one machine stops.
- `batch`: `sds score`'s engine (`sds.ops.batch.run_locally`) as its own process on `BATCH_EVENTS`
  events with 1, 2, ... all cores (`--workers`), and the backfill with all cores: events per
  second, per core, and the peak RSS of the main process and of the largest worker. From the
  one-worker run's CPU seconds per event, the estimated cost and wall time of scoring
  100M events on the Batch stack at its configured concurrency and memory (Lambda and Step
  Functions list prices, us-east-1, x86; S3 requests left out: a few thousand per run).

Run one alone: `python -m benchmarks.run --only batch` (or `--only scale_training
--scale-sizes 1000000,4000000`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import measure
from sds.kernel.errors import counted

# The default plan takes about 9 minutes on 2 quiet cores once the data exists; 16M (about
# 35 minutes more with its data) is asked for by name.
SCALE_SIZES = (1_000_000, 4_000_000)
SAMPLED_RATE = 0.05
BATCH_EVENTS = 1_000_000
AWS_EVENTS = 100_000_000

# us-east-1 list prices (2026): Lambda x86 per GB-second and per request, Step Functions Standard
# per state transition. A Distributed Map item on a Standard child workflow is ~3 transitions.
LAMBDA_GB_SECOND = 0.0000166667
LAMBDA_REQUEST = 0.20 / 1_000_000
SFN_TRANSITION = 0.025 / 1000
TRANSITIONS_PER_ITEM = 3

Log = Callable[[str], None]


def run_scale_training(
    dataset: Callable[[int], Path], sizes: Sequence[int], *, max_iter: int | None, log: Log
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in sizes:
        data = dataset(size)
        for rate in (1.0, SAMPLED_RATE):
            log(f"training on {size} events, negative rate {rate:g}")
            with tempfile.TemporaryDirectory(prefix="sds-bench-scale-") as registry:
                measured = measure.run_measured(
                    [
                        sys.executable,
                        "-m",
                        "training.train",
                        "--data",
                        str(data),
                        "--registry",
                        Path(registry).as_uri(),
                        "--negative-rate",
                        str(rate),
                        "--json",
                        *(["--max-iter", str(max_iter)] if max_iter else []),
                    ],
                    env={**os.environ, "SDS_ACTOR": "bench"},
                    timeout=6 * 3600,
                )
            figure: dict[str, Any] = {
                "payments": size,
                "negative_rate": rate,
                "wall_s": measured.wall_s,
                "peak_rss_bytes": measured.peak_rss_bytes,
                "cpu_s": measured.cpu_s,
            }
            if measured.returncode == 0:
                manifest = json.loads(measured.stdout)
                figure["metrics"] = {
                    k: manifest["metrics"][k] for k in ("roc_auc", "pr_auc", "holdout_fraud_rate")
                }
                figure["events"] = manifest["data"]["events"]
                figure["kept_payments"] = manifest["sampling"]["kept_payments"]
            else:
                figure["error"] = (measured.stderr or measured.stdout).strip()[-500:]
                figure["returncode"] = measured.returncode
            results[f"{size}@{rate:g}"] = figure
    return results


def run_batch(
    dataset: Callable[[int], Path],
    events: int,
    *,
    max_iter: int | None,
    concurrency: int,
    memory_mb: int,
    log: Log,
) -> dict[str, Any]:
    data = dataset(events)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="sds-bench-batch-") as work:
        root = Path(work)
        log("training the model the batch runs score with")
        model = _model(dataset(min(100_000, events)), root / "registry", max_iter)
        scoring: dict[str, Any] = {}
        for workers in range(1, cores + 1):
            log(f"scoring {events} events with {counted(workers, 'worker')}")
            scoring[str(workers)] = _run(
                "score", data, root / f"scores-{workers}", workers=workers, model=model
            )
        log(f"backfilling {events} events with {counted(cores, 'worker')}")
        backfill = _run("features", data, root / "features", workers=cores, model=None)
    one = scoring["1"]
    for figure in scoring.values():
        figure["speedup"] = figure["events_per_second"] / one["events_per_second"]
    return {
        "payments": events,
        "cores": cores,
        "score": scoring,
        "backfill": backfill,
        "aws_estimate": aws_estimate(
            # CPU, not wall: the same on a busy machine, and what a function bills while it works
            seconds_per_event=1 / one["events_per_cpu_second"],
            concurrency=concurrency,
            memory_mb=memory_mb,
            partitions=one["partitions"],
            events_measured=events,
        ),
    }


def aws_estimate(
    *,
    seconds_per_event: float,
    concurrency: int,
    memory_mb: int,
    partitions: int,
    events_measured: int,
) -> dict[str, Any]:
    """Scoring AWS_EVENTS on the Batch stack, from one local worker's CPU seconds per event.

    Assumes a Lambda function's vCPU is as fast as one core here and that the run has at least
    `concurrency` items in each map (input ranges, then partitions); both maps' time is in the
    per-event figure, as it is in the local run.
    """
    compute_s = AWS_EVENTS * seconds_per_event
    # Items: the input ranges (one per ~64 MiB; about 200 bytes per event) and the partitions.
    ranges = max(1, AWS_EVENTS * 200 // (64 * 2**20))
    items = ranges + max(partitions, concurrency)
    lambda_cost = compute_s * memory_mb / 1024 * LAMBDA_GB_SECOND + items * LAMBDA_REQUEST
    sfn_cost = items * TRANSITIONS_PER_ITEM * SFN_TRANSITION
    return {
        "events": AWS_EVENTS,
        "seconds_per_event_one_core": seconds_per_event,
        "compute_seconds": compute_s,
        "concurrency": concurrency,
        "memory_mb": memory_mb,
        "items": items,
        "wall_s": compute_s / concurrency,
        "lambda_usd": lambda_cost,
        "step_functions_usd": sfn_cost,
        "total_usd": lambda_cost + sfn_cost,
        "measured_on_events": events_measured,
    }


def _model(history: Path, registry: Path, max_iter: int | None) -> dict[str, Any]:
    measured = measure.check(
        measure.run_measured(
            [
                sys.executable,
                "-m",
                "training.train",
                "--data",
                str(history),
                "--registry",
                registry.as_uri(),
                "--json",
                *(["--max-iter", str(max_iter)] if max_iter else []),
            ],
            env={**os.environ, "SDS_ACTOR": "bench"},
        ),
        "training the batch model",
    )
    manifest = json.loads(measured.stdout)
    return {
        "name": "fraud",
        "version": manifest["version"],
        "sha256": manifest["sha256"],
        "registry": registry.as_uri(),
    }


def _run(
    job: str, data: Path, out: Path, *, workers: int, model: dict[str, Any] | None
) -> dict[str, Any]:
    measured = measure.check(
        measure.run_measured(
            [
                sys.executable,
                "-m",
                "benchmarks.batch_scale",
                job,
                str(data),
                str(out),
                str(workers),
                json.dumps(model),
            ],
            env=dict(os.environ),
            timeout=6 * 3600,
        ),
        f"{job} with {counted(workers, 'worker')}",
    )
    run = json.loads(measured.stdout)
    events = run["manifest"]["totals"]["events"]
    return {
        "workers": workers,
        "events_measured": events,
        "rows": run["manifest"]["totals"]["rows"],
        "partitions": len(run["manifest"]["parts"]),
        "seconds": run["seconds"],
        "wall_s": measured.wall_s,
        "events_per_second": events / run["seconds"],
        "events_per_second_per_core": events / run["seconds"] / workers,
        "cpu_s": run["cpu_s"],
        "events_per_cpu_second": events / run["cpu_s"],
        # Measured from here (VmHWM of the process and its workers): the run's own figure is
        # ru_maxrss, which under this harness starts at the harness's resident set.
        "peak_rss_bytes": {
            "main": measured.peak_rss_main_bytes,
            "largest_worker": measured.peak_rss_descendants_bytes,
        },
    }


def markdown(results: dict[str, Any]) -> list[str]:
    """The two sections as tables for latest.md."""
    mib = 2**20
    lines: list[str] = []
    batch = results.get("batch")
    if batch:
        lines += [
            "",
            "## Batch scoring and backfill on this machine",
            "",
            f"`sds score` / `sds backfill`'s engine as its own process on {batch['payments']:,} "
            f"generated payments ({batch['score']['1']['events_measured']:,} activity events), "
            f"{batch['cores']} cores.",
            "",
            "| run | workers | events/s | events/s per core | speedup | events per CPU-second | "
            "peak RSS main / largest worker, MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        runs = [("score", f) for f in batch["score"].values()] + [("backfill", batch["backfill"])]
        for name, f in runs:
            rss = f["peak_rss_bytes"]
            speedup = f"{f['speedup']:.2f}" if "speedup" in f else ""
            lines.append(
                f"| {name} | {f['workers']} | {f['events_per_second']:,.0f} | "
                f"{f['events_per_second_per_core']:,.0f} | {speedup} | "
                f"{f['events_per_cpu_second']:,.0f} | "
                f"{rss['main'] / mib:.0f} / {rss['largest_worker'] / mib:.0f} |"
            )
        aws = batch["aws_estimate"]
        lines += [
            "",
            f"Estimated on AWS, {aws['events']:,} events at concurrency {aws['concurrency']} "
            f"and {aws['memory_mb']} MB: {aws['compute_seconds'] / 3600:.1f} function-hours, "
            f"about {aws['wall_s']:.0f} s of compute wall time at full concurrency (plus the "
            f"functions' starts and S3), {aws['total_usd']:.2f} USD "
            f"(Lambda {aws['lambda_usd']:.2f}, Step Functions {aws['step_functions_usd']:.2f}).",
        ]
    scale = results.get("scale_training")
    if scale:
        lines += [
            "",
            "## Training as the history grows",
            "",
            "`python -m training.train` as its own process, every payment and with negative "
            "downsampling; peak RSS is the run's largest process (the trainer or a partition "
            "worker).",
            "",
            "| payments (events) | negative rate | rows kept | wall, s | CPU, s | peak RSS, MiB | "
            "ROC AUC | PR AUC |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in scale.values():
            m = f.get("metrics")
            quality = f"{m['roc_auc']:.4f} | {m['pr_auc']:.4f}" if m else f"failed | {f['error']}"
            events = f" ({f['events']:,})" if "events" in f else ""
            kept = f"{f['kept_payments']:,}" if "kept_payments" in f else ""
            lines.append(
                f"| {f['payments']:,}{events} | {f['negative_rate']:g} | {kept} | "
                f"{f['wall_s']:.1f} | {f.get('cpu_s', 0):.1f} | "
                f"{f['peak_rss_bytes'] / mib:.0f} | {quality} |"
            )
    return lines


def main(argv: Sequence[str]) -> int:
    """One run in this process (so its peak memory is its own): JOB DATA OUT WORKERS MODEL."""
    import resource

    from sds.kernel.batch.run import ModelRef
    from sds.ops.batch import run_locally

    job, data, out, workers, model = argv
    ref = ModelRef(**json.loads(model)) if job == "score" else None
    run = run_locally(job, data=data, out=out, model=ref, workers=int(workers))
    # CPU time of this process and its workers: on a shared machine wall time stretches with the
    # load, CPU time barely moves.
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    print(json.dumps({**run.to_dict(), "cpu_s": sum(u.ru_utime + u.ru_stime for u in used)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
