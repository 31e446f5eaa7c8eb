"""The registry's object store on S3 for readers that must not load the AWS SDK: the Lambda.

`S3ReadStore` reads through the kernel's own S3 client (`sds.kernel.aws.s3`: SigV4 over a
kept-alive connection, no boto3), so the serving path's cold start pays neither boto3's import
nor its client creation. It answers `get` and `list` exactly like `S3Store` (same keys, same
etags, `NotFound` for a missing key) and refuses every write: writers (the CLI, training) use
`S3Store` and the SDK. `open_store(uri, read_only=True)` picks it for `s3://` URIs.
"""

from __future__ import annotations

import contextlib

from sds.kernel.aws.errors import AwsError, explained
from sds.kernel.aws.s3 import S3Client, is_missing
from sds.kernel.registry.store import NotFound, ReadOnlyStoreError, StoredObject


class S3Location:
    """Where a registry's objects are on S3, and how a failure there is said: the bucket, the
    key prefix, where the bucket's name came from (`source`: `/sds/dev/registry-bucket`,
    `SDS_REGISTRY_DEV`) and which stack creates it (`stack`: `dev/Registry`), so that an AWS
    failure names them with the fix (`sds.kernel.aws.errors.explain`). Both S3 stores are one."""

    def __init__(self, bucket: str, prefix: str, *, source: str, stack: str) -> None:
        self.bucket = bucket
        self.source = source
        self.stack = stack
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _explained(self, doing: str, key: str) -> contextlib.AbstractContextManager[None]:
        return explained(
            doing=f"{doing} s3://{self.bucket}/{self.prefix}{key}",
            resource=f"registry bucket {self.bucket}",
            source=self.source,
            stack=self.stack,
        )


class S3ReadStore(S3Location):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: S3Client | None = None,
        source: str = "",
        stack: str = "",
    ) -> None:
        super().__init__(bucket, prefix, source=source, stack=stack)
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = S3Client()
        return self._client

    def get(self, key: str) -> StoredObject:
        with self._explained("reading", key):
            try:
                found = self.client.get_object(self.bucket, self.prefix + key)
            except AwsError as exc:
                if is_missing(exc, client=self.client, bucket=self.bucket, key=self.prefix + key):
                    raise NotFound(key) from None
                raise
        return StoredObject(data=found.data, etag=found.etag)

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        del data, if_none_match, if_match
        raise ReadOnlyStoreError(self.uri, key)

    def list(self, prefix: str) -> list[str]:
        with self._explained("listing", prefix):
            keys = self.client.list_objects_v2(self.bucket, self.prefix + prefix)
        return sorted(k[len(self.prefix) :] for k in keys)
