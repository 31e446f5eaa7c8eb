"""A promotion (a new pin) changes the function's environment and version, and nothing else."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from sds.config import parse_project
from stacks.config import EnvironmentSpec, Pin, TrainingImage
from stacks.stage import EnvironmentStage
from tests.infra.infra_helpers import model_function
from tests.infra.synth import ROOT, cdk_context


def _templates(
    env: str, pin: Pin | None, code_dir: Path, shadow: Pin | None = None
) -> dict[str, dict[str, Any]]:
    project = parse_project(cdk_context())
    app = cdk.App(context=copy.deepcopy(cdk_context()))
    spec = EnvironmentSpec(
        model_name=project.model_name,
        environment=project.env(env),
        pin=pin,
        lambda_code_dir=code_dir,
        training_image=TrainingImage(context_dir=ROOT),
        updater_code_dir=code_dir,
        monitor_code_dir=code_dir,
        shadow=shadow,
    )
    stage = EnvironmentStage(app, env, spec=spec)
    return {stack.node.id: Template.from_stack(stack).to_json() for stack in stage.stacks}


def _split(template: dict[str, Any]) -> tuple[str, dict[str, str], str]:
    """(version logical id, function environment, the rest of the template as text with the
    version's logical id and the environment variables blanked out)."""
    rest = copy.deepcopy(template)
    (version_id,) = [k for k, v in rest["Resources"].items() if v["Type"] == "AWS::Lambda::Version"]
    _, function = model_function(rest)
    variables = function["Properties"]["Environment"].pop("Variables")
    text = json.dumps(rest, sort_keys=True).replace(version_id, "<VERSION>")
    return version_id, variables, text


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (Pin(version=12, sha256="1" * 64), Pin(version=13, sha256="2" * 64)),
        (None, Pin(version=1, sha256="3" * 64)),
    ],
    ids=["12->13", "first-promotion"],
)
def test_pin_change_changes_only_model_variables_and_the_published_version(
    lambda_bundle: Path, before: Pin | None, after: Pin
) -> None:
    # Given the prod stacks built with one pin and then with the next
    old, new = _templates("prod", before, lambda_bundle), _templates("prod", after, lambda_bundle)
    old_version, old_vars, old_rest = _split(old.pop("Inference"))
    new_version, new_vars, new_rest = _split(new.pop("Inference"))
    # Then the function environment differs exactly in MODEL_VERSION / MODEL_SHA256
    changed = {k for k in old_vars.keys() | new_vars.keys() if old_vars.get(k) != new_vars.get(k)}
    assert changed == {"MODEL_VERSION", "MODEL_SHA256"}
    assert new_vars["MODEL_VERSION"] == str(after.version)
    # And a new Lambda version is published (new logical id -> CodeDeploy shifts live to it)
    assert old_version != new_version
    # And nothing else in the template changes, nor in the Registry and Training stacks
    assert old_rest == new_rest
    assert old == new


def test_a_shadow_pin_adds_only_the_shadow_variables_and_publishes_a_version(
    lambda_bundle: Path,
) -> None:
    # Given prod serving version 12, then the same with version 13 shadowing it
    live = Pin(version=12, sha256="1" * 64)
    shadow = Pin(version=13, sha256="2" * 64)
    old = _templates("prod", live, lambda_bundle)
    new = _templates("prod", live, lambda_bundle, shadow=shadow)
    old_version, old_vars, old_rest = _split(old.pop("Inference"))
    new_version, new_vars, new_rest = _split(new.pop("Inference"))
    # Then the function environment gains exactly SHADOW_MODEL_VERSION / SHADOW_MODEL_SHA256
    # (what cdk diff shows), and the live pin is untouched
    assert set(new_vars) - set(old_vars) == {"SHADOW_MODEL_VERSION", "SHADOW_MODEL_SHA256"}
    assert {k: v for k, v in new_vars.items() if k in old_vars} == old_vars
    assert new_vars["SHADOW_MODEL_VERSION"] == "13"
    assert new_vars["SHADOW_MODEL_SHA256"] == shadow.sha256
    # And a new Lambda version is published (the challenger is loaded at its cold start)
    assert old_version != new_version
    # And nothing else changes: no new grant (the role already reads every immutable version
    # object of the model, from the same registry), no asset change, no other stack
    assert old_rest == new_rest
    assert old == new
