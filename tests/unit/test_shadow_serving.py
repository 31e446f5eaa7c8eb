"""Shadow scoring in the handler: the live model alone decides, the challenger scores the same
matrix for the capture, and a challenger that fails changes no response. Also the shadow pin in
models.lock.json and in the function's environment, and the capture schema's `shadow` field."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lambdas.inference.app import SHADOW_FAILURE_LIMIT, InferenceApp
from sds.kernel.capture import SCHEMA_VERSION, CaptureError, parse
from sds.kernel.lock import LockFileError, Pin, read_lock, sync_pin, write_pin, write_shadow
from sds.kernel.registry import Version, open_registry
from sds.kernel.serving import LoadedModel, ModelUnavailable, load_model, shown_scores
from sds.kernel.settings import (
    SHADOW_MODEL_SHA256,
    SHADOW_MODEL_VERSION,
    ServingSettings,
    SettingsError,
    function_environment,
)
from tests.support.trained_model import MODEL, TRAINER, TrainedModel
from tests.unit.test_inference_app import collect, ordinary_event, proxy, valid_event
from training.train import STEPS, Progress, TrainParams, train

# The requests compared with and without a challenger: scored ones, refused ones, every route.
REQUESTS: list[dict[str, Any]] = [
    proxy({"events": [valid_event(), ordinary_event()]}),
    proxy({"events": [valid_event(event_id=f"e-{i}", amount=10.0 * i) for i in range(1, 30)]}),
    proxy({"events": [valid_event(amount=-1)]}),
    proxy(raw="{not json"),
    proxy(path="/model", method="GET"),
    proxy(path="/health", method="GET"),
    proxy(path="/openapi.json", method="GET"),
    proxy(path="/predict", method="GET"),
]


@pytest.fixture(scope="module")
def two_versions(trained: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """The session's model (v1, live) and a differently trained challenger (v2), one registry."""
    root = tmp_path_factory.mktemp("shadow") / "registry"
    shutil.copytree(trained.registry_root, root)
    train(
        data=trained.data,
        registry=open_registry(root.as_uri(), MODEL),
        params=TrainParams(max_iter=8, seed=7, learning_rate=0.3),
        actor=TRAINER,
        reason="challenger",
        progress=Progress(STEPS, enabled=False),
    )
    return replace(trained, registry_root=root)


def challenger(model: TrainedModel) -> Version:
    return model.registry().get_version(2)


def app_for(
    settings: ServingSettings,
    *,
    loader: Callable[[ServingSettings], LoadedModel] = load_model,
    sink: list[bytes] | None = None,
    metrics: list[Any] | None = None,
) -> InferenceApp:
    return InferenceApp(
        settings,
        loader=loader,
        metrics=collect([] if metrics is None else metrics),
        capture=None if sink is None else sink.append,
    )


def records(sink: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for chunk in sink for line in chunk.splitlines()]


def with_shadow(model: TrainedModel, version: Version | None = None) -> ServingSettings:
    version = version or challenger(model)
    return model.settings(shadow_version=version.number, shadow_sha256=version.sha256)


# The response: the live model alone decides ------------------------------------------------------


def test_every_response_is_byte_for_byte_the_same_with_a_shadow(two_versions: TrainedModel) -> None:
    # Given the live model alone, and the same live model with a challenger beside it
    alone = app_for(two_versions.settings(), sink=[])
    sink: list[bytes] = []
    shadowed = app_for(with_shadow(two_versions), sink=sink)
    assert shadowed.shadow is not None and shadowed.shadow.version == 2

    # When each gets the same requests
    # Then every response (status, headers, body) is identical, byte for byte
    for request in REQUESTS:
        assert shadowed.handle(request) == alone.handle(request), request["path"]
    # And the challenger did score: its results are only in the capture
    assert len(records(sink)) == 2 + 29


