"""Promotion and rollback semantics on the local registries: gates, copies, pins, history."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import pytest

from sds.kernel.lock import read_lock
from sds.kernel.registry import Version
from sds.ops.promotion import GateFailure, OperationError, check_gates, promote, rollback
from sds.ops.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    return Workspace.discover(project_dir=tmp_path, environ={"SDS_ACTOR": "tester"})


def register(ws: Workspace, env: str = "dev", metrics: dict[str, float] | None = None) -> Version:
    payload = json.dumps(metrics or GOOD).encode() + bytes(range(16))
    return ws.registry(env).register(
        {"model.onnx": b"onnx" + payload, "model.skops": b"skops" + payload},
        {"metrics": metrics or GOOD},
        actor="tester",
        reason="test",
    )


def pins(ws: Workspace) -> dict[str, int]:
    return {env: p.version for env, p in read_lock(ws.lock_path, model=ws.model).pins.items()}


def test_promote_moves_alias_and_writes_pin_with_sha(ws: Workspace) -> None:
    v1 = register(ws)
    change = promote(ws, to_env="dev", version=v1.number, reason="first")
    assert change.changed and change.previous is None
    lock = read_lock(ws.lock_path, model=ws.model)
    assert lock.pins["dev"].version == 1 and lock.pins["dev"].sha256 == v1.sha256
    assert ws.registry("dev").get_alias("dev").version == 1  # type: ignore[union-attr]


def test_the_pin_carries_the_alert_rate_the_versions_manifest_expects(ws: Workspace) -> None:
    # Given a version whose manifest records what it flags on its holdout
    version = ws.registry("dev").register(
        {"model.onnx": b"onnx-behaviour", "model.skops": b"skops-behaviour"},
        {"metrics": {**GOOD, "alert_rate": 0.01}, "behaviour": {"alert_rate": 0.0125}},
        actor="tester",
    )

    # When it is promoted
    promote(ws, to_env="dev", version=version.number)

    # Then the pin the CDK app deploys carries that rate, for the alert-rate alarms
    assert read_lock(ws.lock_path, model=ws.model).pins["dev"].expected_alert_rate == 0.0125


def test_re_running_a_promotion_adds_the_rate_to_a_pin_written_before_rates(
    ws: Workspace,
) -> None:
    # Given a version live in dev, and a lock file from before pins carried a rate
    version = register(ws, metrics={**GOOD, "alert_rate": 0.02})
    promote(ws, to_env="dev", version=version.number)
    ws.lock_path.write_text(
        json.dumps(
            {"model": ws.model, "environments": {"dev": {"version": 1, "sha256": version.sha256}}}
        )
    )

    # When the promotion is run again (a no-op for the alias)
    change = promote(ws, to_env="dev", version=version.number)

    # Then the pin gains the rate the version's threshold was chosen for
    assert not change.changed
    assert read_lock(ws.lock_path, model=ws.model).pins["dev"].expected_alert_rate == 0.02


def test_a_rollback_pins_the_rate_of_the_version_it_returns_to(ws: Workspace) -> None:
    first = register(ws, metrics={**GOOD, "alert_rate": 0.01})
    second = register(ws, metrics={**GOOD, "alert_rate": 0.05})
    promote(ws, to_env="dev", version=first.number)
    promote(ws, to_env="dev", version=second.number)
    assert read_lock(ws.lock_path, model=ws.model).pins["dev"].expected_alert_rate == 0.05

    rollback(ws, env="dev")

    assert read_lock(ws.lock_path, model=ws.model).pins["dev"].expected_alert_rate == 0.01


def test_promote_again_is_a_no_op(ws: Workspace) -> None:
    register(ws)
    promote(ws, to_env="dev", version=1)
    events_before = len(ws.registry("dev").events())
    change = promote(ws, to_env="dev", version=1)
    assert not change.changed
    assert len(ws.registry("dev").events()) == events_before


def test_promote_from_env_copies_version_with_same_number_and_sha(ws: Workspace) -> None:
    register(ws)
    v2 = register(ws)
    promote(ws, to_env="dev", version=2)
    change = promote(ws, to_env="staging", from_env="dev", reason="up")
    assert change.copied_from == "dev" and change.version == 2
    copied = ws.registry("staging").verify_version(2)
    assert copied.sha256 == v2.sha256
    assert copied.manifest["source"]["version"] == 2
    assert pins(ws) == {"dev": 2, "staging": 2}
    # Re-running the promotion changes nothing.
    again = promote(ws, to_env="staging", from_env="dev")
    assert not again.changed


def test_refused_promotion_lists_each_failed_gate_and_moves_nothing(ws: Workspace) -> None:
    weak = {"roc_auc": 0.78, "pr_auc": 0.1, "expected_calibration_error": 0.2}
    register(ws, metrics=weak)
    promote(ws, to_env="dev", version=1)  # dev's gate: roc_auc >= 0.75
    with pytest.raises(GateFailure) as refused:
        promote(ws, to_env="staging", from_env="dev")
    failed = {r.gate for r in refused.value.results if not r.passed}
    assert failed == {"min_roc_auc", "min_pr_auc", "max_calibration_error"}
    assert "min_pr_auc" in str(refused.value) and "max_calibration_error" in str(refused.value)
    assert ws.registry("staging").list_versions() == []  # nothing copied
    assert "staging" not in pins(ws)


def test_prod_requires_the_version_to_be_live_in_staging(ws: Workspace) -> None:
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    promote(ws, to_env="dev", version=2)
    with pytest.raises(GateFailure, match="require_live_in"):
        promote(ws, to_env="prod", version=2, from_env="dev")
    change = promote(ws, to_env="prod", from_env="staging")
    assert change.version == 1
    assert pins(ws) == {"dev": 2, "staging": 1, "prod": 1}


def test_gate_without_metric_fails_with_a_clear_reason(ws: Workspace) -> None:
    version = register(ws, metrics={"roc_auc": 0.9})
    results = check_gates(ws, "staging", version)
    missing = next(r for r in results if r.gate == "min_pr_auc")
    assert not missing.passed and "no pr_auc metric" in missing.detail


def test_rollback_walks_back_the_history_stack(ws: Workspace) -> None:
    for _ in range(3):
        register(ws)
    for n in (1, 2, 3):
        promote(ws, to_env="dev", version=n)
    assert rollback(ws, env="dev", reason="bad").version == 2
    assert rollback(ws, env="dev", reason="still bad").version == 1
    assert pins(ws) == {"dev": 1}
    with pytest.raises(OperationError, match="no earlier version"):
        rollback(ws, env="dev")
    kinds = [e["type"] for e in ws.registry("dev").events() if e["type"] != "registered"]
    assert kinds == ["promoted", "promoted", "promoted", "rolled_back", "rolled_back"]
    last = ws.registry("dev").events()[-1]
    assert last["by"] == "tester" and last["reason"] == "still bad" and last["from_version"] == 2


def test_rollback_to_a_given_version(ws: Workspace) -> None:
    for _ in range(3):
        register(ws)
    for n in (1, 2, 3):
        promote(ws, to_env="dev", version=n)
    change = rollback(ws, env="dev", to_version=1)
    assert (change.previous, change.version) == (3, 1)
    state = ws.registry("dev").get_alias("dev")
    assert state is not None and state.history == ()


def test_rollback_with_nothing_live_or_unknown_version_is_refused(ws: Workspace) -> None:
    with pytest.raises(OperationError, match="nothing is live"):
        rollback(ws, env="dev")
    register(ws)
    promote(ws, to_env="dev", version=1)
    with pytest.raises(OperationError, match="version 9"):
        rollback(ws, env="dev", to_version=9)
    assert pins(ws) == {"dev": 1}


def test_unknown_version_and_environment_are_named(ws: Workspace) -> None:
    with pytest.raises(OperationError, match="version 4 is not in dev's registry"):
        promote(ws, to_env="dev", version=4)
    with pytest.raises(ValueError, match="unknown environment 'qa'"):
        promote(ws, to_env="qa", version=1)


def test_concurrent_promotions_leave_pin_equal_to_alias(ws: Workspace) -> None:
    for _ in range(4):
        register(ws)
    errors: list[BaseException] = []

    def worker(version: int) -> None:
        try:
            for _ in range(3):
                promote(ws, to_env="dev", version=version, reason=f"w{version}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    alias = ws.registry("dev").get_alias("dev")
    assert alias is not None
    assert pins(ws) == {"dev": alias.version}
    # Every alias move is in the audit trail, in the order the history stack records.
    moves = [e for e in ws.registry("dev").events() if e["type"] == "promoted"]
    assert [e["version"] for e in moves][-1] == alias.version
    assert len(moves) == len(alias.history) + 1


def test_locally_the_actor_is_sds_actor_and_nothing_is_annotated(ws: Workspace) -> None:
    # Given the local target with SDS_ACTOR=tester (the fixture)
    register(ws)
    # When promoting
    promote(ws, to_env="dev", version=1, reason="first")
    # Then the alias and the event name tester, and carry no declared name: there is no
    # authenticated identity to annotate
    assert ws.registry("dev").get_alias("dev").updated_by == "tester"  # type: ignore[union-attr]
    (event,) = [e for e in ws.registry("dev").events() if e["type"] == "promoted"]
    assert event["by"] == "tester" and "declared_actor" not in event


def test_locally_without_sds_actor_the_actor_is_user_at_host(tmp_path: Path) -> None:
    import getpass
    import socket

    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    ws = Workspace.discover(project_dir=tmp_path, environ={})
    assert ws.actor == f"{getpass.getuser()}@{socket.gethostname()}"
    assert ws.declared_actor is None


def test_on_aws_sts_is_asked_once_and_only_when_an_actor_is_needed(tmp_path: Path) -> None:
    # Given a workspace on AWS whose STS answers for alice (a stub: no network here)
    from sds.ops.aws import Clients, Discovery

    class Sts:
        calls = 0

        def get_caller_identity(self) -> dict[str, str]:
            Sts.calls += 1
            return {"Arn": "arn:aws:sts::123456789012:assumed-role/Deployer/alice"}

    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    environ = {
        "SDS_TARGET": "aws",
        "SDS_ACTOR": "bob",
        "SDS_REGISTRY_DEV": (tmp_path / "dev").as_uri(),
    }
    found = Workspace.discover(project_dir=tmp_path, environ=environ)
    ws = dataclasses.replace(found, discovery=Discovery(clients=Clients(overrides={"sts": Sts()})))
    # When nothing needs an actor, STS is not asked
    assert (ws.declared_actor, Sts.calls) == ("bob", 0)
    # When the actor is needed, twice, STS is asked once, and SDS_ACTOR is not the actor
    assert ws.actor == ws.actor == "arn:aws:sts::123456789012:assumed-role/Deployer/alice"
    assert Sts.calls == 1
    # And the registries it opens annotate their events with what the caller declared
    assert ws.registry("dev").declared_actor == "bob"


def test_a_recovered_audit_event_keeps_the_movers_identity_not_the_retriers_note(
    tmp_path: Path,
) -> None:
    from sds.kernel.registry import open_registry

    # Given an alias moved by alice (noting CHG-1) whose audit event was lost
    uri = (tmp_path / "registry").as_uri()
    alices = open_registry(uri, "fraud", declared_actor="CHG-1")
    alices.register({"model.onnx": b"one"}, {}, actor="alice")
    state = alices.move_alias("dev", 1, expected=None, kind="promoted", actor="alice", reason="go")
    (tmp_path / "registry" / "models" / "fraud" / "events" / f"{state.event_id}.json").unlink()

    # When bob's retry (noting CHG-2) completes the trail
    open_registry(uri, "fraud", declared_actor="CHG-2").ensure_audited(state)

    # Then the event names alice, the mover, and carries no note of bob's
    (event,) = [e for e in alices.events() if e["id"] == state.event_id]
    assert (event["by"], event["recovered"]) == ("alice", True)
    assert "declared_actor" not in event
