"""`sds --aws rollback` behind another rollback's lease: what it says, waiting, and breaking it.

The lease of a rollback that was killed (`kill -9`, a laptop closed mid-wait) stays until it
expires; the next rollback says at once who holds it and until when, and either waits for the
expiry or, told explicitly which lease is dead, breaks it (audited).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sds.kernel.activation
import sds.kernel.sdk
from sds.cli.commands import rollback as rollback_command
from sds.kernel.registry.s3 import S3Store
from sds.ops import aws_rollback
from tests.integration import snapstart
from tests.integration.deployed import ACTOR, CliResult, Deployed
from tests.integration.leases import (
    HOLDER,
    LEASE_ID,
    TOKEN,
    expires_when_read,
    held_by,
    lease_document,
)
from tests.integration.snapstart import LambdaStates, with_states
from tests.integration.test_rollback_aws import deploy_two_models

KEY = "models/fraud/aliases/dev.lease"


def unchanged(dev: Deployed, pin_before: str, project: Path) -> None:
    """live, the registry alias, the pin and the trail are as before the rollback."""
    assert dev.live()["FunctionVersion"] == "3"
    state = dev.registry.get_alias("dev")
    assert state is not None and state.version == 2
    assert project.read_text() == pin_before
    moves = ("rolled_back", "live_switched", "lease_broken")
    assert not [e for e in dev.registry.events() if e["type"] in moves]


def test_a_rollback_behind_a_dead_holders_lease_says_who_holds_it_and_goes_on_at_its_expiry(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given two deploys (live on Lambda version 3), and the lease of a rollback that was killed
    # mid-wait: nobody renews or releases it, it expires in 30 s (here: at the waiter's 3rd read)
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    held_by(dev.registry.store, KEY, HOLDER, expires_in=30)
    expires_when_read(monkeypatch, 3)

    # When the next operator rolls back
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "after kill")

    # Then its first line says whose lease it waits for, since when, until when, how to stop
    assert result.code == 0, result.err
    err = result.err.splitlines()
    assert re.fullmatch(
        rf"waiting for dev's rollback lease, held by {re.escape(HOLDER)} since 12:00:03 UTC "
        rf"\(lease id {LEASE_ID}, expires in (30|29) s\); Ctrl-C to stop",
        err[0],
    ), err
    # And how to break it if that command is known dead
    assert err[1] == (
        "  if that command is known dead: run this rollback again with "
        f"--break-lease {LEASE_ID} (audited)"
    )
    assert re.fullmatch(r"  \[ +\d s\] dev's rollback lease expired: going on", err[-1])
    # And then the rollback ran as always, and its event says how long it waited
    assert dev.live()["FunctionVersion"] == "2"
    (event,) = [e for e in dev.registry.events() if e["type"] == "rolled_back"]
    assert event["lease_waited_ms"] > 0
    assert lease_document(dev.registry.store, KEY)["holder"] is None  # released


def test_under_json_the_wait_for_the_lease_is_quiet_and_reported(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    held_by(dev.registry.store, KEY, HOLDER, expires_in=30)
    expires_when_read(monkeypatch, 2)
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x", "--json")
    assert result.code == 0, result.err
    assert result.err == ""  # nothing but the JSON document
    done = result.json()
    assert done["lease_waited_ms"] > 0 and done["broken_lease"] is None
    assert done["lambda_to"] == "2"


def test_a_lease_timeout_of_zero_refuses_at_once_and_names_the_holder(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    held_by(dev.registry.store, KEY, HOLDER, expires_in=60)
    pin_before = project.read_text()

    # When an operator will not wait
    result = cli("--aws", "rollback", "--env", "dev", "--lease-timeout", "0", "--reason", "x")

    # Then exit 3 in one line naming the holder, its lease id and how to break it; nothing moved
    assert result.code == 3, result.err
    assert result.err.startswith(
        f"sds: refused: dev's rollback lease is held by {HOLDER} since 12:00:03 UTC "
        f"(lease id {LEASE_ID}, expires in "
    )
    assert f"--break-lease {LEASE_ID} (audited)" in result.err
    assert len(result.err.strip().splitlines()) == 1
    unchanged(dev, pin_before, project)
    assert lease_document(dev.registry.store, KEY)["token"] == TOKEN


def test_breaking_a_dead_holders_lease_rolls_back_at_once_and_is_audited(
    deploy: Callable[..., Deployed], cli: Callable[..., CliResult], project: Path
) -> None:
    # Given the lease of a rollback the operator killed, with another minute to run
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    held_by(dev.registry.store, KEY, HOLDER, expires_in=60)
    pin_before = project.read_text()

    # When breaking it without a reason: a usage error, nothing touched
    refused = cli("--aws", "rollback", "--env", "dev", "--break-lease", LEASE_ID)
    assert refused.code == 2 and "--break-lease needs --reason" in refused.err
    # When breaking it with another lease id (it changed hands, or a typo): refused, untouched
    wrong = cli(
        "--aws", "rollback", "--env", "dev", "--break-lease", "0123456789ff", "--reason", "x"
    )  # fmt: skip
    assert wrong.code == 3, wrong.err
    assert f"(lease id {LEASE_ID}, expires in" in wrong.err
    assert "not lease id 0123456789ff: nothing was broken or moved" in wrong.err
    unchanged(dev, pin_before, project)
    assert lease_document(dev.registry.store, KEY)["token"] == TOKEN

    # When breaking it with its lease id
    result = cli(
        "--aws", "rollback", "--env", "dev", "--break-lease", LEASE_ID, "--reason", "killed it"
    )  # fmt: skip

    # Then the rollback ran without waiting for the expiry, and says whose lease it broke
    assert result.code == 0, result.err
    assert dev.live()["FunctionVersion"] == "2"
    assert result.err.startswith(f"broke dev's rollback lease, held by {HOLDER} since 12:00:03")
    assert (
        f"  broke the lease of {HOLDER} (lease id {LEASE_ID}) first: audited as lease_broken"
        in result.out
    )
    # And the trail has the break (who, why, whose lease) before the rollback it made way for
    kinds = [e["type"] for e in dev.registry.events()]
    assert kinds[-2:] == ["lease_broken", "rolled_back"]
    broken, rolled = dev.registry.events()[-2:]
    assert (broken["by"], broken["declared_actor"]) == (rolled["by"], ACTOR)
    assert (broken["reason"], broken["alias"]) == ("killed it", "dev")
    assert broken["broken"]["holder"] == HOLDER
    assert broken["broken"]["lease_id"] == LEASE_ID
    assert broken["broken"]["since"] == "2026-11-30T12:00:03.000000Z"
    # And the lease is released for the next command
    assert lease_document(dev.registry.store, KEY)["holder"] is None


def test_ctrl_c_while_waiting_for_the_lease_exits_130_and_leaves_everything_as_it_was(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    held_by(dev.registry.store, KEY, HOLDER, expires_in=60)
    pin_before = project.read_text()
    reads: list[str] = []
    real_get = S3Store.get

    def get(self: S3Store, key: str) -> Any:
        if key.endswith(".lease"):
            reads.append(key)
            if len(reads) == 3:  # the operator presses Ctrl-C during the wait
                raise KeyboardInterrupt
        return real_get(self, key)

    monkeypatch.setattr(S3Store, "get", get)

    # When rolling back, and interrupting it while it waits for the lease
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x")

    # Then it ends as interrupted (130), says that nothing moved, and nothing did
    assert result.code == 130
    err = result.err.splitlines()
    assert err[0].startswith(f"waiting for dev's rollback lease, held by {HOLDER}")
    assert re.fullmatch(
        r"  \[ +\d s\] interrupted while waiting for dev's rollback lease; nothing was moved",
        err[-2],
    )
    assert err[-1] == "sds: interrupted"
    unchanged(dev, pin_before, project)
    # And the holder's lease is as it was: the waiter held nothing, so it left nothing behind
    monkeypatch.setattr(S3Store, "get", real_get)
    assert lease_document(dev.registry.store, KEY)["token"] == TOKEN


def test_a_rollback_whose_lease_is_broken_while_it_waits_stops_before_switching_live(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a rollback waiting for its Inactive target, and meanwhile another operator, who
    # thinks it dead, breaks its lease (as `--break-lease` does: a write over the holder's)
    found = LambdaStates()
    monkeypatch.setattr(sds.kernel.sdk, "client", with_states(found, sds.kernel.sdk.client))
    monkeypatch.setattr(sds.kernel.activation, "POLL_S", 0.01)
    dev = deploy("dev")
    deploy_two_models(dev, cli)
    found.script("2", snapstart.INACTIVE, snapstart.PENDING, snapstart.PENDING, snapstart.ACTIVE)
    pin_before = project.read_text()
    found.calls.clear()
    real_state = found._state
    reads: list[int] = []

    def broken_meanwhile(parsed: dict[str, Any], **kwargs: Any) -> None:
        real_state(parsed, **kwargs)
        if parsed.get("Version") == "2":
            reads.append(1)
            if len(reads) == 2:
                store = dev.registry.store
                current = store.get(KEY)
                taken = {"holder": "bob", "token": "f" * 32, "since": "now", "expires": 1e12}
                store.put(KEY, json.dumps(taken).encode(), if_match=current.etag)

    found._state = broken_meanwhile  # type: ignore[method-assign]

    # When its target becomes Active
    result = cli("--aws", "rollback", "--env", "dev", "--reason", "x")

    # Then it stops (exit 3) before it switches live: the lease is not its own any more
    assert result.code == 3, result.err
    assert "was taken over by another command" in result.err
    assert found.count("UpdateAlias") == 0
    unchanged(dev, pin_before, project)
    # And it left the new holder's lease alone
    assert lease_document(dev.registry.store, KEY)["holder"] == "bob"


def test_lease_options_are_for_rollbacks_on_aws_and_checked_before_anything_runs(
    cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDS_TARGET", "local")
    for option, value in (("--lease-timeout", "5"), ("--break-lease", LEASE_ID)):
        result = cli("rollback", "--env", "dev", option, value, "--reason", "x")
        assert result.code == 2
        assert f"{option} applies to rollbacks on AWS only" in result.err
    for bad in ("abc", "0123456789", "zzzzzzzzzzzz"):
        result = cli("--aws", "rollback", "--env", "dev", "--break-lease", bad, "--reason", "x")
        assert result.code == 2 and f"not a lease id: {bad!r}" in result.err
    result = cli("--aws", "rollback", "--env", "dev", "--lease-timeout", "-1", "--reason", "x")
    assert result.code == 2 and "--lease-timeout: must be 0 or more seconds" in result.err


def test_the_help_states_the_lease_defaults_the_code_uses() -> None:
    # The command module cannot import sds.ops.aws_rollback (it would load numpy at every start)
    help_text = rollback_command.LEASE_HELP
    assert f"default {aws_rollback.LEASE_WAIT_S:.0f}:" in help_text
    assert f"expires within {aws_rollback.LEASE_TTL_S:.0f} s" in help_text
    assert rollback_command.LEASE_ID_CHARS == aws_rollback.LEASE_ID_CHARS
