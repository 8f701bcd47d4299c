"""TWAP schedules (domain/algos/twap.py): slice times and sizes by hand, every rule of the module docstring as a
hypothesis property, and each bad parameter refused naming its request field. Pure: no bus."""

from __future__ import annotations

import math
from decimal import Decimal as D
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from domain.algos import MAX_DURATION_MS, AlgoParamError, Slice, twap_schedule

STEPS = [D("0.00000001"), D("0.001"), D("0.01"), D("0.5"), D("1"), D("25")]


def steps_of(q: D, step: D) -> Fraction:
    return Fraction(q) / Fraction(step)


# --- by hand -------------------------------------------------------------------------------------------------------


def test_even_schedule_by_hand():
    # 1 BTC over 60 s in 4 slices from t=1000: interval 60000 // 4 = 15000 ms, 100 steps of 0.01 / 4 = 25 each
    assert twap_schedule(D("1"), 1000, 60_000, 4, D("0.01")) == [
        Slice(0, 1000, D("0.25")),
        Slice(1, 16000, D("0.25")),
        Slice(2, 31000, D("0.25")),
        Slice(3, 46000, D("0.25")),
    ]


def test_uneven_split_puts_the_extra_steps_first():
    # 10 steps in 3 slices: 10 // 3 = 3 each, 10 % 3 = 1 extra on the first -> 4, 3, 3; interval 1000 // 3 = 333
    s = twap_schedule(D("10"), 0, 1000, 3, D("1"))
    assert [(x.at_ms, x.quantity) for x in s] == [(0, D(4)), (333, D(3)), (666, D(3))]


def test_too_many_slices_for_the_minimum_merges_them():
    # 0.05 in steps of 0.01 = 5 steps, minimum 0.015 -> 2 steps; 10 slices wanted, 5 // 2 = 2 possible: 3 + 2 steps,
    # spread over the whole duration (interval 10000 // 2)
    s = twap_schedule(D("0.05"), 0, 10_000, 10, D("0.01"), min_quantity=D("0.015"))
    assert s == [Slice(0, 0, D("0.03")), Slice(1, 5000, D("0.02"))]


def test_a_quantity_at_the_minimum_is_one_slice():
    assert twap_schedule(D("0.02"), 5, 100, 7, D("0.01"), min_quantity=D("0.02")) == [Slice(0, 5, D("0.02"))]


def test_jitter_changes_sizes_and_times_but_the_seed_fixes_them():
    args = (D("3"), 0, 600_000, 30, D("0.001"))
    kw = {"size_jitter": D("0.4"), "time_jitter": D("0.3")}
    a = twap_schedule(*args, **kw, seed=7)
    assert a == twap_schedule(*args, **kw, seed=7)  # recomputed after a restart: the same schedule
    assert a != twap_schedule(*args, **kw, seed=8)
    assert a != twap_schedule(*args)
    assert len({x.quantity for x in a}) > 2  # really randomised (the even split has one size: 100 steps)
    assert any(x.at_ms != i * 20_000 for i, x in enumerate(a))


def test_full_time_jitter_on_a_short_interval_keeps_times_strictly_increasing():
    # interval 2 ms, jitter 0.5: moving by up to 1 ms either way could put two neighbours on the same ms
    # (2 + (-1) - (+1) = 0), so the move stays below half an interval: here none at all
    for seed in range(20):
        s = twap_schedule(D(100), 0, 200, 100, D(1), time_jitter=D("0.5"), seed=seed)
        assert all(a.at_ms < b.at_ms for a, b in pairwise(s))
    # interval 5 ms: at most floor(0.5 x 5) = 2 ms (< 2.5), neighbours stay at least 1 ms apart, and some move
    s = twap_schedule(D(100), 0, 500, 100, D(1), time_jitter=D("0.5"), seed=1)
    assert all(a.at_ms < b.at_ms for a, b in pairwise(s))
    assert {x.at_ms - 5 * x.index for x in s} == {-2, -1, 0, 1, 2}


# --- properties ----------------------------------------------------------------------------------------------------


@st.composite
def twap_inputs(draw: st.DrawFn, jitter: bool = True) -> dict:
    step = draw(st.sampled_from(STEPS))
    units = draw(st.integers(1, 10**6))
    # a minimum that is often not a multiple of the step (tenths of a step)
    min_tenths = draw(st.one_of(st.just(0), st.integers(0, 10 * units)))
    duration = draw(st.one_of(st.integers(1, 5000), st.integers(1, MAX_DURATION_MS)))
    slices = draw(st.integers(1, min(duration, draw(st.sampled_from([20, 300, 10_000])))))
    return {
        "quantity": units * step,
        "start_ms": draw(st.integers(0, 2 * 10**12)),
        "duration_ms": duration,
        "slices": slices,
        "step": step,
        "min_quantity": min_tenths * step / 10,
        "size_jitter": draw(st.decimals(0, D("0.5"), places=3)) if jitter else D(0),
        "time_jitter": draw(st.decimals(0, D("0.5"), places=3)) if jitter else D(0),
        "seed": draw(st.integers(0, 2**64)),
    }


def call(p: dict) -> list[Slice]:
    kw = {k: p[k] for k in ("min_quantity", "size_jitter", "time_jitter", "seed")}
    return twap_schedule(p["quantity"], p["start_ms"], p["duration_ms"], p["slices"], p["step"], **kw)


