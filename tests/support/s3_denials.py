"""S3 as a caller that may not list the bucket hears it, which moto does not play.

S3 answers a read (GetObject, HeadObject) of a key that does not exist with 404 only to a caller
allowed s3:ListBucket on the bucket; to any other it answers 403 AccessDenied, as it answers a
read that the caller's policy refuses. The sds roles and operator policies grant ListBucket only
under an `s3:prefix` condition, and a read carries no prefix: to them a missing key is a 403
(docs/decisions.md 55). moto answers 404 to everyone.

`Listless` is such a caller: a read of a missing key, or of one of its `refused` keys, is
AccessDenied; a listing is allowed (a prefix condition lets it list under its own keys) unless
`may_list` is false. It is played on the SDK by `install` (a client's `meta.events`, or a
session's `events` for every client made from it), and on the kernel's own client by
`ListlessS3Client`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse

from sds.kernel.aws.s3 import S3Client, S3Error
from sds.kernel.aws.transport import Response

_READS = ("GetObject", "HeadObject")
_NOTED = "listless-request"  # where `install` keeps the operation and key of a call


@dataclass(frozen=True)
class Listless:
    refused: frozenset[str] = frozenset()
    may_list: bool = True

    def denies(self, operation: str, key: str) -> bool:
        """Whether S3 refuses this caller the call whatever the bucket holds."""
        if operation in _READS:
            return key in self.refused
        return operation in ("ListObjectsV2", "ListObjects") and not self.may_list

    def install(self, events: Any) -> None:
        """Answer the SDK calls made through `events` as S3 answers this caller."""
        events.register("before-parameter-build.s3", self._note)
        events.register("before-call.s3", self._refuse)
        for operation in _READS:
            events.register(f"after-call.s3.{operation}", self._missing_is_denied)

    def _note(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context[_NOTED] = (model.name, str(params.get("Key", params.get("Prefix", ""))))

    def _refuse(
        self, context: dict[str, Any], **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        operation, key = context.get(_NOTED, ("", ""))
        if not self.denies(operation, key):
            return None
        parsed: dict[str, Any] = {"ResponseMetadata": {}}
        _deny(parsed, operation)
        return AWSResponse("http://moto", 403, {}, None), parsed  # type: ignore[arg-type]

    @staticmethod
    def _missing_is_denied(
        http_response: AWSResponse, parsed: dict[str, Any], model: Any, **_: Any
    ) -> None:
        if http_response.status_code == 404:
            http_response.status_code = 403
            _deny(parsed, model.name)


def _deny(parsed: dict[str, Any], operation: str) -> None:
    """`parsed` made the SDK's parse of S3's 403: a HEAD answer has no body, so no code but the
    status."""
    head = operation == "HeadObject"
    parsed["Error"] = {
        "Code": "403" if head else "AccessDenied",
        "Message": "Forbidden" if head else "Access Denied",
    }
    parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = 403


class ListlessS3Client(S3Client):
    """The kernel's S3 client of a `Listless` caller (moto behind it)."""

    def __init__(self, caller: Listless, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.caller = caller

    def _get(self, operation: str, bucket: str, key: str, query: Any = ()) -> Response:
        named = dict(query).get("prefix", "") if operation == "ListObjectsV2" else key
        if self.caller.denies(operation, named):
            raise _denied(operation)
        try:
            return super()._get(operation, bucket, key, query)
        except S3Error as exc:
            if operation in _READS and exc.status == 404:
                raise _denied(operation) from None
            raise


def _denied(operation: str) -> S3Error:
    return S3Error(
        "Access Denied", service="s3", operation=operation, code="AccessDenied", status=403
    )
