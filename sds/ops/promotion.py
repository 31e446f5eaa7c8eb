"""Promotion and rollback: move an environment's registry alias and its pin, safely.

Each environment has its own registry and an alias named after the environment. `promote`
checks everything it can before anything moves (that models.lock.json reads cleanly and can take
the pin, that the version verifies, the target's gates on its manifest), then copies it up the
chain (verifying sha256), moves the alias by compare-and-swap and syncs the pin in
models.lock.json from the alias, so pin and alias agree however concurrent commands interleave;
what fails or is interrupted (Ctrl-C, SIGTERM) once the alias may have moved says so and names
the command that finishes it (`may_have_landed`, shared with rollback). `sds shadow`
admits its challenger through the same `candidate` and `admit`. `rollback` moves the alias back
down its history stack (or to `--to N`, a version the environment served) without gates: it is
the emergency exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sds.config import Gates, MustBeatLive
from sds.kernel.behaviour import expected_alert_rate
from sds.kernel.comparison import Comparison, ComparisonError
from sds.kernel.errors import Refused, SdsError, counted
from sds.kernel.lock import LockFile, LockFileError, Pin, check_writable, sync_pin
from sds.kernel.registry import (
    AliasState,
    AuditTrail,
    ConcurrentUpdate,
    Registry,
    RegistryError,
    Version,
    VersionNotFound,
)
from sds.kernel.signals import reworded
from sds.ops.aws import AwsError, NotDeployed
from sds.ops.workspace import Workspace

CAS_ATTEMPTS = 10


class OperationError(SdsError, RuntimeError):
    """The command cannot do what was asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "detail": self.detail}


class GateFailure(Refused, OperationError):
    """The version fails one or more of the target environment's gates; nothing moved."""

    # What the version may not do: "version 3 may not go to prod: ...".
    refused_action = "go to"

    def __init__(self, env: str, version: int, results: list[GateResult]) -> None:
        failed = [r for r in results if not r.passed]
        super().__init__(
            f"version {version} may not {self.refused_action} {env}: "
            + "; ".join(f"{r.gate}: {r.detail}" for r in failed)
        )
        self.env = env
        self.version = version
        self.results = results

    def details(self) -> dict[str, Any]:
        return {
            "refused": True,
            "env": self.env,
            "version": self.version,
            "gates": [g.to_dict() for g in self.results],
        }


class ConcurrentRollback(Refused, OperationError):
    """Another command changed the environment while this one ran; nothing was left half done."""


class VersionsAllocatedElsewhere(Refused, OperationError):
    """Asked to register a new version in an environment that receives versions only by
    promotion; nothing was trained. The message names where versions are allocated and what to
    run instead."""


def registering_environment(ws: Workspace, env: str, *, on_fargate: bool) -> str:
    """The environment whose registry a training run for `env` registers its version in.

    Version numbers are allocated only where the promotion chain starts (docs/decisions.md, 3):
    training there registers there. Above it, `env`'s own Fargate task (its data, its network)
    may run and registers where the chain starts; training on this machine "for" such an
    environment is refused, as is the task of an environment that has none (another account
    or region than its chain start).
    """
    config = ws.config.env(env)
    start = config.chain_start
    if config.allocates_versions:
        return env
    if not config.has_training:
        raise VersionsAllocatedElsewhere(
            f"{env} has no training task: it is in another account or region than {start}, "
            f"where its versions are allocated. Train there: sds --aws train --env {start} "
            "--on-fargate"
        )
    if not on_fargate:
        raise VersionsAllocatedElsewhere(
            f"{env} receives versions only by promotion: versions are allocated in {start}, "
            f"where the promotion chain starts. Train there "
            f"({ws.command(f'train --env {start} --data PATH')}, then "
            f"{ws.command(f'promote VERSION --to {start}')} and up the chain), or run {env}'s "
            f"training task on its data, which registers in {start}: sds --aws train --env "
            f"{env} --on-fargate"
        )
    return start


def _pin_document(pin: Pin | None) -> dict[str, Any] | None:
    return None if pin is None else pin.to_dict()


