"""AWS access for the CLI: SDK clients with standard retries, and discovery through SSM.

Every client honours `AWS_ENDPOINT_URL` (and the per-service variants) the way the SDK does, so
the same commands run against AWS and against a local protocol server. The stacks publish what
tools need under `/sds/<env>/` (see DESIGN.md, "Discovery"); `Discovery` reads those parameters
once per command and says which stack to deploy when one is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The SDK's standard retry mode: exponential backoff with jitter for throttling, 5xx and
# connection errors; conditional-write conflicts (412) are not retried, they are answers.
RETRY_MAX_ATTEMPTS = 5

PARAMETERS = (
    "registry-bucket",
    "function-name",
    "alias-name",
    "api-url",
    "deployment-group",
    "codedeploy-application",
    "training-cluster",
    "training-task-definition",
    "training-subnets",
    "training-security-group",
)
_STACK_OF = {
    "registry-bucket": "Registry",
    "training-cluster": "Training",
    "training-task-definition": "Training",
    "training-subnets": "Training",
    "training-security-group": "Training",
}


class AwsError(RuntimeError):
    """An AWS call failed or the deployed stack is not what the command needs."""


def sdk_config() -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": "standard", "max_attempts": RETRY_MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=60,
    )


_CLIENT_LOCK = threading.Lock()


def client(service: str) -> Any:
    """A boto3 client for `service` with standard retries (region and endpoint from the env)."""
    import boto3

    # boto3's default session is not thread-safe while it creates clients: concurrent creation
    # can lose configuration (the endpoint among it). Clients themselves are thread-safe.
    with _CLIENT_LOCK:
        return boto3.client(service, config=sdk_config())


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
            self._made[service] = client(service)
        return self._made[service]


@dataclass
class Discovery:
    """The `/sds/<env>/...` parameters the stacks publish, read once per environment."""

    clients: Clients = field(default_factory=Clients)
    _cache: dict[str, dict[str, str]] = field(default_factory=dict)

    def parameters(self, env: str) -> dict[str, str]:
        if env not in self._cache:
            names = [f"/sds/{env}/{key}" for key in PARAMETERS]
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
            stack = _STACK_OF.get(key, "Inference")
            raise AwsError(
                f"SSM parameter /sds/{env}/{key} not found: is {env} deployed here? "
                f"(cdk deploy '{env}/{stack}')"
            )
        return value


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
