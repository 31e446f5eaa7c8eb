"""Run every benchmark of issue 5 and write benchmarks/results/latest.{json,md,png}.

    python -m benchmarks.run            # the full run (`make bench`), 18 to 22 minutes on 2 cores
    python -m benchmarks.run --quick    # a smoke run of the harness, under a minute

Ours and the baseline are measured in the same run, interleaved, so that their ratio is not
skewed by what else the machine was doing. Every figure is a median with min and max over
repeated runs; see benchmarks/README.md for the method.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import batch_scale, bundles, measure, report, tls_path
from benchmarks.servers import FAKE_CREDENTIALS, RuntimeApi, base_env, moto_server
from sds.kernel.errors import plural

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
WORK = ROOT / "build" / "bench"
MODEL = "fraud"
BUCKET = "sds-bench-dev"
# The warm benchmark's traffic: the history's last payments, as 3,200 distinct 1-payment requests
# and 32 of 100 payments (quick runs: 300).
REQUEST_PAYMENTS = 3_200
SECTIONS = (
    "bundle",
    "cold_start",
    "warm",
    "synth",
    "training",
    "rollback",
    "powertools",
    "tls",
    "features",
    "capture",
    "shadow",
    "batch",
    "scale_training",
)


@dataclass(frozen=True)
class Plan:
    quick: bool
    cold_runs: int
    warm_calls: int
    warm_blocks: int
    training_runs: dict[int, int]
    synth_runs: int
    rollback_runs: int
    sections: tuple[str, ...]
    # None: training's defaults (what `sds train` does); quick runs train a tiny model.
    max_iter: int | None = None
    # Issue 17 (benchmarks/batch_scale.py): the training curve's sizes, the batch run's size.
    scale_sizes: tuple[int, ...] = batch_scale.SCALE_SIZES
    batch_events: int = batch_scale.BATCH_EVENTS
    # The warm benchmark's distinct requests are made of this many payments (`request_events`).
    request_payments: int = REQUEST_PAYMENTS


def make_plan(args: argparse.Namespace) -> Plan:
    sections = tuple(args.only.split(",")) if args.only else SECTIONS
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(
            f"unknown {plural(len(unknown), 'section')} {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    scale_sizes = (
        tuple(int(size) for size in args.scale_sizes.split(","))
        if args.scale_sizes
        else batch_scale.SCALE_SIZES
    )
    if args.quick:
        if not args.only:
            # The issue-17 sections run on their own (`--only batch,scale_training`).
            sections = tuple(s for s in SECTIONS if s not in ("synth", "batch", "scale_training"))
        return Plan(
            True,
            1,
            100,
            2,
            {5_000: 2},
            1,
            1,
            sections,
            max_iter=20,
            scale_sizes=scale_sizes if args.scale_sizes else (20_000,),
            batch_events=args.batch_events or 20_000,
            request_payments=300,
        )
    # 1M-event training is the long pole (minutes per run on 2 cores): two runs, min and max.
    return Plan(
        False,
        7,
        10_000,
        5,
        {100_000: 3, 1_000_000: 2},
        3,
        7,
        sections,
        scale_sizes=scale_sizes,
        batch_events=args.batch_events or batch_scale.BATCH_EVENTS,
    )


# Every progress line with the machine's 1-minute load average: the machine may be shared, and a
# reader of the results should see how busy it was while each figure was taken.
LOAD_LOG: list[dict[str, Any]] = []


def log(message: str) -> None:
    load = os.getloadavg()[0]
    LOAD_LOG.append({"time": time.strftime("%H:%M:%S"), "load_1m": round(load, 2), "at": message})
    print(
        f"[bench {time.strftime('%H:%M:%S')} load {load:.1f}] {message}",
        file=sys.stderr,
        flush=True,
    )


# Environment --------------------------------------------------------------------------------


def _first_line(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def environment(lambda_python: str) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "harness_python": platform.python_version(),
        "lambda_python": _first_line([lambda_python, "-V"]),
        "node": _first_line(["node", "--version"]),
        "cdk_cli": _first_line(["npx", "--no-install", "cdk", "--version"]),
        # Left as they are on this machine; both sides of every comparison run with them.
        "env": {
            name: os.environ.get(name, "unset")
            for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
        },
    }


# Setup --------------------------------------------------------------------------------------


def dataset(size: int) -> Path:
    """Seeded synthetic history, generated once per size and generator (input, not measured).

    The file name carries a digest of the generator and the event format, so a checkout whose
    events look different (a new field, a new event type) generates its own history instead of
    reading a stale one left in build/ by an older checkout.
    """
    generator = hashlib.sha256()
    for source in ("training/synthetic.py", "sds/kernel/events.py"):
        generator.update((ROOT / source).read_bytes())
    path = WORK / "data" / f"events-{size}-{generator.hexdigest()[:12]}.jsonl.gz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"generating {size} events")
        measure.check(
            measure.run_measured(
                [str(VENV_BIN / "sds"), "generate", "--events", str(size), "--out", str(path)],
                env=dict(os.environ),
            ),
            "sds generate",
        )
    return path


def request_events(path: Path, count: int = REQUEST_PAYMENTS) -> list[dict[str, Any]]:
    """The last `count` payments of the history as a client would send them (no label): the
    warm benchmark's distinct requests (`benchmarks.warm_worker.requests_of`)."""
    with gzip.open(path, "rt") as source:
        payments = [r for r in map(json.loads, source) if r.get("type", "payment") == "payment"]
    events = []
    for record in payments[-count:]:
        record.pop("is_fraud", None)
        events.append(record)
    return events


