"""Where the CLI finds things: the project (cdk.json), local state, the lock file, registries.

Resolution, most explicit first:

- project: `--project-dir`, else `$SDS_PROJECT_DIR`, else the nearest directory upward from the
  current one that holds a cdk.json;
- local state: `$SDS_HOME`, else `<project>/.sds`;
- lock file: `$SDS_LOCK_FILE`, else `<project>/models.lock.json`;
- target: `--aws` (or `$SDS_TARGET=aws`) works against the deployed stacks; the default,
  `local` (`$SDS_TARGET=local`), needs no AWS at all;
- an environment's registry: `$SDS_REGISTRY_<ENV>` (file:///path or s3://bucket), else, when the
  target is `aws`, `s3://<bucket>` from SSM `/sds/<env>/registry-bucket`, else the embedded local
  default `file://<state>/registries/<env>`;
- who acts (recorded in every audit event and manifest): on `aws`, the caller's AWS identity as
  STS returns it (`arn:aws:sts::123456789012:assumed-role/Deployer/alice`), asked once, on first
  use, with `$SDS_ACTOR` kept only as an annotation (`declared_actor`); locally `$SDS_ACTOR`,
  else `user@host`;
- an environment in another account than the caller's (its `infra.account` in cdk.json): read
  through its promotion source role, assumed once per command; never written
  (docs/multi-account.md).
- an environment's feature store (the account aggregates) when served locally:
  `$SDS_FEATURE_STORE_<ENV>`, else the embedded `sqlite://<state>/features/<env>.db`.
- an environment's captures and labels (`sds.kernel.capture`): locally `<state>/capture/<env>`
  and `<state>/labels/<env>` (what `sds serve` and `sds label` write); with `--aws`, the
  `captures/` and `labels/` prefixes of the bucket SSM `/sds/<env>/captures-bucket` names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sds.config import ConfigError, ProjectConfig, load_project, promotion_source_role_name
from sds.kernel.capture import CAPTURES_PREFIX, LABELS_PREFIX
from sds.kernel.discovery import PARAMETERS, parameter_name
from sds.kernel.registry import (
    Registry,
    RegistryError,
    aws_actor,
    check_uri,
    default_actor,
    open_registry,
)
from sds.kernel.registry.s3 import S3Store
from sds.kernel.registry.store import ReadOnlyView
from sds.ops.aws import AwsError, Clients, Discovery, assume_role, session_name

TARGETS = ("local", "aws")


def command_prefix(*, on_aws: bool) -> str:
    """How a hint's command line starts: `sds --aws` on AWS, `sds` locally (`Workspace.command`;
    `sds status` builds its hints from what it read, with the target it read)."""
    return "sds --aws" if on_aws else "sds"


@dataclass(frozen=True)
class Workspace:
    project_dir: Path
    home: Path
    lock_path: Path
    config: ProjectConfig
    registry_overrides: Mapping[str, str] = field(default_factory=dict)
    feature_store_overrides: Mapping[str, str] = field(default_factory=dict)
    # Who acts on the local target ($SDS_ACTOR, else user@host); on AWS see `actor`.
    local_actor: str = "unknown"
    # What the caller says about themselves on AWS ($SDS_ACTOR): an annotation, never the actor.
    declared_actor: str | None = None
    target: str = "local"
    discovery: Discovery = field(default_factory=Discovery, compare=False, repr=False)
    _identity: dict[str, str] = field(default_factory=dict, init=False, compare=False, repr=False)
    # Discovery through each other-account environment's promotion source role, once assumed.
    _readers: dict[str, Discovery] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def discover(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        project_dir: Path | None = None,
        target: str | None = None,
    ) -> Workspace:
        environ = os.environ if environ is None else environ
        cwd = cwd or Path.cwd()
        if project_dir is not None:
            root = named_project(project_dir, "--project-dir")
        elif environ.get("SDS_PROJECT_DIR"):
            root = named_project(Path(environ["SDS_PROJECT_DIR"]), "SDS_PROJECT_DIR")
        else:
            root = find_project(cwd)
        root = root.resolve()
        config = load_project(root / "cdk.json")

        def overrides(prefix: str) -> dict[str, str]:
            return {
                env: environ[f"{prefix}_{env.upper()}"]
                for env in config.environments
                if environ.get(f"{prefix}_{env.upper()}")
            }

        home = Path(environ["SDS_HOME"]) if environ.get("SDS_HOME") else root / ".sds"
        lock = (
            Path(environ["SDS_LOCK_FILE"])
            if environ.get("SDS_LOCK_FILE")
            else root / "models.lock.json"
        )
        target = target or environ.get("SDS_TARGET", "").strip().lower() or "local"
        if target not in TARGETS:
            raise ConfigError(f"SDS_TARGET must be one of {', '.join(TARGETS)}, got {target!r}")
        if target == "local" and home.exists() and not home.is_dir():
            # Said here once: otherwise a listing finds "no versions" there, and a write fails
            # with "Not a directory" on a path deep below it.
            how = f"SDS_HOME names {home}, which" if environ.get("SDS_HOME") else str(home)
            raise ConfigError(
                f"{how} is a file, not a directory: sds keeps its local registries, feature "
                "stores and captures in a directory there"
            )
        return cls(
            project_dir=root,
            home=home.resolve(),
            lock_path=lock.resolve(),
            config=config,
            registry_overrides=overrides("SDS_REGISTRY"),
            feature_store_overrides=overrides("SDS_FEATURE_STORE"),
            local_actor=environ.get("SDS_ACTOR") or default_actor(),
            declared_actor=(environ.get("SDS_ACTOR") or None) if target == "aws" else None,
            target=target,
        )

    @property
    def model(self) -> str:
        return self.config.model_name

    @property
    def on_aws(self) -> bool:
        return self.target == "aws"

    def command(self, arguments: str) -> str:
        """`sds ARGUMENTS` as a hint prints it, for this workspace's target: every "run this"
        a command prints goes through here, so that run as printed it acts where the command
        did. On AWS it says `--aws` explicitly, however the target was chosen (`--aws` or
        `$SDS_TARGET`): a hint pasted into another shell must not move the local registry's
        alias and rewrite the shared lock file instead."""
        return f"{command_prefix(on_aws=self.on_aws)} {arguments}"

    @property
    def actor(self) -> str:
        """Who acts, as audit events and manifests record it: on AWS the caller's identity
        (STS GetCallerIdentity, asked once), locally `local_actor`."""
        if not self.on_aws:
            return self.local_actor
        if "arn" not in self._identity:
            try:
                self._identity["arn"] = aws_actor(self.discovery.clients["sts"])
            except Exception as exc:
                raise AwsError(f"asking AWS STS who these credentials belong to: {exc}") from exc
        return self._identity["arn"]

    @property
    def caller_account(self) -> str:
        """The AWS account of the caller's credentials (from the ARN STS returned for `actor`)."""
        return self.actor.split(":")[4]

    def other_account(self, env: str) -> str | None:
        """`env`'s account when, on AWS, cdk.json places it in another one than the caller's
        credentials (None: the caller's own, or cdk.json does not say)."""
        account = self.config.env(env).infra.account
        if not self.on_aws or account is None or account == self.caller_account:
            return None
        return account

    def _discovery(self, env: str) -> Discovery:
        """Discovery of `env`'s parameters: with the caller's credentials, or through `env`'s
        promotion source role when it is in another account."""
        account = self.other_account(env)
        if account is None:
            return self.discovery
        if env not in self._readers:
            self._readers[env] = Discovery(clients=self._assume_source_role(env, account))
        return self._readers[env]

    def _assume_source_role(self, env: str, account: str) -> Clients:
        config, caller = self.config.env(env), self.caller_account
        readers = config.cross_account.readers
        if caller not in readers:
            raise AwsError(
                f"{env} is in account {account} (cdk.json) and your AWS credentials are for "
                f"{caller}: another account reads {env}'s registry only through {env}'s "
                "promotion source role, which trusts the accounts of the environments that "
                f"promote from {env} or gate on it ({', '.join(readers) or 'none'}); use "
                f"credentials for {account}"
            )
        partition = self.actor.split(":")[1]
        name = promotion_source_role_name(self.model, env)
        role_arn = f"arn:{partition}:iam::{account}:role/{name}"
        try:
            return assume_role(
                self.discovery.clients["sts"],
                role_arn=role_arn,
                session=session_name(self.actor),
                region=config.infra.region,
            )
        except AwsError as exc:
            raise AwsError(
                f"reading {env} from account {caller}: {exc}. The role exists once "
                f"'{env}/Inference' is deployed, and your credentials need sts:AssumeRole on it "
                "(the promoter policy of the environment you promote into grants it)"
            ) from None

    def ensure_writable(self, env: str) -> None:
        """Refuse, before any AWS call that changes something, to change an environment in
        another account than the caller's credentials (a `$SDS_REGISTRY_<ENV>` override is
        taken at its word)."""
        account = None if env in self.registry_overrides else self.other_account(env)
        if account is not None:
            raise AwsError(
                f"{env} is in account {account} (cdk.json) and your AWS credentials are for "
                f"{self.caller_account}: changing {env}'s registry takes credentials in "
                f"{account} with {env}'s promoter policy"
            )

    def registry_uri(self, env: str) -> str:
        """Where `env`'s registry is. `env` is a name from cdk.json: the CLI resolves names once,
        as it parses its arguments (sds.cli.arguments), and says which names are known."""
        if env in self.registry_overrides:
            uri = self.registry_overrides[env]
            try:
                check_uri(uri)
            except RegistryError as exc:
                raise RegistryError(f"SDS_REGISTRY_{env.upper()}={uri}: {exc}") from None
            return uri
        if self.on_aws:
            return f"s3://{self._discovery(env).get(env, 'registry-bucket')}"
        return (self.home / "registries" / env).as_uri()

    def registry_source(self, env: str) -> tuple[str, str]:
        """Where `env`'s registry location came from, and the stack that creates its bucket
        (none for an override): what an AWS error about the bucket names."""
        if env in self.registry_overrides:
            return f"SDS_REGISTRY_{env.upper()}", ""
        if self.on_aws:
            return parameter_name(env, "registry-bucket"), f"{env}/{PARAMETERS['registry-bucket']}"
        return "", ""

    def registry(self, env: str, *, write: bool = False) -> Registry:
        """`env`'s registry; every event it writes carries `declared_actor`, if any.

        An environment in another account is read through its promotion source role, read-only;
        asking to `write` it (promote into it, roll it back) is refused: that takes credentials
        in its own account, with its promoter policy.
        """
        if write:
            self.ensure_writable(env)
        account = None if env in self.registry_overrides else self.other_account(env)
        source, stack = self.registry_source(env)
        if account is None:
            uri = self.registry_uri(env)
            return open_registry(
                uri, self.model, declared_actor=self.declared_actor, source=source, stack=stack
            )
        discovery = self._discovery(env)
        store = S3Store(
            discovery.get(env, "registry-bucket"),
            client=discovery.clients["s3"],
            source=source,
            stack=stack,
        )
        return Registry(ReadOnlyView(store), self.model, declared_actor=self.declared_actor)

    def feature_store_uri(self, env: str) -> str:
        """Where `env`'s account aggregates are kept locally: `$SDS_FEATURE_STORE_<ENV>` or the
        embedded SQLite store under the local state."""
        if env in self.feature_store_overrides:
            return self.feature_store_overrides[env]
        return f"sqlite://{self.home / 'features' / f'{env}.db'}"

    def capture_dir(self, env: str) -> Path:
        """Where `sds serve --env ENV` writes ENV's captures on this machine."""
        return self.home / "capture" / env

    def labels_dir(self, env: str) -> Path:
        """Where `sds label --env ENV` (and `POST /events` on `sds serve`) store ENV's labels."""
        return self.home / "labels" / env

    def captures_uri(self, env: str) -> str:
        """ENV's captures: the local folder, or on AWS the captures bucket's prefix."""
        if self.on_aws:
            return f"s3://{self.discovery.get(env, 'captures-bucket')}/{CAPTURES_PREFIX}"
        return str(self.capture_dir(env))

    def labels_uri(self, env: str) -> str:
        """ENV's labels: the local folder, or on AWS the captures bucket's labels prefix."""
        if self.on_aws:
            return f"s3://{self.discovery.get(env, 'captures-bucket')}/{LABELS_PREFIX}"
        return str(self.labels_dir(env))


def named_project(directory: Path, how: str) -> Path:
    """The project directory `how` (`--project-dir`, `SDS_PROJECT_DIR`) names, if it holds a
    cdk.json: no search upward from there, and the error says where the directory was named."""
    if not (directory / "cdk.json").exists():
        what = (
            "holds no cdk.json"
            if directory.is_dir()
            else "is a file, not a directory"
            if directory.exists()
            else "does not exist"
        )
        raise ConfigError(
            f"{how} names {directory}, which {what}: name the directory that holds the "
            "project's cdk.json"
        )
    return directory


def find_project(start: Path) -> Path:
    for directory in (start, *start.parents):
        if (directory / "cdk.json").is_file():
            return directory
    raise ConfigError(
        f"no cdk.json in {start} or any parent: run sds inside an sds project, or name its "
        "directory with --project-dir DIR or the SDS_PROJECT_DIR environment variable"
    )
