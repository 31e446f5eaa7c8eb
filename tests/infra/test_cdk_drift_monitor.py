"""The drift monitor construct on its own, with a captures bucket and a registry made here (the
Features stack passes it its own): its function and settings, its schedule from config, its
alarms on score PSI and the alert rate, the volume alarm where configured, a read-only role, and
cdk-nag."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from cdk_nag import NagPack

import app as cdk_app
from sds.config import ConfigError, LogSettings, MonitorSettings, parse_project
from sds.kernel.drift import NAMESPACE, MonitorTarget
from stacks.bundling import build_bundle
from stacks.components.drift_monitor import HANDLER, DriftMonitor, monitor_bundle_spec
from stacks.components.nag import recording_only
from tests.infra.infra_helpers import actions_of, cost_script, resources, role_statements

LOGS = LogSettings(retention_days=30, retain=False)


def build(
    tmp_path: Path, settings: MonitorSettings, *, with_key: bool = False
) -> tuple[cdk.App, cdk.Stack, DriftMonitor]:
    app = cdk.App()
    stack = cdk.Stack(
        app, "Monitor", env=cdk.Environment(account="111111111111", region="us-east-1")
    )
    key = kms.Key(stack, "Key", enable_key_rotation=True) if with_key else None
    captures = s3.Bucket(stack, "Captures")
    registry = s3.Bucket(stack, "Registry")
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "placeholder.py").write_text("")
    monitor = DriftMonitor(
        stack,
        "DriftMonitor",
        environment="prod",
        model_name="fraud",
        captures=captures,
        registry=registry,
        key=key,
        code=lambda_.Code.from_asset(str(code)),
        settings=settings,
        logs=LOGS,
        topics=[sns.Topic(stack, "Topic", enforce_ssl=True)],
    )
    return app, stack, monitor


def template(stack: cdk.Stack) -> dict[str, Any]:
    from aws_cdk.assertions import Template

    return Template.from_stack(stack).to_json()


def _function(doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (k, v)
        for k, v in resources(doc, "AWS::Lambda::Function").items()
        if v["Properties"]["Handler"] == HANDLER
    ]
    return found


def test_the_function_reads_this_environments_captures_and_registry(tmp_path: Path) -> None:
    # Given the monitor with its defaults
    _, stack, _ = build(tmp_path, MonitorSettings())
    doc = template(stack)

    # Then its settings name the captures prefix, the registry and the day count
    _, function = _function(doc)
    props = function["Properties"]
    assert (props["Runtime"], props["Architectures"]) == ("python3.12", ["arm64"])
    variables = props["Environment"]["Variables"]
    assert set(variables) == set(MonitorTarget("e", "m", "s3://r", "s3://c/captures/").to_environ())
    assert variables["SDS_ENVIRONMENT"] == "prod" and variables["MONITOR_DAYS"] == "1"
    captures_id = next(k for k in resources(doc, "AWS::S3::Bucket") if k.startswith("Captures"))
    assert variables["CAPTURES_URI"] == {
        "Fn::Join": ["", ["s3://", {"Ref": captures_id}, "/captures/"]]
    }


def test_it_runs_on_the_configured_schedule_and_not_at_all_without_one(tmp_path: Path) -> None:
    # Given the default (daily) schedule, a configured one, and none
    default = template(build(tmp_path, MonitorSettings())[1])
    hourly = template(build(tmp_path, MonitorSettings(schedule="rate(6 hours)"))[1])
    none = template(build(tmp_path, MonitorSettings(schedule=None))[1])

    # Then the rule targets the function with that expression, and there is no rule without one
    function_id, _ = _function(default)
    (rule,) = resources(default, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 6 * * ? *)"
    assert rule["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    (rule,) = resources(hourly, "AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(6 hours)"
    assert resources(none, "AWS::Events::Rule") == {}


def test_alarms_watch_score_psi_and_the_alert_rate_band_with_the_configured_thresholds(
    tmp_path: Path,
) -> None:
    # Given thresholds from config
    settings = MonitorSettings(
        score_psi_alarm=0.2, alert_rate_ratio_max=3.0, alert_rate_ratio_min=0.25
    )
    doc = template(build(tmp_path, settings)[1])

    # Then three alarms watch the published metrics on the environment's dimension
    alarms = {
        (a["Properties"]["MetricName"], a["Properties"]["Statistic"]): a["Properties"]
        for a in resources(doc, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == NAMESPACE
    }
    assert set(alarms) == {
        ("ScorePSI", "Maximum"),
        ("AlertRateRatio", "Maximum"),
        ("AlertRateRatio", "Minimum"),
    }
    expected = {
        ("ScorePSI", "Maximum"): (0.2, "GreaterThanOrEqualToThreshold"),
        ("AlertRateRatio", "Maximum"): (3.0, "GreaterThanThreshold"),
        ("AlertRateRatio", "Minimum"): (0.25, "LessThanThreshold"),
    }
    for key, alarm in alarms.items():
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == expected[key]
        assert alarm["Namespace"] == NAMESPACE
        assert alarm["Dimensions"] == [{"Name": "Environment", "Value": "prod"}]
        assert alarm["Period"] == 86400 and alarm["TreatMissingData"] == "notBreaching"
        assert len(alarm["AlarmActions"]) == 1 and len(alarm["OKActions"]) == 1


def test_a_failed_run_of_the_monitor_alarms_and_notifies(tmp_path: Path) -> None:
    # Given the monitor (the drift alarms read missing data as "no drift")
    doc = template(build(tmp_path, MonitorSettings())[1])
    (function_id,) = resources(doc, "AWS::Lambda::Function")

    # Then one alarm watches the function's own errors: one failed run a day raises it
    (failed,) = [
        a["Properties"]
        for a in resources(doc, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/Lambda"
    ]
    assert (failed["MetricName"], failed["Statistic"]) == ("Errors", "Sum")
    assert failed["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
    assert (failed["Threshold"], failed["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert failed["Period"] == 86400 and failed["TreatMissingData"] == "notBreaching"
    # And it notifies the same topic as the drift alarms
    assert len(failed["AlarmActions"]) == 1 and len(failed["OKActions"]) == 1


def _volume_alarms(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        a["Properties"]
        for a in resources(doc, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "Payments"
    ]


def test_no_volume_alarm_unless_a_minimum_of_daily_payments_is_configured(tmp_path: Path) -> None:
    # Given the monitor with its defaults (min_daily_payments null)
    doc = template(build(tmp_path, MonitorSettings())[1])
    # Then no alarm watches the volume: the drift alarms and the failed-run alarm only
    assert _volume_alarms(doc) == []
    assert len(resources(doc, "AWS::CloudWatch::Alarm")) == 4


def test_a_configured_minimum_alarms_on_a_day_with_fewer_payments_and_notifies(
    tmp_path: Path,
) -> None:
    # Given prod's monitor with a minimum of 5,000 payments a day
    doc = template(build(tmp_path, MonitorSettings(min_daily_payments=5000))[1])

    # Then one more alarm watches the environment's daily payments (every version together)
    assert len(resources(doc, "AWS::CloudWatch::Alarm")) == 5
    (alarm,) = _volume_alarms(doc)
    assert alarm["Namespace"] == NAMESPACE
    assert alarm["Dimensions"] == [{"Name": "Environment", "Value": "prod"}]
    # And it fires on one day below the minimum: the smallest figure of a day's period, so a
    # run that reports several days (monitor.days) or a day published again is judged on each
    assert (alarm["Statistic"], alarm["Period"]) == ("Minimum", 86400)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (5000, "LessThanThreshold")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
    # And between two runs, or when a run is missing (the Failed alarm's concern), it keeps its
    # state: an outage stays in ALARM until a day with enough payments is published
    assert alarm["TreatMissingData"] == "ignore"
    # And its description names the environment, the threshold and where to look
    description = alarm["AlarmDescription"]
    assert description.startswith("sds prod: fewer than 5000 payments scored on a day")
    assert "docs/runbook.md" in description
    # And it notifies the same topic as the other monitor alarms, when raised and when cleared
    (failed,) = [
        a["Properties"]
        for a in resources(doc, "AWS::CloudWatch::Alarm").values()
        if a["Properties"]["Namespace"] == "AWS/Lambda"
    ]
    assert alarm["AlarmActions"] == failed["AlarmActions"] and len(alarm["AlarmActions"]) == 1
    assert alarm["OKActions"] == failed["OKActions"] and len(alarm["OKActions"]) == 1


def test_the_idle_cost_counts_the_volume_alarm_only_where_it_is_configured(
    tmp_path: Path,
) -> None:
    # Given the monitor's template without and with the volume alarm
    cost = cost_script()
    default = template(build(tmp_path, MonitorSettings())[1])
    configured = template(build(tmp_path, MonitorSettings(min_daily_payments=1))[1])
    # When `make cost` prices them
    _, without, _ = cost.raw_lines([default])
    _, with_alarm, _ = cost.raw_lines([configured])
    # Then the configured one bills one alarm metric more, at 0.10 USD a month beyond the free tier
    assert (without["alarm_metrics"], with_alarm["alarm_metrics"]) == (4, 5)
    (estimate,) = cost.estimate({("prod", "Monitor"): configured}, {"prod": "111111111111"})
    assert estimate.row("alarms") == (0.0, ["5 alarm metrics, 5 in the free tier"])


def test_its_role_only_reads_captures_and_manifests(tmp_path: Path) -> None:
    # Given the monitor with an encrypted captures bucket and registry
    _, stack, monitor = build(tmp_path, MonitorSettings(), with_key=True)
    doc = template(stack)
    role_id = stack.get_logical_id(monitor.role.node.default_child)  # type: ignore[arg-type]

    # Then its S3 permissions are reads of captures/ and of version manifests, nothing else
    statements = role_statements(doc, role_id)
    s3_actions = {a for s in statements for a in actions_of(s) if a.startswith("s3:")}
    assert s3_actions == {"s3:GetObject", "s3:ListBucket"}
    resources_read = [s["Resource"] for s in statements if actions_of(s) == ["s3:GetObject"]]
    rendered = str(resources_read)
    assert "/captures/*" in rendered
    assert "/models/fraud/versions/*/manifest.json" in rendered
    (listing,) = [s for s in statements if actions_of(s) == ["s3:ListBucket"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["captures/*"]}}
    kms_actions = {a for s in statements for a in actions_of(s) if a.startswith("kms:")}
    assert kms_actions == {"kms:Decrypt"}


@pytest.mark.parametrize("pack_type", cdk_app.NAG_PACKS)
def test_cdk_nag_finds_nothing_unacknowledged_in_the_monitor(
    tmp_path: Path, pack_type: type[NagPack]
) -> None:
    # Given the monitor in a stack, every alarm on (its buckets are the test's, not the monitor's)
    app, stack, monitor = build(tmp_path, MonitorSettings(min_daily_payments=1), with_key=True)
    # When cdk-nag checks it
    report = pack_type(app).validate_scope(stack)
    # Then nothing under the monitor is left unacknowledged
    found = [
        f"{violation.rule_name} at {resource.construct_path}"
        for violation in report.violations
        for resource in violation.violating_resources
        if resource.construct_path.startswith(monitor.node.path + "/")
    ]
    assert found == []


def test_monitor_settings_are_checked_by_name() -> None:
    # Given cdk.json settings with a bad schedule, and a band that does not bracket 1
    base = {"environments": {"dev": {}}}

    def with_monitor(monitor: dict[str, Any]) -> dict[str, Any]:
        return {"environments": {"dev": {"monitor": monitor}}}

    # Then each is refused naming the key; the default is a daily schedule
    assert parse_project(base).env("dev").monitor.schedule == "cron(0 6 * * ? *)"
    with pytest.raises(ConfigError, match=r"environments\.dev\.monitor\.schedule"):
        parse_project(with_monitor({"schedule": "every day"}))
    with pytest.raises(ConfigError, match=r"environments\.dev\.monitor\.alert_rate_ratio_min"):
        parse_project(with_monitor({"alert_rate_ratio_min": 1.5}))
    with pytest.raises(ConfigError, match=r"unknown key psi;"):
        parse_project(with_monitor({"psi": 0.3}))


def test_every_acknowledgment_in_the_monitor_matches_a_real_finding(tmp_path: Path) -> None:
    # Given the monitor built with its acknowledgments recorded, not applied
    with recording_only() as acknowledged:
        app, stack, _ = build(tmp_path, MonitorSettings(min_daily_payments=1), with_key=True)
    # When cdk-nag checks it
    findings = {
        (resource.construct_path, violation.rule_name)
        for pack in (pack_type(app) for pack_type in cdk_app.NAG_PACKS)
        for violation in pack.validate_scope(stack).violations
        for resource in violation.violating_resources
    }
    # Then each acknowledgment covers a finding on its construct (none is stale)
    assert acknowledged
    for path, rule in acknowledged:
        assert any(
            rule == found_rule and found_path.startswith(path + "/")
            for found_path, found_rule in findings
        ), (path, rule)


def test_its_bundle_is_the_kernel_its_handler_and_two_wheels_and_the_handler_imports(
    lambda_python: str,
) -> None:
    # Given the monitor's bundle, built for this machine's architecture (the stack builds it for
    # arm64; the host cannot import arm64 wheels)
    spec = dataclasses.replace(monitor_bundle_spec(python=lambda_python), architecture="x86_64")
    code = build_bundle(spec)
    top = sorted(p.name for p in code.iterdir() if not p.name.endswith((".dist-info", ".libs")))
    # Then it holds the kernel, the monitor's handler and numpy and orjson, nothing else
    assert top == ["lambdas", "numpy", "orjson", "sds"]
    shipped = sorted(str(p.relative_to(code)) for p in code.rglob("*.py"))
    assert "lambdas/monitor/handler.py" in shipped and "sds/kernel/drift.py" in shipped
    assert not [p for p in shipped if p.startswith(("lambdas/inference", "sds/ops", "sds/cli"))]
    # And the handler imports on Python 3.12 with nothing but the bundle
    probe = subprocess.run(
        [
            lambda_python,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path[:0] = [{str(code)!r}]; import lambdas.monitor.handler",
        ],
        cwd=code,
        capture_output=True,
        text=True,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr


def test_every_monitor_setting_is_documented_with_its_default() -> None:
    # Given the drift monitor's table in docs/infrastructure.md
    text = (Path(__file__).resolve().parents[2] / "docs" / "infrastructure.md").read_text()
    section = text.split("## The drift monitor (`environments.<env>.monitor`)", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `monitor\.(\w+)` \| `([^`]*)` \|", section, flags=re.MULTILINE))
    # Then it lists every monitor setting, each with the loader's default
    defaults = {f.name: f.default for f in dataclasses.fields(MonitorSettings)}
    assert set(rows) == set(defaults)
    for key, default in defaults.items():
        assert json.loads(rows[key]) == default, key
