"""Promotion across accounts, on the moto server with an account per environment.

dev is in account A, staging in B, prod in C (`infra.account` in cdk.json). moto gives each
account its own resources: credentials of a role assumed in an account act in that account, and
the server refuses S3 requests on another account's bucket (tests/conftest.py), as S3 does when
the bucket's policy grants that account nothing, which is the case of every registry.

A promoter in B (staging's promoter policy) runs the real `sds --aws promote`: it reads dev's
registry by assuming dev's promotion source role in A (read-only), and writes staging's registry
with its own credentials. Principals without that role are refused: B's promoter reading dev's
bucket directly, and anyone in C. The same promoter's `sds --aws status` shows dev as `other
account` (pin against registry alias; dev's Lambda is read with credentials in A). What moto
cannot decide (the role's trust policy, the bucket policy's account perimeter, which call each
policy allows) is checked on the synthesized templates: tests/infra/test_cdk_multi_account.py
and tests/security/test_cross_account_privilege.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sds.config import promotion_source_role_name
from sds.kernel.lock import Pin, write_pin
from sds.kernel.registry import Registry
from sds.kernel.registry.s3 import S3Store
from tests.integration.deployed import GOOD_METRICS, MODEL, ROOT, CliResult, act_as

DEV_ACCOUNT, STAGING_ACCOUNT, PROD_ACCOUNT = "111111111111", "222222222222", "333333333333"
ACCOUNTS = {"dev": DEV_ACCOUNT, "staging": STAGING_ACCOUNT, "prod": PROD_ACCOUNT}
DEV_SOURCE_ROLE = f"arn:aws:iam::{DEV_ACCOUNT}:role/{promotion_source_role_name(MODEL, 'dev')}"


def credentials_in(aws: Any, account: str, role: str, session: str) -> dict[str, str]:
    """Credentials of `role` in `account` (moto: the account of an assumed role's ARN)."""
    found = aws.client("sts").assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName=session
    )["Credentials"]
    return {
        "AWS_ACCESS_KEY_ID": found["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": found["SecretAccessKey"],
        "AWS_SESSION_TOKEN": found["SessionToken"],
    }


def client_with(credentials: dict[str, str], service: str) -> Any:
    """The test's own client, signing with `credentials` (not the CLI's session)."""
    import boto3

    return boto3.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
        region_name="us-east-1",
    ).client(service)


@dataclass
class Account:
    """One environment deployed in its own account: its registry bucket and discovery."""

    env: str
    account: str
    credentials: dict[str, str]
    bucket: str = ""

    def client(self, service: str) -> Any:
        return client_with(self.credentials, service)

    @property
    def registry(self) -> Registry:
        return Registry(S3Store(self.bucket, client=self.client("s3")), MODEL)

    def deploy(self) -> Account:
        self.bucket = f"sds-{self.env}-{uuid.uuid4().hex[:12]}"
        s3 = self.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        self.client("ssm").put_parameter(
            Name=f"/sds/{self.env}/registry-bucket", Value=self.bucket, Type="String"
        )
        return self


@pytest.fixture
def accounts(
    aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Account]]:
    """The repository's cdk.json with an account per environment, each environment's registry
    deployed in its account, and the CLI's state in a temporary folder."""
    document = json.loads((ROOT / "cdk.json").read_text())
    for env, account in ACCOUNTS.items():
        document["context"]["environments"][env]["infra"]["account"] = account
    project = tmp_path / "project"
    project.mkdir()
    (project / "cdk.json").write_text(json.dumps(document))
    monkeypatch.setenv("SDS_PROJECT_DIR", str(project))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.setenv("SDS_TARGET", "aws")
    monkeypatch.delenv("SDS_ACTOR", raising=False)
    for env in ACCOUNTS:
        monkeypatch.delenv(f"SDS_REGISTRY_{env.upper()}", raising=False)
    yield {
        env: Account(env, account, credentials_in(aws, account, "Admin", "setup")).deploy()
        for env, account in ACCOUNTS.items()
    }


@dataclass
class Operator:
    """Runs the real `sds` entry point with one person's credentials, recording which roles
    the CLI assumes."""

    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch
    assumed: list[str]

    def as_(self, credentials: dict[str, str]) -> Operator:
        import boto3

        act_as(self.monkeypatch, credentials)
        boto3.setup_default_session()  # the session the CLI's clients come from
        boto3.DEFAULT_SESSION.events.register(  # type: ignore[union-attr]
            "provide-client-params.sts.AssumeRole",
            lambda params, **_: self.assumed.append(params["RoleArn"]),
        )
        return self

    def __call__(self, *argv: str) -> CliResult:
        from sds.cli.main import main

        self.capsys.readouterr()
        code = main(["--aws", *argv])
        captured = self.capsys.readouterr()
        return CliResult(code, captured.out, captured.err)


