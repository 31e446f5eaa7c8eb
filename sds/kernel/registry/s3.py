"""The registry's object store on Amazon S3 (or anything that speaks its protocol).

Conditional writes map one to one: create is `PutObject` with `If-None-Match: *`, compare-and-swap
is `PutObject` with `If-Match: <etag>`; S3 answers 412 (or 409 when two conditional writes race)
and nothing is written. Objects at or above `multipart_threshold` (large artifacts) go up as a
multipart upload whose `CompleteMultipartUpload` carries the same `If-None-Match: *`, so a large
version is claimed as atomically as a small one: parts are invisible until completion, and a
losing writer's upload is aborted. Compare-and-swap is only ever needed for alias documents
(a few hundred bytes), so multipart is never combined with `If-Match`.

The client uses the SDK's standard retry mode (throttling, 5xx, connection errors, with backoff)
and honours AWS_ENDPOINT_URL like every SDK client. A retried compare-and-swap whose first attempt
did land (the response was lost) would see 412; the store then reads the object back, and if it
holds exactly the bytes written, the write is ours and succeeds. Alias documents carry a unique
event id, so equal bytes cannot come from another writer.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sds.kernel.aws.errors import error_code, error_status
from sds.kernel.aws.s3 import is_missing
from sds.kernel.registry.s3_read import S3Location
from sds.kernel.registry.store import NotFound, PreconditionFailed, StoredObject

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024  # S3 minimum is 5 MiB for every part but the last


def s3_client() -> Any:
    from sds.kernel.sdk import client

    return client("s3")


def _is_conflict(exc: Any) -> bool:
    return error_code(exc) in _CONFLICT_CODES or error_status(exc) in (412, 409)


class S3Store(S3Location):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        source: str = "",
        stack: str = "",
    ) -> None:
        """`source` says where the bucket's name came from (`/sds/dev/registry-bucket`,
        `SDS_REGISTRY_DEV`) and `stack` which stack creates it (`dev/Registry`): an AWS failure
        names them with the fix (`sds.kernel.aws.errors.explain`)."""
        super().__init__(bucket, prefix, source=source, stack=stack)
        self._client = client
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def get(self, key: str) -> StoredObject:
        from botocore.exceptions import ClientError

        with self._explained("reading", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
            except ClientError as exc:
                if is_missing(exc, client=self.client, bucket=self.bucket, key=self.prefix + key):
                    raise NotFound(key) from None
                raise
            return StoredObject(data=response["Body"].read(), etag=response["ETag"].strip('"'))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        with self._explained("writing", key):
            return self._put(key, data, if_none_match=if_none_match, if_match=if_match)

    def _put(self, key: str, data: bytes, *, if_none_match: bool, if_match: str | None) -> str:
        from botocore.exceptions import ClientError

        if if_match is None and len(data) >= self.multipart_threshold:
            return self._put_multipart(key, data, if_none_match=if_none_match)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key, "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'
        try:
            response = self.client.put_object(**kwargs)
        except ClientError as exc:
            if _is_conflict(exc):
                if if_match is not None:
                    return self._landed_anyway(key, data)
                raise PreconditionFailed(key) from None
            if if_match is not None and exc.response.get("Error", {}).get("Code") in (
                "NoSuchKey",
                "404",
            ):
                raise PreconditionFailed(key) from None
            raise
        return str(response["ETag"]).strip('"')

    def _landed_anyway(self, key: str, data: bytes) -> str:
        try:
            current = self.get(key)
        except NotFound:
            raise PreconditionFailed(key) from None
        if current.data != data:
            raise PreconditionFailed(key)
        return current.etag

    def _put_multipart(self, key: str, data: bytes, *, if_none_match: bool) -> str:
        from botocore.exceptions import ClientError

        full_key = self.prefix + key
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), self.part_size), start=1):
                part = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data[start : start + self.part_size],
                )
                parts.append({"PartNumber": number, "ETag": part["ETag"]})
            kwargs: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": full_key,
                "UploadId": upload_id,
                "MultipartUpload": {"Parts": parts},
            }
            if if_none_match:
                kwargs["IfNoneMatch"] = "*"
            response = self.client.complete_multipart_upload(**kwargs)
        except ClientError as exc:
            self._abort(full_key, upload_id)
            if _is_conflict(exc):
                raise PreconditionFailed(key) from None
            raise
        except BaseException:
            self._abort(full_key, upload_id)
            raise
        return str(response["ETag"]).strip('"')

    def _abort(self, full_key: str, upload_id: str) -> None:
        # Best effort: the bucket's lifecycle rule aborts stragglers after a few days.
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key, UploadId=upload_id)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._explained("listing", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                keys.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", []))
        return sorted(keys)
