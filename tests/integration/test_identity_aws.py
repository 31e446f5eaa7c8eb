"""Who did it, on AWS: the caller's identity as STS returns it, never a name the caller declares.

The operator's credentials are a role assumed on the moto server (`Deployer`, session `alice`),
so STS answers `arn:aws:sts::123456789012:assumed-role/Deployer/alice`; `SDS_ACTOR` says
something else, and is kept only as an annotation (`declared_actor`, `declared_by`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sds.kernel.sdk
from tests.integration.deployed import CliResult, Deployed, act_as, assume_role
from training.data import write_jsonl
from training.synthetic import generate_activity

ALICE = "arn:aws:sts::123456789012:assumed-role/Deployer/alice"


@pytest.fixture
def alice(aws: Any, monkeypatch: pytest.MonkeyPatch, project: Path) -> list[str]:
    """Alice's role credentials for every client the CLI makes, claiming to be bob in
    SDS_ACTOR; returns the STS calls the CLI makes, as they happen."""
    del project  # the CLI's environment first, then alice's credentials over it
    act_as(monkeypatch, assume_role(aws, "Deployer", "alice"))
    monkeypatch.setenv("SDS_ACTOR", "bob (CHG-4711)")
    calls: list[str] = []
    real_client = sds.kernel.sdk.client

    def watched(service: str) -> Any:
        made = real_client(service)
        if service == "sts":
            made.meta.events.register(
                "before-call.sts.GetCallerIdentity", lambda **_: calls.append("GetCallerIdentity")
            )
        return made

    monkeypatch.setattr(sds.kernel.sdk, "client", watched)
    return calls


def test_promotion_records_the_callers_identity_and_keeps_sds_actor_as_an_annotation(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], alice: list[str]
) -> None:
    # Given version 1 in dev's registry
    dev, staging = deploy("dev"), deploy("staging")
    dev.register("one")

    # When alice (saying she is bob) promotes it to dev, then copies it up to staging
    assert cli("--aws", "promote", "1", "--to", "dev", "--reason", "first").code == 0
    up = cli("--aws", "promote", "--from", "dev", "--to", "staging", "--reason", "up")
    assert up.code == 0, up.err

    # Then the alias and every audit event name alice's identity, with bob only as a note
    for deployed, env in ((dev, "dev"), (staging, "staging")):
        state = deployed.registry.get_alias(env)
        assert state is not None and state.updated_by == ALICE
        mine = [e for e in deployed.registry.events() if e["type"] != "registered"]
        assert mine and {(e["by"], e["declared_actor"]) for e in mine} == {
            (ALICE, "bob (CHG-4711)")
        }, mine
    assert staging.registry.get_version(1).manifest["source"]["copied_by"] == ALICE
    # And each command asked STS once, however many events it wrote
    assert alice == ["GetCallerIdentity", "GetCallerIdentity"]


def test_history_shows_who_and_what_they_declared(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], alice: list[str]
) -> None:
    # Given a promotion by alice (saying she is bob)
    dev = deploy("dev")
    dev.register("one")
    assert cli("--aws", "promote", "1", "--to", "dev", "--reason", "first").code == 0
    del alice[:]

    # When anyone reads dev's history
    table = cli("--aws", "history", "--env", "dev")
    document = cli("--aws", "history", "--env", "dev", "--json")

    # Then BY is alice's identity and DECLARED what she said, in the table and in JSON
    assert table.code == 0, table.err
    header, *rows = table.out.splitlines()
    assert header.split() == [
        "TIME",
        "(UTC)",
        "EVENT",
        "VERSION",
        "FROM",
        "BY",
        "DECLARED",
        "REASON",
    ]
    (promoted,) = [row for row in rows if " promoted " in row]
    assert ALICE in promoted and "bob (CHG-4711)" in promoted
    (event,) = [e for e in document.json() if e["type"] == "promoted"]
    assert (event["by"], event["declared_actor"]) == (ALICE, "bob (CHG-4711)")
    # And reading asked STS nothing: who reads is not recorded
    assert alice == []


def test_training_here_into_an_s3_registry_records_the_callers_identity(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    alice: list[str],
    tmp_path: Path,
) -> None:
    # Given dev's registry on S3 and some history on this machine
    dev = deploy("dev")
    history = write_jsonl(generate_activity(3000, seed=9), tmp_path / "history.jsonl")

    # When alice (saying she is bob) trains here and registers into dev's registry
    trained = cli(
        "--aws", "train", "--env", "dev", "--local", "--data", str(history), "--max-iter", "10",
        "--quiet",
    )  # fmt: skip

    # Then the version and its audit event name alice's identity, with bob only as a note
    assert trained.code == 0, trained.err
    assert "registered fraud version 1 in dev" in trained.out
    manifest = dev.registry.get_version(1).manifest
    assert (manifest["created_by"], manifest["declared_by"]) == (ALICE, "bob (CHG-4711)")
    (event,) = dev.registry.events()
    assert (event["type"], event["by"], event["declared_actor"]) == (
        "registered",
        ALICE,
        "bob (CHG-4711)",
    )
    assert alice == ["GetCallerIdentity"]
