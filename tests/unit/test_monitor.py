"""`sds monitor`: the drift report's figures on generated traffic (volume, alert rate, PSI of the
score and of each feature against the training holdout, precision and recall once labels mature),
and the report as a table, as JSON with a stable schema, and as a self-contained HTML page."""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pytest

from sds.cli.main import main
from sds.kernel import drift
from sds.kernel.capture import Capturer, records, sampled
from sds.kernel.features import FEATURE_NAMES
from sds.ops.monitor import monitor
from tests.support.trained_model import TrainedModel
from tests.unit import drift_traffic as traffic
from tests.unit.drift_traffic import DAY_US, Payments, day
from training.capture_data import Window
from training.data import DataError

ROOT = Path(__file__).resolve().parents[2]
SHA = "a" * 64
AMOUNT_FEATURES = {"amount_log1p", "amount_usd_log1p", "amount_usd_last_24h"}


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Payments]:
    """One generated population split in two: the training holdout (even payments) and served
    traffic (odd ones), as generated and with every amount four times larger."""
    folder = tmp_path_factory.mktemp("activity")
    plain = traffic.payments(folder, 5000, seed=3)
    larger = traffic.payments(folder, 5000, seed=3, amount_factor=4.0)
    return {
        "holdout": plain.take(slice(0, None, 2)),
        "unchanged": plain.take(slice(1, None, 2)),
        "shifted": larger.take(slice(1, None, 2)),
    }


def window(since: str, until: str, *, as_of: str | None = None, **policy: Any) -> Window:
    return Window(
        since_us=day(since),
        until_us=day(until),
        as_of_us=day(as_of or until),
        maturity_days=policy.pop("maturity_days", 30),
        **policy,
    )


def report(
    tmp_path: Path, manifests: Mapping[int, Mapping[str, Any] | None], w: Window
) -> dict[str, Any]:
    return monitor(
        env="dev",
        captures=str(tmp_path / "capture"),
        labels=str(tmp_path / "labels"),
        window=w,
        manifests=lambda name, version: manifests.get(version),
    ).to_dict()


def days_of(document: dict[str, Any], version: int) -> dict[str, dict[str, Any]]:
    (found,) = [v for v in document["versions"] if v["version"] == version]
    return {d["day"]: d for d in found["days"]}


# Drift ------------------------------------------------------------------------------------------