@dataclass(frozen=True)
class LockChange:
    """What writing an environment's pin from its registry alias did to models.lock.json: the
    pin before and after, and the shadow pin the same write removed (the shadow's version went
    live, or nothing is live any more), if any. A promotion whose alias was already in place can
    still rewrite a stale pin: the command says so instead of "nothing to do"."""

    env: str
    was: Pin | None
    pin: Pin | None
    shadow_removed: Pin | None = None

    @property
    def pin_rewritten(self) -> bool:
        # As the lock file compares pins: by what is written (an expected alert rate included).
        return _pin_document(self.was) != _pin_document(self.pin)

    @property
    def changed(self) -> bool:
        return self.pin_rewritten or self.shadow_removed is not None

    def was_phrase(self) -> str:
        """What the pin was, said against what it is now ("was version 1", "there was none")."""
        was, now = self.was, self.pin
        if was is None:
            return "there was none"
        if now is not None and was.version == now.version:
            if was.sha256 != now.sha256:
                return f"was version {was.version} with sha256 {was.sha256[:12]}..."
            if was.expected_alert_rate is None:
                return f"was version {was.version} without its expected alert rate"
            return f"was version {was.version} expecting alert rate {was.expected_alert_rate:g}"
        return f"was version {was.version}"

    def shadow_phrase(self) -> str | None:
        """The sentence about the removed shadow pin, or None when the shadow pin is as it was."""
        removed = self.shadow_removed
        if removed is None:
            return None
        if self.pin is None:
            return f"shadow pin removed (version {removed.version}): nothing is live in {self.env}"
        return f"shadow pin removed: its version {removed.version} is live in {self.env} now"

    def to_dict(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "pin_rewritten": self.pin_rewritten,
            "pin_was": _pin_document(self.was),
            "pin": _pin_document(self.pin),
            "shadow_removed": _pin_document(self.shadow_removed),
        }


@dataclass(frozen=True)
class AliasChange:
    """What a promote or rollback did (or found already done), in the registry (`changed`: the
    alias moved; `copied`: the version was copied into it from `from_env`'s registry) and in
    models.lock.json (`lock`)."""

    action: str
    env: str
    version: int
    sha256: str
    previous: int | None
    changed: bool
    from_env: str | None = None
    copied: bool = False
    gates: list[GateResult] = field(default_factory=list)
    duration_ms: float = 0.0
    lock: LockChange | None = None

    @property
    def copied_from(self) -> str | None:
        return self.from_env if self.copied else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "env": self.env,
            "version": self.version,
            "sha256": self.sha256,
            "previous": self.previous,
            "changed": self.changed,
            "from_env": self.from_env,
            "copied": self.copied,
            "copied_from": self.copied_from,
            "gates": [g.to_dict() for g in self.gates],
            "duration_ms": self.duration_ms,
            "lock_file": None if self.lock is None else self.lock.to_dict(),
        }


def live_version(ws: Workspace, env: str) -> AliasState | None:
    return ws.registry(env).get_alias(env)


def check_gates(
    ws: Workspace, env: str, version: Version, *, gates: Gates | None = None
) -> list[GateResult]:
    """Evaluate every gate of `env` (or `gates`: its shadow gates) for `version`; metrics come
    from the version's manifest, `shadowed_in` from `env`'s captures."""
    gates = ws.config.env(env).gates if gates is None else gates
    metrics = version.metrics
    results: list[GateResult] = []

    def metric_gate(label: str, key: str, bound: float | None, at_least: bool) -> None:
        if bound is None:
            return
        value = metrics.get(key)
        if not isinstance(value, (int, float)):
            results.append(GateResult(label, False, f"the manifest has no {key} metric"))
            return
        ok = value >= bound if at_least else value <= bound
        sign = ">=" if at_least else "<="
        results.append(GateResult(label, ok, f"{key} {value:.4f} (needs {sign} {bound:g})"))

    metric_gate("min_roc_auc", "roc_auc", gates.min_roc_auc, True)
    metric_gate("min_pr_auc", "pr_auc", gates.min_pr_auc, True)
    metric_gate(
        "min_precision_at_alert_rate",
        "precision_at_alert_rate",
        gates.min_precision_at_alert_rate,
        True,
    )
    metric_gate(
        "max_calibration_error",
        "expected_calibration_error",
        gates.max_calibration_error,
        False,
    )
    if gates.require_live_in is not None:
        other = gates.require_live_in
        state = live_version(ws, other)
        live = None if state is None else state.version
        results.append(
            GateResult(
                "require_live_in",
                live == version.number and state is not None and state.sha256 == version.sha256,
                f"live in {other}: {'nothing' if live is None else f'version {live}'} "
                f"(needs version {version.number})",
            )
        )
    if gates.must_beat_live is not None:
        results.append(must_beat_live(ws, env, version, gates.must_beat_live))
    if gates.shadowed_in is not None:
        from sds.ops.shadow import shadowed_in

        where = gates.shadowed_in.env or env
        serving = live_version(ws, where)
        pinned = None if serving is None else Pin(version=serving.version, sha256=serving.sha256)
        results.append(shadowed_in(ws, env, version, gates.shadowed_in, live=pinned))
    return results


