"""Cross-environment promotion on S3: each environment's registry found through SSM."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.deployed import CliResult, Deployed, read_pin


def object_versions(deployed: Deployed) -> list[tuple[str, str]]:
    """Every object version in the registry bucket: any write at all shows up here."""
    listing = deployed.clients("s3").list_object_versions(Bucket=deployed.bucket)
    return sorted((v["Key"], v["VersionId"]) for v in listing.get("Versions", []))


def test_promote_from_dev_to_staging_copies_verified_bytes_and_a_rerun_writes_nothing(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given version 1 live in dev's registry (bucket A) and an empty staging registry (bucket B)
    dev, staging = deploy("dev"), deploy("staging")
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0

    # When promoting what is live in dev to staging
    result = cli("--aws", "promote", "--from", "dev", "--to", "staging", "--reason", "dev ok")

    # Then staging's registry holds the same bytes, says where they came from, and is live
    assert result.code == 0, result.err
    assert "copied from dev" in result.out
    copied = staging.registry.verify_version(1)
    assert copied.sha256 == one.sha256
    assert copied.manifest["source"]["registry"] == f"s3://{dev.bucket}"
    assert staging.registry.read_artifact(1, "model.skops") == b"one"
    state = staging.registry.get_alias("staging")
    assert state is not None and state.version == 1
    assert read_pin(project, "staging") == {"version": 1, "sha256": one.sha256}
    kinds = [e["type"] for e in staging.registry.events()]
    assert sorted(kinds) == ["copied", "promoted"]

    # And running it again is a no-op: not one object written in either bucket
    before = object_versions(staging), object_versions(dev)
    again = cli("--aws", "promote", "--from", "dev", "--to", "staging", "--reason", "again")
    assert again.code == 0 and "nothing to do" in again.out
    assert (object_versions(staging), object_versions(dev)) == before


def test_promoting_back_a_version_staging_already_holds_says_nothing_was_copied(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given versions 1 and 2 both copied from dev into staging, and version 2 live there
    dev, staging = deploy("dev"), deploy("staging")
    dev.register("one"), dev.register("two")
    for version in ("1", "2"):
        moved = cli("--aws", "promote", version, "--to", "staging", "--json")
        assert moved.code == 0, moved.err
        assert moved.json()["copied_from"] == "dev"

    # When version 1 is promoted back into staging
    before = [key for key, _ in object_versions(staging) if "/versions/" in key]
    result = cli("--aws", "promote", "1", "--to", "staging", "--reason", "back to v1")

    # Then the headline says it was already in staging's registry, and nothing was copied
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        "staging: version 2 -> version 1, already in staging's registry (nothing copied)"
    )
    assert "copying" not in result.err
    assert [key for key, _ in object_versions(staging) if "/versions/" in key] == before
    state = staging.registry.get_alias("staging")
    assert state is not None and state.version == 1

    # And --json says so too
    forth = cli("--aws", "promote", "2", "--to", "staging", "--json")
    assert forth.code == 0, forth.err
    assert (forth.json()["copied"], forth.json()["copied_from"]) == (False, None)
    assert (forth.json()["from_env"], forth.json()["previous"]) == ("dev", 1)


def test_gates_are_checked_before_anything_moves(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given a version good enough for dev (ROC AUC >= 0.75) but not for staging (>= 0.8)
    dev, staging = deploy("dev"), deploy("staging")
    dev.register("weak", {"roc_auc": 0.78, "pr_auc": 0.3, "expected_calibration_error": 0.01})
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0

    # When promoting it to staging
    result = cli("--aws", "promote", "--from", "dev", "--to", "staging", "--reason", "try")

    # Then it is refused with the failing gate named, and nothing reached staging at all
    assert result.code == 3
    assert "min_roc_auc" in result.err and "0.7800" in result.err
    assert object_versions(staging) == []
    assert read_pin(project, "staging") is None


def test_a_tampered_source_version_is_not_copied(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult]
) -> None:
    # Given dev's live version whose ONNX bytes were changed behind the registry's back
    dev, staging = deploy("dev"), deploy("staging")
    dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    dev.clients("s3").put_object(
        Bucket=dev.bucket, Key="models/fraud/versions/1/model.onnx", Body=b"tampered"
    )

    # When promoting it, Then the sha256 check stops it before anything is written to staging
    result = cli("--aws", "promote", "--from", "dev", "--to", "staging", "--reason", "x")
    assert result.code == 1
    assert "does not match its manifest" in result.err
    assert object_versions(staging) == []


def test_the_promotion_a_refusal_names_run_as_printed_promotes_on_aws(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given version 1 live in dev, and staging and prod empty
    dev, staging, prod = deploy("dev"), deploy("staging"), deploy("prod")
    one = dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0

    # When promoting it to prod, skipping staging
    skipped = cli("--aws", "promote", "1", "--to", "prod", "--reason", "skip")

    # Then it is refused, naming the promotion to staging with --aws
    assert skipped.code == 1
    hint = re.search(r"promote it there first: (.*)$", skipped.err.strip())
    assert hint is not None, skipped.err
    assert hint[1] == "sds --aws promote 1 --to staging"

    # And that command, run as printed in a shell without SDS_TARGET, promotes in staging's
    # registry on AWS (without --aws it would look for version 1 in the local registry)
    monkeypatch.delenv("SDS_TARGET")
    done = cli(*shlex.split(hint[1])[1:], "--reason", "as the hint says")
    assert done.code == 0, done.err
    assert staging.registry.get_alias("staging").version == 1  # type: ignore[union-attr]
    assert read_pin(project, "staging") == {"version": 1, "sha256": one.sha256}
    assert prod.registry.list_versions() == []


@pytest.mark.parametrize("target", ["dev", "staging", "prod"])
def test_promoting_on_aws_a_version_that_does_not_exist_is_the_error_show_gives(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], target: str
) -> None:
    # Given version 1 in dev's registry, the start of the chain, and staging and prod deployed
    dev, staging, _ = deploy("dev"), deploy("staging"), deploy("prod")
    dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    assert cli("--aws", "promote", "1", "--to", "staging").code == 0

    # When promoting version 99, registered nowhere, to an environment
    promoted = cli("--aws", "promote", "99", "--to", target, "--json")

    # Then it is the error `sds --aws show` gives of the registry promote looked in (the one
    # the target promotes from): the same exit code, type and message, never "promote it there
    # first", and nothing was written
    source = {"dev": "dev", "staging": "dev", "prod": "staging"}[target]
    shown = cli("--aws", "show", "99", "--env", source, "--json")
    assert promoted.code == shown.code == 1
    assert promoted.json() == shown.json()
    assert promoted.json()["error"]["type"] == "VersionNotFound"
    assert promoted.err == shown.err
    assert "sds --aws models --env" in promoted.err
    assert staging.registry.list_versions() == [1]


def test_a_promotion_already_live_on_aws_says_it_rewrote_a_stale_pin(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given version 2 live in dev, and a lock file whose dev pin still says version 1
    dev = deploy("dev")
    one, two = dev.register("one"), dev.register("two")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    assert cli("--aws", "promote", "2", "--to", "dev").code == 0
    document = json.loads(project.read_text())
    document["environments"]["dev"] = {"version": 1, "sha256": one.sha256}
    project.write_text(json.dumps(document))

    # When version 2 is promoted to dev again
    result = cli("--aws", "promote", "2", "--to", "dev", "--reason", "again")

    # Then the output says the pin was rewritten, and from what, rather than "nothing to do"
    assert result.code == 0, result.err
    assert "nothing to do" not in result.out
    assert result.out.splitlines() == [
        "dev already serves version 2",
        f"  pin rewritten in {project.resolve()} to follow the alias (was version 1): "
        "deploy with: cdk deploy 'dev/*'",
    ]
    assert read_pin(project, "dev") == {"version": 2, "sha256": two.sha256}


def test_a_promotion_interrupted_after_its_alias_moved_on_aws_names_the_command_that_finishes_it(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sds.kernel.sdk

    # Given version 1 live in dev, and Ctrl-C landing as the next alias move's audit event is
    # about to be sent (the alias itself written)
    dev = deploy("dev")
    dev.register("one")
    two = dev.register("two")
    assert cli("--aws", "promote", "1", "--to", "dev").code == 0
    armed = [True]

    def ctrl_c(request: Any, **_: Any) -> None:
        if armed[0] and "/models/fraud/events/" in request.url:
            armed[0] = False
            raise KeyboardInterrupt

    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "s3":
            made.meta.events.register("before-send.s3.PutObject", ctrl_c)
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)

    # When version 2 is promoted
    first = cli("--aws", "promote", "2", "--to", "dev", "--reason", "better PR AUC")

    # Then it exits as interrupted, saying the promotion may have landed and the command, on
    # AWS, that finishes it; the alias moved, the pin did not
    assert first.code == 130
    last = first.err.strip().splitlines()[-1]
    assert last == (
        "sds: interrupted: dev: promotion 1 -> 2 may have landed; finish it with: "
        "sds --aws promote 2 --to dev (safe to repeat)"
    )
    assert dev.registry.get_alias("dev").version == 2  # type: ignore[union-attr]
    assert read_pin(project, "dev") != {"version": 2, "sha256": two.sha256}

    # And that command, run as printed, completes the audit trail and the pin, moving nothing
    command = last.split("finish it with: ")[1].removesuffix(" (safe to repeat)")
    second = cli(*shlex.split(command)[1:])
    assert second.code == 0, second.err
    assert second.out.splitlines()[0] == "dev already serves version 2"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 2
    (event,) = [e for e in dev.registry.events() if e["id"] == state.event_id]
    assert (event["type"], event["reason"], event["recovered"]) == (
        "promoted",
        "better PR AUC",
        True,
    )
    assert read_pin(project, "dev") == {"version": 2, "sha256": two.sha256}
