"""What CloudWatch makes of the handler's metric lines and of an alarm as synthesized, for the
simulated runs of the alert-rate alarms (no AWS account, no second formula).

- `read_emf(lines)`: each line is checked against the Embedded Metric Format specification
  (CloudWatch User Guide, "Specification: Embedded metric format": the `_aws` member, at most 100
  metrics per directive and 30 dimensions per dimension set, every referenced member present at
  the root with the right type) and turned into the datapoints CloudWatch extracts from it, one
  per metric and dimension set.
- `Alarm.from_template(properties)`: an `AWS::CloudWatch::Alarm` exactly as the template holds
  it. Each `MetricStat` is the statistic of the datapoints with its namespace, name and exact
  dimensions, per period; the `Expression` is parsed from the template's text and evaluated per
  period (the subset of metric math the templates use: numbers, metric ids, arithmetic,
  comparisons, AND/OR/NOT and IF; anything else is refused, so a changed expression fails loudly
  instead of being evaluated wrongly); then "M out of N" with the alarm's TreatMissingData.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
MAX_METRICS = 100
MAX_DIMENSIONS = 30
MAX_VALUES = 100


@dataclass(frozen=True)
class Datapoint:
    timestamp_ms: int
    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # sorted (name, value) pairs
    value: float


class EmfError(AssertionError):
    """A line CloudWatch would not turn into metrics."""


def _check(condition: bool, line: int, problem: str) -> None:
    if not condition:
        raise EmfError(f"line {line}: {problem}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_emf(lines: Iterable[str]) -> list[Datapoint]:
    """The datapoints of every EMF line (other log lines are skipped, as CloudWatch does)."""
    found: list[Datapoint] = []
    for number, line in enumerate(lines, start=1):
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        found.extend(_datapoints(document, number))
    return found


def _datapoints(document: dict[str, Any], line: int) -> list[Datapoint]:
    metadata = document["_aws"]
    _check(isinstance(metadata, dict), line, "_aws must be an object")
    _check(set(metadata) == {"Timestamp", "CloudWatchMetrics"}, line, f"_aws has {set(metadata)}")
    timestamp = metadata["Timestamp"]
    _check(isinstance(timestamp, int) and timestamp > 0, line, "Timestamp must be epoch ms")
    directives = metadata["CloudWatchMetrics"]
    _check(isinstance(directives, list) and directives, line, "CloudWatchMetrics must be a list")
    found = []
    for directive in directives:
        _check(
            set(directive) == {"Namespace", "Dimensions", "Metrics"},
            line,
            f"a directive has {sorted(directive)}",
        )
        namespace = directive["Namespace"]
        _check(
            isinstance(namespace, str) and 1 <= len(namespace) <= 255 and namespace[0] != ":",
            line,
            f"bad Namespace {namespace!r}",
        )
        sets = directive["Dimensions"]
        _check(isinstance(sets, list), line, "Dimensions must be a list of dimension sets")
        for names in sets:
            _check(
                isinstance(names, list) and len(names) <= MAX_DIMENSIONS,
                line,
                f"a dimension set holds at most {MAX_DIMENSIONS} names: {names}",
            )
            for name in names:
                value = document.get(name)
                _check(
                    isinstance(value, str)
                    and 1 <= len(value) <= 1024
                    and value.isascii()
                    and value.strip() != "",
                    line,
                    f"dimension {name!r} must be a non-empty ASCII string at the root",
                )
        metrics = directive["Metrics"]
        _check(
            isinstance(metrics, list) and len(metrics) <= MAX_METRICS,
            line,
            f"a directive holds at most {MAX_METRICS} metrics",
        )
        names_seen: set[str] = set()
        for metric in metrics:
            name = metric.get("Name")
            _check(
                isinstance(name, str) and 1 <= len(name) <= 255 and name not in names_seen,
                line,
                f"bad or repeated metric name {name!r}",
            )
            names_seen.add(name)
            _check(metric.get("Unit", "None") in UNITS, line, f"unknown unit {metric.get('Unit')}")
            _check(set(metric) <= {"Name", "Unit", "StorageResolution"}, line, f"metric {metric}")
            value = document.get(name)
            values = value if isinstance(value, list) else [value]
            _check(
                0 < len(values) <= MAX_VALUES and all(_number(v) for v in values),
                line,
                f"metric {name!r} must be a number or up to {MAX_VALUES} numbers at the root",
            )
            for names in sets or [[]]:
                dimensions = tuple(sorted((n, document[n]) for n in names))
                found.extend(
                    Datapoint(timestamp, namespace, name, dimensions, float(v)) for v in values
                )
    return found


# Metric math ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>>=|<=|==|!=|&&|\|\||[-+*/^()<>,!]))"
)
_BINARY = {
    "OR": 1, "||": 1, "AND": 2, "&&": 2,
    ">=": 3, "<=": 3, ">": 3, "<": 3, "==": 3, "!=": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "^": 7,
}  # fmt: skip

Value = float | None  # None: no datapoint in that period
Node = Callable[[Mapping[str, Value]], Value]


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text.rstrip()):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise NotImplementedError(f"metric math the model does not read: {text[position:]!r}")
        tokens.append(match.group(match.lastgroup or ""))
        position = match.end()
    return tokens


def _apply(op: str, left: Value, right: Value) -> Value:
    if left is None or right is None:
        return None
    if op in ("/",) and right == 0:
        return None  # CloudWatch drops a datapoint divided by zero
    result: float | bool = {
        "+": lambda: left + right,
        "-": lambda: left - right,
        "*": lambda: left * right,
        "/": lambda: left / right,
        "^": lambda: left**right,
        ">=": lambda: left >= right,
        "<=": lambda: left <= right,
        ">": lambda: left > right,
        "<": lambda: left < right,
        "==": lambda: left == right,
        "!=": lambda: left != right,
        "AND": lambda: bool(left) and bool(right),
        "&&": lambda: bool(left) and bool(right),
        "OR": lambda: bool(left) or bool(right),
        "||": lambda: bool(left) or bool(right),
    }[op]()
    return float(result)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Node:
        node = self.expression(0)
        if self.at != len(self.tokens):
            raise NotImplementedError(f"unread metric math after {self.tokens[: self.at]}")
        return node

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise NotImplementedError(f"expected {expected!r} in {self.text!r}, got {token!r}")
        self.at += 1
        return token

    def expression(self, floor: int) -> Node:
        left = self.unary()
        while (op := self.peek()) in _BINARY and _BINARY[op] > floor:
            self.take()
            # `^` binds right to left, everything else left to right
            right = self.expression(_BINARY[op] - (1 if op == "^" else 0))
            left = (lambda o, a, b: lambda env: _apply(o, a(env), b(env)))(op, left, right)
        return left

    def unary(self) -> Node:
        token = self.peek()
        if token == "-":
            self.take()
            inner = self.unary()
            return lambda env: None if (v := inner(env)) is None else -v
        if token in ("NOT", "!"):
            self.take()
            inner = self.expression(_BINARY["AND"])
            return lambda env: None if (v := inner(env)) is None else float(not v)
        return self.atom()

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            inner = self.expression(0)
            self.take(")")
            return inner
        if re.fullmatch(r"\d.*", token):
            number = float(token)
            return lambda env: number
        if self.peek() == "(":
            return self.call(token)
        if not re.fullmatch(r"[a-z]\w*", token):
            raise NotImplementedError(f"{token!r} is not a metric id (ids start lower case)")
        return lambda env: env[token]

    def call(self, function: str) -> Node:
        self.take("(")
        args = [self.expression(0)]
        while self.peek() == ",":
            self.take(",")
            args.append(self.expression(0))
        self.take(")")
        if function == "IF" and len(args) in (2, 3):
            condition, then = args[0], args[1]
            otherwise = args[2] if len(args) == 3 else (lambda env: None)

            def branch(env: Mapping[str, Value]) -> Value:
                chosen = condition(env)
                if chosen is None:
                    return None
                return then(env) if chosen else otherwise(env)

            return branch
        raise NotImplementedError(f"metric math function {function} is not modelled")


def parse_expression(text: str) -> Node:
    return _Parser(text).parse()


# Alarms ----------------------------------------------------------------------------------------

Series = dict[int, float]  # period start (epoch seconds) -> statistic
SeriesSource = Callable[[Mapping[str, Any], int], Series]


def statistic(datapoints: Iterable[Datapoint], stat: str, period: int) -> Series:
    grouped: dict[int, list[float]] = defaultdict(list)
    for point in datapoints:
        grouped[point.timestamp_ms // 1000 // period * period].append(point.value)
    reducers: dict[str, Callable[[list[float]], float]] = {
        "Sum": sum,
        "SampleCount": lambda values: float(len(values)),
        "Average": lambda values: sum(values) / len(values),
        "Minimum": min,
        "Maximum": max,
    }
    if stat not in reducers:
        raise NotImplementedError(f"statistic {stat} is not modelled")
    return {start: reducers[stat](values) for start, values in grouped.items()}


def exact_metric(datapoints: list[Datapoint]) -> SeriesSource:
    """CloudWatch's own matching: the metric with exactly this namespace, name and dimensions."""

    def source(stat: Mapping[str, Any], period: int) -> Series:
        metric = stat["Metric"]
        dimensions = tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
        return statistic(
            (
                p
                for p in datapoints
                if (p.namespace, p.name, p.dimensions)
                == (metric["Namespace"], metric["MetricName"], dimensions)
            ),
            stat["Stat"],
            period,
        )

    return source


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanThreshold": lambda value, threshold: value > threshold,
    "GreaterThanOrEqualToThreshold": lambda value, threshold: value >= threshold,
    "LessThanThreshold": lambda value, threshold: value < threshold,
    "LessThanOrEqualToThreshold": lambda value, threshold: value <= threshold,
}


