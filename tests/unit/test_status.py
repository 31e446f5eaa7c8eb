"""`sds status`'s verdicts: every way pin, registry alias and Lambda alias can disagree.

The integration tests read real (moto) Lambda, CodeDeploy and S3 state; these cover the cases
that are awkward to stage there, on the same `disagreements` the command uses.
"""

from __future__ import annotations

import pytest

from sds.kernel.lock import Pin
from sds.kernel.registry import AliasState
from sds.kernel.retention import appspec_versions
from sds.ops.status import (
    DEPLOYING,
    EMPTY,
    IN_SYNC,
    OUT_OF_SYNC,
    UNREACHABLE,
    Deployment,
    EnvironmentStatus,
    LiveAlias,
    ServedVersion,
    disagreements,
)

SHA = {n: f"{n:x}" * 64 for n in range(1, 4)}


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


def live(*served: tuple[str, float, int | None, str | None]) -> LiveAlias:
    return LiveAlias("fn", "live", [ServedVersion(v, w, m, s) for v, w, m, s in served])


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
