"""The published OpenAPI document: valid OpenAPI 3.1, built from the feature schema, always served.

Given the feature table `sds.kernel.features.FIELDS`, when the document is built, then its event schema
is exactly those fields (plus the optional event_id) with their types and ranges, it follows the
deployed limits, and the handler serves it at `GET /openapi.json` even when no model is deployed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from openapi_spec_validator import validate

from lambdas.inference.app import ALLOWED_METHODS, InferenceApp
from sds.kernel import aggregates, features, openapi
from sds.kernel.aggregates import MINUTE
from sds.kernel.events import ACTIVITY_KINDS, KINDS
from sds.kernel.features import FIELD_NAMES, FIELDS, feature_schema
from sds.kernel.online import FUTURE_TOLERANCE
from sds.kernel.settings import ServingSettings
from sds.ops.local_api import EventsEndpoint


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi.build_openapi()

    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_the_handler_answers_is_documented_with_its_methods() -> None:
    paths = openapi.build_openapi()["paths"]

    assert {path: tuple(m.upper() for m in ops) for path, ops in paths.items()} == dict(
        ALLOWED_METHODS
    )


def test_head_is_documented_wherever_get_is_with_gets_answers_and_no_body() -> None:
    paths = openapi.build_openapi()["paths"]

    for path, item in paths.items():
        assert ("head" in item) == ("get" in item), path
        if "get" in item:
            got, headed = item["get"]["responses"], item["head"]["responses"]
            assert headed.keys() == got.keys(), path
            for status, answer in headed.items():
                assert "content" not in answer, (path, status)
                assert answer.get("headers") == got[status].get("headers"), (path, status)


def test_the_event_schema_is_the_feature_schema_plus_an_optional_type() -> None:
    event = openapi.event_schema()
    inputs = feature_schema()["inputs"]

    assert event["required"] == list(FIELD_NAMES) == inputs["required"]
    assert event["additionalProperties"] is False
    assert set(event["properties"]) == {*FIELD_NAMES, "type"}
    for field in FIELDS:
        published = dict(inputs["properties"][field.name])
        documented = event["properties"][field.name]
        assert documented.pop("description").startswith(published.pop("description"))
        assert published.items() <= documented.items(), field.name
    assert event["properties"]["event_id"]["maxLength"] == features.MAX_EVENT_ID_LENGTH
    assert event["properties"]["type"]["enum"] == ["payment"]
    # The aggregates are documented as computed, never as inputs
    computed = [f["name"] for f in event["x-computed-features"]]
    assert computed == list(aggregates.NAMES) and not set(computed) & set(event["properties"])


def test_the_document_says_a_payment_ahead_of_the_clock_is_refused_and_by_how_much() -> None:
    # Given the tolerance the API applies to occurred_at (`sds.kernel.online`)
    tolerance = f"{FUTURE_TOLERANCE // MINUTE} minutes ahead of the server's clock"
    # When the document is read, then the field and the 400 both state the rule
    document = openapi.build_openapi()
    occurred_at = document["components"]["schemas"]["Event"]["properties"]["occurred_at"]
    assert f"at most {tolerance}: a later one is refused (400" in occurred_at["description"]
    refused = document["paths"]["/predict"]["post"]["responses"]["400"]["description"]
    assert f"a payment dated more than {tolerance}" in refused


def test_the_document_follows_the_deployed_limits() -> None:
    document = openapi.build_openapi(max_events=7, max_body_bytes=1000)

    request = document["components"]["schemas"]["PredictRequest"]
    assert request["properties"]["events"]["maxItems"] == 7
    assert "1000 bytes" in document["info"]["description"]


def _get(app: InferenceApp, path: str, method: str = "GET") -> dict[str, Any]:
    return app.handle({"path": path, "httpMethod": method, "headers": {}, "body": None})


def test_given_no_model_deployed_then_openapi_json_is_still_served() -> None:
    settings = ServingSettings(
        model_name="fraud",
        model_version=None,
        model_sha256=None,
        registry_uri=None,
        environment="dev",
        max_events=12,
    )
    app = InferenceApp(settings, metrics=lambda *_: None)
    assert app.model is None

    response = _get(app, "/openapi.json")

    assert response["statusCode"] == 200
    document = json.loads(response["body"])
    assert (
        document["components"]["schemas"]["PredictRequest"]["properties"]["events"]["maxItems"]
        == 12
    )
    assert document["info"]["title"] == "sds inference API (fraud)"
    assert _get(app, "/model")["statusCode"] == 503


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/predict"), ("POST", "/openapi.json"), ("DELETE", "/model"), ("PUT", "/health")],
)
def test_over_http_a_wrong_method_gets_405_with_allow(
    contract_api_url: str, method: str, path: str
) -> None:
    request = urllib.request.Request(f"{contract_api_url}{path}", method=method, data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)

    assert raised.value.code == 405
    assert raised.value.headers["Allow"] == ", ".join(ALLOWED_METHODS[path])


def test_the_local_api_documents_its_own_post_events_with_the_kinds_it_takes(
    contract_api_url: str,
) -> None:
    # Given the local API (labels folder configured), when its document is read over HTTP
    with urllib.request.urlopen(f"{contract_api_url}/openapi.json", timeout=10) as response:
        document = json.loads(response.read())
    # Then it is valid OpenAPI, and documents the handler's routes and its own POST /events
    validate(document)
    paths = {path: tuple(m.upper() for m in ops) for path, ops in document["paths"].items()}
    assert paths == {**ALLOWED_METHODS, EventsEndpoint.PATH: ("POST",)}
    schemas = document["components"]["schemas"]
    events = schemas["EventsRequest"]["properties"]["events"]
    assert events["maxItems"] == EventsEndpoint.MAX_EVENTS
    assert set(events["items"]["discriminator"]["mapping"]) == set(KINDS)
    # And each kind's schema is the table the endpoint validates with, `type` included
    for name, kind in KINDS.items():
        schema = schemas[openapi._kind_schema_name(name)]
        assert schema["required"] == ["type", *(field.name for field in kind.fields)]
        assert schema["properties"]["type"]["enum"] == [name]
        assert schema["additionalProperties"] is False


def test_without_a_labels_folder_the_documented_kinds_are_the_activity_ones() -> None:
    # Given the events endpoint as a server without a labels folder runs it
    route = openapi.EventsRoute(EventsEndpoint(None).kinds, EventsEndpoint.MAX_EVENTS)
    # When the document is built
    document = openapi.build_openapi(events=route)
    # Then labels are not offered, and the handler's document has no /events at all
    validate(document)
    mapping = document["components"]["schemas"]["EventsRequest"]["properties"]["events"]["items"]
    assert set(mapping["discriminator"]["mapping"]) == set(ACTIVITY_KINDS)
    assert "LabelEvent" not in document["components"]["schemas"]
    assert "/events" not in openapi.build_openapi()["paths"]
