"""Model-based testing of promotion and rollback across dev, staging and prod.

A Hypothesis state machine runs random sequences of register (into dev, with good, dev-only or
bad metrics), promote VERSION --to ENV, promote --from ENV --to ENV, rollback and rollback --to N
against real file registries and a real models.lock.json (through `sds.ops.promotion`, with a Workspace
built from a copy of cdk.json), next to a small model of what each should do: the gates of
cdk.json, the copy up the chain, the alias history stack. After every step it checks that:

- every alias points at a complete version that verifies, with the alias's sha256;
- every pin in models.lock.json is exactly its environment's alias (version and sha256);
- the history explains every alias value: the alias's last move has an audit event for that
  version, every version on the rollback stack was once moved to, and the model agrees with
  the registry on where each alias is and what rollback would return to;
- `rollback --to N` never puts a version live that its environment did not serve before.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sds.config import load_project
from sds.kernel.lock import read_lock
from sds.kernel.registry import VersionNotFound
from sds.ops.promotion import GateFailure, OperationError, promote, rollback
from sds.ops.workspace import Workspace
from tests.security.security_report import merge

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fraud"
ENVS = ("dev", "staging", "prod")
QUALITY = {
    "good": {"roc_auc": 0.93, "pr_auc": 0.6, "expected_calibration_error": 0.01},
    "dev-only": {"roc_auc": 0.78, "pr_auc": 0.1, "expected_calibration_error": 0.2},
    "bad": {"roc_auc": 0.6, "pr_auc": 0.05, "expected_calibration_error": 0.3},
}
OUTCOMES: Counter[str] = Counter()


class Promotions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="sds-sm-"))
        shutil.copy(ROOT / "cdk.json", self.tmp / "cdk.json")
        self.ws = Workspace(
            project_dir=self.tmp,
            home=self.tmp / ".sds",
            lock_path=self.tmp / "models.lock.json",
            config=load_project(self.tmp / "cdk.json"),
            local_actor="state-machine",
        )
        self.quality: dict[int, str] = {}  # version -> metrics quality (registered in dev)
        self.present: dict[str, set[int]] = {env: set() for env in ENVS}
        self.alias: dict[str, int | None] = dict.fromkeys(ENVS)
        self.stack: dict[str, list[int]] = {env: [] for env in ENVS}
        self.moved_to: dict[str, set[int]] = {env: set() for env in ENVS}

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # The model --------------------------------------------------------------------------------

    def gates_pass(self, env: str, version: int) -> bool:
        gates = self.ws.config.env(env).gates
        metrics = QUALITY[self.quality[version]]
        ok = True
        if gates.min_roc_auc is not None:
            ok &= metrics["roc_auc"] >= gates.min_roc_auc
        if gates.min_pr_auc is not None:
            ok &= metrics["pr_auc"] >= gates.min_pr_auc
        if gates.max_calibration_error is not None:
            ok &= metrics["expected_calibration_error"] <= gates.max_calibration_error
        if gates.require_live_in is not None:
            ok &= self.alias[gates.require_live_in] == version
        return ok

    def model_move(self, env: str, version: int) -> None:
        current = self.alias[env]
        if current == version:
            return
        if current is not None:
            self.stack[env].append(current)
        self.alias[env] = version
        self.moved_to[env].add(version)

    def expect_promote(self, to_env: str, version: int | None, from_env: str | None) -> str:
        """What promote should do, applied to the model: 'moved', 'no-op', 'gate' or 'error'."""
        source = from_env or self.ws.config.env(to_env).promote_from or to_env
        if version is None:
            assert from_env is not None
            version = self.alias[from_env]
            if version is None:
                return "error"
        if version not in self.present[source]:
            return "error"
        if self.alias[to_env] == version:
            # Already live: nothing moves, so no gate applies (they guard moves, and prod's
            # require_live_in may no longer hold once staging moved on: sds/ops/promotion.py).
            return "no-op"
        if not self.gates_pass(to_env, version):
            return "gate"
        self.present[to_env].add(version)
        before = self.alias[to_env]
        self.model_move(to_env, version)
        return "no-op" if before == version else "moved"

    def expect_rollback(self, env: str, to_version: int | None) -> str:
        current = self.alias[env]
        if current is None:
            return "error"
        stack = self.stack[env]
        if to_version is None:
            if not stack:
                return "error"
            target, rest = stack[-1], stack[:-1]
        elif to_version in stack:
            cut = len(stack) - 1 - stack[::-1].index(to_version)
            target, rest = to_version, stack[:cut]
        elif to_version != current and to_version not in self.moved_to[env]:
            return "error"  # never served there: a rollback takes no gates, so it refuses
        else:  # a version it was rolled back from: the one it leaves is pushed, as promote does
            target, rest = to_version, [*stack, current]
        if target == current:
            return "no-op"
        if target not in self.present[env]:
            return "error"
        self.alias[env], self.stack[env] = target, rest
        self.moved_to[env].add(target)
        return "moved"

    # Rules ------------------------------------------------------------------------------------

    @initialize(qualities=st.lists(st.sampled_from(list(QUALITY)), min_size=1, max_size=3))
    def trained(self, qualities: list[str]) -> None:
        for quality in qualities:
            self.register(quality)

    @precondition(lambda self: len(self.quality) < 6)
    @rule(quality=st.sampled_from(list(QUALITY)))
    def register(self, quality: str) -> None:
        version = self.ws.registry("dev").register(
            {"model.onnx": f"onnx {quality} {len(self.quality)}".encode() * 20},
            {"metrics": QUALITY[quality]},
            actor="trainer",
        )
        self.quality[version.number] = quality
        self.present["dev"].add(version.number)
        OUTCOMES["register"] += 1

    def _run(self, label: str, expected: str, action: Any) -> None:
        try:
            change = action()
        except GateFailure:
            outcome = "gate"
        except (OperationError, VersionNotFound):  # a version the registry lacks: show's error
            outcome = "error"
        else:
            outcome = "moved" if change.changed else "no-op"
        assert outcome == expected, f"{label}: expected {expected}, got {outcome}"
        OUTCOMES[f"{label}: {outcome}"] += 1

    @precondition(lambda self: bool(self.quality))
    @rule(data=st.data(), to_env=st.sampled_from(ENVS))
    def promote_version(self, data: st.DataObject, to_env: str) -> None:
        version = data.draw(st.sampled_from([*sorted(self.quality), max(self.quality) + 1]))
        expected = self.expect_promote(to_env, version, None)
        self._run(
            "promote VERSION",
            expected,
            lambda: promote(self.ws, to_env=to_env, version=version, reason="sm"),
        )

    @rule(data=st.data())
    def promote_into_dev(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.quality)))
        expected = self.expect_promote("dev", version, None)
        self._run(
            "promote VERSION",
            expected,
            lambda: promote(self.ws, to_env="dev", version=version, reason="sm"),
        )

    @rule(step=st.sampled_from([("dev", "staging"), ("staging", "prod")]))
    def promote_up_the_chain(self, step: tuple[str, str]) -> None:
        from_env, to_env = step
        expected = self.expect_promote(to_env, None, from_env)
        self._run(
            "promote --from",
            expected,
            lambda: promote(self.ws, to_env=to_env, from_env=from_env, reason="sm"),
        )

    @rule(from_env=st.sampled_from(ENVS), to_env=st.sampled_from(ENVS))
    def promote_from(self, from_env: str, to_env: str) -> None:
        expected = self.expect_promote(to_env, None, from_env)
        self._run(
            "promote --from",
            expected,
            lambda: promote(self.ws, to_env=to_env, from_env=from_env, reason="sm"),
        )

    @rule(data=st.data())
    def rollback_previous(self, data: st.DataObject) -> None:
        # Mostly where there is something to roll back to; sometimes anywhere (must refuse).
        candidates = [env for env in ENVS if self.stack[env]] or list(ENVS)
        env = data.draw(st.sampled_from(candidates) | st.sampled_from(ENVS))
        expected = self.expect_rollback(env, None)
        self._run("rollback", expected, lambda: rollback(self.ws, env=env, reason="sm"))

    @precondition(lambda self: bool(self.quality))
    @rule(data=st.data())
    def rollback_to(self, data: st.DataObject) -> None:
        env = data.draw(st.sampled_from([e for e in ENVS if self.alias[e]] or list(ENVS)))
        # Mostly a version the environment holds; sometimes any (must refuse if absent).
        held = sorted(self.present[env]) or sorted(self.quality)
        version = data.draw(st.sampled_from(held) | st.sampled_from(sorted(self.quality)))
        expected = self.expect_rollback(env, version)
        self._run(
            "rollback --to",
            expected,
            lambda: rollback(self.ws, env=env, to_version=version, reason="sm"),
        )

    # Invariants -------------------------------------------------------------------------------

    @invariant()
    def aliases_point_at_complete_verified_versions(self) -> None:
        for env in ENVS:
            registry = self.ws.registry(env)
            state = registry.get_alias(env)
            assert (None if state is None else state.version) == self.alias[env], env
            if state is None:
                continue
            assert state.version in registry.list_versions()
            assert registry.verify_version(state.version).sha256 == state.sha256
            assert list(state.history) == self.stack[env], (env, state.history, self.stack[env])

    @invariant()
    def pins_match_aliases(self) -> None:
        pins = read_lock(self.ws.lock_path, model=MODEL).pins
        for env in ENVS:
            state = self.ws.registry(env).get_alias(env)
            pin = pins.get(env)
            if state is None:
                assert pin is None, env
            else:
                assert pin is not None and (pin.version, pin.sha256) == (
                    state.version,
                    state.sha256,
                ), (env, pin, state)

    @invariant()
    def history_explains_every_alias_value(self) -> None:
        for env in ENVS:
            registry = self.ws.registry(env)
            state = registry.get_alias(env)
            if state is None:
                continue
            events = registry.events(alias=env)
            moves = [e for e in events if e["alias"] == env]
            last = [e for e in moves if e["id"] == state.event_id]
            assert len(last) == 1 and last[0]["version"] == state.version, (env, state)
            assert last[0]["type"] in ("promoted", "rolled_back")
            moved_to = {e["version"] for e in moves}
            assert moved_to == self.moved_to[env], (env, moved_to, self.moved_to[env])
            assert set(state.history) <= moved_to, (env, state.history)
            # Replaying the audit trail in order gives the alias's current value.
            assert sorted(moves, key=lambda e: e["id"])[-1]["version"] == state.version


Promotions.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TestPromotions = Promotions.TestCase


def test_zz_report_state_machine_counts() -> None:
    """Runs after the machine (file order): publish how many steps of each kind it took."""
    assert OUTCOMES["register"] > 0
    merge("model-based promotion/rollback (state machine): steps", OUTCOMES)
