"""`sds status`'s verdicts: every way pin, registry alias and Lambda alias can disagree.

The integration tests read real (moto) Lambda, CodeDeploy and S3 state; these cover the cases
that are awkward to stage there, on the same `disagreements` the command uses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sds.kernel.lock import Pin, read_pin, write_pin
from sds.kernel.registry import AliasState
from sds.kernel.retention import appspec_versions
from sds.ops.promotion import promote
from sds.ops.shadow import ShadowReport, render_report
from sds.ops.status import (
    DEPLOYING,
    EMPTY,
    IN_SYNC,
    LOCK_UNREADABLE,
    NOT_DEPLOYED,
    OTHER_ACCOUNT,
    OUT_OF_SYNC,
    UNREACHABLE,
    Deployment,
    EnvironmentStatus,
    LiveAlias,
    ServedVersion,
    StoredVersion,
    disagreements,
)
from sds.ops.workspace import Workspace
from tests.unit.cli_run import sds

SHA = {n: f"{n:x}" * 64 for n in range(1, 4)}
ROOT = Path(__file__).resolve().parents[2]


def alias(version: int, sha256: str | None = None) -> AliasState:
    return AliasState(
        name="prod",
        version=version,
        sha256=sha256 or SHA[version],
        previous=None,
        history=(version,),
        updated_at="2026-11-26T10:00:00Z",
        updated_by="alice@laptop",
        reason="release",
        event_id="e1",
    )


def live(
    *served: tuple[str, float, int | None, str | None], shadow: Pin | None = None
) -> LiveAlias:
    """`live` over `served` (version, weight, model, sha256); `shadow`: what the first loads."""
    versions = [ServedVersion(v, w, m, s) for v, w, m, s in served]
    versions[0] = ServedVersion(*served[0], shadow=shadow)
    return LiveAlias("fn", "live", versions)


def verdict(status: EnvironmentStatus) -> tuple[str, list[str]]:
    status.warnings = disagreements(status)
    return status.state, status.warnings


def test_given_nothing_anywhere_then_nothing_is_promoted_and_nothing_is_wrong() -> None:
    assert verdict(EnvironmentStatus("prod", "local")) == (EMPTY, [])


def test_given_pin_and_alias_on_the_same_model_then_in_sync() -> None:
    status = EnvironmentStatus("prod", "local", pin=Pin(2, SHA[2]), alias=alias(2))
    assert verdict(status) == (IN_SYNC, [])


def test_given_an_alias_but_no_pin_then_the_deploy_would_ship_no_model() -> None:
    state, (warning,) = verdict(EnvironmentStatus("prod", "local", alias=alias(2)))
    assert state == OUT_OF_SYNC
    assert "no pin for prod" in warning and "sds promote 2 --to prod" in warning


def test_given_a_pin_but_no_alias_then_the_registry_is_questioned() -> None:
    status = EnvironmentStatus("prod", "local", registry_uri="s3://b", pin=Pin(2, SHA[2]))
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC
    assert "has no alias prod (s3://b)" in warning and "right registry" in warning


def test_given_one_version_with_two_checksums_then_deploying_is_discouraged() -> None:
    status = EnvironmentStatus("prod", "local", pin=Pin(2, SHA[3]), alias=alias(2))
    _, (warning,) = verdict(status)
    assert "edited by hand" in warning and "do not deploy" in warning


def test_given_the_lambda_serves_the_pinned_model_then_in_sync() -> None:
    status = EnvironmentStatus(
        "prod", "aws", pin=Pin(2, SHA[2]), alias=alias(2), live=live(("7", 1.0, 2, SHA[2]))
    )
    assert verdict(status) == (IN_SYNC, [])


def test_given_the_lambda_serves_the_right_version_with_other_bytes_then_redeploy() -> None:
    status = EnvironmentStatus(
        "prod", "aws", pin=Pin(2, SHA[2]), alias=alias(2), live=live(("7", 1.0, 2, SHA[3]))
    )
    _, (warning,) = verdict(status)
    assert "replaced after it was deployed" in warning and "cdk deploy 'prod/*'" in warning


def test_given_a_deployment_in_flight_then_the_lambda_may_lag_without_a_warning() -> None:
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(3, SHA[3]),
        alias=alias(3),
        live=live(("7", 0.9, 2, SHA[2]), ("8", 0.1, 3, SHA[3])),
        deployments=[Deployment("d-1", "InProgress", "2026-11-26T10:00:00", "7", "8")],
    )
    assert verdict(status) == (DEPLOYING, [])


def test_given_a_deployment_in_flight_then_a_lock_file_disagreement_is_still_reported() -> None:
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        alias=alias(3),
        live=live(("7", 1.0, 2, SHA[2])),
        deployments=[Deployment("d-1", "InProgress", "2026-11-26T10:00:00", None, None)],
    )
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC and "pins v2 but the registry alias is v3" in warning


def test_given_a_lambda_serving_a_model_nobody_promoted_then_it_is_named() -> None:
    status = EnvironmentStatus("prod", "aws", live=live(("7", 1.0, 2, SHA[2])))
    _, (warning,) = verdict(status)
    assert "serves v2 but nothing is pinned or promoted in prod" in warning


def test_given_an_error_then_the_environment_is_unreachable_and_not_ok() -> None:
    status = EnvironmentStatus("prod", "aws", error="SSM parameter /sds/prod/... not found")
    assert status.state == UNREACHABLE and not status.ok
    assert status.to_dict()["error"].startswith("SSM parameter")


def test_given_a_shadow_pinned_but_not_deployed_then_deploying_it_is_named() -> None:
    # Given v2 pinned and served, and v3 pinned as its shadow after the last deploy
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        shadow=Pin(3, SHA[3]),
        alias=alias(2),
        live=live(("7", 1.0, 2, SHA[2])),
    )
    # Then it is out of sync (--check fails): the shadow scores nothing until deployed
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC and not status.ok
    assert warning.startswith("models.lock.json's shadow v3 is not deployed: fn:live (Lambda")
    assert warning.endswith("deploy it with: cdk deploy 'prod/*'")


def test_given_a_deployed_shadow_the_pin_no_longer_has_then_it_is_named() -> None:
    # Given the shadow cleared in models.lock.json, and the deployed version still loading it
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        alias=alias(2),
        live=live(("7", 1.0, 2, SHA[2]), shadow=Pin(3, SHA[3])),
    )
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC
    assert "loads shadow v3, which models.lock.json no longer pins" in warning
    assert "cdk deploy 'prod/*'" in warning and "sds --aws shadow 3 --env prod" in warning


@pytest.mark.parametrize(
    ("deployed", "expected"),
    [
        (Pin(1, SHA[1]), "loads shadow v1 but models.lock.json's shadow is v3"),
        (Pin(3, SHA[1]), "but models.lock.json says 333333333333...: redeploy"),
    ],
)
def test_given_another_shadow_deployed_than_pinned_then_redeploying_is_named(
    deployed: Pin, expected: str
) -> None:
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        shadow=Pin(3, SHA[3]),
        alias=alias(2),
        live=live(("7", 1.0, 2, SHA[2]), shadow=deployed),
    )
    _, (warning,) = verdict(status)
    assert expected in warning and "cdk deploy 'prod/*'" in warning


def test_given_the_pinned_shadow_deployed_then_in_sync_and_reported() -> None:
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        shadow=Pin(3, SHA[3]),
        alias=alias(2),
        live=live(("7", 1.0, 2, SHA[2]), shadow=Pin(3, SHA[3])),
    )
    assert verdict(status) == (IN_SYNC, [])
    assert status.to_dict()["lambda"]["shadow"] == {"version": 3, "sha256": SHA[3]}


def test_given_a_shadow_deployment_in_flight_then_the_shadow_may_lag() -> None:
    status = EnvironmentStatus(
        "prod",
        "aws",
        pin=Pin(2, SHA[2]),
        shadow=Pin(3, SHA[3]),
        alias=alias(2),
        live=live(("7", 1.0, 2, SHA[2])),
        deployments=[Deployment("d-1", "InProgress", "2026-11-26T10:00:00", "7", "8")],
    )
    assert verdict(status) == (DEPLOYING, [])


@pytest.mark.parametrize(
    ("target", "command"), [("aws", "sds --aws promote 3 --to prod"), ("local", "sds promote 3")]
)
def test_given_a_hint_then_it_runs_against_what_status_read(target: str, command: str) -> None:
    # Given a pin behind the registry alias, read on AWS or locally
    status = EnvironmentStatus("prod", target, pin=Pin(2, SHA[2]), alias=alias(3))
    # Then the command the hint names targets the same place (`--aws` repeated on AWS)
    _, (warning,) = verdict(status)
    assert f"make the pin follow the alias with: {command}" in warning
    one_sha = EnvironmentStatus("prod", target, pin=Pin(2, SHA[3]), alias=alias(2))
    _, (warning,) = verdict(one_sha)
    assert f"`{command.split(' promote')[0]} show 2 --env prod`" in warning


def test_given_an_environment_not_deployed_then_it_says_so_and_only_a_pin_is_wrong() -> None:
    missing = "SSM parameter /sds/prod/registry-bucket not found: is prod deployed here?"
    # Given nothing pinned for an environment not deployed: a fact, not a problem
    quiet = EnvironmentStatus("prod", "aws", not_deployed=missing)
    assert quiet.state == NOT_DEPLOYED and quiet.ok and quiet.read
    assert quiet.to_dict()["not_deployed"] == missing and quiet.to_dict()["error"] is None
    # Given a pin for it: what the lock file expects is not served, --check fails
    pinned = EnvironmentStatus(
        "prod", "aws", pin=Pin(2, SHA[2]), not_deployed=missing, warnings=["pinned"]
    )
    assert pinned.state == NOT_DEPLOYED and not pinned.ok and pinned.read


def test_given_an_environment_in_another_account_then_pin_and_registry_alias_decide() -> None:
    note = "dev is in account 111111111111 (cdk.json) and these credentials are for 2222..."
    # Given pin and registry alias that agree: a fact, nothing to fix from here
    agreed = EnvironmentStatus(
        "dev", "aws", pin=Pin(2, SHA[2]), alias=alias(2, SHA[2]), other_account=note
    )
    agreed.warnings = disagreements(agreed)
    assert agreed.state == OTHER_ACCOUNT and agreed.ok and agreed.read
    assert agreed.to_dict()["other_account"] == note and agreed.to_dict()["not_deployed"] is None
    # Given a pin that is not the registry alias: a warning, --check fails
    drifted = EnvironmentStatus(
        "dev", "aws", pin=Pin(1, SHA[1]), alias=alias(2, SHA[2]), other_account=note
    )
    drifted.warnings = disagreements(drifted)
    assert drifted.warnings and drifted.state == OTHER_ACCOUNT and not drifted.ok


def test_given_a_failure_to_read_then_status_could_not_look() -> None:
    assert not EnvironmentStatus("prod", "aws", error="Unable to locate credentials").read
    assert not EnvironmentStatus("prod", "aws", lock_error="conflict").read
    assert EnvironmentStatus("prod", "aws", lock_error="conflict").state == LOCK_UNREADABLE


def test_given_a_lock_file_that_cannot_be_read_then_status_exits_1_without_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a local project whose models.lock.json is mid-merge
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    monkeypatch.setenv("SDS_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.delenv("SDS_TARGET", raising=False)
    (tmp_path / "models.lock.json").write_text("<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> b\n")

    # When asking for the status (a report, not --check)
    plain, as_json = sds(capsys, "status"), sds(capsys, "status", "--json")

    # Then status could not read the pins it reports: exit 1, the reason in the report and JSON
    assert plain.code == 1 and "pin unreadable" in plain.out
    (error,) = plain.err.splitlines()  # once, not once per environment
    assert error.startswith("sds: error: ") and "models.lock.json" in error
    assert "warning:" not in plain.out
    assert as_json.code == 1 and as_json.json()["read"] is False


def shadow_report(target: str) -> ShadowReport:
    return ShadowReport(
        env="dev",
        since=None,
        until=None,
        as_of="2026-11-30T10:00:00Z",
        matured_before="2026-10-31T10:00:00Z",
        maturity_days=30,
        unlabelled="legitimate",
        records=2000,
        without_shadow=2000,
        pinned_shadow=Pin(3, SHA[3]),
        pairs=[],
        target=target,
    )


def test_given_compare_on_aws_finds_no_shadowed_payment_then_it_says_the_pin_needs_a_deploy() -> (
    None
):
    # (the hint status's check backs: a shadow pinned on AWS scores only once deployed)
    lines = list(render_report(shadow_report("aws")))
    assert lines[-2] == "  no payment was scored by a shadow in this window"
    assert lines[-1] == (
        "  shadow v3 scores only once deployed: sds --aws status --env dev says whether it is "
        "(deploy it with: cdk deploy 'dev/*')"
    )
    # Locally the API follows the pin: no deploy to name
    assert list(render_report(shadow_report("local")))[-1].endswith("in this window")


@pytest.mark.parametrize(("target", "sds_"), [("local", "sds"), ("aws", "sds --aws")])
def test_given_compare_with_no_shadow_pinned_then_it_says_how_to_pin_one(
    target: str, sds_: str
) -> None:
    # Given nothing scored by a shadow, and no shadow pinned in dev
    report = shadow_report(target)
    report = ShadowReport(**{**report.__dict__, "pinned_shadow": None})
    # Then the report ends with what to run to have something to compare
    lines = list(render_report(report))
    assert lines[-2:] == [
        "  no payment was scored by a shadow in this window",
        f"  dev has no shadow: pin one with: {sds_} shadow VERSION --env dev",
    ]


@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        (
            {
                "appSpecContent": {
                    "content": '{"Resources": [{"fn": {"Properties": '
                    '{"CurrentVersion": 7, "TargetVersion": "8"}}}]}'
                }
            },
            ("7", "8"),
        ),
        ({"appSpecContent": {"content": "version: 0.0\nResources: []"}}, (None, None)),
        ({"string": {"content": '{"Resources": "not a list"}'}}, (None, None)),
        ({}, (None, None)),
    ],
)
def test_given_an_appspec_then_its_versions_are_read_or_left_unknown(
    revision: dict[str, object], expected: tuple[str | None, str | None]
) -> None:
    # (status lists such a deployment without its versions)
    assert (appspec_versions(revision) or (None, None)) == expected


def test_given_a_shadow_the_registry_lacks_then_shadowing_or_clearing_is_named() -> None:
    # Given prod's pin and alias on a complete v2, and its shadow pin on v3, which is not there
    status = EnvironmentStatus(
        "prod",
        "local",
        pin=Pin(2, SHA[2]),
        shadow=Pin(3, SHA[3]),
        alias=alias(2),
        stored={2: StoredVersion(SHA[2]), 3: StoredVersion(problem="is not in file:///r")},
    )
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC
    assert warning == (
        "v3, which models.lock.json's shadow is, is not in file:///r: a deploy of it cannot load "
        "its model; shadow a complete version with: sds shadow VERSION --env prod, or remove the "
        "shadow with: sds shadow --env prod --clear"
    )


def test_given_a_version_the_registry_holds_as_another_model_then_it_is_named() -> None:
    # Given pin and alias on v2, and the registry's v2 a model of another sha256
    status = EnvironmentStatus(
        "prod", "aws", pin=Pin(2, SHA[2]), alias=alias(2), stored={2: StoredVersion(SHA[1])}
    )
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC
    assert warning.startswith(
        "v2, which models.lock.json pins and the registry alias prod points at, is another model "
        f"in the registry (sha256 {SHA[1][:12]}...): a deploy of it cannot load its model; move "
        "prod to a complete version with: sds --aws rollback --env prod"
    )


def test_given_a_pin_of_another_sha256_on_a_complete_version_then_only_the_hand_edit_is_named() -> (
    None
):
    # Given pin and alias on v2 with different sha256s, the registry holding the alias's model
    status = EnvironmentStatus(
        "prod", "local", pin=Pin(2, SHA[1]), alias=alias(2), stored={2: StoredVersion(SHA[2])}
    )
    # Then the one warning is the hand edit, not a version to move away from
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC and "one of them was edited by hand" in warning


def test_given_a_pin_on_a_version_the_registry_lacks_and_no_alias_then_one_warning_says_both() -> (
    None
):
    status = EnvironmentStatus(
        "prod",
        "local",
        registry_uri="file:///r",
        pin=Pin(3, SHA[3]),
        stored={3: StoredVersion(problem="is not in file:///r")},
    )
    state, (warning,) = verdict(status)
    assert state == OUT_OF_SYNC
    assert warning == (
        "models.lock.json pins v3, which is not in file:///r, but prod's registry has no alias "
        "prod (file:///r): is this the right registry? promote it there with: sds promote 3 "
        "--to prod"
    )


def registered_and_promoted(project: Path, *tags: str) -> Workspace:
    """A local workspace whose dev registry holds a version per tag, each promoted in turn."""
    ws = Workspace.discover(project_dir=project)
    for tag in tags:
        payload = tag.encode() * 64
        version = ws.registry("dev").register(
            {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
            {"metrics": {"roc_auc": 0.93}},
            actor="tester",
        )
        promote(ws, to_env="dev", version=version.number)
    return ws


def stored(ws: Workspace, version: int, name: str) -> Path:
    return ws.home / "registries" / "dev" / "models" / ws.model / "versions" / str(version) / name


@pytest.mark.parametrize(
    ("lost", "problem"),
    [
        ("manifest.json", "is not in {uri}"),
        (
            "model.skops",
            "is damaged in the registry (version 2: model.skops is missing from {uri})",
        ),
    ],
    ids=["manifest", "artifact"],
)
def test_given_pin_and_alias_on_a_version_no_longer_complete_then_it_is_not_in_sync(
    project: Path, capsys: pytest.CaptureFixture[str], lost: str, problem: str
) -> None:
    # Given v2 pinned and promoted in dev, then one of its objects lost from the registry
    ws = registered_and_promoted(project, "one", "two")
    stored(ws, 2, lost).unlink()

    # When checking dev's status
    checked = sds(capsys, "status", "--env", "dev", "--check", "--json")
    text = sds(capsys, "status", "--env", "dev")

    # Then it is out of sync, not "in sync": nothing could load the model pin and alias name;
    # the warning names the version, what is wrong with it and what to do, in text and JSON
    assert checked.code == 1, checked.out
    (status,) = checked.json()["environments"]
    assert status["state"] == OUT_OF_SYNC and status["ok"] is False
    (warning,) = status["warnings"]
    uri = ws.registry_uri("dev")
    assert warning.startswith(
        "v2, which models.lock.json pins and the registry alias dev points at, "
        + problem.format(uri=uri)
    ), warning
    assert "sds rollback --env dev" in warning
    assert text.code == 0 and f"warning: {warning}" in text.out.splitlines()


def test_given_a_pin_on_a_version_the_registry_never_held_then_it_is_named(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given v1 promoted in dev, and models.lock.json edited by hand to pin v7, never registered
    ws = registered_and_promoted(project, "one")
    pin = read_pin(ws.lock_path, model=ws.model, env="dev")
    assert pin is not None
    write_pin(ws.lock_path, model=ws.model, env="dev", pin=Pin(7, pin.sha256))

    # When checking dev's status
    checked = sds(capsys, "status", "--env", "dev", "--check", "--json")

    # Then the warning that the pin is behind the alias also says that v7 is not in the
    # registry at all (the fix it names, making the pin follow the alias, is the fix for both)
    assert checked.code == 1
    (status,) = checked.json()["environments"]
    (warning,) = status["warnings"]
    assert warning.startswith(
        f"models.lock.json pins v7, which is not in {ws.registry_uri('dev')}, but the registry "
        "alias is v1 "
    )
    assert warning.endswith("make the pin follow the alias with: sds promote 1 --to dev")


def test_given_every_version_named_complete_then_status_stays_in_sync(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registered_and_promoted(project, "one", "two")
    checked = sds(capsys, "status", "--check", "--json")
    assert checked.code == 0, checked.out
    assert [e["state"] for e in checked.json()["environments"]] == [IN_SYNC, EMPTY, EMPTY]
