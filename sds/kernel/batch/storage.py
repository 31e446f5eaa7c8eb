"""Where a batch run reads its input and writes its parts: a local folder or an S3 prefix.

The few operations a run needs, with the same meaning on both: list the objects under a prefix
(name and size), read a byte range, write an object whole (`put_file`, `put_bytes`: on S3 an
object appears only when its upload completes, locally a file is written under a temporary name
and renamed), say whether an object exists, delete a prefix. A finished part therefore is never
half there, whichever store holds it. An object can also be created only where none is
(`create_bytes`, for a run's plan, which two runs started at once must not both write): locally a
complete file linked to its name, which link(2) refuses if the name exists; on S3 `PutObject`
with `If-None-Match: *`, which S3 answers 412.

On S3 the calls go through the AWS SDK (`sds.kernel.sdk`): the batch function and the CLI use
them, never the API's serving path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from sds.kernel.aws.errors import error_code, error_status
from sds.kernel.errors import SdsError, UsageError
from sds.kernel.files import link_new, sync_file, sync_folder


class StorageError(SdsError):
    """A batch input or output location could not be read or written; the message names it."""


class AlreadyExists(StorageError):
    """A create-only write lost: an object was at its key already (another writer's, left as it
    was), and nothing was written."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name}: already exists (another writer created it first)")


# S3 answers 409 to a conditional write of a key while another one of it is in flight, and asks
# for it to be sent again (the SDK's retries do not): sent again, it meets 412 once the other
# one has landed.
CONFLICT_ATTEMPTS = 5
CONFLICT_RETRY_SECONDS = 0.2


@dataclass(frozen=True)
class StoredFile:
    key: str  # relative to the storage root
    size: int
    version: str  # what changes when the content does: mtime_ns locally, the ETag on S3


class Storage(Protocol):
    """A root (a folder or an S3 prefix) holding objects named by relative keys."""

    @property
    def uri(self) -> str: ...

    def name(self, key: str) -> str:
        """How messages name the object at `key` (a path or an s3:// URI)."""
        ...

    def list(self, prefix: str = "") -> list[StoredFile]:
        """Every object whose key starts with `prefix`, in key order."""
        ...

    def size(self, key: str) -> int: ...

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (to its end when `end` is None)."""
        ...

    def stream(self, key: str) -> Any:
        """A binary file object reading the whole object from its start."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object at `key` exists; for "", whether the location itself does (a
        local folder counts, even empty)."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def create_bytes(self, key: str, data: bytes) -> None:
        """Store `data` at `key` only if no object is there (`AlreadyExists` if one is, and it is
        left as it is); a reader sees the whole object or none."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store a local file's content at `key` (the file is left as it is)."""
        ...

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A file to write the object at `key` into; it appears, whole, only if the `with`
        block ends without an exception."""
        ...

    def delete_prefix(self, prefix: str) -> None: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def uri(self) -> str:
        return str(self.root)

    def name(self, key: str) -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def list(self, prefix: str = "") -> list[StoredFile]:
        if self.root.is_file():
            stat = self.root.stat()
            return [StoredFile("", stat.st_size, str(stat.st_mtime_ns))] if not prefix else []
        if not self.root.is_dir():
            return []
        found = []
        for path in self.root.rglob("*"):
            if not path.is_file():
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                stat = path.stat()
                found.append(StoredFile(key, stat.st_size, str(stat.st_mtime_ns)))
        return sorted(found, key=lambda f: f.key)

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except OSError as exc:
            raise StorageError(f"{self.name(key)}: {exc.strerror or exc}") from None

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(start)
                return handle.read() if end is None else handle.read(max(0, end - start))
        except OSError as exc:
            raise StorageError(f"{self.name(key)}: {exc.strerror or exc}") from None

    def stream(self, key: str) -> Any:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise StorageError(f"{self.name(key)}: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.exists() if not key else path.is_file()

    @contextmanager
    def _replacing(self, key: str) -> Iterator[Path]:
        """A hidden file to write `key`'s content to: synced to disk and renamed onto `key` when
        the block ends (a power cut after the rename leaves the content, not an empty file),
        removed if it fails or is interrupted (Ctrl-C), so no half-written file is left behind.
        Its name is this writer's alone: the process id, which another container writing into
        the same folder may share, and a random token."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
        try:
            yield partial
            sync_file(partial)
            os.replace(partial, target)
            sync_folder(target.parent)
        finally:
            partial.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._replacing(key) as partial:
            partial.write_bytes(data)

    def create_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Linked from a complete file: link(2), unlike a rename, fails if the name exists.
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        ) as partial:
            partial.write(data)
            partial.flush()
            os.fsync(partial.fileno())
            try:
                link_new(partial.name, target, error=StorageError)
            except FileExistsError:
                raise AlreadyExists(self.name(key)) from None
            sync_folder(target.parent)

    def put_file(self, key: str, path: Path) -> None:
        with self._replacing(key) as partial:
            shutil.copyfile(path, partial)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        with self._replacing(key) as partial, open(partial, "wb") as handle:
            yield handle

    def delete_prefix(self, prefix: str) -> None:
        target = self._path(prefix.rstrip("/"))
        if target.is_dir():
            shutil.rmtree(target)
        elif target.is_file():
            target.unlink()


