"""`sds status`: what each environment serves, according to everything that has a say.

Three places name the model version an environment serves, and they should agree:

- the **pin** in models.lock.json: what the next `cdk deploy` deploys (promote and rollback
  write it);
- the **registry alias** named after the environment: what promote and rollback last decided;
- on AWS, the **Lambda alias** `live`: what the deployed function actually serves (the model
  version and sha256 are in the environment of the published version it points at), plus any
  CodeDeploy deployment still moving it.

The shadow pin (`sds shadow`) is compared the same way with the challenger that published version
loads (`SHADOW_MODEL_*`): a shadow pinned but never deployed scores nothing.

Locally the API (`sds serve`) follows the pin, so pin and registry alias are the whole story.
`environment_status` reads them without changing anything and explains every disagreement with
what to do about it. Each version pin, shadow pin and registry alias name is looked up in the
environment's registry too: one whose manifest or an artifact is missing (deleted, or never
completely written) cannot be loaded, whatever agrees on it (`sds show` checks its bytes). A
deployment in progress is expected to disagree for a while: the state is then `deploying`, not a
warning.

An environment whose stacks publish nothing in SSM is `not deployed` (a fact status reports, with
the stack to deploy). One that cdk.json places in another account than the caller's credentials
is `other account`: its registry alias, read through its promotion source role, is compared with
the pin, and its Lambda alias and deployments are not read, since that takes credentials in its
account (a fact too, naming that account). One that could not be read at all (credentials,
network, a registry bucket that is gone) is `unreachable`, with the cause: status could not look,
which the CLI makes an error. A registry alias that was read but is not what the registry writes
(edited by hand, cut short) is `alias corrupt`, said in the registry's words, as models.lock.json
that cannot be read is `pin unreadable`: the rest is still read and shown, and the CLI makes
either an error too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sds.kernel.aws.errors import explain
from sds.kernel.lock import LockFileError, Pin, read_lock
from sds.kernel.registry import (
    AliasState,
    IntegrityError,
    Registry,
    RegistryError,
    VersionNotFound,
)
from sds.kernel.retention import appspec_versions
from sds.kernel.settings import model_pins
from sds.ops.aws import AwsError, Clients, NotDeployed
from sds.ops.aws_rollback import IN_FLIGHT, get_live_alias
from sds.ops.workspace import Workspace, command_prefix

IN_SYNC = "in sync"
DEPLOYING = "deploying"
OUT_OF_SYNC = "out of sync"
EMPTY = "nothing promoted"
UNREACHABLE = "unreachable"
NOT_DEPLOYED = "not deployed"
OTHER_ACCOUNT = "other account"
LOCK_UNREADABLE = "pin unreadable"
ALIAS_CORRUPT = "alias corrupt"


@dataclass(frozen=True)
class ServedVersion:
    """One published Lambda version behind the alias, the model its environment pins and the
    shadow it loads beside it, if any."""

    function_version: str
    weight: float
    model_version: int | None
    sha256: str | None
    shadow: Pin | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "function_version": self.function_version,
            "weight": self.weight,
            "model_version": self.model_version,
            "sha256": self.sha256,
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
        }


@dataclass(frozen=True)
class LiveAlias:
    function: str
    alias: str
    served: list[ServedVersion]  # the alias's version first, then any canary weights

    @property
    def primary(self) -> ServedVersion:
        return self.served[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "alias": self.alias,
            "function_version": self.primary.function_version,
            "model_version": self.primary.model_version,
            "sha256": self.primary.sha256,
            "shadow": None if self.primary.shadow is None else self.primary.shadow.to_dict(),
            "routing": [s.to_dict() for s in self.served[1:]],
        }


@dataclass(frozen=True)
class Deployment:
    id: str
    status: str
    created: str
    from_version: str | None
    to_version: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created": self.created,
            "from_function_version": self.from_version,
            "to_function_version": self.to_version,
        }


@dataclass(frozen=True)
class StoredVersion:
    """A version as the environment's registry holds it: complete, with its sha256, or not
    usable, with what is wrong (`problem`, a phrase: "is not in s3://...")."""

    sha256: str | None = None
    problem: str | None = None


@dataclass
class EnvironmentStatus:
    env: str
    target: str
    registry_uri: str | None = None
    pin: Pin | None = None
    # The challenger the next deploy loads beside the pinned model (`sds shadow`), if any.
    shadow: Pin | None = None
    alias: AliasState | None = None
    # Each version the pin, the shadow pin and the alias name, as the registry holds it.
    stored: dict[int, StoredVersion] = field(default_factory=dict)
    live: LiveAlias | None = None
    deployments: list[Deployment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Could not be read (credentials, network, access, a bucket that is gone): the cause.
    error: str | None = None
    # Read, and not deployed here: which SSM parameter is missing and the stack to deploy.
    not_deployed: str | None = None
    # In another account than the caller's credentials (cdk.json): its Lambda alias and
    # deployments were not read, and this says with whose credentials they are.
    other_account: str | None = None
    # models.lock.json cannot be read (a merge conflict, say): the registry and Lambda are
    # still shown, and the problem is the first warning.
    lock_error: str | None = None
    # The registry alias was read and is not an alias (the registry's words): the pin and the
    # Lambda are still shown, and the problem is a warning, after the lock file's.
    alias_error: str | None = None

    @property
    def state(self) -> str:
        if self.error is not None:
            return UNREACHABLE
        if self.lock_error is not None:
            return LOCK_UNREADABLE
        if self.alias_error is not None:
            return ALIAS_CORRUPT
        if self.not_deployed is not None:
            return NOT_DEPLOYED
        if self.other_account is not None:
            return OTHER_ACCOUNT
        if self.warnings:
            return OUT_OF_SYNC
        if self.deployments:
            return DEPLOYING
        if self.pin is None and self.alias is None:
            return EMPTY
        return IN_SYNC

    @property
    def ok(self) -> bool:
        """Nothing to fix: every place agrees (an environment not deployed agrees when nothing
        is pinned or promoted for it; one in another account when its pin and registry alias
        agree, all that can be seen from here)."""
        if self.state in (NOT_DEPLOYED, OTHER_ACCOUNT):
            return not self.warnings
        return self.state in (IN_SYNC, DEPLOYING, EMPTY)

    @property
    def read(self) -> bool:
        """Everything status reports could be read (false: unreachable, the pin unreadable or the
        alias corrupt)."""
        return not self.unread and self.error is None

    @property
    def unread(self) -> list[str]:
        """What was read and could not be used, the lock file's problem first: each one stops
        the comparisons that need it."""
        return [p for p in (self.lock_error, self.alias_error) if p is not None]

    def to_dict(self) -> dict[str, Any]:
        alias = None
        if self.alias is not None:
            alias = {
                "version": self.alias.version,
                "sha256": self.alias.sha256,
                "previous": self.alias.previous,
                "updated_at": self.alias.updated_at,
                "updated_by": self.alias.updated_by,
                "reason": self.alias.reason,
            }
        return {
            "env": self.env,
            "target": self.target,
            "state": self.state,
            "ok": self.ok,
            "pin": None if self.pin is None else self.pin.to_dict(),
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
            "registry": {"uri": self.registry_uri, "alias": alias},
            "lambda": None if self.live is None else self.live.to_dict(),
            "deployments": [d.to_dict() for d in self.deployments],
            "warnings": list(self.warnings),
            "error": self.error,
            "not_deployed": self.not_deployed,
            "other_account": self.other_account,
        }


def status(ws: Workspace, envs: list[str] | None = None) -> list[EnvironmentStatus]:
    """The status of `envs`, names from cdk.json (default: all of them, in chain order)."""
    names = envs or list(ws.config.environments)
    return [environment_status(ws, name) for name in names]


def environment_status(
    ws: Workspace, env: str, *, clients: Clients | None = None
) -> EnvironmentStatus:
    result = EnvironmentStatus(env=env, target=ws.target)
    try:
        lock = read_lock(ws.lock_path, model=ws.model)
        result.pin, result.shadow = lock.pins.get(env), lock.shadows.get(env)
    except LockFileError as exc:
        result.lock_error = str(exc)
    try:
        result.registry_uri = ws.registry_uri(env)
        registry = ws.registry(env)
        try:
            result.alias = registry.get_alias(env)
        except IntegrityError as exc:  # read, and not an alias: not a failure to read
            result.alias_error = str(exc)
        result.stored = stored_versions(registry, result)
        account = ws.other_account(env) if ws.on_aws else None
        if account is not None:
            # Its Lambda alias, deployments and their SSM parameters are in its own account: the
            # caller's discovery would find none there and call it "not deployed". The promotion
            # source role reads its registry only, so pin and registry alias are compared, as
            # locally, and the status says where the rest is read.
            result.other_account = (
                f"{env} is in account {account} (cdk.json) and these credentials are for "
                f"{ws.caller_account}: its Lambda alias and deployments are read, and what its "
                f"warnings say to run is run, with credentials for {account}"
            )
        elif ws.on_aws:
            clients = clients or ws.discovery.clients
            function = ws.discovery.get(env, "function-name")
            alias = ws.discovery.get(env, "alias-name")
            result.live = live_alias(clients["lambda"], function, alias)
            result.deployments = deployments(
                clients["codedeploy"],
                application=ws.discovery.get(env, "codedeploy-application"),
                group=ws.discovery.get(env, "deployment-group"),
            )
    except NotDeployed as exc:
        # Whatever was read before the missing parameter (a registry without its Inference
        # stack, say) is still compared; the pin of an environment not deployed is a warning.
        result.not_deployed = str(exc)
        if not result.unread:
            # Pin against registry alias only if the registry was found (its stack deployed).
            read = [] if result.registry_uri is None else disagreements(result)
            result.warnings = read + _not_deployed(result)
        else:
            result.warnings = [*result.unread, *unusable(result)]
        return result
    except (AwsError, RegistryError) as exc:
        result.error = str(exc)
        return result
    except Exception as exc:
        # A Lambda or CodeDeploy call that failed (denied, throttled): said as every AWS
        # failure is (sds.kernel.aws.errors.explain), with what to do.
        explained = explain(exc, doing=f"reading {env}'s Lambda alias and deployments")
        if explained is None:
            raise
        result.error = str(explained)
        return result
    if result.unread:
        # Without the pin, or the alias, there is nothing to compare: say what the problem is
        # (and whether the other names a version that cannot be loaded, which needs neither).
        result.warnings = [*result.unread, *unusable(result)]
        return result
    result.warnings = disagreements(result)
    return result


def sds(s: EnvironmentStatus) -> str:
    """How a hint starts its command line: `sds --aws` when status read AWS, so the hint runs
    as printed against what status looked at."""
    return command_prefix(on_aws=s.target == "aws")


def stored_versions(registry: Registry, s: EnvironmentStatus) -> dict[int, StoredVersion]:
    """Each version `s`'s pin, shadow pin and registry alias name, looked up in `registry`: its
    manifest read and its artifacts listed (`Registry.check_complete`)."""
    named = {p.version for p in (s.pin, s.shadow, s.alias) if p is not None}
    found: dict[int, StoredVersion] = {}
    for number in sorted(named):
        try:
            found[number] = StoredVersion(sha256=registry.check_complete(number).sha256)
        except VersionNotFound:
            found[number] = StoredVersion(problem=f"is not in {registry.uri}")
        except RegistryError as exc:  # a manifest that cannot be read, a missing artifact
            found[number] = StoredVersion(problem=f"is damaged in the registry ({exc})")
    return found


def unusable(s: EnvironmentStatus) -> list[str]:
    """A warning for the version the registry alias, and for the one the shadow pin, names that
    the registry does not hold complete, or holds as another model, with what to do: a deploy of
    it could not load its model. The pin is named beside the alias when it is the same model;
    one on another version, or with another sha256, is in the warning that says it disagrees
    with the alias (`disagreements`)."""
    env, run = s.env, sds(s)
    found: list[str] = []
    alias, pin, shadow = s.alias, s.pin, s.shadow
    if alias is not None:
        pinned = pin is not None and (pin.version, pin.sha256) == (alias.version, alias.sha256)
        problem = _stored_problem(s, alias.version, alias.sha256)
        if problem is not None:
            whom = ("models.lock.json pins and " if pinned else "") + (
                f"the registry alias {env} points at"
            )
            found.append(
                f"v{alias.version}, which {whom}, {problem}: a deploy of it cannot load its "
                f"model; move {env} to a complete version with: {run} rollback --env {env}, or "
                f"{run} promote VERSION --to {env}"
            )
    if shadow is not None:
        problem = _stored_problem(s, shadow.version, shadow.sha256)
        if problem is not None:
            found.append(
                f"v{shadow.version}, which models.lock.json's shadow is, {problem}: a deploy of "
                f"it cannot load its model; shadow a complete version with: {run} shadow "
                f"VERSION --env {env}, or remove the shadow with: {run} shadow --env {env} --clear"
            )
    return found


def _stored_problem(s: EnvironmentStatus, version: int, sha256: str) -> str | None:
    """What is wrong with `version` (named with `sha256`) in the registry, as a phrase ("is not
    in s3://..."); None when it holds that model complete, or was not looked up."""
    stored = s.stored.get(version)
    if stored is None:
        return None
    if stored.problem is None and stored.sha256 != sha256:
        return f"is another model in the registry (sha256 {str(stored.sha256)[:12]}...)"
    return stored.problem


def _pinned(s: EnvironmentStatus, pin: Pin) -> str:
    """How a warning names the pin: `pins v7`, and what is wrong with v7 in the registry, if
    anything (`pins v7, which is not in s3://...,`)."""
    problem = _stored_problem(s, pin.version, pin.sha256)
    return f"pins v{pin.version}" + ("" if problem is None else f", which {problem},")


def disagreements(s: EnvironmentStatus) -> list[str]:
    """Every way pin, registry alias and Lambda alias disagree, and every version they name that
    the registry does not hold complete (`unusable`), each with what to do."""
    env, pin, alias, live = s.env, s.pin, s.alias, s.live
    run = sds(s)
    found: list[str] = []
    if alias is not None and pin is None:
        found.append(
            f"the registry alias serves v{alias.version} but models.lock.json has no pin for "
            f"{env}, so the next deploy ships no model: pull the lock file change that "
            f"promoted it, or write the pin with: {run} promote {alias.version} --to {env}"
        )
    elif alias is None and pin is not None:
        found.append(
            f"models.lock.json {_pinned(s, pin)} but {env}'s registry has no alias {env} "
            f"({s.registry_uri}): is this the right registry? promote it there with: "
            f"{run} promote {pin.version} --to {env}"
        )
    elif alias is not None and pin is not None:
        if alias.version != pin.version:
            found.append(
                f"models.lock.json {_pinned(s, pin)} but the registry alias is "
                f"v{alias.version} ({moved(alias)}): the next deploy would ship v{pin.version}; "
                f"pull the lock file change that moved it, or make the pin follow the alias "
                f"with: {run} promote {alias.version} --to {env}"
            )
        elif alias.sha256 != pin.sha256:
            found.append(
                f"v{pin.version} has sha256 {pin.sha256[:12]}... in models.lock.json but "
                f"{alias.sha256[:12]}... in the registry: one of them was edited by hand; do "
                f"not deploy until `{run} show {pin.version} --env {env}` and the lock file's "
                "history explain it"
            )
    found += unusable(s)
    if live is None:
        return found
    served = live.primary
    expected = pin or (None if alias is None else Pin(alias.version, alias.sha256))
    if len(live.served) > 1 and not s.deployments:
        canary = ", ".join(
            f"{v.weight:.0%} to Lambda version {v.function_version} ({_model(v)})"
            for v in live.served[1:]
        )
        found.append(
            f"{live.function}:{live.alias} splits traffic ({canary}) with no deployment in "
            f"progress, an interrupted canary: undo it with: sds --aws rollback --env {env}, or "
            f"finish it with: cdk deploy '{env}/*'"
        )
    if s.deployments:
        return found  # the deployment is moving `live`; it disagrees until it is done
    found += _shadow_disagreement(s, live)
    if expected is None:
        if served.model_version is not None:
            found.append(
                f"{live.function}:{live.alias} serves v{served.model_version} but nothing is "
                f"pinned or promoted in {env}"
            )
        return found
    if served.model_version is None:
        found.append(
            f"{live.function}:{live.alias} (Lambda version {served.function_version}) serves no "
            f"model yet, the pin is v{expected.version}: deploy it with: cdk deploy '{env}/*'"
        )
    elif served.model_version != expected.version:
        found.append(
            f"{live.function}:{live.alias} serves v{served.model_version} (Lambda version "
            f"{served.function_version}) but the pin is v{expected.version}: deploy it with: "
            f"cdk deploy '{env}/*' (or roll back with sds --aws rollback --env {env} "
            f"--to {served.model_version})"
        )
    elif served.sha256 != expected.sha256:
        found.append(
            f"{live.function}:{live.alias} serves v{served.model_version} with sha256 "
            f"{str(served.sha256)[:12]}... but the pin says {expected.sha256[:12]}...: the "
            f"version was replaced after it was deployed; redeploy with: cdk deploy '{env}/*'"
        )
    return found


def _shadow_disagreement(s: EnvironmentStatus, live: LiveAlias) -> list[str]:
    """The shadow pin against the shadow the version behind `live` loads: a shadow pinned and
    never deployed scores nothing (and `sds compare` has nothing to show)."""
    want, have, served = s.shadow, live.primary.shadow, live.primary
    where = f"{live.function}:{live.alias} (Lambda version {served.function_version})"
    deploy = f"cdk deploy '{s.env}/*'"
    if want is not None and have is None:
        return [
            f"models.lock.json's shadow v{want.version} is not deployed: {where} loads no "
            f"shadow, so no payment is scored by it; deploy it with: {deploy}"
        ]
    if want is None and have is not None:
        return [
            f"{where} loads shadow v{have.version}, which models.lock.json no longer pins: the "
            f"next deploy removes it ({deploy}); keep it with: {sds(s)} shadow {have.version} "
            f"--env {s.env}"
        ]
    if want is not None and have is not None:
        if want.version != have.version:
            return [
                f"{where} loads shadow v{have.version} but models.lock.json's shadow is "
                f"v{want.version}: deploy it with: {deploy}"
            ]
        if want.sha256 != have.sha256:
            return [
                f"{where} loads shadow v{have.version} with sha256 {have.sha256[:12]}... but "
                f"models.lock.json says {want.sha256[:12]}...: redeploy with: {deploy}"
            ]
    return []


def _not_deployed(s: EnvironmentStatus) -> list[str]:
    """What the lock file expects of an environment that is not deployed."""
    if s.pin is None:
        return []
    shadow = "" if s.shadow is None else f" (and shadow v{s.shadow.version})"
    return [
        f"models.lock.json pins v{s.pin.version}{shadow} for {s.env}, which is not deployed "
        f"here: deploy it with: cdk deploy '{s.env}/*'"
    ]


def live_alias(lambda_client: Any, function: str, alias: str) -> LiveAlias:
    answer = get_live_alias(lambda_client, function, alias)
    weights: Mapping[str, float] = answer.get("RoutingConfig", {}).get(
        "AdditionalVersionWeights", {}
    )
    primary = str(answer["FunctionVersion"])
    shares = [(primary, 1.0 - sum(weights.values()))]
    shares += [(str(v), float(w)) for v, w in sorted(weights.items())]
    served = []
    for version, weight in shares:
        config = lambda_client.get_function_configuration(FunctionName=function, Qualifier=version)
        pins = model_pins(config.get("Environment", {}).get("Variables", {}))
        pin = pins.get("live")
        served.append(
            ServedVersion(
                function_version=version,
                weight=round(weight, 4),
                model_version=None if pin is None else pin.version,
                sha256=None if pin is None else pin.sha256,
                shadow=pins.get("shadow"),
            )
        )
    return LiveAlias(function=function, alias=alias, served=served)


def deployments(codedeploy: Any, *, application: str, group: str) -> list[Deployment]:
    """The deployment group's deployments that are still in flight, oldest first."""
    ids = codedeploy.list_deployments(
        applicationName=application, deploymentGroupName=group, includeOnlyStatuses=IN_FLIGHT
    ).get("deployments", [])
    found = []
    for deployment_id in ids:
        info = codedeploy.get_deployment(deploymentId=deployment_id)["deploymentInfo"]
        if info.get("status") not in IN_FLIGHT:
            continue  # it finished between the two calls
        source, target = appspec_versions(info.get("revision", {})) or (None, None)
        created = info.get("createTime")
        found.append(
            Deployment(
                id=str(deployment_id),
                status=str(info.get("status")),
                created=created.isoformat() if hasattr(created, "isoformat") else str(created),
                from_version=source,
                to_version=target,
            )
        )
    return sorted(found, key=lambda d: d.created)


def moved(alias: AliasState) -> str:
    """When, by whom and why the alias last moved, for people."""
    when = alias.updated_at[:19].replace("T", " ")
    why = f": {alias.reason!r}" if alias.reason else ""
    return f"moved {when} by {alias.updated_by}{why}"


def _model(served: ServedVersion) -> str:
    return "no model" if served.model_version is None else f"v{served.model_version}"
