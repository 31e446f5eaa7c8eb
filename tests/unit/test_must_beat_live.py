"""The must_beat_live gate: a version reaches an environment only if it beat, on the same served
traffic, the model live there now.

Given a project whose dev gates promotions with must_beat_live, version 1 live in dev, and dev's
captures of what version 1 served (its scores included), each test trains a candidate from those
captures and promotes it, as a user would: the candidate that beats version 1 on the held-out
payments goes live; one that does not is refused with both figures named; a version with no
comparison against the live model (trained from history, or compared with another version) is
refused with what to do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sds.config import MustBeatLive
from sds.kernel.registry import Version
from sds.ops.promotion import GateFailure, must_beat_live, promote
from sds.ops.workspace import Workspace
from tests.unit.served_traffic import (
    DAY_US,
    JAN_1,
    chargebacks,
    traffic,
    write_captures,
    write_labels,
)
from training.capture_data import Window
from training.from_capture import train_from_capture
from training.params import TrainParams

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}
WINDOW = Window(
    since_us=JAN_1,
    until_us=JAN_1 + 40 * DAY_US,
    as_of_us=JAN_1 + 60 * DAY_US,
    maturity_days=30,
)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    # dev gated with must_beat_live (opt-in): beat the live model's PR AUC
    context = json.loads((ROOT / "cdk.json").read_text())
    dev = context["context"]["environments"]["dev"]
    dev["gates"]["must_beat_live"] = {"metric": "pr_auc", "margin": 0.0}
    (tmp_path / "cdk.json").write_text(json.dumps(context))
    return Workspace.discover(project_dir=tmp_path, environ={"SDS_ACTOR": "tester"})


def live_version(ws: Workspace, *, payload: bytes = b"1") -> Version:
    """Version 1, registered from history (no comparison), promoted to dev."""
    version = ws.registry("dev").register(
        {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
        {"metrics": GOOD},
        actor="tester",
        reason="first",
    )
    promote(ws, to_env="dev", version=version.number, reason="first")
    return version


def from_capture(ws: Workspace, live: Version, *, served: str, seed: int = 3) -> Version:
    """A candidate trained on dev's traffic as `live` served it (`weak` or `strong` scores)."""
    folder = ws.home / f"served-{served}-{seed}"
    payments = traffic(days=40, per_day=30, served=served, seed=seed)
    write_captures(folder / "capture", payments, version=live.number, sha256=live.sha256)
    write_labels(folder / "labels", chargebacks(payments), day_us=JAN_1 + 45 * DAY_US)
    return train_from_capture(
        captures=str(folder / "capture"),
        labels=str(folder / "labels"),
        env="dev",
        window=WINDOW,
        holdout_days=7,
        registry=ws.registry("dev"),
        params=TrainParams(max_iter=30, seed=1),
        actor="tester",
        reason=f"retrain on traffic {served}ly served",
    )


def test_a_candidate_that_beats_the_live_model_on_its_traffic_is_promoted(ws: Workspace) -> None:
    # Given version 1 live in dev, serving weak scores, and a candidate trained on that traffic
    v1 = live_version(ws)
    candidate = from_capture(ws, v1, served="weak")
    # When it is promoted
    change = promote(ws, to_env="dev", version=candidate.number, reason="beats v1")
    # Then it is live, and the gate says on which figures
    assert change.version == candidate.number and change.previous == 1
    (result,) = [r for r in change.gates if r.gate == "must_beat_live"]
    (served,) = candidate.manifest["comparison"]["served"]
    assert result.passed
    assert result.detail == (
        f"pr_auc {served['candidate']['pr_auc']:.4f} vs {served['live']['pr_auc']:.4f} for "
        f"version 1, live in dev, on the same {7 * 30} held-out payments dev served "
        f"(needs > {served['live']['pr_auc']:.4f})"
    )