@pytest.fixture
def operator(
    aws: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, str], Operator]:
    """`operator(account, who)`: the CLI run by `who`, a promoter role session in `account`."""

    def make(account: str, who: str) -> Operator:
        credentials = credentials_in(aws, account, "Promoter", who)
        return Operator(capsys, monkeypatch, []).as_(credentials)

    return make


def live_in_dev(dev: Account, tag: str) -> int:
    """A version registered and made live in dev, as dev's own people would (in account A)."""
    registry = dev.registry
    version = registry.register(
        {"model.onnx": f"onnx {tag}".encode(), "model.skops": tag.encode()},
        {"metrics": GOOD_METRICS},
        actor="dev-team",
    )
    registry.move_alias(
        "dev", version.number, expected=None, kind="promoted", actor="dev-team", reason="setup"
    )
    return version.number


def refused_by_s3(call: Callable[[], Any]) -> bool:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    return bool(
        error["ResponseMetadata"]["HTTPStatusCode"] == 403
        and error["Error"]["Code"] == "AccessDenied"
    )


def test_a_promoter_in_stagings_account_promotes_from_dev_through_its_read_only_role(
    accounts: dict[str, Account], operator: Callable[[str, str], Operator]
) -> None:
    # Given version 1 live in dev, in account A
    dev, staging = accounts["dev"], accounts["staging"]
    version = live_in_dev(dev, "one")
    dev_objects = sorted(
        o["Key"] for o in dev.client("s3").list_objects_v2(Bucket=dev.bucket)["Contents"]
    )
    alice = operator(STAGING_ACCOUNT, "alice")

    # When alice, a promoter in account B, promotes it into staging
    done = alice("promote", str(version), "--to", "staging", "--reason", "dev looks good")

    # Then staging's registry in B holds the same bytes, live, and the pin is written
    assert done.code == 0, done.err
    copied = staging.registry.verify_version(version)
    assert copied.sha256 == dev.registry.verify_version(version).sha256
    state = staging.registry.get_alias("staging")
    assert state is not None and state.version == version
    # And who did it is alice's own identity in B, recorded in staging's audit trail
    assert state.updated_by == f"arn:aws:sts::{STAGING_ACCOUNT}:assumed-role/Promoter/alice"
    (promoted,) = [e for e in staging.registry.events() if e["type"] == "promoted"]
    assert promoted["by"] == state.updated_by and promoted["from_env"] == "dev"
    # And dev was read through its promotion source role, once, and not changed at all
    assert alice.assumed == [DEV_SOURCE_ROLE]
    after = sorted(
        o["Key"] for o in dev.client("s3").list_objects_v2(Bucket=dev.bucket)["Contents"]
    )
    assert after == dev_objects


def test_without_the_role_another_account_cannot_reach_devs_registry(
    aws: Any, accounts: dict[str, Account]
) -> None:
    # Given dev's registry in account A with a version in it
    dev = accounts["dev"]
    live_in_dev(dev, "one")
    key = f"models/{MODEL}/aliases/dev.json"
    # When principals of other accounts call S3 on it directly: staging's promoter in B (who
    # may read dev only through the role) and someone in C
    for account in (STAGING_ACCOUNT, PROD_ACCOUNT):
        s3 = client_with(credentials_in(aws, account, "Promoter", "mallory"), "s3")
        # Then S3 refuses every read and write
        assert refused_by_s3(lambda s3=s3: s3.get_object(Bucket=dev.bucket, Key=key))
        assert refused_by_s3(lambda s3=s3: s3.list_objects_v2(Bucket=dev.bucket))
        assert refused_by_s3(
            lambda s3=s3: s3.put_object(Bucket=dev.bucket, Key=key, Body=b"{}", IfNoneMatch="*")
        )
    # While a session of dev's own account (what the promotion source role gives) reads it
    assert dev.client("s3").get_object(Bucket=dev.bucket, Key=key)["Body"].read()


