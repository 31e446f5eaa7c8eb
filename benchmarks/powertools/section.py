"""The `powertools` section of `make bench`: what adopting Powertools for AWS Lambda would cost.

Measured on the same harness as the cold-start and warm sections, against our handler in the
same run:

1. **Bundle**: a variant of ours built by `stacks.bundling` with `aws-lambda-powertools` added
   to `lambdas/inference/requirements.txt` (pin in `benchmarks/powertools/requirements.txt`), with
   `benchmarks.powertools.handler` (routing, metrics and logging through Powertools, our
   validation and scoring) next to ours. Its unzipped size against ours.
2. **Parity**: both handlers answer the same requests alike (status, headers, body, metrics);
   the section stops if they do not, as their timings would then compare different work.
3. **Cold start**: ours and the variant, interleaved, through `awslambdaric` exactly as in the
   cold-start section; the difference per pair of runs.
4. **Import and init**: Powertools' resolver, Logger and Metrics imported and created in a fresh
   Python 3.12 process on the variant bundle, after what is already loaded by then (with our
   handler as it is today, and without the AWS SDK). A process start varies by tens of ms on a
   shared machine; this isolates the part Powertools adds.
5. **Warm**: `benchmarks/warm_worker.py` on ours, the variant, and each Powertools feature alone
   (`benchmarks.powertools.parts`), 1 and 100 events; the difference to ours per block.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import LAMBDA_PACKAGES
from benchmarks import bundles, measure
from benchmarks.servers import RuntimeApi
from stacks.bundling import BundleSpec, build_bundle, folder_size

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PIN_FILE = HERE / "requirements.txt"
HANDLER = "benchmarks.powertools.handler.lambda_handler"
PARTS_HANDLER = "benchmarks.powertools.parts.lambda_handler"
PARTS = ("routing", "metrics", "logging")
PROBE = HERE / "probe.py"
IMPORT_MODES = ("with_sdk", "without_sdk")

Log = Callable[[str], None]


def pinned_version() -> str:
    for line in PIN_FILE.read_text().splitlines():
        if line.startswith("aws-lambda-powertools=="):
            return line.split("==", 1)[1].strip()
    raise RuntimeError(f"{PIN_FILE} pins no aws-lambda-powertools version")


def build(python: str) -> bundles.Bundle:
    """Ours plus Powertools, by the project's recipe, in its own cache (never pruning ours)."""
    build_root = ROOT / "build" / "bench" / "powertools"
    requirements = build_root / "requirements.txt"
    text = (
        (ROOT / "lambdas" / "inference" / "requirements.txt").read_text().rstrip("\n")
        + "\n"
        + PIN_FILE.read_text()
    )
    build_root.mkdir(parents=True, exist_ok=True)
    if not requirements.is_file() or requirements.read_text() != text:
        requirements.write_text(text)
    path = build_bundle(
        BundleSpec(
            source_root=ROOT,
            packages=(*LAMBDA_PACKAGES, "benchmarks.powertools"),
            requirements=requirements,
            architecture="x86_64",
            python=python,
            pip=(sys.executable, "-m", "pip"),
            build_root=build_root,
        )
    )
    return bundles.Bundle("powertools", path, HANDLER)


