"""Where an environment's registry comes from, and the rollback lease, on the moto server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sds.kernel.registry.s3 import S3Store
from sds.ops.aws_rollback import ConcurrentRollback, lease
from sds.ops.workspace import Workspace
from tests.integration.deployed import Deployed


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
    rows = {row["env"]: row["registry"] for row in cli("--aws", "envs", "--json").json()}
    assert rows["dev"] == f"s3://{dev.bucket}"
    assert rows["prod"].startswith("(not found: SSM parameter /sds/prod/registry-bucket")
