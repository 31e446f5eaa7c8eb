"""Rollback against a deployed environment: switch Lambda alias `live`, no redeploy.

`sds rollback --aws --env ENV [--to N] --reason TEXT` does, in this order:

1. checks that models.lock.json can take the pin (step 6) before anything moves; picks the
   target model version from the environment's registry alias (its previous version, or N, a
   version the environment served: `sds.ops.promotion.rollback_target`) and finds the
   published Lambda version whose environment pins exactly that model (MODEL_VERSION and
   MODEL_SHA256); if no deploy ever published one, it refuses and says so;
2. makes sure that version can serve: one GetFunctionConfiguration; if Lambda reports it
   `Inactive` (a SnapStart snapshot deleted or failed to regenerate) it is invoked once, which
   starts its re-creation, and the command waits, with a line on stderr every few seconds, until
   it is `Active` (`Pending`: it only waits). `Failed`, a re-creation that fails, or no `Active`
   within the activation timeout refuse the rollback (exit 3) before anything has moved
   (`sds.kernel.activation` cites the AWS documentation this follows);
3. stops any in-flight CodeDeploy deployment of the alias's deployment group, without
   CodeDeploy's own rollback (which would race the alias switch below);
4. points `live` at that version with no routing weights (an interrupted canary leaves some);
5. moves the registry alias by compare-and-swap, with an audit event naming who, why, both
   Lambda versions, the target's state, the stopped deployment and how long it took (if the
   registry alias is already there and only `live` differs, e.g. after a stopped canary, the
   event is `live_switched` and the registry alias stays);
6. rewrites the pin in models.lock.json, so the next `cdk deploy` keeps the rollback.

Concurrent rollbacks of one environment are serialized by a lease object next to the alias
(created with If-None-Match, taken over and released with If-Match, expiring if its holder dies),
so the Lambda alias and the registry alias always move in the same order; a rollback waiting for
its target to become Active renews its lease meanwhile, and checks it is still its own before it
switches `live`. A rollback that finds the lease held says at once whose it is and until when,
waits (with backoff) for its release or expiry up to `--lease-timeout`, or, told the lease id of
a holder known dead (`--break-lease`), takes it over at once, audited as `lease_broken`.
Promotions do not touch the Lambda alias
(a deploy does) and take no lease; if one moves the registry alias between steps 1 and 5, the
Lambda alias is put back and the rollback is re-planned (`--to N`) or refused (a relative
rollback must not pop a history that just changed under it).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sds.kernel.activation import (
    DEFAULT_TIMEOUT_S,
    Activation,
    Say,
    VersionNotReady,
    ensure_active,
)
from sds.kernel.errors import Refused
from sds.kernel.lock import Pin
from sds.kernel.registry import ConcurrentUpdate, Registry, RegistryError, Version
from sds.kernel.registry.core import now_iso
from sds.kernel.registry.store import NotFound, ObjectStore, PreconditionFailed
from sds.kernel.retention import IN_FLIGHT_DEPLOYMENT_STATUSES
from sds.kernel.settings import served_model
from sds.ops.aws import AwsError, Clients, error_code
from sds.ops.promotion import (
    CAS_ATTEMPTS,
    ConcurrentRollback,
    LockChange,
    OperationError,
    interrupted_rollback,
    lock_ready,
    rollback_target,
    sync_env_pin,
)
from sds.ops.workspace import Workspace

IN_FLIGHT = list(IN_FLIGHT_DEPLOYMENT_STATUSES)
LEASE_TTL_S = 60.0
ACTIVATION_TIMEOUT_S = DEFAULT_TIMEOUT_S  # `sds rollback --activation-timeout` changes it


class TargetNotServable(Refused, OperationError):
    """The Lambda version a rollback would switch `live` to cannot serve (Failed, its re-creation
    failed, or it did not become Active in time). Nothing was switched or moved."""

    def __init__(self, message: str, cause: VersionNotReady) -> None:
        super().__init__(message)
        self.cause = cause

    def details(self) -> dict[str, Any]:
        return self.cause.details()


@dataclass(frozen=True)
class LiveRollback:
    env: str
    version: int
    sha256: str
    previous: int | None
    changed: bool
    function: str
    alias: str
    lambda_from: str
    lambda_to: str
    stopped_deployments: list[str] = field(default_factory=list)
    duration_ms: float = 0.0
    target_state: str = ""  # the state Lambda first reported for lambda_to (Active, Inactive, ...)
    activation_ms: float = 0.0  # how long the rollback waited for lambda_to to become Active
    lock: LockChange | None = None  # what it changed in models.lock.json
    lease_waited_ms: float = 0.0  # how long it waited for another rollback's lease
    broken_lease: dict[str, Any] | None = None  # the dead holder's lease it broke (--break-lease)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": "rollback",
            "target": "aws",
            "env": self.env,
            "version": self.version,
            "sha256": self.sha256,
            "previous": self.previous,
            "changed": self.changed,
            "function": self.function,
            "alias": self.alias,
            "lambda_from": self.lambda_from,
            "lambda_to": self.lambda_to,
            "stopped_deployments": self.stopped_deployments,
            "duration_ms": self.duration_ms,
            "target_state": self.target_state,
            "activation_ms": self.activation_ms,
            "lock_file": None if self.lock is None else self.lock.to_dict(),
            "lease_waited_ms": self.lease_waited_ms,
            "broken_lease": self.broken_lease,
        }


# Lease --------------------------------------------------------------------------------------

LEASE_WAIT_S = 2 * LEASE_TTL_S
"""How long a rollback waits for another one's lease unless told otherwise (`--lease-timeout`):
a dead holder's lease expires within `LEASE_TTL_S`; a live one renews it while it waits for its
target, and this one gives up (naming the holder) rather than wait for it indefinitely."""
LEASE_POLL_S = (0.25, 2.0)
"""The first and the longest pause between two reads of a held lease (backoff with jitter)."""
LEASE_REPORT_S = 5.0
"""At most this long between two progress lines while the lease stays held."""
LEASE_ID_CHARS = 12
"""How much of a holder's token is its lease id (shown while waiting, typed to break it)."""


