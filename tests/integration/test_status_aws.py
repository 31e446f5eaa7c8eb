"""`sds --aws status`: pin, registry alias, Lambda alias and deployments, read from moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.integration.deployed import CliResult, Deployed


def environment(result: CliResult, env: str) -> dict:  # type: ignore[type-arg]
    document = result.json()
    (found,) = [e for e in document["environments"] if e["env"] == env]
    return found  # type: ignore[no-any-return]


def test_status_follows_a_promotion_through_deploy_and_canary(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given dev deployed with no model yet, and nothing promoted
    dev = deploy("dev")
    fresh = cli("--aws", "status", "--env", "dev", "--json", "--check")
    assert fresh.code == 0, fresh.err
    assert environment(fresh, "dev")["state"] == "nothing promoted"

    # When version 1 is promoted but not deployed
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    pending = cli("--aws", "status", "--env", "dev", "--check")

    # Then status says the Lambda serves no model yet and names the deploy command; --check fails
    assert pending.code == 1
    assert "dev (aws): out of sync" in pending.out
    assert "serves no model yet, the pin is v1: deploy it with: cdk deploy 'dev/*'" in pending.out

    # When the deploy publishes it behind `live`
    dev.point_live(dev.publish(one))
    synced = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then pin, registry alias and Lambda alias agree, with the Lambda version that serves it
    assert synced.code == 0, synced.out
    status = environment(synced, "dev")
    assert status["state"] == "in sync" and status["warnings"] == []
    assert status["pin"] == {"version": 1, "sha256": one.sha256}
    assert status["registry"]["alias"]["version"] == 1
    assert status["lambda"]["function"] == dev.function
    assert status["lambda"]["function_version"] == "2"
    assert (status["lambda"]["model_version"], status["lambda"]["sha256"]) == (1, one.sha256)

    # When version 2 is promoted and its deploy is a canary sending 10% to the new Lambda version
    two = dev.register("two")
    assert cli("--aws", "promote", "2", "--to", "dev").code == 0
    new = dev.publish(two)
    dev.point_live("2", {new: 0.1})
    deployment = dev.clients("codedeploy").create_deployment(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        revision={
            "revisionType": "AppSpecContent",
            "appSpecContent": {
                "content": json.dumps(
                    {
                        "version": 0.0,
                        "Resources": [
                            {
                                "live": {
                                    "Type": "AWS::Lambda::Function",
                                    "Properties": {
                                        "Name": dev.function,
                                        "Alias": "live",
                                        "CurrentVersion": "2",
                                        "TargetVersion": new,
                                    },
                                }
                            }
                        ],
                    }
                )
            },
        },
    )["deploymentId"]
    canary = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then the state is "deploying", not a warning, with the split and the deployment's versions
    assert canary.code == 0, canary.out
    status = environment(canary, "dev")
    assert status["state"] == "deploying" and status["warnings"] == []
    assert status["lambda"]["model_version"] == 1
    assert status["lambda"]["routing"] == [
        {"function_version": new, "weight": 0.1, "model_version": 2, "sha256": two.sha256}
    ]
    (listed,) = status["deployments"]
    assert listed["id"] == deployment
    assert (listed["from_function_version"], listed["to_function_version"]) == ("2", new)
    text = cli("--aws", "status", "--env", "dev").out
    assert f"+ 10% of requests to Lambda version {new} (v2" in text
    assert f"{deployment} Created since" in text and f"Lambda version 2 -> {new}" in text


def test_a_canary_left_behind_and_a_deploy_not_done_are_warned_about(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given v1 deployed in dev, then v2 promoted and published, and `live` left splitting
    # traffic 80/20 with no deployment in progress (a canary stopped halfway)
    dev = deploy("dev")
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    dev.point_live(dev.publish(one))
    two = dev.register("two")
    assert cli("--aws", "promote", "2", "--to", "dev").code == 0
    new = dev.publish(two)
    dev.point_live("2", {new: 0.2})

    # When asking for the status of every environment
    result = cli("--aws", "status")

    # Then the table shows the split, and both problems are warned about with what to do
    assert result.code == 0  # without --check, a report is not a failure
    lines = result.out.splitlines()
    assert lines[0].split() == ["ENV", "PIN", "REGISTRY", "LAMBDA", "DEPLOYMENT", "STATE"]
    assert lines[1].split() == ["dev", "v2", "v2", "v1", "+20%", "v2", "-", "out", "of", "sync"]
    assert "an interrupted canary: undo it with: sds --aws rollback --env dev" in result.out
    assert (
        "serves v1 (Lambda version 2) but the pin is v2: deploy it with: cdk deploy 'dev/*'"
        in result.out
    )
    # And environments that were never deployed here are reported, not crashed on
    assert lines[2].split()[0] == "staging" and lines[2].endswith("unreachable")
    assert "warning: staging: SSM parameter /sds/staging/registry-bucket not found" in result.out


def test_a_lock_file_behind_the_registry_is_warned_about(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given v1 deployed and pinned, then v2 promoted by someone else (their lock file change is
    # not here yet), and not deployed
    dev = deploy("dev")
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    dev.point_live(dev.publish(one))
    ours = project.read_text()
    dev.register("two")
    assert cli("--aws", "promote", "2", "--to", "dev", "--reason", "theirs").code == 0
    project.write_text(ours)

    # When asking for the status
    result = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then the pin and the Lambda agree on v1, and the registry alias ahead of them is named
    assert result.code == 1
    (warning,) = environment(result, "dev")["warnings"]
    assert warning.startswith("models.lock.json pins v1 but the registry alias is v2 (moved ")
    assert "'theirs'" in warning and "sds promote 2 --to dev" in warning