def must_beat_live(ws: Workspace, env: str, version: Version, gate: MustBeatLive) -> GateResult:
    """Whether `version` beats the model live in `env` on the same served traffic: the
    comparison its training from capture recorded against exactly that model (version and
    sha256), in `gate.metric`, by more than `gate.margin`."""
    name = "must_beat_live"
    state = live_version(ws, env)
    if state is None:
        return GateResult(name, True, f"nothing is live in {env}: nothing to beat")
    if state.version == version.number and state.sha256 == version.sha256:
        return GateResult(name, True, f"version {version.number} is what {env} serves")
    live = f"version {state.version}, live in {env}"
    try:
        comparison = Comparison.from_manifest(version.manifest)
    except ComparisonError as exc:
        return GateResult(name, False, f"the manifest's comparison is unreadable: {exc}")
    if comparison is None:
        return GateResult(
            name,
            False,
            f"version {version.number} was not trained from served traffic, so nothing shows it "
            f"beats {live}: train one with {ws.command(f'train --from-capture --env {env}')}",
        )
    served = comparison.against(state.version, state.sha256)
    if served is None:
        compared = ", ".join(f"v{s.version}" for s in comparison.served) or "no model"
        return GateResult(
            name,
            False,
            f"version {version.number} was compared with {compared} on {comparison.env}'s "
            f"traffic, not with {live}: train from capture again once it has served",
        )
    if served.live is None or served.candidate is None:
        return GateResult(
            name,
            False,
            f"{live} could not be compared on {comparison.env}'s holdout: {served.reason}",
        )
    metric = gate.metric
    if metric not in served.live or metric not in served.candidate:
        return GateResult(name, False, f"the comparison has no {metric}")
    ours, theirs = served.candidate[metric], served.live[metric]
    improvement = ours - theirs if gate.higher_is_better else theirs - ours
    needs = theirs + gate.margin if gate.higher_is_better else theirs - gate.margin
    sign = ">" if gate.higher_is_better else "<"
    return GateResult(
        name,
        improvement > gate.margin,
        f"{metric} {ours:.4f} vs {theirs:.4f} for {live}, on the same {served.events} "
        f"held-out payments {comparison.env} served (needs {sign} {needs:.4f})",
    )


def lock_ready(ws: Workspace, action: str) -> LockFile:
    """models.lock.json, checked before anything moves: it must read cleanly (no merge conflict)
    and take a new pin, or the command is refused with nothing changed (`action` says which,
    e.g. "promote version 5 to dev")."""
    try:
        return check_writable(ws.lock_path, model=ws.model)
    except LockFileError as exc:
        raise LockFileError(f"cannot {action}: {exc}; nothing was changed") from None


@dataclass(frozen=True)
class Candidate:
    """A version about to enter an environment (as its live model or its shadow), read and
    verified (every artifact against its sha256) in the registry it comes from."""

    version: Version
    source_env: str
    source: Registry


def verified_version(ws: Workspace, env: str, registry: Registry, version: int) -> Version:
    """`version` in `env`'s `registry`, every artifact verified against its sha256. A version
    the registry does not hold is the one error every command reading a version gives it (`show`,
    `promote`, `shadow`): the registry's words, and the command that lists what it holds."""
    try:
        return registry.verify_version(version)
    except VersionNotFound as exc:
        listing = ws.command(f"models --env {env}")
        raise VersionNotFound(f"{exc}: {listing} lists the versions it holds") from None


def candidate(ws: Workspace, *, env: str, version: int, source_env: str) -> Candidate:
    """`version`, verified in `source_env`'s registry, ready for `admit` into `env`. One that
    `source_env`'s registry lacks is `verified_version`'s error, unless it was registered (it is
    where `source_env`'s chain starts): then the promotion to run first is named."""
    source = ws.registry(source_env)
    try:
        return Candidate(verified_version(ws, source_env, source, version), source_env, source)
    except VersionNotFound:
        if source_env == env or not version_exists(ws, source_env, source, version):
            raise
        raise OperationError(
            f"version {version} is not in {source_env}'s registry; promote it there first: "
            f"{ws.command(f'promote {version} --to {source_env}')}"
        ) from None
    except RegistryError as exc:
        raise OperationError(f"{source_env}: {exc}") from None


