"""Each deployment alarms on the pinned model version's own alert rate.

Two parts:

1. The wiring, on the session's synthesized app: for every pinned environment, a "too high" and
   a "too low" alarm on the metrics the handler emits for exactly that version (namespace,
   metric names and dimensions from `sds.kernel.behaviour`), thresholds from the pin's expected
   rate and the environment's `alarms.alert_rate`, watched by the CodeDeploy deployment group and
   notifying where every alarm does.
2. Simulated canaries: real models served by the real handler, their EMF lines read as
   CloudWatch reads them, and each alarm's metric math as the template holds it evaluated over
   that stream (`cloudwatch_model`). A deliberately bad model (a decision threshold that flags
   five times more than its manifest expects, or one that flags nothing) breaches within the
   canary's five minutes while the old version serves 90 % of the traffic; a good one does not,
   even next to a bad one; and a quiet canary is never judged on a handful of requests.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aws_cdk as cdk
import numpy as np
import pytest
from aws_cdk.assertions import Annotations, Match, Template

import lambdas.inference.app as inference_app
from lambdas.inference.app import InferenceApp
from sds.config import parse_project
from sds.kernel import aggregates, pointintime
from sds.kernel.behaviour import FLAGGED, MODEL_VERSION, NAMESPACE, PREDICTIONS, expected_alert_rate
from sds.kernel.features import featurize_batch
from sds.kernel.registry import Version, open_registry
from sds.kernel.settings import ServingSettings
from stacks.components.alert_rate_alarms import DATAPOINTS_TO_ALARM, EVALUATION_PERIODS
from stacks.config import EnvironmentSpec, Pin, TrainingImage
from stacks.stage import EnvironmentStage
from tests.infra.cloudwatch_model import (
    Alarm,
    Datapoint,
    EmfError,
    exact_metric,
    parse_expression,
    read_emf,
    statistic,
)
from tests.infra.infra_helpers import model_function, one, resources
from tests.infra.synth import PINS, ROOT, VARIANT, SynthesizedApp, cdk_context
from training.data import read_history, write_jsonl
from training.onnx_export import onnx_scores
from training.synthetic import generate_activity
from training.train import STEPS, Progress, TrainParams, train

MODEL = "fraud"


def _inference(synthesized: SynthesizedApp, env: str) -> dict[str, Any]:
    return synthesized.template(env, "Inference").to_json()


def _alert_rate_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The two alarms by kind ("High", "Low"), as the template holds them."""
    found = {}
    for key, alarm in resources(template, "AWS::CloudWatch::Alarm").items():
        if match := re.fullmatch(r"ModelBehaviourV\d+AlertRate(High|Low)[0-9A-F]{8}", key):
            found[match.group(1)] = {"id": key, **alarm["Properties"]}
    return found


def _min_predictions(alarm: dict[str, Any]) -> int:
    (expression,) = [m["Expression"] for m in alarm["Metrics"] if "Expression" in m]
    found = re.fullmatch(r"IF\(predictions >= (\d+), flagged / predictions, ([\d.]+)\)", expression)
    assert found, expression
    return int(found.group(1))


# 1. The wiring --------------------------------------------------------------------------------


