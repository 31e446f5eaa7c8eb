"""A key that does not exist, as S3 says it to a caller that may not list the bucket: 403
AccessDenied, not 404 (played on moto by tests/support/s3_denials.py).

Where a missing key is a normal outcome (an alias before the first promotion, a rollback lease
nobody holds, a batch run's manifest before it finishes), the S3 readers (the registry's two
stores, a batch run's storage) confirm such a 403 by listing exactly that key: not listed, it is
missing, as a 404 says; listed, or a listing refused too, the refusal stands.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sds.kernel.aws.errors import AwsFailure
from sds.kernel.batch.storage import S3Storage, StorageError
from sds.kernel.registry import Registry, VersionNotFound
from sds.kernel.registry.s3 import S3Store
from sds.kernel.registry.s3_read import S3ReadStore
from sds.kernel.registry.store import NotFound, ObjectStore
from sds.ops.aws_rollback import lease, lease_key
from tests.support.s3_denials import Listless, ListlessS3Client

ALIAS = "models/fraud/aliases/dev.json"
DENIED_READ = r"access denied to (s3:)?GetObject on registry bucket"


def sdk_client(aws: Any, caller: Listless) -> Any:
    client = aws.client("s3")
    caller.install(client.meta.events)
    return client


@pytest.fixture(params=["S3Store", "S3ReadStore"])
def store_of(request: pytest.FixtureRequest, aws: Any) -> Callable[[Listless], ObjectStore]:
    """Each S3 store of the registry on one bucket (holding the alias of dev), read by a caller
    S3 answers as `Listless` says."""
    bucket = aws.bucket()
    aws.client("s3").put_object(Bucket=bucket, Key=ALIAS, Body=b"{}")

    def make(caller: Listless) -> ObjectStore:
        if request.param == "S3Store":
            return S3Store(bucket, client=sdk_client(aws, caller))
        return S3ReadStore(bucket, client=ListlessS3Client(caller))

    return make


def test_a_missing_key_is_not_found_though_s3_answers_its_read_with_403(
    store_of: Callable[[Listless], ObjectStore],
) -> None:
    # Given a caller S3 answers 403 for a key that does not exist, which may list the keys it
    # reads (s3:ListBucket under an s3:prefix condition)
    store = store_of(Listless())

    # When it reads keys that do not exist, one of them the start of a key that does
    # Then each is missing, as a 404 says; and a key that exists reads as ever
    for missing in ("models/fraud/aliases/staging.json", "models/fraud/aliases/dev"):
        with pytest.raises(NotFound, match=f"{missing}: not found"):
            store.get(missing)
    assert store.get(ALIAS).data == b"{}"


def test_a_key_that_exists_but_is_refused_stays_access_denied(
    store_of: Callable[[Listless], ObjectStore],
) -> None:
    # Given a caller whose policy refuses it the alias, which exists
    store = store_of(Listless(refused=frozenset({ALIAS})))

    # When it reads the alias, then the refusal stands: never taken for a missing alias
    with pytest.raises(AwsFailure, match=DENIED_READ):
        store.get(ALIAS)


def test_a_missing_key_whose_listing_is_refused_too_stays_access_denied(
    store_of: Callable[[Listless], ObjectStore],
) -> None:
    # Given a caller that may list nothing: a 403 cannot be told from a refusal
    store = store_of(Listless(may_list=False))

    # When it reads a key that does not exist, then the read's refusal is the error
    with pytest.raises(AwsFailure, match=DENIED_READ):
        store.get("models/fraud/aliases/staging.json")


def test_a_first_promotion_and_a_first_lease_work_for_a_caller_s3_answers_403(aws: Any) -> None:
    # Given an empty registry and a version in it, read and written by a caller S3 answers 403
    # for a missing key
    store = S3Store(aws.bucket(), client=sdk_client(aws, Listless()))
    registry = Registry(store, "fraud")
    version = registry.register({"model.onnx": b"onnx"}, {}, actor="tester@ci")

    # When it promotes into an environment nothing was promoted to, under the rollback lease
    # nobody ever took
    assert registry.get_alias("staging") is None
    with lease(store, lease_key("fraud", "staging"), holder="tester@ci", wait_s=0):
        registry.move_alias(
            "staging", version.number, expected=None, kind="promoted", actor="t", reason="r"
        )

    # Then the alias moved; and a version that does not exist is said as such
    state = registry.get_alias("staging")
    assert state is not None and state.version == version.number
    with pytest.raises(VersionNotFound, match="has no version 9"):
        registry.get_version(9)


def test_a_batch_run_s_missing_object_is_absent_though_s3_answers_403(aws: Any) -> None:
    # Given a batch run's output prefix, read by a caller S3 answers 403 for a missing key
    bucket = aws.bucket()
    output = S3Storage(bucket, "runs/one/", client=sdk_client(aws, Listless()))

    # When it asks for its manifest before and after it is written
    # Then it is absent, then present; reading it while absent still fails, naming it
    assert not output.exists("manifest.json")
    with pytest.raises(StorageError, match=f"s3://{bucket}/runs/one/manifest.json: AccessDenied"):
        output.read("manifest.json")
    output.put_bytes("manifest.json", b"{}")
    assert output.exists("manifest.json")


@pytest.mark.parametrize(
    ("caller", "written"),
    [
        (Listless(refused=frozenset({"runs/one/manifest.json"})), True),
        (Listless(may_list=False), False),
    ],
    ids=["refused", "unlistable"],
)
def test_a_batch_run_s_object_s3_refuses_is_an_error_not_absent(
    aws: Any, caller: Listless, written: bool
) -> None:
    # Given a run whose manifest exists but is refused, or is not there for a caller that may
    # not list it either
    bucket = aws.bucket()
    if written:
        aws.client("s3").put_object(Bucket=bucket, Key="runs/one/manifest.json", Body=b"{}")
    output = S3Storage(bucket, "runs/one/", client=sdk_client(aws, caller))

    # When it asks whether the manifest exists, then the refusal is the answer
    with pytest.raises(StorageError, match=f"s3://{bucket}/runs/one/manifest.json: 403"):
        output.exists("manifest.json")