@dataclass(frozen=True)
class Admission:
    """What `admit` did: `env`'s registry, the gate results, and where the version came from:
    `from_env`, the environment whose registry it comes from (None when it is `env`'s own), and
    `copied`, whether this command stored it in `env`'s registry. A version promoted back (prod
    rolled back from v2 to v1, then v2 promoted again) is already there: nothing is copied."""

    registry: Registry
    gates: list[GateResult]
    from_env: str | None
    copied: bool

    @property
    def copied_from(self) -> str | None:
        return self.from_env if self.copied else None


def admit(
    ws: Workspace,
    *,
    env: str,
    candidate: Candidate,
    gates: Gates | None = None,
    refusal: type[GateFailure] = GateFailure,
    reason: str = "",
    on_upload: Callable[[str, int, int], None] | None = None,
) -> Admission:
    """Check `env`'s gates (or `gates`) on the candidate's manifest, then copy it into `env`'s
    registry if it comes from another and is not there yet: the order promote and shadow share,
    so a version that fails the gates is refused (`refusal`) before a byte of it is copied."""
    results = check_gates(ws, env, candidate.version, gates=gates)
    if not all(r.passed for r in results):
        raise refusal(env, candidate.version.number, results)
    target = ws.registry(env, write=True)
    if target.uri == candidate.source.uri:
        return Admission(target, results, None, copied=False)
    number = candidate.version.number
    stored: list[str] = []

    def uploaded(name: str, done: int, total: int) -> None:
        # `import_version` reports each object it stores, and nothing when the target already
        # holds the version: what was reported is what this command copied.
        stored.append(name)
        if on_upload is not None:
            on_upload(name, done, total)

    try:
        target.import_version(
            candidate.source, number, actor=ws.actor, reason=reason, on_upload=uploaded
        )
    except RegistryError as exc:
        raise OperationError(f"copying version {number} to {env}: {exc}") from None
    return Admission(target, results, candidate.source_env, copied=bool(stored))


def _sync_pin(ws: Workspace, env: str, registry: Registry) -> LockChange:
    def current() -> Pin | None:
        state = registry.get_alias(env)
        if state is None:
            return None
        # What the version's manifest expects it to flag: the deployment's alert-rate alarms
        # are built around it, and the CDK app reads only the lock file.
        manifest = registry.get_version(state.version).manifest
        return Pin(
            version=state.version,
            sha256=state.sha256,
            expected_alert_rate=expected_alert_rate(manifest),
        )

    synced = sync_pin(ws.lock_path, model=ws.model, env=env, current=current)
    return LockChange(env=env, was=synced.was, pin=synced.pin, shadow_removed=synced.shadow_removed)


