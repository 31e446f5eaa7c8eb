"""The registry's S3 key layout as IAM sees it (mirrors sds.kernel.registry: models/<model>/...).

Permissions are written against these prefixes only, so a role that may read model versions can
never touch aliases, and nothing in the system may delete.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegistryPaths:
    model: str

    @property
    def root(self) -> str:
        return f"models/{self.model}/"

    @property
    def versions(self) -> str:
        return f"models/{self.model}/versions/*"

    @property
    def aliases(self) -> str:
        return f"models/{self.model}/aliases/*"

    @property
    def events(self) -> str:
        return f"models/{self.model}/events/*"
