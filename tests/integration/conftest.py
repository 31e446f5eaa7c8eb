"""Integration fixtures: environments "deployed" on the moto server the way the CDK app deploys.

`deploy` creates, through the AWS APIs, what one environment's stacks create and what the CLI
finds through SSM `/sds/<env>/...`: a versioned registry bucket, the inference function with
published versions and alias `live`, a CodeDeploy application and deployment group, and (on
request) the training cluster and task definition. `cli` runs the real `sds` entry point with
`--aws` semantics (SDS_TARGET=aws), a throwaway lock file and a fixed actor.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deployed import ACTOR, MODEL, ROOT, CliResult, Deployed, lambda_zip, training_stack

from sds.workspace import Workspace


@pytest.fixture
def deploy(aws: Any) -> Callable[..., Deployed]:
    def make(env: str, *, training: bool = False) -> Deployed:
        suffix = uuid.uuid4().hex[:8]
        iam = aws.client("iam")
        role_arn = iam.create_role(
            RoleName=f"sds-{env}-{suffix}",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        bucket = aws.bucket(versioned=True)
        function = f"sds-{env}-inference-{suffix}"
        aws.client("lambda").create_function(
            FunctionName=function,
            Runtime="python3.12",
            Role=role_arn,
            Handler="handler.lambda_handler",
            Code={"ZipFile": lambda_zip()},
            Environment={"Variables": {"MODEL_NAME": MODEL, "ENVIRONMENT": env}},
        )
        codedeploy = aws.client("codedeploy")
        application = f"sds-{env}-{suffix}"
        codedeploy.create_application(applicationName=application, computePlatform="Lambda")
        group = f"sds-{env}-group-{suffix}"
        codedeploy.create_deployment_group(
            applicationName=application,
            deploymentGroupName=group,
            serviceRoleArn=role_arn,
            deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
            deploymentStyle={
                "deploymentType": "BLUE_GREEN",
                "deploymentOption": "WITH_TRAFFIC_CONTROL",
            },
        )
        parameters = {
            "registry-bucket": bucket,
            "function-name": function,
            "alias-name": "live",
            "api-url": f"https://example.execute-api.us-east-1.amazonaws.com/{env}/",
            "deployment-group": group,
            "codedeploy-application": application,
        }
        deployed = Deployed(env, bucket, function, application, group, role_arn, aws.client)
        if training:
            parameters |= training_stack(aws, env, bucket, suffix)
            deployed.extra = parameters
        ssm = aws.client("ssm")
        for key, value in parameters.items():
            ssm.put_parameter(Name=f"/sds/{env}/{key}", Value=value, Type="String")
        # The first deploy: a published version without a pin, behind `live`.
        deployed.point_live(deployed.publish(None))
        return deployed

    return make


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: Any) -> Iterator[Path]:
    """The repository's cdk.json, with local state and the lock file in a temporary folder."""
    del aws  # the environment variables pointing the SDK at moto are set by then
    monkeypatch.setenv("SDS_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv("SDS_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("SDS_LOCK_FILE", str(tmp_path / "models.lock.json"))
    monkeypatch.setenv("SDS_ACTOR", ACTOR)
    monkeypatch.setenv("SDS_TARGET", "aws")
    for env in ("DEV", "STAGING", "PROD"):
        monkeypatch.delenv(f"SDS_REGISTRY_{env}", raising=False)
    yield tmp_path / "models.lock.json"


@pytest.fixture
def workspace(project: Path) -> Callable[[], Workspace]:
    del project
    return Workspace.discover


@pytest.fixture
def cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    from sds.cli import main

    del project

    def run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