def promote(
    ws: Workspace,
    *,
    to_env: str,
    version: int | None = None,
    from_env: str | None = None,
    reason: str = "",
    on_upload: Callable[[str, int, int], None] | None = None,
    shadow: bool = False,
) -> AliasChange:
    """Make `version` (or what is live in `from_env`, or with `shadow` the version shadowing in
    `to_env`) live in `to_env`.

    `on_upload` sees the copy's progress when the version goes to another registry (see
    `Registry.import_version`). Promoting the shadow's version removes the shadow pin in the same
    write of models.lock.json that moves the live pin (`sds.kernel.lock.sync_pin`).
    """
    started = time.monotonic()
    ws.ensure_writable(to_env)  # before reading anything: the target's account must be ours
    target_config = ws.config.env(to_env)
    source_env = from_env or target_config.promote_from or to_env
    live_in_source: AliasState | None = None
    pinned_shadow: Pin | None = None
    if shadow and (version is not None or from_env is not None):
        raise OperationError("--shadow promotes the shadow's version: name no version or --from")
    what = f"promote version {version}" if version is not None else "promote"
    lock = lock_ready(ws, f"{what} to {to_env}")
    if shadow:
        pinned_shadow = lock.shadows.get(to_env)
        if pinned_shadow is None:
            raise OperationError(
                f"{to_env} has no shadow to promote "
                f"({ws.command(f'shadow VERSION --env {to_env}')})"
            )
        # The shadow is already in the target's registry: it was verified there when pinned.
        version, source_env = pinned_shadow.version, to_env
    if version is None:
        if from_env is None:
            raise OperationError(
                f"say which version: {ws.command('promote VERSION --to ENV')}, or --from ENV"
            )
        state = ws.registry(from_env).get_alias(from_env)
        if state is None:
            raise OperationError(f"nothing is live in {from_env}: promote a version there first")
        version, live_in_source = state.version, state
    chosen = candidate(ws, env=to_env, version=version, source_env=source_env)
    origin = chosen.version
    if pinned_shadow is not None and pinned_shadow.sha256 != origin.sha256:
        raise OperationError(
            f"version {version} in {to_env}'s registry (sha256 {origin.sha256[:12]}...) is not "
            f"the model pinned as {to_env}'s shadow (sha256 {pinned_shadow.sha256[:12]}...); "
            "refusing to promote it"
        )
    if live_in_source is not None and live_in_source.sha256 != origin.sha256:
        # The version was replaced after it went live (manifest and artifact rewritten together,
        # so it verifies): promoting it would carry an unreviewed model up the chain.
        raise OperationError(
            f"version {version} in {source_env}'s registry (sha256 {origin.sha256[:12]}...) is "
            f"not the model made live in {source_env} (sha256 {live_in_source.sha256[:12]}...); "
            "refusing to promote it"
        )

    target = ws.registry(to_env, write=True)
    live = target.get_alias(to_env)
    if live is not None and live.version == version and live.sha256 == origin.sha256:
        # Already live: nothing moves, so no gate applies (they guard moves, and one may no
        # longer hold: prod's require_live_in once staging moved on). This is how the command
        # an interrupted promotion names (`_interrupted_promotion`) finishes it, safe to repeat.
        return _already_live(ws, target, to_env, live, started=started)

    admitted = admit(ws, env=to_env, candidate=chosen, reason=reason, on_upload=on_upload)
    target, results = admitted.registry, admitted.gates

    previous: int | None = None
    for _ in range(CAS_ATTEMPTS):
        current = target.get_alias(to_env)
        if current is not None and current.version == version:
            # A concurrent promotion of the same version moved it first.
            return _already_live(ws, target, to_env, current, started=started, admitted=admitted)
        previous = None if current is None else current.version
        try:
            target.move_alias(
                to_env,
                version,
                expected=current,
                kind="promoted",
                actor=ws.actor,
                reason=reason,
                details={"env": to_env, "from_env": admitted.from_env},
            )
            break
        except ConcurrentUpdate:
            continue  # someone moved the alias meanwhile: re-read and promote over it
        except Exception as exc:
            raise _failed_move(ws, target, to_env, previous, version, exc) from exc
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the alias write may have landed
            raise _interrupted_promotion(ws, to_env, previous, version, exc) from exc
    else:
        raise OperationError(f"{to_env}: the alias kept changing; try again")
    try:
        lock_change = _sync_pin(ws, to_env, target)
    except (Exception, KeyboardInterrupt) as exc:
        raise _interrupted_promotion(ws, to_env, previous, version, exc) from exc
    return AliasChange(
        action="promote",
        env=to_env,
        version=version,
        sha256=origin.sha256,
        previous=previous,
        changed=True,
        from_env=admitted.from_env,
        copied=admitted.copied,
        gates=results,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        lock=lock_change,
    )


def _already_live(
    ws: Workspace,
    registry: Registry,
    env: str,
    state: AliasState,
    *,
    started: float,
    admitted: Admission | None = None,
) -> AliasChange:
    """A promotion that finds `env`'s alias (in `registry`) already on its version (`state`)
    moves nothing: it completes what a move interrupted before its audit event or its pin left
    undone (the event, rebuilt from the alias; the pin, written from the alias) and says what it
    changed."""
    try:
        registry.ensure_audited(state)
        lock_change = _sync_pin(ws, env, registry)
    except (Exception, KeyboardInterrupt) as exc:
        raise _interrupted_promotion(ws, env, state.previous, state.version, exc) from exc
    return AliasChange(
        action="promote",
        env=env,
        version=state.version,
        sha256=state.sha256,
        previous=state.version,
        changed=False,
        from_env=None if admitted is None else admitted.from_env,
        copied=admitted is not None and admitted.copied,
        gates=[] if admitted is None else admitted.gates,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        lock=lock_change,
    )


