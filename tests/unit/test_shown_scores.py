"""How a score is shown beside its decision (`sds.kernel.serving.shown_scores`), the API's
fraud_probability and the rows of `sds score`: to 6 decimals, rounded toward the decision, so
that anyone recomputing `fraud_probability >= decision_threshold` from the output gets the
decisions it states. Held exactly to the decimal ceiling or floor of the score's own value, in
both paths (a call per score, numpy for a large request)."""

from __future__ import annotations

import math
import warnings
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sds.kernel.serving import SHOWN_IN_NUMPY_FROM, shown_scores

MILLIONTH = Fraction(1, 10**6)
SHORT = (0, SHOWN_IN_NUMPY_FROM - 1)  # a call per score
LONG = (SHOWN_IN_NUMPY_FROM, 3 * SHOWN_IN_NUMPY_FROM)  # numpy
SIZES = pytest.mark.parametrize("sizes", [SHORT, LONG], ids=["short", "long"])


def oracle(score: float, threshold: float) -> float:
    """The double nearest the 6-decimal ceiling of the score's exact value if it is flagged,
    its floor if not (`float` of a Fraction is correctly rounded)."""
    exact = Fraction(score) * 10**6
    whole = math.ceil(exact) if score >= threshold else math.floor(exact)
    return float(Fraction(whole, 10**6))


def float32(value: float) -> float:
    return float(np.float32(value))


def neighbours(value: float) -> list[float]:
    """A float32 value and the float32 values on either side of it."""
    single = np.float32(value)
    return [
        float(np.nextafter(single, np.float32(-np.inf))),
        float(single),
        float(np.nextafter(single, np.float32(np.inf))),
    ]


probabilities32 = st.floats(min_value=0.0, max_value=1.0, width=32)
# Scores on a 6-decimal boundary exactly (k/64), and halves (2k+1)/128 that round() sends to even
on_boundaries = st.integers(min_value=0, max_value=64).map(lambda k: k / 64)
halves = st.integers(min_value=0, max_value=63).map(lambda k: (2 * k + 1) / 128)


@st.composite
def scores_at_a_threshold(
    draw: st.DrawFn, sizes: tuple[int, int], scores: st.SearchStrategy[float]
) -> tuple[list[float], float]:
    """A float32 threshold (as a served score is), and scores among which it and its float32
    neighbours are likely."""
    threshold = draw(probabilities32 | on_boundaries | halves)
    near = st.sampled_from(neighbours(threshold))
    drawn = draw(st.lists(scores | near, min_size=sizes[0], max_size=sizes[1]))
    return drawn, threshold


def assert_shown_toward_the_decision(scores: list[float], threshold: float) -> None:
    shown = shown_scores(scores, threshold)
    assert len(shown) == len(scores)
    for score, value in zip(scores, shown, strict=True):
        # The decision recomputed from what is shown is the decision made on the score
        assert (value >= threshold) == (score >= threshold), (score, threshold, value)
        # It is the exact decimal ceiling (flagged) or floor, the same bits
        assert repr(value) == repr(oracle(score, threshold)), (score, threshold)
        assert abs(Fraction(value) - Fraction(score)) < MILLIONTH
        # and it is written with 6 decimals at most
        exponent = Decimal(repr(value)).as_tuple().exponent
        assert isinstance(exponent, int) and exponent >= -6, value