def test_the_challenger_scores_the_live_models_matrix_and_is_captured_beside_it(
    two_versions: TrainedModel,
) -> None:
    # Given a challenger that disagrees with the live model on some payments
    sink: list[bytes] = []
    app = app_for(with_shadow(two_versions), sink=sink)
    events = [
        valid_event(event_id=f"e-{i}", amount=40.0 * i, hour_of_day=i % 24) for i in range(40)
    ]

    # When a request is scored
    response = app.handle(proxy({"events": events}))

    # Then each record holds the live result (what the response said) and the challenger's
    body = json.loads(response["body"])
    captured = records(sink)
    assert [r["schema_version"] for r in captured] == [SCHEMA_VERSION] * 40
    version = challenger(two_versions)
    features = np.asarray([r["features"] for r in captured], dtype=np.float32)
    expected = app.shadow.predict(features)  # type: ignore[union-attr]
    for record, prediction, score in zip(captured, body["predictions"], expected, strict=True):
        assert shown_scores([record["score"]], record["threshold"]) == [
            prediction["fraud_probability"]
        ]
        assert record["decision"] is prediction["is_fraud"]
        shadow = record["shadow"]
        assert shadow["model"] == {"name": MODEL, "version": 2, "sha256": version.sha256}
        assert shadow["score"] == score
        assert shadow["decision"] is (score >= version.manifest["decision_threshold"])
        assert shadow["threshold"] == version.manifest["decision_threshold"]
        assert shadow["cost_us"] > 0
    assert any(r["shadow"]["score"] != r["score"] for r in captured)
    # And a reader gets the challenger's result back
    parsed = parse(captured[0])
    assert parsed.shadow is not None
    assert parsed.shadow.model_version == 2
    assert parsed.shadow.score == captured[0]["shadow"]["score"]


def test_without_a_shadow_the_record_has_no_shadow_field(two_versions: TrainedModel) -> None:
    sink: list[bytes] = []
    app_for(two_versions.settings(), sink=sink).handle(proxy({"events": [valid_event()]}))
    (record,) = records(sink)
    assert "shadow" not in record
    assert parse(record).shadow is None


def test_with_capture_off_the_challenger_does_not_score(two_versions: TrainedModel) -> None:
    # Given a shadow pin in an environment that captures nothing
    app = app_for(with_shadow(two_versions), sink=None)
    # Then the challenger is not run (nothing would record it), and says why
    assert app.shadow is None
    assert "capture is off" in str(app.shadow_unavailable)
    assert app.handle(REQUESTS[0])["statusCode"] == 200


# A broken challenger -----------------------------------------------------------------------------


def test_a_challenger_that_fails_to_load_changes_nothing_and_is_counted(
    two_versions: TrainedModel,
) -> None:
    # Given a shadow pin whose sha256 is not the registry's (a tampered or mistyped pin)
    settings = two_versions.settings(shadow_version=2, shadow_sha256="0" * 64)
    metrics: list[Any] = []
    sink: list[bytes] = []
    app = app_for(settings, sink=sink, metrics=metrics)

    # Then the live model serves exactly as without a shadow, and the failure is a metric
    assert app.model is not None and app.shadow is None
    assert ("ShadowLoadFailure", 1.0, {"Environment": "test"}) in metrics
    alone = app_for(two_versions.settings(), sink=[])
    for request in REQUESTS:
        assert app.handle(request) == alone.handle(request)
    # And each captured record says the challenger did not score it
    assert {r["shadow"]["error"] for r in records(sink)} == {
        app.shadow_unavailable,
    }


def test_a_malformed_shadow_pin_never_gives_a_503(two_versions: TrainedModel) -> None:
    environ = {**two_versions.environ(), SHADOW_MODEL_VERSION: "two", SHADOW_MODEL_SHA256: "x"}
    metrics: list[Any] = []
    app = InferenceApp.from_environ(environ, metrics=collect(metrics), capture=[].append)
    assert app.model is not None
    assert app.handle(REQUESTS[0])["statusCode"] == 200
    assert "SHADOW_MODEL_VERSION must be a positive integer" in str(app.shadow_unavailable)
    assert [m[0] for m in metrics][:1] == ["ShadowLoadFailure"]


class _Raising:
    """A loaded challenger whose every scoring raises (a model that breaks on real traffic)."""

    def __init__(self, model: LoadedModel) -> None:
        self._model = model
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(self, vectors: Any) -> list[float]:
        self.calls += 1
        raise RuntimeError("ONNX Runtime: [ShapeInferenceError] broken challenger")

    score_matrix = predict


