"""Pruning published Lambda versions on moto: what goes, what stays, and why.

An environment is deployed on the moto server the way the stacks deploy it (function, published
versions with model pins, alias `live`, a CodeDeploy deployment group, the registry); models are
promoted through the real CLI so the registry alias carries a real history. Each test then prunes
with the same code the pruner Lambda runs (`lambdas.pruner.pruning.prune`), through the Lambda
handler itself, or through `sds --aws prune`, and looks at what is left on the Lambda API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

import sds.kernel.settings as settings
from lambdas.pruner import handler
from lambdas.pruner.pruning import PruneReport, prune
from sds.kernel.aws.errors import AwsFailure
from sds.kernel.registry import Registry, Version
from sds.kernel.registry.s3 import S3Store
from sds.kernel.retention import PruneTarget
from sds.ops.aws import Clients
from sds.ops.prune import prune_versions
from sds.ops.workspace import Workspace
from tests.integration.deployed import MODEL, CliResult, Deployed
from tests.support.s3_denials import Listless


def target(deployed: Deployed, *, keep: int) -> PruneTarget:
    return PruneTarget(
        function=deployed.function,
        environment=deployed.env,
        model=MODEL,
        registry_uri=f"s3://{deployed.bucket}",
        application=deployed.application,
        deployment_group=deployed.group,
        versions_to_keep=keep,
    )


def run_prune(
    deployed: Deployed, *, keep: int, dry_run: bool = False, lambda_client: Any = None
) -> PruneReport:
    return prune(
        target(deployed, keep=keep),
        lambda_client=lambda_client or deployed.clients("lambda"),
        codedeploy=deployed.clients("codedeploy"),
        registry=deployed.registry,
        dry_run=dry_run,
    )


def published(deployed: Deployed) -> list[int]:
    lam = deployed.clients("lambda")
    return sorted(
        int(v["Version"])
        for page in lam.get_paginator("list_versions_by_function").paginate(
            FunctionName=deployed.function
        )
        for v in page["Versions"]
        if v["Version"] != "$LATEST"
    )


def promote_and_deploy(
    deployed: Deployed, cli: Callable[..., CliResult], tags: list[str]
) -> dict[str, tuple[Version, str]]:
    """Each model promoted then deployed (a published version, live moved to it), in order."""
    done = {}
    for tag in tags:
        model = deployed.register(tag)
        assert cli("promote", str(model.number), "--to", deployed.env).code == 0
        version = deployed.publish(model)
        deployed.point_live(version)
        done[tag] = (model, version)
    return done


def reasons(report: PruneReport) -> dict[int, list[str]]:
    return {d.version: list(d.reasons) for d in report.plan.decisions}


def appspec(deployed: Deployed, current: str, target_version: str) -> dict[str, Any]:
    return {
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
                                    "Name": deployed.function,
                                    "Alias": "live",
                                    "CurrentVersion": current,
                                    "TargetVersion": target_version,
                                },
                            }
                        }
                    ],
                }
            )
        },
    }


def test_versions_beyond_the_count_go_and_the_newest_serving_each_rollback_target_stays(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given models 1..4 promoted and deployed in turn (Lambda versions 2..5, live -> 5), after
    # the first deploy's version 1 (no model), and model 2 deployed a second time with new code
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one", "two", "three", "four"])
    two, _ = deployed["two"]
    dev.publish(two)  # version 6: a code-only redeploy of model 2 (not live)
    dev.point_live("5")
    assert published(dev) == [1, 2, 3, 4, 5, 6]

    # When pruning keeps 2 (and rollback targets 2 deep: models 3 and 2, with 4 current)
    report = run_prune(dev, keep=2)

    # Then the oldest go: version 1 (no model), 2 (model 1, 3 rollbacks back) and 3 (model 2,
    # but an older build of it than version 6, the one a rollback to model 2 would pick)
    assert report.ok and report.deleted == [1, 2, 3]
    assert published(dev) == [4, 5, 6]
    why = reasons(report)
    assert why[6] == [
        "one of the 2 newest",
        "newest version serving model v2 (2 rollbacks back in registry alias dev's history)",
    ]
    assert why[5] == [
        "one of the 2 newest",
        "alias live points here",
        "newest version serving model v4 (live in registry alias dev)",
    ]
    assert why[4] == [
        "newest version serving model v3 (1 rollback back in registry alias dev's history)"
    ]
    assert why[1] == why[2] == why[3] == []

    # And a rollback can still reach both models in the history it keeps
    back = cli("--aws", "rollback", "--env", "dev", "--to", "2", "--reason", "after pruning")
    assert back.code == 0, back.err
    assert dev.live()["FunctionVersion"] == "6"


def test_the_version_live_points_to_is_kept_however_old(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given four deploys of one model, with live left on the first (a deploy that never shifted)
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(3):
        dev.publish(model)
    dev.point_live("1")  # version 1: the first deploy, with no model

    # When pruning keeps 2
    report = run_prune(dev, keep=2)

    # Then version 1 stays because live points there; 2 and 3 go (5 serves model 1 newer)
    assert report.deleted == [2, 3]
    assert published(dev) == [1, 4, 5]
    assert reasons(report)[1] == ["alias live points here"]


def test_a_version_live_routes_canary_weight_to_is_kept(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given five deploys of one model, live on the newest with 10 % routed to version 2
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(3):
        dev.publish(model)
    dev.point_live("5", {"2": 0.1})

    # When pruning keeps 2
    report = run_prune(dev, keep=2)

    # Then version 2 stays for its canary weight, versions 1 and 3 go
    assert report.deleted == [1, 3]
    assert published(dev) == [2, 4, 5]
    assert reasons(report)[2] == ["alias live routes 10% here"]


def test_the_versions_an_in_flight_deployment_moves_between_are_kept(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given six deploys of one model, and a CodeDeploy deployment in flight from 2 to 3 (live
    # already on the newest: the deployment's alias moves are not visible in the alias yet)
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(4):
        dev.point_live(dev.publish(model))
    deployment = dev.clients("codedeploy").create_deployment(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        revision=appspec(dev, "2", "3"),
    )["deploymentId"]

    # When pruning keeps 2
    report = run_prune(dev, keep=2)

    # Then the deployment's source and target stay, the others beyond the count go
    assert report.deleted == [1, 4]
    assert published(dev) == [2, 3, 5, 6]
    why = reasons(report)
    assert why[2] == [f"deployment {deployment} in flight moves from here"]
    assert why[3] == [f"deployment {deployment} in flight moves here"]


def test_a_deployment_whose_appspec_says_nothing_blocks_every_deletion(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given old versions, and a deployment in flight whose AppSpec names no versions
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(3):
        dev.publish(model)
    deployment = dev.clients("codedeploy").create_deployment(
        applicationName=dev.application,
        deploymentGroupName=dev.group,
        revision={"revisionType": "AppSpecContent", "appSpecContent": {"content": "version: 0.0"}},
    )["deploymentId"]

    # When pruning keeps 2
    report = run_prune(dev, keep=2)

    # Then nothing is deleted, and the plan says why
    assert report.deleted == [] and report.plan.to_delete == []
    assert published(dev) == [1, 2, 3, 4, 5]
    assert report.plan.blocked is not None and deployment in report.plan.blocked


def test_a_model_any_pin_variable_names_keeps_its_newest_version(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given version 2 pinning model 2, then three deploys of model 1 (live on the newest), and
    # the function's configuration naming model 2 as its shadow (the second pin)
    dev = deploy("dev")
    one = dev.register("one")
    two = dev.register("two")
    assert cli("promote", "1", "--to", "dev").code == 0
    dev.publish(two)
    for _ in range(3):
        dev.point_live(dev.publish(one))
    variables = {
        "MODEL_NAME": MODEL,
        "ENVIRONMENT": "dev",
        "MODEL_VERSION": "1",
        "MODEL_SHA256": one.sha256,
        "SHADOW_MODEL_VERSION": "2",
        "SHADOW_MODEL_SHA256": two.sha256,
    }
    dev.clients("lambda").update_function_configuration(
        FunctionName=dev.function, Environment={"Variables": variables}
    )

    # When the pin table knows only the live pin, version 2 would go
    table = settings.PIN_VARIABLES
    monkeypatch.setattr(settings, "PIN_VARIABLES", (settings.LIVE_PIN,))
    before = run_prune(dev, keep=2, dry_run=True)
    assert [d.version for d in before.plan.to_delete] == [1, 2, 3]

    # And with the table as it is, the shadow pin one line in it
    monkeypatch.setattr(settings, "PIN_VARIABLES", table)
    assert settings.SHADOW_PIN in table
    report = run_prune(dev, keep=2)

    # Then the version serving the shadow's model stays, with the reason
    assert report.deleted == [1, 3]
    assert published(dev) == [2, 4, 5]
    assert reasons(report)[2] == [
        "newest version serving model v2 (pinned as shadow by the function's configuration)"
    ]


ALIAS_KEY = f"models/{MODEL}/aliases/dev.json"  # where the pruner's role may read and list


def registry_as_the_pruner(deployed: Deployed, caller: Listless) -> Registry:
    """The registry as the pruner's role reads it: S3 answers it 403 for a key that does not
    exist (it may list the alias's key, not the bucket), and refuses `caller.refused`."""
    s3 = deployed.clients("s3")
    caller.install(s3.meta.events)
    return Registry(S3Store(deployed.bucket, client=s3), MODEL)


def test_an_environment_nothing_was_promoted_to_is_pruned_though_s3_refuses_its_missing_alias(
    deploy: Callable[..., Deployed],
) -> None:
    # Given five deploys before any promotion (the first deploy's version 1 and four more: no
    # model, no registry alias), live on the newest, and the pruner's S3 access: it may read
    # the alias object and list that one key, not the bucket
    dev = deploy("dev")
    for _ in range(4):
        dev.point_live(dev.publish(None))
    registry = registry_as_the_pruner(dev, Listless())

    # When the pruner runs
    report = prune(
        target(dev, keep=2),
        lambda_client=dev.clients("lambda"),
        codedeploy=dev.clients("codedeploy"),
        registry=registry,
    )

    # Then no registry alias protects anything, and the versions beyond the count go
    assert report.deleted == [1, 2, 3]
    assert published(dev) == [4, 5]


def test_a_registry_alias_the_pruner_may_not_read_deletes_nothing(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given a promoted model deployed, more deploys, and an alias object S3 refuses to read
    dev = deploy("dev")
    model, _ = promote_and_deploy(dev, cli, ["one"])["one"]
    for _ in range(3):
        dev.point_live(dev.publish(model))
    assert ALIAS_KEY in dev.registry.store.list("models/")  # where promote wrote it
    registry = registry_as_the_pruner(dev, Listless(refused=frozenset({ALIAS_KEY})))

    # When the pruner runs, then the refusal is an error and nothing is deleted: an alias that
    # exists but cannot be read is never taken for one that does not exist
    with pytest.raises(AwsFailure, match="access denied to GetObject"):
        prune(
            target(dev, keep=1),
            lambda_client=dev.clients("lambda"),
            codedeploy=dev.clients("codedeploy"),
            registry=registry,
        )
    assert published(dev) == [1, 2, 3, 4, 5]


def test_latest_is_never_a_candidate_and_a_dry_run_deletes_nothing(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given five published versions of one model, live on the newest
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(3):
        dev.point_live(dev.publish(model))
    lam = dev.clients("lambda")
    latest = lam.get_function_configuration(FunctionName=dev.function)
    qualifiers: list[str] = []
    lam.meta.events.register(
        "provide-client-params.lambda.DeleteFunction",
        lambda params, **_: qualifiers.append(str(params.get("Qualifier"))),
    )

    # When a dry run plans with the smallest count
    dry = run_prune(dev, keep=1, dry_run=True, lambda_client=lam)

    # Then it says what would go and deletes nothing
    assert [d.version for d in dry.plan.to_delete] == [1, 2, 3, 4]
    assert dry.deleted == [] and qualifiers == [] and published(dev) == [1, 2, 3, 4, 5]

    # When the real run prunes
    done = run_prune(dev, keep=1, lambda_client=lam)

    # Then every deletion named a published version, and $LATEST is as it was
    assert done.deleted == [1, 2, 3, 4] and qualifiers == ["1", "2", "3", "4"]
    assert published(dev) == [5]
    after = lam.get_function_configuration(FunctionName=dev.function)
    assert after["Version"] == "$LATEST"
    assert (after["CodeSha256"], after["Environment"]) == (
        latest["CodeSha256"],
        latest["Environment"],
    )


class FailingDeletes:
    """The moto Lambda client, except that deleting one version fails the way Lambda refuses it."""

    def __init__(self, real: Any, failing: str) -> None:
        self.real = real
        self.failing = failing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def delete_function(self, **kwargs: Any) -> Any:
        if kwargs.get("Qualifier") == self.failing:
            raise ClientError(
                {
                    "Error": {
                        "Code": "ResourceConflictException",
                        "Message": "version has provisioned concurrency",
                    }
                },
                "DeleteFunction",
            )
        return self.real.delete_function(**kwargs)


def test_a_deletion_that_fails_is_reported_and_the_others_go_on(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    workspace: Callable[[], Workspace],
) -> None:
    # Given seven published versions of one model, live on the newest
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(5):
        dev.point_live(dev.publish(model))

    # When `sds --aws prune` runs (cdk.json keeps 5 in dev) and Lambda refuses version 1
    lam = FailingDeletes(dev.clients("lambda"), failing="1")
    report = prune_versions(workspace(), env="dev", clients=Clients(overrides={"lambda": lam}))

    # Then version 2 is deleted after version 1 failed, and the failure is in the report
    assert report.deleted == [2]
    assert set(report.failed) == {1} and "ResourceConflictException" in report.failed[1]
    assert not report.ok
    assert published(dev) == [1, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_sds_prune_names_a_deletion_that_failed_on_stderr_and_exits_1(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    import sds.ops.prune

    # Given seven published versions of one model (dev keeps 5), and Lambda refusing to delete 1
    dev = deploy("dev")
    model, _ = promote_and_deploy(dev, cli, ["one"])["one"]
    for _ in range(5):
        dev.point_live(dev.publish(model))
    failing = Clients(overrides={"lambda": FailingDeletes(dev.clients("lambda"), failing="1")})
    real = sds.ops.prune.prune_versions
    monkeypatch.setattr(
        sds.ops.prune,
        "prune_versions",
        lambda ws, **kwargs: real(ws, **kwargs, clients=failing),
    )

    # When `sds --aws prune` runs, with or without --json
    result = cli("--aws", "prune", "--env", "dev", *(["--json"] if as_json else []))

    # Then it exits 1 and the failure is one line on stderr either way, as every error is; the
    # JSON document is the report (what was deleted, kept and failed) with the error in it, as
    # every command reports one
    assert result.code == 1
    (line,) = result.err.splitlines()
    assert line.startswith("sds: error: version 1 was not deleted: ")
    assert "ResourceConflictException" in line
    if as_json:
        document = result.json()
        assert document["error"] == {
            "message": line.removeprefix("sds: error: "),
            "type": "NotDeleted",
            "exit_code": 1,
        }
        assert list(document["failed"]) == ["1"]
        assert document["deleted"] == [2]
    else:
        assert "deleted 1, kept 5, failed 1" in result.out
    assert published(dev) == [1, 3, 4, 5, 6, 7]


def test_sds_prune_prints_what_it_keeps_and_why(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given models 1..3 promoted and deployed, and four more code deploys of model 3 (dev keeps 5)
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one", "two", "three"])
    model, _ = deployed["three"]
    for _ in range(4):
        dev.point_live(dev.publish(model))

    # When an operator asks for a dry run
    dry = cli("--aws", "prune", "--env", "dev", "--dry-run")

    # Then every version is listed with its model, what happens to it, and why
    assert dry.code == 0, dry.err
    lines = dry.out.splitlines()
    assert lines[0].startswith(f"dev: {dev.function} (keeps the 5 newest")
    row = {line.split()[0]: line for line in lines[2:] if line[:1].isdigit()}
    assert "would delete" in row["1"] and "nothing needs it" in row["1"]
    assert "v1" in row["2"] and "keep" in row["2"] and "2 rollbacks back" in row["2"]
    assert "alias live points here" in row["8"]
    assert "dry run: 1 would be deleted, 7 kept" in dry.out
    assert published(dev) == [1, 2, 3, 4, 5, 6, 7, 8]

    # When it prunes for real, with --json
    done = cli("--aws", "prune", "--env", "dev", "--json")

    # Then the document names what was deleted and kept
    assert done.code == 0, done.err
    document = done.json()
    assert (document["deleted"], document["failed"], document["dry_run"]) == ([1], {}, False)
    assert document["kept"] == [8, 7, 6, 5, 4, 3, 2]
    assert published(dev) == [2, 3, 4, 5, 6, 7, 8]


def test_prune_needs_the_deployed_stacks(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    # When prune runs against the local target
    monkeypatch.setenv("SDS_TARGET", "local")
    result = cli("prune", "--env", "dev")

    # Then it is a usage error that says to add --aws
    assert result.code == 2
    assert "add --aws" in result.err


def test_the_pruner_lambda_handler_prunes_with_its_settings_and_dry_runs_on_request(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given four published versions, and the pruner's environment as the stack writes it
    dev = deploy("dev")
    deployed = promote_and_deploy(dev, cli, ["one"])
    model, _ = deployed["one"]
    for _ in range(2):
        dev.point_live(dev.publish(model))
    for name, value in target(dev, keep=2).to_environ().items():
        monkeypatch.setenv(name, value)

    # When it is invoked by hand with a dry run
    dry = handler.lambda_handler({"dry_run": True}, None)

    # Then it deletes nothing and logs the plan as one JSON line
    assert dry["dry_run"] is True and dry["to_delete"] == [1, 2] and dry["deleted"] == []
    logged = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert logged["message"] == "prune" and logged["kept"] == [4, 3]

    # When the daily schedule invokes it
    done = handler.lambda_handler({"detail-type": "Scheduled Event", "source": "aws.events"}, None)

    # Then the versions beyond the count are gone
    assert done["deleted"] == [1, 2]
    assert published(dev) == [3, 4]
