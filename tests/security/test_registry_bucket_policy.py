"""S3 enforces what the registry client promises: version objects and audit events are created
once and never rewritten, aliases move only by compare-and-swap, nothing under the model's prefix
is deleted but by the retention role (stacks/components/registry_protection.py).

Three kinds of evidence, because no local server decides all of it:

1. The statements as synthesized for every environment, pinned to the form the AWS documentation
   gives: "Enforce conditional writes on Amazon S3 buckets" (Amazon S3 User Guide,
   https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes-enforce.html), and
   "Bucket policies for Amazon S3" (https://docs.aws.amazon.com/AmazonS3/latest/userguide/
   bucket-policies.html) for lifecycle rules, which no bucket policy stops.
2. Those statements evaluated for the requests the registry (and someone rewriting it) sends,
   with the meaning the IAM User Guide gives the condition operators they use (`Null`, `Bool`,
   `ArnNotEquals`; "IAM JSON policy elements: Condition operators",
   https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html):
   a small evaluator below, for these three operators only.
3. The moto server (5.2.5) with the statements it can decide: it evaluates bucket policies but
   none of their conditions (every statement applies as if its condition held; see
   `test_moto_cannot_decide_the_conditional_statements`), so it gets the delete denial, and
   shows deletes refused, other prefixes untouched and the registry's own flows (register, also
   as a multipart upload; copy up; alias moves; audit events; the rollback lease) working on a
   bucket that carries it. Which caller is exempt (the retention role) moto cannot decide: part 2
   shows it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sds.kernel.registry import Registry
from sds.kernel.registry.s3 import S3Store
from sds.ops.aws_rollback import lease, lease_key
from stacks.components.registry_protection import (
    COMPARE_AND_SWAP_SID,
    NO_DELETE_SID,
    WRITE_ONCE_SID,
)
from tests.security.security_report import record
from tests.security.security_templates import AuditedApp

BUCKET_ID = "RegistryBucket9C3667AF"  # pinned in tests/infra/test_cdk_registry.py
AUTO_DELETE_ROLE_ID = "CustomS3AutoDeleteObjectsCustomResourceProviderRole3B1BD092"
ENVIRONMENTS = ["dev", "staging", "prod", "variant"]
CONDITIONAL_SIDS = (WRITE_ONCE_SID, COMPARE_AND_SWAP_SID)


def registry_statements(app: AuditedApp, env: str) -> list[dict[str, Any]]:
    """The statements of the registry bucket's policy, as synthesized for `env`."""
    template = app.templates[(env, "Registry")]
    (policy,) = [
        r["Properties"]["PolicyDocument"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": BUCKET_ID}
    ]
    return list(policy["Statement"])


def retention_role_id(app: AuditedApp, env: str) -> str:
    template = app.templates[(env, "Registry")]
    (role_id,) = [
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("ProtectionRetentionRole")
    ]
    return role_id


def by_sid(statements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in statements if "Sid" in s}


def objects(suffix: str) -> dict[str, Any]:
    """A resource of the registry bucket, as CDK writes it in the template."""
    return {"Fn::Join": ["", [{"Fn::GetAtt": [BUCKET_ID, "Arn"]}, suffix]]}


def resolve(value: Any, arns: Mapping[str, str]) -> Any:
    """Resolve the intrinsics these statements use, given the ARN of each logical id."""
    if isinstance(value, list):
        return [resolve(v, arns) for v in value]
    if isinstance(value, dict):
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn", value
            return arns[logical_id]
        if set(value) == {"Fn::Join"}:
            delimiter, parts = value["Fn::Join"]
            return delimiter.join(str(resolve(p, arns)) for p in parts)
        if set(value) == {"Ref"}:
            return {"AWS::Partition": "aws", "AWS::AccountId": "123456789012"}[value["Ref"]]
        return {k: resolve(v, arns) for k, v in value.items()}
    return value


# 1. The statements as synthesized --------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_version_and_event_writes_without_if_none_match_are_denied(
    audited_app: AuditedApp, env: str
) -> None:
    """Follows conditional-writes-enforce.html, example 2 ("Only allow object uploads using
    PutObject and CompleteMultipartUpload requests that include the if-match header"), in its
    deny form with `s3:if-none-match`: `Null` true on the header's key and `Bool`
    `s3:ObjectCreationOperation` true, which exempts CreateMultipartUpload and UploadPart (they
    cannot carry the header) while CompleteMultipartUpload must."""
    statement = by_sid(registry_statements(audited_app, env))[WRITE_ONCE_SID]
    assert statement == {
        "Sid": WRITE_ONCE_SID,
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "s3:PutObject",
        "Resource": [objects("/models/fraud/events/*"), objects("/models/fraud/versions/*")],
        "Condition": {
            "Null": {"s3:if-none-match": "true"},
            "Bool": {"s3:ObjectCreationOperation": "true"},
        },
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_alias_writes_without_if_match_or_if_none_match_are_denied(
    audited_app: AuditedApp, env: str
) -> None:
    """Follows conditional-writes-enforce.html, examples 2 and 3 (uploads only with
    `if-none-match` or `if-match`), as one deny: both keys in one `Null` block are ANDed, so the
    write is denied only when neither header is there; multipart parts exempt as above."""
    statement = by_sid(registry_statements(audited_app, env))[COMPARE_AND_SWAP_SID]
    assert statement == {
        "Sid": COMPARE_AND_SWAP_SID,
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "s3:PutObject",
        "Resource": objects("/models/fraud/aliases/*"),
        "Condition": {
            "Null": {"s3:if-none-match": "true", "s3:if-match": "true"},
            "Bool": {"s3:ObjectCreationOperation": "true"},
        },
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_deletes_under_the_model_are_denied_to_all_but_the_retention_role(
    audited_app: AuditedApp, env: str
) -> None:
    """`aws:PrincipalArn` is the role's ARN for every session of the role (IAM User Guide,
    "AWS global condition context keys"); lifecycle expiry is not a principal and is never
    stopped by a bucket policy (bucket-policies.html: "You can't use a bucket policy to prevent
    deletions or transitions by an S3 Lifecycle rule")."""
    statement = by_sid(registry_statements(audited_app, env))[NO_DELETE_SID]
    exempt = [{"Fn::GetAtt": [retention_role_id(audited_app, env), "Arn"]}]
    if not audited_app.retain_data[env]:  # CDK empties the bucket when the stack is destroyed
        exempt.append({"Fn::GetAtt": [AUTO_DELETE_ROLE_ID, "Arn"]})
    assert statement == {
        "Sid": NO_DELETE_SID,
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
        "Resource": objects("/models/fraud/*"),
        "Condition": {"ArnNotEquals": {"aws:PrincipalArn": exempt}},
    }
    # And the lifecycle rules that expire old object versions are still there
    bucket = audited_app.templates[(env, "Registry")]["Resources"][BUCKET_ID]["Properties"]
    rules = {r["Id"] for r in bucket["LifecycleConfiguration"]["Rules"]}
    assert "expire-noncurrent-versions" in rules


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_retention_role_is_published_and_may_only_touch_the_models_objects(
    audited_app: AuditedApp, env: str
) -> None:
    template = audited_app.templates[(env, "Registry")]
    role_id = retention_role_id(audited_app, env)
    assert template["Outputs"]["RetentionRoleArn"]["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}
    trust = template["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]
    (principal,) = [s["Principal"] for s in trust["Statement"]]
    assert "root" in json.dumps(principal)  # this account's principals allowed to assume it
    grants = [
        s for s in audited_app.statements() if s.env == env and role_id in s.holder and s.allows
    ]
    resources = {json.dumps(r) for s in grants for r in s.resources}
    key = [json.dumps({"Fn::GetAtt": ["DataKey17AFBB84", "Arn"]})] if audited_app.kms[env] else []
    assert resources == {
        json.dumps(objects("/models/fraud/*")),
        json.dumps({"Fn::GetAtt": [BUCKET_ID, "Arn"]}),
        *key,  # it reads what it deletes: the registry's key, to decrypt only
    }
    for grant in grants:
        if any(a.startswith("kms:") for a in grant.actions):
            assert grant.actions == ["kms:Decrypt"], grant


# 2. The statements evaluated for each request ---------------------------------------------------

TRAINING = "arn:aws:iam::123456789012:role/dev-Training-JobTaskRole"
PROMOTER = "arn:aws:iam::123456789012:role/Promoter"
ADMIN = "arn:aws:iam::123456789012:role/Admin"
RETENTION = "arn:aws:iam::123456789012:role/dev-Registry-ProtectionRetentionRole"
AUTO_DELETE = "arn:aws:iam::123456789012:role/dev-Registry-AutoDeleteProviderRole"
BUCKET_ARN = "arn:aws:s3:::registry"


@dataclass(frozen=True)
class Request:
    """What S3 puts in the request context for the keys these statements use."""

    action: str
    key: str
    principal: str = PROMOTER
    headers: frozenset[str] = field(default_factory=frozenset)  # if-none-match, if-match
    creates_object: bool = True  # s3:ObjectCreationOperation (false for parts)

    def context(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "aws:PrincipalArn": self.principal,
            "s3:ObjectCreationOperation": self.creates_object,
        }
        for header in self.headers:
            found[f"s3:{header}"] = "*"
        return found


def _holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    values = expected if isinstance(expected, list) else [expected]
    if operator == "Null":  # "true": the key is absent from the request context
        return (key not in context) == (str(values[0]).lower() == "true")
    if key not in context:
        return operator.endswith("NotEquals")  # a negated operator holds for a missing key
    actual = context[key]
    if operator == "Bool":
        return str(actual).lower() == str(values[0]).lower()
    if operator == "ArnNotEquals":
        return all(actual != value for value in values)
    raise AssertionError(f"the evaluator does not know {operator}")


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), value) is not None


def denied(statements: list[dict[str, Any]], request: Request) -> bool:
    """Whether an explicit Deny of these statements applies to the request."""
    for statement in statements:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        resources = (
            statement["Resource"]
            if isinstance(statement["Resource"], list)
            else [statement["Resource"]]
        )
        if statement["Effect"] != "Deny" or request.action not in actions:
            continue
        if not any(_matches(r, f"{BUCKET_ARN}/{request.key}") for r in resources):
            continue
        conditions = statement.get("Condition", {})
        if all(
            _holds(operator, key, expected, request.context())
            for operator, block in conditions.items()
            for key, expected in block.items()
        ):
            return True
    return False


def evaluated(app: AuditedApp, env: str) -> list[dict[str, Any]]:
    """`env`'s registry statements with every reference resolved to the names above."""
    arns = {
        BUCKET_ID: BUCKET_ARN,
        retention_role_id(app, env): RETENTION,
        AUTO_DELETE_ROLE_ID: AUTO_DELETE,
    }
    return [
        s
        for s in resolve(registry_statements(app, env), arns)
        if s.get("Sid") in (*CONDITIONAL_SIDS, NO_DELETE_SID)
    ]


INE, IM = frozenset({"if-none-match"}), frozenset({"if-match"})
V, E, A = (
    "models/fraud/versions/3/model.onnx",
    "models/fraud/events/2026-x.json",
    "models/fraud/aliases/prod.json",
)
CASES = [
    # (what, request, denied?)
    ("register: create a version object", Request("s3:PutObject", V, TRAINING, INE), False),
    ("rewrite a version object", Request("s3:PutObject", V, TRAINING), True),
    ("replace a version object by etag", Request("s3:PutObject", V, PROMOTER, IM), True),
    (
        "multipart: CreateMultipartUpload / UploadPart",
        Request("s3:PutObject", V, TRAINING, creates_object=False),
        False,
    ),
    (
        "multipart: CompleteMultipartUpload, If-None-Match",
        Request("s3:PutObject", V, TRAINING, INE),
        False,
    ),
    ("multipart: CompleteMultipartUpload, no header", Request("s3:PutObject", V, TRAINING), True),
    ("server-side copy over a version", Request("s3:PutObject", V, ADMIN), True),
    ("record an audit event", Request("s3:PutObject", E, PROMOTER, INE), False),
    ("rewrite an audit event", Request("s3:PutObject", E, ADMIN), True),
    ("first alias move (If-None-Match)", Request("s3:PutObject", A, PROMOTER, INE), False),
    ("alias move by compare-and-swap (If-Match)", Request("s3:PutObject", A, PROMOTER, IM), False),
    ("alias write without a condition", Request("s3:PutObject", A, PROMOTER), True),
    (
        "rollback lease release (If-Match)",
        Request("s3:PutObject", "models/fraud/aliases/prod.lease", PROMOTER, IM),
        False,
    ),
    (
        "training data upload, no header",
        Request("s3:PutObject", "training-data/h.jsonl", ADMIN),
        False,
    ),
    ("training role deletes a version", Request("s3:DeleteObject", V, TRAINING), True),
    ("promoter deletes an alias", Request("s3:DeleteObject", A, PROMOTER), True),
    ("admin deletes an event's object version", Request("s3:DeleteObjectVersion", E, ADMIN), True),
    ("retention role deletes a version", Request("s3:DeleteObject", V, RETENTION), False),
    (
        "retention role deletes an object version",
        Request("s3:DeleteObjectVersion", V, RETENTION),
        False,
    ),
    ("training data deleted", Request("s3:DeleteObject", "training-data/h.jsonl", ADMIN), False),
]


@pytest.mark.parametrize(("what", "request_", "refused"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("env", ["dev", "prod"])
def test_each_request_is_decided_as_the_documented_condition_operators_say(
    audited_app: AuditedApp, env: str, what: str, request_: Request, refused: bool
) -> None:
    assert denied(evaluated(audited_app, env), request_) is refused, what
    record("registry bucket policy: requests evaluated", "denied" if refused else "allowed")


def test_only_a_stack_that_does_not_retain_data_lets_cdk_empty_its_bucket(
    audited_app: AuditedApp,
) -> None:
    request = Request("s3:DeleteObject", V, AUTO_DELETE)
    assert audited_app.retain_data["dev"] is False and audited_app.retain_data["prod"] is True
    assert denied(evaluated(audited_app, "dev"), request) is False
    assert denied(evaluated(audited_app, "prod"), request) is True


# 3. On the moto server --------------------------------------------------------------------------


def moto_policy(app: AuditedApp, env: str, bucket: str, *, sids: tuple[str, ...]) -> str:
    """`env`'s synthesized statements with the given Sids, for a bucket on the moto server."""
    arns = {
        BUCKET_ID: f"arn:aws:s3:::{bucket}",
        retention_role_id(app, env): RETENTION,
        AUTO_DELETE_ROLE_ID: AUTO_DELETE,
    }
    statements = [s for s in resolve(registry_statements(app, env), arns) if s.get("Sid") in sids]
    assert len(statements) == len(sids)
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _refused(call: Any) -> bool:
    """Whether S3 answered the call with 403 Access Denied (moto's body may be empty)."""
    with pytest.raises(ClientError) as raised:
        call()
    response = raised.value.response
    return bool(
        response["ResponseMetadata"]["HTTPStatusCode"] == 403
        and response["Error"]["Code"] in ("AccessDenied", "403")
    )


def test_moto_cannot_decide_the_conditional_statements(aws: Any, audited_app: AuditedApp) -> None:
    """A canary: moto 5.2.5 ignores the conditions of bucket-policy statements, so the
    write-once statement denies even a create with If-None-Match there. If this starts failing,
    moto evaluates the keys: apply the conditional statements in the moto tests below too."""
    s3 = aws.client("s3")
    bucket = aws.bucket()
    s3.put_bucket_policy(
        Bucket=bucket, Policy=moto_policy(audited_app, "dev", bucket, sids=(WRITE_ONCE_SID,))
    )
    assert _refused(lambda: s3.put_object(Bucket=bucket, Key=V, Body=b"x", IfNoneMatch="*"))


@pytest.fixture
def protected(aws: Any, audited_app: AuditedApp) -> tuple[Any, str]:
    """A versioned bucket on the moto server with prod's no-delete statement, as synthesized."""
    bucket = aws.bucket(versioned=True)
    s3 = aws.client("s3")
    s3.put_bucket_policy(
        Bucket=bucket, Policy=moto_policy(audited_app, "prod", bucket, sids=(NO_DELETE_SID,))
    )
    return s3, bucket


def test_deletes_under_the_model_are_refused_and_everything_stays_readable(
    protected: tuple[Any, str],
) -> None:
    # Given a version, an alias and an event in a bucket carrying the no-delete statement
    s3, bucket = protected
    written = {
        key: s3.put_object(Bucket=bucket, Key=key, Body=b"kept", IfNoneMatch="*")
        for key in (V, A, E)
    }

    # When anyone (moto does not tell callers apart) deletes them, one by one, by object
    # version, or in a batch
    for key, put in written.items():
        assert _refused(lambda key=key: s3.delete_object(Bucket=bucket, Key=key))
        version_id = put["VersionId"]
        assert _refused(
            lambda key=key, version_id=version_id: s3.delete_object(
                Bucket=bucket, Key=key, VersionId=version_id
            )
        )
    batch = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in written]})

    # Then every delete is refused, no delete marker hides anything, and every object reads back
    assert sorted((e["Key"], e["Code"]) for e in batch.get("Errors", [])) == sorted(
        (k, "AccessDenied") for k in written
    )
    assert "DeleteMarkers" not in s3.list_object_versions(Bucket=bucket)
    for key in written:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    record("registry bucket policy: moto", "deletes refused", 3 * len(written))


def test_other_prefixes_are_unaffected(protected: tuple[Any, str]) -> None:
    s3, bucket = protected
    s3.put_object(Bucket=bucket, Key="training-data/history.jsonl", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="models/other-model-notes.txt", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="training-data/history.jsonl")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="training-data/")
    assert listed.get("KeyCount", 0) == 0


