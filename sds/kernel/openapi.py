"""The inference API's OpenAPI 3.1 document, built from the feature schema and the routes.

`build_openapi()` derives the event schema from `sds.kernel.features.FIELDS` (the same table the
handler validates with and every manifest records), so the document cannot drift from what the
API accepts. The handler serves it at `GET /openapi.json` with the deployed limits
(`MAX_EVENTS`, `MAX_BODY_BYTES`), with or without a model loaded (each GET route documented with
its HEAD, which the handler answers as GET), and the contract test
(schemathesis, tests/contract_api/) fuzzes the API against it. The local API (`sds serve`) adds
its own `POST /events` (`EventsRoute`), each event kind's schema derived from
`sds.kernel.events.KINDS`, the table the endpoint validates with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sds.kernel.aggregates import AGGREGATES, MINUTE
from sds.kernel.events import KINDS, LABEL_KINDS, TYPE
from sds.kernel.features import FIELDS, SCHEMA_VERSION, Field
from sds.kernel.online import FUTURE_TOLERANCE
from sds.kernel.settings import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_EVENTS

# How far ahead of the server's clock an event may be dated (`sds.kernel.online.ahead_of_clock`).
_TOLERANCE = f"{FUTURE_TOLERANCE // MINUTE} minutes"

ERROR_CODES: dict[int, str] = {
    400: (
        "Invalid JSON or invalid events: `problems` lists every one, with field and reason (a "
        f"payment dated more than {_TOLERANCE} ahead of the server's clock among them)"
    ),
    413: (
        "The body is larger than `MAX_BODY_BYTES` (the function's `Error`), or than API "
        "Gateway's 10 MiB (the gateway's own answer, `GatewayError`)"
    ),
    415: "The body is not `application/json`",
    503: (
        "No model is deployed, the pinned model failed to load or verify, or the account "
        "aggregates could not be read (`features_unavailable`, where the environment answers "
        "503 rather than scoring without them)"
    ),
}

_MODEL_HEADERS: dict[str, Any] = {
    "X-Model-Version": {
        "description": (
            "The model version that answered (on every answer of the function while a model is "
            "loaded; not on API Gateway's own answers)"
        ),
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "X-Model-Name": {
        "description": "The model name (as `X-Model-Version`)",
        "schema": {"type": "string"},
    },
}


def _event_property(spec: Field) -> dict[str, Any]:
    schema = spec.to_json_schema()
    if spec.kind == "country":
        # `$` also matches before a trailing newline in some regex engines: fix the length too.
        schema["minLength"] = 2
        schema["maxLength"] = 2
        schema["examples"] = ["US"]
    return schema


def event_schema() -> dict[str, Any]:
    """One payment as the API accepts it: the feature schema's inputs (envelope included) and an
    optional `type`, as on the event bus. The account aggregates are not sent: the system
    computes them from the account's events (`x-computed-features` lists them)."""
    properties = {spec.name: _event_property(spec) for spec in FIELDS}
    # /predict's own rule on top of the feature schema's (`InferenceApp`).
    properties["occurred_at"]["description"] += (
        f", at most {_TOLERANCE} ahead of the server's clock: a later one is refused (400, saying how far "
        "ahead), as the feature store refuses such an event, since its account aggregates "
        "cannot be known yet"
    )
    properties["type"] = {
        "type": "string",
        "enum": ["payment"],
        "description": "Optional: the event's type, as activity events carry it",
    }
    return {
        "type": "object",
        "description": (
            f"One card-payment event (feature schema version {SCHEMA_VERSION}); the account "
            "aggregates it is scored with are computed by the system from the account's events"
        ),
        "x-computed-features": [{"name": a.name, "description": a.description} for a in AGGREGATES],
        "required": [spec.name for spec in FIELDS],
        "additionalProperties": False,
        "properties": properties,
    }


@dataclass(frozen=True)
class EventsRoute:
    """`POST /events` as the local API serves it (`sds serve`): the event kinds it takes and its
    batch limit. On AWS, events go to the environment's event bus instead."""

    kinds: Sequence[str]
    max_events: int


def _kind_schema_name(kind: str) -> str:
    return f"{kind.capitalize()}Event"