def test_each_pinned_deployment_alarms_on_its_versions_own_alert_rate(
    synthesized: SynthesizedApp, env: str
) -> None:
    # Given the environment's pin and its alert-rate settings
    pin = PINS[env]
    assert pin.expected_alert_rate is not None
    rate = pin.expected_alert_rate
    settings = synthesized.project.env(env).infra.alarms.alert_rate
    # When its Inference stack is synthesized
    alarms = _alert_rate_alarms(_inference(synthesized, env))
    # Then there is a "too high" and a "too low" alarm, named by the version they judge
    assert set(alarms) == {"High", "Low"}
    assert all(
        a["id"].startswith(f"ModelBehaviourV{pin.version}AlertRate") for a in alarms.values()
    )
    high, low = alarms["High"], alarms["Low"]
    assert (high["ComparisonOperator"], high["Threshold"]) == (
        "GreaterThanThreshold",
        pytest.approx(rate * settings.max_ratio),
    )
    assert (low["ComparisonOperator"], low["Threshold"]) == (
        "LessThanThreshold",
        pytest.approx(rate * settings.min_ratio),
    )
    for alarm in (high, low):
        # reading the counts the handler emits for this version, and this version only
        stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
        assert {s["Metric"]["MetricName"] for s in stats.values()} == {PREDICTIONS, FLAGGED}
        for stat in stats.values():
            assert stat["Metric"]["Namespace"] == NAMESPACE
            assert stat["Metric"]["Dimensions"] == [
                {"Name": "Environment", "Value": env},
                {"Name": "Model", "Value": MODEL},
                {"Name": MODEL_VERSION, "Value": str(pin.version)},
            ]
            assert (stat["Stat"], stat["Period"]) == ("Sum", 60 * settings.period_minutes)
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (
            EVALUATION_PERIODS,
            DATAPOINTS_TO_ALARM,
        )
        # A period with no request for the version is not a breach
        assert alarm["TreatMissingData"] == "notBreaching"
        assert f"v{pin.version}" in alarm["AlarmDescription"]
    # And neither judges less than min_expected_flags' worth of evidence: "too high" needs its
    # threshold to mean that many flags, "too low" that many expected
    flags = settings.min_expected_flags
    assert _min_predictions(high) == math.ceil(flags / (rate * settings.max_ratio))
    assert _min_predictions(low) == math.ceil(flags / rate)
    assert _min_predictions(high) * high["Threshold"] >= flags
    assert _min_predictions(low) * rate >= flags