def lease_key(model: str, env: str) -> str:
    # Under aliases/ (the promoter policy's alias prefix); not *.json, so it is never an alias.
    return f"models/{model}/aliases/{env}.lease"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its document says: enough to decide whether to wait or break it."""

    holder: str
    token: str
    since: str  # when it took the lease (ISO 8601, UTC)
    renewed: str  # when it last renewed it
    expires: float  # seconds since the epoch, by the holder's clock

    @property
    def id(self) -> str:
        """The lease id an operator types to break this lease (`--break-lease ID`)."""
        return self.token[:LEASE_ID_CHARS]

    def expires_in(self) -> float:
        return self.expires - time.time()

    def matches(self, lease_id: str) -> bool:
        return len(lease_id) >= LEASE_ID_CHARS and self.token.startswith(lease_id.lower())

    def describe(self) -> str:
        expiry = max(0.0, self.expires_in())
        return (
            f"held by {self.holder} since {_clock_time(self.since)} "
            f"(lease id {self.id}, expires in {expiry:.0f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "holder": self.holder,
            "lease_id": self.id,
            "since": self.since,
            "renewed": self.renewed,
            "expires": datetime.fromtimestamp(self.expires, UTC).isoformat().replace("+00:00", "Z"),
        }


def read_holder(data: bytes) -> Holder | None:
    """The live holder a lease document names; None if it was released (or is unreadable: no
    holder writes such a document, so nobody is waiting on it)."""
    try:
        taken = json.loads(data)
        holder = taken.get("holder")
        if not holder:
            return None
        since = str(taken.get("since", "?"))
        return Holder(
            holder=str(holder),
            token=str(taken.get("token", "")),
            since=since,
            renewed=str(taken.get("renewed", since)),
            expires=float(taken.get("expires", 0)),
        )
    except (ValueError, TypeError, AttributeError):
        return None


class Lease:
    """A held lease: `renew()` pushes its expiry out while its holder is still working."""

    def __init__(self, store: ObjectStore, key: str, *, holder: str, token: str, ttl_s: float):
        self.store = store
        self.key = key
        self.holder = holder
        self.token = token
        self.ttl_s = ttl_s
        self.etag = ""
        self.since = now_iso()
        self.renewed_at = 0.0
        self.waited_s = 0.0  # how long it waited for another holder before taking it
        self.broken: Holder | None = None  # the holder whose lease it broke to take it

    def document(self) -> bytes:
        held = {
            "holder": self.holder,
            "token": self.token,
            "since": self.since,
            "renewed": now_iso(),
            "expires": time.time() + self.ttl_s,
        }
        return json.dumps(held, sort_keys=True).encode()

    def renew(self, *, force: bool = False) -> None:
        """Extend the lease (at most every third of its lifetime; cheap to call often). `force`
        writes now: a compare-and-swap that proves the lease is still this holder's before a step
        that must not run twice at once (switching `live`)."""
        if not force and time.monotonic() - self.renewed_at < self.ttl_s / 3:
            return
        try:
            self.etag = self.store.put(self.key, self.document(), if_match=self.etag)
        except PreconditionFailed:
            raise ConcurrentRollback(
                f"{self.key} was taken over by another command while this one ran (its lease "
                "expired, or someone broke it with --break-lease); nothing was switched: check "
                "`sds --aws status` and run the rollback again"
            ) from None
        self.renewed_at = time.monotonic()


@contextmanager
def lease(
    store: ObjectStore,
    key: str,
    *,
    holder: str,
    ttl_s: float = LEASE_TTL_S,
    wait_s: float = LEASE_WAIT_S,
    what: str = "",
    say: Say | None = None,
    break_id: str | None = None,
    on_break: Callable[[Holder], None] | None = None,
    how_to_break: str = "",
    poll_s: tuple[float, float] | None = None,
    report_s: float | None = None,
) -> Iterator[Lease]:
    """Hold `key` exclusively: at most one holder at a time, and a dead holder's lease expires.

    A held lease is waited for (up to `wait_s`, then `ConcurrentRollback` naming its holder):
    `say` gets a line at once naming the holder, since when and when its lease expires, one every
    `report_s` seconds, and one when it is taken. Reads back off from `poll_s[0]` to `poll_s[1]`
    with jitter, and never sleep past the lease's expiry. `break_id` takes over the lease of
    exactly that holder (its lease id, as the first line showed it) without waiting, for a holder
    the operator knows is dead; `on_break` is called (to audit it) before anything else runs,
    and if it fails the lease is released. Ctrl-C while waiting: `KeyboardInterrupt` after a
    line saying so; nothing is held yet, so nothing is left behind.
    """
    say = say or _silent
    what = what or key
    first_poll, longest_poll = poll_s or LEASE_POLL_S
    report_s = LEASE_REPORT_S if report_s is None else report_s
    held = Lease(store, key, holder=holder, token=uuid.uuid4().hex, ttl_s=ttl_s)
    started = time.monotonic()
    pause = first_poll
    shown: Holder | None = None  # the holder the last line named
    line_at = started
    taken: Holder | None = None
    breaking = False
    try:
        while True:
            try:
                current = store.get(key)
            except NotFound:
                current = None
            taken = read_holder(current.data) if current is not None else None
            expired = taken is not None and taken.expires_in() < 0
            breaking = (
                taken is not None and not expired and break_id is not None
                and taken.matches(break_id)
            )  # fmt: skip
            try:
                if current is None:
                    held.etag = store.put(key, held.document(), if_none_match=True)
                elif taken is None or expired or breaking:
                    held.etag = store.put(key, held.document(), if_match=current.etag)
            except PreconditionFailed:
                continue  # another command wrote it meanwhile: read who holds it now
            if held.etag:
                break
            assert taken is not None  # only a live holder's lease is not taken above
            elapsed = time.monotonic() - started
            if break_id is not None and not breaking:
                raise ConcurrentRollback(
                    f"{what} is {taken.describe()}, not lease id {break_id}: nothing was broken "
                    "or moved. Check who holds it now before breaking anything"
                )
            if elapsed >= wait_s:
                still = f"still {taken.describe()} after {elapsed:.0f} s"
                raise ConcurrentRollback(
                    f"{what} is {still if wait_s > 0 else taken.describe()}; nothing was moved. Run the "
                    f"command again when it is done{_break_hint(how_to_break, taken)}"
                )
            if shown is None or shown.token != taken.token:
                prefix = "waiting for" if shown is None else f"  [{elapsed:4.0f} s] now waiting for"
                say(f"{prefix} {what}, {taken.describe()}; Ctrl-C to stop")
                if shown is None and how_to_break:
                    say(f"  if that command is known dead: {how_to_break.format(id=taken.id)}")
                shown, line_at = taken, time.monotonic()
            elif time.monotonic() - line_at >= report_s:
                expiry = max(0.0, taken.expires_in())
                say(
                    f"  [{elapsed:4.0f} s] still held by {taken.holder} (expires in {expiry:.0f} s)"
                )
                line_at = time.monotonic()
            wait = pause * random.uniform(0.8, 1.2)
            # Wake up just after it expires (a dead holder's lease), and not after the deadline.
            wait = min(wait, max(0.05, taken.expires_in() + 0.05), max(0.0, wait_s - elapsed))
            time.sleep(wait)
            pause = min(longest_poll, pause * 2)
    except KeyboardInterrupt:
        if shown is not None:
            elapsed = time.monotonic() - started
            say(f"  [{elapsed:4.0f} s] interrupted while waiting for {what}; nothing was moved")
        raise
    held.renewed_at = time.monotonic()
    held.waited_s = time.monotonic() - started if shown is not None else 0.0
    try:
        if taken is not None and breaking:
            held.broken = taken
            if on_break is not None:
                on_break(taken)
            say(f"broke {what}, {taken.describe()}: it is this command's now")
        elif shown is not None:
            how = "expired" if taken is not None else "was released"
            say(f"  [{held.waited_s:4.0f} s] {what} {how}: going on")
        elif break_id is not None:
            say(f"{what} is not held (released or expired): nothing to break, going on")
        yield held
    finally:
        released = json.dumps({"holder": None, "released_by": holder, "at": now_iso()}).encode()
        # If it expired and someone took it over, it is theirs now: leave it.
        with suppress(PreconditionFailed):
            store.put(key, released, if_match=held.etag)


def _break_hint(how_to_break: str, taken: Holder) -> str:
    if not how_to_break:
        return ""
    return f"; if that command is known dead: {how_to_break.format(id=taken.id)}"


def _clock_time(iso: str) -> str:
    """12:00:03 UTC from an ISO 8601 timestamp (as written by `now_iso`), else the text itself."""
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%H:%M:%S UTC")
    except ValueError:
        return iso


# Lambda and CodeDeploy ----------------------------------------------------------------------


def serving_versions(lambda_client: Any, function: str, model: Version) -> list[str]:
    """Published versions of `function` whose environment pins exactly `model`, oldest first."""
    found: list[str] = []
    paginator = lambda_client.get_paginator("list_versions_by_function")
    for page in paginator.paginate(FunctionName=function):
        for config in page.get("Versions", []):
            if config.get("Version") == "$LATEST":
                continue
            variables: Mapping[str, str] = config.get("Environment", {}).get("Variables", {})
            if served_model(variables) == Pin(version=model.number, sha256=model.sha256):
                found.append(str(config["Version"]))
    return sorted(found, key=int)


def stop_deployments(
    codedeploy: Any,
    *,
    application: str,
    group: str,
    wait_s: float = 30.0,
    poll_s: float = 0.5,
) -> list[str]:
    """Stop every in-flight deployment of `group` and wait until CodeDeploy reports it stopped."""
    response = codedeploy.list_deployments(
        applicationName=application,
        deploymentGroupName=group,
        includeOnlyStatuses=IN_FLIGHT,
    )
    stopped: list[str] = []
    for deployment_id in response.get("deployments", []):
        # Without CodeDeploy's own rollback: it would move `live` back to the deployment's
        # original version, racing the switch this command makes next.
        answer = codedeploy.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=False)
        deadline = time.monotonic() + wait_s
        status = str(answer.get("status", ""))
        while status == "Pending":
            info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
            if info.get("status") not in IN_FLIGHT:
                break
            if time.monotonic() > deadline:
                raise AwsError(
                    f"CodeDeploy deployment {deployment_id} did not stop within {wait_s:.0f} s; "
                    "nothing was switched: check it in the console and run the rollback again"
                )
            time.sleep(poll_s)
        stopped.append(deployment_id)
    return stopped


def _switch(lambda_client: Any, function: str, alias: str, version: str, revision: str) -> str:
    kwargs: dict[str, Any] = {
        "FunctionName": function,
        "Name": alias,
        "FunctionVersion": version,
        "RoutingConfig": {"AdditionalVersionWeights": {}},
    }
    if revision:
        kwargs["RevisionId"] = revision
    try:
        response = lambda_client.update_alias(**kwargs)
    except Exception as exc:
        if error_code(exc) == "PreconditionFailedException":
            raise ConcurrentRollback(
                f"alias {alias} of {function} changed while this rollback ran (a deploy?); "
                "nothing was switched: run the rollback again"
            ) from None
        raise
    return str(response.get("RevisionId", ""))


# The command --------------------------------------------------------------------------------


def rollback_live(
    ws: Workspace,
    *,
    env: str,
    to_version: int | None = None,
    reason: str = "",
    clients: Clients | None = None,
    stop_wait_s: float = 30.0,
    activation_timeout_s: float = ACTIVATION_TIMEOUT_S,
    lease_timeout_s: float = LEASE_WAIT_S,
    break_lease: str | None = None,
    say: Say | None = None,
) -> LiveRollback:
    """Switch `live` back (see the module docstring); `say` receives the lines of the two waits
    (for another rollback's lease, for the target to become Active; none when neither waits).
    `break_lease` takes over the lease of the holder with that lease id (one known dead) at once,
    audited as a `lease_broken` event; any other holder is refused."""
    started = time.monotonic()
    ws.ensure_writable(env)  # an environment in another account takes credentials there
    lock_ready(ws, f"roll back {env}")  # the pin is written last: it must be writable first
    clients = clients or ws.discovery.clients
    function = ws.discovery.get(env, "function-name")
    alias = ws.discovery.get(env, "alias-name")
    application = ws.discovery.get(env, "codedeploy-application")
    group = ws.discovery.get(env, "deployment-group")
    registry = ws.registry(env)
    lambda_client = clients["lambda"]
    stopped: list[str] = []
    ready: dict[str, Activation] = {}  # Lambda versions found (or made) Active by this rollback

    def audit_break(broken: Holder) -> None:
        current = registry.get_alias(env)
        registry.record_event(
            "lease_broken",
            version=current.version if current is not None else 0,
            actor=ws.actor,
            reason=reason,
            alias=env,
            details={"env": env, "target": "aws", "lease": held_key, "broken": broken.to_dict()},
        )

    held_key = lease_key(ws.model, env)
    with lease(
        registry.store,
        held_key,
        holder=ws.actor,
        wait_s=lease_timeout_s,
        what=f"{env}'s rollback lease",
        say=say,
        break_id=break_lease,
        on_break=audit_break,
        how_to_break="run this rollback again with --break-lease {id} (audited)",
    ) as held:
        for _ in range(CAS_ATTEMPTS):
            current = registry.get_alias(env)
            if current is None:
                raise OperationError(f"nothing is live in {env}: there is nothing to roll back")
            target_version, history = rollback_target(ws, registry, env, current, to_version)
            # The manifest names the sha256 to look for; `move_alias` verifies every artifact
            # before the registry alias moves (and `live` is put back if that fails).
            target = _manifest(registry, env, target_version)
            candidates = serving_versions(lambda_client, function, target)
            live = get_live_alias(lambda_client, function, alias)
            before = str(live["FunctionVersion"])
            routed = bool(live.get("RoutingConfig", {}).get("AdditionalVersionWeights"))
            if not candidates:
                raise OperationError(
                    f"no published version of {function} serves model version {target_version} "
                    f"(sha256 {target.sha256[:12]}...): deploy it first (sds --aws promote "
                    f"{target_version} --to {env}, then cdk deploy '{env}/*'); nothing was changed"
                )
            # Keep the current code if it already serves the target model; else the newest build.
            chosen = before if before in candidates else candidates[-1]
            if target_version == current.version:
                registry.ensure_audited(current)  # a retry completes an interrupted move's audit
            if target_version == current.version and chosen == before and not routed:
                unchanged = sync_env_pin(ws, env, registry)
                return LiveRollback(
                    env, current.version, current.sha256, current.version, False,
                    function, alias, before, before, stopped, _ms(started), lock=unchanged,
                    lease_waited_ms=_ms_of(held.waited_s), broken_lease=_broken(held),
                )  # fmt: skip
            if chosen not in ready:
                # Before anything moves: a version that cannot serve must never get `live`.
                ready[chosen] = _ensure_servable(
                    lambda_client, env=env, function=function, version=chosen,
                    model_version=target_version, timeout_s=activation_timeout_s,
                    say=say, heartbeat=held.renew,
                )  # fmt: skip
            activation = ready[chosen]
            if not stopped:
                stopped = stop_deployments(
                    clients["codedeploy"], application=application, group=group, wait_s=stop_wait_s
                )
                live = get_live_alias(lambda_client, function, alias)  # a stop may have moved it
                before = str(live["FunctionVersion"])
            # Still this command's lease (not expired, not broken by someone who thought it
            # dead): else another rollback may be moving `live` too.
            held.renew(force=True)
            revision = _switch(lambda_client, function, alias, chosen, live.get("RevisionId", ""))
            details = {
                "env": env,
                "target": "aws",
                "function": function,
                "function_alias": alias,
                "lambda_from": before,
                "lambda_to": chosen,
                "lambda_to_state": activation.initial,
                "activation_ms": round(activation.waited_s * 1000, 1),
                "stopped_deployments": stopped,
                "lease_waited_ms": _ms_of(held.waited_s),
            }
            if target_version == current.version:
                # The registry already says so: only `live` had drifted (e.g. a stopped canary).
                registry.record_event(
                    "live_switched",
                    version=target_version,
                    actor=ws.actor,
                    reason=reason,
                    alias=env,
                    details={
                        **details,
                        "from_version": current.version,
                        "duration_ms": _ms(started),
                    },
                )
                state_version, state_sha, previous = (
                    current.version,
                    current.sha256,
                    current.version,
                )
                break
            try:
                state = registry.move_alias(
                    env,
                    target_version,
                    expected=current,
                    kind="rolled_back",
                    actor=ws.actor,
                    reason=reason,
                    history=history,
                    details={**details, "duration_ms": _ms(started)},
                )
            except ConcurrentUpdate:
                # A promotion moved the registry alias meanwhile: put `live` back as it was.
                _switch(lambda_client, function, alias, before, revision)
                if to_version is None:
                    raise ConcurrentRollback(
                        f"{env}: a promotion moved the registry alias while this rollback ran; "
                        f"live is back on Lambda version {before}. Check `{ws.command(f'history --env {env}')}` "
                        "and run the rollback again (with --to VERSION to be explicit)"
                    ) from None
                continue
            except RegistryError as exc:
                # The target's artifacts failed verification: put `live` back as it was.
                _switch(lambda_client, function, alias, before, revision)
                raise OperationError(
                    f"{env}: cannot roll back to version {target_version}: {exc}; "
                    f"live is back on Lambda version {before}"
                ) from None
            except (Exception, KeyboardInterrupt) as exc:
                # The alias write or its audit event failed midway: the move may have landed.
                raise interrupted_rollback(ws, env, current.version, target_version, exc) from exc
            state_version, state_sha, previous = state.version, state.sha256, current.version
            break
        else:
            raise ConcurrentRollback(f"{env}: the registry alias kept changing; try again")
    try:
        lock_change = sync_env_pin(ws, env, registry)
    except (Exception, KeyboardInterrupt) as exc:
        raise interrupted_rollback(ws, env, previous, state_version, exc) from exc
    return LiveRollback(
        env, state_version, state_sha, previous, True,
        function, alias, before, chosen, stopped, _ms(started),
        activation.initial, round(activation.waited_s * 1000, 1), lock=lock_change,
        lease_waited_ms=_ms_of(held.waited_s), broken_lease=_broken(held),
    )  # fmt: skip


def _ensure_servable(
    lambda_client: Any,
    *,
    env: str,
    function: str,
    version: str,
    model_version: int,
    timeout_s: float,
    say: Say | None,
    heartbeat: Callable[[], None],
) -> Activation:
    """The target Lambda version, Active (re-activated and waited for if need be), or a refusal
    that says what Lambda reported and what to do."""
    try:
        return ensure_active(
            lambda_client,
            function,
            version,
            timeout_s=timeout_s,
            say=say or _silent,
            heartbeat=heartbeat,
        )
    except VersionNotReady as exc:
        state = exc.state
        target = (
            f"{env}: target Lambda version {version} of {function} (model version {model_version})"
        )
        nothing = "nothing was switched or moved"
        if exc.timed_out:
            message = (
                f"{target} is still {state.state} after {exc.waited_s:.0f} s ({state.why()}); "
                f"{nothing}. Lambda goes on re-creating it: run the same rollback again to keep "
                "waiting, or give it longer with --activation-timeout SECONDS"
            )
        else:
            if exc.recreation_failed:
                cause = (
                    f"went back to Inactive after {exc.waited_s:.0f} s ({state.why()}): "
                    "Lambda could not re-create it"
                )
            elif state.snapstart:
                cause = (
                    f"is {state.state} ({state.why()}): running its initialization code or "
                    "creating its SnapStart snapshot failed"
                )
            else:
                cause = f"is {state.state} ({state.why()}): Lambda could not provision it"
            message = (
                f"{target} {cause}, so it cannot serve; {nothing}. Roll back to another version "
                f"(--to N), or deploy model version {model_version} again so that Lambda "
                f"publishes a fresh version (docs/rollback.md, 'When the target cannot serve')"
            )
        raise TargetNotServable(message, exc) from None


def _silent(line: str) -> None:
    del line


def _manifest(registry: Registry, env: str, version: int) -> Version:
    try:
        return registry.get_version(version)
    except RegistryError as exc:
        raise OperationError(f"{env}: cannot roll back to version {version}: {exc}") from None


def get_live_alias(lambda_client: Any, function: str, alias: str) -> dict[str, Any]:
    """GetAlias, with a missing alias explained as an undeployed Inference stack."""
    try:
        return dict(lambda_client.get_alias(FunctionName=function, Name=alias))
    except Exception as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise AwsError(
                f"alias {alias!r} of {function} not found: is the Inference stack deployed?"
            ) from None
        raise


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _ms_of(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _broken(held: Lease) -> dict[str, Any] | None:
    return held.broken.to_dict() if held.broken is not None else None
