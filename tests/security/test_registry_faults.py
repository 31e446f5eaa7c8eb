"""The registry under faults: a failure at any step of register, promote or rollback never leaves
an alias on an incomplete version, a retried command converges, and the audit trail explains it.

Each scenario runs once cleanly to count its store operations (N), then once per operation k and
per failure mode: the k-th operation is lost before it reaches the store, or applied with its
response lost. After every faulted run the invariants are checked on the raw store; then the
command is retried without faults and must reach the clean run's outcome, with the pin in
models.lock.json equal to the alias and an audit event for every alias move.

Two backends: the file registry through a fault-injecting `ObjectStore` wrapper, and the S3
registry on a real S3 protocol server (moto, the session's `moto_server`), with faults injected
by botocore event hooks.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sds.config import load_project
from sds.kernel.lock import read_lock
from sds.kernel.registry import Registry
from sds.kernel.registry.store import FileStore, ObjectStore
from sds.ops.promotion import GateFailure, OperationError, promote, rollback
from sds.ops.workspace import Workspace
from tests.security.faulty_stores import (
    MODES,
    S3_MODES,
    FaultyStore,
    InjectedFault,
    Injector,
    S3Faults,
)
from tests.security.security_report import record

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
GOOD_METRICS = {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01}


@dataclass(frozen=True)
class FaultyWorkspace(Workspace):
    stores: dict[str, Any] = field(default_factory=dict, compare=False)

    def registry(self, env: str, *, write: bool = False) -> Registry:
        del write  # every environment is local here: all writable
        return Registry(self.stores[env], self.model)


@dataclass
class Setup:
    """One environment set (dev, staging, prod registries + lock file) and its injector."""

    workspace: FaultyWorkspace
    raw: dict[str, ObjectStore]
    injector: Injector

    def registry(self, env: str) -> Registry:
        return Registry(self.raw[env], MODEL)


def register(registry: Registry, n: int) -> None:
    registry.register(
        {"model.onnx": f"onnx-{n}".encode() * 50, "model.skops": f"skops-{n}".encode() * 80},
        {"metrics": GOOD_METRICS},
        actor="trainer",
        reason=f"v{n}",
    )


Backend = Callable[[Path], Setup]


def file_backend(tmp: Path) -> Setup:
    injector = Injector()
    raw: dict[str, ObjectStore] = {env: FileStore(tmp / "registries" / env) for env in ENVS}
    return _setup(tmp, raw, {env: FaultyStore(raw[env], injector) for env in ENVS}, injector)


ENVS = ("dev", "staging", "prod")
WRITES = ("put ", "PutObject", "CreateMultipartUpload", "CompleteMultipartUpload")


def _setup(
    tmp: Path, raw: dict[str, ObjectStore], faulty: dict[str, Any], injector: Injector
) -> Setup:
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "cdk.json", tmp / "cdk.json")
    workspace = FaultyWorkspace(
        project_dir=tmp,
        home=tmp / ".sds",
        lock_path=tmp / "models.lock.json",
        config=load_project(tmp / "cdk.json"),
        local_actor="operator",
        stores=faulty,
    )
    return Setup(workspace, raw, injector)


# Scenarios: (name, prepare the state before, the command, the retry) ----------------------------


def prepare(setup: Setup) -> None:
    ws = setup.workspace
    setup.injector.arm(None)
    dev = ws.registry("dev")
    for n in (1, 2, 3):
        register(dev, n)
    promote(ws, to_env="dev", version=1)
    promote(ws, to_env="dev", version=2)


SCENARIOS: dict[str, tuple[Callable[[Setup], Any], Callable[[Setup], Any]]] = {
    "register": (
        lambda s: register(s.workspace.registry("dev"), 4),
        lambda s: register(s.workspace.registry("dev"), 4),
    ),
    "promote (alias move)": (
        lambda s: promote(s.workspace, to_env="dev", version=3, reason="faulted"),
        lambda s: promote(s.workspace, to_env="dev", version=3, reason="retried"),
    ),
    "promote (copy up + alias move)": (
        lambda s: promote(s.workspace, to_env="staging", from_env="dev", reason="faulted"),
        lambda s: promote(s.workspace, to_env="staging", from_env="dev", reason="retried"),
    ),
    "rollback": (
        lambda s: rollback(s.workspace, env="dev", reason="faulted"),
        # Retried the idempotent way: to the version the rollback was going to.
        lambda s: rollback(s.workspace, env="dev", to_version=1, reason="retried"),
    ),
}


def check_invariants(setup: Setup) -> None:
    """On the raw stores (no faults): every alias points at a complete, verified version."""
    for env in ENVS:
        registry = setup.registry(env)
        complete = set(registry.list_versions())
        for name, alias in registry.list_aliases().items():
            assert alias.version in complete, f"{env}: alias {name} -> incomplete v{alias.version}"
            assert registry.verify_version(alias.version).sha256 == alias.sha256
        for number in complete:
            registry.verify_version(number)


def check_converged(setup: Setup, expected: dict[str, int | None], versions: list[int]) -> None:
    check_invariants(setup)
    pins = read_lock(setup.workspace.lock_path, model=MODEL).pins
    for env in ENVS:
        registry = setup.registry(env)
        alias = registry.get_alias(env)
        assert (None if alias is None else alias.version) == expected[env], env
        pin = pins.get(env)
        assert (None if pin is None else (pin.version, pin.sha256)) == (
            None if alias is None else (alias.version, alias.sha256)
        ), f"{env}: pin {pin} does not match alias {alias}"
        events = {e["id"]: e for e in registry.events()}
        if alias is not None:
            assert alias.event_id in events, (
                f"{env}: alias move {alias.event_id} has no audit event"
            )
            moved = events[alias.event_id]
            assert moved["version"] == alias.version and moved["alias"] == env
        audited = {e["version"] for e in events.values() if e["type"] in ("registered", "copied")}
        for number in registry.list_versions():
            manifest = registry.get_version(number).manifest
            assert number in audited or manifest.get("created_by"), (env, number)
    assert setup.registry("dev").list_versions() == versions


def outcome(setup: Setup) -> tuple[dict[str, int | None], list[int]]:
    aliases = {}
    for env in ENVS:
        state = setup.registry(env).get_alias(env)
        aliases[env] = None if state is None else state.version
    return aliases, setup.registry("dev").list_versions()


def run_scenario(
    name: str,
    make: Callable[[Path], Setup],
    tmp: Path,
    *,
    modes: tuple[str, ...] = MODES,
    all_modes: bool = True,
    from_first_write: bool = False,
) -> dict[str, int]:
    command, retry = SCENARIOS[name]
    clean = make(tmp / "clean")
    prepare(clean)
    clean.injector.arm(None)
    command(clean)
    operations = clean.injector.calls
    expected_aliases, expected_versions = outcome(clean)
    counts = {"operations": operations, "faults": 0, "failed": 0, "absorbed": 0}
    first = 1
    if from_first_write:  # a fault before anything is written leaves nothing to check
        writes = [i for i, op in enumerate(clean.injector.operations, 1) if op.startswith(WRITES)]
        first = writes[0]
        counts["skipped (reads before the first write)"] = first - 1
    for k in range(first, operations + 1):
        for mode in modes if all_modes else (modes[k % len(modes)],):
            setup = make(tmp / f"k{k}-{mode}")
            prepare(setup)
            setup.injector.arm(k, mode)
            try:
                command(setup)
            except InjectedFault:
                counts["failed"] += 1
            except Exception as exc:  # the command noticed and said so: fine, if it is clear
                assert setup.injector.fired is not None, exc
                counts["failed"] += 1
            else:
                counts["absorbed"] += setup.injector.fired is not None
            counts["faults"] += setup.injector.fired is not None
            check_invariants(setup)  # whatever happened, no alias on an incomplete version
            setup.injector.arm(None)
            retry(setup)
            versions = expected_versions
            if name == "register":  # a lost number is never reused: the retry may take the next
                versions = setup.registry("dev").list_versions()
                assert versions[:3] == [1, 2, 3] and len(versions) in (4, 5)
            check_converged(setup, expected_aliases, versions)
    return counts


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_file_registry_survives_a_fault_at_every_step(scenario: str, tmp_path: Path) -> None:
    counts = run_scenario(scenario, file_backend, tmp_path)
    assert counts["faults"] >= counts["operations"]
    for key, n in counts.items():
        record(f"registry faults, file backend: {scenario}", key, n)


@pytest.fixture
def s3_backend(moto_server: Any) -> Iterator[Backend]:
    from sds.kernel.registry.s3 import S3Store

    client = moto_server.client("s3")
    injector = S3Faults(client)
    bucket = moto_server.bucket(versioned=True)

    def make(tmp: Path) -> Setup:
        injector.arm(None)
        # One bucket, a fresh prefix per run and environment: S3Store keeps every key under it.
        run = uuid.uuid4().hex[:10]
        raw: dict[str, ObjectStore] = {
            env: S3Store(bucket, f"{run}/{env}", client=client) for env in ENVS
        }
        return _setup(tmp, raw, raw, injector)

    yield make


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_s3_registry_survives_a_fault_at_every_step(
    scenario: str, tmp_path: Path, s3_backend: Backend
) -> None:
    # Every step from the first write on, the failure modes taking turns (lost request, lost
    # response, lost response retried by the SDK); every mode of every step runs on the file
    # backend above. The protocol server costs ~10 ms a request on this machine.
    counts = run_scenario(
        scenario, s3_backend, tmp_path, modes=S3_MODES, all_modes=False, from_first_write=True
    )
    # An after-call fault fires only on a request S3 answered with success.
    assert counts["faults"] > 0 and counts["failed"] + counts["absorbed"] == counts["faults"]
    for key, n in counts.items():
        record(f"registry faults, S3 on moto: {scenario}", key, n)


def test_an_interrupted_rollback_names_the_command_that_is_safe_to_repeat(tmp_path: Path) -> None:
    """A plain `rollback` re-run after a failure that landed would go back one version too far;
    whenever the alias already moved, the error must say how to finish: `--to <target>`."""
    command, _ = SCENARIOS["rollback"]
    clean = file_backend(tmp_path / "clean")
    prepare(clean)
    clean.injector.arm(None)
    command(clean)
    landed_failures = 0
    for k in range(1, clean.injector.calls + 1):
        for mode in MODES:
            setup = file_backend(tmp_path / f"k{k}-{mode}")
            prepare(setup)
            setup.injector.arm(k, mode)
            try:
                command(setup)
            except Exception as exc:
                alias = setup.registry("dev").get_alias("dev")
                if alias is not None and alias.version == 1:  # it landed
                    landed_failures += 1
                    assert isinstance(exc, OperationError), exc
                    assert "sds rollback --env dev --to 1" in str(exc), exc
    assert landed_failures > 0
    record(
        "registry faults, file backend: rollback",
        "landed, then failed: told --to 1",
        landed_failures,
    )


def test_a_rollback_interrupted_after_its_alias_moved_says_how_to_finish_and_that_finishes_it(
    tmp_path: Path,
) -> None:
    """Ctrl-C or SIGTERM between the alias move and its audit event or the pin: the interruption
    must say the move may have landed and name `--to <target>`; a plain re-run would go back one
    version too far. Running the named command completes the audit trail and the pin."""
    command, retry = SCENARIOS["rollback"]
    clean = file_backend(tmp_path / "clean")
    prepare(clean)
    clean.injector.arm(None)
    command(clean)
    landed = 0
    for k in range(1, clean.injector.calls + 1):
        for mode in MODES:
            # Given a rollback 2 -> 1 interrupted at its k-th store operation
            setup = file_backend(tmp_path / f"k{k}-{mode}")
            prepare(setup)
            setup.injector.arm(k, mode, raises=KeyboardInterrupt)
            try:
                command(setup)
            except KeyboardInterrupt as interruption:
                alias = setup.registry("dev").get_alias("dev")
                if alias is None or alias.version != 1:
                    continue  # it had not moved: a plain re-run is right
                # Then, where the alias moved, it stays an interruption that names the command
                landed += 1
                assert "dev: rollback 2 -> 1 may have landed; finish it with: sds rollback " in (
                    str(interruption)
                ), interruption
                assert "--env dev --to 1 (safe to repeat)" in str(interruption)
                # And that command completes the audit event and the pin
                setup.injector.arm(None)
                retry(setup)
                check_converged(setup, {"dev": 1, "staging": None, "prod": None}, [1, 2, 3])
    assert landed > 0


def prepare_prod(setup: Setup) -> None:
    """As `prepare`, and version 2 live in staging too (prod takes only what staging serves)."""
    prepare(setup)
    promote(setup.workspace, to_env="staging", version=2)


# An interrupted promotion: how to set up, the promotion, where it goes and the version it makes
# live, and what moves in its source before the printed command runs (the source alias moving
# on, and with it prod's `require_live_in` gate).
INTERRUPTED_PROMOTIONS: dict[
    str,
    tuple[Callable[[Setup], None], Callable[[Setup], Any], str, int, Callable[[Setup], Any]],
] = {
    "promote 3 --to dev": (
        prepare,
        lambda s: promote(s.workspace, to_env="dev", version=3, reason="interrupted"),
        "dev",
        3,
        lambda s: None,
    ),
    "promote --from dev --to staging, then dev moves on": (
        prepare,
        lambda s: promote(s.workspace, to_env="staging", from_env="dev", reason="interrupted"),
        "staging",
        2,
        lambda s: promote(s.workspace, to_env="dev", version=3),
    ),
    "promote --from staging --to prod, then staging moves on": (
        prepare_prod,
        lambda s: promote(s.workspace, to_env="prod", from_env="staging", reason="interrupted"),
        "prod",
        2,
        lambda s: promote(s.workspace, to_env="staging", version=3),
    ),
}


@pytest.mark.parametrize("scenario", list(INTERRUPTED_PROMOTIONS))
def test_a_promotion_interrupted_after_its_alias_moved_says_how_to_finish_and_that_finishes_it(
    scenario: str, tmp_path: Path
) -> None:
    """Ctrl-C or SIGTERM at any store operation of a promotion: once its alias may have moved,
    the interruption must say so and name the command that finishes it, the version named (a
    re-run with --from would promote whatever its source serves by then). That command, run
    after the source moved on (prod's gate no longer holds), completes the audit trail and the
    pin without moving the alias, and again changes nothing. Interrupted as the move began,
    before the alias moved, "may have" stays true: the command is then the promotion itself,
    gates first. Where the interruption does not say it may have landed, nothing moved."""
    setup_state, command, env, version, meanwhile = INTERRUPTED_PROMOTIONS[scenario]
    clean = file_backend(tmp_path / "clean")
    setup_state(clean)
    before, _ = outcome(clean)
    clean.injector.arm(None)
    command(clean)
    operations = clean.injector.calls
    meanwhile(clean)
    expected, _ = outcome(clean)
    finish = f"finish it with: sds promote {version} --to {env} (safe to repeat)"
    landed = claimed = 0
    for k in range(1, operations + 1):
        for mode in MODES:
            # Given a promotion interrupted at its k-th store operation
            setup = file_backend(tmp_path / f"k{k}-{mode}")
            setup_state(setup)
            setup.injector.arm(k, mode, raises=KeyboardInterrupt)
            try:
                command(setup)
            except KeyboardInterrupt as interruption:
                message = str(interruption)
            else:  # the operation answered "not found": there was no response to lose
                assert setup.injector.fired is None
                continue
            setup.injector.arm(None)
            alias = setup.registry(env).get_alias(env)
            moved = alias is not None and alias.version == version

            # Then, where the alias moved, it stays an interruption that says so and names the
            # command to finish it
            if moved:
                landed += 1
                assert f"{env}: promotion " in message and f" -> {version} may have landed; " in (
                    message
                ), message
                assert message.endswith(finish), message
            if "may have landed" not in message:
                assert not moved
                continue
            claimed += 1

            # And that command, run once the source moved on, finishes it without moving the
            # alias again: alias, pin and audit trail agree; run again, it changes nothing
            meanwhile(setup)
            try:
                done = promote(setup.workspace, to_env=env, version=version, reason="finish")
            except GateFailure:  # it had not landed, and the version may no longer go there
                assert not moved
                check_converged(setup, {**expected, env: before[env]}, [1, 2, 3])
                continue
            assert done.version == version and done.changed is not moved
            check_converged(setup, expected, [1, 2, 3])
            again = promote(setup.workspace, to_env=env, version=version, reason="again")
            assert not again.changed and again.lock is not None and not again.lock.changed
            check_converged(setup, expected, [1, 2, 3])
    assert landed > 0 and claimed >= landed
    record(f"registry faults, file backend: {scenario}", "interrupted, landed: told", landed)


@pytest.mark.parametrize("scenario", ["promote (alias move)", "promote (copy up + alias move)"])
def test_an_interrupted_promotion_says_what_landed_and_how_to_finish(
    scenario: str, tmp_path: Path
) -> None:
    """Everything a promotion can check is checked before its alias moves; what fails after (the
    alias's audit event, the pin) must say the move may have landed and name the command that
    finishes it, and a failure before the move must not claim one."""
    command, _ = SCENARIOS[scenario]
    env, version = ("dev", 3) if scenario == "promote (alias move)" else ("staging", 2)
    clean = file_backend(tmp_path / "clean")
    prepare(clean)
    clean.injector.arm(None)
    command(clean)
    landed_failures = 0
    for k in range(1, clean.injector.calls + 1):
        for mode in MODES:
            # Given a promotion whose k-th store operation fails
            setup = file_backend(tmp_path / f"k{k}-{mode}")
            prepare(setup)
            setup.injector.arm(k, mode)

            # When it runs
            try:
                command(setup)
            except Exception as exc:
                # Then the error says whether the alias may have moved, as the registry shows
                setup.injector.arm(None)
                alias = setup.registry(env).get_alias(env)
                finish = f"finish it with: sds promote {version} --to {env}"
                if alias is not None and alias.version == version:  # it landed
                    landed_failures += 1
                    assert isinstance(exc, OperationError), exc
                    assert "may have landed" in str(exc) and finish in str(exc), exc
                else:
                    assert "may have landed" not in str(exc), exc
    assert landed_failures > 0
    record(
        f"registry faults, file backend: {scenario}", "landed, then failed: told", landed_failures
    )