def test_an_account_dev_does_not_trust_is_told_so_before_any_role_is_assumed(
    accounts: dict[str, Account], operator: Callable[[str, str], Operator]
) -> None:
    # Given a version live in dev (A); prod is in C, which promotes from staging, not from dev
    version = live_in_dev(accounts["dev"], "one")
    mallory = operator(PROD_ACCOUNT, "mallory")

    # When someone in C reads dev's history, Then the CLI names the accounts dev trusts
    read = mallory("history", "--env", "dev")
    assert read.code == 1
    assert (
        f"dev is in account {DEV_ACCOUNT} (cdk.json) and your AWS credentials are for "
        f"{PROD_ACCOUNT}: another account reads dev's registry only through dev's promotion "
        "source role, which trusts the accounts of the environments that promote from dev or "
        f"gate on it ({STAGING_ACCOUNT}); use credentials for {DEV_ACCOUNT}"
    ) in read.err
    # And promoting into staging from C is refused before anything is read or written
    into = mallory("promote", str(version), "--to", "staging", "--reason", "x")
    assert into.code == 1
    assert (
        f"staging is in account {STAGING_ACCOUNT} (cdk.json) and your AWS credentials are for "
        f"{PROD_ACCOUNT}: changing staging's registry takes credentials in {STAGING_ACCOUNT} "
        "with staging's promoter policy"
    ) in into.err
    assert mallory.assumed == []
    assert accounts["staging"].registry.list_versions() == []


def test_a_promoter_cannot_change_the_source_it_reads(
    accounts: dict[str, Account], operator: Callable[[str, str], Operator]
) -> None:
    # Given version 1 live in dev and copied to staging by alice (account B)
    dev = accounts["dev"]
    version = live_in_dev(dev, "one")
    alice = operator(STAGING_ACCOUNT, "alice")
    assert alice("promote", str(version), "--to", "staging", "--reason", "up").code == 0
    before = dev.registry.get_alias("dev")

    # When alice tries to roll dev back or promote into it from her account
    rolled = alice("rollback", "--env", "dev", "--reason", "oops")
    promoted = alice("promote", str(version), "--to", "dev", "--reason", "again")

    # Then both are refused, naming the account whose credentials it takes, and dev is as it was
    for result in (rolled, promoted):
        assert result.code == 1, result
        assert f"changing dev's registry takes credentials in {DEV_ACCOUNT}" in result.err
    assert dev.registry.get_alias("dev") == before


def test_status_of_an_environment_in_another_account_compares_pin_and_alias_and_says_where_its_lambda_is(
    accounts: dict[str, Account], operator: Callable[[str, str], Operator], tmp_path: Path
) -> None:
    # Given version 1 live in dev (account A) and pinned for dev in models.lock.json
    dev = accounts["dev"]
    version = live_in_dev(dev, "one")
    alias = dev.registry.get_alias("dev")
    assert alias is not None
    write_pin(tmp_path / "models.lock.json", model=MODEL, env="dev", pin=Pin(version, alias.sha256))
    alice = operator(STAGING_ACCOUNT, "alice")
    note = (
        f"dev is in account {DEV_ACCOUNT} (cdk.json) and these credentials are for "
        f"{STAGING_ACCOUNT}: its Lambda alias and deployments are read, and what its warnings "
        f"say to run is run, with credentials for {DEV_ACCOUNT}"
    )

    # When alice, in account B, asks for dev's status
    detail = alice("status", "--env", "dev")
    checked = alice("status", "--env", "dev", "--check")
    document = alice("status", "--env", "dev", "--json")

    # Then dev is not "not deployed" (it is, in A): its registry alias, read through the role,
    # agrees with the pin, and the report says where its Lambda is read
    assert detail.code == 0, detail.err
    assert detail.out.startswith("dev (aws): other account\n"), detail.out
    assert "not deployed" not in detail.out and "cdk deploy" not in detail.out
    assert f"other account: {note}" in detail.out
    assert "warning:" not in detail.out
    # And --check finds nothing to fix from here
    assert checked.code == 0, checked.err
    (reported,) = document.json()["environments"]
    assert reported["state"] == "other account" and reported["ok"] is True
    assert reported["other_account"] == note and reported["not_deployed"] is None
    assert reported["registry"]["alias"]["version"] == version and reported["lambda"] is None
    assert alice.assumed == [DEV_SOURCE_ROLE] * 3  # once per command

    # And the table says the same (prod, in C, does not trust B: it is unreachable)
    every = alice("status")
    assert f"dev: other account: {note}" in every.out
    (row,) = [line for line in every.out.splitlines() if line.startswith("dev ")]
    assert row.split()[-2:] == ["other", "account"], row

    # And `sds envs` finds dev's registry through the same role
    listed = alice("envs", "--json")
    assert [r["registry"] for r in listed.json()["environments"] if r["env"] == "dev"] == [
        f"s3://{dev.bucket}"
    ]

    # When the pin no longer agrees with dev's registry alias
    write_pin(tmp_path / "models.lock.json", model=MODEL, env="dev", pin=None)
    drifted = alice("status", "--env", "dev", "--check", "--json")

    # Then it is a warning, and --check fails on it, still without calling dev "not deployed"
    assert drifted.code == 1
    (reported,) = drifted.json()["environments"]
    assert reported["state"] == "other account" and reported["ok"] is False
    assert reported["warnings"] and "models.lock.json has no pin for dev" in reported["warnings"][0]
