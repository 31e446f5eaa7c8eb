"""REST API in front of the `live` alias: authorization, throttling, JSON access logs, tracing,
and (with `infra.api.waf`) an AWS WAF web ACL with a per-address rate rule."""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.components.nag import acknowledge, acknowledge_compliance
from stacks.components.retention import log_group
from stacks.config import ApiSettings, LogSettings, Serving

_ACCESS_LOG_FIELDS = {
    "requestId": apigw.AccessLogField.context_request_id(),
    "xrayTraceId": apigw.AccessLogField.context_xray_trace_id(),
    "ip": apigw.AccessLogField.context_identity_source_ip(),
    "caller": apigw.AccessLogField.context_identity_caller(),
    "user": apigw.AccessLogField.context_identity_user(),
    "apiKeyId": apigw.AccessLogField.context_identity_api_key_id(),
    "requestTime": apigw.AccessLogField.context_request_time(),
    "httpMethod": apigw.AccessLogField.context_http_method(),
    "resourcePath": apigw.AccessLogField.context_resource_path(),
    "status": apigw.AccessLogField.context_status(),
    "protocol": apigw.AccessLogField.context_protocol(),
    "responseLength": apigw.AccessLogField.context_response_length(),
    "responseLatency": apigw.AccessLogField.context_response_latency(),
    "integrationStatus": apigw.AccessLogField.context_integration_status(),
    "integrationLatency": apigw.AccessLogField.context_integration_latency(),
    "errorMessage": apigw.AccessLogField.context_error_message(),
}


# REST API accepts at most 10 MB per request and has no byte-size setting; the handler enforces
# MAX_BODY_BYTES and this body model caps the number of events before Lambda is invoked.
def predict_body_schema(serving: Serving) -> apigw.JsonSchema:
    """Stop what can never be scored before it costs an invocation: a body that is not a JSON
    object, or a batch above MAX_EVENTS. Everything finer (each event's fields) is checked by
    the handler, which names every problem; the schema stays loose so it never contradicts it."""
    return apigw.JsonSchema(
        schema=apigw.JsonSchemaVersion.DRAFT4,
        title="PredictRequest",
        type=apigw.JsonSchemaType.OBJECT,
        properties={
            "events": apigw.JsonSchema(
                type=apigw.JsonSchemaType.ARRAY, max_items=serving.max_events
            ),
        },
    )


# Same shape as the handler's errors: {"error": code, "message": text}.
_BAD_BODY_TEMPLATE = (
    '{"error": "invalid_request", "message": "$context.error.validationErrorString"}'
)


