"""What a served version's behaviour metrics count, and what its manifest says it should do."""

from __future__ import annotations

import math
import re
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lambdas.inference.app import BehaviourLine, emf_line
from sds.kernel.behaviour import (
    BEHAVIOUR_METRICS,
    FLAGGED,
    PREDICTIONS,
    SCORE_BOUNDS,
    SCORE_BUCKETS,
    VERSION_DIMENSIONS,
    behaviour_counts,
    expected_alert_rate,
    holdout_behaviour,
    version_dimensions,
)


def histogram(counts: dict[str, int]) -> list[int]:
    return [counts[name] for name in SCORE_BUCKETS]


def test_a_score_on_an_edge_counts_in_the_bucket_above_and_one_in_the_last() -> None:
    # Given a score at each bound: 0, every inner edge, and 1
    scores = list(SCORE_BOUNDS)

    counts = behaviour_counts(scores, threshold=0.5)

    # Then bucket i holds [edge i, edge i+1): each edge opens its bucket, and 1 closes the last
    assert histogram(counts) == [1] * (len(SCORE_BUCKETS) - 1) + [2]
    assert counts[PREDICTIONS] == len(scores)


def test_flagged_counts_scores_at_or_above_the_threshold_as_the_response_decides() -> None:
    counts = behaviour_counts([0.2, 0.7, 0.7000001, 0.69999], threshold=0.7)

    assert (counts[PREDICTIONS], counts[FLAGGED]) == (4, 2)


@given(
    scores=st.lists(
        st.one_of(st.floats(0, 1), st.sampled_from(SCORE_BOUNDS)), min_size=1, max_size=100
    ),
    threshold=st.one_of(st.floats(0, 1), st.sampled_from(SCORE_BOUNDS)),
)
def test_every_score_counts_once_where_the_bucket_rule_and_the_response_put_it(
    scores: list[float], threshold: float
) -> None:
    # Given any batch (edges and the threshold included)
    counts = behaviour_counts(scores, threshold)
    # Then each bucket holds the scores in [low, high) (the last one closed), as written out
    for name, (low, high) in zip(SCORE_BUCKETS, pairwise(SCORE_BOUNDS), strict=True):
        last = high == SCORE_BOUNDS[-1]
        assert counts[name] == sum(low <= s < high or (last and s == high) for s in scores)
    # And flagged is what the response calls is_fraud
    assert counts[FLAGGED] == sum(score >= threshold for score in scores)
    assert counts[PREDICTIONS] == sum(histogram(counts)) == len(scores)


_TIMESTAMP = re.compile(rb'^\{"_aws":\{"Timestamp":(\d+),')
_SCORES = st.one_of(st.floats(0, 1), st.sampled_from(SCORE_BOUNDS))


def _without_timestamp(line: bytes) -> tuple[int, bytes]:
    found = _TIMESTAMP.match(line)
    assert found is not None, line[:60]
    return int(found[1]), line[found.end() :]


@given(
    scores=st.one_of(st.lists(_SCORES, min_size=1, max_size=1), st.lists(_SCORES, max_size=40)),
    threshold=_SCORES,
    environment=st.sampled_from(["dev", "prod", "100%", 'q"uote', "é"]),
    version=st.integers(1, 10**6),
)
def test_the_rendered_behaviour_line_is_the_emf_line_of_the_counts_byte_for_byte(
    scores: list[float], threshold: float, environment: str, version: int
) -> None:
    # Given a version's dimensions, with characters JSON escapes and a % (the template's own)
    dimensions = version_dimensions(environment=environment, model="fraud", version=version)
    # When a request's line is rendered from the version's template
    rendered = BehaviourLine(dimensions).render(scores, threshold)
    # Then it is the line the generic writer makes from the counts, but for the clock's reading
    expected = emf_line(behaviour_counts(scores, threshold), dimensions)
    (at, after), (expected_at, expected_after) = map(_without_timestamp, (rendered, expected))
    assert after == expected_after
    assert abs(at - expected_at) < 60_000


def test_dimensions_that_clash_with_the_lines_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="clash"):
        BehaviourLine({"Predictions": "x"})


def test_a_request_names_every_metric_in_a_fixed_order_within_the_format_limits() -> None:
    counts = behaviour_counts([0.0004], threshold=0.5)

    assert list(counts) == list(BEHAVIOUR_METRICS)
    assert histogram(counts) == [1] + [0] * (len(SCORE_BUCKETS) - 1)
    # An EMF directive holds at most 100 metrics and a dimension set 30 keys
    assert len(BEHAVIOUR_METRICS) <= 100 and len(VERSION_DIMENSIONS) <= 30
    assert all(1 <= len(name) <= 255 and name.isascii() for name in BEHAVIOUR_METRICS)
    assert version_dimensions(environment="prod", model="fraud", version=12) == {
        "Environment": "prod",
        "Model": "fraud",
        "ModelVersion": "12",
    }


def test_the_holdout_behaviour_is_the_fraction_flagged_and_the_histogram() -> None:
    scores = [0.0001] * 90 + [0.3] * 7 + [0.995] * 3

    behaviour = holdout_behaviour(scores, threshold=0.3)

    assert behaviour["alert_rate"] == pytest.approx(0.10)
    assert (behaviour["flagged"], behaviour["holdout_events"]) == (10, 100)
    assert behaviour["score_histogram"]["bounds"] == list(SCORE_BOUNDS)
    assert behaviour["score_histogram"]["counts"] == [90, 0, 0, 0, 7, 0, 0, 0, 3, 0]


def test_an_empty_holdout_has_no_behaviour_to_record() -> None:
    with pytest.raises(ValueError, match="holdout is empty"):
        holdout_behaviour([], threshold=0.5)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({"behaviour": {"alert_rate": 0.0125}, "metrics": {"alert_rate": 0.01}}, 0.0125),
        # A manifest written before sds recorded behaviour: the rate the threshold was chosen for
        ({"metrics": {"alert_rate": 0.01}}, 0.01),
        ({"metrics": {"alert_rate": 1}}, 1.0),
        ({}, None),
        ({"metrics": {}}, None),
        ({"behaviour": {"alert_rate": 0}}, None),
        ({"behaviour": {"alert_rate": 1.5}}, None),
        ({"behaviour": {"alert_rate": math.nan}}, None),
        ({"behaviour": {"alert_rate": True}}, None),
        ({"behaviour": {"alert_rate": "0.01"}}, None),
        # A behaviour block that says nothing about the rate does not fall back to a guess
        ({"behaviour": {"alert_rate": None}, "metrics": {"alert_rate": 0.01}}, None),
        ({"behaviour": "broken", "metrics": {"alert_rate": 0.01}}, 0.01),
    ],
)
def test_the_expected_alert_rate_is_read_from_the_manifest_or_is_unknown(
    manifest: dict[str, Any], expected: float | None
) -> None:
    assert expected_alert_rate(manifest) == expected
