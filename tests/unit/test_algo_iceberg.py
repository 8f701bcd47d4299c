"""Iceberg clips (domain/algos/iceberg.py): never more than the display, every clip sendable, the rest always
showable, bad displays refused naming ``algo.displayQuantity``. Pure: no bus."""

from __future__ import annotations

import math
from decimal import Decimal as D
from fractions import Fraction
from functools import cache

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.algos import AlgoParamError, iceberg_clip, iceberg_clips
from domain.algos.iceberg import showable

STEPS = [D("0.00000001"), D("0.001"), D("0.01"), D("1"), D("25")]


def test_clips_by_hand():
    # 10 in clips of at most 4: 4, 4, 2
    assert iceberg_clips(D(10), D(4), D(1)) == [D(4), D(4), D(2)]
    # with a minimum of 3 the greedy 4, 4, 2 would leave an unsendable 2: K = ceil(10 / 4) = 3 clips,
    # the first min(4, 10 - 2 x 3) = 4, then 6 -> min(4, 6 - 3) = 3, then 3
    assert iceberg_clips(D(10), D(4), D(1), min_quantity=D(3)) == [D(4), D(3), D(3)]
    # 9 with display 4 and minimum 3: 4 then 5 would be stuck (5 is neither <= 4 nor >= 2 x 3); 3, 3, 3
    assert iceberg_clips(D(9), D(4), D(1), min_quantity=D(3)) == [D(3), D(3), D(3)]
    # decimals: 1.00 in clips of 0.30 -> 0.30, 0.30, 0.30, 0.10
    assert iceberg_clips(D("1.00"), D("0.30"), D("0.01")) == [D("0.30"), D("0.30"), D("0.30"), D("0.10")]


def test_next_clip_at_run_time():
    assert iceberg_clip(D(10), D(4), D(1), min_quantity=D(3)) == D(4)
    assert iceberg_clip(D(6), D(4), D(1), min_quantity=D(3)) == D(3)  # 4 would leave 2, below the minimum
    assert iceberg_clip(D(3), D(4), D(1), min_quantity=D(3)) == D(3)
    assert iceberg_clip(D(0), D(4), D(1)) == D(0)  # nothing left
    # left by fills the plan did not choose (a clip canceled after a partial fill):
    assert iceberg_clip(D(2), D(4), D(1), min_quantity=D(3)) == D(2)  # below the minimum: what is left, whole
    assert iceberg_clip(D(5), D(4), D(1), min_quantity=D(3)) == D(4)  # not showable: the display, 1 is left over


def test_a_display_that_cannot_show_the_quantity_says_which_would():
    # 5 with display 4, minimum 3: 4 + 1 and 3 + 2 both leave a clip below 3; 5 // 3 = 1 clip -> display 5
    with pytest.raises(AlgoParamError) as err:
        iceberg_clips(D(5), D(4), D(1), min_quantity=D(3))
    assert err.value.field == "algo.displayQuantity"
    assert "a display of at least 5 can" in str(err.value)
    # 11 with display 3, minimum 3: 11 // 3 = 3 clips at most -> ceil(11 / 3) = 4
    with pytest.raises(AlgoParamError, match="at least 4 can"):
        iceberg_clips(D(11), D(3), D(1), min_quantity=D(3))
    assert iceberg_clips(D(11), D(4), D(1), min_quantity=D(3)) == [D(4), D(4), D(3)]


@pytest.mark.parametrize(
    ("total", "display", "minimum", "reason"),
    [
        (D(10), D(0), D(0), "must be > 0"),
        (D(10), D(-1), D(0), "must be > 0"),
        (D(10), D(11), D(0), "more than the order's quantity 10"),
        (D(10), D("2.5"), D(0), "not a multiple of the amount step 1"),
        (D(10), D(2), D(3), "below the smallest order the venue accepts (3)"),
        (D(10), D("NaN"), D(0), "finite"),
    ],
)
def test_bad_display_is_refused_naming_the_field(total, display, minimum, reason):
    with pytest.raises(AlgoParamError) as err:
        iceberg_clips(total, display, D(1), min_quantity=minimum)
    assert err.value.field == "algo.displayQuantity"
    assert reason in str(err.value)


