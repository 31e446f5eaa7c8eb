"""`sds --aws status`: pin, registry alias, Lambda alias and deployments, read from moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

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
        {
            "function_version": new,
            "weight": 0.1,
            "model_version": 2,
            "sha256": two.sha256,
            "shadow": None,
        }
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
    assert lines[0].split() == [
        "ENV", "PIN", "SHADOW", "REGISTRY", "LAMBDA", "DEPLOYMENT", "STATE"
    ]  # fmt: skip
    assert lines[1].split() == [
        "dev", "v2", "-", "v2", "v1", "+20%", "v2", "-", "out", "of", "sync"
    ]  # fmt: skip
    assert "an interrupted canary: undo it with: sds --aws rollback --env dev" in result.out
    assert (
        "serves v1 (Lambda version 2) but the pin is v2: deploy it with: cdk deploy 'dev/*'"
        in result.out
    )
    # And environments that were never deployed here are reported as such, not as unreachable
    # (nothing is pinned for them: not a failure)
    assert lines[2].split()[0] == "staging" and lines[2].endswith("not deployed")
    assert (
        "staging: not deployed: SSM parameter /sds/staging/registry-bucket not found" in result.out
    )
    assert result.err == ""


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
    # And the command it names targets AWS, as status did
    assert (
        "'theirs'" in warning and "follow the alias with: sds --aws promote 2 --to dev" in warning
    )


def test_a_version_deployed_and_pinned_but_gone_from_the_registry_is_not_in_sync(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given v1 then v2 promoted and deployed in dev, then v2's manifest deleted from the bucket:
    # the function serves it while warm, and no new execution environment can load it
    dev = deploy("dev")
    for tag in ("one", "two"):
        version = dev.register(tag)
        assert cli("--aws", "promote", str(version.number), "--to", "dev").code == 0
        dev.point_live(dev.publish(version))
    dev.clients("s3").delete_object(Bucket=dev.bucket, Key="models/fraud/versions/2/manifest.json")

    # When checking dev's status
    result = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then pin, registry alias and Lambda agreeing on v2 is not "in sync": v2 is not there, and
    # the warning says what to run, on AWS
    assert result.code == 1, result.out
    status = environment(result, "dev")
    assert status["state"] == "out of sync"
    (warning,) = status["warnings"]
    assert warning.startswith(
        "v2, which models.lock.json pins and the registry alias dev points at, is not in "
        f"s3://{dev.bucket}: a deploy of it cannot load its model; "
    )
    assert "sds --aws rollback --env dev" in warning


def test_a_shadow_pinned_but_not_deployed_is_warned_about_until_it_is_deployed(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given v1 deployed and live in dev, then v2 pinned as its shadow (not deployed yet)
    dev = deploy("dev")
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    dev.point_live(dev.publish(one))
    two = dev.register("two")
    assert cli("--aws", "shadow", "2", "--env", "dev", "--reason", "challenger").code == 0

    # When asking for the status
    pending = cli("--aws", "status", "--env", "dev", "--check")

    # Then status says the shadow is not deployed and what deploys it; --check fails
    assert pending.code == 1
    assert "dev (aws): out of sync" in pending.out
    assert "warning: models.lock.json's shadow v2 is not deployed: " in pending.out
    assert "loads no shadow, so no payment is scored by it; deploy it with: cdk deploy 'dev/*'" in (
        pending.out
    )
    # And the hint to compare repeats --aws
    assert "decides nothing: sds --aws compare --env dev" in pending.out

    # When the deploy publishes a version that loads it
    dev.point_live(dev.publish(one, shadow=two))
    synced = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then everything agrees, and the Lambda's shadow is reported
    assert synced.code == 0, synced.out
    status = environment(synced, "dev")
    assert status["state"] == "in sync" and status["warnings"] == []
    assert status["lambda"]["shadow"] == {"version": 2, "sha256": two.sha256}
    assert "+ shadow v2" in cli("--aws", "status", "--env", "dev").out

    # When the shadow is cleared in models.lock.json, and not deployed
    assert cli("--aws", "shadow", "--env", "dev", "--clear", "--reason", "enough").code == 0
    cleared = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then the shadow the Lambda still loads is named, with the deploy that removes it
    assert cleared.code == 1
    (warning,) = environment(cleared, "dev")["warnings"]
    assert "loads shadow v2, which models.lock.json no longer pins" in warning
    assert "cdk deploy 'dev/*'" in warning


def test_an_environment_that_cannot_be_read_is_an_error_even_without_check(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given dev deployed, with its registry bucket deleted since (SSM still names it)
    dev = deploy("dev")
    dev.clients("ssm").put_parameter(
        Name="/sds/dev/registry-bucket", Value="sds-gone-bucket", Type="String", Overwrite=True
    )

    # When asking for the status, without --check
    result = cli("--aws", "status")

    # Then dev is unreachable, its cause is one line on stderr, and status exits 1: it could not
    # look, which a script must not take for "all fine"
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[1].split()[0] == "dev" and lines[1].endswith("unreachable")
    (error,) = result.err.splitlines()
    assert error.startswith("sds: error: dev is unreachable: ") and "bucket" in error.lower()
    # And staging and prod, never deployed here, are not called unreachable
    assert lines[2].endswith("not deployed") and lines[3].endswith("not deployed")

    # And --json carries the same: the cause, and that status could not read everything
    as_json = cli("--aws", "status", "--json")
    assert as_json.code == 1
    document = as_json.json()
    assert document["read"] is False and document["ok"] is False
    assert "bucket" in environment(as_json, "dev")["error"].lower()
    assert environment(as_json, "dev")["registry"]["uri"] == "s3://sds-gone-bucket"
    assert environment(as_json, "dev")["state"] == "unreachable"
    assert environment(as_json, "prod")["state"] == "not deployed"
    assert environment(as_json, "prod")["error"] is None


def test_a_pinned_environment_whose_inference_stack_is_gone_is_not_deployed_and_named(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given v1 promoted and pinned in dev, then dev's Inference stack destroyed (its SSM
    # parameters gone; the registry is still there)
    dev = deploy("dev")
    dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    for key in ("function-name", "alias-name", "api-url", "deployment-group"):
        dev.clients("ssm").delete_parameter(Name=f"/sds/dev/{key}")
    dev.clients("ssm").delete_parameter(Name="/sds/dev/codedeploy-application")

    # When asking for its status
    plain = cli("--aws", "status", "--env", "dev")
    checked = cli("--aws", "status", "--env", "dev", "--json", "--check")

    # Then it is "not deployed" (read, not a failure: exit 0), with the registry it did read,
    # the stack that is missing, and a warning that the pin is not served: --check fails
    assert plain.code == 0 and plain.err == ""
    assert "dev (aws): not deployed" in plain.out
    assert "not deployed: SSM parameter /sds/dev/function-name not found" in plain.out
    assert "cdk deploy 'dev/Inference'" in plain.out
    assert checked.code == 1
    status = environment(checked, "dev")
    assert status["state"] == "not deployed" and status["error"] is None
    assert status["registry"]["alias"]["version"] == 1
    (warning,) = status["warnings"]
    assert warning == (
        "models.lock.json pins v1 for dev, which is not deployed here: deploy it with: "
        "cdk deploy 'dev/*'"
    )


def test_a_call_aws_refuses_is_one_explained_line_and_exit_1(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import ClientError

    import sds.ops.status

    # Given dev deployed, and a caller whose policy lacks CodeDeploy's ListDeployments
    deploy("dev")

    def denied(*args: object, **kwargs: object) -> None:
        error = {"Code": "AccessDeniedException", "Message": "not authorized"}
        raise ClientError({"Error": error}, "ListDeployments")

    monkeypatch.setattr(sds.ops.status, "deployments", denied)

    # When asking for dev's status
    result = cli("--aws", "status", "--env", "dev")

    # Then dev could not be read (exit 1), and stderr says so in one line that names what it
    # was reading and what to do, as every AWS failure is said, not the SDK's bare message
    assert result.code == 1
    assert "dev (aws): unreachable" in result.out
    (line,) = result.err.splitlines()
    assert line.startswith("sds: error: dev is unreachable: ")
    assert "reading dev's Lambda alias and deployments" in line
    assert "PromoterPolicyArn" in line