def test_a_challenger_that_fails_to_score_changes_no_response_and_is_switched_off(
    two_versions: TrainedModel,
) -> None:
    # Given a challenger that raises whenever it scores
    broken: list[_Raising] = []

    def loader(settings: ServingSettings) -> LoadedModel:
        model = load_model(settings)
        if settings.model_version == 2:
            broken.append(_Raising(model))
            return broken[-1]  # type: ignore[return-value]
        return model

    metrics: list[Any] = []
    sink: list[bytes] = []
    app = app_for(with_shadow(two_versions), loader=loader, sink=sink, metrics=metrics)
    alone = app_for(two_versions.settings(), sink=[])

    # When requests keep coming
    for _ in range(SHADOW_FAILURE_LIMIT + 2):
        # Then each response is what the live model alone answers
        assert app.handle(REQUESTS[0]) == alone.handle(REQUESTS[0])

    # And each failure was counted, until the challenger was switched off
    names = [name for name, _, _ in metrics]
    assert names.count("ShadowFailures") == SHADOW_FAILURE_LIMIT
    assert names.count("ShadowDisabled") == 1
    assert broken[0].calls == SHADOW_FAILURE_LIMIT
    assert app.shadow is None
    # And the capture records say so, while the live results are intact
    captured = records(sink)
    assert len(captured) == 2 * (SHADOW_FAILURE_LIMIT + 2)
    assert "broken challenger" in captured[0]["shadow"]["error"]
    assert "switched off" in captured[-1]["shadow"]["error"]
    assert all(isinstance(r["score"], float) for r in captured)


# The shadow pin ----------------------------------------------------------------------------------

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def test_the_shadow_pin_sits_beside_the_live_pin_and_round_trips(tmp_path: Path) -> None:
    lock = tmp_path / "models.lock.json"
    write_pin(lock, model=MODEL, env="prod", pin=Pin(12, SHA_A))
    write_pin(lock, model=MODEL, env="dev", pin=Pin(13, SHA_B))

    # When prod gets a shadow
    write_shadow(lock, model=MODEL, env="prod", shadow=Pin(13, SHA_B))

    # Then it is written next to prod's live pin, and read back
    document = json.loads(lock.read_text())
    assert document["environments"]["prod"] == {
        "version": 12,
        "sha256": SHA_A,
        "shadow": {"version": 13, "sha256": SHA_B},
    }
    assert document["environments"]["dev"] == {"version": 13, "sha256": SHA_B}
    read = read_lock(lock, model=MODEL)
    assert read.shadows == {"prod": Pin(13, SHA_B)}
    assert read.pins == {"prod": Pin(12, SHA_A), "dev": Pin(13, SHA_B)}

    # And clearing it leaves the live pins as they were
    write_shadow(lock, model=MODEL, env="prod", shadow=None)
    assert read_lock(lock, model=MODEL).shadows == {}
    assert json.loads(lock.read_text())["environments"]["prod"] == {"version": 12, "sha256": SHA_A}


