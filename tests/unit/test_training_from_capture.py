"""Training from what was served: captures joined with labels, the maturity policy, the
out-of-time holdout, the comparison with the served model, and `sds label`.

Given capture records written by the contract's own writer into day partitions (as `sds serve`
and Firehose lay them out) and label events next to them, each test reads them back through the
training code and checks what a user relies on: which payments count and why the others do not
(every exclusion counted), which label decides, that the model trains on the vectors exactly as
scored, and that the manifest records the window, the counts and both models' metrics on the
same held-out payments.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from sds.kernel import online
from sds.kernel.aggregates import SECOND
from sds.kernel.behaviour import expected_alert_rate
from sds.kernel.errors import UsageError
from sds.kernel.features import format_time
from sds.kernel.online import now_micros
from sds.kernel.registry import open_registry
from sds.kernel.serving import LoadedModel
from sds.ops.capture_store import LabelFiles
from sds.ops.labels import ingest_labels
from sds.ops.workspace import Workspace
from tests.unit.cli_run import sds
from tests.unit.served_traffic import (
    DAY_US,
    JAN_1,
    chargebacks,
    label,
    traffic,
    write_captures,
    write_labels,
)
from training import train as train_module
from training.capture_data import Window, read_served
from training.capture_data import read_labels as capture_labels
from training.data import DataError
from training.from_capture import make_window, train_from_capture
from training.params import TrainParams

ROOT = Path(__file__).resolve().parents[2]
PARAMS = TrainParams(max_iter=30, seed=1)


def window(
    *, since_day: int = 0, until_day: int = 40, as_of_day: int = 60, unlabelled: str = "legitimate"
) -> Window:
    return Window(
        since_us=JAN_1 + since_day * DAY_US,
        until_us=JAN_1 + until_day * DAY_US,
        as_of_us=JAN_1 + as_of_day * DAY_US,
        maturity_days=30,
        unlabelled=unlabelled,
    )


def test_the_join_keeps_matured_labelled_payments_once_and_counts_every_exclusion(
    tmp_path: Path,
) -> None:
    # Given dev's captures: five ordinary payments in January, and one of each kind left out
    captures, labels = tmp_path / "capture", tmp_path / "labels"
    base = traffic(days=1, per_day=5, start_us=JAN_1 + 5 * DAY_US, served="weak")
    write_captures(captures, base)
    (young,) = traffic(days=1, per_day=1, start_us=JAN_1 + 35 * DAY_US, prefix="young")
    (early,) = traffic(days=1, per_day=1, start_us=JAN_1 - DAY_US, prefix="early")
    (other,) = traffic(days=1, per_day=1, start_us=JAN_1 + 6 * DAY_US, prefix="staging")
    (blind,) = traffic(days=1, per_day=1, start_us=JAN_1 + 6 * DAY_US, prefix="blind")
    write_captures(captures, [young, early])
    write_captures(captures, [other], env="staging")
    write_captures(captures, [blind], online_features=False)
    # a retried request: the same payment scored twice, by version 1 and then by version 2
    write_captures(captures, base[:1], version=2, sha256="b" * 64, served_after_us=900_000)
    # and labels: a chargeback, a review corrected later by a chargeback, one after as_of,
    # one the review says is legitimate, and a line a producer got wrong
    as_of = JAN_1 + 60 * DAY_US
    write_labels(
        labels,
        [
            label(base[0].event_id, True, JAN_1 + 10 * DAY_US),
            label(base[1].event_id, False, JAN_1 + 7 * DAY_US, source="review"),
            label(base[1].event_id, True, JAN_1 + 20 * DAY_US),
            label(base[2].event_id, False, JAN_1 + 8 * DAY_US, source="review"),
            label(base[3].event_id, True, as_of + DAY_US),  # not known yet at as_of
            {"type": "label", "event_id": "x", "is_fraud": "maybe"},
        ],
        day_us=JAN_1 + 10 * DAY_US,
    )
    # When dev's served traffic of January is read as of day 60 (30 days' maturity)
    served = read_served(str(captures), str(labels), env="dev", window=window())
    # Then the five payments count, each once, in time order, with the first served record
    assert served.event_ids == [p.event_id for p in base]
    assert served.versions.tolist() == [1, 1, 1, 1, 1]
    assert served.scores.tolist() == pytest.approx([p.score for p in base])
    # their features exactly as scored
    assert served.features.tobytes() == np.stack([p.features for p in base]).tobytes()
    # the latest label known at as_of decides; a matured payment without one is legitimate
    assert served.labels.tolist() == [True, True, False, False, False]
    counts = served.counts
    assert counts["labelled_fraud"] == 2 and counts["labelled_legitimate"] == 1
    assert counts["unlabelled_as_legitimate"] == 2
    # and each payment left out is counted where a user looks for it
    assert counts["young"] == 1 and counts["outside_window"] == 1
    assert counts["other_env"] == 1 and counts["without_online_features"] == 1
    assert counts["duplicates"] == 1 and counts["records"] == 10 and counts["used"] == 5
    assert counts["labels_invalid"] == 1 and counts["labels_after_as_of"] == 1

    # When the policy leaves unlabelled payments out instead
    strict = read_served(str(captures), str(labels), env="dev", window=window(unlabelled="exclude"))
    # Then only the labelled ones count
    assert strict.event_ids == [p.event_id for p in base[:3]]
    assert strict.counts["unlabelled_excluded"] == 2


def test_maturity_is_measured_at_as_of_and_a_later_as_of_lets_more_in(tmp_path: Path) -> None:
    # Given a payment a day for 40 days
    payments = traffic(days=40, per_day=1)
    write_captures(tmp_path / "capture", payments)
    read = lambda as_of_day: read_served(  # noqa: E731
        str(tmp_path / "capture"),
        str(tmp_path / "labels"),
        env="dev",
        window=window(as_of_day=as_of_day),
    )
    # When read as of day 50, Then only the first 20 days are 30 days old
    assert len(read(50)) == 20 and read(50).counts["young"] == 20
    # and as of day 70 all 40 are
    assert len(read(70)) == 40


def test_a_malformed_capture_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    captures = tmp_path / "capture"
    write_captures(captures, traffic(days=1, per_day=3, start_us=JAN_1 + DAY_US))
    (file,) = captures.rglob("*.jsonl")
    lines = file.read_text().splitlines()
    record = json.loads(lines[1])
    record["schema_version"] = 9
    file.write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    with pytest.raises(DataError) as error:
        read_served(str(captures), str(tmp_path / "labels"), env="dev", window=window())
    assert f"{file}:2: schema_version 9" in str(error.value)


def test_a_capture_file_cut_short_mid_write_is_read_up_to_its_last_whole_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a capture file whose writer crashed in the middle of its last record (sds serve
    # killed mid-write: no newline after it)
    captures = tmp_path / "capture"
    payments = traffic(days=1, per_day=3, start_us=JAN_1 + DAY_US)
    write_captures(captures, payments)
    (file,) = captures.rglob("*.jsonl")
    file.write_bytes(file.read_bytes()[:-100])
    # When training reads dev's served traffic
    with caplog.at_level(logging.WARNING, logger="sds.capture"):
        served = read_served(str(captures), str(tmp_path / "labels"), env="dev", window=window())
    # Then the whole records count, and a warning names the file and the line skipped
    assert served.event_ids == [p.event_id for p in payments[:2]]
    assert any(f"{file}: the last line (3) is incomplete" in m for m in caplog.messages)


def test_nothing_usable_says_why(tmp_path: Path) -> None:
    # Given only payments younger than the maturity window
    write_captures(tmp_path / "c", traffic(days=2, per_day=3, start_us=JAN_1 + 35 * DAY_US))
    with pytest.raises(DataError) as error:
        read_served(str(tmp_path / "c"), str(tmp_path / "l"), env="dev", window=window())
    assert "none of dev's 6 capture records can be trained on" in str(error.value)
    assert "young 6" in str(error.value)
    # And it names the window they missed and how to choose another
    assert str(error.value).endswith(
        "; the window takes payments from 2026-01-01T00:00:00.000000Z to 2026-02-10T00:00:00.000000Z "
        "that matured before 2026-01-31T00:00:00.000000Z (by the payment's time: choose it with --since, "
        "--until and --as-of)"
    )
    # And no captures at all names how to get some
    with pytest.raises(DataError, match="sds serve --env dev"):
        read_served(str(tmp_path / "none"), str(tmp_path / "l"), env="dev", window=window())


def test_no_capture_records_names_the_window_asked_for_and_the_folders_read(
    tmp_path: Path,
) -> None:
    # Given an environment that captured nothing
    # When training reads a window given by dates, and one whose --until defaulted to now
    now = JAN_1 + 100 * DAY_US + 12 * 3600 * 1_000_000
    defaulted = make_window(
        since="2026-03-01",
        until=None,
        as_of=None,
        window_days=90,
        maturity_days=30,
        unlabelled="legitimate",
        now_us=now,
    )
    errors = []
    for asked in (window(since_day=0, until_day=40), defaulted):
        with pytest.raises(DataError) as error:
            read_served(str(tmp_path / "none"), str(tmp_path / "l"), env="dev", window=asked)
        errors.append(str(error.value))

    # Then each error names the window as asked for (a date for a bound at midnight UTC), not
    # the day folders read (from the day before, for payments scored just after midnight), which
    # it names as such, and how to get captures
    assert errors[0] == (
        f"{tmp_path / 'none'}: no capture records of payments made from 2026-01-01 to "
        "2026-02-10 (the day folders from 2025-12-31 on are empty or missing): serve dev with "
        "capture on (sds serve --env dev); on AWS the function's captures reach S3 within minutes"
    )
    assert "payments made from 2026-03-01 to 2026-04-11T12:00:00.000000Z (" in errors[1], errors[1]
    assert "(the day folders from 2026-02-28 on are empty or missing)" in errors[1]


def test_a_window_given_by_dates_and_defaults() -> None:
    now = JAN_1 + 100 * DAY_US
    w = make_window(
        since=None,
        until=None,
        as_of=None,
        window_days=90,
        maturity_days=30,
        unlabelled="legitimate",
        now_us=now,
    )
    assert (w.since_us, w.until_us, w.as_of_us) == (now - 90 * DAY_US, now, now)
    assert w.matured_before == now - 30 * DAY_US
    dated = make_window(
        since="2026-01-01",
        until="2026-02-01",
        as_of="2026-03-15T12:00:00Z",
        window_days=90,
        maturity_days=30,
        unlabelled="exclude",
        now_us=now,
    )
    assert format_time(dated.since_us) == "2026-01-01T00:00:00.000000Z"
    assert dated.matured_before == dated.until_us  # all of January is 30 days old by mid-March
    with pytest.raises(DataError, match="expected a date"):
        make_window(
            since="last week",
            until=None,
            as_of=None,
            window_days=90,
            maturity_days=30,
            unlabelled="legitimate",
            now_us=now,
        )
    with pytest.raises(DataError, match="the window is empty"):
        make_window(
            since="2026-02-01",
            until="2026-01-01",
            as_of=None,
            window_days=90,
            maturity_days=30,
            unlabelled="legitimate",
            now_us=now,
        )


def test_training_from_capture_registers_a_candidate_compared_with_what_served(
    tmp_path: Path,
) -> None:
    # Given 40 days of dev traffic served by a weak version 1, and its chargebacks
    payments = traffic(days=40, per_day=40, served="weak")
    captures, labels = tmp_path / "capture", tmp_path / "labels"
    write_captures(captures, payments)
    write_labels(labels, chargebacks(payments), day_us=JAN_1 + 45 * DAY_US)
    registry = open_registry((tmp_path / "registry").as_uri(), "fraud")
    # When a model is trained from it as of day 60 with a 7-day holdout
    version = train_from_capture(
        captures=str(captures),
        labels=str(labels),
        env="dev",
        window=window(),
        holdout_days=7,
        registry=registry,
        params=PARAMS,
        actor="tester",
        reason="retrain on served traffic",
    )
    manifest = version.manifest
    data = manifest["data"]
    # Then it is registered (a candidate: no alias moved) with the source, window and counts
    assert version.number == 1 and registry.get_alias("dev") is None
    assert data["source"] == "capture" and data["env"] == "dev"
    assert data["since"] == "2026-01-01T00:00:00.000000Z"
    assert data["matured_before"] == "2026-01-31T00:00:00.000000Z"
    assert data["maturity_days"] == 30 and data["unlabelled"] == "legitimate"
    matured = [p for p in payments if p.occurred_us < JAN_1 + 30 * DAY_US]
    assert data["payments"] == len(matured) == 30 * 40
    assert data["counts"]["young"] == 10 * 40
    assert data["counts"]["labelled_fraud"] == sum(p.is_fraud for p in matured)
    # the holdout is the last 7 matured days, out of time
    assert data["holdout_from"] == "2026-01-24T00:00:00.000000Z"
    assert data["holdout_events"] == 7 * 40 and data["train_events"] == 23 * 40
    # And its params are what shaped the model: not a history's holdout share or sampling,
    # which this training does not use (it holds out days and keeps every captured payment)
    assert manifest["params"] == {
        "max_iter": 30,
        "learning_rate": 0.1,
        "max_leaf_nodes": 31,
        "max_depth": None,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        "alert_rate": 0.01,
        "seed": 1,
    }
    # And the comparison holds both models' metrics on the same held-out payments
    (served,) = manifest["comparison"]["served"]
    assert (served["version"], served["sha256"], served["events"]) == (1, "a" * 64, 7 * 40)
    assert served["fraud"] == sum(p.is_fraud for p in matured[-7 * 40 :])
    assert served["candidate"]["roc_auc"] > 0.85 > served["live"]["roc_auc"]
    assert served["candidate"]["pr_auc"] > served["live"]["pr_auc"]
    assert manifest["metrics"]["roc_auc"] == pytest.approx(served["candidate"]["roc_auc"])
    # And, as `sds train` records it, what it flags as served: its threshold one of its own
    # served scores, so the deployment's alert-rate alarms expect what it will do
    behaviour = manifest["behaviour"]
    holdout = np.asarray([p.features for p in matured[-7 * 40 :]], dtype=np.float32)
    scores = LoadedModel(registry.read_artifact(1), manifest).score_matrix(holdout)
    assert manifest["decision_threshold"] in scores
    flagged = sum(score >= manifest["decision_threshold"] for score in scores)
    assert (behaviour["flagged"], behaviour["holdout_events"]) == (flagged, 7 * 40)
    assert expected_alert_rate(manifest) == flagged / (7 * 40) > 0


def test_a_holdout_without_fraud_is_refused_with_advice_for_a_holdout_chosen_by_days(
    tmp_path: Path,
) -> None:
    # Given 40 days of dev traffic whose chargebacks cover only the payments before the holdout
    payments = traffic(days=40, per_day=40, served="weak")
    captures, labels = tmp_path / "capture", tmp_path / "labels"
    write_captures(captures, payments)
    early = [p for p in payments if p.occurred_us < JAN_1 + 23 * DAY_US]
    write_labels(labels, chargebacks(early), day_us=JAN_1 + 45 * DAY_US)
    registry = open_registry((tmp_path / "registry").as_uri(), "fraud")
    # When a model is trained from it with a 7-day holdout
    with pytest.raises(DataError) as error:
        train_from_capture(
            captures=str(captures),
            labels=str(labels),
            env="dev",
            window=window(),
            holdout_days=7,
            registry=registry,
            params=PARAMS,
            actor="tester",
        )
    # Then it says the holdout has no fraud and names this trainer's options, not the history
    # trainer's --holdout-fraction (which does not choose this holdout)
    message = str(error.value)
    assert "the holdout (the 280 payments from 2026-01-24T00:00:00.000000Z)" in message
    assert "only legitimate payments" in message and "--holdout-days" in message
    assert "--holdout-fraction" not in message
    # And nothing is registered
    assert registry.list_versions() == []


def test_a_training_part_without_fraud_is_named_as_such_not_as_the_data(tmp_path: Path) -> None:
    # Given 40 days of dev traffic whose chargebacks cover only the holdout's payments
    payments = traffic(days=40, per_day=40, served="weak")
    captures, labels = tmp_path / "capture", tmp_path / "labels"
    write_captures(captures, payments)
    late = [p for p in payments if JAN_1 + 23 * DAY_US <= p.occurred_us < JAN_1 + 30 * DAY_US]
    write_labels(labels, chargebacks(late), day_us=JAN_1 + 45 * DAY_US)
    registry = open_registry((tmp_path / "registry").as_uri(), "fraud")
    # When a model is trained from it with a 7-day holdout
    with pytest.raises(DataError) as error:
        train_from_capture(
            captures=str(captures),
            labels=str(labels),
            env="dev",
            window=window(),
            holdout_days=7,
            registry=registry,
            params=PARAMS,
            actor="tester",
        )
    # Then it says the payments before the holdout hold no fraud (the captures do hold some),
    # with this trainer's options
    message = str(error.value)
    assert "the 920 payments before the holdout (before 2026-01-24T00:00:00.000000Z)" in message
    assert "only legitimate payments" in message and "--since" in message
    assert "--holdout-fraction" not in message
    assert registry.list_versions() == []


def test_the_task_command_trains_from_capture_with_the_flags_the_stack_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given captures of the last 60 days (the task's window ends now) and their chargebacks
    from stacks.components.training_job import capture_training_command

    monkeypatch.setenv("SDS_ACTOR", "task")
    import time

    now = time.time_ns() // 1000
    start = (now - 60 * DAY_US) // DAY_US * DAY_US
    payments = traffic(days=50, per_day=30, start_us=start)
    captures, labels = tmp_path / "bucket" / "captures", tmp_path / "bucket" / "labels"
    write_captures(captures, payments, env="prod")
    write_labels(labels, chargebacks(payments), day_us=start + 40 * DAY_US)
    # When the task runs the command the stack gives it (here with local paths for the buckets)
    from sds.config import LabelSettings, TrainingSettings

    command = capture_training_command(
        bucket_name="registry",
        captures_bucket_name="bucket",
        model_name="fraud",
        environment="prod",
        settings=TrainingSettings(window_days=90, holdout_days=5),
        labels=LabelSettings(maturity_days=20),
    )
    local = [
        arg.replace("s3://registry", (tmp_path / "registry").as_uri()).replace(
            "s3://bucket", str(tmp_path / "bucket")
        )
        for arg in command
    ]
    code = train_module.main([*local, "--max-iter", "20", "--json"])
    # Then it registered a version trained on prod's matured traffic, compared with what served
    assert code == 0, capsys.readouterr().err
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["data"]["source"] == "capture" and manifest["data"]["env"] == "prod"
    assert manifest["data"]["maturity_days"] == 20 and manifest["data"]["holdout_days"] == 5
    assert manifest["params"]["max_iter"] == 20
    assert "negative_rate" not in manifest["params"]
    assert "holdout_fraction" not in manifest["params"]
    assert manifest["comparison"]["served"][0]["version"] == 1
    assert open_registry((tmp_path / "registry").as_uri(), "fraud").list_versions() == [1]


def test_the_task_names_what_is_missing_for_training_from_capture(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert train_module.main(["--from-capture", "--registry", "file:///tmp/r"]) == 2
    assert "--from-capture needs --captures, --labels, --capture-env" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "bound"),
    [
        ("--holdout-days", "0", "1 or more"),
        ("--window-days", "0", "1 or more"),
        ("--maturity-days", "-1", "0 or more"),
    ],
)
def test_the_tasks_day_counts_out_of_range_are_usage_errors_before_the_captures_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, bound: str
) -> None:
    # Given a task command line whose captures are not there (reading them would fail, exit 1)
    argv = ["--from-capture", "--captures", str(tmp_path / "captures"), "--labels"]
    argv += [str(tmp_path / "labels"), "--capture-env", "dev", "--registry", "file:///tmp/r"]
    # When a count of days is out of its range
    code = train_module.main([*argv, option, value])
    # Then the parser refuses it (exit 2), naming the option and its range
    assert code == 2
    assert capsys.readouterr().err == (
        f"error: argument {option}: '{value}': must be a whole number, {bound}\n"
    )


def test_the_task_refuses_the_parameters_only_a_history_uses_when_it_trains_from_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a task command line training from capture (its captures are not there: reading them
    # would fail, exit 1)
    argv = ["--from-capture", "--captures", str(tmp_path / "captures"), "--labels"]
    argv += [str(tmp_path / "labels"), "--capture-env", "dev", "--registry", "file:///tmp/r"]
    # When it is also given a history's sampling (as a Fargate run could append it)
    code = train_module.main([*argv, "--negative-rate=0.5"])
    # Then it is a usage error naming it (its manifest would record what was not applied)
    assert code == 2
    assert capsys.readouterr().err.startswith(
        "error: --negative-rate: only when training on a history;"
    )


# --- sds label ------------------------------------------------------------------------------------


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    return Workspace.discover(project_dir=tmp_path, environ={"SDS_ACTOR": "tester"})


def test_sds_label_stores_a_file_of_labels_where_training_reads_them(
    ws: Workspace, tmp_path: Path
) -> None:
    # Given a file of chargebacks and review verdicts, one line repeated
    source = tmp_path / "labels.jsonl"
    items = [
        label("evt-1", True, JAN_1),
        label("evt-2", False, JAN_1, source="review"),
        label("evt-1", True, JAN_1),
    ]
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    # When ingested for dev
    result = ingest_labels(ws, "dev", str(source))
    # Then two are stored (the repeat skipped), in a day partition of dev's labels
    assert (result.stored, result.fraud, result.duplicates) == (2, 1, 1)
    stored = Path(result.path)
    assert stored.parent.parent == ws.labels_dir("dev")
    assert stored.parent.name.startswith("dt=")
    assert [json.loads(line)["event_id"] for line in stored.read_text().splitlines()] == [
        "evt-1",
        "evt-2",
    ]


def test_sds_label_stores_nothing_when_a_line_is_wrong_and_names_it(
    ws: Workspace, tmp_path: Path
) -> None:
    source = tmp_path / "labels.jsonl"
    good = json.dumps(label("evt-1", True, JAN_1))
    bad = json.dumps({**label("evt-2", True, JAN_1), "is_fraud": "yes"})
    source.write_text(f"{good}\n{bad}\nnot json\n")
    with pytest.raises(DataError) as error:
        ingest_labels(ws, "dev", str(source))
    message = str(error.value)
    assert message.startswith("2 problems, nothing was stored")
    assert f"{source}:2" in message and f"{source}:3: invalid JSON" in message
    assert not ws.labels_dir("dev").exists() or not list(ws.labels_dir("dev").rglob("*.jsonl"))


def test_sds_label_on_aws_points_at_the_event_bus(ws: Workspace, tmp_path: Path) -> None:
    import dataclasses

    on_aws = dataclasses.replace(ws, target="aws")
    with pytest.raises(UsageError, match="event bus"):
        ingest_labels(on_aws, "prod", str(tmp_path / "labels.jsonl"))


def stored_labels(project: Path) -> list[dict[str, object]]:
    """Every label line stored in dev's local labels, by event id and time (files made in the
    same second have no order)."""
    files = (project / ".sds" / "labels" / "dev").rglob("*.jsonl")
    found = [json.loads(line) for file in files for line in file.read_text().splitlines()]
    return sorted(found, key=lambda label: (label["event_id"], label["labelled_at"]))


def test_sds_label_sent_again_stores_nothing_and_says_the_labels_are_already_there(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two labels stored in dev
    items = [label("evt-1", True, JAN_1), label("evt-2", False, JAN_1, source="review")]
    first = project / "labels.jsonl"
    first.write_text("".join(json.dumps(i) + "\n" for i in items))
    assert sds(capsys, "label", str(first), "--env", "dev").code == 0
    # When the same labels are sent again (written another way: keys reordered, spaced)
    again = project / "again.jsonl"
    resent = (json.dumps(dict(reversed(i.items())), separators=(" , ", " : ")) for i in items)
    again.write_text("".join(line + "\n" for line in resent))
    ended = sds(capsys, "label", str(again), "--env", "dev")
    # Then nothing is stored twice, and they are reported as already there, not as new
    assert ended.code == 0, ended
    assert ended.out == "dev: no new labels (2 already there)\n"
    assert stored_labels(project) == items
    # And the JSON report says so too, without a file
    document = sds(capsys, "label", str(again), "--env", "dev", "--json").json()
    assert (document["stored"], document["already_there"], document["path"]) == (0, 2, None)
    # And training reads each label once
    read = capture_labels(str(project / ".sds" / "labels" / "dev"), first_day="", as_of_us=JAN_1)
    assert read.read == 2


def test_sds_label_stores_only_what_is_new_of_a_file_that_is_partly_stored(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given one label already stored, as `POST /events` on `sds serve` stores it
    LabelFiles(project / ".sds" / "labels" / "dev").store([label("evt-1", True, JAN_1)])
    # When a file holding it, a new one, and the new one again is labelled
    items = [label("evt-1", True, JAN_1), label("evt-2", True, JAN_1), label("evt-2", True, JAN_1)]
    source = project / "labels.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    ended = sds(capsys, "label", str(source), "--env", "dev")
    # Then only the new one is stored, and each of the others is counted for what it is
    assert ended.code == 0, ended
    assert ended.out.startswith(
        "dev: 1 labels stored (1 fraud, 0 legitimate, 1 already there, 1 repeated lines skipped) "
        "in "
    )
    assert [i["event_id"] for i in stored_labels(project)] == ["evt-1", "evt-2"]


def test_sds_label_stores_a_new_label_of_a_labelled_event_beside_the_earlier_one(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a review's verdict on evt-1 stored
    review = label("evt-1", False, JAN_1, source="review")
    LabelFiles(project / ".sds" / "labels" / "dev").store([review])
    # When a chargeback on the same event comes later (same event id, other content)
    chargeback = label("evt-1", True, JAN_1 + DAY_US)
    source = project / "labels.jsonl"
    source.write_text(json.dumps(chargeback) + "\n")
    ended = sds(capsys, "label", str(source), "--env", "dev", "--json")
    # Then it is a new label, stored beside the review: nothing is overwritten
    assert ended.code == 0, ended
    assert (ended.json()["stored"], ended.json()["already_there"]) == (1, 0)
    assert stored_labels(project) == [review, chargeback]
    # And training takes the latest
    labels_dir = str(project / ".sds" / "labels" / "dev")
    read = capture_labels(labels_dir, first_day="", as_of_us=JAN_1 + 2 * DAY_US)
    assert read.by_event == {"evt-1": True}


def test_sds_label_refuses_a_file_with_a_label_dated_ahead_of_the_clock_and_stores_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a file whose second label is dated an hour from now (the first, a minute from now,
    # is within the drift the clocks may have)
    now = now_micros()
    items = [label("evt-1", True, now + 60 * SECOND), label("evt-2", True, now + 3600 * SECOND)]
    source = project / "labels.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    # When it is labelled
    ended = sds(capsys, "label", str(source), "--env", "dev")
    # Then the whole file is refused as `sds ingest` refuses an event ahead of the clock, naming
    # the line, and nothing is stored
    assert ended.code == 1, ended
    assert re.fullmatch(
        rf"sds: error: 1 problem, nothing was stored: {re.escape(str(source))}:2\."
        r"labelled_at: is 3[56][0-9]{2} s ahead of the clock \(more than 300 s\): is the "
        r"producer's clock right\?",
        ended.error_line,
    ), ended.error_line
    assert stored_labels(project) == []


def test_sds_label_judges_the_clock_by_the_rule_events_are_judged_by(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = project / "labels.jsonl"
    # Given the tolerance events have ahead of the clock cut to 10 seconds
    monkeypatch.setattr(online, "FUTURE_TOLERANCE", 10 * SECOND)
    # When a label dated a minute from now is labelled
    source.write_text(json.dumps(label("evt-1", True, now_micros() + 60 * SECOND)) + "\n")
    refused = sds(capsys, "label", str(source), "--env", "dev")
    # Then it is refused by that tolerance
    assert refused.code == 1, refused
    assert re.search(
        r"labelled_at: is (59|60) s ahead of the clock \(more than 10 s\)", refused.error_line
    )
    # And with the tolerance raised to two hours, one dated an hour from now is taken
    monkeypatch.setattr(online, "FUTURE_TOLERANCE", 2 * 3600 * SECOND)
    source.write_text(json.dumps(label("evt-1", True, now_micros() + 3600 * SECOND)) + "\n")
    taken = sds(capsys, "label", str(source), "--env", "dev", "--json")
    assert taken.code == 0, taken
    assert taken.json()["stored"] == 1
