"""`sds --aws rollback` against a deployed-like environment on the moto server: the Lambda
function with one published version per model pin behind alias `live`, a CodeDeploy deployment
group and the SSM discovery parameters, as `cdk deploy` leaves them (no Docker needed: the
function is never invoked)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from typing import Any

import boto3

ENV = "dev"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


class FakeDeployment:
    def __init__(self, endpoint: str, bucket: str, model: str) -> None:
        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        self.client: Callable[[str], Any] = lambda name: session.client(name, endpoint_url=endpoint)
        self.model = model
        self.function = "sds-dev-inference-bench"
        role = self.client("iam").create_role(
            RoleName="sds-bench-role",
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        )["Role"]["Arn"]
        self.client("lambda").create_function(
            FunctionName=self.function,
            Runtime="python3.12",
            Role=role,
            Handler="handler.lambda_handler",
            Code={"ZipFile": _zip()},
            Environment={"Variables": {"MODEL_NAME": model, "ENVIRONMENT": ENV}},
        )
        codedeploy = self.client("codedeploy")
        codedeploy.create_application(applicationName="sds-dev-bench", computePlatform="Lambda")
        codedeploy.create_deployment_group(
            applicationName="sds-dev-bench",
            deploymentGroupName="sds-dev-bench-group",
            serviceRoleArn=role,
            deploymentConfigName="CodeDeployDefault.LambdaAllAtOnce",
            deploymentStyle={
                "deploymentType": "BLUE_GREEN",
                "deploymentOption": "WITH_TRAFFIC_CONTROL",
            },
        )
        parameters = {
            "registry-bucket": bucket,
            "function-name": self.function,
            "alias-name": "live",
            "api-url": "https://example.execute-api.us-east-1.amazonaws.com/dev/",
            "deployment-group": "sds-dev-bench-group",
            "codedeploy-application": "sds-dev-bench",
        }
        for key, value in parameters.items():
            self.client("ssm").put_parameter(Name=f"/sds/{ENV}/{key}", Value=value, Type="String")
        self.versions: dict[int, str] = {}

    def deploy(self, model_version: int, sha256: str) -> None:
        """What `cdk deploy` and CodeDeploy do after a promotion: publish, then move `live`."""
        lam = self.client("lambda")
        if model_version not in self.versions:
            lam.update_function_configuration(
                FunctionName=self.function,
                Environment={
                    "Variables": {
                        "MODEL_NAME": self.model,
                        "ENVIRONMENT": ENV,
                        "MODEL_VERSION": str(model_version),
                        "MODEL_SHA256": sha256,
                    }
                },
            )
            self.versions[model_version] = str(
                lam.publish_version(FunctionName=self.function)["Version"]
            )
        target = self.versions[model_version]
        try:
            lam.update_alias(FunctionName=self.function, Name="live", FunctionVersion=target)
        except lam.exceptions.ResourceNotFoundException:
            lam.create_alias(FunctionName=self.function, Name="live", FunctionVersion=target)

    def live_version(self) -> str:
        alias = self.client("lambda").get_alias(FunctionName=self.function, Name="live")
        return str(alias["FunctionVersion"])


def expected_output(old: int, new: int) -> re.Pattern[str]:
    return re.compile(rf"model version {new} -> {old}\b")