def test_a_shifted_amount_distribution_drifts_the_amount_features_and_the_score_only(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given version 1 serving its holdout's population on March 1st, and the same payments with
    # four times larger amounts on March 2nd
    holdout = population["holdout"]
    threshold = traffic.threshold_for(holdout, 0.1)
    for served, when, prefix in (("unchanged", "2026-03-01", ""), ("shifted", "2026-03-02", "s-")):
        traffic.capture(
            tmp_path / "capture",
            population[served],
            day_us=day(when),
            version=1,
            sha256=SHA,
            threshold=threshold,
            id_prefix=prefix,
        )
    manifest = traffic.manifest(holdout, version=1, sha256=SHA)

    # When the monitor reports both days
    days = days_of(report(tmp_path, {1: manifest}, window("2026-03-01", "2026-03-03")), 1)

    # Then the unchanged day is stable: the score and every feature under 0.1
    unchanged = days["2026-03-01"]
    assert unchanged["score_psi"] < drift.PSI_STABLE
    assert unchanged["score_drift"] == "stable"
    assert set(unchanged["feature_psi"]) == set(FEATURE_NAMES)
    assert max(unchanged["feature_psi"].values()) < drift.PSI_STABLE
    assert unchanged["drifted_features"] == []
    # And the shifted day drifts on the amount features and the score, and on nothing else
    shifted = days["2026-03-02"]
    assert shifted["score_psi"] > drift.PSI_DRIFT
    assert shifted["score_drift"] == "drift"
    assert set(shifted["drifted_features"]) == AMOUNT_FEATURES
    others = {k: v for k, v in shifted["feature_psi"].items() if k not in AMOUNT_FEATURES}
    assert max(others.values()) < drift.PSI_STABLE
    assert shifted["max_feature_psi"]["feature"] in AMOUNT_FEATURES
    # And the served score histogram is stated against the holdout's bins
    histogram = shifted["score_histogram"]
    assert len(histogram["reference"]) == len(histogram["served"]) == len(histogram["edges"]) + 1
    assert sum(histogram["served"]) == pytest.approx(1.0)
    assert sum(histogram["served"][-2:]) > 2 * sum(histogram["reference"][-2:])


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift() -> None:
    # Given a reference of ten equal bins
    reference = [0.1] * 10
    # Then the same shares give 0, a small shift a small PSI, a large one a large PSI
    assert drift.psi(reference, reference) == 0.0
    small = drift.psi(reference, [0.12] * 5 + [0.08] * 5)
    large = drift.psi(reference, [0.02] * 5 + [0.18] * 5)
    assert 0 < small < drift.PSI_STABLE < drift.PSI_DRIFT < large
    # And an empty served bin counts as a small share, not an infinite PSI
    assert np.isfinite(drift.psi(reference, [0.0] + [1 / 9] * 9))


def test_a_flag_gets_two_bins_and_a_continuous_value_ten_quantile_bins() -> None:
    # Given a flag that is mostly 0, and a continuous value
    flag = [0.0] * 97 + [1.0] * 3
    continuous = [float(i) for i in range(1000)]
    # Then the flag splits at 1 (0s and 1s apart) and the value at its deciles
    assert drift.quantile_edges(flag) == [1.0]
    assert drift.histogram(flag, [1.0]) == [97, 3]
    edges = drift.quantile_edges(continuous)
    assert len(edges) == drift.BINS - 1
    assert drift.histogram(continuous, edges) == [100] * drift.BINS


def test_served_features_at_a_repeated_holdout_value_fall_in_its_bin_as_captured() -> None:
    # Given a holdout whose amount is 100.00 for two payments in five (a popular price: its
    # float32 log1p is one of the reference's edges), served again unchanged, each payment's
    # features captured as the handler captures them (a float32 row) and read back
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1000, len(FEATURE_NAMES))).astype(np.float32)
    amount = FEATURE_NAMES.index("amount_usd_log1p")
    popular = np.float32(np.log1p(100.0))
    rows[:, amount] = np.where(rng.random(1000) < 0.4, popular, rng.uniform(0, 8, 1000))
    reference = drift.read_reference(
        {"drift_reference": drift.reference(rows.astype(np.float64).tolist(), [0.5] * 1000,
                                            FEATURE_NAMES)}
    )  # fmt: skip
    assert reference is not None and float(popular) in reference.features["amount_usd_log1p"].edges
    lines: list[bytes] = []
    capturer = Capturer(
        env="dev", model={"name": "fraud", "version": 1, "sha256": SHA}, threshold=0.5,
        sink=lines.append,
    )  # fmt: skip
    for i, row in enumerate(rows):
        capturer.capture(
            request_id=None, received_us=day("2026-03-01"), started_ns=0, decided_ns=0,
            events=[{"event_id": f"e-{i}", "account_id": "a", "occurred_at": "2026-03-01T00:00:00Z"}],
            features=row.reshape(1, -1), scores=[0.5], online_features=True,
        )  # fmt: skip
    cell = drift.Cell()
    for _where, record in records("served.jsonl", b"".join(lines)):
        bins = reference.bins(record.score, record.features)
        cell.add(decision=record.decision, sample_rate=1.0, reference=reference, bins=bins)

    # When its feature PSI is computed, then the unchanged amount is stable: every payment at
    # 100.00 fell in the bin the holdout's did, not the one below it
    assert cell.feature_psi(reference)["amount_usd_log1p"] == pytest.approx(0.0, abs=1e-12)


def test_a_malformed_reference_in_a_manifest_is_an_error_naming_the_part() -> None:
    # Given manifests whose reference is broken in two ways
    good = drift.reference([[1.0], [2.0]], [0.1, 0.2], ["x"])
    broken = {**good, "score": {"edges": [0.5], "proportions": [1.0]}}
    newer = {**good, "schema_version": 2}
    # Then reading each one names what is wrong; a manifest without one reads as None
    with pytest.raises(ValueError, match=r"drift_reference\.score: 1 edges need 2 proportions"):
        drift.read_reference({"drift_reference": broken})
    with pytest.raises(ValueError, match="schema_version 2"):
        drift.read_reference({"drift_reference": newer})
    assert drift.read_reference({"version": 1}) is None


# Volume and alert rate --------------------------------------------------------------------------