@dataclass(frozen=True)
class Evaluation:
    at: int  # end of the last period evaluated (epoch seconds)
    values: tuple[Value, ...]  # the expression's value per period, oldest first
    breaching: int
    state: str  # ALARM or OK


@dataclass(frozen=True)
class Alarm:
    properties: Mapping[str, Any]

    @classmethod
    def from_template(cls, properties: Mapping[str, Any]) -> Alarm:
        if "Metrics" not in properties:
            raise NotImplementedError("only metric math alarms (Metrics) are modelled")
        if properties.get("TreatMissingData", "missing") not in ("notBreaching", "breaching"):
            raise NotImplementedError(f"TreatMissingData {properties.get('TreatMissingData')}")
        return cls(properties)

    @property
    def period(self) -> int:
        periods = {
            m["MetricStat"]["Period"] for m in self.properties["Metrics"] if "MetricStat" in m
        }
        if len(periods) != 1:
            raise NotImplementedError(f"metrics with different periods: {periods}")
        return periods.pop()

    def values(self, source: SeriesSource, starts: Iterable[int]) -> list[Value]:
        """The returned expression's value in each period starting at `starts`."""
        queries = self.properties["Metrics"]
        series = {
            q["Id"]: source(q["MetricStat"], self.period) for q in queries if "MetricStat" in q
        }
        expressions = {
            q["Id"]: parse_expression(q["Expression"]) for q in queries if "Expression" in q
        }
        (returned,) = [q["Id"] for q in queries if q.get("ReturnData", True)]
        values: list[Value] = []
        for start in starts:
            env: dict[str, Value] = {key: points.get(start) for key, points in series.items()}
            for key, node in expressions.items():
                env[key] = node(env)
            values.append(env[returned])
        return values

    def evaluate(self, source: SeriesSource, at: int) -> Evaluation:
        """The alarm's state when evaluated at `at` (epoch seconds): its last N whole periods."""
        period = self.period
        count = self.properties["EvaluationPeriods"]
        last = at // period * period
        starts = [last - period * i for i in range(count, 0, -1)]
        values = self.values(source, starts)
        compare = _COMPARISONS[self.properties["ComparisonOperator"]]
        missing_breaches = self.properties["TreatMissingData"] == "breaching"
        breaching = sum(
            missing_breaches if v is None else compare(v, self.properties["Threshold"])
            for v in values
        )
        needed = self.properties.get("DatapointsToAlarm", count)
        return Evaluation(last, tuple(values), breaching, "ALARM" if breaching >= needed else "OK")
