"""The feature store on DynamoDB: each environment's table on AWS (`dynamodb://<table>`).

One table, one string partition key (`pk`), two kinds of item, both with a TTL (`ttl`, epoch
seconds) so that DynamoDB deletes them once they can no longer matter:

- an account: `pk = "<definitions>#account#<account_id>"`, its bucketed state as compact JSON
  (`state`) and a `version`. A commit is a conditional put on that version (compare-and-swap;
  `attribute_not_exists` for the first one); `ttl` is when nothing in the state can count any more.
- an event folded in: `pk = "<definitions>#event#<event_id>"` with the digest of its content
  (`digest`, `sds.kernel.events.content_digest`), written with `attribute_not_exists(pk)` in the
  same `TransactWriteItems` as the account's new state, and kept until the event is older than
  the longest window (plus lateness). A redelivered event makes the transaction fail on its own
  item (`ConditionalCheckFailed`): nothing is written, and the store raises `DuplicateEvents`
  naming it. Each event item asks for the item it collided with
  (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), so the cancellation itself says whether the
  id was recorded with the same digest (a duplicate) or another (a conflict: an id reused for
  other content), with no extra request; an item from before digests were kept has none, and
  counts as a duplicate.

`<definitions>` is the first 16 hex digits of the aggregate definitions' fingerprint
(`sds.kernel.aggregates.fingerprint`): definitions that change start from an empty state in the
same table, which a replay of the event archive fills (`sds --aws replay`), instead of folding new
meanings into old buckets or finding every archived event already recorded. Items of the previous
definitions expire by themselves.

A transaction holds at most 100 items, so a commit records at most 99 events
(`max_events_per_commit`; `OnlineFeatures` splits larger batches of one account). The largest
state the declared windows can hold is about 32 KB (every bucket the updater keeps filled with
20-digit values, and all 676 two-letter country codes in each day of the 7-day set), under a
tenth of DynamoDB's 400 KB item limit; a state that would not fit (new declarations with many
more buckets) is refused before it is sent, naming the account, and its events are not recorded
(they fail, and end in the dead-letter queue: docs/decisions.md).

Reads are `BatchGetItem` (up to 100 accounts per request: one round trip for a request of up to
100 payments), eventually consistent unless asked otherwise (the updater reads consistently, so
its compare-and-swap rarely loses to its own previous write). `UnprocessedKeys` are fetched again
with a short backoff until a deadline. Every failure is a `FeatureStoreError` that says what
DynamoDB said; timeouts come from the caller (the inference function's
`FEATURE_STORE_TIMEOUT_MS`), so a slow table gives a bounded, clear outcome and never a hang.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sds.kernel.aggregates import EntityState, decode_state, encode_state
from sds.kernel.aws.client import ClientConfig
from sds.kernel.aws.dynamodb import DynamoDBClient, TransactionCanceled
from sds.kernel.aws.errors import AwsConnectionError, AwsError
from sds.kernel.featurestore import (
    DuplicateEvents,
    FeatureStoreError,
    Stored,
    VersionConflict,
    definitions_namespace,
    split_recorded,
)

# The table's shape, as the stack creates it (stacks/components/feature_table.py) and the tests.
PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "ttl"
STATE = "state"
VERSION = "version"
DIGEST = "digest"

ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB's maximum item size, names and values together
BATCH_GET_LIMIT = 100  # keys per BatchGetItem request
TRANSACTION_LIMIT = 100  # items per TransactWriteItems request
# Without a timeout from the caller (the updater, the CLI): generous, but bounded.
DEFAULT_TIMEOUT = 5.0


def client_config(timeout: float | None) -> ClientConfig:
    """Per-attempt connect and read timeouts; with a caller's timeout (the request path), two
    attempts and a short backoff, so a read fails within about four timeouts at worst."""
    if timeout is None:
        return ClientConfig(connect_timeout=DEFAULT_TIMEOUT, read_timeout=DEFAULT_TIMEOUT)
    return ClientConfig(
        connect_timeout=timeout,
        read_timeout=timeout,
        max_attempts=2,
        base_delay=min(0.01, timeout / 10),
        max_delay=min(0.05, timeout / 4),
    )


class DynamoDBFeatureStore:
    max_events_per_commit: int | None = TRANSACTION_LIMIT - 1

    def __init__(
        self,
        table: str,
        *,
        client: DynamoDBClient | None = None,
        namespace: str | None = None,
        consistent_read: bool = False,
        timeout: float | None = None,
    ) -> None:
        if not table:
            raise FeatureStoreError("dynamodb:// needs a table name: dynamodb://<table>")
        self.table = table
        self.namespace = namespace or definitions_namespace()
        self.consistent_read = consistent_read
        # How long a read may go on fetching keys DynamoDB held back (UnprocessedKeys).
        self.read_deadline = 2 * (timeout if timeout is not None else DEFAULT_TIMEOUT)
        try:
            self.client = client or DynamoDBClient(config=client_config(timeout))
        except AwsError as exc:
            raise FeatureStoreError(f"{self.uri}: cannot reach DynamoDB: {exc}") from exc

    @property
    def uri(self) -> str:
        return f"dynamodb://{self.table}"

    def close(self) -> None:
        self.client.close()

    # Keys ---------------------------------------------------------------------------------

    def account_key(self, entity: str) -> str:
        return f"{self.namespace}#account#{entity}"

    def event_key(self, event_id: str) -> str:
        return f"{self.namespace}#event#{event_id}"

    # Reads --------------------------------------------------------------------------------

    def read(self, entities: Sequence[str]) -> Mapping[str, Stored]:
        wanted = list(dict.fromkeys(entities))
        by_key = {self.account_key(entity): entity for entity in wanted}
        found: dict[str, Stored] = {}
        keys = list(by_key)
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            for item in self._batch_get(keys[start : start + BATCH_GET_LIMIT]):
                key = item.get(PARTITION_KEY, {}).get("S")
                if key in by_key:
                    found[by_key[key]] = self._stored(by_key[key], item)
        return found

    def _batch_get(self, keys: list[str]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "Keys": [{PARTITION_KEY: {"S": key}} for key in keys],
            "ProjectionExpression": "#k, #s, #v",
            "ExpressionAttributeNames": {"#k": PARTITION_KEY, "#s": STATE, "#v": VERSION},
        }
        if self.consistent_read:
            request["ConsistentRead"] = True
        pending: dict[str, Any] = {self.table: request}
        items: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.read_deadline
        delay = 0.005
        while True:
            try:
                answer = self.client.call("BatchGetItem", {"RequestItems": pending})
            except AwsError as exc:
                raise self._error("read", exc) from exc
            items.extend((answer.get("Responses") or {}).get(self.table) or [])
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return items
            left = len((pending.get(self.table) or {}).get("Keys") or [])
            if time.monotonic() + delay > deadline:
                raise FeatureStoreError(
                    f"{self.uri}: read failed: DynamoDB held back {left} of {len(keys)} "
                    f"accounts (UnprocessedKeys) for {self.read_deadline:g} s: the table is "
                    "throttling reads"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _stored(self, entity: str, item: Mapping[str, Any]) -> Stored:
        try:
            state = decode_state(item[STATE]["S"])
            version = int(item[VERSION]["N"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FeatureStoreError(
                f"{self.uri}: the stored state of {entity!r} is not readable ({exc!r}); "
                "was the item written by something else?"
            ) from exc
        return Stored(state=state, version=version)

    def recorded(self, event_ids: Sequence[str]) -> Mapping[str, str | None]:
        """Not on the scoring path: the check before a commit, and a cancellation whose items
        did not come back. Consistent reads, `UnprocessedKeys` fetched again by the client."""
        by_key = {self.event_key(event_id): event_id for event_id in dict.fromkeys(event_ids)}
        found: dict[str, str | None] = {}
        keys = list(by_key)
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {
                "Keys": [
                    {PARTITION_KEY: {"S": key}} for key in keys[start : start + BATCH_GET_LIMIT]
                ],
                "ProjectionExpression": "#k, #d",
                "ExpressionAttributeNames": {"#k": PARTITION_KEY, "#d": DIGEST},
                "ConsistentRead": True,
            }
            try:
                answer = self.client.batch_get_item({self.table: request})
            except AwsError as exc:
                raise self._error("read of event ids", exc) from exc
            for item in answer.get(self.table, []):
                key = item.get(PARTITION_KEY, {}).get("S")
                if key in by_key:
                    found[by_key[key]] = _digest(item)
        return found

    # Commits ------------------------------------------------------------------------------

    def commit(
        self,
        entity: str,
        *,
        expected_version: int,
        state: EntityState,
        events: Mapping[str, int],
        expires_at: int,
        digests: Mapping[str, str] | None = None,
    ) -> None:
        ids = list(events)
        digests = digests or {}
        if len(ids) > TRANSACTION_LIMIT - 1:
            raise ValueError(
                f"a commit records at most {TRANSACTION_LIMIT - 1} events, got {len(ids)} "
                "(OnlineFeatures splits larger batches)"
            )
        document = encode_state(state)
        account = {
            PARTITION_KEY: {"S": self.account_key(entity)},
            STATE: {"S": document},
            VERSION: {"N": str(expected_version + 1)},
            TTL_ATTRIBUTE: {"N": str(_epoch_seconds(expires_at))},
        }
        size = item_bytes(account)
        if size > ITEM_LIMIT_BYTES:
            raise FeatureStoreError(
                f"{self.uri}: the state of {entity!r} would be {size} bytes, over DynamoDB's "
                f"{ITEM_LIMIT_BYTES}-byte item limit; nothing was written (see "
                "docs/decisions.md on the table's design)"
            )
        put: dict[str, Any] = {"TableName": self.table, "Item": account}
        if expected_version == 0:
            put["ConditionExpression"] = "attribute_not_exists(#k)"
            put["ExpressionAttributeNames"] = {"#k": PARTITION_KEY}
        else:
            put["ConditionExpression"] = "#v = :v"
            put["ExpressionAttributeNames"] = {"#v": VERSION}
            put["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        items: list[dict[str, Any]] = [{"Put": put}]
        for event_id in ids:
            event_item = {
                PARTITION_KEY: {"S": self.event_key(event_id)},
                TTL_ATTRIBUTE: {"N": str(_epoch_seconds(events[event_id]))},
            }
            if event_id in digests:
                event_item[DIGEST] = {"S": digests[event_id]}
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": event_item,
                        "ConditionExpression": "attribute_not_exists(#k)",
                        "ExpressionAttributeNames": {"#k": PARTITION_KEY},
                        # On a collision, the recorded item comes back with the cancellation:
                        # its digest tells a redelivery from a reused id, at no extra request.
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
        request = {
            "TransactItems": items,
            # The client's own retries resend this exact request: a transaction that went
            # through before its answer was lost is then acknowledged, not refused.
            "ClientRequestToken": str(uuid.uuid4()),
        }
        try:
            self.client.call("TransactWriteItems", request)
        except TransactionCanceled as exc:
            raise self._cancelled(entity, ids, digests, exc) from exc
        except AwsError as exc:
            raise self._error(f"commit of {entity!r}", exc) from exc

    def _cancelled(
        self,
        entity: str,
        ids: list[str],
        digests: Mapping[str, str],
        exc: TransactionCanceled,
    ) -> FeatureStoreError:
        reasons = exc.reasons
        collided = {
            event_id: old
            for event_id, reason, old in zip(ids, reasons[1:], exc.items[1:], strict=False)
            if reason == "ConditionalCheckFailed"
        }
        recorded = {event_id: _digest(old) for event_id, old in collided.items()}
        unreturned = [event_id for event_id, old in collided.items() if old is None]
        if unreturned:
            # An endpoint that did not return the items asked for: read their digests (a
            # consistent read; an id gone since, by TTL, counts as a duplicate).
            found = self.recorded(unreturned)
            recorded.update({event_id: found.get(event_id) for event_id in unreturned})
        if recorded:
            return DuplicateEvents(*split_recorded(recorded, digests))
        if reasons and reasons[0] == "ConditionalCheckFailed":
            return VersionConflict(f"{entity}: changed since it was read")
        if "TransactionConflict" in reasons:
            # Another writer's transaction on the same item was in flight: read again, refold.
            return VersionConflict(f"{entity}: another commit was in progress")
        codes = ", ".join(sorted({r for r in reasons if r})) or "no reason given"
        return FeatureStoreError(
            f"{self.uri}: commit of {entity!r} cancelled by DynamoDB ({codes}); nothing was written"
        )

    def _error(self, what: str, exc: AwsError) -> FeatureStoreError:
        if exc.code == "ResourceNotFoundException":
            return FeatureStoreError(
                f"{self.uri}: {what} failed: the table does not exist here (is the "
                f"environment deployed, and is this its table?): {exc}"
            )
        if isinstance(exc, AwsConnectionError):
            return FeatureStoreError(f"{self.uri}: {what} failed: DynamoDB did not answer: {exc}")
        return FeatureStoreError(f"{self.uri}: {what} failed: {exc}")


def _digest(item: Mapping[str, Any] | None) -> str | None:
    """An event item's content digest (None: written before digests were kept, or not sent)."""
    value = (item or {}).get(DIGEST)
    return str(value["S"]) if isinstance(value, Mapping) and "S" in value else None


def _epoch_seconds(micros: int) -> int:
    return math.ceil(micros / 1_000_000)


def item_bytes(item: Mapping[str, Any]) -> int:
    """An item's size as DynamoDB counts it, for the attribute types this store writes: each
    name's UTF-8 length, plus a string's UTF-8 length or a number's (about one byte per two
    digits, plus one)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(str(value["S"]).encode())
        elif "N" in value:
            digits = len(str(value["N"]).lstrip("-").replace(".", ""))
            size += (digits + 1) // 2 + 1
        else:
            size += len(json.dumps(value).encode())
    return size


def table_definition(name: str) -> dict[str, Any]:
    """A `CreateTable` request for a table this store can use: what the stack creates
    (stacks/components/feature_table.py), for tests and benchmarks on a protocol server."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": PARTITION_KEY, "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
