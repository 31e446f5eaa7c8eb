"""AWS access for the operator application: per-command SDK clients, and discovery through SSM.

Every client honours `AWS_ENDPOINT_URL` (and the per-service variants) the way the SDK does, so
the same commands run against AWS and against a local protocol server. The stacks publish what
tools need under `/sds/<env>/` (see DESIGN.md, "Discovery"); `Discovery` reads those parameters
once per command and says which stack to deploy when one is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sds.kernel import sdk
from sds.kernel.discovery import PARAMETERS, parameter_name
from sds.kernel.errors import SdsError


class AwsError(SdsError, RuntimeError):
    """An AWS call failed or the deployed stack is not what the command needs."""


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@dataclass
class Clients:
    """The clients one command uses, created on first use; tests pass their own."""

    overrides: Mapping[str, Any] = field(default_factory=dict)
    _made: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, service: str) -> Any:
        if service in self.overrides:
            return self.overrides[service]
        if service not in self._made:
            self._made[service] = sdk.client(service)
        return self._made[service]


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
                raise AwsError(f"reading SSM parameters /sds/{env}/*: {exc}") from exc
            self._cache[env] = found
        return self._cache[env]

    def get(self, env: str, key: str) -> str:
        value = self.parameters(env).get(key)
        if not value:
            raise AwsError(
                f"SSM parameter {parameter_name(env, key)} not found: is {env} deployed here? "
                f"(cdk deploy '{env}/{PARAMETERS[key]}')"
            )
        return value


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
