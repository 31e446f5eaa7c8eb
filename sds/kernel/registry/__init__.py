"""Model registry: write-once versions, compare-and-swap aliases and an audit trail.

`open_registry("file:///path" | "s3://bucket[/prefix]", model)` returns a `Registry` over the
matching object store; both backends honour the same contract (tests/contract).
`read_only=True` opens a store that reads and never writes: on S3 it reads through the kernel's
own client (`S3ReadStore`, no AWS SDK), which is how the Lambda loads its model.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import ParseResult, unquote, urlparse

from sds.kernel.registry.core import (
    AliasState,
    AuditTrail,
    ConcurrentUpdate,
    IntegrityError,
    Registry,
    RegistryError,
    Version,
    VersionConflict,
    VersionNotFound,
    aws_actor,
    default_actor,
)
from sds.kernel.registry.store import FileStore, ObjectStore, ReadOnlyView

__all__ = [
    "AliasState",
    "AuditTrail",
    "ConcurrentUpdate",
    "IntegrityError",
    "Registry",
    "RegistryError",
    "Version",
    "VersionConflict",
    "VersionNotFound",
    "aws_actor",
    "check_uri",
    "default_actor",
    "open_registry",
    "open_store",
]


def check_uri(uri: str) -> ParseResult:
    """`uri` parsed, if it names a registry (`file:///path`, `s3://bucket[/prefix]`); else a
    RegistryError saying what one looks like."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RegistryError(f"{uri}: file URIs look like file:///absolute/path")
        return parsed
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise RegistryError(f"{uri}: s3 URIs look like s3://bucket[/prefix]")
        return parsed
    raise RegistryError(f"unsupported registry URI {uri!r}: use file:///path or s3://bucket")


def open_store(
    uri: str, *, read_only: bool = False, source: str = "", stack: str = ""
) -> ObjectStore:
    """The object store at `uri`; with `read_only`, one that refuses writes (and, on S3, reads
    without the AWS SDK). On S3, `source` (where the bucket's name came from) and `stack` (which
    stack creates it) go into the errors AWS failures raise."""
    parsed = check_uri(uri)
    if parsed.scheme == "file":
        store = FileStore(Path(unquote(parsed.path)))
        return ReadOnlyView(store) if read_only else store
    if parsed.scheme == "s3":
        if read_only:
            from sds.kernel.registry.s3_read import S3ReadStore

            return S3ReadStore(parsed.netloc, parsed.path.lstrip("/"), source=source, stack=stack)
        from sds.kernel.registry.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path.lstrip("/"), source=source, stack=stack)
    raise AssertionError(f"check_uri let {uri!r} through")  # pragma: no cover


def open_registry(
    uri: str,
    model: str,
    *,
    read_only: bool = False,
    declared_actor: str | None = None,
    source: str = "",
    stack: str = "",
) -> Registry:
    store = open_store(uri, read_only=read_only, source=source, stack=stack)
    return Registry(store, model, declared_actor=declared_actor)
