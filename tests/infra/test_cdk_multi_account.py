"""One account per environment: what the CDK app builds when cdk.json names an account for each.

dev in A, staging in B, prod in C (prod promotes from staging and gates on it). Each stage
deploys to its own account; staging and prod train nowhere (their versions are allocated in dev,
another account); dev's Inference stack holds a promotion source role that only B may assume,
staging's one that only C may assume, and each promoter policy may assume exactly the role of
the environment it reads. No bucket or key policy grants another account anything, and every
data bucket refuses other accounts' principals outright.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Match

import app as cdk_app
from sds.config import ConfigError, parse_project, promotion_source_role_name
from tests.infra.infra_helpers import resources, statements
from tests.infra.synth import SynthesizedApp, cdk_context, synthesize

A, B, C = "111111111111", "222222222222", "333333333333"
ACCOUNTS = {"dev": A, "staging": B, "prod": C}
SET_SOURCE_IDENTITY = "sts:SetSourceIdentity"


def multi_account_context() -> dict[str, Any]:
    context = copy.deepcopy(cdk_context())
    for env, account in ACCOUNTS.items():
        context["environments"][env]["infra"]["account"] = account
    return context


@pytest.fixture(scope="module")
def accounts(
    tmp_path_factory: pytest.TempPathFactory, lock_file: Path, lambda_python: str
) -> SynthesizedApp:
    return synthesize(
        tmp_path_factory.mktemp("accounts") / "cdk.out",
        lock=lock_file,
        lambda_python=lambda_python,
        context=multi_account_context(),
    )


def inference(app: SynthesizedApp, env: str) -> dict[str, Any]:
    return app.template(env, "Inference").to_json()


def source_roles(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: role
        for logical_id, role in resources(template, "AWS::IAM::Role").items()
        if logical_id.startswith("PromotionSourceRole")
    }


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_arn(account: str, env: str) -> str:
    # A stage with an account and region renders ARNs as literals (partition literals are on)
    return f"arn:aws:iam::{account}:role/{promotion_source_role_name('fraud', env)}"


def managed_policy(template: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    ((_, policy),) = [
        (k, v)
        for k, v in resources(template, "AWS::IAM::ManagedPolicy").items()
        if k.startswith(prefix)
    ]
    return statements(policy["Properties"]["PolicyDocument"])


def test_each_environment_deploys_to_its_own_account_and_only_dev_trains(
    accounts: SynthesizedApp,
) -> None:
    for env, account in ACCOUNTS.items():
        stage = accounts.stages[env]
        assert stage.account == account
        assert {stack.account for stack in stage.stacks} == {account}
    # Versions are allocated in dev: staging and prod, in other accounts, have no training task;
    # every environment has its own event path (Features) and batch runs (Batch)
    paths = {env: [s.node.path for s in stage.stacks] for env, stage in accounts.stages.items()}
    assert paths == {
        "dev": ["dev/Registry", "dev/Inference", "dev/Features", "dev/Training", "dev/Batch"],
        "staging": ["staging/Registry", "staging/Inference", "staging/Features", "staging/Batch"],
        "prod": ["prod/Registry", "prod/Inference", "prod/Features", "prod/Batch"],
    }


@pytest.mark.parametrize(("source", "reader"), [("dev", B), ("staging", C)])
def test_a_source_environment_has_a_read_only_role_that_only_its_readers_may_assume(
    accounts: SynthesizedApp, source: str, reader: str
) -> None:
    template = inference(accounts, source)
    ((logical_id, role),) = source_roles(template).items()
    props = role["Properties"]
    # Named so the reading account, its promoter policy and the CLI know it before any deploy
    assert props["RoleName"] == f"sds-fraud-{source}-promotion-source"
    # Trusted by the reading account only (its IAM decides who: the promoter policy), also
    # from sessions that carry a source identity
    trust = statements(props["AssumeRolePolicyDocument"])
    granted = {
        (action, principal)
        for s in trust
        for action in as_list(s["Action"])
        for principal in as_list(s["Principal"]["AWS"])
    }
    assert granted == {
        ("sts:AssumeRole", f"arn:aws:iam::{reader}:root"),
        (SET_SOURCE_IDENTITY, f"arn:aws:iam::{reader}:root"),
    }
    assert all(s["Effect"] == "Allow" and "Condition" not in s for s in trust)
    # It holds the read-only promotion source policy and nothing else, for an hour at most
    (policy_id,) = [
        k for k in resources(template, "AWS::IAM::ManagedPolicy") if k.startswith("PromotionSource")
    ]
    assert props["ManagedPolicyArns"] == [{"Ref": policy_id}]
    assert "Policies" not in props and props["MaxSessionDuration"] == 3600
    attached = [
        p
        for p in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": logical_id} in p["Properties"].get("Roles", [])
    ]
    assert attached == []
    for statement in managed_policy(template, "PromotionSource"):
        assert set(as_list(statement["Action"])) <= {"s3:GetObject", "s3:ListBucket", "ssm:GetParameter",
                                "ssm:GetParameters", "kms:Decrypt"}  # fmt: skip
    # And its ARN is published for whoever sets up the reading account
    assert template["Outputs"]["PromotionSourceRoleArn"]["Value"] == {
        "Fn::GetAtt": [logical_id, "Arn"]
    }


def test_the_top_of_the_chain_has_no_role_and_same_account_chains_have_none(
    accounts: SynthesizedApp, synthesized: SynthesizedApp
) -> None:
    assert source_roles(inference(accounts, "prod")) == {}
    assert "PromotionSourceRoleArn" not in inference(accounts, "prod").get("Outputs", {})
    # cdk.json as committed (no accounts): nothing crosses an account, no role anywhere
    for env in synthesized.stages:
        assert source_roles(inference(synthesized, env)) == {}
        sids = {s.get("Sid") for s in managed_policy(inference(synthesized, env), "Promoter")}
        assert "AssumePromotionSourceRoles" not in sids


@pytest.mark.parametrize(
    ("target", "source", "account"), [("staging", "dev", A), ("prod", "staging", B)]
)
def test_a_promoter_policy_may_assume_exactly_the_role_of_the_environment_it_reads(
    accounts: SynthesizedApp, target: str, source: str, account: str
) -> None:
    found = {
        s["Sid"]: s for s in managed_policy(inference(accounts, target), "Promoter") if "Sid" in s
    }
    assume = found["AssumePromotionSourceRoles"]
    assert assume["Effect"] == "Allow"
    assert sorted(assume["Action"]) == ["sts:AssumeRole", SET_SOURCE_IDENTITY]
    assert assume["Resource"] == role_arn(account, source)
    # dev promotes from nothing: its promoter policy assumes no role
    sids = {s.get("Sid") for s in managed_policy(inference(accounts, "dev"), "Promoter")}
    assert "AssumePromotionSourceRoles" not in sids


def test_no_bucket_or_key_policy_grants_another_account_and_data_buckets_refuse_them(
    accounts: SynthesizedApp, env: str
) -> None:
    template = accounts.template(env, "Registry").to_json()
    text = json.dumps(template)
    for other in set(ACCOUNTS.values()) - {ACCOUNTS[env]}:
        assert other not in text, f"{env}/Registry names account {other}"
    policies = {
        json.dumps(p["Properties"]["Bucket"]): statements(p["Properties"]["PolicyDocument"])
        for p in resources(template, "AWS::S3::BucketPolicy").values()
    }
    data_buckets = [
        k
        for k in resources(template, "AWS::S3::Bucket")
        if k.startswith(("RegistryBucket", "TrainingDataBucket", "CapturesBucket"))
    ]
    assert len(data_buckets) == 3
    for bucket in data_buckets:
        (perimeter,) = [
            s
            for s in policies[json.dumps({"Ref": bucket})]
            if s.get("Sid") == "OnlyThisAccountsPrincipals"
        ]
        assert perimeter == {
            "Sid": "OnlyThisAccountsPrincipals",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": [
                {"Fn::GetAtt": [bucket, "Arn"]},
                {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/*"]]},
            ],
            "Condition": {
                "StringNotEquals": {"aws:PrincipalAccount": ACCOUNTS[env]},
                "BoolIfExists": {"aws:PrincipalIsAWSService": "false"},
            },
        }


def test_every_nag_pack_passes_on_the_multi_account_app(accounts: SynthesizedApp) -> None:
    for env, stage in accounts.stages.items():
        for pack_type in cdk_app.NAG_PACKS:
            report = pack_type(accounts.app).validate_scope(stage)
            found = [
                f"{v.rule_name} at {r.construct_path}"
                for v in report.violations
                for r in v.violating_resources
            ]
            assert found == [], (env, pack_type.__name__)


def test_only_one_account_named_is_a_warning_not_a_silent_gap(
    lock_file: Path, lambda_python: str
) -> None:
    # Given prod in a named account and staging, which it promotes from, in none
    context = copy.deepcopy(cdk_context())
    context["environments"]["prod"]["infra"]["account"] = C
    app = cdk.App(context=context)
    # When the app is built
    stages = cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    # Then prod's and staging's Inference stacks say why no role is wired between them
    by_env = {stage.node.id: stage for stage in stages}
    for env, other in (("prod", "staging"), ("staging", "prod")):
        Annotations.from_stack(by_env[env].inference).has_warning(
            "*",
            Match.string_like_regexp(
                f"{env} promotes to or from {other}, and only one side names an account"
            ),
        )
    assert source_roles(cdk.assertions.Template.from_stack(by_env["staging"].inference)
                        .to_json()) == {}  # fmt: skip


@pytest.mark.parametrize(
    ("account", "problem"),
    [
        ("12345", "must be a 12-digit AWS account id"),
        ("1234567890123", "must be a 12-digit AWS account id"),
        ("my-account", "must be a 12-digit AWS account id"),
    ],
)
def test_an_account_that_is_not_an_account_id_is_refused(account: str, problem: str) -> None:
    context = multi_account_context()
    context["environments"]["staging"]["infra"]["account"] = account
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value).startswith(f"environments.staging.infra.account: {problem}")


def test_a_role_name_iam_cannot_hold_is_refused_naming_the_setting() -> None:
    context = multi_account_context()
    context["model_name"] = "fraud-" + "x" * 40
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value).startswith("model_name: dev's promotion source role would be named")
    assert "IAM allows 64" in str(error.value)