def feature_store(history: Path) -> str:
    """A SQLite feature store holding the history's account aggregates, as both handlers read
    them (one store read per request); folded once per history by `sds ingest --clock events`."""
    db = history.with_suffix("").with_suffix(".features.db")
    uri = f"sqlite://{db}"
    if not db.is_file():
        log(f"folding {history.name} into a feature store")
        partial = db.with_name(db.name + ".partial")
        partial.unlink(missing_ok=True)
        measure.check(
            measure.run_measured(
                [
                    str(VENV_BIN / "sds"),
                    "ingest",
                    str(history),
                    "--clock",
                    "events",
                    "--env",
                    "dev",
                    "--quiet",
                    "--project-dir",
                    str(ROOT),
                ],
                env={**os.environ, "SDS_FEATURE_STORE_DEV": f"sqlite://{partial}"},
            ),
            "sds ingest",
        )
        partial.rename(db)
    return uri


def put_joblib_baseline(endpoint: str, version: int) -> str:
    """The same estimator, saved the common way (joblib) next to the version; its sha256."""
    import hashlib
    import io

    import joblib
    import skops.io as sio

    from benchmarks.baseline.handler import artifact_key
    from sds.kernel.registry import open_registry, open_store

    del endpoint  # os.environ points the SDK at it
    store = open_store(f"s3://{BUCKET}")
    data = open_registry(f"s3://{BUCKET}", MODEL).read_artifact(version, "model.skops")
    estimator = sio.loads(data, trusted=sio.get_untrusted_types(data=data))
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    store.put(artifact_key(MODEL, version), buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


# Sections -----------------------------------------------------------------------------------


def run_training(plan: Plan, env: dict[str, str], sizes: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in sizes:
        data = dataset(size)
        walls, peaks, versions = [], [], []
        runs = plan.training_runs[size]
        for run in range(runs):
            log(f"training on {size} events, run {run + 1}/{runs}")
            result = measure.check(
                measure.run_measured(
                    [
                        sys.executable,
                        "-m",
                        "training.train",
                        "--data",
                        str(data),
                        "--registry",
                        f"s3://{BUCKET}",
                        "--model",
                        MODEL,
                        "--reason",
                        "benchmark",
                        *(["--max-iter", str(plan.max_iter)] if plan.max_iter else []),
                    ],
                    env=env,
                ),
                "training",
            )
            walls.append(result.wall_s)
            peaks.append(result.peak_rss_bytes)
            match = re.search(r"registered \S+ version (\d+)", result.stdout)
            versions.append(int(match.group(1)) if match else None)
        results[str(size)] = {
            "events": size,
            "wall_s": measure.stats(walls),
            "peak_rss_bytes": measure.stats(peaks),
            "versions": versions,
        }
    return results


def run_cold(
    plan: Plan,
    built: dict[str, bundles.Bundle],
    python: str,
    envs: dict[str, dict[str, str]],
    event: dict[str, Any],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in built}

    def start(bundle: bundles.Bundle) -> dict[str, Any]:
        # A fresh Runtime API per start: a killed client's pending GET /next must not take the
        # next start's event.
        api = RuntimeApi()
        try:
            return measure.cold_start(
                bundle, python=python, env=envs[bundle.name], api=api, event=event
            )
        finally:
            api.close()

    # One unmeasured start each fills the page cache for both alike; then interleave.
    for bundle in built.values():
        start(bundle)
    for run in range(plan.cold_runs):
        for name, bundle in built.items():
            runs[name].append(start(bundle))
        log(
            f"cold start {run + 1}/{plan.cold_runs}: "
            + ", ".join(f"{n} {runs[n][-1]['ms']:.0f} ms" for n in built)
        )
    ratios = [o["ms"] / b["ms"] for o, b in zip(runs["ours"], runs["baseline"], strict=True)]
    return {
        **{
            name: {
                "ms": measure.stats([r["ms"] for r in outcomes]),
                "peak_rss_bytes": measure.stats([r["peak_rss_bytes"] for r in outcomes]),
                "cpu_ms": measure.stats([r["cpu_ms"] for r in outcomes]),
                "model_version": outcomes[0]["model_version"],
            }
            for name, outcomes in runs.items()
        },
        "ratio_ours_to_baseline": measure.stats(ratios),
    }


def run_warm(
    plan: Plan,
    built: dict[str, bundles.Bundle],
    python: str,
    envs: dict[str, dict[str, str]],
    events_file: Path,
) -> dict[str, Any]:
    """One execution environment per variant; every series timed over `warm_calls` calls."""
    runs: dict[str, dict[str, Any]] = {}
    variants = [(name, bundle, envs[name]) for name, bundle in built.items()]
    # scikit-learn's defaults use an OpenMP pool (one thread per core); on a busy machine its
    # workers wait for CPU. The same baseline with one thread shows how much of the gap that is.
    variants.append(
        ("baseline_1_thread", built["baseline"], {**envs["baseline"], "OMP_NUM_THREADS": "1"})
    )
    # Issue 13 budgets the handler without capture, which issue 15 budgets on its own: ours
    # again with CAPTURE_SAMPLE_RATE=0. That worker also times the floor it is held to: the raw
    # ONNX run and the feature store's read of the same accounts (on AWS, a DynamoDB round trip).
    variants.append(
        ("ours_capture_off", built["ours"], {**envs["ours"], "CAPTURE_SAMPLE_RATE": "0"})
    )
    for name, bundle, env in variants:
        runs[name] = measure.warm(
            bundle,
            python=python,
            env=env,
            events_file=events_file,
            calls=plan.warm_calls,
            blocks=plan.warm_blocks,
            raw=name in ("ours", "ours_capture_off"),
        )
        log(f"warm {name}: single p50 {runs[name]['single']['p50_us']:.0f} us")
    ours, baseline = runs["ours"], runs["baseline"]
    worst_gap = max(
        abs(a - b)
        for label in ("single_scores", "batch100_scores")
        for a, b in zip(ours[label], baseline[label], strict=True)
    )

    def series(result: dict[str, Any], label: str) -> dict[str, Any]:
        """Each percentile per block of consecutive calls (median, min, max over the blocks),
        and over all calls."""
        whole, blocks = result[label], result[label]["blocks"]
        out: dict[str, Any] = {"calls": whole["calls"], "blocks": len(blocks)}
        for key in ("p50_us", "p90_us", "p99_us", "mean_us"):
            out[key] = measure.stats([b[key] for b in blocks]) | {"all_calls": whole[key]}
        return out

    def paired(label: str, figure: Any, other: str = "baseline") -> dict[str, Any]:
        """A ratio or difference per pair of blocks (same position in each series), and over
        all calls."""
        base = runs[other]
        whole = figure(ours[label], base[label], ours[f"raw_{label}"])
        blocks = [
            figure(o, b, r)
            for o, b, r in zip(
                ours[label]["blocks"],
                base[label]["blocks"],
                ours[f"raw_{label}"]["blocks"],
                strict=True,
            )
        ]
        return measure.stats(blocks) | {"all_calls": whole}

    bare = runs["ours_capture_off"]

    def floor(label: str, figure: Any) -> dict[str, Any]:
        """A figure of the capture-off handler's p50 and its floor's parts (raw ONNX run, store
        read), per block (all three timed in that one worker), and over all calls."""
        parts = (bare[label], bare[f"raw_{label}"], bare[f"store_{label}"])
        blocks = [figure(*b) for b in zip(*(p["blocks"] for p in parts), strict=True)]
        return measure.stats(blocks) | {"all_calls": figure(*parts)}

    out: dict[str, Any] = {
        "ours": {"single": series(ours, "single"), "batch100": series(ours, "batch100")},
        "ours_capture_off": {
            "single": series(bare, "single"),
            "batch100": series(bare, "batch100"),
        },
        "store_read": {
            "single": series(bare, "store_single"),
            "batch100": series(bare, "store_batch100"),
        },
        "baseline": {
            "single": series(baseline, "single"),
            "batch100": series(baseline, "batch100"),
        },
        "baseline_1_thread": {
            "single": series(runs["baseline_1_thread"], "single"),
            "batch100": series(runs["baseline_1_thread"], "batch100"),
        },
        "raw_onnx": {
            "single": series(ours, "raw_single"),
            "batch100": series(ours, "raw_batch100"),
        },
        # The floor "above the floor" subtracts: the raw run timed in the capture-off worker.
        "raw_onnx_capture_off": {
            "single": series(bare, "raw_single"),
            "batch100": series(bare, "raw_batch100"),
        },
        "raw_onnx_repeated": {
            "single": series(ours, "raw_repeated_single"),
            "batch100": series(ours, "raw_repeated_batch100"),
        },
        "requests": {"single": ours["single_requests"], "batch100": ours["batch100_requests"]},
        "raw_onnx_after_read": {
            "single": series(bare, "raw_after_read_single"),
            "batch100": series(bare, "raw_after_read_batch100"),
        },
        "init_ms": {name: r["init_ms"] for name, r in runs.items()},
        "max_abs_score_difference_ours_vs_baseline": worst_gap,
    }
    for label in ("single", "batch100"):
        out[f"{label}_speedup_p50_baseline_over_ours"] = paired(
            label, lambda o, b, r: b["p50_us"] / o["p50_us"]
        )
        out[f"{label}_speedup_p50_baseline_1_thread_over_ours"] = paired(
            label, lambda o, b, r: b["p50_us"] / o["p50_us"], "baseline_1_thread"
        )
        out[f"{label}_p50_above_raw_us"] = paired(label, lambda o, b, r: o["p50_us"] - r["p50_us"])
        out[f"{label}_p50_over_raw"] = paired(label, lambda o, b, r: o["p50_us"] / r["p50_us"])
        out[f"{label}_capture_off_p50_above_floor_us"] = floor(
            label, lambda h, r, f: h["p50_us"] - r["p50_us"] - f["p50_us"]
        )
        out[f"{label}_capture_off_p50_over_floor"] = floor(
            label, lambda h, r, f: h["p50_us"] / (r["p50_us"] + f["p50_us"])
        )
        out[f"{label}_capture_p50_us"] = measure.stats(
            [
                o["p50_us"] - b["p50_us"]
                for o, b in zip(ours[label]["blocks"], bare[label]["blocks"], strict=True)
            ]
        ) | {"all_calls": ours[label]["p50_us"] - bare[label]["p50_us"]}
        out[f"{label}_p99_over_p50_ours"] = paired(label, lambda o, b, r: o["p99_us"] / o["p50_us"])
        out[f"{label}_p99_over_p50_baseline"] = paired(
            label, lambda o, b, r: b["p99_us"] / b["p50_us"]
        )
    return out


def run_synth(plan: Plan) -> dict[str, Any]:
    walls = []
    command = ["npx", "--no-install", "cdk", "synth", "--quiet", "**"]
    # One unmeasured synth first: it builds the Lambda bundle if this checkout has none yet.
    for run in range(plan.synth_runs + 1):
        with tempfile.TemporaryDirectory(prefix="sds-bench-synth-") as tmp:
            env = {
                **os.environ,
                "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
                "CDK_HOME": str(Path(tmp) / "cdk-home"),
            }
            result = measure.check(
                measure.run_measured([*command, "-o", str(Path(tmp) / "cdk.out")], env=env),
                "cdk synth",
            )
            stacks = len(list((Path(tmp) / "cdk.out").rglob("*.template.json")))
        if run:
            walls.append(result.wall_s)
            log(f"cdk synth {run}/{plan.synth_runs}: {result.wall_s:.1f} s, {stacks} templates")
    return {
        "command": " ".join(command[:5]) + " '**'",
        "templates": stacks,
        "wall_s": measure.stats(walls),
    }


def run_rollback(
    plan: Plan, env: dict[str, str], endpoint: str, versions: tuple[int, int]
) -> dict[str, Any]:
    """`sds rollback` as a user runs it (a new process each time), v2 -> v1, repeated."""
    old, new = versions
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="sds-bench-rollback-") as tmp:
        cli_env = {
            **env,
            "SDS_PROJECT_DIR": str(ROOT),
            "SDS_HOME": str(Path(tmp) / "home"),
            "SDS_LOCK_FILE": str(Path(tmp) / "models.lock.json"),
            "SDS_ACTOR": "benchmark",
        }
        sds = str(VENV_BIN / "sds")

        def cli(*args: str, aws: bool = False) -> measure.Measured:
            extra = {"SDS_TARGET": "aws"} if aws else {"SDS_REGISTRY_DEV": f"s3://{BUCKET}"}
            return measure.check(
                measure.run_measured([sds, *args], env={**cli_env, **extra}), "sds " + args[0]
            )

        # Local target: the registry alias and the pin (registry on the S3 server).
        walls, reported = [], []
        cli("promote", str(old), "--to", "dev", "--reason", "benchmark setup")
        for run in range(plan.rollback_runs):
            cli("promote", str(new), "--to", "dev", "--reason", "benchmark setup")
            result = cli("rollback", "--env", "dev", "--reason", "benchmark")
            if f"version {new} -> version {old}" not in result.stdout:
                raise RuntimeError(f"unexpected rollback output: {result.stdout!r}")
            walls.append(result.wall_s)
            match = re.search(r"rolled back in (\d+) ms", result.stdout)
            if match:
                reported.append(float(match.group(1)))
            log(f"sds rollback {run + 1}/{plan.rollback_runs}: {result.wall_s:.2f} s")
        out["local"] = {
            "command": "sds rollback --env dev --reason ... (SDS_REGISTRY_DEV=s3://..., S3 server)",
            "wall_s": measure.stats(walls),
            "reported_ms": measure.stats(reported) if reported else None,
        }

        # AWS target: alias `live` switched to the Lambda version of the previous model, found
        # through SSM, with CodeDeploy checked first (all on the moto server).
        if not aws_rollback_available():
            out["aws"] = None
            return out
        from benchmarks.aws_rollback import FakeDeployment, expected_output
        from sds.kernel.registry import open_registry

        registry = open_registry(f"s3://{BUCKET}", MODEL)
        shas = {v: registry.get_version(v).sha256 for v in (old, new)}
        deployment = FakeDeployment(endpoint, BUCKET, MODEL)
        walls, reported = [], []
        cli("--aws", "promote", str(old), "--to", "dev", "--reason", "benchmark setup", aws=True)
        deployment.deploy(old, shas[old])
        for run in range(plan.rollback_runs):
            cli("--aws", "promote", str(new), "--to", "dev", "--reason", "setup", aws=True)
            deployment.deploy(new, shas[new])
            result = cli("--aws", "rollback", "--env", "dev", "--reason", "benchmark", aws=True)
            if not expected_output(old, new).search(result.stdout):
                raise RuntimeError(f"unexpected rollback output: {result.stdout!r}")
            if deployment.live_version() != deployment.versions[old]:
                raise RuntimeError("alias live did not move back to the previous Lambda version")
            walls.append(result.wall_s)
            match = re.search(r"done in (\d+) ms", result.stdout)
            if match:
                reported.append(float(match.group(1)))
            log(f"sds --aws rollback {run + 1}/{plan.rollback_runs}: {result.wall_s:.2f} s")
        out["aws"] = {
            "command": "sds --aws rollback --env dev --reason ... (SSM, Lambda, CodeDeploy, S3 "
            "on the moto server)",
            "wall_s": measure.stats(walls),
            "reported_ms": measure.stats(reported) if reported else None,
        }
    return out


def aws_rollback_available() -> bool:
    """Whether this checkout has `sds --aws rollback` (the Lambda alias switch)."""
    help_text = subprocess.run(
        [str(VENV_BIN / "sds"), "--help"], capture_output=True, text=True, check=False
    ).stdout
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--error-unmatch", "sds/ops/aws_rollback.py"],
        capture_output=True,
        check=False,
    )
    return "--aws" in help_text and tracked.returncode == 0


