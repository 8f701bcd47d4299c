"""VWAP (domain/algos/vwap.py): the profile from the recent traded volume and its coverage rule (review findings
M2, m3), the schedule by hand, and the tracking property the issue asks for ("a VWAP that tracks its profile within a
stated tolerance") proved with hypothesis: after every bucket, |cumulative quantity / quantity - cumulative weight /
total weight| <= (m - 1/2) x step / quantity, m the minimum child in steps. Pure: no bus."""

from __future__ import annotations

import math
from decimal import Decimal as D
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.algos import AlgoParamError, MarketVolume, Slice, recent_profile, vwap_schedule
from domain.algos.vwap import (
    VOLUME_TIERS,
    allocate,
    bucket_start,
    first_bucket_from,
    volume_weights,
)

STEPS = [D("0.00000001"), D("0.001"), D("0.01"), D("1"), D("25")]

# --- the profile: the recent traded volume, and the coverage rule ---------------------------------------------------

MIN = 60_000
HOUR = 3_600_000
EPS = Fraction(1, 10**12)  # the weights' rounding: shares of 1 in steps of 1e-12


def fed(trades, now: int | None = None) -> MarketVolume:
    """A market fed ``trades`` (ms, quantity) in order, each arriving at its own time (or at ``now``)."""
    m = MarketVolume()
    for ts, qty in trades:
        m.add(ts, qty, ts if now is None else now)
    return m


def profile(m, end, lookback, buckets, watched_from, now=None):
    return recent_profile(m, end, lookback, buckets, watched_from, end if now is None else now, "X_Y trades at v")


def test_profile_by_hand():
    # window [0, 800) in 4 buckets of 200 ms, watched all along; 800 (the end) and -1 (before the start) are outside
    trades = [(0, D(1)), (199, D(2)), (250, D(3)), (799, D(4)), (800, D(50)), (-1, D(60))]
    m = fed(trades)
    assert m.volumes(0, 800, 4, -10_000, 10_000) == ([3, 3, 0, 4], 0, -10_000)
    p = profile(m, 800, 800, 4, -10_000, now=10_000)
    assert p.weights == [D("0.3"), D("0.3"), D(0), D("0.4")] and sum(p.weights) == 1
    assert (p.source, p.covered, p.covered_from, p.note) == ("volume", 4, -10_000, None)


def test_a_cell_across_a_bucket_boundary_is_split_by_its_time():
    # buckets of 150 ms: the 100 ms cell [100, 200) holding 2 is half in each; the cell of "now" is its time so far
    m = fed([(120, D(2))])
    assert m.volumes(0, 300, 2, 0, 10_000)[0] == [1, 1]
    m = fed([(1050, D(61))])  # now 1060: the cell [1000, 1100) has traded over [1000, 1061) only
    assert m.volumes(1000, 100, 2, 0, 1060)[0] == [50, 11]


def test_the_probe_a_router_started_5_minutes_ago_spreads_a_1h_vwap_over_every_bucket():
    """Review finding M2 (probe p_vwap_profile.py): before, weights [0 x 11, 3] and one market child of 10."""
    now = 10_000_000_000
    trades = [(now - 300_000 + i * 1000, D("0.01")) for i in range(300)]
    p = profile(fed(trades), now, HOUR, 12, now - 300_000)
    assert p.source == "blend" and p.covered == 1 and p.covered_from == now - 300_000
    assert all(abs(Fraction(w) - Fraction(1, 12)) <= EPS for w in p.weights)  # 11 time shares and one of volume
    assert p.note is not None and "the first 11 (not watched in full) get their time share, 1/12 each" in p.note
    s = vwap_schedule(D(10), now, HOUR, p.weights, D("0.001"))
    assert len(s) == 12 and max(x.quantity for x in s) == D("0.834")


