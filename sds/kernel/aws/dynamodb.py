"""DynamoDB's JSON API without the SDK: `POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>`.

`call(operation, request)` sends any operation with the request document AWS's API reference
documents (typed attribute values: `{"S": "..."}`, `{"N": "1"}`, ...) and returns the answer
document; `get_item`, `batch_get_item` and `query` wrap single reads and follow `UnprocessedKeys`
and `LastEvaluatedKey` (the feature store's `recorded` uses `batch_get_item`; its serving read
calls `BatchGetItem` itself, to retry unprocessed keys under its own deadline). `to_item` / `from_item` convert between plain
Python values and typed attribute values.

Errors come back as `AwsError` with DynamoDB's code (`ResourceNotFoundException`,
`ValidationException`, `ConditionalCheckFailedException`, ...), and a cancelled transaction as
`TransactionCanceled` with DynamoDB's reason for each of its items; throttling
(`ProvisionedThroughputExceededException`, `ThrottlingException`), 5xx and a body whose
`x-amz-crc32` does not match are retried (sds.kernel.aws.client).
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from sds.kernel.aws.client import AwsClient
from sds.kernel.aws.errors import AwsError
from sds.kernel.aws.transport import Response

TARGET_PREFIX = "DynamoDB_20120810."
CONTENT_TYPE = "application/x-amz-json-1.0"
UNPROCESSED_ROUNDS = 8

Item = dict[str, Any]


class TransactionCanceled(AwsError):
    """`TransactWriteItems` wrote nothing; `reasons` holds DynamoDB's cancellation reason code
    for each item in request order (`None` for an item that was not the cause), and `items` the
    item as it was for each one whose condition failed and that asked for it
    (`ReturnValuesOnConditionCheckFailure: ALL_OLD`), else None."""

    def __init__(
        self,
        message: str,
        *,
        reasons: list[str | None],
        items: list[Item | None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.reasons = reasons
        self.items = items if items is not None else [None] * len(reasons)


class DynamoDBClient(AwsClient):
    service = "dynamodb"
    service_id = "DynamoDB"

    def error_from(self, operation: str, response: Response) -> AwsError:
        try:
            document = json.loads(response.body) if response.body else {}
        except ValueError:
            document = {}
        if not isinstance(document, dict):
            document = {}
        kind = str(document.get("__type") or response.headers.get("x-amzn-errortype", ""))
        code = kind.rsplit("#", 1)[-1].split(":", 1)[0] or str(response.status)
        message = str(
            document.get("message") or document.get("Message") or response.reason or "failed"
        )
        reasons = document.get("CancellationReasons")
        if code == "TransactionCanceledException" and isinstance(reasons, list):
            return TransactionCanceled(
                message,
                reasons=[_reason_code(reason) for reason in reasons],
                items=[_reason_item(reason) for reason in reasons],
                service=self.service,
                operation=operation,
                code=code,
                status=response.status,
                request_id=response.headers.get("x-amzn-requestid"),
            )
        return AwsError(
            message,
            service=self.service,
            operation=operation,
            code=code,
            status=response.status,
            request_id=response.headers.get("x-amzn-requestid"),
        )

    def check_response(self, response: Response) -> str | None:
        expected = response.headers.get("x-amz-crc32")
        if expected is not None and expected.isdigit():
            actual = zlib.crc32(response.body) & 0xFFFFFFFF
            if actual != int(expected):
                return f"the response body's CRC32 {actual} does not match x-amz-crc32 {expected}"
        return None

    def call(self, operation: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send one operation (`GetItem`, `Query`, `PutItem`, ...) and return its answer."""
        if not operation.isascii() or not operation.isalnum():
            raise ValueError(f"invalid DynamoDB operation name {operation!r}")
        body = json.dumps(request, separators=(",", ":")).encode()
        response = self.send(
            operation,
            "POST",
            "/",
            headers=(
                ("Content-Type", CONTENT_TYPE),
                ("X-Amz-Target", TARGET_PREFIX + operation),
            ),
            body=body,
        )
        if not response.body:
            return {}
        try:
            answer = json.loads(response.body)
        except ValueError:
            raise AwsError(
                f"the answer is not JSON: {response.body[:200]!r}",
                service=self.service,
                operation=operation,
            ) from None
        if not isinstance(answer, dict):
            raise AwsError("the answer is not a JSON object", service=self.service,
                           operation=operation)  # fmt: skip
        return answer

    def get_item(
        self,
        table: str,
        key: Mapping[str, Any],
        *,
        consistent_read: bool = False,
        projection: str | None = None,
        names: Mapping[str, str] | None = None,
    ) -> Item | None:
        """The item (typed attribute values) with this primary key, or None."""
        request: dict[str, Any] = {"TableName": table, "Key": dict(key)}
        if consistent_read:
            request["ConsistentRead"] = True
        if projection:
            request["ProjectionExpression"] = projection
        if names:
            request["ExpressionAttributeNames"] = dict(names)
        item = self.call("GetItem", request).get("Item")
        return item if isinstance(item, dict) else None

    def batch_get_item(
        self, request_items: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, list[Item]]:
        """Items per table for a `RequestItems` document, fetching `UnprocessedKeys` again (with
        backoff) until none are left; AwsError `UnprocessedKeys` if DynamoDB keeps some back."""
        found: dict[str, list[Item]] = {table: [] for table in request_items}
        pending: Mapping[str, Any] = request_items
        for round_number in range(UNPROCESSED_ROUNDS):
            answer = self.call("BatchGetItem", {"RequestItems": pending})
            for table, items in (answer.get("Responses") or {}).items():
                found.setdefault(table, []).extend(items)
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                return found
            time.sleep(min(self.config.max_delay, self.config.base_delay * 2**round_number))
        raise AwsError(
            f"DynamoDB left keys unprocessed after {UNPROCESSED_ROUNDS} rounds "
            f"(tables {sorted(pending)}): the table is throttling reads",
            service=self.service,
            operation="BatchGetItem",
            code="UnprocessedKeys",
        )

    def query(self, request: Mapping[str, Any], *, max_pages: int = 100) -> list[Item]:
        """Every item a `Query` request matches, following `LastEvaluatedKey` (a `Limit` in the
        request bounds the whole result, not each page)."""
        items: list[Item] = []
        limit = request.get("Limit")
        page_request = dict(request)
        for _ in range(max_pages):
            if limit is not None:
                page_request["Limit"] = int(limit) - len(items)
            answer = self.call("Query", page_request)
            items.extend(answer.get("Items") or [])
            last = answer.get("LastEvaluatedKey")
            if not last or (limit is not None and len(items) >= int(limit)):
                return items
            page_request["ExclusiveStartKey"] = last
        raise AwsError(
            f"the query matched more than {max_pages} pages; narrow it or raise max_pages",
            service=self.service,
            operation="Query",
            code="TooManyPages",
        )