def test_volume_and_alert_rate_are_reported_per_version_and_day(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given version 1 serving on March 1st and 2nd, version 2 (sampled at half) on March 2nd,
    # and another environment's captures in the same folder
    holdout = population["holdout"]
    served = population["unchanged"]
    first, second = served.take(slice(0, 1000)), served.take(slice(1000, 2500))
    low, high = traffic.threshold_for(holdout, 0.05), traffic.threshold_for(holdout, 0.2)
    captures = tmp_path / "capture"
    traffic.capture(captures, first, day_us=day("2026-03-01"), version=1, sha256=SHA, threshold=low)
    traffic.capture(
        captures, second, day_us=day("2026-03-02"), version=1, sha256=SHA, threshold=low,
        id_prefix="b-",
    )  # fmt: skip
    half = traffic.capture(
        captures, second, day_us=day("2026-03-02"), version=2, sha256="b" * 64, threshold=high,
        sample_rate=0.5, id_prefix="c-",
    )  # fmt: skip
    traffic.capture(
        captures, first, day_us=day("2026-03-01"), version=1, sha256=SHA, threshold=low,
        env="prod", id_prefix="p-",
    )  # fmt: skip
    manifests = {
        1: traffic.manifest(holdout, version=1, sha256=SHA, alert_rate=0.05),
        2: traffic.manifest(holdout, version=2, sha256="b" * 64, alert_rate=0.2),
    }

    # When the monitor reports dev
    document = report(tmp_path, manifests, window("2026-03-01", "2026-03-03"))

    # Then each version's days show what it served, and its alert rate from its own decisions
    def rate(payments: Payments, threshold: float) -> float:
        return float(np.mean(np.asarray(payments.scores) >= threshold))

    v1, v2 = days_of(document, 1), days_of(document, 2)
    assert sorted(v1) == ["2026-03-01", "2026-03-02"] and sorted(v2) == ["2026-03-02"]
    assert v1["2026-03-01"]["captured"] == 1000
    assert v1["2026-03-01"]["alert_rate"] == pytest.approx(rate(first, low))
    assert v1["2026-03-02"]["captured"] == 1500
    assert v1["2026-03-02"]["alert_rate"] == pytest.approx(rate(second, low))
    captured = len(half)
    kept = [e for e in half if sampled(e["event_id"], 0.5)]
    assert v2["2026-03-02"]["captured"] == len(kept) < captured
    # And a sampled version's volume is estimated from its rate (each record counts twice)
    assert v2["2026-03-02"]["served_estimate"] == pytest.approx(2 * len(kept))
    assert v2["2026-03-02"]["alert_rate"] > v1["2026-03-02"]["alert_rate"]
    # And the versions' totals and what the manifests expect are there; prod's records are not
    (first_version,) = [v for v in document["versions"] if v["version"] == 1]
    assert first_version["total"]["captured"] == 2500
    assert first_version["expected_alert_rate"] == 0.05
    assert document["sources"]["other_env"] == 1000


def test_a_day_without_payments_is_a_day_of_zero_from_each_versions_first_day_on(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given version 1 serving March 1st and 4th but not the 2nd and 3rd (the API down), version
    # 2 going live beside it on March 3rd, and nothing captured on March 5th (capture broken)
    holdout, served = population["holdout"], population["unchanged"].take(slice(0, 300))
    captures = tmp_path / "capture"
    for when, version in (("03-01", 1), ("03-04", 1), ("03-03", 2), ("03-04", 2)):
        traffic.capture(
            captures, served, day_us=day(f"2026-{when}"), version=version, sha256=SHA,
            threshold=0.5, id_prefix=f"{when}-{version}-",
        )  # fmt: skip
    manifests = {v: traffic.manifest(holdout, version=v, sha256=SHA) for v in (1, 2)}

    # When the monitor reports March 1st to 5th
    document = report(tmp_path, manifests, window("2026-03-01", "2026-03-06"))

    # Then every day from each version's first one to the window's last is listed, in order:
    # version 2 has no days before it went live
    v1, v2 = days_of(document, 1), days_of(document, 2)
    assert list(v1) == ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    assert list(v2) == ["2026-03-03", "2026-03-04", "2026-03-05"]
    # And a day without payments is a day of zero, marked, with no rates: null, not 0
    for gap in (v1["2026-03-02"], v1["2026-03-03"], v1["2026-03-05"], v2["2026-03-05"]):
        assert gap["gap"] is True
        assert gap["captured"] == 0 and gap["served_estimate"] == 0 and gap["flagged"] == 0
        assert gap["alert_rate"] is None and gap["score_psi"] is None
        assert gap["score_drift"] == "-" and gap["score_histogram"] is None
        assert gap["feature_psi"] == {} and gap["max_feature_psi"] is None
        assert gap["labels"]["status"] == "no payments" and gap["labels"]["precision"] is None
    assert v1["2026-03-01"]["gap"] is False and v1["2026-03-01"]["captured"] == 300
    assert v1["2026-03-01"]["score_psi"] is not None
    # And the document is strict JSON (no NaN) and the totals count the served days only
    json.dumps(document, allow_nan=False)
    (first,) = [v for v in document["versions"] if v["version"] == 1]
    assert first["total"]["captured"] == 600


def test_a_replaced_version_ends_where_it_stopped_and_no_day_to_come_is_listed(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given version 1 serving March 1st and 2nd, replaced by version 2 on March 3rd, and nothing
    # served since
    served = population["unchanged"].take(slice(0, 200))
    for when, version in (("03-01", 1), ("03-02", 1), ("03-03", 2)):
        traffic.capture(
            tmp_path / "capture", served, day_us=day(f"2026-{when}"), version=version,
            sha256=SHA, threshold=0.5, id_prefix=f"{when}-",
        )  # fmt: skip

    # When the monitor reports a window running to March 10th, on March 5th at noon
    document = monitor(
        env="dev",
        captures=str(tmp_path / "capture"),
        labels=str(tmp_path / "labels"),
        window=window("2026-03-01", "2026-03-10"),
        manifests=lambda name, version: None,
        now_us=day("2026-03-05") + DAY_US // 2,
    ).to_dict()

    # Then version 1's days end at its last (the days after are version 2's, not gaps), and
    # version 2's at the last whole day, a gap: today, under way without payments yet, is none
    assert list(days_of(document, 1)) == ["2026-03-01", "2026-03-02"]
    v2 = days_of(document, 2)
    assert list(v2) == ["2026-03-03", "2026-03-04"]
    assert [d["gap"] for d in v2.values()] == [False, True]


def test_a_retried_request_counts_once_and_a_version_without_reference_is_said_not_fatal(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given version 3, trained before training stored reference distributions, whose payments
    # were all captured twice (a retried request scores an event twice)
    served = population["unchanged"].take(slice(0, 300))
    for _ in range(2):
        traffic.capture(
            tmp_path / "capture", served, day_us=day("2026-03-01"), version=3, sha256=SHA,
            threshold=0.5,
        )  # fmt: skip
    manifests = {3: traffic.manifest(None, version=3, sha256=SHA)}

    # When the monitor reports it
    document = report(tmp_path, manifests, window("2026-03-01", "2026-03-02"))

    # Then each payment counts once, volume and alert rate are there, and PSI is not, with why
    (version,) = document["versions"]
    assert document["sources"]["duplicates"] == 300
    assert version["total"]["captured"] == 300
    assert version["total"]["alert_rate"] is not None
    assert version["reference"]["available"] is False
    assert "trained before" in version["reference"]["note"]
    assert version["total"]["score_psi"] is None and version["total"]["feature_psi"] == {}
    assert version["total"]["score_drift"] == "-"


def test_a_version_missing_from_the_registry_is_reported_without_psi(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given captures of a version the environment's registry does not hold
    traffic.capture(
        tmp_path / "capture", population["unchanged"].take(slice(0, 200)),
        day_us=day("2026-03-01"), version=9, sha256=SHA, threshold=0.5,
    )  # fmt: skip
    # When the monitor reports it
    (version,) = report(tmp_path, {}, window("2026-03-01", "2026-03-02"))["versions"]
    # Then it says where it looked
    assert version["reference"]["note"] == (
        "fraud version 9 is not in dev's registry: no reference to compare with"
    )
    assert version["total"]["captured"] == 200


def test_the_expected_alert_rate_is_what_the_version_flagged_on_its_holdout(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given a version whose threshold aimed at 1% of its holdout but, as scores tie at a coarse
    # model's threshold, flagged 10% of it (the manifest's behaviour block), serving the same mix
    holdout = population["holdout"]
    threshold = traffic.threshold_for(holdout, 0.1)
    traffic.capture(
        tmp_path / "capture", population["unchanged"], day_us=day("2026-03-01"), version=1,
        sha256=SHA, threshold=threshold,
    )  # fmt: skip
    manifest = traffic.manifest(
        holdout, version=1, sha256=SHA, alert_rate=0.01, threshold=threshold
    )
    flagged_on_holdout = manifest["behaviour"]["alert_rate"]
    assert flagged_on_holdout == pytest.approx(0.1, abs=0.01)

    # When the monitor reports it
    (version,) = report(tmp_path, {1: manifest}, window("2026-03-01", "2026-03-02"))["versions"]

    # Then it expects the rate the version flagged on its holdout, which the day's rate matches,
    # as the deployment's alert-rate alarms expect it: not the 1% the threshold aimed at
    assert version["expected_alert_rate"] == flagged_on_holdout
    assert version["total"]["alert_rate"] == pytest.approx(flagged_on_holdout, rel=0.2)


def test_only_the_windows_partitions_are_read(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given captures on March 1st, a broken file on March 10th, and a window of March 1st only
    traffic.capture(
        tmp_path / "capture", population["unchanged"].take(slice(0, 150)),
        day_us=day("2026-03-01"), version=1, sha256=SHA, threshold=0.5,
    )  # fmt: skip
    later = tmp_path / "capture" / "dt=2026-03-10"
    later.mkdir()
    (later / "broken.jsonl").write_text("not json\n")
    # When the monitor reports March 1st
    document = report(tmp_path, {}, window("2026-03-01", "2026-03-02"))
    # Then it read that day (and the next, where a late delivery lands), not March 10th
    assert document["sources"]["records"] == 150
    # And a report that reaches March 10th names the broken line
    with pytest.raises(DataError, match=r"broken\.jsonl:1: not a capture record"):
        report(tmp_path, {}, window("2026-03-01", "2026-03-11"))


def test_payments_of_a_windows_first_minutes_filed_under_the_day_before_are_counted(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given 300 payments served on March 2nd, and 120 served in its first 4 minutes whose
    # records Firehose wrote into an object under March 1st (it files an object under the
    # arrival day of its oldest record, which arrived just before midnight)
    captures = tmp_path / "capture"
    traffic.capture(
        captures, population["unchanged"].take(slice(0, 300)), day_us=day("2026-03-02"),
        version=1, sha256=SHA, threshold=0.5,
    )  # fmt: skip
    traffic.capture(
        captures, population["unchanged"].take(slice(300, 420)), day_us=day("2026-03-02"),
        version=1, sha256=SHA, threshold=0.5, id_prefix="early-", span_us=4 * 60_000_000,
    )  # fmt: skip
    (early,) = (captures / "dt=2026-03-02").glob("*early-*")
    (captures / "dt=2026-03-01").mkdir()
    early.rename(captures / "dt=2026-03-01" / early.name)

    # When the monitor reports March 2nd
    document = report(tmp_path, {}, window("2026-03-02", "2026-03-03"))

    # Then the day counts all 420 payments it served
    assert days_of(document, 1)["2026-03-02"]["captured"] == 420


def test_a_capture_file_cut_short_mid_write_is_reported_up_to_its_last_whole_record(
    tmp_path: Path, population: dict[str, Payments], caplog: pytest.LogCaptureFixture
) -> None:
    # Given 150 payments captured on March 1st, the file cut short in its last record
    traffic.capture(
        tmp_path / "capture", population["unchanged"].take(slice(0, 150)),
        day_us=day("2026-03-01"), version=1, sha256=SHA, threshold=0.5,
    )  # fmt: skip
    (file,) = (tmp_path / "capture").rglob("*.jsonl")
    file.write_bytes(file.read_bytes()[:-50])
    # When the monitor reports March 1st
    with caplog.at_level(logging.WARNING, logger="sds.capture"):
        document = report(tmp_path, {}, window("2026-03-01", "2026-03-02"))
    # Then it reads the 149 whole records and warns about the file, naming it
    assert document["sources"]["records"] == 149
    assert any(f"{file}: the last line (150) is incomplete" in m for m in caplog.messages)


# Labels -----------------------------------------------------------------------------------------


def test_precision_and_recall_appear_once_labels_mature_and_not_before(
    tmp_path: Path, population: dict[str, Payments]
) -> None:
    # Given 1000 payments served on March 1st, and chargebacks on March 10th for the fraud ones
    holdout = population["holdout"]
    served = population["unchanged"].take(slice(0, 1000))
    threshold = traffic.threshold_for(holdout, 0.1)
    events = traffic.capture(
        tmp_path / "capture", served, day_us=day("2026-03-01"), version=1, sha256=SHA,
        threshold=threshold,
    )  # fmt: skip
    fraud = [i for i, is_fraud in enumerate(served.labels) if is_fraud]
    # A flagged payment is fraud too (the rule's best catches), so precision and recall are both
    # figures that can be checked by hand
    flagged = [i for i, s in enumerate(served.scores) if s >= threshold]
    truth = set(fraud) | set(flagged[::3])
    traffic.label(
        tmp_path / "labels",
        [events[i] for i in sorted(truth)],
        [True] * len(truth),
        at_us=day("2026-03-10"),
    )
    manifests = {1: traffic.manifest(holdout, version=1, sha256=SHA)}

    # When the monitor reports on March 15th (labels 30 days to mature)
    young = days_of(report(tmp_path, manifests, window("2026-03-01", "2026-03-02",
                                                      as_of="2026-03-15")), 1)  # fmt: skip
    # Then the day is not yet matured: no precision, no recall, and when it will be
    labels = young["2026-03-01"]["labels"]
    assert labels["status"] == "not yet matured"
    assert labels["precision"] is None and labels["recall"] is None
    assert labels["matures_on"].startswith("2026-03-31")

    # When the monitor reports on April 2nd
    matured = days_of(report(tmp_path, manifests, window("2026-03-01", "2026-03-02",
                                                        as_of="2026-04-02")), 1)  # fmt: skip
    # Then precision and recall are the labels' against what the model decided
    labels = matured["2026-03-01"]["labels"]
    caught = len(truth & set(flagged))
    assert labels["status"] == "matured"
    assert labels["matured"] == 1000 and labels["labelled"] == len(truth)
    assert labels["precision"] == pytest.approx(caught / len(flagged))
    assert labels["recall"] == pytest.approx(caught / len(truth))

    # When a later review clears every chargeback, and the environment excludes unlabelled ones
    traffic.label(
        tmp_path / "labels",
        [events[i] for i in sorted(truth)],
        [False] * len(truth),
        at_us=day("2026-03-20"),
    )
    cleared = days_of(report(tmp_path, manifests, window("2026-03-01", "2026-03-02",
                                                        as_of="2026-04-02",
                                                        unlabelled="exclude")), 1)  # fmt: skip
    # Then the latest label decides (no fraud left: precision 0, no recall) and only labelled
    # payments count
    labels = cleared["2026-03-01"]["labels"]
    assert labels["precision"] == 0.0 and labels["recall"] is None
    assert labels["unlabelled_excluded"] == 1000 - len(truth)


# The command: table, JSON, HTML -----------------------------------------------------------------

REPORT_KEYS = {"schema_version", "env", "generated_at", "window", "sources", "psi", "versions"}
VERSION_KEYS = {"model", "version", "sha256", "reference", "expected_alert_rate", "total", "days"}
FIGURE_KEYS = {
    "captured",
    "served_estimate",
    "flagged",
    "alert_rate",
    "score_psi",
    "score_drift",
    "score_histogram",
    "feature_psi",
    "max_feature_psi",
    "drifted_features",
    "without_features",
    "labels",
}
LABEL_KEYS = {
    "status",
    "matures_on",
    "matured",
    "labelled",
    "unlabelled_excluded",
    "true_positives",
    "false_positives",
    "false_negatives",
    "true_negatives",
    "precision",
    "recall",
}


@pytest.fixture
def project(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trained: TrainedModel,
    population: dict[str, Payments],
) -> Path:
    """A project whose dev registry holds the trained version, with two days of its captures."""
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SDS_ACTOR", "tester")
    for name in ("SDS_HOME", "SDS_LOCK_FILE", "SDS_TARGET", "SDS_REGISTRY_DEV"):
        monkeypatch.delenv(name, raising=False)
    trained.copy_registry(tmp_path / ".sds" / "registries" / "dev")
    version = trained.version
    for when, served in (("2026-03-01", "unchanged"), ("2026-03-02", "shifted")):
        traffic.capture(
            tmp_path / ".sds" / "capture" / "dev",
            population[served].take(slice(0, 400)),
            day_us=day(when),
            version=version.number,
            sha256=version.sha256,
            threshold=float(version.manifest["decision_threshold"]),
            id_prefix=when,
        )
    return tmp_path


def sds(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


WINDOW = ("--since", "2026-03-01", "--until", "2026-03-03", "--as-of", "2026-03-05")


def test_the_json_report_has_a_stable_schema(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the monitor reports dev as JSON
    code, out, _ = sds(capsys, "monitor", "--env", "dev", *WINDOW, "--json")
    document = json.loads(out)

    # Then the document has exactly the keys the schema names, at every level
    assert code == 0
    assert set(document) == REPORT_KEYS and document["schema_version"] == 1
    assert document["psi"] == {
        "bins": drift.BINS_DESCRIPTION,
        "stable_below": 0.1,
        "drift_above": 0.25,
        "min_events": drift.MIN_EVENTS_FOR_PSI,
    }
    assert document["window"]["maturity_days"] == 30
    (version,) = document["versions"]
    assert set(version) == VERSION_KEYS
    assert set(version["total"]) == FIGURE_KEYS
    assert [d["day"] for d in version["days"]] == ["2026-03-01", "2026-03-02"]
    for figures in version["days"]:
        assert set(figures) == FIGURE_KEYS | {"day", "gap"}
        assert set(figures["labels"]) == LABEL_KEYS
        assert set(figures["feature_psi"]) == set(FEATURE_NAMES)
    # And the trained model's manifest carried the holdout's reference
    assert version["reference"]["available"] is True
    assert version["reference"]["events"] > 0


def test_the_table_names_each_version_and_day_and_the_html_page_is_self_contained(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # When the monitor reports dev as a table, and writes the HTML page
    page = tmp_path / "drift.html"
    code, out, _ = sds(capsys, "monitor", "--env", "dev", *WINDOW, "--html", str(page))

    # Then the table shows each day, its drift and the labels' state, and where the page is
    assert code == 0
    assert "2026-03-01" in out and "2026-03-02" in out
    assert re.search(r"2026-03-02\s+400\s+\S+%\s+\d+\.\d{3} drift", out), out
    assert "not yet matured (on 2026-04-0" in out
    (drifted,) = [line for line in out.splitlines() if "features with PSI >= 0.25" in line]
    assert drifted.strip().startswith("2026-03-02:") and "amount_usd_log1p" in drifted
    assert "its holdout's alert rate" in out
    assert f"HTML report: {page.resolve()}" in out
    # And the page has its plots inline and fetches nothing: no script, no link, no URL but the
    # SVG namespace
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert html.count("<svg") >= 4
    assert "<script" not in html and "<link" not in html and "<img" not in html
    urls = set(re.findall(r"https?://[^\s\"'<>]+", html))
    assert urls == {"http://www.w3.org/2000/svg"}
    assert "amount_usd_log1p" in html and "score PSI per day" in html
    # And every plot is well-formed SVG (a browser would draw it)
    for svg in re.findall(r"<svg.*?</svg>", html, flags=re.DOTALL):
        ElementTree.fromstring(svg)
    assert not list(tmp_path.glob(".drift.html*"))  # no temporary file left


def test_the_default_window_starts_at_midnight_so_its_first_day_is_whole(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given 400 payments served over March 1st, and another 400 over March 2nd
    # When the monitor reports up to March 15th at noon, with no --since
    code, out, _ = sds(
        capsys, "monitor", "--env", "dev", "--until", "2026-03-15T12:00:00Z", "--as-of",
        "2026-03-15T12:00:00Z", "--json",
    )  # fmt: skip
    document = json.loads(out)
    # Then the window starts at the beginning of the UTC day 14 days before, not at noon: its
    # first day shows all the payments it served, not a half that would read as a drop
    assert code == 0
    assert document["window"]["since"] == "2026-03-01T00:00:00.000000Z"
    assert days_of(document, document["versions"][0]["version"])["2026-03-01"]["captured"] == 400


def test_the_records_read_beside_the_window_are_not_counted_as_the_windows(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given 400 payments served on March 1st and 400 on March 2nd
    # When the monitor reports March 2nd only (it reads March 1st too, for its first minutes)
    page = tmp_path / "drift.html"
    code, out, _ = sds(
        capsys, "monitor", "--env", "dev", "--since", "2026-03-02", "--until", "2026-03-03",
        "--as-of", "2026-03-05", "--html", str(page),
    )  # fmt: skip
    # Then the header and the page say how many of the records read were outside the window,
    # so the count matches the table's
    assert code == 0
    (header, *_) = out.splitlines()
    assert header.endswith("; 800 capture records (400 outside the window)"), header
    assert re.search(r"^2026-03-02\s+400\s", out, flags=re.MULTILINE), out
    assert "800 capture records (400 outside the window) read from" in page.read_text()


def test_a_day_without_payments_shows_as_zero_in_the_table_the_json_and_the_page(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    trained: TrainedModel,
    population: dict[str, Payments],
) -> None:
    # Given the project's version serving March 1st, 2nd and 4th, and nothing on March 3rd
    version = trained.version
    traffic.capture(
        project / ".sds" / "capture" / "dev", population["unchanged"].take(slice(0, 400)),
        day_us=day("2026-03-04"), version=version.number, sha256=version.sha256,
        threshold=float(version.manifest["decision_threshold"]), id_prefix="2026-03-04",
    )  # fmt: skip
    span = ("--since", "2026-03-01", "--until", "2026-03-05", "--as-of", "2026-03-06")

    # When the monitor reports March 1st to 4th as a table with its page, and as JSON
    page = tmp_path / "drift.html"
    code, out, _ = sds(capsys, "monitor", "--env", "dev", *span, "--html", str(page))
    json_code, json_out, _ = sds(capsys, "monitor", "--env", "dev", *span, "--json")

    # Then the table has a row of zero for March 3rd, without rates, and says so under it
    assert code == 0 and json_code == 0
    assert re.search(r"2026-03-03\s+0\s+-\s+-\s+-\s+no payments\s+-\s+-\n", out), out
    assert "no payments captured on 2026-03-03:" in out
    # And the JSON lists the day between its neighbours, marked
    (served,) = json.loads(json_out)["versions"]
    assert [(d["day"], d["captured"], d["gap"]) for d in served["days"]] == [
        ("2026-03-01", 400, False),
        ("2026-03-02", 400, False),
        ("2026-03-03", 0, True),
        ("2026-03-04", 400, False),
    ]
    # And on the page the volume drops to zero that day, each plot marks it, and the rates'
    # lines break there instead of joining March 2nd to March 4th
    plots = {
        ElementTree.fromstring(svg).get("aria-label"): ElementTree.fromstring(svg)
        for svg in re.findall(r"<svg.*?</svg>", page.read_text(), flags=re.DOTALL)
    }
    volume = plots["captured payments per day"]
    (line,) = volume.iter("{http://www.w3.org/2000/svg}polyline")
    heights = [float(point.split(",")[1]) for point in line.get("points", "").split()]
    assert len(heights) == 4 and heights[2] == max(heights) > heights[1]  # y grows downwards
    for title in ("captured payments per day", "alert rate per day", "score PSI per day"):
        marks = [r for r in plots[title].iter("{http://www.w3.org/2000/svg}rect")
                 if r.get("class") == "gap"]  # fmt: skip
        assert len(marks) == 1, title
    for title in ("alert rate per day", "score PSI per day"):
        lines = list(plots[title].iter("{http://www.w3.org/2000/svg}polyline"))
        assert [len(p.get("points", "").split()) for p in lines] == [2], title
    assert '<tr class="gap"><td class="name">2026-03-03</td><td>0</td>' in page.read_text()


def test_monitor_errors_name_the_problem(
    project: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # When the window is empty, the HTML folder does not exist or is a file, or nothing was
    # captured
    empty = sds(capsys, "monitor", "--env", "dev", "--since", "2026-03-05", "--until", "2026-03-01")
    folder = sds(capsys, "monitor", "--env", "dev", *WINDOW, "--html", str(tmp_path / "no" / "x"))
    (tmp_path / "file").write_text("a file")
    in_file = sds(
        capsys, "monitor", "--env", "dev", *WINDOW, "--html", str(tmp_path / "file" / "x")
    )
    nothing = sds(capsys, "monitor", "--env", "staging", *WINDOW)

    # Then each is one line naming it: usage errors exit 2, no data exits 1
    assert empty[0] == 2 and "the window is empty" in empty[2]
    assert folder[0] == 2 and f"the folder {tmp_path / 'no'} does not exist" in folder[2]
    assert in_file[0] == 2 and f"x: {tmp_path / 'file'} is a file, not a folder" in in_file[2]
    assert (tmp_path / "file").read_text() == "a file"
    assert nothing[0] == 1 and "no capture records" in nothing[2]
    with pytest.raises(DataError, match="no capture records"):
        monitor(
            env="dev",
            captures=str(tmp_path / "nothing"),
            labels=str(tmp_path / "nothing"),
            window=window("2026-03-01", "2026-03-02"),
            manifests=lambda name, version: None,
        )


def test_no_capture_records_names_the_window_asked_for_and_the_folders_read(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an environment that captured nothing
    # When its report is asked for a window given whole, and one whose --until defaults to --as-of
    given = sds(capsys, "monitor", "--env", "staging", *WINDOW)
    defaulted = sds(
        capsys, "monitor", "--env", "staging", "--since", "2026-03-01", "--as-of", "2026-03-05"
    )

    # Then each error names the window as asked for (not the day folders around it, which are
    # read to catch late deliveries and are named as such)
    assert given[0] == 1
    assert "no capture records of payments received from 2026-03-01 to 2026-03-03 " in given[2]
    assert "(the day folders 2026-02-28 to 2026-03-03 are empty or missing)" in given[2]
    assert defaulted[0] == 1
    assert "received from 2026-03-01 to 2026-03-05 " in defaulted[2], defaulted[2]


def test_training_stores_the_holdouts_reference_distributions_in_the_manifest(
    trained: TrainedModel,
) -> None:
    # Given the version the training fixture registered
    reference = drift.read_reference(trained.version.manifest)

    # Then its manifest holds the score's and every feature's bins and shares, on the holdout
    assert reference is not None
    assert reference.events == trained.version.manifest["data"]["holdout_events"]
    assert reference.feature_names == FEATURE_NAMES
    assert len(reference.score.edges) == drift.BINS - 1
    assert sum(reference.score.proportions) == pytest.approx(1.0)
    for name in FEATURE_NAMES:
        shares = reference.features[name].proportions
        assert sum(shares) == pytest.approx(1.0)
