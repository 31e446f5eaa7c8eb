"""S3 reads without the SDK: GetObject and ListObjectsV2 (what the registry's read path needs),
and `is_missing`, which every S3 reader of sds (with this client or the SDK's) asks whether a
failed read means that the key does not exist.

Addressing as the SDK does it: virtual-hosted (`bucket.s3.<region>.amazonaws.com`) for
DNS-compatible bucket names without dots, path style otherwise and on a custom endpoint
(`AWS_ENDPOINT_URL[_S3]`: moto, MinIO, LocalStack all take it). A bucket in another region than
the client's is followed once, to the region S3 names in `x-amz-bucket-region`, and remembered.
Keys are percent-encoded like the SDK (`/` and `~` kept); S3 signs the path as sent.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from sds.kernel.aws.client import AwsClient, Endpoint, dns_suffix
from sds.kernel.aws.errors import AwsError, error_code
from sds.kernel.aws.transport import Response

# Virtual-hosted addressing needs a DNS label (no dots: the wildcard certificate covers one).
_VIRTUAL_HOSTABLE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_XML_ENTITIES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&"))
_STATUS_CODES = {304: "NotModified", 400: "BadRequest", 403: "Forbidden", 404: "NotFound"}
_REDIRECT_STATUSES = frozenset({301, 307, 400})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# A refused read: GetObject's AccessDenied; HeadObject's answer has no body, only its status.
_DENIED_CODES = frozenset({"AccessDenied", "Forbidden", "403"})
Query = tuple[tuple[str, str], ...]


class S3Object(NamedTuple):
    data: bytes
    etag: str  # without the quotes
    content_type: str | None = None


def _xml_text(document: str, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", document, re.S)
    if match is None:
        return None
    text = match.group(1)
    for entity, char in _XML_ENTITIES:
        text = text.replace(entity, char)
    return text


class S3Error(AwsError):
    """An S3 error response; `bucket_region` is S3's `x-amz-bucket-region` when it sent one."""

    bucket_region: str | None = None


class S3Client(AwsClient):
    service = "s3"
    service_id = "S3"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._bucket_regions: dict[str, str] = {}

    def default_endpoint(self, region: str) -> Endpoint:
        return Endpoint("https", f"s3.{region}.{dns_suffix(region)}", 443, custom=False)

    def _address(self, bucket: str, key: str, region: str) -> tuple[Endpoint, str]:
        """(endpoint, wire path) of an object, or of the bucket when `key` is empty."""
        encoded_key = quote(key, safe="/~")
        if self.endpoint.custom:
            return self.endpoint, f"/{bucket}" + (f"/{encoded_key}" if key else "")
        base = self.endpoint if region == self.region else self.default_endpoint(region)
        if _VIRTUAL_HOSTABLE.match(bucket):
            return base.with_host(f"{bucket}.{base.host}"), f"/{encoded_key}"
        return base, f"/{bucket}" + (f"/{encoded_key}" if key else "")

    def error_from(self, operation: str, response: Response) -> AwsError:
        text = response.body.decode("utf-8", "replace") if response.body else ""
        code = _xml_text(text, "Code") or _STATUS_CODES.get(response.status) or str(response.status)
        message = _xml_text(text, "Message") or response.reason or "request failed"
        request_id = _xml_text(text, "RequestId") or response.headers.get("x-amz-request-id")
        error = S3Error(
            message,
            service=self.service,
            operation=operation,
            code=code,
            status=response.status,
            request_id=request_id,
        )
        error.bucket_region = response.headers.get("x-amz-bucket-region") or _xml_text(
            text, "Region"
        )
        return error

    def _get(self, operation: str, bucket: str, key: str, query: Query = ()) -> Response:
        if not _BUCKET.match(bucket):
            raise AwsError(
                f"{bucket!r} is not an S3 bucket name", service="s3", operation=operation
            )
        region = self._bucket_regions.get(bucket, self.region)
        endpoint, path = self._address(bucket, key, region)
        try:
            return self.send(operation, "GET", path, endpoint=endpoint, query=query, region=region)
        except S3Error as exc:
            moved = exc.bucket_region
            if (
                self.endpoint.custom
                or exc.status not in _REDIRECT_STATUSES
                or not moved
                or moved == region
            ):
                raise
        # The bucket lives in another region: S3 said which; go there (once) and remember it.
        self._bucket_regions[bucket] = moved
        endpoint, path = self._address(bucket, key, moved)
        return self.send(operation, "GET", path, endpoint=endpoint, query=query, region=moved)

    def get_object(self, bucket: str, key: str) -> S3Object:
        """The object's bytes and etag; AwsError with code NoSuchKey (HTTP 404) if it is absent
        (AccessDenied, 403, when the caller may not list the bucket: `is_missing` tells)."""
        if not key:
            raise AwsError("an object key is required", service="s3", operation="GetObject")
        response = self._get("GetObject", bucket, key)
        return S3Object(
            data=response.body,
            etag=response.headers.get("etag", "").strip('"'),
            content_type=response.headers.get("content-type"),
        )

    def first_key(self, bucket: str, prefix: str) -> str | None:
        """The first key under `prefix` in S3's order, None if there is none: one ListObjectsV2
        request of one key (`max-keys=1`)."""
        found, _ = self._list_page(bucket, prefix, max_keys=1, token=None)
        return found[0] if found else None

    def list_objects_v2(
        self, bucket: str, prefix: str = "", *, page_size: int | None = None
    ) -> list[str]:
        """Every key under `prefix`, in S3's order (UTF-8 binary), following continuations
        (`page_size` keys a page; S3's default is 1000)."""
        keys: list[str] = []
        token: str | None = None
        while True:
            found, token = self._list_page(bucket, prefix, max_keys=page_size, token=token)
            keys.extend(found)
            if not token:
                return keys

    def _list_page(
        self, bucket: str, prefix: str, *, max_keys: int | None, token: str | None
    ) -> tuple[list[str], str | None]:
        """One ListObjectsV2 page: its keys, and the token of the next page (None: the last)."""
        query: Query = (("list-type", "2"), ("encoding-type", "url"), ("prefix", prefix))
        if max_keys is not None:
            query = (*query, ("max-keys", str(max_keys)))
        if token:
            query = (*query, ("continuation-token", token))
        return _parse_list(self._get("ListObjectsV2", bucket, "", query).body)