def _reason_code(reason: Any) -> str | None:
    code = reason.get("Code") if isinstance(reason, dict) else None
    return None if code in (None, "", "None") else str(code)


def _reason_item(reason: Any) -> Item | None:
    item = reason.get("Item") if isinstance(reason, dict) else None
    return item if isinstance(item, dict) else None


# Typed attribute values ------------------------------------------------------------------------


def to_attribute(value: Any) -> dict[str, Any]:
    """A Python value as a DynamoDB attribute value (numbers as strings, as the API wants)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, Decimal)):
        return {"N": str(value)}
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("DynamoDB numbers must be finite")
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (bytes, bytearray)):
        return {"B": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [to_attribute(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        if value and all(isinstance(v, str) for v in value):
            return {"SS": sorted(value)}
        if value and all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)
                         for v in value):  # fmt: skip
            return {"NS": sorted(str(v) for v in value)}
        raise ValueError("a set must be a non-empty set of strings or of numbers")
    raise TypeError(f"no DynamoDB type for {type(value).__name__}")


def from_attribute(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as Python: numbers become int when integral, else float."""
    if len(attribute) != 1:
        raise ValueError(f"not a typed attribute value: {dict(attribute)!r}")
    ((kind, value),) = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        return _number(value)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "B":
        return base64.b64decode(value)
    if kind == "M":
        return {k: from_attribute(v) for k, v in value.items()}
    if kind == "L":
        return [from_attribute(v) for v in value]
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {_number(v) for v in value}
    if kind == "BS":
        return {base64.b64decode(v) for v in value}
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def to_item(values: Mapping[str, Any]) -> Item:
    return {name: to_attribute(value) for name, value in values.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: from_attribute(value) for name, value in item.items()}