@SIZES
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_float32_score_shown_decides_as_the_score_does_at_any_float32_threshold(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    # Given float32 scores and a float32 threshold (a served score), the score itself and its
    # float32 neighbours among them, short lists and long ones (numpy's path)
    scores, threshold = data.draw(
        scores_at_a_threshold(sizes, probabilities32 | on_boundaries | halves)
    )
    # Then each shown score decides as its score does, and is the exact rounding toward it
    assert_shown_toward_the_decision(scores, threshold)


@SIZES
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_double_is_shown_as_the_exact_decimal_ceiling_or_floor(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    # Given doubles, among them those next to a multiple of 1e-6, whose product with 1e6
    # rounds onto the integer (where ceil(score * 1e6) alone would be wrong)
    millionths = st.integers(min_value=0, max_value=10**6).map(lambda k: k / 1e6)
    near_millionths = st.tuples(millionths, st.sampled_from([-1.0, 0.0, 2.0])).map(
        lambda pair: float(np.nextafter(pair[0], pair[1]))
    )
    doubles = st.floats(min_value=0.0, max_value=1.0) | near_millionths
    scores = data.draw(st.lists(doubles, min_size=sizes[0], max_size=sizes[1]))
    threshold = data.draw(doubles | st.sampled_from(scores or [0.5]))
    shown = shown_scores(scores, threshold)
    # Then each is the double nearest the exact 6-decimal rounding toward its decision
    assert [repr(x) for x in shown] == [repr(oracle(s, threshold)) for s in scores]
    assert [x >= threshold for x in shown] == [s >= threshold for s in scores]


# Scores no model gives: negative, above 1, beyond 1e302 (where the product with 1e6 overflows),
# the smallest subnormal, a negative zero
EXTREMES = [1e308, -1e308, 3.4e38, -2.5, 7.0000005, 5e-324, -5e-324, -0.0]


@SIZES
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_any_finite_double_is_shown_exactly_whatever_its_size(
    sizes: tuple[int, int], data: st.DataObject
) -> None:
    finite = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EXTREMES)
    scores = data.draw(st.lists(finite, min_size=sizes[0], max_size=sizes[1]))
    threshold = data.draw(finite | st.sampled_from(scores or [0.5]))
    shown = shown_scores(scores, threshold)
    assert [repr(x) for x in shown] == [repr(oracle(s, threshold)) for s in scores]
    assert [x >= threshold for x in shown] == [s >= threshold for s in scores]


@SIZES
def test_non_finite_scores_are_shown_as_round_left_them_without_a_warning(
    sizes: tuple[int, int],
) -> None:
    # Given NaN and infinities (no model gives one; the response writes them as null)
    scores = ([math.nan, math.inf, -math.inf, 0.25] * sizes[1])[: max(sizes[1], 4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shown = shown_scores(scores, 0.5)
    # Then each is what round(score, 6) gave it: itself
    for score, value in zip(scores, shown, strict=True):
        expected = round(score, 6)
        assert repr(value) == repr(expected), score
    assert len(shown) == len(scores) >= 4


@pytest.mark.parametrize("copies", [1, SHOWN_IN_NUMPY_FROM], ids=["short", "long"])
def test_a_score_at_a_threshold_that_rounds_down_is_shown_at_or_above_it(copies: int) -> None:
    # Given the demo's v1: its threshold is one of its served float32 scores, 0.690989077...,
    # which round(score, 6) showed as 0.690989, below the threshold it was flagged at
    threshold = float32(0.690989077)
    assert round(threshold, 6) < threshold
    below = float(np.nextafter(np.float32(threshold), np.float32(0)))
    # When that score and its float32 neighbour below are shown
    shown = shown_scores([threshold, below] * copies, threshold)
    # Then the flagged one shows at or above the threshold, the other below it
    assert shown[:2] == [0.69099, 0.690989]
    assert shown[0] >= threshold > shown[1]


@pytest.mark.parametrize("copies", [1, SHOWN_IN_NUMPY_FROM], ids=["short", "long"])
def test_a_score_just_below_a_6_digit_threshold_is_not_shown_equal_to_it(copies: int) -> None:
    # Given a threshold with 6 digits (0.5), and the float32 score just below it, which
    # round(score, 6) showed as 0.5: equal to the threshold, for a payment not flagged
    threshold = 0.5
    below = float(np.nextafter(np.float32(0.5), np.float32(0)))
    assert round(below, 6) == threshold
    # Then it is shown below the threshold, and the threshold itself as itself
    shown = shown_scores([below, threshold] * copies, threshold)
    assert shown[:2] == [0.499999, 0.5]


def test_a_double_whose_product_rounds_onto_a_millionth_is_floored_below_it() -> None:
    # Given the double just below 1e-5: times 1e6 it rounds to exactly 10.0
    score = float(np.nextafter(1e-5, 0))
    assert score * 1e6 == 10.0 and math.floor(score * 1e6) / 1e6 == 1e-5
    # Then, not flagged at a threshold of 1e-5, it is shown below it: the exact floor
    assert shown_scores([score], 1e-5) == [9e-06]
    assert shown_scores([score] * SHOWN_IN_NUMPY_FROM, 1e-5) == [9e-06] * SHOWN_IN_NUMPY_FROM
