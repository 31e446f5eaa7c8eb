"""Least privilege across accounts: a promotion from dev (account A) into staging (account B).

The app is synthesized with an account per environment (dev A, staging B, prod C). The real
`sds --aws promote` runs on the moto server as a promoter in B while every AWS call it makes is
recorded (`operator_calls.recording`), and each call must be allowed by exactly the policy of
the principal that makes it: staging's promoter policy for the caller's own calls (staging's
registry, its discovery parameters, and assuming dev's promotion source role), dev's read-only
promotion source policy (the role's only policy) for every call on dev's resources. The role's
trust policy admits B and nobody else, and the data buckets' account perimeter refuses every
principal of another account whatever an Allow says: both evaluated below with the meaning the
IAM User Guide gives their condition operators (`StringNotEquals`, `BoolIfExists`; "IAM JSON
policy elements: Condition operators"), since moto evaluates neither trust policies across
accounts nor bucket-policy conditions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from sds.config import promotion_source_role_name
from sds.kernel.registry import Registry
from sds.kernel.registry.s3 import S3Store
from tests.security.operator_calls import (
    MODEL,
    PARTITION,
    Deployed,
    Request,
    Resolver,
    World,
    credentials_in,
    deploy,
    policy_statements,
    private_client,
    recording,
    refused,
    requests_of,
)
from tests.security.security_report import record
from tests.security.security_templates import ROOT, AuditedApp, synthesize

A, B, C = "111111111111", "222222222222", "333333333333"
ACCOUNTS = {"dev": A, "staging": B, "prod": C}
DEV_ROLE = f"arn:{PARTITION}:iam::{A}:role/{promotion_source_role_name(MODEL, 'dev')}"
READ_ONLY = {"s3:GetObject", "s3:ListBucket", "ssm:GetParameter", "ssm:GetParameters"}
GOOD_METRICS = {"roc_auc": 0.93, "pr_auc": 0.41, "expected_calibration_error": 0.01}


@pytest.fixture(scope="module")
def accounts_app(tmp_path_factory: pytest.TempPathFactory) -> AuditedApp:
    work = tmp_path_factory.mktemp("accounts")
    return synthesize(work / "models.lock.json", work / "cdk.out", accounts=ACCOUNTS)


def statements_of(app: AuditedApp, deployed: Deployed, prefix: str) -> list[dict[str, Any]]:
    templates = app.stack_templates(deployed.env)
    return policy_statements(templates, "Inference", prefix, Resolver(templates, deployed))


@pytest.fixture
def alice(
    aws: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Any]:
    """`alice(*argv)`: the real CLI, run by a promoter in account B, on the accounts' cdk.json."""
    import boto3

    del aws
    document = json.loads((ROOT / "cdk.json").read_text())
    for env, account in ACCOUNTS.items():
        document["context"]["environments"][env]["infra"]["account"] = account
    (tmp_path / "cdk.json").write_text(json.dumps(document))
    for name, value in {
        "SDS_PROJECT_DIR": str(tmp_path),
        "SDS_HOME": str(tmp_path / "state"),
        "SDS_LOCK_FILE": str(tmp_path / "models.lock.json"),
        "SDS_TARGET": "aws",
    }.items():
        monkeypatch.setenv(name, value)
    for env in ACCOUNTS:
        monkeypatch.delenv(f"SDS_REGISTRY_{env.upper()}", raising=False)
    found = (
        boto3.Session()
        .client("sts", region_name="us-east-1")
        .assume_role(RoleArn=f"arn:aws:iam::{B}:role/Promoter", RoleSessionName="alice")[
            "Credentials"
        ]
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", found["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", found["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", found["SessionToken"])

    def run(*argv: str) -> tuple[int, str]:
        from sds.cli.main import main

        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    yield run


def dev_registry(dev: Deployed) -> Registry:
    return Registry(S3Store(dev.registry_bucket, client=private_client("s3", A)), MODEL)


def test_a_cross_account_promotion_needs_the_targets_promoter_and_the_sources_role_only(
    accounts_app: AuditedApp, alice: Any
) -> None:
    # Given dev deployed in A with version 1 live, and staging (KMS-encrypted) in B
    dev = deploy("dev", kms=accounts_app.kms["dev"], account=A)
    staging = deploy("staging", kms=accounts_app.kms["staging"], function=True, account=B)
    world = World([dev, staging])
    registry = dev_registry(dev)
    version = registry.register(
        {"model.onnx": b"onnx one", "model.skops": b"one"}, {"metrics": GOOD_METRICS}, actor="dev"
    )
    registry.move_alias(
        "dev", version.number, expected=None, kind="promoted", actor="dev", reason="setup"
    )

    # When alice (account B) promotes it into staging, every AWS call recorded
    with recording() as calls:
        code, output = alice("promote", "1", "--to", "staging", "--reason", "dev ok")
        assert code == 0, output
    requests = requests_of(calls, world)

    # Then the caller's calls (staging, and assuming dev's role) are staging's promoter policy's,
    # and every call on dev's resources is the read-only promotion source policy's
    promoter = statements_of(accounts_app, staging, "PromoterPolicy")
    source = statements_of(accounts_app, dev, "PromotionSourcePolicy")
    judges = {"staging": promoter, "dev": source, "*": promoter}
    assert refused(requests, judges, world) == []
    # (staging had no alias yet: S3 refused the read of it, and listing exactly its key, which
    # the promoter policy allows, said that it does not exist)
    assert Request(
        "s3:ListBucket",
        f"arn:{PARTITION}:s3:::{staging.registry_bucket}",
        {"s3:prefix": "models/fraud/aliases/staging.json"},
        "",
    ) in [Request(r.action, r.resource, r.context, "") for r in requests]
    assert Request("sts:AssumeRole", DEV_ROLE, {}, "") in [
        Request(r.action, r.resource, r.context, "") for r in requests
    ]
    on_dev = [r for r in requests if world.owner(r) == "dev"]
    assert {r.action for r in on_dev} == {"s3:GetObject", "ssm:GetParameters"}
    assert {r.action for r in on_dev} <= READ_ONLY
    # (staging's registry is encrypted: writing it took KMS, which its promoter policy grants)
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= {
        r.action for r in requests if world.owner(r) == "staging"
    }
    # And the checker does refuse: without its assume statement, staging's promoter cannot
    # reach dev; and dev's policy does not cover staging's writes
    without = [s for s in promoter if s.get("Sid") != "AssumePromotionSourceRoles"]
    assert any(
        "sts:AssumeRole" in line for line in refused(requests, {**judges, "*": without}, world)
    )
    assert refused(requests, {**judges, "staging": source}, world)
    record("least privilege: cross-account promotion", "AWS calls checked", len(calls))


def _trust_allows(trust: Mapping[str, Any], action: str, caller_account: str) -> bool:
    """Whether a trust policy's Allow admits a principal of `caller_account` (an account
    principal admits every principal of that account that its own IAM lets call)."""
    for statement in trust["Statement"]:
        actions = (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
        principals = statement["Principal"]["AWS"]
        principals = principals if isinstance(principals, list) else [principals]
        if (
            statement["Effect"] == "Allow"
            and action in actions
            and "Condition" not in statement
            and f"arn:{PARTITION}:iam::{caller_account}:root" in principals
        ):
            return True
    return False


@pytest.mark.parametrize(
    ("source", "reader", "others"), [("dev", B, (A, C)), ("staging", C, (A, B))]
)
def test_a_promotion_source_role_admits_its_readers_account_and_nobody_else(
    accounts_app: AuditedApp, source: str, reader: str, others: tuple[str, ...]
) -> None:
    template = accounts_app.templates[(source, "Inference")]
    (trust,) = [
        r["Properties"]["AssumeRolePolicyDocument"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::Role"
        and r["Properties"].get("RoleName") == promotion_source_role_name(MODEL, source)
    ]
    for action in ("sts:AssumeRole", "sts:SetSourceIdentity"):
        assert _trust_allows(trust, action, reader)
        for other in others:
            assert not _trust_allows(trust, action, other)


def _perimeter_denies(statement: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    """`StringNotEquals` holds when the key is absent or differs; `BoolIfExists` holds when the
    key is absent or equals the value (IAM User Guide, condition operators)."""
    conditions = statement["Condition"]
    ((key, expected),) = conditions["StringNotEquals"].items()
    differs = context.get(key) != expected
    ((bool_key, wanted),) = conditions["BoolIfExists"].items()
    present = context.get(bool_key)
    holds = present is None or str(present).lower() == wanted
    return bool(statement["Effect"] == "Deny" and differs and holds)


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_the_data_buckets_refuse_every_other_accounts_principal(
    accounts_app: AuditedApp, env: str
) -> None:
    perimeters = [
        s.document
        for s in accounts_app.statements()
        if s.env == env and s.kind == "bucket policy"
        and s.document.get("Sid") == "OnlyThisAccountsPrincipals"
    ]  # fmt: skip
    assert len(perimeters) == 3  # the registry, the training data and the captures
    own = ACCOUNTS[env]
    for statement in perimeters:
        # a session of this account (the promotion source role's included) is not refused
        assert not _perimeter_denies(
            statement, {"aws:PrincipalAccount": own, "aws:PrincipalIsAWSService": "false"}
        )
        # a principal of any other account is, whatever any Allow says
        for other in set(ACCOUNTS.values()) - {own}:
            assert _perimeter_denies(
                statement, {"aws:PrincipalAccount": other, "aws:PrincipalIsAWSService": "false"}
            )
        # an anonymous request (no principal account) is refused too
        assert _perimeter_denies(statement, {})
        # an AWS service acting with its own service principal is not refused by it
        assert not _perimeter_denies(statement, {"aws:PrincipalIsAWSService": "true"})
    record("least privilege: cross-account promotion", "account perimeters checked", 3)


def test_the_setup_acts_in_separate_accounts() -> None:
    # A sanity check of the harness: each account's credentials are its own
    import boto3

    for account in (A, B):
        identity = (
            boto3.Session(region_name="us-east-1", **credentials_in(account))
            .client("sts")
            .get_caller_identity()
        )
        assert identity["Account"] == account
