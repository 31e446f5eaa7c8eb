"""The one test of "same content" for an event id (`sds.kernel.events.content_digest`): what the
feature store records with each id, and what `first_conflict` compares within one input, so a
redelivery is told from a reused id the same way in one input and across inputs."""

from __future__ import annotations

import json
from typing import Any

from sds.kernel.events import content_digest, first_conflict

PAYMENT: dict[str, Any] = {
    "type": "payment",
    "event_id": "p1",
    "account_id": "acct",
    "occurred_at": "2026-03-01T12:00:00Z",
    "amount": 12.0,
    "currency": "EUR",
    "merchant_category": "grocery",
    "country": "DE",
    "card_country": "DE",
    "hour_of_day": 12,
    "account_age_days": 40,
    "is_new_device": False,
}


def test_a_copy_has_the_digest_whatever_its_key_order_or_number_spelling() -> None:
    # Given the payment as another producer serializes it: keys reversed, 12 for 12.0
    copy = json.loads(json.dumps(dict(reversed(list(PAYMENT.items())))).replace("12.0", "12"))
    assert copy["amount"] == 12 and isinstance(copy["amount"], int)
    # Then it is the same content, within one input and for the store alike
    assert content_digest(copy) == content_digest(PAYMENT)
    assert first_conflict([("a:1", PAYMENT), ("a:2", copy)]) is None


def test_any_change_of_content_changes_the_digest_and_is_a_conflict() -> None:
    changed = [
        {**PAYMENT, "amount": 12.01},
        {**PAYMENT, "is_new_device": True},
        {**PAYMENT, "account_id": "other"},
        {**PAYMENT, "occurred_at": "2026-03-01T12:00:01Z"},
    ]
    digests = {content_digest(event) for event in [PAYMENT, *changed]}
    assert len(digests) == 5 and all(len(d) == 64 for d in digests)
    for event in changed:
        assert first_conflict([("a:1", PAYMENT), ("a:2", event)]) is not None


def test_a_string_that_is_not_valid_unicode_still_has_a_digest() -> None:
    # json.loads reads the escape "\ud800" as a lone surrogate: the digest must not raise
    event = json.loads(
        json.dumps({**PAYMENT, "merchant_category": "x"}).replace('"x"', '"\\ud800"')
    )
    assert content_digest(event) != content_digest(PAYMENT)
