"""Promotion and rollback semantics on the local registries: gates, copies, pins, history."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import pytest

import sds.ops.promotion
from sds.kernel.errors import EXIT_REFUSED
from sds.kernel.lock import LockFileError, read_lock
from sds.kernel.registry import AliasState, Version, VersionNotFound
from sds.ops.aws import AwsError, NotDeployed
from sds.ops.promotion import (
    GateFailure,
    NeverServed,
    OperationError,
    check_gates,
    model_table,
    promote,
    rollback,
)
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


def test_a_version_already_live_is_not_gated_again_and_its_pin_is_written(
    ws: Workspace,
) -> None:
    # Given version 1 live in prod without its pin (a promotion interrupted before the pin),
    # and staging moved on to version 2 since: prod's require_live_in no longer holds for 1
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    promote(ws, to_env="prod", from_env="staging")
    document = json.loads(ws.lock_path.read_text())
    del document["environments"]["prod"]
    ws.lock_path.write_text(json.dumps(document))
    promote(ws, to_env="dev", version=2)
    promote(ws, to_env="staging", from_env="dev")

    # When version 1 is promoted to prod again (the command the interruption names)
    change = promote(ws, to_env="prod", version=1)

    # Then nothing moves and no gate is asked (they guard moves): the pin follows the alias
    assert not change.changed and change.gates == []
    assert change.lock is not None and change.lock.pin_rewritten
    assert pins(ws) == {"dev": 2, "staging": 2, "prod": 1}


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
    with pytest.raises(OperationError) as exhausted:
        rollback(ws, env="dev")
    # The message says what dev served and why there is nothing to go back to, not "only 1"
    assert str(exhausted.value) == (
        "nothing earlier to roll back to: dev serves version 1, the oldest on its rollback "
        "history (it has also served versions 2 and 3: sds rollback --env dev --to VERSION "
        "returns to one of them)"
    )
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


def test_a_plain_rollback_after_rolling_forward_returns_to_where_it_started(
    ws: Workspace,
) -> None:
    # Given versions 1, 2 and 3 promoted to dev in turn, then a rollback to 1
    for _ in range(3):
        register(ws)
    for n in (1, 2, 3):
        promote(ws, to_env="dev", version=n)
    rollback(ws, env="dev", to_version=1, reason="all bad")

    # When dev is rolled forward to 3 (off its stack: it was rolled back from), then back again
    assert rollback(ws, env="dev", to_version=3, reason="3 was fine").version == 3
    change = rollback(ws, env="dev", reason="no, it was not")

    # Then the plain rollback returns to 1, where the forward move started, as a promotion's
    # rollback returns to the version it replaced
    assert (change.previous, change.version) == (3, 1)
    assert pins(ws) == {"dev": 1}
    # And each move was audited as a rollback
    kinds = [e["type"] for e in ws.registry("dev").events() if e["type"] != "registered"]
    assert kinds == ["promoted"] * 3 + ["rolled_back"] * 3


def test_a_lost_audit_event_of_a_rollback_forward_is_rebuilt_as_a_rollback(
    tmp_path: Path,
) -> None:
    from sds.kernel.registry import open_registry

    # Given 1 then 2 live, a rollback to 1, then a rollback forward to 2 whose audit event was
    # lost (the alias's history then ends with the version it left, as a promotion's does)
    uri = (tmp_path / "registry").as_uri()
    registry = open_registry(uri, "fraud")
    for data in (b"one", b"two"):
        registry.register({"model.onnx": data}, {}, actor="alice")
    state = registry.move_alias("dev", 1, expected=None, kind="promoted", actor="a", reason="")
    state = registry.move_alias("dev", 2, expected=state, kind="promoted", actor="a", reason="")
    state = registry.move_alias(
        "dev", 1, expected=state, kind="rolled_back", actor="a", reason="", history=()
    )
    state = registry.move_alias(
        "dev", 2, expected=state, kind="rolled_back", actor="a", reason="fwd", history=(1,)
    )
    (tmp_path / "registry" / "models" / "fraud" / "events" / f"{state.event_id}.json").unlink()

    # When a retry completes the trail
    registry.ensure_audited(registry.get_alias("dev"))  # type: ignore[arg-type]

    # Then the rebuilt event says what the move was: a rollback, not a promotion
    (event,) = [e for e in registry.events() if e["id"] == state.event_id]
    assert (event["type"], event["recovered"], event["reason"]) == ("rolled_back", True, "fwd")


def test_rollback_with_nothing_live_or_unknown_version_is_refused(ws: Workspace) -> None:
    with pytest.raises(OperationError, match="nothing is live"):
        rollback(ws, env="dev")
    register(ws)
    promote(ws, to_env="dev", version=1)
    with pytest.raises(VersionNotFound) as unknown:
        rollback(ws, env="dev", to_version=9)
    assert unknown.value.exit_code == 1
    assert str(unknown.value) == (
        "version 9 is not in dev's registry: a rollback returns only to a version dev served "
        "(version 1)"
    )
    assert pins(ws) == {"dev": 1}
    with pytest.raises(OperationError) as only:
        rollback(ws, env="dev")
    assert str(only.value) == "nothing earlier to roll back to: dev has served only version 1"


def test_rollback_to_a_version_the_environment_never_served_is_refused(ws: Workspace) -> None:
    # Given versions 1 and 2 live in staging in turn, and version 3, which fails staging's
    # gates, in staging's registry (copied there, as a shadow would have it) but never live
    register(ws)
    register(ws)
    register(ws, metrics={**GOOD, "roc_auc": 0.76})
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="staging", from_env="dev")
    promote(ws, to_env="dev", version=2)
    promote(ws, to_env="staging", from_env="dev")
    ws.registry("staging").import_version(ws.registry("dev"), 3, actor="tester")

    # When a rollback is asked to put version 3 live
    with pytest.raises(NeverServed) as refused:
        rollback(ws, env="staging", to_version=3, reason="emergency")

    # Then it is refused (exit 3), says why and what to run instead, and nothing moved
    assert refused.value.exit_code == EXIT_REFUSED
    assert str(refused.value) == (
        "version 3 was never live in staging (it has served versions 1 and 2): a rollback "
        "returns only to a version staging served; to make version 3 live, promote it, gates "
        "first: sds promote 3 --to staging"
    )
    assert ws.registry("staging").get_alias("staging").version == 2  # type: ignore[union-attr]
    assert pins(ws) == {"dev": 2, "staging": 2}

    # And a version staging served, even one it was rolled back from, is a valid target
    assert rollback(ws, env="staging", reason="back").version == 1
    assert rollback(ws, env="staging", to_version=2, reason="forward again").version == 2


def test_rollback_to_a_version_that_does_not_exist_is_an_error_before_never_live(
    ws: Workspace,
) -> None:
    # Given versions 1 to 3 registered in dev, where versions are allocated, and 1 then 2 live
    # in prod
    for _ in range(3):
        register(ws)
    for version in (1, 2):
        promote(ws, to_env="dev", version=version)
        promote(ws, to_env="staging", from_env="dev")
        promote(ws, to_env="prod", from_env="staging")

    # When rolling prod back to version 5, which does not exist anywhere
    with pytest.raises(VersionNotFound) as unknown:
        rollback(ws, env="prod", to_version=5, reason="typo")

    # Then it is an error (exit 1), as `show 5` and `promote 5` are, naming where it looked,
    # not a refusal whose hint (`sds promote 5 --to prod`) would fail too
    assert unknown.value.exit_code == 1
    assert str(unknown.value) == (
        "version 5 is not in prod's registry, nor in dev's, where versions are registered: a "
        "rollback returns only to a version prod served (versions 1 and 2)"
    )
    # And version 3, which exists (in dev) but was never live in prod, is still refused (exit 3)
    with pytest.raises(NeverServed) as refused:
        rollback(ws, env="prod", to_version=3, reason="not served")
    assert refused.value.exit_code == EXIT_REFUSED
    assert ws.registry("prod").get_alias("prod").version == 2  # type: ignore[union-attr]
    assert pins(ws) == {"dev": 2, "staging": 2, "prod": 2}


def conflict(ws: Workspace) -> str:
    """Leave models.lock.json as `git merge` leaves a conflicting change to it."""
    ours = ws.lock_path.read_text().splitlines(keepends=True)
    theirs = [line.replace('"version": 1', '"version": 7') for line in ours]
    text = "".join(
        [*ours[:3], "<<<<<<< HEAD\n", *ours[3:], "=======\n", *theirs[3:], ">>>>>>> theirs\n"]
    )
    ws.lock_path.write_text(text)
    return text


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_lock_file_with_a_merge_conflict_refuses_before_the_alias_moves(
    ws: Workspace, command: str
) -> None:
    # Given versions 1 then 2 live in dev, then models.lock.json left with conflict markers
    for _ in range(3):
        register(ws)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="dev", version=2)
    text = conflict(ws)
    events = ws.registry("dev").events()

    # When a command that writes the pin runs
    with pytest.raises(LockFileError) as refused:
        if command == "promote":
            promote(ws, to_env="dev", version=3, reason="mid-merge")
        else:
            rollback(ws, env="dev", reason="mid-merge")

    # Then it names the file and the problem, and nothing changed: alias, audit trail, file
    message = str(refused.value)
    assert str(ws.lock_path) in message and "resolve the merge conflict" in message
    assert "line 4" in message and message.endswith("nothing was changed")
    assert ws.registry("dev").get_alias("dev").version == 2  # type: ignore[union-attr]
    assert ws.registry("dev").events() == events
    assert ws.lock_path.read_text() == text


def test_a_lock_file_that_cannot_be_written_refuses_before_the_alias_moves(
    tmp_path: Path,
) -> None:
    # Given a lock file whose folder is not a folder (nothing can be written there)
    shutil.copy(ROOT / "cdk.json", tmp_path / "cdk.json")
    (tmp_path / "pins").write_text("a file, not a folder\n")
    lock = tmp_path / "pins" / "models.lock.json"
    ws = Workspace.discover(
        project_dir=tmp_path, environ={"SDS_ACTOR": "tester", "SDS_LOCK_FILE": str(lock)}
    )
    register(ws)

    # When a promotion runs, it is refused naming the file, and the alias does not move
    with pytest.raises(LockFileError, match=r"cannot promote version 1 to dev: .*pins"):
        promote(ws, to_env="dev", version=1)
    assert ws.registry("dev").get_alias("dev") is None


def test_a_pin_write_failing_after_the_alias_moved_says_how_to_finish(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sds.kernel.lock

    # Given version 1 live in dev, and a disk that fails the next write of the lock file
    register(ws)
    register(ws)
    promote(ws, to_env="dev", version=1)
    write = sds.kernel.lock.atomic_write_text

    def full(path: Path, text: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sds.kernel.lock, "atomic_write_text", full)

    # When version 2 is promoted, the alias moves but the pin cannot be written
    with pytest.raises(OperationError) as failed:
        promote(ws, to_env="dev", version=2)

    # Then the error says what may have landed and the command that finishes it
    assert str(failed.value) == (
        "dev: promotion 1 -> 2 was interrupted ([Errno 28] No space left on device) and may "
        "have landed; finish it with: sds promote 2 --to dev (safe to repeat)"
    )
    # And that command does finish it, once the disk has room
    monkeypatch.setattr(sds.kernel.lock, "atomic_write_text", write)
    assert not promote(ws, to_env="dev", version=2).changed
    assert pins(ws) == {"dev": 2}


def test_the_model_table_lists_every_version_and_marks_an_unreadable_one(ws: Workspace) -> None:
    # Given three versions, the second with a corrupt manifest, and the third live in dev
    for _ in range(3):
        register(ws)
    promote(ws, to_env="dev", version=3)
    manifest = ws.home / "registries" / "dev" / "models" / ws.model / "versions" / "2"
    (manifest / "manifest.json").write_text("{broken")

    # When the versions are listed
    rows = model_table(ws, "dev").rows

    # Then every version is there, the corrupt one with its problem and no metrics
    assert [(r["version"], r["problem"]) for r in rows] == [
        (1, None),
        (2, "version 2: manifest.json is not valid JSON"),
        (3, None),
    ]
    assert rows[1]["roc_auc"] is None and rows[0]["roc_auc"] == GOOD["roc_auc"]
    assert rows[2]["live_in"] == ["dev"]
    # And a command that does not need version 2 still works
    assert rollback(ws, env="dev", to_version=3).changed is False
    assert promote(ws, to_env="dev", version=1).changed


def test_the_model_table_says_which_environments_it_could_not_read_but_not_undeployed_ones(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given version 1 live in dev, staging not deployed (SSM publishes nothing for it), and
    # prod's registry unreachable with these credentials
    register(ws)
    promote(ws, to_env="dev", version=1)
    real = sds.ops.promotion.live_version

    def live_version(ws: Workspace, env: str) -> AliasState | None:
        if env == "staging":
            raise NotDeployed("SSM parameter /sds/staging/registry-bucket not found")
        if env == "prod":
            raise AwsError("access denied to GetObject on registry bucket sds-prod")
        return real(ws, env)

    monkeypatch.setattr(sds.ops.promotion, "live_version", live_version)

    # When the versions are listed
    listing = model_table(ws, "dev")

    # Then dev's live version is shown, prod is named with why it could not be read, and
    # staging, which serves nothing, is not
    assert [r["live_in"] for r in listing.rows] == [["dev"]]
    assert listing.live_unknown == {
        "prod": "access denied to GetObject on registry bucket sds-prod"
    }


def test_unknown_version_and_environment_are_named(ws: Workspace) -> None:
    with pytest.raises(
        VersionNotFound, match=r"has no version 4 in .*: sds models --env dev lists"
    ):
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


def test_status_mid_merge_shows_the_registry_and_names_the_lock_files_problem(
    ws: Workspace,
) -> None:
    from sds.ops.status import LOCK_UNREADABLE, environment_status

    # Given version 1 live in dev, and models.lock.json with git's conflict markers in it
    register(ws)
    promote(ws, to_env="dev", version=1)
    conflict(ws)

    # When the status of dev is read
    status = environment_status(ws, "dev")

    # Then the registry alias is still shown, and the state and warning say the pin is unreadable
    # and why (not "unreachable": the registry was reached)
    assert status.alias is not None and status.alias.version == 1
    assert status.state == LOCK_UNREADABLE and not status.ok
    (warning,) = status.warnings
    assert str(ws.lock_path) in warning and "resolve the merge conflict" in warning
