"""The API's AWS WAF web ACL (`infra.api.waf`, on in prod): a per-address rate rule on the stage."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

import app as cdk_app
from sds.config import ConfigError, parse_project
from tests.infra.infra_helpers import one, resources
from tests.infra.synth import SynthesizedApp, cdk_context


def test_an_environment_with_waf_has_one_web_acl_on_its_stage(
    synthesized: SynthesizedApp, env: str
) -> None:
    api = synthesized.project.env(env).infra.api
    template = synthesized.template(env, "Inference").to_json()
    if not api.waf:
        # dev and staging, as committed: no ACL, nothing billed
        assert resources(template, "AWS::WAFv2::WebACL") == {}
        assert resources(template, "AWS::WAFv2::WebACLAssociation") == {}
        return
    acl_id, acl = one(template, "AWS::WAFv2::WebACL")
    props = acl["Properties"]
    # Regional, allowing what no rule blocks, with CloudWatch metrics and sampled requests
    assert props["Scope"] == "REGIONAL"
    assert props["DefaultAction"] == {"Allow": {}}
    assert props["VisibilityConfig"]["CloudWatchMetricsEnabled"] is True
    assert props["VisibilityConfig"]["SampledRequestsEnabled"] is True
    # One rule: block a source address above the limit in a 5-minute window
    (rule,) = props["Rules"]
    assert rule["Action"] == {"Block": {}}
    assert rule["Statement"] == {
        "RateBasedStatement": {
            "AggregateKeyType": "IP",
            "Limit": api.waf_rate,
            "EvaluationWindowSec": 300,
        }
    }
    # prod's limit: the whole stage's rate over the window (200 requests/s x 300 s)
    assert (env, api.waf_rate) == ("prod", 60_000)
    # And it guards this API's stage
    (_, association) = one(template, "AWS::WAFv2::WebACLAssociation")
    (stage_id, _) = one(template, "AWS::ApiGateway::Stage")
    assert association["Properties"]["WebACLArn"] == {"Fn::GetAtt": [acl_id, "Arn"]}
    arn = association["Properties"]["ResourceArn"]["Fn::Join"][1]
    assert {"Ref": stage_id} in arn and "/stages/" in arn


def build_prod(context: dict[str, Any], lock_file: Path, lambda_python: str) -> dict[str, Any]:
    app = cdk.App(context=context)
    stages = cdk_app.build(app, lock_path=lock_file, lambda_python=lambda_python, nag=False)
    (prod,) = [s for s in stages if s.node.id == "prod"]
    return Template.from_stack(prod.inference).to_json()


def test_the_rate_limit_is_a_setting(lock_file: Path, lambda_python: str) -> None:
    # Given prod with an explicit per-address limit
    context = copy.deepcopy(cdk_context())
    context["environments"]["prod"]["infra"]["api"]["waf_rate_limit"] = 2000
    template = build_prod(context, lock_file, lambda_python)
    # Then the rule blocks an address above 2000 requests in 5 minutes
    (_, acl) = one(template, "AWS::WAFv2::WebACL")
    (rule,) = acl["Properties"]["Rules"]
    assert rule["Statement"]["RateBasedStatement"]["Limit"] == 2000


@pytest.mark.parametrize("limit", [9, 2_000_000_001])
def test_a_limit_aws_waf_refuses_is_refused_when_cdk_json_loads(limit: int) -> None:
    context = copy.deepcopy(cdk_context())
    context["environments"]["prod"]["infra"]["api"]["waf_rate_limit"] = limit
    with pytest.raises(ConfigError) as error:
        parse_project(context)
    assert str(error.value) == (
        "environments.prod.infra.api.waf_rate_limit: must be between 10 and 2,000,000,000 "
        "requests per 5 minutes (AWS WAF's bounds)"
    )
