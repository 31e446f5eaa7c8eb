"""Model registry: write-once versions, compare-and-swap aliases and an audit trail.

`open_registry("file:///path" | "s3://bucket[/prefix]", model)` returns a `Registry` over the
matching object store; both backends honour the same contract (tests/contract).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from sds.kernel.registry.core import (
    AliasState,
    ConcurrentUpdate,
    IntegrityError,
    Registry,
    RegistryError,
    Version,
    VersionConflict,
    VersionNotFound,
    default_actor,
)
from sds.kernel.registry.store import FileStore, ObjectStore

__all__ = [
    "AliasState",
    "ConcurrentUpdate",
    "IntegrityError",
    "Registry",
    "RegistryError",
    "Version",
    "VersionConflict",
    "VersionNotFound",
    "default_actor",
    "open_registry",
    "open_store",
]


def open_store(uri: str) -> ObjectStore:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RegistryError(f"{uri}: file URIs look like file:///absolute/path")
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise RegistryError(f"{uri}: s3 URIs look like s3://bucket[/prefix]")
        from sds.kernel.registry.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path.lstrip("/"))
    raise RegistryError(f"unsupported registry URI {uri!r}: use file:///path or s3://bucket")


def open_registry(uri: str, model: str) -> Registry:
    return Registry(open_store(uri), model)
