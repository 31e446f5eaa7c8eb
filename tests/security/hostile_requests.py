"""Hypothesis strategies for hostile API Gateway proxy events, each with the answer it must get.

Every generated `Case` names its category (what kind of attack it is), the exact status code the
handler must answer and, for 400s, the fields the problem list must name. The checks shared by
every answer (JSON body, `error` + `message`, never a 5xx) live in `check_answer`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from sds.kernel.features import CURRENCIES, FIELD_NAMES, FIELDS, MERCHANT_CATEGORIES

ALLOWED_STATUSES = {200, 400, 404, 405, 413, 415}


@dataclass(frozen=True)
class Case:
    category: str
    event: Any
    status: int
    fields: tuple[str, ...] = ()  # problem fields a 400 must name (prefixes)
    error: str | None = None  # the error code the answer must carry
    n_events: int = 0  # predictions a 200 must return
    note: str = field(default="", compare=False)

    def __repr__(self) -> str:
        # Bodies reach hundreds of kB: a failure report needs the start, not all of it.
        return f"Case({self.category!r}, status={self.status}, event={self.event!r:.600})"


def proxy(
    body: Any,
    *,
    method: str = "POST",
    path: str = "/predict",
    content_type: str | None = "application/json",
    encoded: Any = False,
    headers: Any = None,
) -> dict[str, Any]:
    if headers is None:
        headers = {} if content_type is None else {"Content-Type": content_type}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "requestContext": {"stage": "security", "requestId": "fuzz"},
        "body": body,
        "isBase64Encoded": encoded,
    }


def dumps(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"))


# Events ---------------------------------------------------------------------------------------

# Sampled rather than regex-generated: generation, not the handler, dominates the run time.
countries = st.sampled_from(
    ["US", "DE", "GB", "BR", "FR", "IN", "JP", "NG", "CH", "SE", "MX", "SG", "AU", "CA", "ZZ", "QQ"]
)
event_ids = st.text(min_size=1, max_size=16) | st.sampled_from(
    ["x" * 128, "\u00e9" * 128, "\U0001f600" * 128, "<script>", "'; DROP TABLE x; --", "\x00"]
)
valid_event = st.fixed_dictionaries(
    {
        "event_id": event_ids,
        "account_id": event_ids,
        "occurred_at": st.sampled_from(
            ["2026-03-01T12:00:00Z", "2025-12-31T23:59:59.999999-08:00"]
        ),
        "amount": st.floats(0, 1e9, allow_nan=False) | st.integers(0, 10**9),
        "currency": st.sampled_from(CURRENCIES),
        "merchant_category": st.sampled_from(MERCHANT_CATEGORIES),
        "country": countries,
        "card_country": countries,
        "hour_of_day": st.integers(0, 23),
        "account_age_days": st.integers(0, 36_500),
        "is_new_device": st.booleans(),
    },
    optional={"type": st.just("payment")},
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
not_number = (
    st.none()
    | st.booleans()
    | st.text(max_size=12)
    | st.lists(json_scalars, max_size=2)
    | st.dictionaries(st.text(max_size=4), json_scalars, max_size=2)
)
SPEC = {f.name: f for f in FIELDS}


def wrong_value(name: str) -> st.SearchStrategy[Any]:
    """A JSON value of the wrong type, or out of range, for field `name`."""
    spec = SPEC[name]
    if spec.kind in ("number", "integer"):
        low = spec.minimum if spec.minimum is not None else 0
        # -0.0 compares equal to 0: stay clear of the bound.
        out_of_range = st.floats(max_value=low - 1e-6, allow_nan=False, allow_infinity=False)
        if spec.maximum is not None:
            out_of_range |= st.floats(
                min_value=spec.maximum, exclude_min=True, allow_nan=False, allow_infinity=False
            )
            out_of_range |= st.integers(min_value=int(spec.maximum) + 1)
        out_of_range |= st.integers(max_value=int(low) - 1)
        if spec.kind == "integer":
            fractional = st.floats(
                allow_nan=False, allow_infinity=False
            )  # 3.0 is not an integer either
            return not_number | out_of_range | fractional
        return not_number | out_of_range
    if spec.kind == "boolean":
        return (
            st.none()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(max_size=8)
            | st.just("true")
        )
    if spec.kind == "enum":
        return (st.none() | st.integers() | st.booleans() | st.text(max_size=50)).filter(
            lambda v: v not in spec.allowed
        ) | st.sampled_from([a.swapcase() for a in spec.allowed] + [" " + spec.allowed[0]])
    if spec.kind == "id":
        return (
            st.none()
            | st.integers()
            | st.booleans()
            | st.just("")
            | st.text(min_size=129, max_size=140)
        )
    if spec.kind == "time":
        return (
            st.none()
            | st.integers()
            | st.text(max_size=12)
            | st.sampled_from(
                [
                    "2026-03-01T12:00:00",  # no zone
                    "1999-12-31T23:59:59Z",  # out of range
                    "2026-02-30T00:00:00Z",  # not a date
                    "2026-03-01 12:00:00Z",
                ]
            )
        )
    # country
    return (st.none() | st.integers() | st.text(max_size=4)).filter(
        lambda v: (
            not (isinstance(v, str) and len(v) == 2 and v.isascii() and v.isalpha() and v.isupper())
        )
    )


WRONG_VALUES = {name: wrong_value(name) for name in FIELD_NAMES}
NUMERIC_FIELDS = [f.name for f in FIELDS if f.kind in ("number", "integer")]
# Strategies are built once: building them inside every draw costs more than the request.
BATCH = st.lists(valid_event, min_size=1, max_size=4)
INDEX = st.integers(0, 3)
FIELD = st.sampled_from(FIELD_NAMES)
FIELD_SETS = st.sets(FIELD, min_size=1)


NOT_DICT = json_values.filter(lambda v: not isinstance(v, dict))
NOT_LIST = json_values.filter(lambda v: not isinstance(v, list))
NOT_STRING = json_values.filter(lambda v: not isinstance(v, str) and v is not None)
ANY_BODY = st.dictionaries(st.text(max_size=8), json_values, max_size=4) | json_values


def pick(draw: st.DrawFn, items: list[Any]) -> int:
    """An index into `items` (never empty), drawn without building a strategy per call."""
    return draw(INDEX) % len(items)


# Categories -------------------------------------------------------------------------------------


def cases(max_events: int, max_body_bytes: int) -> st.SearchStrategy[Case]:
    @st.composite
    def valid(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        content_type = draw(
            st.sampled_from(
                [
                    "application/json",
                    "application/json; charset=utf-8",
                    "APPLICATION/JSON",
                    "application/problem+json",
                    None,
                ]
            )
        )
        return Case(
            "valid",
            proxy(dumps({"events": events}), content_type=content_type),
            200,
            n_events=len(events),
        )

    @st.composite
    def wrong_type(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        index = pick(draw, events)
        name = draw(FIELD)
        events[index][name] = draw(WRONG_VALUES[name])
        return Case(
            "wrong type or range",
            proxy(dumps({"events": events})),
            400,
            fields=(f"events[{index}].{name}",),
            error="invalid_request",
        )

    @st.composite
    def missing(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        index = pick(draw, events)
        names = draw(FIELD_SETS)
        for name in names:
            del events[index][name]
        return Case(
            "missing fields",
            proxy(dumps({"events": events})),
            400,
            fields=tuple(f"events[{index}].{n}" for n in sorted(names)),
            error="invalid_request",
        )

    @st.composite
    def extra(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        document: dict[str, Any] = {"events": events}
        key = draw(
            st.text(min_size=1, max_size=60).filter(
                lambda k: k not in (*FIELD_NAMES, "type", "events")
            )
        )
        value = draw(json_values)
        if draw(st.booleans()):
            index = pick(draw, events)
            events[index][key] = value
            where = f"events[{index}].{key[:40]}"
        else:
            document[key] = value
            where = key[:40]
        return Case(
            "extra fields", proxy(dumps(document)), 400, fields=(where,), error="invalid_request"
        )

    @st.composite
    def nan_infinity(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        index = pick(draw, events)
        name = draw(st.sampled_from(NUMERIC_FIELDS))
        events[index][name] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        return Case(
            "NaN/Infinity",
            proxy(json.dumps({"events": events}, allow_nan=True)),
            400,
            error="invalid_json",
        )

    @st.composite
    def huge(draw: st.DrawFn) -> Case:
        events = draw(BATCH)
        index = pick(draw, events)
        name = draw(st.sampled_from(NUMERIC_FIELDS))
        text = dumps({"events": events})
        literal = draw(
            st.sampled_from(
                [
                    "1e309",
                    "-1e400",
                    "1e999999",
                    "9" * 400,
                    "-" + "9" * 4000,
                    "1" + "0" * 5000,
                    "1.7976931348623157e309",
                    "123456789012345678901234567890",
                ]
            )
        )
        marker = "__HUGE__"
        events[index][name] = marker
        text = dumps({"events": events}).replace(f'"{marker}"', literal)
        # Past Python's int digit limit (4300) too: the field is named, as for any other
        return Case(
            "huge numbers",
            proxy(text),
            400,
            fields=(f"events[{index}].{name}",),
            error="invalid_request",
        )

    @st.composite
    def deep(draw: st.DrawFn) -> Case:
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        # Past the parser's recursion limit (about 1000) but within the body limit.
        depth = draw(st.integers(2, (max_body_bytes - 4096) // len(opener + closer)))
        inner = opener * depth + "1" + closer * depth
        where = draw(st.sampled_from(["top", "events", "event", "field"]))
        if where == "top":
            text = inner
        elif where == "events":
            text = '{"events":' + inner + "}"
        else:
            event = draw(valid_event)
            name = "amount" if where == "field" else "nested"
            event[name] = "__DEEP__"
            text = dumps({"events": [event]}).replace('"__DEEP__"', inner)
        return Case("deep nesting", proxy(text), 400, note=f"depth {depth}")

    @st.composite
    def non_utf8(draw: st.DrawFn) -> Case:
        def invalid(data: bytes) -> bool:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return True
            return False

        if draw(st.booleans()):
            data = draw(st.binary(min_size=1, max_size=512).filter(invalid))
            return Case(
                "non-UTF-8",
                proxy(base64.b64encode(data).decode(), encoded=True),
                400,
                error="invalid_body",
            )
        good = dumps({"events": draw(BATCH)})
        cut = draw(st.integers(0, len(good)))
        surrogate = draw(st.sampled_from(["\ud800", "\udfff", "\udc80x"]))
        return Case(
            "non-UTF-8", proxy(good[:cut] + surrogate + good[cut:]), 400, error="invalid_body"
        )

    @st.composite
    def base64_bodies(draw: st.DrawFn) -> Case:
        kind = draw(st.sampled_from(["valid", "not base64", "not json"]))
        if kind == "valid":
            events = draw(BATCH)
            body = base64.b64encode(dumps({"events": events}).encode()).decode()
            return Case("base64 bodies", proxy(body, encoded=True), 200, n_events=len(events))
        if kind == "not base64":
            body = draw(st.text(min_size=1, max_size=200).filter(lambda t: not _is_base64(t)))
            return Case("base64 bodies", proxy(body, encoded=True), 400, error="invalid_body")
        garbage = draw(st.binary(min_size=1, max_size=200).filter(lambda b: not _is_json(b)))
        return Case("base64 bodies", proxy(base64.b64encode(garbage).decode(), encoded=True), 400)

    @st.composite
    def content_type(draw: st.DrawFn) -> Case:
        media = draw(
            st.sampled_from(
                [
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "application/xml",
                    "text/json",
                    "application/jsonp",
                    "*/*",
                ]
            )
            | st.from_regex(r"\A[a-z]{1,10}/[a-z.+-]{1,15}\Z").filter(
                lambda m: m != "application/json" and not m.endswith("+json")
            )
        )
        events = draw(BATCH)
        header = draw(st.sampled_from(["Content-Type", "content-type", "CONTENT-TYPE"]))
        return Case(
            "wrong content type",
            proxy(
                dumps({"events": events}),
                headers={header: media + draw(st.sampled_from(["", "; charset=utf-8"]))},
            ),
            415,
            error="unsupported_media_type",
        )

    @st.composite
    def empty(draw: st.DrawFn) -> Case:
        body = draw(st.sampled_from([None, ""]))
        encoded = draw(st.booleans())
        return Case("empty body", proxy(body, encoded=encoded), 400, error="empty_body")

    @st.composite
    def oversized(draw: st.DrawFn) -> Case:
        extra_bytes = draw(st.integers(1, max_body_bytes))
        events = draw(BATCH)
        text = dumps({"events": events, "padding": "x" * (max_body_bytes + extra_bytes)})
        if draw(st.booleans()):
            return Case(
                "oversized body",
                proxy(base64.b64encode(text.encode()).decode(), encoded=True),
                413,
                error="payload_too_large",
            )
        return Case("oversized body", proxy(text), 413, error="payload_too_large")

    @st.composite
    def batch_limits(draw: st.DrawFn) -> Case:
        kind = draw(st.sampled_from(["none", "too many", "not a list", "absent"]))
        if kind == "none":
            document: Any = {"events": []}
        elif kind == "too many":
            # Short ids: the batch must be too long, not the body too large.
            event = {**draw(valid_event), "event_id": "e", "account_id": "a"}
            document = {"events": [event] * draw(st.integers(max_events + 1, max_events * 3))}
        elif kind == "not a list":
            document = {"events": draw(NOT_LIST)}
        else:
            document = {}
        return Case(
            "batch limits", proxy(dumps(document)), 400, fields=("events",), error="invalid_request"
        )

    @st.composite
    def not_object(draw: st.DrawFn) -> Case:
        value = draw(NOT_DICT)
        return Case("body not an object", proxy(dumps(value)), 400, error="invalid_request")

    @st.composite
    def random_json(draw: st.DrawFn) -> Case:
        value = draw(ANY_BODY)
        return Case("random JSON", proxy(dumps(value)), 400)

    @st.composite
    def random_text(draw: st.DrawFn) -> Case:
        text = draw(
            st.text(min_size=1, max_size=300).filter(
                lambda t: not _is_json(t.encode("utf-8", "surrogatepass"))
            )
        )
        return Case("random text", proxy(text), 400)

    @st.composite
    def malformed_proxy(draw: st.DrawFn) -> Case:
        kind = draw(
            st.sampled_from(
                [
                    "not a mapping",
                    "no path",
                    "unknown route",
                    "wrong method",
                    "headers not a mapping",
                    "body not a string",
                    "odd isBase64Encoded",
                ]
            )
        )
        good = dumps({"events": draw(BATCH)})
        if kind == "not a mapping":
            return Case(
                "malformed proxy event",
                draw(NOT_DICT),
                400,
                error="bad_event",
            )
        if kind == "no path":
            event = proxy(good)
            del event[draw(st.sampled_from(["path", "httpMethod"]))]
            return Case("malformed proxy event", event, 400, error="bad_event")
        if kind == "unknown route":
            path = draw(
                st.text(max_size=300).filter(
                    lambda p: "/" + p.strip("/") not in ("/predict", "/model", "/health")
                )
            )
            return Case("malformed proxy event", proxy(good, path=path), 404, error="not_found")
        if kind == "wrong method":
            method = draw(
                st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
                | st.text(max_size=10).filter(lambda m: m.upper() != "POST")
            )
            return Case(
                "malformed proxy event", proxy(good, method=method), 405, error="method_not_allowed"
            )
        if kind == "headers not a mapping":
            events = draw(BATCH)
            return Case(
                "malformed proxy event",
                proxy(
                    dumps({"events": events}),
                    headers=draw(NOT_DICT),
                ),
                200,
                n_events=len(events),
            )
        if kind == "body not a string":
            body = draw(NOT_STRING)
            return Case("malformed proxy event", proxy(body), 400, error="bad_event")
        events = draw(BATCH)
        flag = draw(st.sampled_from(["true", 1, "yes", None, [], {}]))
        return Case(
            "malformed proxy event",
            proxy(dumps({"events": events}), encoded=flag),
            200,
            n_events=len(events),
        )

    return st.one_of(
        valid(),
        wrong_type(),
        missing(),
        extra(),
        nan_infinity(),
        huge(),
        deep(),
        non_utf8(),
        base64_bodies(),
        content_type(),
        empty(),
        oversized(),
        batch_limits(),
        not_object(),
        random_json(),
        random_text(),
        malformed_proxy(),
    )


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    return True


# Checks -----------------------------------------------------------------------------------------


def check_answer(case: Case, response: Any, *, version: int) -> dict[str, Any]:
    """Assert everything a client may rely on; return the parsed body."""
    assert isinstance(response, Mapping), f"{case.category}: not a proxy response: {response!r}"
    status = response["statusCode"]
    assert status in ALLOWED_STATUSES, (
        f"{case.category}: status {status}: {response.get('body')!r:.300}"
    )
    assert status < 500
    assert response["isBase64Encoded"] is False
    headers = response["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Model-Version"] == str(version)
    document = json.loads(response["body"])
    assert isinstance(document, dict)
    assert status == case.status, (
        f"{case.category} {case.note}: expected {case.status}, got {status}: {response['body']:.400}"
    )
    if status == 200:
        predictions = document["predictions"]
        assert len(predictions) == case.n_events
        assert document["model"]["version"] == version
        for prediction in predictions:
            assert 0.0 <= prediction["fraud_probability"] <= 1.0
            assert isinstance(prediction["is_fraud"], bool)
        return document
    assert isinstance(document.get("error"), str) and document["error"], document
    assert isinstance(document.get("message"), str) and document["message"], document
    if case.error is not None:
        assert document["error"] == case.error, (case.category, document)
    if document["error"] == "invalid_request":
        problems = document["problems"]
        assert problems, document
        for problem in problems:
            assert set(problem) == {"field", "reason"}
            assert isinstance(problem["field"], str) and problem["field"]
            assert isinstance(problem["reason"], str) and problem["reason"]
        named = [p["field"] for p in problems]
        for wanted in case.fields:
            assert any(f.startswith(wanted) or wanted.startswith(f) for f in named), (
                f"{case.category}: no problem names {wanted!r}: {problems}"
            )
    if status == 405:
        assert headers["Allow"] == "POST"
    return document