def test_the_registrys_own_flows_work_on_buckets_carrying_the_policy(
    aws: Any, audited_app: AuditedApp
) -> None:
    # Given dev's and staging's registries, each bucket carrying its no-delete statement
    s3 = aws.client("s3")
    registries = {}
    for env in ("dev", "staging"):
        bucket = aws.bucket(versioned=True)
        s3.put_bucket_policy(
            Bucket=bucket, Policy=moto_policy(audited_app, env, bucket, sids=(NO_DELETE_SID,))
        )
        # Artifacts of 6 MiB and more go up as multipart uploads (5 MiB parts)
        store = S3Store(bucket, multipart_threshold=6 * 2**20, part_size=5 * 2**20)
        registries[env] = Registry(store, "fraud")
    dev, staging = registries["dev"], registries["staging"]

    # When versions are registered (one of them as a multipart upload), copied up, made live,
    # moved by compare-and-swap, and a rollback lease is taken and released
    small = dev.register({"model.onnx": b"small " + uuid.uuid4().bytes}, {}, actor="training")
    large = dev.register(
        {"model.onnx": b"large " + uuid.uuid4().bytes, "model.skops": bytes(7 * 2**20)},
        {},
        actor="training",
    )
    copied = staging.import_version(dev, large.number, actor="promoter", reason="up")
    first = staging.move_alias(
        "staging", large.number, expected=None, kind="promoted", actor="p", reason=""
    )
    staging.move_alias(
        "staging", large.number, expected=first, kind="promoted", actor="p", reason=""
    )
    with lease(staging.store, lease_key("fraud", "staging"), holder="operator"):
        pass

    # Then every step worked, and every change left its audit event
    assert (small.number, large.number, copied.sha256) == (1, 2, large.sha256)
    assert staging.verify_version(2).sha256 == large.sha256
    assert len(dev.events()) == 2 and len(staging.events()) == 3
    record("registry bucket policy: moto", "registry flows on protected buckets", 1)
