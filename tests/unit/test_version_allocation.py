"""Version numbers are allocated in one place: the environment where the promotion chain starts.

Promotion copies a version up under its own number, so a number taken anywhere else (prod's
weekly training registering into prod's own registry) would make that number impossible to
promote there, for good. Training, scheduled or not, registers where the chain starts; the
environments above receive versions only by promotion.

The CLI runs in-process (`sds.cli.main.main`) on a throwaway project with local registries, and
trains real (small) models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sds.ops.workspace import Workspace
from tests.unit.cli_run import Ended, sds


def train(capsys: pytest.CaptureFixture[str], data: Path, *options: str, trees: int) -> Ended:
    """`sds train` of a small model (about a second on 2 cores) that passes every gate in
    cdk.json; `trees` tells models apart (different trees, different bytes)."""
    return sds(capsys, "train", "--data", str(data), "--max-iter", str(trees), "--quiet", *options)


def promote_up_the_chain(capsys: pytest.CaptureFixture[str], version: int) -> list[Ended]:
    return [
        sds(capsys, "promote", str(version), "--to", "dev", "--quiet"),
        sds(capsys, "promote", "--from", "dev", "--to", "staging", "--quiet"),
        sds(capsys, "promote", "--from", "staging", "--to", "prod", "--quiet"),
    ]


def test_training_for_prod_never_blocks_promoting_the_next_version_into_prod(
    project: Path, capsys: pytest.CaptureFixture[str], small_history: Path
) -> None:
    # Given version 1, trained in dev, live in dev, staging and prod
    first = train(capsys, small_history, trees=20)
    assert first.code == 0, first
    assert all(step.code == 0 for step in promote_up_the_chain(capsys, 1))
    # And prod's (weekly) training has run: a different model than dev's next one
    train(capsys, small_history, "--env", "prod", trees=30)

    # When dev trains its next version and it is promoted up the chain
    second = train(capsys, small_history, trees=25)
    assert second.code == 0, second
    steps = promote_up_the_chain(capsys, 2)

    # Then the promotion into prod succeeds, and prod serves dev's version 2, byte for byte
    assert [step.code for step in steps] == [0, 0, 0], steps[-1].err
    ws = Workspace.discover(project_dir=project)
    dev, prod = ws.registry("dev"), ws.registry("prod")
    assert prod.get_alias("prod").version == 2  # type: ignore[union-attr]
    assert prod.verify_version(2).sha256 == dev.verify_version(2).sha256
    # And every version prod holds came there by promotion (none was allocated in prod)
    for number in prod.list_versions():
        assert prod.get_version(number).manifest["source"] is not None, number


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_training_on_this_machine_above_the_chain_start_is_refused_naming_what_to_run(
    env: str, project: Path, capsys: pytest.CaptureFixture[str], small_history: Path
) -> None:
    # When training on this machine for an environment that receives versions by promotion
    ended = sds(capsys, "train", "--env", env, "--data", str(small_history), "--json")

    # Then it is refused (exit 3) before anything is trained, naming where versions are
    # allocated and the commands to run instead
    assert ended.code == 3, ended
    error = ended.json()["error"]
    assert error["type"] == "VersionsAllocatedElsewhere"
    assert error["message"] == (
        f"{env} receives versions only by promotion: versions are allocated in dev, where the "
        "promotion chain starts. Train there (sds train --env dev --data PATH, then sds promote "
        f"VERSION --to dev and up the chain), or run {env}'s training task on its data, which "
        f"registers in dev: sds --aws train --env {env} --on-fargate"
    )
    assert ended.err.strip().splitlines()[-1] == f"sds: refused: {error['message']}"
    # And no registry holds a version
    ws = Workspace.discover(project_dir=project)
    assert [ws.registry(name).list_versions() for name in ("dev", "staging", "prod")] == [[]] * 3


@pytest.mark.parametrize("how", ["--aws", "SDS_TARGET=aws"])
def test_the_refusal_on_aws_names_commands_that_act_on_aws(
    how: str,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    small_history: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the AWS target, chosen by the flag or by the environment variable
    flags = ["--aws"] if how == "--aws" else []
    if how != "--aws":
        monkeypatch.setenv("SDS_TARGET", "aws")

    # When training on this machine for staging
    ended = sds(capsys, *flags, "train", "--env", "staging", "--data", str(small_history), "--json")

    # Then the commands it names say --aws: run as printed in any shell, they train in dev's
    # registry on AWS and promote there, never in the local registry
    assert ended.code == 3, ended
    assert (
        "Train there (sds --aws train --env dev --data PATH, then sds --aws promote VERSION "
        "--to dev and up the chain)" in ended.json()["error"]["message"]
    )


def test_an_environment_without_a_training_task_names_where_to_train(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given prod in another region than dev, where versions are allocated
    cdk_json = project / "cdk.json"
    document = json.loads(cdk_json.read_text())
    document["context"]["environments"]["prod"]["infra"]["region"] = "eu-west-1"
    cdk_json.write_text(json.dumps(document))

    # When running prod's training task, Then it is refused before any AWS call: prod has none
    ended = sds(capsys, "train", "--env", "prod", "--on-fargate", "--json")
    assert ended.code == 3, ended
    assert ended.json()["error"]["message"] == (
        "prod has no training task: it is in another account or region than dev, where its "
        "versions are allocated. Train there: sds --aws train --env dev --on-fargate"
    )
