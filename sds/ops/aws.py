"""AWS access for the operator application: per-command SDK clients, and discovery through SSM.

Every client honours `AWS_ENDPOINT_URL` (and the per-service variants) the way the SDK does, so
the same commands run against AWS and against a local protocol server. The stacks publish what
tools need under `/sds/<env>/` (see DESIGN.md, "Discovery"); `Discovery` reads those parameters
once per command and says which stack to deploy when one is missing. `assume_role` gives the
clients of a role in another account (an environment's promotion source role,
docs/multi-account.md).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sds.kernel import sdk
from sds.kernel.aws.errors import AwsError as AwsError
from sds.kernel.aws.errors import error_code as error_code
from sds.kernel.aws.errors import explain
from sds.kernel.discovery import PARAMETERS, parameter_name

# AwsError is the kernel's, re-exported: a failure `explain` said is one too, so `except AwsError`
# in the operator application catches every AWS failure, explained or not.


def failure(exc: BaseException, *, doing: str, resource: str = "") -> AwsError:
    """`exc` as the error to raise for a failed AWS call: explained (`explain`: one line, with
    the fix) when it is an AWS failure, else `doing` and the error's own message."""
    explained = explain(exc, doing=doing, resource=resource)
    if explained is not None:
        return explained
    return AwsError(f"{doing}: {exc}")


class NotDeployed(AwsError):
    """SSM was read and holds no parameter the command needs: the stack that publishes it is
    not deployed here. Every other failure to read (credentials, network, access) is a plain
    `AwsError`: `sds status` and `sds envs` tell "not deployed" from "unreachable" by this."""


def start_execution(
    sfn: Any, *, machine: str, name: str, document: Mapping[str, Any], what: str
) -> str:
    """Start an execution of a state machine with `document` as its input; its ARN. `what`
    names the machine in the error (for example "dev's batch state machine")."""
    try:
        response = sfn.start_execution(
            stateMachineArn=machine, name=name, input=json.dumps(document)
        )
    except Exception as exc:
        raise failure(exc, doing=f"starting {what}") from exc
    return str(response["executionArn"])


# boto3's default session is not thread-safe while it creates clients (sds.kernel.sdk).
_CLIENT_LOCK = threading.Lock()


@dataclass(frozen=True)
class RoleSession:
    """Temporary credentials of an assumed role, and the region its clients call."""

    role_arn: str
    access_key_id: str
    secret_access_key: str
    session_token: str
    region: str


@dataclass
class Clients:
    """The clients one command uses, created on first use; tests pass their own. With `role`,
    they sign with that role's credentials and call its region; otherwise with the caller's."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    role: RoleSession | None = None
    _made: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, service: str) -> Any:
        if service in self.overrides:
            return self.overrides[service]
        if service not in self._made:
            self._made[service] = (
                sdk.client(service) if self.role is None else self._signed(service)
            )
        return self._made[service]

    def _signed(self, service: str) -> Any:
        import boto3

        assert self.role is not None
        with _CLIENT_LOCK:
            return boto3.client(
                service,
                config=sdk.sdk_config(),
                region_name=self.role.region,
                aws_access_key_id=self.role.access_key_id,
                aws_secret_access_key=self.role.secret_access_key,
                aws_session_token=self.role.session_token,
            )


def session_name(caller_arn: str) -> str:
    """A role session name that says who assumed the role (`sds-alice` for
    `.../assumed-role/Deployer/alice`): CloudTrail in the role's account shows it with every
    call the session makes. STS allows 2 to 64 of `[\\w+=,.@-]`."""
    who = re.sub(r"[^\w+=,.@-]", "-", caller_arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    return f"sds-{who}"[:64]


def assume_role(sts: Any, *, role_arn: str, session: str, region: str) -> Clients:
    """Clients signed with `role_arn`'s credentials (one hour, the role's maximum)."""
    try:
        found = sts.assume_role(RoleArn=role_arn, RoleSessionName=session)["Credentials"]
    except Exception as exc:
        raise failure(exc, doing=f"assuming {role_arn}") from exc
    return Clients(
        role=RoleSession(
            role_arn=role_arn,
            access_key_id=found["AccessKeyId"],
            secret_access_key=found["SecretAccessKey"],
            session_token=found["SessionToken"],
            region=region,
        )
    )


@dataclass
class Discovery:
    """The `/sds/<env>/...` parameters the stacks publish, read once per environment."""

    clients: Clients = field(default_factory=Clients)
    _cache: dict[str, dict[str, str]] = field(default_factory=dict)

    def parameters(self, env: str) -> dict[str, str]:
        if env not in self._cache:
            names = [parameter_name(env, key) for key in PARAMETERS]
            found: dict[str, str] = {}
            ssm = self.clients["ssm"]
            try:
                for chunk in _chunks(names, 10):  # GetParameters takes at most 10 names
                    response = ssm.get_parameters(Names=chunk)
                    for parameter in response.get("Parameters", []):
                        found[parameter["Name"].rsplit("/", 1)[-1]] = parameter["Value"]
            except Exception as exc:
                raise failure(exc, doing=f"reading SSM parameters /sds/{env}/*") from exc
            self._cache[env] = found
        return self._cache[env]

    def get(self, env: str, key: str) -> str:
        value = self.parameters(env).get(key)
        if not value:
            raise NotDeployed(
                f"SSM parameter {parameter_name(env, key)} not found: is {env} deployed here? "
                f"(cdk deploy '{env}/{PARAMETERS[key]}')"
            )
        return value


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
