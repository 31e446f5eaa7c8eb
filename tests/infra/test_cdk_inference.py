"""Inference stack: function + alias live, CodeDeploy with alarms, the API, operations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Annotations, Match

from tests.infra.infra_helpers import (
    actions_of,
    model_function,
    one,
    resource_text,
    resources,
    role_statements,
)
from tests.infra.synth import PINS, VARIANT, SynthesizedApp

CODEDEPLOY_CONFIGS = {
    "all_at_once": "CodeDeployDefault.LambdaAllAtOnce",
    "canary_10_percent_5_minutes": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
    "linear_10_percent_every_1_minute": "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
}
PROMOTER_POLICY = "PromoterPolicyE707AE28"


def _inference(synthesized: SynthesizedApp, env: str) -> dict:
    return synthesized.template(env, "Inference").to_json()


def test_function_runs_the_handler_on_python_312_with_config(
    synthesized: SynthesizedApp, env: str
) -> None:
    settings = synthesized.project.env(env).infra.lambda_
    _, function = model_function(_inference(synthesized, env))
    props = function["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Handler"] == "lambdas.inference.handler.lambda_handler"
    assert props["Architectures"] == [settings.architecture]
    assert props["MemorySize"] == settings.memory_mb
    assert props["Timeout"] == settings.timeout_seconds
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props.get("ReservedConcurrentExecutions") == settings.reserved_concurrency
    if settings.snapstart:
        assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    else:
        assert "SnapStart" not in props
    assert "FunctionName" not in props  # generated names only


def test_pin_becomes_model_version_and_sha256_in_the_environment(
    synthesized: SynthesizedApp, env: str
) -> None:
    serving = synthesized.project.env(env).serving
    capture = synthesized.project.env(env).capture
    _, function = model_function(_inference(synthesized, env))
    variables = function["Properties"]["Environment"]["Variables"]
    expected = {
        "MODEL_NAME": synthesized.project.model_name,
        "ENVIRONMENT": env,
        "MAX_EVENTS": str(serving.max_events),
        "MAX_BODY_BYTES": str(serving.max_body_bytes),
        "WHEN_FEATURES_UNAVAILABLE": serving.when_features_unavailable,
        "FEATURE_STORE_TIMEOUT_MS": str(serving.feature_store_timeout_ms),
        # The account aggregates: the environment's feature table (in the Registry stack)
        "FEATURE_STORE_URI": {
            "Fn::Join": ["", ["dynamodb://", _stack_output(env, "FeatureTableName")]]
        },
        "CAPTURE_SAMPLE_RATE": str(float(capture.sample_rate)),
    }
    if capture.exclude:
        expected["CAPTURE_EXCLUDE"] = ",".join(capture.exclude)
    pin = PINS.get(env)
    if pin is not None:
        expected |= {"MODEL_VERSION": str(pin.version), "MODEL_SHA256": pin.sha256}
    # No pin: both variables are absent and the handler answers 503 "no model deployed"
    assert {k: v for k, v in variables.items() if k != "REGISTRY_URI"} == expected
    assert variables["REGISTRY_URI"] == {
        "Fn::Join": [
            "",
            [
                "s3://",
                {
                    "Fn::GetStackOutput": {
                        "StackName": f"{env}-Registry",
                        "OutputName": "RegistryBucketName",
                    }
                },
            ],
        ]
    }


def test_alias_live_points_at_a_retained_published_version_shifted_by_codedeploy(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    version_id, version = one(template, "AWS::Lambda::Version")
    assert version["DeletionPolicy"] == "Retain"  # rollback needs the previous version
    assert version["UpdateReplacePolicy"] == "Retain"
    _, alias = one(template, "AWS::Lambda::Alias")
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    group_id, _ = one(template, "AWS::CodeDeploy::DeploymentGroup")
    app_id, _ = one(template, "AWS::CodeDeploy::Application")
    (hook_id,) = [k for k in resources(template, "AWS::Lambda::Function") if "ActivationHook" in k]
    assert alias["UpdatePolicy"] == {
        "CodeDeployLambdaAliasUpdate": {
            "ApplicationName": {"Ref": app_id},
            "DeploymentGroupName": {"Ref": group_id},
            # No traffic shifts before the activation hook says the target version can serve
            "BeforeAllowTrafficHook": {"Ref": hook_id},
        }
    }


def test_deployment_group_uses_the_configured_strategy_and_rolls_back_on_every_alarm(
    synthesized: SynthesizedApp, env: str
) -> None:
    deployment = synthesized.project.env(env).infra.deployment
    template = _inference(synthesized, env)
    _, group = one(template, "AWS::CodeDeploy::DeploymentGroup")
    props = group["Properties"]
    assert props["DeploymentConfigName"] == CODEDEPLOY_CONFIGS[deployment.strategy]
    assert props["AutoRollbackConfiguration"]["Enabled"] is True
    assert set(props["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
        "DEPLOYMENT_STOP_ON_REQUEST",
    }
    assert props["AlarmConfiguration"]["Enabled"] is True
    watched = {alarm["Name"]["Ref"] for alarm in props["AlarmConfiguration"]["Alarms"]}
    assert watched == set(resources(template, "AWS::CloudWatch::Alarm"))
    # Four on the alias and the API, two on the pinned version's own alert rate
    assert len(watched) == 6


def test_codedeploy_shifts_the_aliases_of_this_environments_function_only(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the role CodeDeploy uses for this environment's deployment group
    template = _inference(synthesized, env)
    _, group = one(template, "AWS::CodeDeploy::DeploymentGroup")
    role_id = group["Properties"]["ServiceRoleArn"]["Fn::GetAtt"][0]
    function_id, _ = model_function(template)
    (hook_id,) = [k for k in resources(template, "AWS::Lambda::Function") if "ActivationHook" in k]

    # Then it holds no AWS managed policy: AWSCodeDeployRoleForLambdaLimited updates the aliases
    # of every function in the account (another environment's `live` in a shared account) and
    # reads objects under CodeDeploy/ in any bucket
    assert not template["Resources"][role_id]["Properties"].get("ManagedPolicyArns")
    statements = role_statements(template, role_id)
    # And it reads and shifts aliases of this environment's inference function only
    function = {"Fn::GetAtt": [function_id, "Arn"]}
    (aliases,) = [s for s in statements if "lambda:UpdateAlias" in actions_of(s)]
    assert sorted(actions_of(aliases)) == [
        "lambda:GetAlias",
        "lambda:GetProvisionedConcurrencyConfig",
        "lambda:UpdateAlias",
    ]
    assert aliases["Resource"] == [function, {"Fn::Join": ["", [function, ":*"]]}]
    # And besides, it reads the state of the alarms it watches and invokes its hook: nothing else
    by_action = {a: s for s in statements for a in actions_of(s)}
    assert by_action["cloudwatch:DescribeAlarms"]["Resource"] == "*"
    assert {"Fn::GetAtt": [hook_id, "Arn"]} in by_action["lambda:InvokeFunction"]["Resource"]
    assert sorted(by_action) == [
        "cloudwatch:DescribeAlarms",
        "lambda:GetAlias",
        "lambda:GetProvisionedConcurrencyConfig",
        "lambda:InvokeFunction",
        "lambda:UpdateAlias",
    ]


def test_alarms_watch_the_alias_and_the_api_with_configured_thresholds(
    synthesized: SynthesizedApp, env: str
) -> None:
    settings = synthesized.project.env(env).infra.alarms
    template = _inference(synthesized, env)
    function_id, _ = model_function(template)
    alias_dimensions = [
        {"Name": "FunctionName", "Value": {"Ref": function_id}},
        {"Name": "Resource", "Value": {"Fn::Join": ["", [{"Ref": function_id}, ":live"]]}},
    ]
    alarms = {
        key.removeprefix("Deployment")[:-8]: value["Properties"]
        for key, value in resources(template, "AWS::CloudWatch::Alarm").items()
    }
    error_rate = alarms["ErrorRate"]
    assert error_rate["Threshold"] == settings.error_rate_percent
    assert {m["MetricStat"]["Metric"]["MetricName"] for m in error_rate["Metrics"][1:]} == {
        "Errors",
        "Invocations",
    }
    for metric in error_rate["Metrics"][1:]:
        assert metric["MetricStat"]["Metric"]["Dimensions"] == alias_dimensions
    assert alarms["Throttles"]["MetricName"] == "Throttles"
    assert alarms["Throttles"]["Threshold"] == settings.throttles
    assert alarms["Throttles"]["Dimensions"] == alias_dimensions
    assert alarms["P99Duration"]["ExtendedStatistic"] == "p99"
    assert alarms["P99Duration"]["Threshold"] == settings.p99_duration_ms
    assert alarms["P99Duration"]["Dimensions"] == alias_dimensions
    assert alarms["Api5xx"]["MetricName"] == "5XXError"
    assert alarms["Api5xx"]["Threshold"] == settings.api_5xx
    assert alarms["Api5xx"]["Dimensions"] == [
        {"Name": "ApiName", "Value": f"{env}-Inference-api"},
        {"Name": "Stage", "Value": env},
    ]
    for alarm in alarms.values():
        assert alarm["TreatMissingData"] == "notBreaching"


def test_every_api_method_requires_iam_and_invokes_the_alias(
    synthesized: SynthesizedApp, env: str
) -> None:
    assert synthesized.project.env(env).infra.api.auth == "iam"
    template = _inference(synthesized, env)
    alias_id, _ = one(template, "AWS::Lambda::Alias")
    methods = resources(template, "AWS::ApiGateway::Method")
    assert len(methods) == 3  # POST /predict, ANY /, ANY /{proxy+}
    for method in methods.values():
        props = method["Properties"]
        assert props["AuthorizationType"] == "AWS_IAM"
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert {"Ref": alias_id} in props["Integration"]["Uri"]["Fn::Join"][1]
    assert not resources(template, "AWS::ApiGateway::ApiKey")


def test_api_stage_is_throttled_traced_and_access_logged_as_json(
    synthesized: SynthesizedApp, env: str
) -> None:
    api = synthesized.project.env(env).infra.api
    _, stage = one(_inference(synthesized, env), "AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["StageName"] == env
    assert props["TracingEnabled"] is True
    (settings,) = props["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == api.throttle_rate_limit
    assert settings["ThrottlingBurstLimit"] == api.throttle_burst_limit
    access_log = json.loads(props["AccessLogSetting"]["Format"])
    assert access_log["requestId"] == "$context.requestId"
    assert access_log["status"] == "$context.status"


def test_predict_body_is_validated_before_invoking(synthesized: SynthesizedApp, env: str) -> None:
    serving = synthesized.project.env(env).serving
    template = _inference(synthesized, env)
    _, model = one(template, "AWS::ApiGateway::Model")
    schema = model["Properties"]["Schema"]
    assert schema["type"] == "object"
    assert schema["properties"]["events"] == {"type": "array", "maxItems": serving.max_events}
    predict = next(
        m["Properties"]
        for m in resources(template, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "POST"
    )
    validator = template["Resources"][predict["RequestValidatorId"]["Ref"]]["Properties"]
    assert validator["ValidateRequestBody"] is True
    _, response = one(template, "AWS::ApiGateway::GatewayResponse")
    assert response["Properties"]["ResponseType"] == "BAD_REQUEST_BODY"


def test_discovery_parameters_are_published(synthesized: SynthesizedApp, env: str) -> None:
    template = _inference(synthesized, env)
    names = {p["Properties"]["Name"] for p in resources(template, "AWS::SSM::Parameter").values()}
    assert names == {
        f"/sds/{env}/{key}"
        for key in (
            "function-name",
            "alias-name",
            "api-url",
            "deployment-group",
            "codedeploy-application",
        )
    }
    synthesized.template(env, "Inference").has_resource_properties(
        "AWS::SSM::Parameter", {"Name": f"/sds/{env}/alias-name", "Value": "live"}
    )


def test_function_role_reads_model_versions_and_nothing_else_in_the_bucket(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    _, function = model_function(template)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    assert not template["Resources"][role_id]["Properties"].get("ManagedPolicyArns")
    statements = role_statements(template, role_id)
    s3_statements = [s for s in statements if any(a.startswith("s3:") for a in actions_of(s))]
    assert len(s3_statements) == 1
    (statement,) = s3_statements
    assert actions_of(statement) == ["s3:GetObject"]
    assert resource_text(statement).endswith('"/models/fraud/versions/*"]]}')
    # With a KMS-encrypted registry: decrypt only (never encrypt), through S3, registry only
    kms = [
        s
        for s in statements
        if any(a.startswith("kms:") for a in actions_of(s))
        and s.get("Sid") != "DecryptFeatureTable"
    ]
    if not synthesized.project.env(env).infra.registry.kms:
        assert kms == []
        return
    (decrypt,) = kms
    assert actions_of(decrypt) == ["kms:Decrypt"]
    assert decrypt["Resource"] == _stack_output(env, "DataKeyArn")
    assert decrypt["Condition"]["StringLike"] == {
        "kms:EncryptionContext:aws:s3:arn": [
            _stack_output(env, "RegistryBucketArn"),
            {"Fn::Join": ["", [_stack_output(env, "RegistryBucketArn"), "/*"]]},
        ]
    }
    assert decrypt["Condition"]["StringEquals"] == {
        "kms:ViaService": {"Fn::Join": ["", ["s3.us-east-1.", {"Ref": "AWS::URLSuffix"}]]}
    }


def test_function_role_reads_the_feature_table_and_never_writes_it(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    _, function = model_function(template)
    role_id = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = {s.get("Sid", ""): s for s in role_statements(template, role_id)}
    table_arn = {
        "Fn::Join": [
            "",
            [
                "arn:aws:dynamodb:us-east-1:",
                {"Ref": "AWS::AccountId"},
                ":table/",
                _stack_output(env, "FeatureTableName"),
            ],
        ]
    }
    # Reads only, on that one table (BatchGetItem: one round trip per request)
    read = statements["ReadAccountAggregates"]
    assert sorted(actions_of(read)) == ["dynamodb:BatchGetItem", "dynamodb:GetItem"]
    assert read["Resource"] == table_arn
    every_action = {a for s in statements.values() for a in actions_of(s)}
    assert not [a for a in every_action if a.startswith("dynamodb:") and "Get" not in a]
    # With the data key: decrypt only, through DynamoDB, for that table only
    if not synthesized.project.env(env).infra.registry.kms:
        assert "DecryptFeatureTable" not in statements
        return
    decrypt = statements["DecryptFeatureTable"]
    assert actions_of(decrypt) == ["kms:Decrypt"]
    assert decrypt["Resource"] == _stack_output(env, "DataKeyArn")
    assert decrypt["Condition"] == {
        "StringEquals": {
            "kms:ViaService": {
                "Fn::Join": ["", ["dynamodb.us-east-1.", {"Ref": "AWS::URLSuffix"}]]
            },
            "kms:EncryptionContext:aws:dynamodb:tableName": _stack_output(env, "FeatureTableName"),
        }
    }


def _stack_output(env: str, name: str) -> dict[str, Any]:
    return {"Fn::GetStackOutput": {"StackName": f"{env}-Registry", "OutputName": name}}


def test_alarms_reach_the_configured_topics_and_nothing_when_none_is_configured(
    synthesized: SynthesizedApp, env: str
) -> None:
    settings = synthesized.project.env(env).infra.alarms
    template = _inference(synthesized, env)
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    topics = resources(template, "AWS::SNS::Topic")
    expected: list[Any] = [{"Ref": topic_id} for topic_id in topics]
    if settings.topic_arn is not None:
        expected.append(settings.topic_arn)
    assert len(topics) == (0 if settings.topic_email is None else 1)
    if settings.require_notification:
        assert expected, "an environment that requires notification must have a target"
    for alarm in alarms:
        assert alarm["Properties"].get("AlarmActions", []) == expected
        assert alarm["Properties"].get("OKActions", []) == expected


@pytest.mark.parametrize("topic_env", ["prod", VARIANT])
def test_the_alarm_topic_is_encrypted_with_a_key_cloudwatch_may_use(
    synthesized: SynthesizedApp, topic_env: str
) -> None:
    # Given an environment whose alarms e-mail someone (prod as committed, and the variant)
    settings = synthesized.project.env(topic_env).infra.alarms
    assert settings.topic_email is not None
    template = _inference(synthesized, topic_env)
    topic_id, topic = one(template, "AWS::SNS::Topic")
    # Encrypted with a customer-managed key of this stack (SNS's AWS-managed key would lock
    # CloudWatch out: its key policy cannot be changed), rotated yearly
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = template["Resources"][key_id]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["EnableKeyRotation"] is True
    # Whose policy lets CloudWatch, for alarms of this account only, exactly generate and
    # decrypt data keys
    for_cloudwatch = [
        s
        for s in key["Properties"]["KeyPolicy"]["Statement"]
        if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    (statement,) = for_cloudwatch
    from_alarms = {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {
            "aws:SourceArn": {
                "Fn::Join": [
                    "",
                    ["arn:aws:cloudwatch:us-east-1:", {"Ref": "AWS::AccountId"}, ":alarm:*"],
                ]
            }
        },
    }
    assert statement == {
        "Sid": "AllowCloudWatchAlarmsToUseTheKey",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
        "Resource": "*",
        "Condition": from_alarms,
    }
    # And the topic's policy (which replaces SNS's default one) lets CloudWatch publish, under
    # the same conditions, and refuses anything not sent over TLS
    _, policy = one(template, "AWS::SNS::TopicPolicy")
    assert policy["Properties"]["Topics"] == [{"Ref": topic_id}]
    document = policy["Properties"]["PolicyDocument"]["Statement"]
    assert {
        "Sid": "AllowCloudWatchAlarmsToPublish",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": {"Ref": topic_id},
        "Condition": from_alarms,
    } in document
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in document
    )
    _, subscription = one(template, "AWS::SNS::Subscription")
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == settings.topic_email


def test_a_placeholder_alarm_address_is_flagged_at_synth(synthesized: SynthesizedApp) -> None:
    # Given prod as committed: its alarm e-mail is alarms@example.com, a placeholder
    assert synthesized.project.env("prod").infra.alarms.topic_email == "alarms@example.com"
    # Then synthesizing it warns, naming the key to change
    annotations = Annotations.from_stack(synthesized.stages["prod"].inference)
    annotations.has_warning(
        "/prod/Inference/AlarmNotifications",
        Match.string_like_regexp(
            r"alarms@example\.com, an address at a reserved domain .* set "
            r"environments\.prod\.infra\.alarms\.topic_email"
        ),
    )
    # And a real address raises no such warning
    assert not Annotations.from_stack(synthesized.stages["dev"].inference).find_warning(
        "*", Match.string_like_regexp("reserved domain")
    )


def test_dashboard_per_environment(synthesized: SynthesizedApp, env: str) -> None:
    dashboards = resources(_inference(synthesized, env), "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == (1 if synthesized.project.env(env).infra.dashboard else 0)
    for dashboard in dashboards.values():
        assert "DashboardName" not in dashboard["Properties"]


def test_promoter_policy_moves_aliases_and_rolls_back_but_never_deletes(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    policy = template["Resources"][PROMOTER_POLICY]
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    assert sorted(actions_of(statements["MoveAliases"])) == ["s3:GetObject", "s3:PutObject"]
    assert resource_text(statements["MoveAliases"]).endswith('"/models/fraud/aliases/*"]]}')
    assert "/models/fraud/events/*" in resource_text(statements["AuditEvents"])
    assert "/models/fraud/versions/*" in resource_text(statements["CopyAndReadVersions"])
    assert statements["ListModel"]["Condition"] == {"StringLike": {"s3:prefix": ["models/fraud/*"]}}
    assert sorted(actions_of(statements["SwitchLiveAlias"])) == [
        "lambda:GetAlias",
        "lambda:GetFunctionConfiguration",
        "lambda:InvokeFunction",  # wakes an Inactive target version before the switch
        "lambda:ListVersionsByFunction",
        "lambda:UpdateAlias",
    ]
    assert sorted(actions_of(statements["StopDeployments"])) == [
        "codedeploy:GetDeployment",
        "codedeploy:ListDeployments",
        "codedeploy:StopDeployment",
    ]
    assert f"parameter/sds/{env}/*" in resource_text(statements["Discover"])
    every_action = [a for s in statements.values() for a in actions_of(s)]
    assert not [a for a in every_action if "Delete" in a or a.endswith("*")]
    # With a KMS-encrypted registry it reads and writes registry objects through S3 only
    if synthesized.project.env(env).infra.registry.kms:
        key_use = statements.pop("UseRegistryKey")
        assert actions_of(key_use) == ["kms:Decrypt", "kms:GenerateDataKey"]
        assert key_use["Resource"] == _stack_output(env, "DataKeyArn")
    assert "UseRegistryKey" not in statements


def test_the_promotion_source_policy_only_reads(synthesized: SynthesizedApp, env: str) -> None:
    # Given the read-only policy for promoting out of this environment
    template = _inference(synthesized, env)
    (policy_id,) = [
        k for k in resources(template, "AWS::IAM::ManagedPolicy") if k.startswith("PromotionSource")
    ]
    document = template["Resources"][policy_id]["Properties"]["PolicyDocument"]
    statements = {s["Sid"]: s for s in document["Statement"]}
    # Then it reads this model's versions, aliases and events, lists its prefix, reads the
    # discovery parameters (and decrypts, with a KMS-encrypted registry): nothing else
    expected = {
        "ReadVersionsAliasesAndEvents": ["s3:GetObject"],
        "ListModel": ["s3:ListBucket"],
        "Discover": ["ssm:GetParameter", "ssm:GetParameters"],
    }
    if synthesized.project.env(env).infra.registry.kms:
        expected["DecryptRegistry"] = ["kms:Decrypt"]
    assert {sid: sorted(actions_of(s)) for sid, s in statements.items()} == expected
    read = resource_text(statements["ReadVersionsAliasesAndEvents"])
    for prefix in ("versions", "aliases", "events"):
        assert f'"/models/fraud/{prefix}/*"' in read
    assert statements["ListModel"]["Condition"] == {"StringLike": {"s3:prefix": ["models/fraud/*"]}}
    assert f"parameter/sds/{env}/*" in resource_text(statements["Discover"])


@pytest.mark.parametrize("stack", ["Registry", "Inference", "Training", "Batch"])
def test_no_physical_names_on_named_resource_types(
    synthesized: SynthesizedApp, env: str, stack: str
) -> None:
    named = {
        "AWS::Lambda::Function": "FunctionName",
        "AWS::IAM::Role": "RoleName",
        "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::ECS::Cluster": "ClusterName",
        "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::StepFunctions::StateMachine": "StateMachineName",
    }
    template = synthesized.template(env, stack).to_json()
    for type_, prop in named.items():
        for key, resource in resources(template, type_).items():
            assert prop not in resource.get("Properties", {}), f"{key} sets {prop}"


def test_api_url_and_promoter_policy_are_stack_outputs(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = synthesized.template(env, "Inference")
    template.has_output("ApiUrl", Match.any_value())
    template.has_output("PromoterPolicyArn", Match.any_value())
    template.has_output("PromotionSourcePolicyArn", Match.any_value())
