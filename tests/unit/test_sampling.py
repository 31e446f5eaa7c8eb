"""Negative downsampling: every fraud kept, legitimate payments sampled and weighted back, the
holdout metrics corrected to the whole history, and the sampling recorded in the manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sds.kernel import drift, pointintime
from sds.kernel.behaviour import expected_alert_rate
from sds.kernel.features import featurize_batch
from sds.kernel.registry import open_registry
from tests.support.trained_model import MODEL, SMALL_PARAMS, TRAINER, TrainedModel
from training.data import read_history
from training.drift_reference import weighted_distribution, weighted_edges
from training.evaluate import evaluate
from training.onnx_export import onnx_scores
from training.train import STEPS, Progress, TrainParams, downsample, train


def test_downsampling_keeps_every_fraud_and_weights_the_sampled_legitimate_payments_back() -> None:
    # Given 100k payments with 1% fraud
    labels = (np.random.default_rng(0).random(100_000) < 0.01).astype(np.int64)

    # When a tenth of the legitimate ones is kept
    kept, weights = downsample(labels, 0.1, seed=7)

    # Then every fraud is there, about a tenth of the rest, in time order, and the weights make
    # the sample count as many payments (and as many legitimate ones) as the history
    assert labels[kept].sum() == labels.sum()
    assert (np.diff(kept) > 0).all()
    legitimate = (labels[kept] == 0).sum()
    assert 0.09 < legitimate / (labels == 0).sum() < 0.11
    assert set(weights[labels[kept] == 1]) == {1.0}
    assert set(weights[labels[kept] == 0]) == {10.0}
    assert weights.sum() == pytest.approx(len(labels), rel=0.02)
    # and the same seed draws the same sample
    again, _ = downsample(labels, 0.1, seed=7)
    assert np.array_equal(kept, again)
    assert not np.array_equal(kept, downsample(labels, 0.1, seed=8)[0])


def test_weighted_metrics_equal_the_metrics_of_the_holdout_the_weights_stand_for() -> None:
    # Given a holdout where each row stands for `weights` identical rows
    rng = np.random.default_rng(1)
    labels = (rng.random(600) < 0.2).astype(np.int64)
    scores = np.clip(labels * 0.3 + rng.random(600) * 0.7, 0, 1)
    weights = np.where(labels == 1, 1, rng.integers(1, 6, 600)).astype(np.float64)
    expanded = np.repeat(np.arange(600), weights.astype(np.int64))

    # When the weighted holdout and the expanded one are evaluated
    weighted, weighted_threshold = evaluate(labels, scores, alert_rate=0.05, weights=weights)
    whole, whole_threshold = evaluate(labels[expanded], scores[expanded], alert_rate=0.05)

    # Then every figure is the expanded holdout's (not the sample's inflated fraud rate)
    assert weighted_threshold == whole_threshold
    for name in (
        "roc_auc",
        "pr_auc",
        "precision_at_alert_rate",
        "recall_at_alert_rate",
        "flagged_at_alert_rate",
        "brier_score",
        "holdout_fraud_rate",
    ):
        assert weighted[name] == pytest.approx(whole[name], abs=1e-9), name
    assert weighted["expected_calibration_error"] == pytest.approx(
        whole["expected_calibration_error"], abs=0.02
    )
    assert weighted["holdout_fraud_rate"] < labels.mean()


def test_a_sampled_training_run_records_the_sampling_and_reports_the_whole_historys_metrics(
    small_history: Path, trained: TrainedModel, tmp_path: Path
) -> None:
    # Given the history the shared model was trained on without sampling
    full = trained.version.manifest
    # When a model is trained keeping a quarter of the legitimate payments
    params = dataclasses.replace(SMALL_PARAMS, negative_rate=0.25)
    version = train(
        data=small_history,
        registry=open_registry(tmp_path.as_uri(), MODEL),
        params=params,
        actor=TRAINER,
        progress=Progress(STEPS, enabled=False),
    )

    # Then the manifest says how it was sampled: every fraud kept, a quarter of the rest
    sampling = version.manifest["sampling"]
    assert sampling["method"] == "negative downsampling"
    assert sampling["negative_rate"] == 0.25 and sampling["legitimate_weight"] == 4
    assert sampling["kept_fraud"] == sampling["fraud"] > 0
    legitimate = sampling["payments"] - sampling["fraud"]
    kept_legitimate = sampling["kept_payments"] - sampling["kept_fraud"]
    assert 0.2 < kept_legitimate / legitimate < 0.3
    assert version.manifest["params"]["negative_rate"] == 0.25
    assert version.manifest["data"] == full["data"]  # the same history, described the same way
    # and its holdout figures are the whole holdout's, corrected for the sampling: the fraud
    # rate the sample over-represents fourfold is estimated back, and the model still ranks
    sampled, unsampled = version.manifest["metrics"], full["metrics"]
    assert sampled["holdout_fraud_rate"] == pytest.approx(unsampled["holdout_fraud_rate"], rel=0.35)
    assert sampled["roc_auc"] > 0.8 and abs(sampled["roc_auc"] - unsampled["roc_auc"]) < 0.08
    # and the unsampled run says it was not sampled
    assert full["sampling"]["method"] == "none"
    assert full["sampling"]["kept_payments"] == full["sampling"]["payments"]


def _whole_holdout(history_path: Path, train_events: int) -> np.ndarray:
    """The features of every holdout payment, sampled or not, as the function would see them."""
    history = read_history(history_path)
    payments = history.payment_events
    computed = pointintime.compute(
        history.events,
        history.times,
        [e["account_id"] for e in payments],
        history.payment_times,
    )
    features = featurize_batch(payments, {n: v.tolist() for n, v in computed.items()})
    return np.asarray(features[train_events:], dtype=np.float32)


def test_a_sampled_version_expects_what_it_does_on_the_whole_holdout_not_on_the_sample(
    small_history: Path, tmp_path: Path
) -> None:
    # Given a version trained keeping a tenth of the legitimate payments
    registry = open_registry(tmp_path.as_uri(), MODEL)
    version = train(
        data=small_history,
        registry=registry,
        params=dataclasses.replace(SMALL_PARAMS, negative_rate=0.1),
        actor=TRAINER,
        progress=Progress(STEPS, enabled=False),
    )
    manifest = version.manifest
    # When it serves the whole holdout, every payment (the traffic it will meet: fraud is not
    # over-represented there, as it is in the sample)
    holdout = _whole_holdout(small_history, manifest["data"]["train_events"])
    scores = onnx_scores(registry.read_artifact(version.number), holdout)
    flagged = float((scores >= manifest["decision_threshold"]).mean())

    # Then the alert rate its manifest expects (what the deployment's alarms and the monitor
    # hold it to) is the whole holdout's, weighted back as its metrics are, not the sample's
    behaviour = manifest["behaviour"]
    assert behaviour["alert_rate"] == pytest.approx(manifest["metrics"]["flagged_at_alert_rate"])
    assert expected_alert_rate(manifest) == behaviour["alert_rate"]
    assert behaviour["alert_rate"] == pytest.approx(flagged, abs=0.01)
    assert 0.5 < flagged / behaviour["alert_rate"] < 2  # inside the monitor's default band
    assert behaviour["holdout_events"] == pytest.approx(manifest["data"]["holdout_events"], rel=0.2)
    assert sum(behaviour["score_histogram"]["counts"]) == pytest.approx(
        behaviour["holdout_events"], abs=len(behaviour["score_histogram"]["counts"])
    )
    # And its drift reference is the whole holdout's: that unchanged traffic reads as stable in
    # its score and as drift in none of its features (the sample's own distributions, fraud
    # over-represented, read as drift: score PSI 0.38 here; what remains is the noise of about
    # 80 legitimate payments standing for 800)
    reference = drift.read_reference(manifest)
    assert reference is not None
    assert reference.events == pytest.approx(manifest["data"]["holdout_events"], rel=0.2)
    served = drift.proportions(drift.histogram(scores.tolist(), reference.score.edges))
    assert drift.psi(reference.score.proportions, served) < drift.PSI_STABLE
    for name, edges, column in zip(
        reference.feature_names, reference.feature_edges, holdout.T, strict=True
    ):
        shares = drift.proportions(drift.histogram(drift.float32(column.tolist()), edges))
        assert drift.psi(reference.features[name].proportions, shares) < drift.PSI_DRIFT, name


@pytest.mark.parametrize("seed", range(5))
def test_with_equal_weights_the_weighted_reference_is_the_unweighted_one(seed: int) -> None:
    # Given values with repeats, NaN, a flag and a constant, each row weighing the same
    rng = np.random.default_rng(seed)
    columns = [
        rng.normal(size=rng.integers(1, 300)),
        np.round(rng.exponential(size=257), 1),
        (rng.random(123) < 0.1).astype(np.float64),
        np.where(rng.random(90) < 0.2, np.nan, rng.random(90)),
        np.full(40, 3.0),
        np.array([np.nan, np.nan]),
    ]
    for values in columns:
        weight = np.full(len(values), float(rng.integers(1, 5)))
        # Then the edges and shares are those the kernel gives the unweighted values
        expected = drift.quantile_edges(values.tolist())
        assert weighted_edges(values, weight) == expected
        assert weighted_distribution(values, weight) == {
            "edges": expected,
            "proportions": drift.proportions(drift.histogram(values.tolist(), expected)),
        }


def test_a_weighted_reference_counts_each_row_as_the_payments_it_stands_for() -> None:
    # Given 10 sampled rows, the low five standing for 10 payments each and the high five for 1
    values = np.arange(10, dtype=np.float64)
    weights = np.array([10.0] * 5 + [1.0] * 5)

    # Then the deciles of the 55 payments fall among the low values, and the shares are of 55
    distribution = weighted_distribution(values, weights)
    assert distribution["edges"] == [1.0, 2.0, 3.0, 4.0]
    assert distribution["proportions"] == pytest.approx([10 / 55] * 4 + [15 / 55])


@pytest.mark.parametrize("rate", [0, 1.5, 0.0001])
def test_a_negative_rate_outside_the_range_is_refused_by_name(rate: float) -> None:
    with pytest.raises(ValueError, match=r"negative_rate must be a number from 0\.001 to 1"):
        TrainParams(negative_rate=rate)


def test_the_fargate_task_samples_as_its_environment_says() -> None:
    from stacks.components.training_job import training_command

    # Given the task's command for an environment that samples and for one that does not
    def command(rate: float) -> list[str]:
        return training_command(
            bucket_name="registry",
            data_bucket_name="data",
            model_name="fraud",
            data_prefix="training-data/",
            negative_rate=rate,
        )

    # Then only the sampling one passes the flag, with the configured rate, as sds train takes it
    assert command(0.1)[-2:] == ["--negative-rate", "0.1"]
    assert "--negative-rate" not in command(1.0)
    assert command(1.0) == [
        "--registry",
        "s3://registry",
        "--model",
        "fraud",
        "--data",
        "s3://data/training-data/",
    ]