def expected_count(p: dict) -> int:
    units = steps_of(p["quantity"], p["step"])
    m = max(1, math.ceil(steps_of(p["min_quantity"], p["step"])))
    return min(p["slices"], int(units) // m)


@settings(max_examples=300, deadline=None)
@given(p=twap_inputs())
def test_sizes_are_steps_at_least_the_minimum_and_sum_exactly(p):
    s = call(p)
    assert len(s) == expected_count(p) >= 1
    assert [x.index for x in s] == list(range(len(s)))
    assert sum((x.quantity for x in s), D(0)) == p["quantity"]
    for x in s:
        assert steps_of(x.quantity, p["step"]).denominator == 1
        assert x.quantity > 0
        assert x.quantity >= p["min_quantity"]


@settings(max_examples=300, deadline=None)
@given(p=twap_inputs())
def test_times_start_at_start_increase_and_end_before_the_duration(p):
    s = call(p)
    assert s[0].at_ms == p["start_ms"]
    assert all(a.at_ms < b.at_ms for a, b in pairwise(s))
    assert s[-1].at_ms < p["start_ms"] + p["duration_ms"]


@settings(max_examples=300, deadline=None)
@given(p=twap_inputs(jitter=False))
def test_without_jitter_evenly_spaced_and_equal_up_to_one_step(p):
    s = call(p)
    interval = p["duration_ms"] // len(s)
    assert [x.at_ms for x in s] == [p["start_ms"] + i * interval for i in range(len(s))]
    sizes = [x.quantity for x in s]
    assert max(sizes) - min(sizes) <= p["step"]


@settings(max_examples=300, deadline=None)
@given(p=twap_inputs())
def test_jitter_stays_within_its_bounds(p):
    s = call(p)
    n = len(s)
    step = Fraction(p["step"])
    even = Fraction(p["quantity"]) / n
    sj, tj = Fraction(p["size_jitter"]), Fraction(p["time_jitter"])
    interval = p["duration_ms"] // n
    for i, x in enumerate(s):
        q = Fraction(x.quantity)
        # within the jitter band widened to whole steps: [floor(E (1 - j)), ceil(E (1 + j))] steps
        assert math.floor(even * (1 - sj) / step) * step <= q <= math.ceil(even * (1 + sj) / step) * step
        assert abs(q - even) < sj * even + step  # the same, said plainly: off the even size by the jitter + a step
        assert abs(x.at_ms - (p["start_ms"] + i * interval)) <= tj * interval


@settings(max_examples=100, deadline=None)
@given(p=twap_inputs())
def test_the_same_inputs_give_the_same_schedule(p):
    assert call(p) == call(dict(p))


# --- bad parameters ------------------------------------------------------------------------------------------------

GOOD = {
    "quantity": D("1"),
    "start_ms": 0,
    "duration_ms": 60_000,
    "slices": 10,
    "step": D("0.01"),
    "min_quantity": D(0),
    "size_jitter": D(0),
    "time_jitter": D(0),
    "seed": 0,
}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"slices": 0}, "algo.slices", "between 1 and 10000"),
        ({"slices": 10_001, "duration_ms": 10**6}, "algo.slices", "between 1 and 10000"),
        ({"slices": 11, "duration_ms": 10}, "algo.slices", "do not fit"),
        ({"slices": D(2)}, "algo.slices", "integer"),
        ({"duration_ms": 0}, "algo.durationMs", "between 1 and"),
        ({"duration_ms": MAX_DURATION_MS + 1}, "algo.durationMs", "7 days"),
        ({"step": D(0)}, "step", "> 0"),
        ({"step": D("-0.01")}, "step", "> 0"),
        ({"quantity": D("1.005")}, "quantity", "not a multiple of the amount step 0.01"),
        ({"quantity": D(0)}, "quantity", "> 0"),
        ({"quantity": D("NaN")}, "quantity", "finite"),
        ({"quantity": 1.0}, "quantity", "decimal"),
        ({"quantity": D("0.01"), "min_quantity": D("0.02")}, "quantity", "below the smallest order"),
        ({"min_quantity": D("-1")}, "minQuantity", ">= 0"),
        ({"size_jitter": D("0.51")}, "algo.sizeJitter", "between 0 and 0.5"),
        ({"size_jitter": D("-0.1")}, "algo.sizeJitter", "between 0 and 0.5"),
        ({"time_jitter": D("0.6")}, "algo.timeJitter", "between 0 and 0.5"),
        ({"seed": "x"}, "algo.seed", "integer"),
    ],
)
def test_bad_parameters_name_the_field_and_the_reason(change, field, reason):
    with pytest.raises(AlgoParamError) as err:
        call({**GOOD, **change})
    assert err.value.field == field
    assert reason in str(err.value)
    assert str(err.value).startswith(field + ": ")
    assert isinstance(err.value, ValueError)


@settings(max_examples=200, deadline=None)
@given(p=twap_inputs(), extra=st.integers(1, 10**6))
def test_a_quantity_off_the_step_is_refused(p, extra):
    off = p["quantity"] + p["step"] * D(extra) / D(10**6 + 1)
    assume(steps_of(off, p["step"]).denominator != 1)
    with pytest.raises(AlgoParamError) as err:
        call({**p, "quantity": off})
    assert err.value.field == "quantity"
