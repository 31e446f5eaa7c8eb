"""The benchmark harness runs end to end in its quick mode and writes sane, complete results.

The figures of a quick run mean nothing (a few calls, a tiny model); this checks that
`make bench` would work: both bundles build and serve through the runtime interface client,
the result files are written, and every figure is a median within its min and max.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def assert_figure(figure: dict[str, Any], *, low: float, high: float) -> None:
    assert figure["runs"] >= 1 and len(figure["values"]) == figure["runs"]
    assert figure["min"] <= figure["median"] <= figure["max"]
    assert low < figure["median"] < high, figure


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_run_writes_results_with_sane_figures(tmp_path: Path) -> None:
    # When the harness runs in quick mode
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )

    # Then it succeeds and writes the JSON, the markdown table and the chart
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Benchmark results")
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["quick"] is True
    assert results["environment"]["lambda_python"].startswith("Python 3.12")

    # And both bundles served the same model version through the runtime interface client
    cold = results["cold_start"]
    version = str(results["served_model"]["version"])
    for name in ("ours", "baseline"):
        assert cold[name]["model_version"] == version
        assert_figure(cold[name]["ms"], low=10, high=120_000)
        assert_figure(cold[name]["peak_rss_bytes"], low=20e6, high=4e9)
    assert_figure(cold["ratio_ours_to_baseline"], low=0.01, high=100)

    # And warm latency has the floor, ours and the baseline, scoring alike, on distinct requests
    # (each request's payments scored the same by both), and the floor on one request repeated
    warm = results["warm"]
    assert warm["requests"] == {"single": 300, "batch100": 3}
    for name in ("raw_onnx", "raw_onnx_repeated", "ours", "baseline", "baseline_1_thread"):
        for label in ("single", "batch100"):
            assert_figure(warm[name][label]["p50_us"], low=0.5, high=1e6)
            assert warm[name][label]["p99_us"]["median"] >= warm[name][label]["p50_us"]["median"]
    assert warm["max_abs_score_difference_ours_vs_baseline"] <= 1e-4
    assert (
        warm["ours"]["single"]["p50_us"]["median"] > warm["raw_onnx"]["single"]["p50_us"]["median"]
    )

    # And the handler without capture was timed beside its floor: the raw run and the store read,
    # and the raw run again right after the handler's aggregates read
    for name in ("ours_capture_off", "store_read", "raw_onnx_after_read"):
        for label in ("single", "batch100"):
            assert_figure(warm[name][label]["p50_us"], low=0.5, high=1e6)
    for label in ("single", "batch100"):
        bare = warm["ours_capture_off"][label]["p50_us"]["median"]
        assert bare > warm["store_read"][label]["p50_us"]["median"]  # the handler makes that read
        assert_figure(warm[f"{label}_capture_off_p50_over_floor"], low=1, high=1e4)
        above = warm[f"{label}_capture_off_p50_above_floor_us"]
        assert above["min"] <= above["median"] <= above["max"]
    assert any(
        t["target"].startswith("warm single-event p50, capture off") for t in results["targets"]
    )

    # And bundle sizes are within Lambda's unzipped limit, ours smaller than the baseline
    bundle = results["bundle"]
    for name in ("ours", "baseline"):
        assert 0 < bundle[name]["zipped_bytes"] < bundle[name]["unzipped_bytes"]
    assert bundle["ours"]["unzipped_bytes"] < bundle["limits"]["unzipped_bytes"]
    assert bundle["ours"]["unzipped_bytes"] < bundle["baseline"]["unzipped_bytes"]

    # And the Powertools variant answered like ours, and what it adds was measured against ours
    powertools = results["powertools"]
    assert powertools["parity"]["all_same"], powertools["parity"]
    assert_figure(powertools["cold_start"]["powertools"]["ms"], low=10, high=120_000)
    for mode in ("with_sdk", "without_sdk"):
        assert_figure(powertools["import"][mode]["total_ms"], low=0.1, high=60_000)
    for name in ("ours", "powertools", "routing", "metrics", "logging"):
        assert_figure(powertools["warm"][name]["single"]["p50_us"], low=0.5, high=1e6)
    assert powertools["warm"]["max_abs_score_difference_vs_ours"] == 0
    assert powertools["bundle"]["added_unzipped_bytes"] > 0
    assert "## Powertools for AWS Lambda" in (tmp_path / "latest.md").read_text()

    # And the event path was measured: the updater folded every event it was given, moto's
    # DynamoDB took about one request per event or fewer, and the cost adds up its lines
    features = results["features"]
    updater = features["updater_sqlite"]
    assert_figure(updater["events_per_second"], low=10, high=1e7)
    assert updater["applied"] + updater["ignored"] == updater["events"]
    assert updater["too_old"] == 0
    dynamo = features["dynamodb"]
    assert 0 < dynamo["requests_per_event"] <= 1.1
    assert (
        dynamo["write_units_per_event"]
        >= 2 * dynamo["requests"]["TransactWriteItems"] / (dynamo["events"])
    )
    for size in (1, 100):
        figure = features["enrichment"][f"events_{size}"]
        assert 0 < figure["p50_us"] <= figure["p99_us"]
    cost = features["cost_per_million_events"]
    assert cost["total_usd"] == pytest.approx(sum(cost["usd"].values()), abs=0.002)
    assert "## Event-driven features" in (tmp_path / "latest.md").read_text()
    # And what a shadow adds to the warm path was measured, against the challenger's own run
    shadow = results["shadow"]
    for size in ("1", "100"):
        figures = shadow[f"{size}_event"]
        assert_figure(figures["floor_shadow_run_us"], low=0.1, high=1e5)
        assert_figure(figures["request_alone_wall_us"], low=1, high=1e6)
        assert (
            figures["added_cpu_us_per_event"]["runs"] == figures["added_wall_us_per_event"]["runs"]
        )
    assert "## Shadow scoring" in (tmp_path / "latest.md").read_text()

    # And training and rollback were timed, and every target is judged on a measured figure
    training = results["training"]["5000"]
    assert_figure(training["wall_s"], low=0.1, high=600)
    assert_figure(training["peak_rss_bytes"], low=20e6, high=20e9)
    assert_figure(results["rollback"]["local"]["wall_s"], low=0.05, high=120)
    if results["rollback"]["aws"] is not None:
        assert_figure(results["rollback"]["aws"]["wall_s"], low=0.05, high=120)
    assert "synth" not in results  # quick runs skip it
    judged = {t["target"] for t in results["targets"]}
    assert {"cold start, ours / baseline", "bundle unzipped, ours"} <= judged
    assert all(isinstance(t["met"], bool) for t in results["targets"])

    # And capture was measured in the handler, and priced per million predictions
    capture = results["capture"]
    for label in ("single", "batch100"):
        assert 0 < capture[label]["capture_per_event_us"]["p50"] < 1e4
        assert len(capture[label]["handler_difference_per_event_us"]["blocks"]) == 2
    assert 100 < capture["record"]["mean_bytes"] < 10_000
    assert 0 < capture["cost_per_million_usd"]["total"] < 100
    assert "capture, cost per event in the warm handler (1-event requests, p50)" in judged