def test_promoting_the_shadow_moves_the_pin_from_shadow_to_live_in_one_write(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "models.lock.json"
    write_pin(lock, model=MODEL, env="prod", pin=Pin(12, SHA_A))
    write_shadow(lock, model=MODEL, env="prod", shadow=Pin(13, SHA_B))

    # When version 13 becomes live (what promote writes after the alias moved)
    sync_pin(lock, model=MODEL, env="prod", current=lambda: Pin(13, SHA_B))

    # Then prod serves 13 and has no shadow: one change to review
    assert json.loads(lock.read_text())["environments"]["prod"] == {"version": 13, "sha256": SHA_B}

    # And a live pin that changes to another version keeps the shadow
    write_shadow(lock, model=MODEL, env="prod", shadow=Pin(14, SHA_C))
    sync_pin(lock, model=MODEL, env="prod", current=lambda: Pin(12, SHA_A))
    assert read_lock(lock, model=MODEL).shadows == {"prod": Pin(14, SHA_C)}


@pytest.mark.parametrize(
    ("live", "shadow", "message"),
    [
        (None, Pin(13, SHA_B), "prod has no live pin"),
        (Pin(13, SHA_B), Pin(13, SHA_B), "version 13 is live in prod: it cannot shadow itself"),
    ],
)
def test_a_shadow_without_a_live_model_beside_it_is_refused(
    tmp_path: Path, live: Pin | None, shadow: Pin, message: str
) -> None:
    lock = tmp_path / "models.lock.json"
    write_pin(lock, model=MODEL, env="prod", pin=live)
    with pytest.raises(LockFileError, match=message):
        write_shadow(lock, model=MODEL, env="prod", shadow=shadow)
    assert read_lock(lock, model=MODEL).shadows == {}


def test_a_malformed_shadow_pin_in_the_lock_file_is_named(tmp_path: Path) -> None:
    lock = tmp_path / "models.lock.json"
    entry = {"version": 1, "sha256": SHA_A, "shadow": {"version": 0, "sha256": SHA_B}}
    lock.write_text(json.dumps({"model": MODEL, "environments": {"prod": entry}}))
    with pytest.raises(LockFileError, match=r"environments\.prod\.shadow: pin version"):
        read_lock(lock, model=MODEL)


def test_the_function_environment_carries_the_shadow_pin_and_the_parser_reads_it() -> None:
    variables = function_environment(
        model_name=MODEL,
        environment="prod",
        pin=Pin(12, SHA_A),
        registry_uri="s3://registry",
        max_events=100,
        max_body_bytes=262_144,
        feature_store_uri=None,
        when_features_unavailable="refuse",
        shadow=Pin(13, SHA_B),
    )
    assert variables[SHADOW_MODEL_VERSION] == "13"
    assert variables[SHADOW_MODEL_SHA256] == SHA_B
    settings = ServingSettings.from_environ(variables)
    assert settings.shadow_pin == Pin(13, SHA_B)
    assert settings.pin == Pin(12, SHA_A)
    assert settings.to_environ() == variables
    shadow_settings = settings.for_shadow()
    assert shadow_settings is not None and shadow_settings.pin == Pin(13, SHA_B)
    with pytest.raises(SettingsError, match="a shadow pin needs a live pin"):
        function_environment(
            model_name=MODEL,
            environment="prod",
            pin=None,
            registry_uri="s3://registry",
            max_events=100,
            max_body_bytes=262_144,
            feature_store_uri=None,
            when_features_unavailable="refuse",
            shadow=Pin(13, SHA_B),
        )


# The capture schema ------------------------------------------------------------------------------


def _record(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record": "sds.capture",
        "schema_version": 1,
        "env": "prod",
        "received_at": "2026-03-01T12:00:00.000001Z",
        "event_id": "e-1",
        "occurred_at": "2026-03-01T12:00:00Z",
        "model": {"name": MODEL, "version": 12, "sha256": SHA_A},
        "score": 0.5,
        "decision": True,
        "threshold": 0.4,
        "online_features": True,
        "sample_rate": 1.0,
        "feature_schema": "0" * 16,
    }
    record.update(overrides)
    return record


def test_the_reader_reads_version_1_records_and_refuses_unknown_versions() -> None:
    assert parse(_record()).shadow is None
    # a version 1 record never had a shadow: a stray key is not read as one
    assert parse(_record(shadow={"model": "x"})).shadow is None
    with pytest.raises(CaptureError, match="reads capture schema versions 1 and 2"):
        parse(_record(schema_version=3))


def test_a_malformed_shadow_field_is_named() -> None:
    shadow = {"model": {"name": MODEL, "version": 13, "sha256": SHA_B}, "score": "high"}
    with pytest.raises(CaptureError, match=r"shadow\.score: expected int or float"):
        parse(_record(schema_version=2, shadow=shadow))
    failed = parse(_record(schema_version=2, shadow={**shadow, "error": "boom"}))
    assert failed.shadow is not None and failed.shadow.error == "boom"
    assert failed.shadow.score is None


def test_loading_a_shadow_needs_the_same_verification_as_the_live_model(
    two_versions: TrainedModel,
) -> None:
    settings = with_shadow(two_versions).for_shadow()
    assert settings is not None
    assert load_model(settings).version == 2
    with pytest.raises(ModelUnavailable, match="does not match the deployed pin"):
        load_model(replace(settings, model_sha256="0" * 64))


def test_the_shadows_lean_scoring_call_answers_like_predict(two_versions: TrainedModel) -> None:
    # Given the challenger and a matrix of the handler's layout
    settings = with_shadow(two_versions).for_shadow()
    assert settings is not None
    model = load_model(settings)
    rows = np.random.default_rng(0).random((7, model.session.get_inputs()[0].shape[1]))
    matrix = np.ascontiguousarray(rows, dtype=np.float32)
    # Then the call the handler makes for the shadow gives exactly predict's scores
    assert model.score_matrix(matrix) == model.predict(matrix)