def _failed_move(
    ws: Workspace, registry: Registry, env: str, previous: int | None, version: int, exc: Exception
) -> BaseException:
    """What to tell after `move_alias` failed: nothing moved (the version failed verification,
    or the alias write failed), or the move may have landed (its audit event failed)."""
    try:
        now = registry.get_alias(env)
    except Exception:  # the store is still failing: whether the move landed is unknown
        return _interrupted_promotion(ws, env, previous, version, exc)
    if now is not None and now.version == version:
        return _interrupted_promotion(ws, env, previous, version, exc)
    return OperationError(f"{env}: cannot promote version {version}: {exc}; the alias did not move")


def _interrupted_promotion(
    ws: Workspace, env: str, previous: int | None, version: int, exc: BaseException
) -> BaseException:
    # Everything checkable was checked before the alias moved (gates, the copy, the lock file):
    # what fails or is interrupted here (the alias's write or its audit event, the pin's write)
    # may follow a move that landed. The command that finishes it names the version (a re-run
    # with --from or --shadow would promote whatever its source or the shadow pin says by then)
    # and, finding the version live, asks no gate again (`_already_live`): safe to repeat.
    before = "nothing" if previous is None else str(previous)
    return may_have_landed(
        ws,
        env,
        f"promotion {before} -> {version}",
        finish=f"promote {version} --to {env}",
        exc=exc,
    )


class NeverServed(Refused, OperationError):
    """`rollback --to N` named a version the environment never served. A rollback takes no
    gates: it returns only to a model the environment served (it passed the environment's gates
    when it went live); any other version goes live by promotion, gates first. Nothing moved."""


@dataclass(frozen=True)
class ServedVersions:
    """The versions an environment has served, as far as its alias and audit trail show, and
    the audit event files that could not be read (`AuditTrail.unreadable`), which may show more."""

    versions: frozenset[int]
    unreadable: tuple[str, ...] = ()


def served_versions(registry: Registry, env: str, current: AliasState) -> ServedVersions:
    """The versions `env` has served: where its alias is, its rollback stack, and every version
    its audit trail shows the alias moved to (promoted, rolled back)."""
    served = {current.version, *current.history}
    trail = registry.audit_trail(alias=env)
    for event in trail.events:  # each one's version an integer (`Registry.audit_trail`)
        if event.get("alias") == env and event.get("type") in ("promoted", "rolled_back"):
            served.add(event["version"])
    return ServedVersions(frozenset(served), tuple(trail.unreadable))


def _versions(numbers: Collection[int]) -> str:
    listed = [str(n) for n in sorted(numbers)]
    if len(listed) == 1:
        return f"version {listed[0]}"
    return f"versions {', '.join(listed[:-1])} and {listed[-1]}"


def version_exists(ws: Workspace, env: str, registry: Registry, version: int) -> bool:
    """Whether `version` was ever registered: it is in `env`'s `registry`, or in the registry
    where `env`'s versions are allocated (its chain start, decision 3), which never deletes one.
    A chain start these credentials cannot read (another account, not deployed) cannot say it
    was not: True."""
    if version in registry.list_versions():
        return True
    start = ws.config.env(env).chain_start
    if start == env:
        return False
    try:
        return version in ws.registry(start).list_versions()
    except (RegistryError, AwsError):
        return True