class S3Storage:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        # `s3://b/data/` is a folder: listed as `data/`, which is also what a policy that grants
        # s3:ListBucket on the prefix `data/*` allows (`s3://b/data` may be one object).
        self.folder = prefix.endswith("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from sds.kernel.sdk import client

            self._client = client("s3")
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        if not self.prefix:
            return key
        return f"{self.prefix}/{key}" if key else self.prefix

    def name(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def _fail(self, key: str, exc: Exception) -> StorageError:
        response = getattr(exc, "response", None) or {}
        code = response.get("Error", {}).get("Code") or type(exc).__name__
        message = response.get("Error", {}).get("Message") or str(exc)
        return StorageError(f"{self.name(key)}: {code}: {message}")

    def list(self, prefix: str = "") -> list[StoredFile]:
        base = self._key("")
        found: list[StoredFile] = []
        # A prefix that is one object (s3://bucket/events.jsonl.gz) lists as itself.
        search = self._key(prefix) if prefix else (f"{base}/" if self.folder and base else base)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=search
            )
            for page in pages:
                for item in page.get("Contents", []):
                    full = item["Key"]
                    if full == base:
                        key = ""
                    elif not base:
                        key = full
                    elif full.startswith(base + "/"):
                        key = full[len(base) + 1 :]
                    else:
                        continue  # s3://b/data matched s3://b/database/...: not under it
                    if full.endswith("/"):
                        continue  # a "folder" placeholder
                    found.append(StoredFile(key, int(item["Size"]), str(item["ETag"]).strip('"')))
        except Exception as exc:
            raise self._fail(prefix, exc) from exc
        return sorted(found, key=lambda f: f.key)

    def size(self, key: str) -> int:
        try:
            return int(
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"]
            )
        except Exception as exc:
            raise self._fail(key, exc) from exc

    def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        if end is not None and end <= start:
            return b""
        extra = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        if start == 0 and end is None:
            extra = {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
            return bytes(response["Body"].read())
        except Exception as exc:
            if error_code(exc) == "InvalidRange":  # start at or past the end: nothing there
                return b""
            raise self._fail(key, exc) from exc

    def stream(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise self._fail(key, exc) from exc

    def exists(self, key: str) -> bool:
        from sds.kernel.aws.s3 import is_missing

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            if is_missing(exc, client=self.client, bucket=self.bucket, key=self._key(key)):
                return False
            raise self._fail(key, exc) from exc
        return True

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._fail(key, exc) from exc

    def create_bytes(self, key: str, data: bytes) -> None:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
                )
                return
            except Exception as exc:
                status = error_status(exc)
                if error_code(exc) == "PreconditionFailed" or status == 412:
                    raise AlreadyExists(self.name(key)) from None
                conflict = error_code(exc) == "ConditionalRequestConflict" or status == 409
                if not conflict or attempt == CONFLICT_ATTEMPTS:
                    raise self._fail(key, exc) from exc
            time.sleep(CONFLICT_RETRY_SECONDS)

    def put_file(self, key: str, path: Path) -> None:
        try:
            # Multipart above 8 MiB: the object appears only when the upload completes.
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except Exception as exc:
            raise self._fail(key, exc) from exc

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        # Through a local file: the upload starts only once the content is complete.
        with tempfile.NamedTemporaryFile(prefix="sds-batch-", suffix=".part") as handle:
            yield handle  # type: ignore[misc]
            handle.flush()
            self.put_file(key, Path(handle.name))

    def delete_prefix(self, prefix: str) -> None:
        keys = [self._key(f.key) for f in self.list(prefix)]
        try:
            for start in range(0, len(keys), 1000):
                chunk = keys[start : start + 1000]
                self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True},
                )
        except Exception as exc:
            raise self._fail(prefix, exc) from exc


def open_storage(location: str | Path) -> Storage:
    """The storage at a local path (file or folder) or `s3://bucket[/prefix]`."""
    text = str(location)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise UsageError(f"{text}: S3 locations look like s3://bucket/prefix")
        return S3Storage(parsed.netloc, unquote(parsed.path).lstrip("/"))
    if "://" in text:
        raise UsageError(f"{text}: use a local path or s3://bucket/prefix")
    return LocalStorage(Path(text))


def iter_chunks(storage: Storage, key: str, start: int, chunk: int) -> Iterator[bytes]:
    """The object from `start` on, `chunk` bytes at a time (the last one shorter)."""
    position = start
    while True:
        data = storage.read(key, position, position + chunk)
        if not data:
            return
        yield data
        if len(data) < chunk:
            return
        position += len(data)
