"""The local API's two POST routes agree on what a body must be: JSON, by its Content-Type.

`curl -d '{...}'` without `-H 'Content-Type: application/json'` sends
`application/x-www-form-urlencoded`: `/predict` answers 415, and `/events` must answer the same
415 (before this, it stored the events of a body it would not have accepted as JSON elsewhere).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sds.ops.local_api import LocalApi
from tests.support.trained_model import TrainedModel

LOGIN = {
    "type": "login",
    "event_id": "login-1",
    "account_id": "acct-1",
    "occurred_at": "2026-03-01T11:59:00Z",
    "outcome": "failure",
}
PAYMENT = {
    "event_id": "evt-1",
    "account_id": "acct-1",
    "occurred_at": "2026-03-01T12:00:00Z",
    "amount": 250.0,
    "currency": "EUR",
    "merchant_category": "electronics",
    "country": "FR",
    "card_country": "DE",
    "hour_of_day": 2,
    "account_age_days": 12,
    "is_new_device": True,
}
FORM = "application/x-www-form-urlencoded"  # what curl -d sends unless told otherwise


@pytest.fixture
def api(trained: TrainedModel, tmp_path: Path) -> Iterator[LocalApi]:
    apps = trained.serving_locally(tmp_path / "models.lock.json")
    with LocalApi(apps) as started:
        yield started


def post(api: LocalApi, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    host, port = api.server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=15)
    try:
        connection.request("POST", path, json.dumps(body).encode(), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("media_type", [FORM, "text/plain", "application/xml; charset=utf-8"])
def test_events_refuses_a_body_that_is_not_json_as_predict_does(
    api: LocalApi, media_type: str
) -> None:
    # When the same kind of mistaken request goes to both routes
    predicted = post(api, "/predict", {"events": [PAYMENT]}, {"Content-Type": media_type})
    fed = post(api, "/events", {"events": [LOGIN]}, {"Content-Type": media_type})

    # Then both answer the same 415, naming the type they got
    assert predicted[0] == fed[0] == 415
    assert (
        fed[1]
        == predicted[1]
        == {
            "error": "unsupported_media_type",
            "message": f"Content-Type must be application/json, got {media_type.split(';')[0]!r}",
        }
    )
    # And nothing was folded: the login counts once the request is sent as JSON
    status, accepted = post(
        api, "/events", {"events": [LOGIN]}, {"Content-Type": "application/json"}
    )
    assert status == 202, accepted
    assert accepted["accepted"] == 1


@pytest.mark.parametrize("headers", [{"Content-Type": "application/json"}, {}])
def test_events_takes_json_and_a_body_without_a_content_type(
    api: LocalApi, headers: dict[str, str]
) -> None:
    status, accepted = post(api, "/events", {"events": [LOGIN]}, headers)
    assert status == 202, accepted