def test_the_deployment_group_rolls_back_on_them_and_they_notify_like_every_alarm(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    alarms = _alert_rate_alarms(template)
    _, group = one(template, "AWS::CodeDeploy::DeploymentGroup")
    watched = {a["Name"]["Ref"] for a in group["Properties"]["AlarmConfiguration"]["Alarms"]}
    assert {alarm["id"] for alarm in alarms.values()} <= watched
    error_rate = next(
        a["Properties"]
        for key, a in resources(template, "AWS::CloudWatch::Alarm").items()
        if key.startswith("DeploymentErrorRate")
    )
    for alarm in alarms.values():
        assert alarm.get("AlarmActions", []) == error_rate.get("AlarmActions", [])
        assert alarm.get("OKActions", []) == error_rate.get("OKActions", [])
        # prod's reach a person, as its configuration requires
        if synthesized.project.env(env).infra.alarms.require_notification:
            assert alarm["AlarmActions"]


def _dashboard(template: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboard's widgets, each token (an alarm's ARN, the region) written as its JSON."""
    _, dashboard = one(template, "AWS::CloudWatch::Dashboard")
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    text = "".join(p if isinstance(p, str) else json.dumps(p).replace('"', "'") for p in parts)
    widgets: list[dict[str, Any]] = json.loads(text)["widgets"]
    return widgets


def test_the_dashboard_shows_the_alarms_and_every_versions_counts_side_by_side(
    synthesized: SynthesizedApp, env: str
) -> None:
    template = _inference(synthesized, env)
    widgets = [w["properties"] for w in _dashboard(template)]
    # The two alarms, each with its metric and threshold (drawn from the alarm, by ARN)
    annotated = [w["annotations"]["alarms"] for w in widgets if "annotations" in w]
    assert annotated == [
        [str({"Fn::GetAtt": [alarm["id"], "Arn"]})]
        for alarm in _alert_rate_alarms(template).values()
    ]
    # And the counts of every version in the environment, found by search: a canary's two
    # versions side by side, and nothing here changes with the pin
    searches = [
        m[0]["expression"] for w in widgets for m in w.get("metrics", []) if "expression" in m[0]
    ]
    assert searches == [
        f'SEARCH(\'{{{NAMESPACE},Environment,Model,ModelVersion}} MetricName="{name}" '
        f'Environment="{env}" Model="{MODEL}"\', \'Sum\', 60)'
        for name in (PREDICTIONS, FLAGGED)
    ]
    assert f'"{MODEL_VERSION}": "{PINS[env].version}"' not in json.dumps(widgets)


def test_an_unpinned_environment_has_no_alert_rate_alarms(synthesized: SynthesizedApp) -> None:
    assert VARIANT not in PINS
    assert _alert_rate_alarms(_inference(synthesized, VARIANT)) == {}


def _stage(env: str, pin: Pin | None, code_dir: Path, **alert_rate: Any) -> EnvironmentStage:
    context = copy.deepcopy(cdk_context())
    if alert_rate:
        alarms = context["environments"][env]["infra"].setdefault("alarms", {})
        alarms["alert_rate"] = alert_rate
    project = parse_project(context)
    spec = EnvironmentSpec(
        model_name=project.model_name,
        environment=project.env(env),
        pin=pin,
        lambda_code_dir=code_dir,
        training_image=TrainingImage(context_dir=ROOT),
        updater_code_dir=code_dir,
        monitor_code_dir=code_dir,
    )
    return EnvironmentStage(cdk.App(context=context), env, spec=spec)


def test_a_new_pin_replaces_the_alarms_and_what_refers_to_them_follows(
    lambda_bundle: Path,
) -> None:
    # Given prod deployed with v12 (expected to flag 1 %), then promoted to v13 (2 %)
    before, after = Pin(12, "1" * 64, 0.01), Pin(13, "2" * 64, 0.02)
    old, new = (
        Template.from_stack(_stage("prod", pin, lambda_bundle).inference).to_json()
        for pin in (before, after)
    )
    old_alarms, new_alarms = _alert_rate_alarms(old), _alert_rate_alarms(new)
    # Then v13's alarms are new resources, not v12's updated in place: an alarm that fired on
    # v12 keeps its state until its next evaluation and would roll the fix back
    assert not {a["id"] for a in old_alarms.values()} & {a["id"] for a in new_alarms.values()}
    # reading v13's counts against v13's expected rate
    settings = parse_project(cdk_context()).env("prod").infra.alarms.alert_rate
    for kind, ratio in (("High", settings.max_ratio), ("Low", settings.min_ratio)):
        alarm = new_alarms[kind]
        assert alarm["Threshold"] == pytest.approx(0.02 * ratio)
        for stat in (m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m):
            assert {"Name": MODEL_VERSION, "Value": "13"} in stat["Metric"]["Dimensions"]
    # And what refers to them (the deployment group, the dashboard) follows them by name: apart
    # from the alarms, the function's environment and the published version, nothing changes
    text = json.dumps(old)
    for kind in ("High", "Low"):
        text = text.replace(old_alarms[kind]["id"], new_alarms[kind]["id"])
    moved = json.loads(text)
    for template in (moved, new):
        for alarm in _alert_rate_alarms(template).values():
            del template["Resources"][alarm["id"]]
    _, function = model_function(moved)
    _, function_now = model_function(new)
    function["Properties"]["Environment"] = function_now["Properties"]["Environment"]
    (version,) = resources(moved, "AWS::Lambda::Version")
    (version_now,) = resources(new, "AWS::Lambda::Version")
    assert json.dumps(moved, sort_keys=True).replace(version, version_now) == json.dumps(
        new, sort_keys=True
    )


def test_a_pin_from_before_alert_rates_deploys_without_them_and_says_how_to_record_it(
    lambda_bundle: Path,
) -> None:
    # Given prod pinned by a lock file written before pins carried the expected rate
    stage = _stage("prod", Pin(version=7, sha256="b" * 64), lambda_bundle)
    # When it is synthesized
    template = Template.from_stack(stage.inference).to_json()
    # Then it deploys, without alert-rate alarms, and the synth output says what to run
    assert _alert_rate_alarms(template) == {}
    Annotations.from_stack(stage.inference).has_warning(
        "/prod/Inference",
        Match.string_like_regexp(
            r"prod pins fraud v7 without the alert rate its manifest expects .* "
            r"record it with: sds promote 7 --to prod"
        ),
    )


def test_alert_rate_alarms_can_be_turned_off_per_environment(lambda_bundle: Path) -> None:
    stage = _stage("dev", PINS["dev"], lambda_bundle, enabled=False)
    template = Template.from_stack(stage.inference).to_json()
    assert _alert_rate_alarms(template) == {}
    assert not Annotations.from_stack(stage.inference).find_warning("*", Match.any_value())


# 2. Simulated canaries ----------------------------------------------------------------------

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a minute boundary
EVENTS_PER_REQUEST = 100
CANARY_MINUTES = 5  # prod: canary_10_percent_5_minutes
CANARY_SHARE = 10  # one request in ten goes to the new version


class PointInTime:
    """The feature store as it stood when each payment arrived: the aggregates training computed
    for it (identical to the online fold by construction; tests/unit/test_aggregates.py)."""

    def __init__(self, values: dict[tuple[str, int], dict[str, float]]) -> None:
        self.values = values

    def read(self, queries: list[tuple[str, int]]) -> list[dict[str, float]]:
        return [self.values[query] for query in queries]

    names = aggregates.NAMES

    def read_columns(self, entities: list[str], times: list[int]) -> dict[str, list[float]]:
        """`read` as the handler asks for it (`OnlineFeatures.read_columns`)."""
        rows = self.read(list(zip(entities, times, strict=True)))
        return {name: [row[name] for row in rows] for name in aggregates.NAMES}

    def read_row(self, entity: str, time: int) -> tuple[float, ...]:
        """`read` of one payment as the handler asks for it (`OnlineFeatures.read_row`)."""
        (row,) = self.read([(entity, time)])
        return tuple(row[name] for name in self.names)


@dataclass
class Served:
    """Models in a registry, the holdout traffic they score, and a clock for their metric lines."""

    root: Path
    good: Version
    five_times: Version  # flags five times what its manifest expects
    nothing: Version  # flags nothing
    traffic: list[dict[str, Any]]
    online: PointInTime
    scores: list[float]  # the good model's score for each event of `traffic`

    def app(self, version: Version) -> InferenceApp:
        settings = ServingSettings(
            model_name=MODEL,
            model_version=version.number,
            model_sha256=version.sha256,
            registry_uri=self.root.as_uri(),
            environment="prod",
        )
        app = InferenceApp(settings, online=self.online)  # type: ignore[arg-type]
        assert app.model is not None, app.unavailable
        return app


def pin_of(version: Version) -> Pin:
    """The pin a promotion writes (sds.ops.promotion): version, sha256, the expected rate."""
    return Pin(
        version=version.number,
        sha256=version.sha256,
        expected_alert_rate=expected_alert_rate(version.manifest),
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    work = tmp_path_factory.mktemp("served")
    data = write_jsonl(generate_activity(4000, seed=11), work / "history.jsonl")
    registry = open_registry((work / "registry").as_uri(), MODEL)
    # A model that flags 5 % of its holdout, so a minute of canary traffic says something
    good = train(
        data=data,
        registry=registry,
        params=TrainParams(max_iter=20, seed=1, alert_rate=0.05),
        actor="sim",
        progress=Progress(STEPS, enabled=False),
    )
    history = read_history(data)
    cut = good.manifest["data"]["train_events"]
    payments = history.payment_events[cut:]
    times = history.payment_times[cut:]
    accounts = [p["account_id"] for p in payments]
    computed = pointintime.compute(history.events, history.times, accounts, times)
    online = PointInTime(
        {
            (account, int(at)): {name: float(values[i]) for name, values in computed.items()}
            for i, (account, at) in enumerate(zip(accounts, times, strict=True))
        }
    )
    features = featurize_batch(payments, {n: v.tolist() for n, v in computed.items()})
    onnx = registry.read_artifact(good.number)
    scores = onnx_scores(onnx, features).tolist()
    # The bad ones keep the good model's manifest, expected behaviour included, with another
    # threshold: one that flags five times as many holdout events, and one no score reaches
    flagged = good.manifest["behaviour"]["flagged"]
    five_times = sorted(scores, reverse=True)[5 * flagged - 1]
    artifacts = {"model.onnx": onnx}
    variants = [
        registry.register(
            artifacts, {**good.manifest, "decision_threshold": threshold}, actor="sim"
        )
        for threshold in (five_times, 1.5)
    ]
    return Served(work / "registry", good, *variants, payments, online, scores)


@pytest.fixture(scope="module")
def alarms_for(lambda_bundle: Path) -> Any:
    cache: dict[int, dict[str, Alarm]] = {}

    def synthesize(version: Version) -> dict[str, Alarm]:
        """prod's alert-rate alarms, synthesized with this version pinned as a promotion pins
        it, and read back from the template."""
        if version.number not in cache:
            stage = _stage("prod", pin_of(version), lambda_bundle)
            template = Template.from_stack(stage.inference).to_json()
            cache[version.number] = {
                kind: Alarm.from_template(properties)
                for kind, properties in _alert_rate_alarms(template).items()
            }
        return cache[version.number]

    return synthesize


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The handler's wall clock, as the simulation sets it (its metric lines' timestamps)."""
    now = [float(T0)]
    real = inference_app.time
    fake = SimpleNamespace(
        time=lambda: now[0],
        time_ns=lambda: int(now[0] * 1e9),  # capture records' received time
        perf_counter=real.perf_counter,
        perf_counter_ns=real.perf_counter_ns,
    )
    monkeypatch.setattr(inference_app, "time", fake)
    yield now


def _proxy(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"events": events}),
        "isBase64Encoded": False,
    }


