"""Where an environment's registry comes from, and the rollback lease, on the moto server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.registry.s3 import S3Store
from sds.ops.aws_rollback import ConcurrentRollback, lease
from sds.ops.workspace import Workspace
from tests.integration.deployed import Deployed
from tests.integration.leases import HOLDER, TOKEN, CountingStore, held_by


def test_registry_resolution_order_override_then_ssm_then_local(
    deploy: Callable[..., Deployed],
    workspace: Callable[..., Workspace],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    dev = deploy("dev")
    # With --aws (SDS_TARGET=aws): the bucket named by SSM /sds/dev/registry-bucket
    assert workspace().registry_uri("dev") == f"s3://{dev.bucket}"
    # SDS_REGISTRY_<ENV> wins over SSM
    monkeypatch.setenv("SDS_REGISTRY_DEV", "s3://elsewhere/prefix")
    assert workspace().registry_uri("dev") == "s3://elsewhere/prefix"
    monkeypatch.delenv("SDS_REGISTRY_DEV")
    # Local mode (the default) never asks SSM
    monkeypatch.setenv("SDS_TARGET", "local")
    assert workspace().registry_uri("dev") == (tmp_path / "state" / "registries" / "dev").as_uri()
    # An environment that is not deployed says what to deploy
    monkeypatch.setenv("SDS_TARGET", "aws")
    with pytest.raises(Exception, match=r"/sds/staging/registry-bucket not found.*cdk deploy"):
        workspace().registry_uri("staging")


def test_the_lease_admits_one_holder_and_a_dead_holders_lease_expires(
    s3_store: Callable[..., S3Store],
) -> None:
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    # Given a lease held by one command, Then another waits, and gives up naming the holder
    with (
        lease(store, key, holder="alice"),
        pytest.raises(ConcurrentRollback, match="alice"),
        lease(store, key, holder="bob", wait_s=0.3),
    ):
        pass
    # And after release it is free again
    with lease(store, key, holder="bob", wait_s=1):
        assert json.loads(store.get(key).data)["holder"] == "bob"

    # Given a holder that died (its lease document stays, and expires)
    dead: Any = {"holder": "carol", "token": "x", "since": "then", "expires": time.time() - 1}
    current = store.get(key)
    store.put(key, json.dumps(dead).encode(), if_match=current.etag)
    # Then the next command takes it over without waiting for anyone
    started = time.monotonic()
    with lease(store, key, holder="dave", wait_s=5):
        assert json.loads(store.get(key).data)["holder"] == "dave"
    assert time.monotonic() - started < 1
    # And the registry never mistakes the lease for an alias
    from sds.kernel.registry import Registry

    assert Registry(store, "fraud").list_aliases() == {}


def test_a_renewed_lease_outlives_its_ttl_and_a_lost_one_stops_its_holder(
    s3_store: Callable[..., S3Store],
) -> None:
    store = s3_store()
    key = "models/fraud/aliases/prod.lease"
    # Given a holder that waits longer than the lease's lifetime (a rollback waiting for its
    # target to become Active) and renews it as it goes
    with lease(store, key, holder="alice", ttl_s=0.6) as held:
        first = json.loads(store.get(key).data)["expires"]
        for _ in range(4):
            time.sleep(0.25)
            held.renew()
        # Then the lease was pushed out, and another command still cannot take it
        assert json.loads(store.get(key).data)["expires"] > first + 0.5
        with (
            pytest.raises(ConcurrentRollback, match="alice"),
            lease(store, key, holder="bob", wait_s=0.2),
        ):
            pass

    # Given a holder whose lease someone else took over meanwhile
    with lease(store, key, holder="carol", ttl_s=0.3) as held:
        current = store.get(key)
        taken = {"holder": "dave", "token": "y", "since": "now", "expires": time.time() + 60}
        store.put(key, json.dumps(taken).encode(), if_match=current.etag)
        time.sleep(0.15)
        # Then renewing says so (the rollback stops before switching anything)
        with pytest.raises(ConcurrentRollback, match="taken over by another command"):
            held.renew()
    # And the release left the new holder's lease alone
    assert json.loads(store.get(key).data)["holder"] == "dave"


def test_envs_with_aws_shows_each_registry_or_what_is_missing(
    deploy: Callable[..., Deployed], cli: Callable[..., Any]
) -> None:
    dev = deploy("dev")
    listed = cli("--aws", "envs", "--json")
    assert listed.code == 0
    rows = {row["env"]: row for row in listed.json()}
    assert (rows["dev"]["registry"], rows["dev"]["state"]) == (f"s3://{dev.bucket}", "found")
    assert (rows["prod"]["registry"], rows["prod"]["state"]) == (None, "not deployed")
    assert rows["prod"]["problem"].startswith("SSM parameter /sds/prod/registry-bucket not found")
    table = cli("--aws", "envs").out
    assert "(not deployed: SSM parameter /sds/prod/registry-bucket not found" in table


def test_envs_with_aws_that_cannot_reach_ssm_says_unreachable_not_missing(
    deploy: Callable[..., Any], cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    # Given an endpoint nothing listens on (a fresh default session, so the SDK reads it)
    deploy("dev")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)

    # When listing the environments
    result = cli("--aws", "envs")

    # Then each is unreachable with its cause in the one error line on stderr, never "not
    # deployed", and exit 1
    assert result.code == 1
    assert "(unreachable)" in result.out and "not deployed" not in result.out
    (error,) = result.err.splitlines()
    assert error.startswith("sds: error: dev is unreachable: ")
    for env in ("staging", "prod"):
        assert f"; {env} is unreachable: reading SSM parameters /sds/{env}/*: " in error
    assert error.count("Could not connect to the endpoint URL") == 3


# Waiting for a held lease: what the waiter says, how often it reads ---------------------------


def test_a_waiter_says_at_once_who_holds_the_lease_and_polls_with_backoff_until_it_expires(
    s3_store: Callable[..., S3Store],
) -> None:
    # Given the lease of a rollback that was killed: nobody releases it, it expires in 2 s
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    held_by(store, key, HOLDER, expires_in=2)
    counting = CountingStore(store, key)
    lines: list[str] = []

    # When another rollback takes the lease
    started = time.monotonic()
    with lease(
        counting,
        key,
        holder="bob",
        what="dev's rollback lease",
        say=lines.append,
        how_to_break="add --break-lease {id}",
        report_s=0.5,
    ):
        # Then it holds it once the dead holder's lease expired
        assert json.loads(store.get(key).data)["holder"] == "bob"
    assert time.monotonic() - started < 10  # a hang, not a speed check

    # And its first line named the holder, since when, the lease id and the expiry, at once
    assert re.fullmatch(
        rf"waiting for dev's rollback lease, held by {re.escape(HOLDER)} since 12:00:03 UTC "
        r"\(lease id 0123456789ab, expires in [12] s\); Ctrl-C to stop",
        lines[0],
    ), lines
    assert lines[1] == "  if that command is known dead: add --break-lease 0123456789ab"
    # And it said it was still waiting, then that the lease expired
    assert any(re.match(r"  \[ +\d s\] still held by .*alice \(expires in", ln) for ln in lines)
    assert re.fullmatch(r"  \[ +\d s\] dev's rollback lease expired: going on", lines[-1])
    # And it read the lease a handful of times in 2 s (backoff from 0.25 s), not every 20-100 ms
    assert 2 <= counting.gets <= 8, counting.gets


def test_a_released_lease_is_taken_at_the_next_read_and_said_so(
    s3_store: Callable[..., S3Store],
) -> None:
    # Given a lease held for a minute by a live holder, which releases it after 0.5 s
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    held_by(store, key, HOLDER, expires_in=60)

    def release() -> None:
        current = store.get(key)
        released = {"holder": None, "released_by": HOLDER, "at": "now"}
        store.put(key, json.dumps(released).encode(), if_match=current.etag)

    timer = threading.Timer(0.5, release)
    timer.start()
    lines: list[str] = []
    # When another command waits for it
    try:
        with lease(store, key, holder="bob", what="dev's rollback lease", say=lines.append) as held:
            # Then it goes on as soon as it reads the release, long before the expiry
            assert json.loads(store.get(key).data)["holder"] == "bob"
            assert 0.4 < held.waited_s < 10
    finally:
        timer.join()
    assert "expires in 60 s" in lines[0] or "expires in 59 s" in lines[0]
    assert re.fullmatch(r"  \[ +\d s\] dev's rollback lease was released: going on", lines[-1])


def test_a_lease_timeout_of_zero_refuses_at_once_naming_the_holder_and_how_to_break_it(
    s3_store: Callable[..., S3Store],
) -> None:
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    held_by(store, key, HOLDER, expires_in=60)
    counting = CountingStore(store, key)
    lines: list[str] = []
    # When a command that will not wait finds it held
    with (
        pytest.raises(ConcurrentRollback) as refused,
        lease(
            counting,
            key,
            holder="bob",
            wait_s=0,
            what="dev's rollback lease",
            say=lines.append,
            how_to_break="add --break-lease {id}",
        ),
    ):
        pass
    # Then one read, no waiting line, and the refusal says who, since when, and what to do
    assert counting.gets == 1 and lines == []
    message = str(refused.value)
    assert message.startswith(
        f"dev's rollback lease is held by {HOLDER} since 12:00:03 UTC (lease id 0123456789ab, "
    )
    assert message.endswith("if that command is known dead: add --break-lease 0123456789ab")
    assert json.loads(store.get(key).data)["holder"] == HOLDER  # untouched


def test_breaking_a_dead_holders_lease_takes_it_at_once_and_only_that_holders(
    s3_store: Callable[..., S3Store],
) -> None:
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    # Given a lease held for another minute by a holder the operator knows is dead
    held_by(store, key, HOLDER, expires_in=60)
    counting = CountingStore(store, key)

    # When breaking it with another lease id (not the current holder's): refused, untouched
    with (
        pytest.raises(ConcurrentRollback, match="not lease id 0123456789ff: nothing was broken"),
        lease(store, key, holder="bob", break_id="0123456789ff"),
    ):
        pass
    assert json.loads(store.get(key).data)["token"] == TOKEN

    # When breaking it with its lease id
    broken: list[Any] = []
    lines: list[str] = []
    with lease(
        counting,
        key,
        holder="bob",
        what="dev's rollback lease",
        say=lines.append,
        break_id="0123456789ab",
        on_break=broken.append,
    ) as held:
        # Then it holds it after one read, with no wait, and the break was handed to the audit
        assert counting.gets == 1
        assert json.loads(store.get(key).data)["holder"] == "bob"
        (who,) = broken
        assert (who.holder, who.id, held.broken) == (HOLDER, "0123456789ab", who)
        assert lines[0].startswith(f"broke dev's rollback lease, held by {HOLDER} since 12:00:03")

    # And a failed audit releases the lease it took: nothing is held by a break not recorded
    held_by(store, key, HOLDER, expires_in=60)

    def audit_fails(_: Any) -> None:
        raise RuntimeError("events not writable")

    with (
        pytest.raises(RuntimeError),
        lease(store, key, holder="bob", break_id="0123456789ab", on_break=audit_fails),
    ):
        pass
    assert json.loads(store.get(key).data)["holder"] is None


def test_ctrl_c_while_waiting_leaves_the_holders_lease_alone(
    s3_store: Callable[..., S3Store],
) -> None:
    store = s3_store()
    key = "models/fraud/aliases/dev.lease"
    held_by(store, key, HOLDER, expires_in=60)

    class Interrupting(CountingStore):
        def get(self, key: str) -> Any:
            if self.gets == 2:
                raise KeyboardInterrupt
            return super().get(key)

    lines: list[str] = []
    # When the operator presses Ctrl-C during the wait
    with (
        pytest.raises(KeyboardInterrupt),
        lease(
            Interrupting(store, key),
            key,
            holder="bob",
            what="dev's rollback lease",
            say=lines.append,
        ),
    ):
        pass
    # Then it says so, and the holder's lease is as it was (the waiter held nothing)
    assert re.fullmatch(
        r"  \[ +\d s\] interrupted while waiting for dev's rollback lease; nothing was moved",
        lines[-1],
    )
    assert json.loads(store.get(key).data)["token"] == TOKEN