class InferenceApi(Construct):
    """Regional REST API; every method uses IAM (SigV4) by default or an API key from config."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        environment: str,
        alias: lambda_.IFunction,
        settings: ApiSettings,
        serving: Serving,
        function_timeout_seconds: int,
        logs: LogSettings,
    ) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = log_group(self, "AccessLogs", settings=logs)
        use_api_key = settings.auth == "api_key"
        self.stage_name = environment
        self.api = self._build_api(environment=environment, settings=settings)
        # One second above the function's timeout, so the function's own timeout error reaches
        # the caller instead of API Gateway's.
        integration = apigw.LambdaIntegration(
            alias,
            timeout=cdk.Duration.seconds(function_timeout_seconds + 1),
        )
        self._build_routes(integration, serving)
        self.stage = self.api.deployment_stage
        if use_api_key:
            self._build_api_key(environment=environment, settings=settings)
        self.web_acl = (
            self._build_web_acl(environment=environment, settings=settings)
            if settings.waf
            else None
        )
        self._acknowledge(use_api_key, waf=settings.waf)

    def _build_api(self, *, environment: str, settings: ApiSettings) -> apigw.RestApi:
        method_options = (
            apigw.MethodOptions(api_key_required=True)
            if settings.auth == "api_key"
            else apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)
        )
        return apigw.RestApi(
            self,
            "Api",
            # A label, not a unique physical name; it keys the API's CloudWatch metrics, so it
            # names the stack (one per environment and region).
            rest_api_name=f"{cdk.Stack.of(self).stack_name}-api",
            description=f"sds {environment}: model inference",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-wide CloudWatch role is a singleton per account and region; several
            # environments in one account would fight over it. Access logs need no role.
            cloud_watch_role=False,
            default_method_options=method_options,
            deploy_options=apigw.StageOptions(
                stage_name=self.stage_name,
                throttling_rate_limit=settings.throttle_rate_limit,
                throttling_burst_limit=settings.throttle_burst_limit,
                tracing_enabled=True,
                metrics_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(_ACCESS_LOG_FIELDS)),
            ),
        )

    def _build_routes(self, integration: apigw.LambdaIntegration, serving: Serving) -> None:
        """POST /predict with its body validated; every other path to the handler."""
        body_validator = self.api.add_request_validator(
            "BodyValidator", validate_request_body=True, validate_request_parameters=True
        )
        params_validator = self.api.add_request_validator(
            "ParameterValidator", validate_request_body=False, validate_request_parameters=True
        )
        model = self.api.add_model(
            "PredictRequest",
            content_type="application/json",
            schema=predict_body_schema(serving),
            description="A batch of raw events to score",
        )
        predict = self.api.root.add_resource("predict")
        predict.add_method(
            "POST",
            integration,
            request_validator=body_validator,
            request_models={"application/json": model},
        )
        # Everything else (health, model info, unknown paths) goes to the handler, which answers
        # 404 itself; the methods still require the same authorization.
        self.api.root.add_method("ANY", integration, request_validator=params_validator)
        self.api.root.add_resource("{proxy+}").add_method(
            "ANY", integration, request_validator=params_validator
        )
        self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={"application/json": _BAD_BODY_TEMPLATE},
        )

    def _build_api_key(self, *, environment: str, settings: ApiSettings) -> None:
        """A client key tied to a usage plan throttled like the stage."""
        key = self.api.add_api_key("ApiKey", description=f"sds {environment}: client key")
        plan = self.api.add_usage_plan(
            "UsagePlan",
            description=f"sds {environment}: API key clients",
            throttle=apigw.ThrottleSettings(
                rate_limit=settings.throttle_rate_limit,
                burst_limit=settings.throttle_burst_limit,
            ),
        )
        plan.add_api_stage(stage=self.stage)
        plan.add_api_key(key)

    def _build_web_acl(self, *, environment: str, settings: ApiSettings) -> wafv2.CfnWebACL:
        """A regional web ACL on the stage: allow by default, block a source address above
        `settings.waf_rate` requests in 5 minutes."""
        stack = cdk.Stack.of(self)

        def visibility(metric: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
            return wafv2.CfnWebACL.VisibilityConfigProperty(
                cloud_watch_metrics_enabled=True,
                metric_name=f"{stack.stack_name}-{metric}",
                sampled_requests_enabled=True,
            )

        acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            scope="REGIONAL",
            description=f"sds {environment}: per-address rate limit in front of the API",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=visibility("waf"),
            rules=[
                wafv2.CfnWebACL.RuleProperty(
                    name="RateLimitPerAddress",
                    priority=0,
                    action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                    statement=wafv2.CfnWebACL.StatementProperty(
                        rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                            aggregate_key_type="IP",
                            limit=settings.waf_rate,
                            evaluation_window_sec=settings.WAF_WINDOW_SECONDS,
                        )
                    ),
                    visibility_config=visibility("rate-limit"),
                )
            ],
        )
        wafv2.CfnWebACLAssociation(
            self, "WebAclAssociation", resource_arn=self.stage.stage_arn, web_acl_arn=acl.attr_arn
        )
        acknowledge_compliance(
            acl,
            "WAFv2LoggingEnabled",
            "AWS WAF delivers logs only to a destination named aws-waf-logs-*, and this project "
            "gives no resource a physical name (tests/infra/test_cdk_inference.py). What the "
            "rule blocks is counted in the ACL's CloudWatch metrics, per rule, and sampled "
            "requests keep the last three hours of matches with their headers; API Gateway's "
            "access logs record every request that passes.",
        )
        return acl

    def _acknowledge(self, use_api_key: bool, *, waf: bool) -> None:
        if not waf:
            reason = (
                "No WAF web ACL in this environment (infra.api.waf; prod sets it): every method "
                "requires SigV4 (or an API key), the stage is throttled and the request body is "
                "schema-validated. A web ACL costs 5 USD a month plus 1 USD per rule."
            )
            acknowledge(self.api, "AwsSolutions-APIG3", reason)
            acknowledge_compliance(self.stage, "APIGWAssociatedWithWAF", reason)
        acknowledge_compliance(
            self.stage,
            "APIGWCacheEnabledAndEncrypted",
            "No response cache: every request scores different payments, so a cached answer "
            "would be a wrong one, and a cache bills by the hour (0.5 GB: about 14.60 USD a "
            "month) whether used or not.",
        )
        acknowledge_compliance(
            self.stage,
            "APIGWExecutionLoggingEnabled",
            "Execution logging needs the account-wide API Gateway CloudWatch role, a singleton "
            "that environments sharing an account would contend for; JSON access logs and X-Ray "
            "traces record every request instead.",
        )
        acknowledge_compliance(
            self.stage,
            "APIGWSSLEnabled",
            "A client certificate authenticates API Gateway to an HTTP backend; this API's only "
            "integration is its Lambda alias, invoked through the Lambda API with IAM.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-APIG6",
            "Execution logging needs the account-wide API Gateway CloudWatch role, a singleton "
            "that environments sharing an account would contend for; JSON access logs and X-Ray "
            "traces record every request instead.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Clients are services and pipelines that sign requests with IAM (SigV4) or present "
            "an API key; there are no end users, so there is no Cognito user pool.",
        )
        if use_api_key:
            acknowledge(
                self.api,
                "AwsSolutions-APIG4",
                "api.auth is 'api_key' in this environment's config: callers present an API key "
                "tied to a throttled usage plan instead of IAM credentials.",
            )

    @property
    def url(self) -> str:
        return self.api.url