def test_bad_total_and_remaining_name_their_fields():
    with pytest.raises(AlgoParamError) as err:
        iceberg_clips(D("10.5"), D(4), D(1))
    assert err.value.field == "quantity"
    with pytest.raises(AlgoParamError) as err:
        iceberg_clips(D(2), D(2), D(1), min_quantity=D(3))
    assert err.value.field == "quantity"
    with pytest.raises(AlgoParamError) as err:
        iceberg_clip(D("-1"), D(4), D(1))
    assert err.value.field == "remaining"
    with pytest.raises(AlgoParamError) as err:
        iceberg_clip(D(5), D(2), D(1), min_quantity=D(3))
    assert err.value.field == "algo.displayQuantity"


@cache
def composable(units: int, display: int, floor_units: int) -> bool:
    """By brute force: ``units`` is a sum of parts each within [floor_units, display]."""
    return units == 0 or any(
        composable(units - c, display, floor_units) for c in range(floor_units, min(display, units) + 1)
    )


@settings(max_examples=500, deadline=None)
@given(units=st.integers(1, 120), display=st.integers(1, 40), floor_units=st.integers(1, 40))
def test_showable_is_exactly_when_a_split_exists(units, display, floor_units):
    assert showable(units, display, floor_units) == composable(units, display, floor_units)


@st.composite
def icebergs(draw: st.DrawFn) -> tuple[D, D, D, D]:
    step = draw(st.sampled_from(STEPS))
    total = draw(st.one_of(st.integers(1, 300), st.integers(1, 10**5)))
    display = draw(st.one_of(st.integers(1, total), st.integers(max(1, total // 50), total)))
    minimum = draw(st.one_of(st.just(0), st.integers(0, 10 * display))) * step / 10  # tenths of a step
    return total * step, display * step, step, minimum


@settings(max_examples=500, deadline=None)
@given(p=icebergs())
def test_every_clip_is_sendable_and_never_shows_more_than_the_display(p):
    total, display, step, minimum = p
    m = max(1, math.ceil(Fraction(minimum) / Fraction(step)))
    t, d = int(total / step), int(display / step)
    if not showable(t, d, m):
        with pytest.raises(AlgoParamError) as err:
            iceberg_clips(total, display, step, min_quantity=minimum)
        assert err.value.field == "algo.displayQuantity"
        return
    clips = iceberg_clips(total, display, step, min_quantity=minimum)
    assert sum(clips, D(0)) == total
    assert len(clips) == math.ceil(Fraction(total) / Fraction(display))  # the fewest clips the display allows
    left = total
    for c in clips:
        assert 0 < c <= display
        assert (Fraction(c) / Fraction(step)).denominator == 1
        assert c >= minimum
        assert c == iceberg_clip(left, display, step, min_quantity=minimum)  # the run-time clip is the plan's
        left -= c
        assert left == 0 or left >= minimum  # the rest can still be sent


@settings(max_examples=300, deadline=None)
@given(m=st.integers(1, 300), data=st.data())
def test_the_suggested_display_is_the_smallest_that_can(m, data):
    # a display below 2m - 1 leaves gaps: draw one and a total in a gap (k clips reach at most k d, k + 1 need
    # at least (k + 1) m)
    d = data.draw(st.integers(m, max(m, 2 * m - 2)))
    k = data.draw(st.integers(1, 50))
    assume(k * d + 1 < (k + 1) * m)
    t = data.draw(st.integers(k * d + 1, (k + 1) * m - 1))
    assert not showable(t, d, m)
    with pytest.raises(AlgoParamError) as err:
        iceberg_clips(D(t), D(d), D(1), min_quantity=D(m))
    enough = int(str(err.value).rsplit("at least ", 1)[1].split()[0])
    assert enough <= t
    assert showable(t, enough, m)
    assert not showable(t, enough - 1, m) or enough - 1 < m
    assert iceberg_clips(D(t), D(enough), D(1), min_quantity=D(m))
