"""AWS failures as `sds --aws` says them: one line on stderr that names what failed and the fix
(`sds.kernel.aws.errors.explain`), the same for every command, exit code 1.

Against the session's moto server: a registry bucket SSM names but that is gone, no credentials,
no region. Answers moto does not give (credentials AWS rejects, access denied, a body the SDK
cannot parse) are in tests/unit/test_aws_errors.py, from a stand-in endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.deployed import ROOT, CliResult, Deployed, act_as

GONE = "sds-registry-deleted-0123"
BUCKET_GONE = (
    f"sds: error: registry bucket {GONE} (from /sds/dev/registry-bucket) does not exist: "
    "is dev/Registry deployed?\n"
)
NO_CREDENTIALS = (
    "sds: error: no AWS credentials: configure them (aws configure, AWS_PROFILE, aws sso login)\n"
)
NO_REGION = (
    "sds: error: no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or a profile's region)\n"
)
# Every command that reads or writes dev's registry on AWS.
REGISTRY_COMMANDS = [
    ("models", "--env", "dev"),
    ("show", "1", "--env", "dev"),
    ("history", "--env", "dev"),
    ("rollback", "--env", "dev", "--reason", "r"),
    ("promote", "1", "--to", "dev", "--reason", "r"),
]


@pytest.fixture
def dev_without_its_bucket(deploy: Callable[..., Deployed]) -> Deployed:
    """dev deployed, then its registry bucket deleted while SSM still names it (by name: a
    bucket name that never existed is the same to S3)."""
    dev = deploy("dev")
    dev.clients("ssm").put_parameter(
        Name="/sds/dev/registry-bucket", Value=GONE, Type="String", Overwrite=True
    )
    return dev


@pytest.mark.parametrize("command", REGISTRY_COMMANDS, ids=lambda c: c[0])
def test_a_registry_bucket_that_is_gone_is_named_with_its_parameter_and_stack(
    dev_without_its_bucket: Deployed, cli: Callable[..., CliResult], command: tuple[str, ...]
) -> None:
    # Given dev's SSM parameter names a bucket that does not exist
    # When any registry command runs against dev
    result = cli("--aws", *command)

    # Then one line names the bucket, where its name came from and the stack that creates it
    assert (result.code, result.err) == (1, BUCKET_GONE)


def test_the_json_error_says_the_same_one_line(
    dev_without_its_bucket: Deployed, cli: Callable[..., CliResult]
) -> None:
    # Given dev's registry bucket is gone
    # When a command asks for JSON
    result = cli("--aws", "--json", "models", "--env", "dev")

    # Then the error document carries the message stderr shows, and exit code 1
    assert result.code == 1
    assert result.json()["error"]["message"] == BUCKET_GONE.removeprefix("sds: error: ").strip()
    assert result.json()["error"]["exit_code"] == 1


def test_status_names_the_bucket_that_is_gone(
    dev_without_its_bucket: Deployed, cli: Callable[..., CliResult]
) -> None:
    # Given dev's registry bucket is gone
    # When asking for dev's status
    result = cli("--aws", "status", "--env", "dev")

    # Then dev is unreachable (exit 1), and its cause, on stderr, is the same explanation
    assert result.code == 1
    assert "dev (aws): unreachable" in result.out
    assert BUCKET_GONE.removeprefix("sds: error: ").strip() in result.err


def test_no_credentials_says_how_to_configure_them(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployed dev, and a shell without AWS credentials
    deploy("dev")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    act_as(monkeypatch, {})

    # When rolling back (discovery first) and reading the registry (its own S3 client)
    rollback = cli("--aws", "rollback", "--env", "dev", "--reason", "r")
    monkeypatch.setenv("SDS_REGISTRY_DEV", "s3://any-bucket")
    models = cli("--aws", "models", "--env", "dev")

    # Then each says so in one line, with the ways to configure them
    assert (rollback.code, rollback.err) == (1, NO_CREDENTIALS)
    assert (models.code, models.err) == (1, NO_CREDENTIALS)


def test_no_region_says_which_variables_set_it(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployed dev, and a shell without an AWS region
    deploy("dev")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    act_as(monkeypatch, {})

    # When a command that targets no one environment reads AWS (status of all of them)
    result = cli("--aws", "status")

    # Then every environment is unreachable, said once in one line with the cause they share,
    # which says how to set a region
    assert result.code == 1
    said = NO_REGION.removeprefix("sds: error: ").strip()
    assert result.err.splitlines() == [f"sds: error: dev, staging and prod are unreachable: {said}"]


def test_envs_without_a_region_lists_every_environment_unreachable_as_status_does(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a deployed dev, and a shell without an AWS region
    deploy("dev")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    act_as(monkeypatch, {})

    # When listing the environments on AWS, in text and in JSON
    envs, envs_json = cli("--aws", "envs"), cli("--aws", "envs", "--json")

    # Then every environment is still listed, unreachable, and the cause is the one line status
    # says: how to set a region (exit 1)
    said = NO_REGION.removeprefix("sds: error: ").strip()
    line = f"sds: error: dev, staging and prod are unreachable: {said}"
    assert (envs.code, envs.err.splitlines()) == (1, [line])
    rows = [row.split() for row in envs.out.splitlines()]
    assert [(row[0], row[-1]) for row in rows[1:]] == [
        ("dev", "(unreachable)"),
        ("staging", "(unreachable)"),
        ("prod", "(unreachable)"),
    ]
    assert envs_json.code == 1
    document = envs_json.json()
    assert document["error"]["message"] == line.removeprefix("sds: error: ")
    assert [(r["env"], r["state"], r["problem"]) for r in document["environments"]] == [
        (env, "unreachable", said) for env in ("dev", "staging", "prod")
    ]


def test_aws_region_comes_before_aws_default_region(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given dev deployed in us-east-1, and a shell whose AWS_REGION says so while its
    # AWS_DEFAULT_REGION names another region (as the AWS CLI v2 reads them: AWS_REGION wins)
    deploy("dev").register("first")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    act_as(monkeypatch, {})

    # When reading dev's audit trail
    result = cli("--aws", "history", "--env", "dev")

    # Then it is read in us-east-1, where dev is
    assert (result.code, result.err) == (0, "")


def test_aws_region_alone_is_a_region(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a shell with AWS_REGION and no AWS_DEFAULT_REGION, and no credentials
    deploy("dev")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    act_as(monkeypatch, {})

    # When reading dev's audit trail
    result = cli("--aws", "history", "--env", "dev")

    # Then the region is taken, and what is missing is the credentials
    assert (result.code, result.err) == (1, NO_CREDENTIALS)


@pytest.mark.parametrize(
    "command",
    [("history", "--env", "dev"), ("promote", "1", "--to", "dev", "--reason", "r")],
    ids=lambda c: c[0],
)
def test_without_a_region_the_targeted_environment_s_region_in_cdk_json_is_called(
    deploy: Callable[..., Deployed],
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: tuple[str, ...],
) -> None:
    # Given dev deployed in us-east-1 (its infra.region in cdk.json), and a shell without an
    # AWS region
    deploy("dev").register("first")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    act_as(monkeypatch, {})

    # When a command targets dev, with cdk.json's region for it, then with another one
    in_cdk_json = cli("--aws", *command)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    project = json.loads((ROOT / "cdk.json").read_text())
    project["context"]["environments"]["dev"]["infra"]["region"] = "eu-west-1"
    (elsewhere / "cdk.json").write_text(json.dumps(project))
    in_another_region = cli("--aws", "--project-dir", str(elsewhere), *command)

    # Then each calls the region cdk.json gives dev: dev is found only where it is deployed
    assert (in_cdk_json.code, in_cdk_json.err) == (0, "")
    assert in_another_region.code == 1
    assert "/sds/dev/registry-bucket not found: is dev deployed here?" in in_another_region.err