def kind_schema(kind: str) -> dict[str, Any]:
    """One event of `kind` as `POST /events` takes it: `type` and every field of the kind
    (`sds.kernel.events.KINDS`, the table `validate` checks against), all required."""
    spec = KINDS[kind]
    properties: dict[str, Any] = {TYPE: {"type": "string", "enum": [kind]}}
    properties |= {field.name: _event_property(field) for field in spec.fields}
    return {
        "type": "object",
        "description": spec.description,
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


def _events_components(route: EventsRoute) -> dict[str, Any]:
    refs = {kind: f"#/components/schemas/{_kind_schema_name(kind)}" for kind in route.kinds}
    counts = {
        name: {"type": "integer", "minimum": 0, "description": description}
        for name, description in (
            ("applied", "Events folded into the account aggregates"),
            ("duplicates", "Copies of events already stored: counted once"),
            ("too_old", "Events older than every aggregate's window: nothing to fold them into"),
            ("ignored", "Events no aggregate reads"),
            ("entities", "Accounts whose aggregates were written"),
            ("commits", "Writes to the feature store"),
            ("retries", "Writes made again because another writer changed the account first"),
        )
    }
    by_id = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        **{_kind_schema_name(kind): kind_schema(kind) for kind in route.kinds},
        "EventsRequest": _batch_request(
            {
                "oneOf": [{"$ref": ref} for ref in refs.values()],
                "discriminator": {"propertyName": TYPE, "mapping": refs},
            },
            route.max_events,
        ),
        "EventsAccepted": {
            "type": "object",
            "required": ["accepted", "labels"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1, "description": "Events taken"},
                "labels": {"type": "integer", "minimum": 0, "description": "Labels stored"},
                **counts,
                "failed": by_id | {"description": "Event ids that could not be stored, and why"},
                "conflicts": by_id
                | {"description": "Event ids already stored with other content, and why"},
            },
        },
    }


def _events_path(route: EventsRoute) -> dict[str, Any]:
    labels = [kind for kind in route.kinds if kind in LABEL_KINDS]
    taken = ", ".join(route.kinds)
    return {
        "post": {
            "operationId": "postEvents",
            "summary": f"Feed 1 to {route.max_events} events ({taken}) to the local stores",
            "description": (
                "The local API's stand-in for the environment's event bus: activity events are "
                "folded into the feature store the scoring reads"
                + (", labels are kept for training from captures" if labels else "")
                + ". A batch with any problem is refused whole; an exact copy of a stored event "
                "is a redelivery, counted once."
            ),
            "requestBody": {"required": True, "content": _json_content("EventsRequest")},
            "responses": {
                "202": {
                    "description": "Stored: what the feature store did with the events",
                    "content": _json_content("EventsAccepted"),
                },
                "400": {
                    "description": (
                        "Invalid JSON, invalid events (`problems` lists every one, an event "
                        f"dated more than {_TOLERANCE} ahead of the clock too: an activity "
                        "event's `occurred_at`, a label's `labelled_at`), or one event id with "
                        "two contents in the batch; nothing was stored"
                    ),
                    "content": _json_content("Error"),
                },
                "409": {
                    "description": (
                        "An event id the feature store already holds with other content: "
                        "`problems` names each; the message says whether the rest was stored"
                    ),
                    "content": _json_content("Error"),
                },
                "413": {
                    "description": "The body is larger than API Gateway's 10 MiB",
                    "content": _json_content("GatewayError"),
                },
                "415": {"description": ERROR_CODES[415], "content": _json_content("Error")},
                "503": {
                    "description": (
                        "No feature store, or it could not store the batch: send it again"
                    ),
                    "content": _json_content("Error"),
                },
            },
        }
    }


def _batch_request(items: dict[str, Any], max_events: int) -> dict[str, Any]:
    """`{"events": [1 to max_events items]}` and nothing else: the envelope
    `sds.kernel.features.batch_envelope` checks."""
    return {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": max_events, "items": items}
        },
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(ref)}}


def _error_response(status: int, *, with_model_headers: bool = True) -> dict[str, Any]:
    content = (
        {"application/json": {"schema": {"oneOf": [_ref("Error"), _ref("GatewayError")]}}}
        if status == 413
        else _json_content("Error")
    )
    response: dict[str, Any] = {"description": ERROR_CODES[status], "content": content}
    if with_model_headers:
        response["headers"] = _MODEL_HEADERS
    return response