def rollback_target(
    ws: Workspace, registry: Registry, env: str, current: AliasState, to_version: int | None
) -> tuple[int, tuple[int, ...]]:
    """The version a rollback of `env` (whose registry is `registry`) goes to and the alias
    history it leaves behind: the one choice of target, on AWS (`sds.ops.aws_rollback`) and
    locally.

    Without `to_version` it pops the history stack; with it, the stack is cut back to just
    below the last occurrence of that version, or, for a version `env` served that is not on it
    (one it was rolled back from), the version it leaves is pushed, as a promotion pushes it: a
    plain rollback afterwards returns to where this one started. The versions `env` has served
    (`served_versions`, read only when needed: it lists the audit trail) bound `to_version`: a
    version that does not exist is an error (exit 1, as `show` and `promote` say it), one that
    exists but `env` never served is refused (exit 3), with the promotion to run instead, naming
    any audit event that could not be read. The commands its messages name are `ws.command`'s
    (with `--aws` on AWS).
    """
    served = partial(served_versions, registry, env, current)
    command = ws.command
    if to_version is None:
        if not current.history:
            others = set(served().versions) - {current.version}
            if not others:
                raise OperationError(
                    f"nothing earlier to roll back to: {env} has served only version "
                    f"{current.version}"
                )
            back = (
                f"{command(f'rollback --env {env} --to {min(others)}')} returns to it"
                if len(others) == 1
                else f"{command(f'rollback --env {env} --to VERSION')} returns to one of them"
            )
            raise OperationError(
                f"nothing earlier to roll back to: {env} serves version {current.version}, the "
                f"oldest on its rollback history (it has also served {_versions(others)}: "
                f"{back})"
            )
        return current.history[-1], current.history[:-1]
    if to_version in current.history:
        cut = len(current.history) - 1 - current.history[::-1].index(to_version)
        return to_version, current.history[:cut]
    if to_version == current.version:
        return to_version, current.history
    known = served()
    if to_version not in known.versions:
        if not version_exists(ws, env, registry, to_version):
            start = ws.config.env(env).chain_start
            where = f"{env}'s registry" + (
                "" if start == env else f", nor in {start}'s, where versions are registered"
            )
            # The same error (exit 1) as every command given a version that does not exist.
            raise VersionNotFound(
                f"version {to_version} is not in {where}: a rollback returns only to a version "
                f"{env} served ({_versions(known.versions)})"
            )
        unread = ""
        if known.unreadable:
            # The trail the refusal rests on is incomplete: say so, and where to look.
            count = len(known.unreadable)
            unread = (
                f"; {counted(count, 'audit event')} could not be read and may "
                f"show more, {'the first ' if count > 1 else ''}{known.unreadable[0]}"
            )
        raise NeverServed(
            f"version {to_version} was never live in {env} (it has served "
            f"{_versions(known.versions)}{unread}): a rollback returns only to a version {env} "
            f"served; to make version {to_version} live, promote it, gates first: "
            f"{command(f'promote {to_version} --to {env}')}"
        )
    return to_version, (*current.history, current.version)


def sync_env_pin(ws: Workspace, env: str, registry: Registry) -> LockChange:
    """Rewrite `env`'s pin in models.lock.json from its registry alias (under the file's lock);
    what it changed there."""
    return _sync_pin(ws, env, registry)


def rollback(
    ws: Workspace, *, env: str, to_version: int | None = None, reason: str = ""
) -> AliasChange:
    """Point `env` back at the version live before the current one (or at `to_version`)."""
    started = time.monotonic()
    registry = ws.registry(env, write=True)
    lock_ready(ws, f"roll back {env}")
    current = registry.get_alias(env)
    if current is None:
        raise OperationError(f"nothing is live in {env}: there is nothing to roll back")
    target_version, history = rollback_target(ws, registry, env, current, to_version)
    if target_version == current.version:
        registry.ensure_audited(current)  # a retry completes an interrupted move's audit
        unchanged = _sync_pin(ws, env, registry)
        return AliasChange(
            "rollback",
            env,
            current.version,
            current.sha256,
            current.version,
            False,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            lock=unchanged,
        )
    try:
        state = registry.move_alias(
            env,
            target_version,
            expected=current,
            kind="rolled_back",
            actor=ws.actor,
            reason=reason,
            history=history,
            details={"env": env},
        )
    except ConcurrentUpdate as exc:
        # Refused like the same loss on AWS: nothing moved, and a re-run acts on the new state.
        raise ConcurrentRollback(f"{env}: {exc}") from None
    except RegistryError as exc:
        raise OperationError(
            f"{env}: cannot roll back to version {target_version}: {exc}"
        ) from None
    except (Exception, KeyboardInterrupt) as exc:
        raise interrupted_rollback(ws, env, current.version, target_version, exc) from exc
    try:
        lock_change = _sync_pin(ws, env, registry)
    except (Exception, KeyboardInterrupt) as exc:
        raise interrupted_rollback(ws, env, current.version, target_version, exc) from exc
    return AliasChange(
        action="rollback",
        env=env,
        version=state.version,
        sha256=state.sha256,
        previous=current.version,
        changed=True,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        lock=lock_change,
    )


def interrupted_rollback(
    ws: Workspace, env: str, current: int | None, target: int, exc: BaseException
) -> BaseException:
    """What a rollback stopped after it began to move the alias raises (`may_have_landed`): a
    plain re-run would roll back one version too far, so it names `--to` the target."""
    return may_have_landed(
        ws,
        env,
        f"rollback {current} -> {target}",
        finish=f"rollback --env {env} --to {target}",
        exc=exc,
    )


