"""What only the S3 backend has: multipart uploads, SDK retries, and a retried compare-and-swap.

(The registry contract itself runs on S3 in tests/contract, against the same moto server.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from sds.kernel.registry import Registry
from sds.kernel.registry.s3 import S3Store
from sds.kernel.registry.store import PreconditionFailed

MIB = 1024 * 1024


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def failing_response(status: int, code: str) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    return AWSResponse("http://moto", status, {}, _Body(body))  # type: ignore[arg-type]


def test_large_artifacts_go_up_as_multipart_and_are_still_create_only(
    s3_store: Callable[..., S3Store],
) -> None:
    # Given a store that switches to multipart at 5 MiB (S3's minimum part size)
    store = s3_store(multipart_threshold=5 * MIB, part_size=5 * MIB)
    data = os.urandom(11 * MIB)

    # When a large object is created
    etag = store.put("models/fraud/versions/1/model.onnx", data, if_none_match=True)

    # Then it was uploaded in three parts and reads back intact
    assert etag.endswith("-3")
    assert store.get("models/fraud/versions/1/model.onnx").data == data
    # And a second create of the same key loses (If-None-Match on CompleteMultipartUpload),
    # keeps the winner's bytes and leaves no unfinished upload behind
    with pytest.raises(PreconditionFailed):
        store.put("models/fraud/versions/1/model.onnx", os.urandom(6 * MIB), if_none_match=True)
    assert store.get("models/fraud/versions/1/model.onnx").data == data
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket)
    assert not uploads.get("Uploads")


def test_a_registered_multipart_artifact_is_verified_on_read(
    s3_store: Callable[..., S3Store],
) -> None:
    registry = Registry(s3_store(multipart_threshold=5 * MIB, part_size=5 * MIB), "fraud")
    onnx = os.urandom(6 * MIB)
    version = registry.register({"model.onnx": onnx}, {}, actor="ci")
    assert registry.read_artifact(version.number) == onnx


def test_throttling_and_server_errors_are_retried_by_the_sdk(
    s3_store: Callable[..., S3Store],
) -> None:
    # Given S3 answering the first two attempts with SlowDown (503) and InternalError (500)
    store = s3_store()
    attempts: list[str] = []

    def flaky(request: Any, **_: Any) -> AWSResponse | None:
        attempts.append(request.method)
        if len(attempts) == 1:
            return failing_response(503, "SlowDown")
        if len(attempts) == 2:
            return failing_response(500, "InternalError")
        return None

    store.client.meta.events.register("before-send.s3.PutObject", flaky)

    # When creating an object, Then the standard retry mode gets it through on the third try
    store.put("k", b"v", if_none_match=True)
    assert len(attempts) == 3
    assert store.get("k").data == b"v"


def test_a_compare_and_swap_whose_response_was_lost_is_recognized_as_its_own(
    s3_store: Callable[..., S3Store],
) -> None:
    # Given an alias document, and a network that loses the response of the first swap attempt
    store = s3_store()
    etag = store.put("alias.json", b'{"version": 1, "event_id": "a"}', if_none_match=True)
    writer = S3Store(store.bucket)  # a second client, standing in for the lost first attempt
    lost: list[bool] = []

    def lose_first_response(request: Any, **_: Any) -> AWSResponse | None:
        if lost:
            return None
        lost.append(True)
        writer.client.put_object(
            Bucket=store.bucket, Key="alias.json", Body=request.body, IfMatch=f'"{etag}"'
        )
        return failing_response(500, "InternalError")

    store.client.meta.events.register("before-send.s3.PutObject", lose_first_response)

    # When the SDK retries, S3 answers 412 (the etag moved: the first attempt landed)
    new = b'{"version": 2, "event_id": "b"}'
    new_etag = store.put("alias.json", new, if_match=etag)

    # Then the store reads the object back, finds its own bytes, and reports success
    assert store.get("alias.json").data == new and store.get("alias.json").etag == new_etag
    # While a genuinely different winner is still a lost race
    with pytest.raises(PreconditionFailed):
        store.put("alias.json", b'{"version": 3, "event_id": "c"}', if_match=etag)
