"""The `powertools` section of latest.md (called by `benchmarks.report.markdown`)."""

from __future__ import annotations

from typing import Any

MIB = 1024 * 1024

WARM_ROWS = (
    ("ours", "ours (handler)"),
    ("powertools", "with Powertools: resolver, Metrics, Logger"),
    ("routing", "only routing through `APIGatewayRestResolver`"),
    ("metrics", "only metrics through `Metrics` (flushed per invocation)"),
    ("logging", "only `Logger.inject_lambda_context` (request id)"),
)
IMPORT_ROWS = (
    ("with_sdk", "our handler as today (AWS SDK, S3 fetch, numpy, ONNX Runtime)"),
    ("without_sdk", "our app, numpy and ONNX Runtime, no AWS SDK (issue 13's handler)"),
)


def _s(figure: dict[str, Any], fmt: str = "{:.0f}", scale: float = 1.0) -> str:
    """median (min–max)."""
    return (
        fmt.format(figure["median"] * scale)
        + " ("
        + fmt.format(figure["min"] * scale)
        + "–"
        + fmt.format(figure["max"] * scale)
        + ")"
    )


def markdown(figures: dict[str, Any]) -> list[str]:
    cold, bundle, warm = figures["cold_start"], figures["bundle"], figures["warm"]
    cases = figures["parity"]["cases"]
    calls, blocks = warm["ours"]["single"]["calls"], warm["ours"]["single"]["blocks"]
    ours_mib = (bundle["unzipped_bytes"] - bundle["added_unzipped_bytes"]) / MIB
    lines = [
        "",
        f"## Powertools for AWS Lambda ({figures['version']}), measured against ours",
        "",
        "`benchmarks/powertools/handler.py`: our API with its routes on `APIGatewayRestResolver`, "
        "its metrics through Powertools `Metrics`, `Logger.inject_lambda_context`, and our "
        "validation and scoring. It answered the same status, headers, body and metrics as ours "
        f"on all {len(cases)} requests of the parity check: {'; '.join(cases)}.",
        "",
        "| | ours | with Powertools | added (pairwise) |",
        "|---|---|---|---|",
        f"| cold start to first response, ms ({cold['ours']['ms']['runs']} runs each, "
        f"interleaved) | {_s(cold['ours']['ms'])} | {_s(cold['powertools']['ms'])} | "
        f"{_s(cold['added_ms'], '{:+.0f}')} |",
        f"| peak RSS, MiB | {_s(cold['ours']['peak_rss_bytes'], '{:.0f}', 1 / MIB)} | "
        f"{_s(cold['powertools']['peak_rss_bytes'], '{:.0f}', 1 / MIB)} | "
        f"{_s(cold['added_peak_rss_bytes'], '{:+.1f}', 1 / MIB)} |",
        f"| bundle unzipped, MiB | {ours_mib:.1f} | {bundle['unzipped_bytes'] / MIB:.1f} | "
        f"{bundle['added_unzipped_bytes'] / MIB:+.1f} |",
        "",
        "Importing and creating the resolver, `Logger` and `Metrics` in a fresh Python 3.12 "
        "process on the variant bundle, after what is already loaded at that point (runs "
        f"alternate; {figures['import']['with_sdk']['total_ms']['runs']} each):",
        "",
        "| loaded before | import and init, ms | of which CPU, ms | modules added | "
        "top-level packages added |",
        "|---|---|---|---|---|",
    ]
    for mode, label in IMPORT_ROWS:
        figure = figures["import"][mode]
        packages = ", ".join(p for p in figure["packages"] if not p.startswith("_"))
        lines.append(
            f"| {label} | {_s(figure['total_ms'], '{:.1f}')} | {_s(figure['cpu_ms'], '{:.1f}')} | "
            f"{figure['modules']} | {packages} |"
        )
    lines += [
        "",
        f"Warm, in process ({calls} calls per series; percentiles per block of "
        f"{calls // blocks} calls, median (min–max) over the {blocks} blocks; added = the "
        "variant's p50 minus ours, block by block):",
        "",
        "| | 1 event p50, µs | 1 event p99, µs | 100 events p50, µs | added 1 event, µs | "
        "added 100 events, µs |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in WARM_ROWS:
        if name not in warm:
            continue
        w = warm[name]
        added = warm["added_p50_us"].get(name)
        lines.append(
            f"| {label} | {_s(w['single']['p50_us'], '{:.1f}')} | "
            f"{_s(w['single']['p99_us'], '{:.1f}')} | {_s(w['batch100']['p50_us'])} | "
            + (
                f"{_s(added['single'], '{:+.1f}')} | {_s(added['batch100'], '{:+.0f}')} |"
                if added
                else "| |"
            )
        )
    lines.append(
        "- largest score difference to ours on the request events: "
        f"{warm['max_abs_score_difference_vs_ours']:.2g}"
    )
    return lines
