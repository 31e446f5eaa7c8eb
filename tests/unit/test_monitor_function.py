"""The scheduled monitor function's logic without AWS: its settings contract, which days it
reports, and what it publishes for a version with and without a reference in its manifest."""

from __future__ import annotations

import gzip
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lambdas.monitor.figures import (
    WRITE_MARGIN_US,
    days_before,
    days_without_payments,
    emf_documents,
    payments_by_day,
    s3_reader,
    tally,
)
from sds.kernel.drift import NAMESPACE, MonitorSettingsError, MonitorTarget
from tests.unit import drift_traffic as traffic
from tests.unit.drift_traffic import DAY_US, day


def test_the_settings_round_trip_and_a_missing_or_bad_one_is_named() -> None:
    # Given the settings the construct writes
    target = MonitorTarget("prod", "fraud", "s3://registry", "s3://captures/captures/", days=2)
    # Then the handler reads back the same, and names what is missing or wrong
    assert MonitorTarget.from_environ(target.to_environ()) == target
    with pytest.raises(MonitorSettingsError, match="missing: CAPTURES_URI, MONITOR_DAYS"):
        MonitorTarget.from_environ({"SDS_ENVIRONMENT": "prod", "MODEL_NAME": "fraud",
                                    "REGISTRY_URI": "s3://r"})  # fmt: skip
    with pytest.raises(MonitorSettingsError, match="MONITOR_DAYS must be a positive integer"):
        MonitorTarget.from_environ({**target.to_environ(), "MONITOR_DAYS": "two"})
    with pytest.raises(MonitorSettingsError, match="days must be from 1 to 31"):
        MonitorTarget("prod", "fraud", "s3://r", "s3://c/", days=0)


def test_it_reports_the_whole_days_before_the_run() -> None:
    # Given a run on March 3rd at 06:00 UTC
    now = day("2026-03-03") + 6 * 3_600_000_000
    # Then it reports March 2nd, or the two days before
    assert days_before(now, 1) == ["2026-03-02"]
    assert days_before(now, 2) == ["2026-03-01", "2026-03-02"]


def test_a_version_without_reference_publishes_volume_and_alert_rate_but_no_psi(
    tmp_path: Path,
) -> None:
    # Given 300 payments of a version trained before references were stored, one bad line, and
    # a gzip file that is not gzip
    folder = tmp_path / "activity"
    folder.mkdir()
    served = traffic.payments(folder, 600, seed=4)
    traffic.capture(
        tmp_path / "capture", served, day_us=day("2026-03-02"), version=4, sha256="c" * 64,
        threshold=0.5,
    )  # fmt: skip
    (path,) = (tmp_path / "capture").rglob("*.jsonl")
    files = {
        "2026-03-02": [
            (str(path), path.read_bytes() + b'{"record": "sds.capture", "schema_version": 1}\n'),
            ("broken.jsonl.gz", b"not gzip"),
        ],
        "2026-03-03": [("next.jsonl.gz", gzip.compress(b""))],
    }

    # When the function tallies March 2nd
    tallies, counts = tally(
        lambda partition, _written_from: files.get(partition, []),
        env="dev",
        days=["2026-03-02"],
        manifests=lambda name, version: {"version": version, "sha256": "c" * 64},
    )
    documents = emf_documents("dev", tallies, days=["2026-03-02"], now_ms=1)
    (document,) = [d for d in documents if "ModelVersion" in d]

    # Then volume and alert rate are published, PSI is not, and the summary says why
    (entry,) = tallies
    figures = entry.figures()
    assert figures["captured"] == len(served.events)
    assert figures["note"] == "version 4 was trained without a reference: no PSI"
    names = {m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"Captured", "Flagged", "AlertRate"}
    assert "ScorePSI" not in document and document["Captured"] == len(served.events)
    # And the bad line and the unreadable file are counted, not fatal
    assert counts["invalid_records"] == 1 and counts["unreadable_files"] == 1


def test_the_alert_rate_ratio_is_against_what_the_version_flagged_on_its_holdout(
    tmp_path: Path,
) -> None:
    # Given a version whose threshold aimed at 1% of its holdout but flagged 10% of it (scores
    # tied at the threshold), serving the holdout's mix
    folder = tmp_path / "activity"
    folder.mkdir()
    population = traffic.payments(folder, 2000, seed=5)
    holdout, served = population.take(slice(0, None, 2)), population.take(slice(1, None, 2))
    threshold = traffic.threshold_for(holdout, 0.1)
    traffic.capture(
        tmp_path / "capture", served, day_us=day("2026-03-02"), version=1, sha256="c" * 64,
        threshold=threshold,
    )  # fmt: skip
    manifest = traffic.manifest(
        holdout, version=1, sha256="c" * 64, alert_rate=0.01, threshold=threshold
    )
    files = [(str(p), p.read_bytes()) for p in (tmp_path / "capture").rglob("*.jsonl")]

    # When the function tallies the day
    (entry,), _ = tally(
        lambda partition, _written_from: files if partition == "2026-03-02" else [],
        env="dev",
        days=["2026-03-02"],
        manifests=lambda name, version: manifest,
    )

    # Then the ratio compares the day with what the version flagged on its holdout (about 1,
    # inside the alarm's band), not with the 1% the threshold aimed at (about 10: an alarm on
    # traffic that did not change)
    figures = entry.figures()
    assert entry.expected_alert_rate == manifest["behaviour"]["alert_rate"]
    assert figures["alert_rate_ratio"] == pytest.approx(1.0, abs=0.25)


