"""The drift report on AWS (moto): `sds --aws monitor` reads the captures bucket SSM names, and
the scheduled monitor function publishes the same figures as embedded-metric-format lines whose
values breach the alarms' thresholds on drifted traffic, and only then."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdas.monitor import handler
from sds.config import MonitorSettings
from sds.kernel.drift import NAMESPACE, MonitorTarget
from sds.kernel.registry import Version
from tests.integration.deployed import ACTOR, Deployed
from tests.unit import drift_traffic as traffic
from tests.unit.drift_traffic import Payments, day

WINDOW = ("--since", "2026-03-01", "--until", "2026-03-03", "--as-of", "2026-03-05")


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Payments]:
    folder = tmp_path_factory.mktemp("activity")
    plain = traffic.payments(folder, 3000, seed=3)
    larger = traffic.payments(folder, 3000, seed=3, amount_factor=4.0)
    return {
        "holdout": plain.take(slice(0, None, 2)),
        "unchanged": plain.take(slice(1, None, 2)),
        "shifted": larger.take(slice(1, None, 2)),
    }


@dataclass
class Served:
    deployed: Deployed
    captures_bucket: str
    version: Version
    local: Path  # the same captures, as files on this machine


@pytest.fixture
def served(
    aws: Any,
    deploy: Callable[..., Deployed],
    population: dict[str, Payments],
    tmp_path: Path,
) -> Served:
    """dev deployed, a version registered with the holdout's reference, and two days of its
    captures in the captures bucket (the unchanged day gzip-compressed, as Firehose writes)."""
    deployed = deploy("dev")
    holdout = population["holdout"]
    manifest = traffic.manifest(holdout, version=1, sha256="unused", alert_rate=0.1)
    version = deployed.registry.register(
        {"model.onnx": b"onnx", "model.skops": b"skops"},
        {"metrics": manifest["metrics"], "drift_reference": manifest["drift_reference"]},
        actor=ACTOR,
    )
    local = tmp_path / "capture"
    for when, kind in (("2026-03-01", "unchanged"), ("2026-03-02", "shifted")):
        traffic.capture(
            local,
            population[kind],
            day_us=day(when),
            version=version.number,
            sha256=version.sha256,
            threshold=traffic.threshold_for(holdout, 0.1),
            id_prefix=kind,
        )
    bucket = aws.bucket()
    s3 = aws.client("s3")
    for path in sorted(local.rglob("*.jsonl")):
        key = f"captures/{path.relative_to(local)}"
        body = path.read_bytes()
        if "2026-03-01" in key:
            key, body = key + ".gz", gzip.compress(body)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    aws.client("ssm").put_parameter(Name="/sds/dev/captures-bucket", Value=bucket, Type="String")
    return Served(deployed, bucket, version, local)


def test_the_aws_report_reads_the_captures_bucket_and_matches_the_local_one(
    served: Served, cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # When the monitor reports dev on AWS
    on_aws = cli("--aws", "monitor", "--env", "dev", *WINDOW, "--json")

    # Then it read both days from the bucket SSM names, with the registry's reference
    assert on_aws.code == 0, on_aws.err
    document = on_aws.json()
    assert document["sources"]["captures"] == f"s3://{served.captures_bucket}/captures/"
    (version,) = document["versions"]
    assert version["version"] == served.version.number
    assert version["reference"]["available"] is True
    assert [d["day"] for d in version["days"]] == ["2026-03-01", "2026-03-02"]
    assert [d["score_drift"] for d in version["days"]] == ["stable", "drift"]

    # And the same captures read from this machine give the same figures
    monkeypatch.setenv("SDS_TARGET", "local")
    monkeypatch.setenv("SDS_REGISTRY_DEV", f"s3://{served.deployed.bucket}")
    home = tmp_path / "state"
    (home / "capture").mkdir(parents=True, exist_ok=True)
    (home / "capture" / "dev").symlink_to(served.local)
    local = cli("monitor", "--env", "dev", *WINDOW, "--json")
    assert local.code == 0, local.err
    assert local.json()["versions"] == document["versions"]


def emf_lines(output: str) -> list[dict[str, Any]]:
    documents = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [d for d in documents if "_aws" in d]


@pytest.fixture
def monitor_environment(served: Served, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    target = MonitorTarget(
        environment="dev",
        model="fraud",
        registry_uri=f"s3://{served.deployed.bucket}",
        captures_uri=f"s3://{served.captures_bucket}/captures/",
    )
    for name, value in target.to_environ().items():
        monkeypatch.setenv(name, value)
    yield


@pytest.mark.usefixtures("monitor_environment")
def test_the_scheduled_function_publishes_metrics_that_breach_the_alarms_only_on_drift(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = MonitorSettings()  # the alarms' thresholds, as deployed by default

    # When the function publishes each day
    figures: dict[str, dict[str, Any]] = {}
    for when in ("2026-03-01", "2026-03-02"):
        summary = handler.lambda_handler({"day": when}, None)
        volume, line = emf_lines(capsys.readouterr().out)
        figures[when] = line
        assert summary["versions"][0]["captured"] == line["Captured"]
        # (beside the day's payments on the environment's dimension, every capture counted)
        assert volume["Payments"] == line["Captured"] == summary["payments"][when]
        assert volume["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["Environment"]]

    # Then each day is one EMF document in the namespace the alarms watch, on their dimension
    for line in figures.values():
        (directive,) = line["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        assert ["Environment"] in directive["Dimensions"]
        assert line["Environment"] == "dev"
        assert line["ModelVersion"] == str(served.version.number)
        names = {m["Name"] for m in directive["Metrics"]}
        assert {"Captured", "AlertRate", "AlertRateRatio", "ScorePSI", "MaxFeaturePSI"} <= names
    # And the unchanged day stays inside every alarm, the shifted day breaches PSI and the band
    quiet, drifted = figures["2026-03-01"], figures["2026-03-02"]
    assert quiet["ScorePSI"] < settings.score_psi_alarm
    assert settings.alert_rate_ratio_min < quiet["AlertRateRatio"] < settings.alert_rate_ratio_max
    assert drifted["ScorePSI"] >= settings.score_psi_alarm
    assert drifted["AlertRateRatio"] > settings.alert_rate_ratio_max
    assert "amount_usd_log1p" in drifted["DriftedFeatures"]


@pytest.mark.usefixtures("monitor_environment")
def test_a_day_without_traffic_publishes_a_volume_of_zero_only_and_a_bad_day_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When the function runs for a day nothing was served, and with a day that is not a date
    summary = handler.lambda_handler({"day": "2026-02-01"}, None)
    out = capsys.readouterr().out

    # Then it publishes the environment's volume as zero (0 payments: what the volume alarm
    # reads) and nothing the drift alarms read (missing data is not a breach), and says so in
    # its summary
    (line,) = emf_lines(out)
    (directive,) = line["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Environment"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Payments", "Captured", "Flagged"}
    assert line["Payments"] == 0 and line["Captured"] == 0
    assert "ScorePSI" not in line and "AlertRateRatio" not in line
    assert summary["versions"] == [] and summary["counts"]["records"] == 0
    assert summary["days_without_payments"] == ["2026-02-01"]
    assert summary["payments"] == {"2026-02-01": 0}
    with pytest.raises(ValueError, match='"day" must be a date'):
        handler.lambda_handler({"day": "yesterday"}, None)


@pytest.mark.usefixtures("monitor_environment")
def test_a_late_delivery_counts_on_the_day_it_was_scored(
    served: Served, aws: Any, population: dict[str, Payments], tmp_path: Path
) -> None:
    # Given 100 more payments scored on March 1st whose records reached the March 2nd partition
    late = tmp_path / "late"
    traffic.capture(
        late, population["unchanged"].take(slice(0, 100)), day_us=day("2026-03-01"),
        version=served.version.number, sha256=served.version.sha256, threshold=0.5,
        id_prefix="late-",
    )  # fmt: skip
    (path,) = late.rglob("*.jsonl")
    aws.client("s3").put_object(
        Bucket=served.captures_bucket,
        Key="captures/dt=2026-03-02/firehose-late.jsonl",
        Body=path.read_bytes(),
    )

    # When the function publishes March 1st, and then March 2nd
    first = handler.lambda_handler({"day": "2026-03-01"}, None)
    second = handler.lambda_handler({"day": "2026-03-02"}, None)

    # Then they count on March 1st, and not on March 2nd
    scored_first = len(population["unchanged"].events) + 100
    assert [v["captured"] for v in first["versions"]] == [scored_first]
    assert [v["captured"] for v in second["versions"]] == [len(population["shifted"].events)]
    # (read on March 2nd's run as other days' payments: the late ones, and March 1st's own, whose
    # partition it reads for its first minutes, every object there written today as far as the
    # bucket knows)
    assert second["counts"]["other_days"] == 100 + len(population["unchanged"].events)