def canary(
    new: InferenceApp,
    old: InferenceApp,
    traffic: list[dict[str, Any]],
    clock: list[float],
    capsys: pytest.CaptureFixture[str],
    *,
    new_requests_per_minute: int,
    minutes: int = CANARY_MINUTES,
    seed: int = 0,
) -> list[Datapoint]:
    """Requests spread over each minute, one in ten to the new version, each with events drawn
    from the traffic; every metric line both versions write, as CloudWatch reads them."""
    rng = np.random.default_rng(seed)
    per_minute = new_requests_per_minute * CANARY_SHARE
    capsys.readouterr()
    for minute in range(minutes):
        for i in range(per_minute):
            clock[0] = T0 + minute * 60 + i * 60 / per_minute
            picks = rng.integers(0, len(traffic), size=EVENTS_PER_REQUEST)
            app = new if i % CANARY_SHARE == 0 else old
            assert app.handle(_proxy([traffic[j] for j in picks]))["statusCode"] == 200
    return read_emf(capsys.readouterr().out.splitlines())


def states(alarm: Alarm, datapoints: list[Datapoint], minutes: int = CANARY_MINUTES) -> list[str]:
    """The alarm's state at the end of each minute of the run."""
    source = exact_metric(datapoints)
    return [alarm.evaluate(source, T0 + 60 * (m + 1)).state for m in range(minutes)]


