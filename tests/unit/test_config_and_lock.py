"""cdk.json environments and models.lock.json: what users edit and what promote writes."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from sds.config import (
    ConfigError,
    Gates,
    LambdaSettings,
    MonitorSettings,
    TrainingSettings,
    load_project,
    parse_project,
)
from sds.kernel.lock import LockFileError, Pin, read_lock, write_pin

ROOT = Path(__file__).resolve().parents[2]
SHA_A = "a" * 64
SHA_B = "b" * 64


def test_the_repository_config_defines_the_promotion_chain() -> None:
    project = load_project(ROOT / "cdk.json")
    assert list(project.environments) == ["dev", "staging", "prod"]
    assert project.first_environment == "dev"
    assert project.env("prod").promote_from == "staging"
    assert project.env("prod").gates.require_live_in == "staging"
    # Versions of every environment are allocated where the chain starts, and only dev does it
    assert {e.name: e.chain_start for e in project.environments.values()} == {
        "dev": "dev",
        "staging": "dev",
        "prod": "dev",
    }
    assert [e.name for e in project.environments.values() if e.allocates_versions] == ["dev"]


def test_each_chain_starts_where_nothing_is_promoted_into() -> None:
    # Given two chains: dev -> staging -> prod, and lab -> demo
    context = {
        "environments": {
            "dev": {},
            "staging": {"promote_from": "dev"},
            "demo": {"promote_from": "lab"},
            "prod": {"promote_from": "staging"},
            "lab": {},
        }
    }
    # When it is loaded, Then each environment knows its own chain's start, in cdk.json's order
    project = parse_project(context)
    assert list(project.environments) == ["dev", "staging", "demo", "prod", "lab"]
    starts = {e.name: e.chain_start for e in project.environments.values()}
    assert starts == {"dev": "dev", "staging": "dev", "demo": "lab", "prod": "dev", "lab": "lab"}


def test_a_schedule_above_the_chain_start_is_refused_naming_where_it_belongs() -> None:
    # Given cdk.json as it was: prod trains on a weekly schedule
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    del context["environments"]["dev"]["infra"]["training"]
    context["environments"]["prod"]["infra"]["training"] = {"schedule": "cron(0 3 ? * MON *)"}
    # When it is loaded, Then it is refused: scheduled versions would be allocated in prod
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value) == (
        "environments.prod.infra.training.schedule: scheduled training registers new versions, "
        "and versions are allocated only where the promotion chain starts (dev); prod receives "
        "them by promotion. Move the schedule to environments.dev.infra.training.schedule, or "
        "retrain prod from what it serves (infra.training.source: capture), which registers in dev"
    )


def test_a_schedule_above_the_chain_start_may_retrain_from_what_it_serves() -> None:
    # Given prod retraining weekly from its own captures
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context["environments"]["prod"]["infra"]["training"] = {
        "schedule": "cron(0 3 ? * MON *)",
        "source": "capture",
    }
    # When it is loaded, Then it is accepted: its task registers candidates in dev
    prod = parse_project(context).env("prod")
    assert prod.infra.training.schedule == "cron(0 3 ? * MON *)"
    assert prod.chain_start == "dev" and not prod.allocates_versions


@pytest.mark.parametrize(
    ("placement", "trains"),
    [
        ({}, True),
        ({"region": "us-east-1"}, True),
        ({"region": "eu-west-1"}, False),
        ({"account": "111122223333"}, False),
    ],
)
def test_an_environment_away_from_its_chain_start_has_no_training(
    placement: dict[str, str], trains: bool
) -> None:
    # Given prod placed relative to dev (us-east-1, no account set)
    context = {"environments": {"dev": {}, "prod": {"promote_from": "dev", "infra": placement}}}
    # When it is loaded, Then it has a training task only in dev's account and region
    project = parse_project(context)
    assert project.env("prod").has_training is trains
    assert project.env("dev").has_training is True


def test_training_settings_away_from_the_chain_start_are_refused() -> None:
    # Given prod in another region than dev, with training settings of its own
    prod = {"promote_from": "dev", "infra": {"region": "eu-west-1", "training": {"cpu": 4096}}}
    # When it is loaded, Then the setting is refused, not silently ignored
    with pytest.raises(ConfigError) as error:
        parse_project({"environments": {"dev": {}, "prod": prod}})
    assert str(error.value).startswith(
        "environments.prod.infra.training: prod is in another account or region than dev, "
        "where its versions are allocated, so it has no training task"
    )


def test_a_customer_managed_key_where_other_environments_register_is_refused() -> None:
    # Given cdk.json with dev's registry (where staging's and prod's tasks register) on a KMS key
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context["environments"]["dev"]["infra"]["registry"] = {"kms": True}
    # When it is loaded, Then it is refused, naming the setting: no stack of staging is granted
    # dev's key, so staging's registrations would fail
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value).startswith(
        "environments.dev.infra.registry.kms: is true, but staging's training task registers its "
        "versions in dev's registry"
    )
    assert "Set it to false for dev" in str(error.value)
    # And a chain start whose environments above it train elsewhere (no task) may have a key
    context["environments"]["staging"]["infra"]["region"] = "eu-west-1"
    context["environments"]["prod"]["infra"]["region"] = "eu-west-1"
    assert parse_project(context).env("dev").infra.registry.kms is True


def test_a_fourth_environment_is_config_only() -> None:
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    context["environments"]["qa"] = {"promote_from": "dev", "gates": {"min_roc_auc": 0.7}}
    project = parse_project(context)
    assert project.env("qa").gates.min_roc_auc == 0.7


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gates": {"min_roc_auc": "high"}}, "environments.dev.gates.min_roc_auc: expected float"),
        ({"gates": {"min_auc": 0.8}}, "environments.dev.gates: unknown key min_auc; known: "),
        (
            {"gates": {"min_auc": 0.8, "max_auc": 1}},
            "environments.dev.gates: unknown keys max_auc, min_auc; known: ",
        ),
        ({"gates": {"min_roc_auc": 5}}, "environments.dev.gates.min_roc_auc: must be from 0 to 1"),
        (
            {"gates": {"max_calibration_error": -0.1}},
            "environments.dev.gates.max_calibration_error: must be from 0 to 1",
        ),
        (
            {"shadow": {"gates": {"min_pr_auc": 1.5}}},
            "environments.dev.shadow.gates.min_pr_auc: must be from 0 to 1",
        ),
        (
            {"gates": {"min_precision_at_alert_rate": True}},
            "environments.dev.gates.min_precision_at_alert_rate: expected float, got a boolean",
        ),
        (
            {"gates": {"must_beat_live": {"metric": "pr_auc", "margin": 1}}},
            "environments.dev.gates.must_beat_live.margin: must be >= 0 and below 1",
        ),
        (
            {"gates": {"shadowed_in": {"env": "dev", "margin": -0.01}}},
            "environments.dev.gates.shadowed_in.margin: must be >= 0 and below 1",
        ),
        (
            {"shadow": {"gates": {"require_live_in": "qa"}}},
            "environments.dev.shadow.gates.require_live_in: unknown environment 'qa'",
        ),
        ({"promote_from": "nowhere"}, "environments.dev.promote_from: unknown environment"),
        ({"serving": {"max_events": 0}}, "environments.dev.serving.max_events: must be >= 1"),
        (
            {"serving": {"max_body_bytes": 100}},
            "environments.dev.serving.max_body_bytes: must be >= 1024",
        ),
        ({"serving": {"max_events": True}}, "expected int, got a boolean"),
        (
            # An account id written as a JSON number (which would also drop a leading zero)
            {"infra": {"account": 111111111111}},
            "environments.dev.infra.account: expected a string, got the number 111111111111; "
            'write it in quotes: "111111111111"',
        ),
        (
            {"infra": {"region": 1.5}},
            "environments.dev.infra.region: expected a string, got the number 1.5; write it in "
            'quotes: "1.5"',
        ),
        (
            {"colour": "red"},
            "environments.dev: unknown key colour; known: promote_from, gates, serving, infra, "
            "capture, labels, monitor, shadow",
        ),
        (
            {"colour": "red", "size": 2},
            "environments.dev: unknown keys colour, size; known: promote_from, gates, serving, ",
        ),
        (
            {"infra": {"batch": {"max_concurrency": 0}}},
            "environments.dev.infra.batch.max_concurrency: must be between 1 and 10000",
        ),
        (
            {"infra": {"batch": {"tolerated_failure_percent": 101}}},
            "tolerated_failure_percent: must be between 0 and 100",
        ),
        (
            {"infra": {"batch": {"output_prefix": "training-data/scores/"}}},
            "overlaps training.data_prefix 'training-data/': training would read batch results",
        ),
        (
            {"infra": {"training": {"negative_rate": 0}}},
            "environments.dev.infra.training.negative_rate: must be between 0.001 and 1",
        ),
        (
            {"infra": {"training": {"ephemeral_storage_gib": 201}}},
            "environments.dev.infra.training.ephemeral_storage_gib: must be between 20",
        ),
        (
            {"infra": {"training": {"source": "capture", "negative_rate": 0.1}}},
            "environments.dev.infra.training.negative_rate: applies to training from history only",
        ),
        (
            {"monitor": {"min_daily_payments": 0}},
            "environments.dev.monitor.min_daily_payments: must be a whole number >= 1, or null "
            "(no volume alarm)",
        ),
        (
            {"monitor": {"min_daily_payments": -5}},
            "environments.dev.monitor.min_daily_payments: must be a whole number >= 1",
        ),
        (
            {"monitor": {"min_daily_payments": 99.5}},
            "environments.dev.monitor.min_daily_payments: expected int, got float",
        ),
        (
            {"monitor": {"min_daily_payments": "1000"}},
            "environments.dev.monitor.min_daily_payments: expected int, got str",
        ),
        (
            {"monitor": {"min_daily_payments": True}},
            "environments.dev.monitor.min_daily_payments: expected int, got a boolean",
        ),
        (
            # Nothing would publish the figure it compares: the alarm could never judge a day.
            {"monitor": {"min_daily_payments": 1000, "schedule": None}},
            "environments.dev.monitor.min_daily_payments: needs monitor.schedule (the scheduled "
            "monitor publishes the daily payments it compares); set a schedule, or leave "
            "min_daily_payments out",
        ),
        (
            # Nothing captured: every day would count 0 payments and raise the alarm.
            {"monitor": {"min_daily_payments": 1000}, "capture": {"sample_rate": 0}},
            "environments.dev.monitor.min_daily_payments: is 1000, but capture.sample_rate is 0: "
            "the monitor counts payments from their captures",
        ),
    ],
)
def test_invalid_settings_name_the_key(change: dict[str, object], message: str) -> None:
    context = {"environments": {"dev": change, "prod": {"promote_from": "dev"}}}
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert message in str(error.value)


def test_an_infra_block_from_an_earlier_release_names_the_new_place_of_each_key(
    tmp_path: Path,
) -> None:
    # Given a cdk.json written for an earlier release: infra settings flat, not grouped
    cdk_json = tmp_path / "cdk.json"
    environments = {
        "dev": {"infra": {"region": "us-east-1", "memory_mb": 512, "isolated_network": False}}
    }
    cdk_json.write_text(json.dumps({"context": {"environments": environments}}))
    # When any command loads it
    with pytest.raises(ConfigError) as error:
        load_project(cdk_json)
    # Then the error names the file and says where each old key lives now, not just "unknown key"
    assert str(error.value).startswith(
        f"{cdk_json}: environments.dev.infra.memory_mb has moved to environments.dev.infra.lambda.memory_mb; "
        "environments.dev.infra.isolated_network has moved to "
        "environments.dev.infra.network.isolated"
    )
    assert "docs/infrastructure.md" in str(error.value)


def test_gates_at_the_ends_of_their_range_are_accepted() -> None:
    # A bound of 0 or 1 is strict but meetable: the range check must not refuse it.
    gates = {"min_roc_auc": 1, "min_pr_auc": 0, "max_calibration_error": 0}
    project = parse_project({"environments": {"dev": {"gates": gates, "shadow": {"gates": gates}}}})
    assert project.env("dev").gates.min_roc_auc == 1
    assert project.env("dev").shadow.gates.max_calibration_error == 0


def test_the_volume_alarms_threshold_is_off_by_default_and_any_whole_number_from_1() -> None:
    # Given an environment without the setting, one with it null, and ones with 1 and a million
    def monitor(settings: dict[str, object]) -> MonitorSettings:
        return parse_project({"environments": {"dev": {"monitor": settings}}}).env("dev").monitor

    # Then the default is no volume alarm, null says the same, and each number is taken as given
    assert monitor({}).min_daily_payments is None
    assert monitor({"min_daily_payments": None}).min_daily_payments is None
    assert monitor({"min_daily_payments": 1}).min_daily_payments == 1
    assert monitor({"min_daily_payments": 1_000_000}).min_daily_payments == 1_000_000
    # And a sampled capture is enough: the monitor weighs each record by its sample rate
    project = parse_project(
        {
            "environments": {
                "dev": {"monitor": {"min_daily_payments": 50}, "capture": {"sample_rate": 0.01}}
            }
        }
    )
    assert project.env("dev").monitor.min_daily_payments == 50


def test_settings_groups_name_the_key_when_built_in_code() -> None:
    with pytest.raises(ValueError, match="memory_mb must be between 128 and 10240"):
        LambdaSettings(memory_mb=64)
    with pytest.raises(ValueError, match="schedule must be an EventBridge"):
        TrainingSettings(schedule="weekly")
    with pytest.raises(ValueError, match="min_roc_auc must be from 0 to 1"):
        Gates(min_roc_auc=5)
    with pytest.raises(ValueError, match="min_daily_payments must be a whole number >= 1"):
        MonitorSettings(min_daily_payments=0)


def test_promotion_cycles_and_missing_start_are_rejected() -> None:
    with pytest.raises(ConfigError, match="cycle"):
        parse_project({"environments": {"a": {"promote_from": "b"}, "b": {"promote_from": "a"}}})


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown environment 'qa' \(known: dev, staging, prod\)"
    ):
        load_project(ROOT / "cdk.json").env("qa")


def test_pins_round_trip_and_leave_other_environments_alone(tmp_path: Path) -> None:
    lock = tmp_path / "models.lock.json"
    write_pin(lock, model="fraud", env="prod", pin=Pin(3, SHA_A))
    write_pin(lock, model="fraud", env="dev", pin=Pin(5, SHA_B))
    write_pin(lock, model="fraud", env="dev", pin=Pin(6, SHA_A))
    assert read_lock(lock, model="fraud").pins == {"prod": Pin(3, SHA_A), "dev": Pin(6, SHA_A)}
    document = json.loads(lock.read_text())
    assert list(document["environments"]) == ["dev", "prod"]  # sorted: stable diffs in review
    write_pin(lock, model="fraud", env="dev", pin=None)
    assert set(read_lock(lock, model="fraud").pins) == {"prod"}


def test_a_pin_carries_its_versions_expected_alert_rate_and_is_the_same_pin_without_it(
    tmp_path: Path,
) -> None:
    # Given a pin written with the alert rate its version's manifest expects
    lock = tmp_path / "models.lock.json"
    write_pin(lock, model="fraud", env="prod", pin=Pin(3, SHA_A, expected_alert_rate=0.0125))

    # When the lock is read back
    pin = read_lock(lock, model="fraud").pins["prod"]

    # Then the rate is there, in the file a reviewer reads too
    assert pin.expected_alert_rate == 0.0125
    assert json.loads(lock.read_text())["environments"]["prod"] == {
        "version": 3,
        "sha256": SHA_A,
        "expected_alert_rate": 0.0125,
    }
    # And it is the same pin as the model a Lambda's environment names (which has no rate)
    assert pin == Pin(3, SHA_A)


def test_a_pin_written_before_alert_rates_reads_as_unknown_and_is_rewritten_when_one_is_known(
    tmp_path: Path,
) -> None:
    # Given a lock file from before pins carried a rate
    lock = tmp_path / "models.lock.json"
    lock.write_text(
        json.dumps({"model": "fraud", "environments": {"prod": {"version": 3, "sha256": SHA_A}}})
    )
    assert read_lock(lock, model="fraud").pins["prod"].expected_alert_rate is None

    # When the same pin is synced with its rate (a promotion re-run)
    write_pin(lock, model="fraud", env="prod", pin=Pin(3, SHA_A, expected_alert_rate=0.01))

    # Then the file gains it
    assert read_lock(lock, model="fraud").pins["prod"].expected_alert_rate == 0.01


def test_concurrent_pin_writes_for_different_environments_lose_nothing(tmp_path: Path) -> None:
    lock = tmp_path / "models.lock.json"
    envs = [f"env{i}" for i in range(12)]
    threads = [
        threading.Thread(
            target=write_pin,
            kwargs={"path": lock, "model": "fraud", "env": e, "pin": Pin(i + 1, SHA_A)},
        )
        for i, e in enumerate(envs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(read_lock(lock, model="fraud").pins) == set(envs)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON"),
        (
            '{"environments": {"dev": {"version": 0, "sha256": "' + SHA_A + '"}}}',
            "positive integer",
        ),
        ('{"environments": {"dev": {"version": 2, "sha256": "xyz"}}}', "64 lowercase hex"),
        (
            '{"environments": {"dev": {"version": 2, "sha256": "' + SHA_A + '", '
            '"expected_alert_rate": 2}}}',
            r"environments.dev: pin expected_alert_rate must be a number in \(0, 1\], got 2",
        ),
        ('{"model": "other", "environments": {}}', "pins model 'other'"),
    ],
)
def test_malformed_lock_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    lock = tmp_path / "models.lock.json"
    lock.write_text(text)
    with pytest.raises(LockFileError, match=message):
        read_lock(lock, model="fraud")


def test_a_missing_lock_file_means_no_pins(tmp_path: Path) -> None:
    assert read_lock(tmp_path / "models.lock.json", model="fraud").pins == {}


def test_every_discovery_parameter_is_documented_with_its_stack() -> None:
    # Given the sentence of docs/infrastructure.md that lists what the tools find in SSM
    from sds.kernel.discovery import PARAMETERS

    text = (ROOT / "docs" / "infrastructure.md").read_text()
    sentence = text.split("SSM parameters under `/sds/<env>/`", 1)[1].split("\n\n", 1)[0]
    # Then it names every key of the contract, no other key, each in its stack's group
    groups = {
        stack: re.findall(r"`([a-z-]+)`", group)
        for group, stack in re.findall(r"([^;]*?)\((\w+)\)[;.]", sentence)
    }
    documented = {key: stack for stack, keys in groups.items() for key in keys}
    assert documented == dict(PARAMETERS)


@pytest.mark.parametrize(
    ("key", "meant"),
    [("model_nme", "model_name"), ("Model_Name", "model_name"), ("environment", "environments")],
)
def test_a_project_key_spelled_nearly_right_is_refused_not_ignored(key: str, meant: str) -> None:
    # Given a context whose model_name or environments is misspelled (the other one present)
    context: dict[str, object] = {"model_name": "fraud", "environments": {"dev": {}}}
    del context[meant]
    context[key] = {"dev": {}} if meant == "environments" else "payments"

    # Then the project is refused, naming the key and the one meant, instead of the misspelled
    # one being ignored (a model_name left at its default deploys under another name)
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value).startswith(f"{key}: not a key of this project; did you mean {meant}?")


def test_cdk_s_own_context_keys_are_left_alone() -> None:
    # CDK's feature flags and a user's own `cdk -c` values sit beside the project's keys
    context = {
        "model_name": "fraud",
        "environments": {"dev": {}},
        "@aws-cdk/core:checkSecretUsage": True,
        "acknowledged-issue-numbers": [1],
        "sds:lock_file": "proposed.lock.json",
        "team": "risk",
    }
    assert parse_project(context).model_name == "fraud"