# Main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run of the harness")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument(
        "--scale-sizes",
        help="scale_training's history sizes, comma-separated (default 1000000,4000000; "
        "add 16000000 for the long point)",
    )
    parser.add_argument(
        "--batch-events", type=int, help="events the batch section scores (default 1000000)"
    )
    args = parser.parse_args(argv)
    plan = make_plan(args)
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    # The venv first, as `make` puts it: its node and npx (`make install-dev`) run the CDK CLI
    # pinned in node_modules, whatever Node the machine has.
    os.environ["PATH"] = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
    started = time.perf_counter()
    log("start")
    python = bundles.lambda_python()
    results: dict[str, Any] = {
        "schema": 1,
        "quick": plan.quick,
        "plan": {k: v for k, v in plan.__dict__.items() if k != "quick"},
        "environment": environment(python),
    }
    runtime_dir = runtime_folder(python)
    with moto_server(VENV_BIN) as endpoint:
        env = {**base_env(endpoint), "PYTHONPATH": str(ROOT)}
        # The harness itself reads the registry on the S3 server too (sds.ops.aws honours these).
        os.environ.update({**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        create_bucket(endpoint)
        needs_model = {"cold_start", "warm", "rollback", "powertools"} & set(plan.sections)
        sizes = sorted(plan.training_runs)
        training_plan = plan if "training" in plan.sections else quick_training(plan)
        if "training" in plan.sections or needs_model:
            # The smallest size first: its first version is the model every other section serves.
            results["training"] = run_training(training_plan, env, sizes[:1])
            checkpoint(results, args.out)
        built: dict[str, bundles.Bundle] = {}
        if {"bundle", "cold_start", "warm", "powertools"} & set(plan.sections):
            log("building the bundles (cached under build/)")
            built = {name: bundles.build(name, python) for name in ("ours", "baseline")}
        if "bundle" in plan.sections:
            log("measuring bundle sizes")
            results["bundle"] = {
                name: bundles.sizes(b, reuse=plan.quick) for name, b in built.items()
            } | {
                "limits": {
                    "unzipped_bytes": bundles.LAMBDA_UNZIPPED_LIMIT,
                    "zipped_bytes": bundles.LAMBDA_ZIPPED_LIMIT,
                }
            }
        if {"cold_start", "warm", "powertools"} & set(plan.sections):
            first = results["training"][str(min(results["training"], key=int))]
            version = first["versions"][0]
            manifest = served_manifest(endpoint, version)
            joblib_sha = put_joblib_baseline(endpoint, version)
            shas = {"ours": manifest["sha256"], "baseline": joblib_sha}
            lambda_base = base_env(endpoint)
            history = dataset(min(plan.training_runs))
            store_uri = feature_store(history)
            envs = {
                name: measure.lambda_env(
                    bundle,
                    runtime_dir,
                    lambda_base,
                    {
                        "MODEL_NAME": MODEL,
                        "MODEL_VERSION": str(version),
                        "MODEL_SHA256": shas[name],
                        "REGISTRY_URI": f"s3://{BUCKET}",
                        "FEATURE_STORE_URI": store_uri,
                    },
                )
                for name, bundle in built.items()
            }
            events = request_events(history, plan.request_payments)
            events_file = WORK / "request-events.json"
            events_file.write_text(json.dumps(events))
            results["served_model"] = {
                "version": version,
                "trained_on_events": manifest["data"]["events"],
                "trees": manifest.get("params", {}).get("max_iter"),
                "onnx_bytes": manifest["artifacts"]["model.onnx"]["size"],
                "feature_store": "sqlite (local file, one read per request)",
            }
            if "cold_start" in plan.sections:
                log("cold starts")
                event = measure_event(events[:1])
                results["cold_start"] = run_cold(plan, built, python, envs, event)
                checkpoint(results, args.out)
            if "warm" in plan.sections:
                log("warm latency")
                results["warm"] = run_warm(plan, built, python, envs, events_file)
                checkpoint(results, args.out)
            if "powertools" in plan.sections:
                from benchmarks.powertools import section as powertools

                log("powertools: the variant bundle, parity, cold start, import and warm cost")
                results["powertools"] = powertools.run(
                    plan,
                    ours=built["ours"],
                    python=python,
                    runtime_dir=runtime_dir,
                    ours_env=envs["ours"],
                    events_file=events_file,
                    log=log,
                )
                checkpoint(results, args.out)
        if "rollback" in plan.sections:
            versions = [v for r in results["training"].values() for v in r["versions"]]
            results["rollback"] = run_rollback(plan, env, endpoint, (versions[0], versions[1]))
            checkpoint(results, args.out)
        if "tls" in plan.sections:
            log("the TLS path of a cold start (imports, trust stores, handshakes)")
            tls_bundle = built["ours"] if "ours" in built else bundles.build("ours", python)
            tls_runs = plan.cold_runs * 2 + 1
            results["tls"] = tls_path.run(python, tls_bundle.path, runtime_dir, tls_runs)
            checkpoint(results, args.out)
        if "features" in plan.sections:
            from benchmarks import features
            from sds.kernel.aws.dynamodb import DynamoDBClient

            log("features: the event path (updater throughput, DynamoDB requests, cost)")
            results["features"] = features.run(
                quick=plan.quick, client_factory=DynamoDBClient, log=log
            )

        if "capture" in plan.sections:
            from benchmarks import capture

            log("capture: in-process cost per event, cost per million predictions on AWS")
            capture_bundle = built["ours"] if "ours" in built else bundles.build("ours", python)
            results["capture"] = capture.run(
                python=python,
                bundle=capture_bundle.path,
                quick=plan.quick,
                log=log,
                request_payments=plan.request_payments,
            )
            checkpoint(results, args.out)
        if "shadow" in plan.sections:
            from benchmarks import shadow

            log("shadow scoring: the handler with and without a challenger")
            results["shadow"] = shadow.run(
                events=min(plan.training_runs),
                calls=200 if plan.quick else 2000,
                blocks=plan.warm_blocks,
                max_iter=plan.max_iter,
                log=log,
                request_payments=plan.request_payments,
            )
            checkpoint(results, args.out)
        if "synth" in plan.sections:
            log("cdk synth of every environment")
            results["synth"] = run_synth(plan)
            checkpoint(results, args.out)
        if "training" in plan.sections and sizes[1:]:
            results["training"] |= run_training(plan, env, sizes[1:])
            checkpoint(results, args.out)
        if "batch" in plan.sections:
            from sds.config import load_project

            project = load_project(ROOT / "cdk.json")
            batch = project.env(next(iter(project.environments))).infra.batch
            results["batch"] = batch_scale.run_batch(
                dataset,
                plan.batch_events,
                max_iter=plan.max_iter,
                concurrency=batch.max_concurrency,
                memory_mb=batch.memory_mb,
                log=log,
            )
            checkpoint(results, args.out)
        if "scale_training" in plan.sections:
            results["scale_training"] = batch_scale.run_scale_training(
                dataset, plan.scale_sizes, max_iter=plan.max_iter, log=log
            )
    if "training" not in plan.sections:
        results.pop("training", None)
    results["complete"] = True
    results["wall_s"] = time.perf_counter() - started
    checkpoint(results, args.out)
    log(f"done in {results['wall_s']:.0f} s; results in {args.out}")
    return 0


def checkpoint(results: dict[str, Any], out: Path) -> None:
    """Write what is measured so far: an interrupted run still leaves its figures."""
    results.setdefault("complete", False)
    results["targets"] = report.evaluate_targets(results)
    results["load_log"] = LOAD_LOG
    report.write(results, out)


def quick_training(plan: Plan) -> Plan:
    """Just enough training for a model to serve when the training section is not measured."""
    return Plan(True, 0, 0, 0, {min(plan.training_runs): 2}, 0, 0, ("training",), plan.max_iter)


def measure_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    from benchmarks.warm_worker import proxy_event

    return proxy_event(events)


def create_bucket(endpoint: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=BUCKET)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }


def served_manifest(endpoint: str, version: int) -> dict[str, Any]:
    from sds.kernel.registry import open_registry

    del endpoint  # os.environ points the SDK at it
    return dict(open_registry(f"s3://{BUCKET}", MODEL).get_version(version).manifest)


def runtime_folder(python: str) -> Path:
    """awslambdaric and boto3 for CPython 3.12: what /var/runtime holds on Lambda."""
    target = WORK / "runtime"
    stamp = target / ".complete"
    if stamp.is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    log("installing awslambdaric and boto3 for CPython 3.12 (the runtime's side)")
    pins = {
        line.split("==")[0].split("[")[0]: line.strip()
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
        + (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    measure.check(
        measure.run_measured(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(target),
                "--only-binary=:all:",
                "--platform",
                "manylinux_2_28_x86_64",
                "--platform",
                "manylinux_2_17_x86_64",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                "--no-compile",
                pins["awslambdaric"],
                pins["boto3"],
            ],
            env=dict(os.environ),
        ),
        "pip install of the runtime folder",
    )
    measure.check(
        measure.run_measured(
            [python, "-m", "compileall", "-q", "-j", "0", str(target)], env=dict(os.environ)
        ),
        "compiling the runtime folder",
    )
    stamp.touch()
    return target


if __name__ == "__main__":
    raise SystemExit(main())