def alias_wide(datapoints: list[Datapoint]) -> Any:
    """The same metrics summed over every version the alias serves: what an alarm on the whole
    alias would see during the canary."""

    def source(stat: dict[str, Any], period: int) -> dict[int, float]:
        metric = stat["Metric"]
        others = {(d["Name"], d["Value"]) for d in metric["Dimensions"]} - {
            (d["Name"], d["Value"]) for d in metric["Dimensions"] if d["Name"] == MODEL_VERSION
        }
        return statistic(
            (
                p
                for p in datapoints
                if (p.namespace, p.name) == (metric["Namespace"], metric["MetricName"])
                and others <= set(p.dimensions)
            ),
            stat["Stat"],
            period,
        )

    return source


def requests_to_judge(served: Served) -> int:
    """New-version requests a minute that give both alarms enough evidence to judge, with room."""
    rate = expected_alert_rate(served.good.manifest)
    assert rate is not None
    needed = 20 / rate  # the low alarm's minimum at the default min_expected_flags
    return math.ceil(1.5 * needed / EVENTS_PER_REQUEST)


def test_a_model_flagging_five_times_its_expected_rate_breaches_during_the_canary(
    served: Served, alarms_for: Any, clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given prod deploying the model that flags five times more than its manifest expects,
    # while the good version still serves nine requests in ten
    alarms = alarms_for(served.five_times)
    datapoints = canary(
        served.app(served.five_times),
        served.app(served.good),
        served.traffic,
        clock,
        capsys,
        new_requests_per_minute=requests_to_judge(served),
    )
    # When the alarms' metric math, as synthesized, reads the stream
    high, low = states(alarms["High"], datapoints), states(alarms["Low"], datapoints)
    # Then "too high" fires within the canary (2 of 3 minutes out of band) and stays in alarm
    assert high == ["OK", "ALARM", "ALARM", "ALARM", "ALARM"]
    assert set(low) == {"OK"}
    # And the rate it judged is the new version's own, about five times the expected rate
    expected = expected_alert_rate(served.five_times.manifest)
    assert expected is not None
    judged = alarms["High"].values(exact_metric(datapoints), [T0 + 60 * m for m in range(5)])
    assert all(v is not None and 3.5 * expected < v < 7 * expected for v in judged)
    # While the same math over the whole alias (90 % good traffic) would have stayed in band:
    # the signal an alarm on the alias sees is diluted ten times
    diluted = [
        alarms["High"].evaluate(alias_wide(datapoints), T0 + 60 * (m + 1)).state for m in range(5)
    ]
    assert set(diluted) == {"OK"}


def test_a_model_that_flags_nothing_breaches_too_low(
    served: Served, alarms_for: Any, clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    alarms = alarms_for(served.nothing)
    datapoints = canary(
        served.app(served.nothing),
        served.app(served.good),
        served.traffic,
        clock,
        capsys,
        new_requests_per_minute=requests_to_judge(served),
    )
    assert states(alarms["Low"], datapoints) == ["OK", "ALARM", "ALARM", "ALARM", "ALARM"]
    assert set(states(alarms["High"], datapoints)) == {"OK"}


def test_a_good_model_stays_in_band_even_next_to_a_bad_one(
    served: Served, alarms_for: Any, clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given prod deploying the good model while the five-times model serves the rest (a fix
    # going out): only the pinned version's own behaviour decides
    alarms = alarms_for(served.good)
    datapoints = canary(
        served.app(served.good),
        served.app(served.five_times),
        served.traffic,
        clock,
        capsys,
        new_requests_per_minute=requests_to_judge(served),
        seed=1,
    )
    source = exact_metric(datapoints)
    for alarm in alarms.values():
        assert set(states(alarm, datapoints)) == {"OK"}
        # and every minute was judged (enough predictions), close to the manifest's rate
        minimum = _min_predictions(dict(alarm.properties))
        predictions = next(m for m in alarm.properties["Metrics"] if m["Id"] == "predictions")[
            "MetricStat"
        ]
        counts = source(predictions, 60)
        assert all(counts[T0 + 60 * m] >= minimum for m in range(CANARY_MINUTES))
    expected = expected_alert_rate(served.good.manifest)
    assert expected is not None
    judged = alarms["Low"].values(source, [T0 + 60 * m for m in range(CANARY_MINUTES)])
    assert all(v is not None and 0.5 * expected < v < 2 * expected for v in judged)


def test_a_quiet_canary_is_not_judged_on_a_handful_of_requests(
    served: Served, alarms_for: Any, clock: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the five-times model receiving only three one-event requests a minute, two of them
    # payments it flags (a 67 % alert rate, on three predictions)
    alarms = alarms_for(served.five_times)
    app = served.app(served.five_times)
    ranked = np.argsort(served.scores)
    picks = [served.traffic[ranked[-1]], served.traffic[ranked[-2]], served.traffic[ranked[0]]]
    capsys.readouterr()
    for minute in range(CANARY_MINUTES):
        for i, event in enumerate(picks):
            clock[0] = T0 + minute * 60 + 15 * i
            body = json.loads(app.handle(_proxy([event]))["body"])
            assert body["predictions"][0]["is_fraud"] is (i < 2)
    datapoints = read_emf(capsys.readouterr().out.splitlines())
    # Then neither alarm fires: below the minimum, a minute reads as the expected rate
    expected = expected_alert_rate(served.five_times.manifest)
    for alarm in alarms.values():
        assert set(states(alarm, datapoints)) == {"OK"}
        assert alarm.values(exact_metric(datapoints), [T0]) == [expected]


def test_the_stream_model_refuses_what_cloudwatch_would_not_extract() -> None:
    # Given lines that break the format's rules
    base = {
        "_aws": {
            "Timestamp": T0 * 1000,
            "CloudWatchMetrics": [
                {"Namespace": NAMESPACE, "Dimensions": [["Environment"]], "Metrics": []}
            ],
        },
        "Environment": "prod",
    }
    too_many = copy.deepcopy(base)
    too_many["_aws"]["CloudWatchMetrics"][0]["Metrics"] = [{"Name": f"m{i}"} for i in range(101)]
    too_many.update({f"m{i}": 1 for i in range(101)})
    missing_dimension = copy.deepcopy(base)
    del missing_dimension["Environment"]
    text_value = copy.deepcopy(base)
    text_value["_aws"]["CloudWatchMetrics"][0]["Metrics"] = [{"Name": "Predictions"}]
    text_value["Predictions"] = "3"
    # Then each is refused, naming the rule
    for document, rule in (
        (too_many, "at most 100 metrics"),
        (missing_dimension, "non-empty ASCII string"),
        (text_value, "must be a number"),
    ):
        with pytest.raises(EmfError, match=rule):
            read_emf([json.dumps(document)])


def test_the_metric_math_model_reads_what_the_alarms_use_and_refuses_the_rest() -> None:
    # Given expressions in the subset the alarms use
    env = {"predictions": 400.0, "flagged": 10.0, "quiet": None}
    cases = {
        "IF(predictions >= 137, flagged / predictions, 0.04875)": 0.025,
        "IF(predictions >= 1000, flagged / predictions, 0.04875)": 0.04875,
        "1 + 2 * 3 ^ 2": 19.0,
        "(1 + 2) * 3": 9.0,
        "-flagged / 2 + 1": -4.0,
        "predictions > 100 AND flagged < 5": 0.0,
        "IF(quiet >= 1, flagged / quiet, 0.5)": None,  # no datapoint: none out
        "flagged / (predictions - 400)": None,  # CloudWatch drops a division by zero
    }
    # Then each evaluates as CloudWatch's metric math does
    for text, value in cases.items():
        assert parse_expression(text)(env) == value, text
    # And anything outside the subset is refused, not guessed
    for text in ("FILL(flagged, 0)", "flagged / Predictions", "flagged %% 2"):
        with pytest.raises(NotImplementedError):
            parse_expression(text)(env)