def test_a_day_the_environment_served_nothing_publishes_a_volume_of_zero_and_no_rate(
    tmp_path: Path,
) -> None:
    # Given 200 payments served on March 1st and none on March 2nd (the API down)
    folder = tmp_path / "activity"
    folder.mkdir()
    traffic.capture(
        tmp_path / "capture", traffic.payments(folder, 400, seed=6), day_us=day("2026-03-01"),
        version=1, sha256="c" * 64, threshold=0.5,
    )  # fmt: skip
    files = [(str(p), p.read_bytes()) for p in (tmp_path / "capture").rglob("*.jsonl")]

    # When the function tallies both days
    days = ["2026-03-01", "2026-03-02"]
    tallies, _ = tally(
        lambda partition, _written_from: files if partition == "2026-03-01" else [],
        env="dev",
        days=days,
        manifests=lambda name, version: None,
    )
    documents = emf_documents("dev", tallies, days=days, now_ms=1)

    # Then March 2nd is a day without payments, published as a volume of zero for the
    # environment: its payments (what the volume alarm reads) 0, no version named, no alert rate
    # or PSI for the drift alarms to read
    assert days_without_payments(days, tallies) == ["2026-03-02"]
    (zero,) = [d for d in documents if d["Day"] == "2026-03-02"]
    (directive,) = zero["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == NAMESPACE and directive["Dimensions"] == [["Environment"]]
    assert {m["Name"] for m in directive["Metrics"]} == {"Payments", "Captured", "Flagged"}
    assert zero["Payments"] == 0 and zero["Environment"] == "dev"
    assert zero["Captured"] == 0 and zero["Flagged"] == 0
    assert "ModelVersion" not in zero and "AlertRate" not in zero
    # And the day that served is published as before, once, beside its payments
    (served,) = [d for d in documents if d["Day"] == "2026-03-01" and "ModelVersion" in d]
    assert served["Captured"] > 0 and served["ModelVersion"] == "1"
    (volume,) = [d for d in documents if d["Day"] == "2026-03-01" and "ModelVersion" not in d]
    assert volume["Payments"] == served["Captured"] and "Captured" not in volume


def test_each_reported_day_publishes_the_environments_payments_every_version_together(
    tmp_path: Path,
) -> None:
    # Given March 1st served by version 1 (every payment captured) and by version 2 (a canary,
    # captured at a sample rate of 0.5), March 2nd by version 2 alone, and March 3rd by none
    folder = tmp_path / "activity"
    folder.mkdir()
    served = traffic.payments(folder, 1200, seed=8)
    captures = tmp_path / "capture"
    for rows, when, version, rate in (
        (slice(0, 300), "2026-03-01", 1, 1.0),
        (slice(300, 500), "2026-03-01", 2, 0.5),
        (slice(500, 550), "2026-03-02", 2, 0.5),
    ):
        traffic.capture(
            captures, served.take(rows), day_us=day(when), version=version, sha256="c" * 64,
            threshold=0.5, sample_rate=rate, id_prefix=f"{when}-",
        )  # fmt: skip
    files = {
        when: [(str(p), p.read_bytes()) for p in captures.glob(f"dt={when}/*")]
        for when in ("2026-03-01", "2026-03-02")
    }
    days = ["2026-03-01", "2026-03-02", "2026-03-03"]

    # When the function tallies the three days and publishes them
    tallies, _ = tally(
        lambda partition, _written_from: files.get(partition, []),
        env="dev",
        days=days,
        manifests=lambda name, version: None,
    )
    documents = emf_documents("dev", tallies, days=days, now_ms=1)

    # Then each day has one figure of payments, on the environment's dimension alone: the
    # payments of every version together, a sampled record standing for 1 / its rate of them
    volume = {d["Day"]: d for d in documents if "Payments" in d}
    assert sorted(volume) == days and len([d for d in documents if "Payments" in d]) == 3
    for document in volume.values():
        (directive,) = document["_aws"]["CloudWatchMetrics"]
        assert directive["Dimensions"] == [["Environment"]] and "ModelVersion" not in document
        assert {"Name": "Payments", "Unit": "Count"} in directive["Metrics"]
    captured = {(t.day, t.version): t.figures()["captured"] for t in tallies}
    assert 0 < captured[("2026-03-01", 2)] < 200  # the canary's records are a sample
    assert volume["2026-03-01"]["Payments"] == pytest.approx(
        captured[("2026-03-01", 1)] + 2 * captured[("2026-03-01", 2)]
    )
    assert volume["2026-03-02"]["Payments"] == pytest.approx(2 * captured[("2026-03-02", 2)])
    assert volume["2026-03-03"]["Payments"] == 0
    # And it is the sum of the day's served estimates, the figure `sds monitor` reports per
    # version as `served_estimate`
    assert payments_by_day(days, tallies) == {day: volume[day]["Payments"] for day in days}
    assert volume["2026-03-01"]["Payments"] == pytest.approx(
        sum(t.figures()["served_estimate"] for t in tallies if t.day == "2026-03-01")
    )


def test_payments_of_a_days_first_minutes_filed_under_the_day_before_count_on_their_day(
    tmp_path: Path,
) -> None:
    # Given 200 payments served on March 1st, 300 on March 2nd, and 120 served in March 2nd's
    # first 4 minutes whose records Firehose wrote into an object under March 1st (it files an
    # object under the arrival day of its oldest record, which arrived just before midnight)
    folder = tmp_path / "activity"
    folder.mkdir()
    served = traffic.payments(folder, 1400, seed=7)
    captures = tmp_path / "capture"
    for rows, when, prefix, span in (
        (slice(0, 200), "2026-03-01", "a-", DAY_US - 1),
        (slice(200, 500), "2026-03-02", "b-", DAY_US - 1),
        (slice(500, 620), "2026-03-02", "early-", 4 * 60_000_000),
    ):
        traffic.capture(
            captures, served.take(rows), day_us=day(when), version=1, sha256="c" * 64,
            threshold=0.5, id_prefix=prefix, span_us=span,
        )  # fmt: skip
    (early,) = captures.rglob("*early-*")
    files = {
        "2026-03-01": [(str(p), p.read_bytes()) for p in captures.glob("dt=2026-03-01/*")]
        + [(str(early), early.read_bytes())],
        "2026-03-02": [(str(p), p.read_bytes()) for p in captures.glob("dt=2026-03-02/*b-*")],
    }
    asked: dict[str, int] = {}

    def read(partition: str, written_from_us: int) -> list[tuple[str, bytes]]:
        asked[partition] = written_from_us
        return files.get(partition, [])

    # When the function tallies March 2nd
    (entry,), counts = tally(
        read, env="dev", days=["2026-03-02"], manifests=lambda name, version: None
    )

    # Then the day counts all 420 payments it served, and March 1st's are another day's
    assert entry.day == "2026-03-02" and entry.figures()["captured"] == 420
    assert counts["other_days"] == 200
    # And of March 1st's objects it asks only for those written late in the day: one written
    # before March 2nd began holds no payment served on March 2nd
    assert asked == {
        "2026-03-01": day("2026-03-02") - WRITE_MARGIN_US,
        "2026-03-02": 0,
        "2026-03-03": 0,
    }


class _FakeS3:
    """What `s3_reader` calls: a listing with each object's LastModified, and its body."""

    def __init__(self, objects: dict[str, tuple[datetime, bytes]]) -> None:
        self.objects = objects
        self.listed: list[str] = []

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2"
        return self

    def paginate(self, *, Bucket: str, Prefix: str) -> list[dict[str, Any]]:
        self.listed.append(Prefix)
        contents = [
            {"Key": key, "LastModified": modified}
            for key, (modified, _) in sorted(self.objects.items())
            if key.startswith(Prefix)
        ]
        return [{"Contents": contents}]

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key][1])}


def test_the_s3_reader_reads_a_partitions_objects_written_from_the_time_asked() -> None:
    # Given two objects under March 1st, written at 23:50 and at 00:04 the next day
    late = datetime(2026, 3, 2, 0, 4, tzinfo=UTC)
    s3 = _FakeS3(
        {
            "captures/dt=2026-03-01/a.jsonl.gz": (datetime(2026, 3, 1, 23, 50, tzinfo=UTC), b"a"),
            "captures/dt=2026-03-01/b.jsonl.gz": (late, b"b"),
        }
    )
    read = s3_reader(s3, "s3://bucket/captures/")
    # When the partition is read whole, and from March 2nd on
    whole = list(read("2026-03-01", 0))
    from_midnight = list(read("2026-03-01", day("2026-03-02")))
    # Then the first gives both objects, the second only the one written since
    assert [body for _, body in whole] == [b"a", b"b"]
    assert from_midnight == [("s3://bucket/captures/dt=2026-03-01/b.jsonl.gz", b"b")]
    assert s3.listed == ["captures/dt=2026-03-01/"] * 2
