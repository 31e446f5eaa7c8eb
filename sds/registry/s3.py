"""The registry's object store on Amazon S3 (or anything that speaks its protocol).

Conditional writes map one to one: create is `PutObject` with `If-None-Match: *`, compare-and-swap
is `PutObject` with `If-Match: <etag>`; S3 answers 412 (or 409 when two conditional writes race)
and nothing is written. The client uses the SDK's standard retry mode, so throttling and 5xx are
retried with backoff; it honours AWS_ENDPOINT_URL like every SDK client.
"""

from __future__ import annotations

from typing import Any

from sds.registry.store import NotFound, PreconditionFailed, StoredObject

_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def s3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 5}))


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def get(self, key: str) -> StoredObject:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from None
            raise
        return StoredObject(data=response["Body"].read(), etag=response["ETag"].strip('"'))

    def put(
        self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self.prefix + key, "Body": data}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = f'"{if_match}"'
        try:
            response = self.client.put_object(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if error.get("Code") in _CONFLICT_CODES or status in ("412", "409"):
                raise PreconditionFailed(key) from None
            if if_match is not None and error.get("Code") in ("NoSuchKey", "404"):
                raise PreconditionFailed(key) from None
            raise
        return str(response["ETag"]).strip('"')

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys.extend(o["Key"][len(self.prefix) :] for o in page.get("Contents", []))
        return sorted(keys)