def test_a_candidate_that_does_not_beat_the_live_model_is_refused(ws: Workspace) -> None:
    # Given version 1 live in dev, whose scores on its traffic were near perfect
    v1 = live_version(ws)
    candidate = from_capture(ws, v1, served="strong")
    (served,) = candidate.manifest["comparison"]["served"]
    assert served["candidate"]["pr_auc"] < served["live"]["pr_auc"]
    # When it is promoted, Then it is refused naming both figures, and dev still serves v1
    with pytest.raises(GateFailure) as refused:
        promote(ws, to_env="dev", version=candidate.number)
    message = str(refused.value)
    assert "must_beat_live" in message
    assert f"pr_auc {served['candidate']['pr_auc']:.4f} vs {served['live']['pr_auc']:.4f}" in (
        message
    )
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.version == 1


def test_the_margin_and_the_direction_of_the_metric_come_from_config(ws: Workspace) -> None:
    v1 = live_version(ws)
    candidate = from_capture(ws, v1, served="weak")
    (served,) = candidate.manifest["comparison"]["served"]
    gain = served["candidate"]["pr_auc"] - served["live"]["pr_auc"]
    # A margin above the gain refuses what a margin below it lets through
    assert must_beat_live(ws, "dev", candidate, MustBeatLive("pr_auc", gain - 0.01)).passed
    assert not must_beat_live(ws, "dev", candidate, MustBeatLive("pr_auc", gain + 0.01)).passed
    # A lower-is-better metric compares the other way
    brier = MustBeatLive("brier_score", 0.0)
    better = served["candidate"]["brier_score"] < served["live"]["brier_score"]
    result = must_beat_live(ws, "dev", candidate, brier)
    assert result.passed is better and "(needs < " in result.detail


def test_a_version_without_a_comparison_with_the_live_model_is_refused_saying_what_to_do(
    ws: Workspace,
) -> None:
    # Given version 1 live, and version 2 trained from history (no comparison)
    v1 = live_version(ws)
    v2 = ws.registry("dev").register(
        {"model.onnx": b"onnx2", "model.skops": b"skops2"},
        {"metrics": GOOD},
        actor="tester",
        reason="history",
    )
    result = must_beat_live(ws, "dev", v2, MustBeatLive())
    assert not result.passed
    assert "not trained from served traffic" in result.detail
    assert "sds train --from-capture" in result.detail
    # And a candidate compared with version 1 is refused once version 2 is what dev serves
    candidate = from_capture(ws, v1, served="weak")
    dev = ws.config.env("dev")
    ws_plain = _without_gate(ws)
    promote(ws_plain, to_env="dev", version=v2.number, reason="forced by a test")
    assert dev.gates.must_beat_live is not None
    refused = must_beat_live(ws, "dev", candidate, dev.gates.must_beat_live)
    assert not refused.passed
    assert "compared with v1 on dev's traffic, not with version 2, live in dev" in refused.detail


def test_nothing_live_means_nothing_to_beat(ws: Workspace) -> None:
    v1 = ws.registry("dev").register(
        {"model.onnx": b"onnx", "model.skops": b"skops"}, {"metrics": GOOD}, actor="t"
    )
    result = must_beat_live(ws, "dev", v1, MustBeatLive())
    assert result.passed and result.detail == "nothing is live in dev: nothing to beat"


def _without_gate(ws: Workspace) -> Workspace:
    import dataclasses

    dev = ws.config.env("dev")
    gates = dataclasses.replace(dev.gates, must_beat_live=None)
    environments = {**ws.config.environments, "dev": dataclasses.replace(dev, gates=gates)}
    return dataclasses.replace(ws, config=dataclasses.replace(ws.config, environments=environments))


def test_must_beat_live_is_read_from_config_and_a_bad_metric_is_named() -> None:
    from sds.config import ConfigError, parse_project

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    # Opt-in: the committed environments promote without it
    assert all(e.gates.must_beat_live is None for e in parse_project(context).environments.values())
    gates = context["environments"]["prod"]["gates"]
    gates["must_beat_live"] = {"metric": "brier_score", "margin": 0.01}
    prod = parse_project(context).env("prod")
    assert prod.gates.must_beat_live == MustBeatLive(metric="brier_score", margin=0.01)
    assert not prod.gates.must_beat_live.higher_is_better
    gates["must_beat_live"] = {"metric": "accuracy"}
    with pytest.raises(ConfigError, match=r"must_beat_live\.metric: must be one of roc_auc"):
        parse_project(context)