def test_a_window_watched_in_part_follows_the_volume_where_it_was_watched():
    # watched since minute 30 of a 60 min window in 6 buckets: 3 of 10 min watched, 1, 2 and 3 per minute
    end = 100 * HOUR
    start = end - HOUR
    trades = [(start + 30 * MIN + i * 1000, D(1 + i // 600)) for i in range(1800)]
    p = profile(fed(trades), end, HOUR, 6, start + 30 * MIN - 1)  # (rounded up to the 100 ms cell: 30 min)
    # the first three get 1/6 each; the watched half (1/2) split 600 : 1200 : 1800
    assert p.weights == [D("0.166666666667"), D("0.166666666666"), D("0.166666666667"), D("0.083333333333"),
                         D("0.166666666667"), D("0.25")]  # fmt: skip
    assert (p.source, p.covered, p.covered_from) == ("blend", 3, start + 30 * MIN)


def test_flat_when_no_bucket_is_watched_in_full_or_nothing_traded_or_nothing_is_watched():
    end = 50 * HOUR
    m = fed([(end - 1000, D(5))])  # all in the last bucket, but watched only since the last bucket began + 1 ms
    p = profile(m, end, 4000, 4, end - 1000 + 1)
    assert p.weights == [D("0.25")] * 4 and (p.source, p.covered) == ("flat", 0)
    assert p.note is not None and "watched in full only since" in p.note and "after every bucket" in p.note
    p = profile(MarketVolume(), end, 4000, 4, end - 10_000)  # watched all along: nothing traded
    assert p.weights == [D("0.25")] * 4 and (p.source, p.covered) == ("flat", 4)
    assert p.note is not None and "no volume of X_Y trades at v in the 4 of 4 buckets" in p.note
    p = profile(None, end, 4000, 4, None)  # the trades not watched (yet)
    assert p.weights == [D("0.25")] * 4 and (p.source, p.covered_from) == ("flat", None)
    assert p.note is not None and "not watched yet" in p.note


def test_a_busy_pair_is_not_cut_to_its_last_20000_trades():
    """Review finding M2 (busy pair): 30,000 trades over 10 minutes, the same volume each second. Before, the last
    20,000 trades covered only the last 6.7 minutes: the first buckets got 0."""
    end = 200 * HOUR
    trades = [(end - 10 * MIN + i * 20, D("0.001")) for i in range(30_000)]
    p = profile(fed(trades), end, 10 * MIN, 10, end - HOUR)
    assert p.source == "volume" and p.weights == [D("0.1")] * 10


def test_memory_is_bounded_and_an_old_window_uses_a_coarser_cell():
    # two hours of a trade every 100 ms (72,000 trades): the 100 ms cells keep 6 minutes, the 1 s cells 61 minutes
    end = 300 * HOUR
    m = fed((end - 2 * HOUR + i * 100, D(1)) for i in range(72_000))
    assert m.size() <= sum(keep // width + 2 for width, keep in VOLUME_TIERS)
    assert m.floor[0] is not None and m.floor[0] >= end - 6 * MIN - 100
    # the last 15 minutes: no longer in the 100 ms cells, complete in the 1 s ones
    p = profile(m, end, 15 * MIN, 3, end - 3 * HOUR)
    assert p.source == "volume" and p.weights == [D("0.333333333333"), D("0.333333333334"), D("0.333333333333")]
    # the last 2 hours: only the 1 min cells hold it all
    p = profile(m, end, 2 * HOUR, 4, end - 3 * HOUR)
    assert p.source == "volume" and p.weights == [D("0.25")] * 4
    # a late trade older than a tier's floor is not counted there (the tier no longer speaks for that time)
    before = list(m.cells[0].values())
    m.add(end - HOUR, D(1000), end)
    assert list(m.cells[0].values()) == before


def test_a_trade_that_cannot_be_volume_is_reported():
    for bad in (D(-1), D("NaN"), 1.5):
        with pytest.raises(ValueError, match="trade quantity"):
            MarketVolume().add(10, bad, 10)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(duration=st.integers(1, 10**7), data=st.data())
def test_first_bucket_from_is_the_first_bucket_starting_at_or_after(duration, data):
    n = data.draw(st.integers(1, min(duration, 10_000)))
    offset = data.draw(st.integers(-5, duration + 5))
    k = first_bucket_from(offset, duration, n)
    assert k == next((j for j in range(n) if bucket_start(j, duration, n) >= offset), n)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_trade_lands_in_its_bucket_when_buckets_are_whole_cells(data):
    n = data.draw(st.integers(1, 20))
    width = 100 * data.draw(st.integers(1, 30))  # each bucket a whole number of 100 ms cells
    duration, start = n * width, 100 * data.draw(st.integers(-(10**6), 10**6))
    ts = data.draw(st.lists(st.integers(start - 200, start + duration + 200), max_size=40))
    qty = data.draw(st.lists(st.decimals(0, 1000, places=3), min_size=len(ts), max_size=len(ts)))
    m = fed(sorted(zip(ts, qty, strict=True)), now=start)  # (no cell is old: nothing dropped)
    volume, first, since = m.volumes(start, duration, n, start - 10**9, start + duration + 10**6)
    assert (first, since) == (0, start - 10**9)
    assert volume == [sum((Fraction(q) for t, q in zip(ts, qty, strict=True) if 0 <= t - start - k * width < width),
                          Fraction(0)) for k in range(n)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_each_bucket_holds_its_trades_within_the_cells_across_its_bounds(data):
    duration = data.draw(st.integers(1, 5000))
    n = data.draw(st.integers(1, min(duration, 50)))
    start = data.draw(st.integers(0, 10**6))
    ts = data.draw(st.lists(st.integers(start - 300, start + duration + 300), max_size=40))
    m = fed(sorted((t, D(1)) for t in ts), now=start)
    volume, _, _ = m.volumes(start, duration, n, start - 10**9, start + duration + 10**6)
    assert sum(volume) <= len([t for t in ts if start - 100 < t < start + duration + 100])
    for k in range(n):
        lo, hi = start + bucket_start(k, duration, n), start + bucket_start(k + 1, duration, n)
        inside = sum(1 for t in ts if lo <= t // 100 * 100 and t // 100 * 100 + 100 <= hi)  # its cell in the bucket
        touching = sum(1 for t in ts if t // 100 * 100 < hi and t // 100 * 100 + 100 > lo)  # its cell meets it
        assert inside <= volume[k] <= touching


volumes_st = st.lists(st.decimals(0, 10**6, places=3).map(Fraction), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(volumes=volumes_st, data=st.data())
def test_weights_sum_to_1_and_each_is_its_share_within_the_rounding(volumes, data):
    n = len(volumes)
    first = data.draw(st.integers(0, n))
    w = [Fraction(x) for x in volume_weights(volumes, first)]
    assert sum(w) == 1 and all(x >= 0 for x in w)
    known = sum(volumes[first:], Fraction(0))
    for k, x in enumerate(w):
        exact = Fraction(1, n) if k < first or not known else Fraction(n - first, n) * volumes[k] / known
        assert abs(x - exact) <= EPS
        if k >= first and known and not volumes[k]:
            assert x == 0  # a bucket watched without a trade sends nothing
    assert abs(sum(w[:first]) - Fraction(first, n)) <= first * EPS  # what was not watched: its time share


@settings(max_examples=200, deadline=None)
@given(volumes=volumes_st, data=st.data())
def test_a_window_not_watched_in_full_never_puts_its_weight_into_one_bucket(volumes, data):
    n = len(volumes)
    first = data.draw(st.integers(1, n))  # at least the first bucket was not watched in full
    w = volume_weights(volumes, first)
    assert all(x > 0 for x in w[:first])  # an unwatched bucket never gets 0
    if n > 1:
        assert sum(1 for x in w if x > 0) >= 2 and max(w) < 1
        assert max(Fraction(x) for x in w) <= Fraction(n - first + 1, n) + EPS  # at most the watched part + 1/n


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_vwap_on_a_window_not_watched_in_full_is_never_one_child(data):
    """End to end in the domain: trades anywhere, a router watching since any time inside the window, any quantity
    of at least two buckets' worth: never one child holding the whole quantity."""
    n = data.draw(st.integers(2, 24))
    lookback = n * data.draw(st.integers(1, 100)) * 1000
    end = 10**12
    watched = data.draw(st.integers(end - lookback + 1, end))  # after the window began
    ts = data.draw(st.lists(st.integers(end - lookback, end - 1), min_size=1, max_size=30))
    p = profile(fed(sorted((t, D(1)) for t in ts)), end, lookback, n, watched)
    assert p.source in ("blend", "flat") and p.note is not None
    units = data.draw(st.integers(n, 10_000))
    s = vwap_schedule(D(units), end, lookback, p.weights, D(1))
    assert len(s) >= 2


# --- the schedule --------------------------------------------------------------------------------------------------


def test_schedule_by_hand():
    # weights 1, 0, 3, 0.1 (W = 4.1) over 1000 ms from t=0: buckets start at 0, 250, 500, 750.
    # 1 in steps of 0.01 = 100 steps. Cumulative targets 100 x (1, 1, 4, 4.1) / 4.1 = 24.39, 24.39, 97.56, 100
    # -> rounded 24, 24, 98, 100 -> shares 24, 0, 74, 2. Minimum 0.05 = 5 steps: bucket 1 has nothing (skipped),
    # bucket 3's 2 steps are below it and, with no bucket after, go with the last slice sent: 74 + 2 = 76.
    s = vwap_schedule(D("1"), 0, 1000, [D(1), D(0), D(3), D("0.1")], D("0.01"), min_quantity=D("0.05"))
    assert s == [Slice(0, 0, D("0.24")), Slice(1, 500, D("0.76"))]
    # without the minimum the last bucket is a slice of its own
    s = vwap_schedule(D("1"), 0, 1000, [D(1), D(0), D(3), D("0.1")], D("0.01"))
    assert s == [Slice(0, 0, D("0.24")), Slice(1, 500, D("0.74")), Slice(2, 750, D("0.02"))]


def test_small_buckets_merge_into_the_next():
    # 10 steps, weights 1, 1, 8 -> cumulative 1, 2, 10 -> shares 1, 1, 8; minimum 2 steps: bucket 0's one step waits,
    # bucket 1 brings the waiting to 2 -> a slice at bucket 1's start (100 ms), then 8 at 200 ms
    s = vwap_schedule(D(10), 0, 300, [D(1), D(1), D(8)], D(1), min_quantity=D(2))
    assert s == [Slice(0, 100, D(2)), Slice(1, 200, D(8))]


def test_flat_profile_is_a_twap():
    s = vwap_schedule(D(12), 1000, 60_000, [D(1)] * 4, D(1))
    assert s == [Slice(i, 1000 + 15_000 * i, D(3)) for i in range(4)]


def test_allocation_rounds_the_running_total_not_each_share():
    # 5 steps over 10 equal buckets: ranking remainders over the whole list would give the first five one step each
    # (2.5 steps ahead of the profile after bucket 4); the running total stays within half a step
    shares = allocate(5, [Fraction(1)] * 10)
    assert sum(shares) == 5
    running = 0
    for k, share in enumerate(shares):
        running += share
        assert abs(running - Fraction(5 * (k + 1), 10)) <= Fraction(1, 2)


@st.composite
def vwap_inputs(draw: st.DrawFn) -> dict:
    step = draw(st.sampled_from(STEPS))
    units = draw(st.integers(1, 10**6))
    n = draw(st.integers(1, draw(st.sampled_from([5, 60, 400]))))
    weight = st.one_of(st.just(D(0)), st.decimals(0, 10**6, places=4), st.integers(0, 3).map(D))
    weights = draw(st.lists(weight, min_size=n, max_size=n))
    if not any(weights):
        weights[draw(st.integers(0, n - 1))] = D(1)
    duration = draw(st.integers(n, 7 * 24 * 3600 * 1000))
    return {
        "quantity": units * step,
        "start_ms": draw(st.integers(0, 2 * 10**12)),
        "duration_ms": duration,
        "weights": weights,
        "step": step,
        "min_quantity": draw(st.integers(0, 10 * units)) * step / 10,
    }


def call(p: dict) -> list[Slice]:
    return vwap_schedule(
        p["quantity"], p["start_ms"], p["duration_ms"], p["weights"], p["step"], min_quantity=p["min_quantity"]
    )


@settings(max_examples=300, deadline=None)
@given(p=vwap_inputs())
def test_slices_are_steps_above_the_minimum_at_bucket_starts_and_sum_exactly(p):
    s = call(p)
    n = len(p["weights"])
    bucket_at = {p["start_ms"] + bucket_start(k, p["duration_ms"], n): k for k in range(n)}
    assert [x.index for x in s] == list(range(len(s)))
    assert sum((x.quantity for x in s), D(0)) == p["quantity"]
    assert all(a.at_ms < b.at_ms for a, b in pairwise(s))
    assert s[-1].at_ms < p["start_ms"] + p["duration_ms"]
    for x in s:
        assert (Fraction(x.quantity) / Fraction(p["step"])).denominator == 1
        assert x.quantity >= p["min_quantity"]
        assert x.quantity > 0
        k = bucket_at[x.at_ms]  # at a bucket's start ...
        assert p["weights"][k] > 0  # ... never a zero-weight bucket's


@settings(max_examples=400, deadline=None)
@given(p=vwap_inputs())
def test_the_schedule_tracks_its_profile_within_the_stated_bound(p):
    s = call(p)
    weights = [Fraction(w) for w in p["weights"]]
    n, total_w, q = len(weights), sum(weights), Fraction(p["quantity"])
    step = Fraction(p["step"])
    m = max(1, math.ceil(Fraction(p["min_quantity"]) / step))
    bound = (m - Fraction(1, 2)) * step / q
    assert bound < (step + Fraction(p["min_quantity"])) / q  # tighter than the brief's (step + minimum) / quantity
    cum_w = sent = Fraction(0)
    todo = list(s)
    for k in range(n):
        cum_w += weights[k]
        at = p["start_ms"] + bucket_start(k, p["duration_ms"], n)
        while todo and todo[0].at_ms <= at:  # every slice due at or before this bucket's start
            sent += Fraction(todo.pop(0).quantity)
        assert abs(sent / q - cum_w / total_w) <= bound
    assert not todo


@settings(max_examples=300, deadline=None)
@given(units=st.integers(0, 10**9), weights=st.lists(st.integers(0, 10**6).map(Fraction), min_size=1, max_size=50))
def test_every_share_is_its_exact_share_rounded_down_or_up(units, weights):
    if not any(weights):
        weights[0] = Fraction(1)
    shares = allocate(units, weights)
    total = sum(weights)
    assert sum(shares) == units
    for share, w in zip(shares, weights, strict=True):
        exact = units * w / total
        assert share in (math.floor(exact), math.ceil(exact))


@settings(max_examples=300, deadline=None)
@given(
    units=st.integers(0, 10**12),
    weights=st.lists(st.fractions(min_value=0, max_value=10**4, max_denominator=10**5), min_size=1, max_size=30),
)
def test_allocation_is_the_running_total_rounded_half_up(units, weights):
    """(allocate works in whole numbers: the same as the rule stated on fractions)"""
    if not any(weights):
        weights[0] = Fraction(1)
    total, running, before, expected = sum(weights), Fraction(0), 0, []
    for w in weights:
        running += w
        now = math.floor(units * running / total + Fraction(1, 2))
        expected.append(now - before)
        before = now
    assert allocate(units, weights) == expected


@settings(max_examples=100, deadline=None)
@given(p=vwap_inputs())
def test_the_same_inputs_give_the_same_schedule(p):
    assert call(p) == call({**p, "weights": list(p["weights"])})


GOOD = {"quantity": D(1), "start_ms": 0, "duration_ms": 1000, "weights": [D(1), D(2)], "step": D("0.01")}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"weights": []}, "algo.profile", "at least one weight"),
        ({"weights": [D(0), D(0)]}, "algo.profile", "at least one weight > 0"),
        ({"weights": [D(1), D(-1)]}, "algo.profile", "weight 1 must be a finite number >= 0"),
        ({"weights": [D("NaN")]}, "algo.profile", "weight 0"),
        ({"weights": [D("Infinity")]}, "algo.profile", "weight 0"),
        ({"weights": [0.5]}, "algo.profile", "weight 0"),
        ({"weights": "12"}, "algo.profile", "list"),
        ({"weights": [D(1)] * 10_001, "duration_ms": 10**6}, "algo.profile", "between 1 and 10000 weights"),
        ({"weights": [D(1)] * 11, "duration_ms": 10}, "algo.profile", "do not fit"),
        ({"duration_ms": 0}, "algo.durationMs", "between 1 and"),
        ({"quantity": D("0.001")}, "quantity", "not a multiple"),
        ({"step": D(0)}, "step", "> 0"),
    ],
)
def test_bad_parameters_name_the_field_and_the_reason(change, field, reason):
    with pytest.raises(AlgoParamError) as err:
        vwap_schedule(**{**GOOD, **change})
    assert err.value.field == field
    assert reason in str(err.value)


def test_bad_profile_window_names_the_field():
    with pytest.raises(AlgoParamError) as err:
        recent_profile(None, 1000, 10, 11, 0, 1000, "t")
    assert err.value.field == "algo.slices" and "do not fit in algo.lookbackMs 10" in str(err.value)
    with pytest.raises(AlgoParamError) as err:
        recent_profile(None, 1000, 0, 1, 0, 1000, "t")
    assert err.value.field == "algo.lookbackMs"