def _components(max_events: int) -> dict[str, Any]:
    model_ref = {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": {"type": "integer", "minimum": 1}},
    }
    return {
        "schemas": {
            "Event": event_schema(),
            "PredictRequest": _batch_request({"$ref": "#/components/schemas/Event"}, max_events),
            "Prediction": {
                "type": "object",
                "required": ["fraud_probability", "is_fraud"],
                "additionalProperties": False,
                "properties": {
                    "fraud_probability": {
                        "type": "number",
                        "minimum": 0,
                        "maximum": 1,
                        "description": (
                            "The model's score to 6 decimals, rounded toward its decision: up "
                            "when is_fraud, down otherwise (within 1e-6 of the score), so that "
                            "is_fraud is exactly fraud_probability >= decision_threshold"
                        ),
                    },
                    "is_fraud": {
                        "type": "boolean",
                        "description": (
                            "The model's score >= the version's decision_threshold (GET "
                            "/model); equally, fraud_probability >= decision_threshold"
                        ),
                    },
                    "event_id": {"type": "string"},
                },
            },
            "PredictResponse": {
                "type": "object",
                "required": ["model", "predictions"],
                "properties": {
                    "model": model_ref,
                    "predictions": {
                        "type": "array",
                        "description": "One prediction per event, in request order",
                        "items": {"$ref": "#/components/schemas/Prediction"},
                    },
                    "online_features": {
                        "type": "object",
                        "description": (
                            "Present only when the account aggregates could not be read and "
                            "the environment scores without them (`when_features_unavailable: "
                            "score`): every aggregate was 0"
                        ),
                        "required": ["available", "reason"],
                        "properties": {
                            "available": {"const": False},
                            "reason": {"type": "string"},
                        },
                    },
                },
            },
            "ModelDescription": {
                "type": "object",
                "required": ["name", "version", "sha256", "decision_threshold", "metrics"],
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "created_at": {"type": ["string", "null"]},
                    "metrics": {"type": "object"},
                    "decision_threshold": {"type": "number"},
                    "code_version": {"type": ["string", "null"]},
                    "feature_schema": {"type": ["object", "null"]},
                },
            },
            "Health": {
                "type": "object",
                "required": ["status", "model"],
                "properties": {
                    "status": {"type": "string", "enum": ["ok", "unavailable"]},
                    "message": {"type": ["string", "null"]},
                    "model": {"oneOf": [model_ref, {"type": "null"}]},
                },
            },
            "GatewayError": {
                "type": "object",
                "description": "An answer of API Gateway itself, before the function runs",
                "required": ["message"],
                "properties": {"message": {"type": "string", "examples": ["Request Too Long"]}},
            },
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string", "description": "A stable, machine-readable code"},
                    "message": {"type": "string"},
                    "problems": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "reason"],
                            "properties": {
                                "field": {"type": "string", "examples": ["events[0].amount"]},
                                "reason": {"type": "string", "examples": ["must be >= 0"]},
                            },
                        },
                    },
                    "problems_not_listed": {"type": "integer", "minimum": 1},
                },
            },
        }
    }


def build_openapi(
    *,
    max_events: int = DEFAULT_MAX_EVENTS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    model_name: str | None = None,
    events: EventsRoute | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the inference API with these deployed limits, and of the
    local API's `POST /events` when it serves one (`events`)."""
    title = "sds inference API" + (f" ({model_name})" if model_name else "")
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": f"feature-schema-{SCHEMA_VERSION}",
            "description": (
                "Scores card-payment events with the model version deployed to this "
                "environment. On AWS every method is authorized with IAM (SigV4) or an API key; "
                f"bodies are limited to {max_body_bytes} bytes and {max_events} events. "
                "Nothing a client sends produces a 5xx."
            ),
        },
        "paths": {
            "/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": "Score 1 to max_events events",
                    "requestBody": {"required": True, "content": _json_content("PredictRequest")},
                    "responses": {
                        "200": {
                            "description": "One prediction per event",
                            "headers": _MODEL_HEADERS,
                            "content": _json_content("PredictResponse"),
                        },
                        **{str(code): _error_response(code) for code in (400, 413, 415, 503)},
                    },
                }
            },
            "/model": {
                "get": {
                    "operationId": "describeModel",
                    "summary": "The served version: metrics, decision threshold, feature schema",
                    "responses": {
                        "200": {
                            "description": "The served version",
                            "headers": _MODEL_HEADERS,
                            "content": _json_content("ModelDescription"),
                        },
                        "503": _error_response(503),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Whether a model is loaded",
                    "responses": {
                        "200": {
                            "description": "A model is loaded",
                            "content": _json_content("Health"),
                        },
                        "503": {
                            "description": "No model is loaded; `message` says why",
                            "content": _json_content("Health"),
                        },
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": _components(max_events),
    }
    for item in document["paths"].values():
        if "get" in item:
            item["head"] = _head_operation(item["get"])
    if events is not None:
        document["paths"]["/events"] = _events_path(events)
        document["components"]["schemas"] |= _events_components(events)
    return document


def _head_operation(get: dict[str, Any]) -> dict[str, Any]:
    """HEAD on a GET route, as the handler answers it: GET's statuses and headers, no body."""
    return {
        "operationId": f"{get['operationId']}Head",
        "summary": f"{get['summary']}: GET's status and headers, without the body",
        "responses": {
            status: {key: value for key, value in response.items() if key != "content"}
            for status, response in get["responses"].items()
        },
    }