def _probe(python: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    return measure.worker(
        python, PROBE, args, env=env, what=f"powertools probe {args[0]}", timeout=600
    )


def _series(result: dict[str, Any], label: str) -> dict[str, Any]:
    """Each percentile per block of consecutive calls (median, min, max over the blocks)."""
    whole, blocks = result[label], result[label]["blocks"]
    out: dict[str, Any] = {"calls": whole["calls"], "blocks": len(blocks)}
    for key in ("p50_us", "p90_us", "p99_us", "mean_us"):
        out[key] = measure.stats([b[key] for b in blocks]) | {"all_calls": whole[key]}
    return out


def _added(variant: dict[str, Any], ours: dict[str, Any], label: str) -> dict[str, Any]:
    """The variant's p50 minus ours, per pair of blocks (same position), and over all calls."""
    pairs = zip(variant[label]["blocks"], ours[label]["blocks"], strict=True)
    return measure.stats([v["p50_us"] - o["p50_us"] for v, o in pairs]) | {
        "all_calls": variant[label]["p50_us"] - ours[label]["p50_us"]
    }


def run(
    plan: Any,
    *,
    ours: bundles.Bundle,
    python: str,
    runtime_dir: Path,
    ours_env: dict[str, str],
    events_file: Path,
    log: Log,
) -> dict[str, Any]:
    """Every figure of the section; `ours_env` is ours' Lambda environment (model pin included)."""
    variant = build(python)
    env = measure.lambda_env(variant, runtime_dir, ours_env, {})
    out: dict[str, Any] = {
        "version": pinned_version(),
        "bundle": {
            "path": str(variant.path.relative_to(ROOT)),
            "unzipped_bytes": folder_size(variant.path),
            "added_unzipped_bytes": folder_size(variant.path) - folder_size(ours.path),
        },
    }

    parity = _probe(python, env, "parity", str(events_file))
    out["parity"] = parity
    if not parity["all_same"]:
        differing = [name for name, case in parity["cases"].items() if not case["same"]]
        raise RuntimeError(
            f"the Powertools variant answers differently from ours ({', '.join(differing)}): "
            "its timings would compare different work; see `parity` in the results"
        )
    log(f"powertools {out['version']}: answers alike on {len(parity['cases'])} requests")

    # Cold start, interleaved after one unmeasured start each (as the cold-start section does).
    events = json.loads(events_file.read_text())
    from benchmarks.warm_worker import proxy_event

    event = proxy_event(events[:1])
    variants = {"ours": (ours, ours_env), "powertools": (variant, env)}

    def start(name: str) -> dict[str, Any]:
        bundle, bundle_env = variants[name]
        api = RuntimeApi()
        try:
            return measure.cold_start(bundle, python=python, env=bundle_env, api=api, event=event)
        finally:
            api.close()

    cold: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for name in variants:
        start(name)
    cold_runs = 1 if plan.quick else 2 * plan.cold_runs + 1
    for run in range(cold_runs):
        for name in variants:
            cold[name].append(start(name))
        log(
            f"powertools cold start {run + 1}/{cold_runs}: "
            + ", ".join(f"{n} {cold[n][-1]['ms']:.0f} ms" for n in variants)
        )
    out["cold_start"] = {
        name: {
            "ms": measure.stats([r["ms"] for r in runs]),
            "peak_rss_bytes": measure.stats([r["peak_rss_bytes"] for r in runs]),
        }
        for name, runs in cold.items()
    } | {
        "added_ms": measure.stats(
            [p["ms"] - o["ms"] for p, o in zip(cold["powertools"], cold["ours"], strict=True)]
        ),
        "added_peak_rss_bytes": measure.stats(
            [
                p["peak_rss_bytes"] - o["peak_rss_bytes"]
                for p, o in zip(cold["powertools"], cold["ours"], strict=True)
            ]
        ),
    }

    # Import and init of Powertools alone, in fresh processes, alternating the two modes.
    probe_runs = 1 if plan.quick else 15
    imports: dict[str, list[dict[str, Any]]] = {mode: [] for mode in IMPORT_MODES}
    for _ in range(probe_runs):
        for mode in IMPORT_MODES:
            imports[mode].append(_probe(python, env, "import", mode))
    out["import"] = {
        mode: {
            key: measure.stats([r[key] for r in runs])
            for key in ("total_ms", "cpu_ms", "import_ms", "init_ms")
        }
        | {
            "modules": runs[0]["modules"],
            "packages": runs[0]["packages"],
            "sdk_loaded_before": runs[0]["sdk_loaded_before"],
        }
        for mode, runs in imports.items()
    }
    log(
        "powertools import and init: "
        + ", ".join(
            f"{mode} {out['import'][mode]['total_ms']['median']:.1f} ms" for mode in IMPORT_MODES
        )
    )

    # Warm: ours, the variant, then each feature alone; one execution environment each.
    warm_variants = [("ours", ours, ours_env), ("powertools", variant, env)]
    for part in PARTS:
        part_env = {**env, "SDS_BENCH_POWERTOOLS_PART": part}
        warm_variants.append((part, bundles.Bundle(part, variant.path, PARTS_HANDLER), part_env))
    runs: dict[str, dict[str, Any]] = {}
    for name, bundle, bundle_env in warm_variants:
        runs[name] = measure.warm(
            bundle,
            python=python,
            env=bundle_env,
            events_file=events_file,
            calls=plan.warm_calls,
            blocks=plan.warm_blocks,
            raw=False,
        )
        log(f"powertools warm {name}: single p50 {runs[name]['single']['p50_us']:.0f} us")
    worst_gap = max(
        abs(a - b)
        for name in runs
        for label in ("single_scores", "batch100_scores")
        for a, b in zip(runs[name][label], runs["ours"][label], strict=True)
    )
    out["warm"] = {
        name: {label: _series(result, label) for label in ("single", "batch100")}
        for name, result in runs.items()
    } | {
        "added_p50_us": {
            name: {
                label: _added(runs[name], runs["ours"], label) for label in ("single", "batch100")
            }
            for name in runs
            if name != "ours"
        },
        "max_abs_score_difference_vs_ours": worst_gap,
    }
    return out