def is_missing(error: BaseException, *, client: Any, bucket: str, key: str) -> bool:
    """Whether `error`, raised by a read (GetObject, HeadObject) of `key` through `client` (this
    module's `S3Client`, or the SDK's), says that the key does not exist.

    A 404 does. S3 answers 404 only to a caller allowed s3:ListBucket on the bucket, though; to
    any other it answers 403, as it does to a read the caller's policy refuses. The sds roles
    and operator policies may list only under their model's or data's prefix (an `s3:prefix`
    condition), and whether S3 counts that for a read, which has no prefix, is not documented:
    so a 403 is checked by listing exactly `key` (ListObjectsV2 with Prefix=key, MaxKeys=1,
    which such a condition allows). Missing if that listing does not name it; if it does, or
    the listing fails too, the refusal stands: a refusal is never taken for a missing key.
    """
    code = error_code(error)
    if code in _NOT_FOUND_CODES:
        return True
    if code not in _DENIED_CODES:
        return False
    try:
        if isinstance(client, S3Client):
            first = client.first_key(bucket, key)
        else:
            listed = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
            first = next((item["Key"] for item in listed.get("Contents", [])), None)
    except Exception:  # refused, or failing: the first refusal is the answer
        return False
    return first != key


def _parse_list(body: bytes) -> tuple[list[str], str | None]:
    """(keys, next continuation token) of a ListObjectsV2 page (keys URL-decoded)."""
    import xml.etree.ElementTree as ElementTree  # only listing parses XML: not the model load

    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise AwsError(
            f"the ListObjectsV2 answer is not XML ({exc})", service="s3", operation="ListObjectsV2"
        ) from None
    keys: list[str] = []
    token: str | None = None
    truncated = False
    for element in root:
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Contents":
            for child in element:
                if child.tag.rsplit("}", 1)[-1] == "Key":
                    keys.append(unquote(child.text or ""))
        elif tag == "NextContinuationToken":
            token = element.text
        elif tag == "IsTruncated":
            truncated = (element.text or "").strip().lower() == "true"
    return keys, token if truncated else None