def may_have_landed(
    ws: Workspace, env: str, move: str, *, finish: str, exc: BaseException
) -> BaseException:
    """What a promotion or rollback (`move`, e.g. "rollback 2 -> 1") stopped after it began to
    move `env`'s alias raises: the alias may already have moved, its audit event or the pin not
    yet be written. It names `finish`, the command (arguments to `ws.command`) that is safe to
    repeat and completes the move, its audit trail and the pin. An error becomes an
    `OperationError` (exit 1); an interruption (Ctrl-C, SIGTERM) stays one, with the same words,
    and its exit code (130, 143)."""
    command = ws.command(finish)
    if isinstance(exc, KeyboardInterrupt):
        return reworded(
            exc, f"{env}: {move} may have landed; finish it with: {command} (safe to repeat)"
        )
    return OperationError(
        f"{env}: {move} was interrupted ({exc}) and may have landed; finish it with: {command} "
        "(safe to repeat)"
    )


def flagged_phrase(metrics: Mapping[str, Any]) -> str:
    """Where a version's precision@alert was measured, from its manifest's metrics: at the share
    of the holdout its threshold flagged, against the alert rate it was chosen for ("at 2.03%
    flagged (target 1%)"). Tied scores at the threshold are all flagged, so the share can exceed
    the target. Manifests from before the share was recorded say only the target."""

    def number(key: str) -> float | None:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    flagged, target = number("flagged_at_alert_rate"), number("alert_rate")
    aimed = None if target is None else f"{target * 100:g}%"
    if flagged is None:
        return "" if aimed is None else f"at the threshold for {aimed} (share flagged not recorded)"
    return f"at {flagged:.2%} flagged" + ("" if aimed is None else f" (target {aimed})")


@dataclass(frozen=True)
class ModelTable:
    """What `sds models` lists: a row per version in an environment's registry, and every
    environment whose live version could not be read, with why (`live_unknown`): the rows'
    `live_in` leave those out."""

    rows: list[dict[str, Any]]
    live_unknown: dict[str, str] = field(default_factory=dict)


def model_table(ws: Workspace, env: str) -> ModelTable:
    """Versions in `env`'s registry with key metrics and the environments serving each: those of
    `env`'s promotion chain (version numbers count each chain's own versions, so another chain's
    version 3 is another model).

    A version whose manifest cannot be read (corrupt, or not describing that version) is listed
    too, with its metrics empty and `problem` saying what is wrong, so one bad version hides none
    of the others; `problem` is None for every readable one. Likewise an environment whose live
    version cannot be read (its alias corrupt, its registry unreachable) hides no version: it is
    in `live_unknown`, with the reason, as `env` is when its alias points at a version its
    registry does not hold. One that is not deployed serves nothing: no reason.
    """
    registry = ws.registry(env)
    numbers = registry.list_versions()  # `env`'s own registry unreadable: that is the error
    chain = ws.config.env(env).chain_start
    live: dict[int, list[str]] = {}
    live_unknown: dict[str, str] = {}
    for name, config in ws.config.environments.items():
        if config.chain_start != chain:
            continue
        try:
            state = live_version(ws, name)
        except NotDeployed:
            continue  # its stacks publish nothing: it serves nothing, and that is not a problem
        except (RegistryError, AwsError) as exc:
            live_unknown[name] = str(exc)  # corrupt, or unreachable with these credentials
            continue
        if state is not None and name == env and state.version not in numbers:
            live_unknown[name] = (
                f"its registry alias points at version {state.version}, which is not in "
                f"{registry.uri}"
            )
        elif state is not None:
            live.setdefault(state.version, []).append(name)
    rows = []
    for number in numbers:
        row: dict[str, Any] = {"version": number}
        try:
            info = registry.get_version(number)
        except RegistryError as exc:
            manifest: Mapping[str, Any] = {}
            metrics: Mapping[str, Any] = {}
            row.update(sha256=None, problem=str(exc))
        else:
            manifest, metrics = info.manifest, info.metrics
            row.update(sha256=info.sha256, problem=None)
        rows.append(
            {
                **row,
                "created_at": manifest.get("created_at"),
                "created_by": manifest.get("created_by"),
                "roc_auc": metrics.get("roc_auc"),
                "pr_auc": metrics.get("pr_auc"),
                "precision_at_alert_rate": metrics.get("precision_at_alert_rate"),
                "flagged_at_alert_rate": metrics.get("flagged_at_alert_rate"),
                "expected_calibration_error": metrics.get("expected_calibration_error"),
                "live_in": live.get(number, []),
            }
        )
    return ModelTable(rows, live_unknown)


def history(ws: Workspace, env: str) -> AuditTrail:
    """`env`'s audit trail: its events, and the event files that could not be read."""
    return ws.registry(env).audit_trail(alias=env)
