"""Execution quality (domain/quality.py): slippage figures checked by hand on small cases (the arithmetic in the
comments), the sign conventions and the aggregation as hypothesis properties. Pure: no bus."""

from __future__ import annotations

import math
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.quality import (
    FillQuality,
    OrderQuality,
    QualityStats,
    aggregate,
    fee_in_quote,
    fill_slippage,
    nearest_rank,
    order_quality,
    slippage_bps,
    touch_of,
)


def r6(d: D | None) -> D | None:
    return None if d is None else d.quantize(D("0.000001"))


# --- by hand -------------------------------------------------------------------------------------------------------


def test_buy_by_hand():
    # buy 2 BTC_USDT, arrival mid 100.00, ask 100.05; fills 1 @ 100.10 and 1 @ 100.30, fee 0.1% in USDT:
    #   fees 0.1001 + 0.1003 = 0.2004; filled notional 100.10 + 100.30 = 200.40; average 200.40 / 2 = 100.20
    #   vs arrival: 10000 x (100.20 - 100.00) / 100.00 = 20 bps
    #   vs touch:   10000 x (100.20 - 100.05) / 100.05 = 1500 / 100.05 = 14.992504 bps (implementation shortfall)
    #   fees: 10000 x 0.2004 / 200.40 = 10 bps; total cost 20 + 10 = 30 bps
    #   fill ratio 2 / 2 = 1; time to fill: created at 1000, last fill at 1400 -> 400 ms
    fee1 = fee_in_quote(D("0.1001"), "USDT", "BTC_USDT", D("100.10"))
    fee2 = fee_in_quote(D("0.1003"), "usdt", "BTC_USDT", D("100.30"))
    fills = [(D(1), D("100.10"), fee1, 1150), (D(1), D("100.30"), fee2, 1400)]
    q = order_quality("buy", D(2), D("100.00"), touch_of("buy", D("99.95"), D("100.05")), fills, created_ms=1000)
    assert q.filled_quantity == D(2)
    assert q.filled_notional == D("200.40")
    assert q.average_price == D("100.20")
    assert q.slippage_bps == D(20)
    assert r6(q.touch_slippage_bps) == D("14.992504")
    assert q.fees == D("0.2004")
    assert q.fees_bps == D(10)
    assert q.cost_bps == D(30)
    assert q.fill_ratio == D(1)
    assert q.time_to_fill_ms == 400
    assert q.unpriced_fees == 0
    # per fill: 10000 x 0.10 / 100 = 10 bps and 10000 x 0.30 / 100 = 30 bps vs arrival;
    # vs touch 10000 x 0.05 / 100.05 = 4.997501 and 10000 x 0.25 / 100.05 = 24.987506; fees 10 bps each
    f1 = fill_slippage("buy", D(1), D("100.10"), fee1, D("100.00"), D("100.05"))
    f2 = fill_slippage("buy", D(1), D("100.30"), fee2, D("100.00"), D("100.05"))
    assert (f1.slippage_bps, r6(f1.touch_slippage_bps), f1.fee_bps, f1.cost_bps) == (
        D(10),
        D("4.997501"),
        D(10),
        D(20),
    )
    assert (f2.slippage_bps, r6(f2.touch_slippage_bps), f2.fee_bps, f2.cost_bps) == (
        D(30),
        D("24.987506"),
        D(10),
        D(40),
    )


def test_sell_partly_filled_with_a_base_currency_fee_by_hand():
    # sell 3 BTC_USDT, arrival mid 50.00, bid 49.98; fills 1 @ 49.90 (fee 0.001 BTC = 0.001 x 49.90 = 0.0499 USDT)
    # and 1 @ 49.95 (fee 0.04995 USDT); created at 0, fills at 250 and 1000:
    #   filled 2, notional 49.90 + 49.95 = 99.85, average 49.925; fill ratio 2 / 3
    #   vs arrival: 10000 x (50.00 - 49.925) / 50.00 = 15 bps (a sell below the mid is worse: positive)
    #   vs touch:   10000 x (49.98 - 49.925) / 49.98 = 550 / 49.98 = 11.004402 bps
    #   fees 0.0499 + 0.04995 = 0.09985 -> 10000 x 0.09985 / 99.85 = 10 bps; total 25 bps; time to fill 1000 ms
    fills = [
        (D(1), D("49.90"), fee_in_quote(D("0.001"), "BTC", "BTC_USDT", D("49.90")), 250),
        (D(1), D("49.95"), fee_in_quote(D("0.04995"), "USDT", "BTC_USDT", D("49.95")), 1000),
    ]
    q = order_quality("sell", D(3), D("50.00"), touch_of("sell", D("49.98"), D("50.02")), fills, created_ms=0)
    assert q.average_price == D("49.925")
    assert q.slippage_bps == D(15)
    assert r6(q.touch_slippage_bps) == D("11.004402")
    assert q.fees == D("0.09985")
    assert q.fees_bps == D(10)
    assert q.cost_bps == D(25)
    assert r6(q.fill_ratio) == D("0.666667")
    assert q.time_to_fill_ms == 1000


def test_price_improvement_is_negative():
    # buy 1 @ 99.90 against a mid of 100: 10000 x (99.90 - 100) / 100 = -10 bps
    q = order_quality("buy", D(1), D(100), D("100.05"), [(D(1), D("99.90"), D(0), 5)], created_ms=0)
    assert q.slippage_bps == D(-10)
    assert q.cost_bps == D(-10)


def test_no_book_at_acceptance_gives_no_figure_against_it():
    fills = [(D(1), D("100.10"), D("0.1"), 5)]
    q = order_quality("buy", D(1), None, None, fills, created_ms=0)
    assert (q.slippage_bps, q.touch_slippage_bps, q.cost_bps) == (None, None, None)
    assert q.average_price == D("100.10")
    assert r6(q.fees_bps) == D("9.990010")  # 10000 x 0.1 / 100.10: known without a book
    q = order_quality("buy", D(1), D(100), None, fills, created_ms=0)
    assert (q.slippage_bps, q.touch_slippage_bps) == (D(10), None)
    assert fill_slippage("buy", D(1), D(100), None, None, None) == FillQuality(None, None, None, None)


def test_nothing_filled():
    q = order_quality("sell", D(2), D(100), D("99.9"), [], created_ms=0)
    assert q.filled_quantity == D(0)
    assert q.filled_notional == D(0)
    assert (q.average_price, q.slippage_bps, q.touch_slippage_bps, q.fees_bps, q.cost_bps) == (None,) * 5
    assert q.fill_ratio == D(0)
    assert q.time_to_fill_ms is None


def test_a_fee_in_an_unknown_currency_is_counted_not_guessed():
    # BNB is neither BTC nor USDT: the fee cannot be converted here
    assert fee_in_quote(D("0.01"), "BNB", "BTC_USDT", D(100)) is None
    fills = [(D(1), D(100), D("0.1"), 5), (D(1), D(100), None, 6)]
    q = order_quality("buy", D(2), D(100), D(100), fills, created_ms=0)
    assert q.fees == D("0.1")
    assert q.unpriced_fees == 1
    assert (q.fees_bps, q.cost_bps) == (None, None)
    assert q.slippage_bps == D(0)


def test_fee_in_quote():
    assert fee_in_quote(D("0.5"), "USDT", "ETH_USDT", D(2000)) == D("0.5")
    assert fee_in_quote(D("0.001"), "ETH", "ETH_USDT", D(2000)) == D(2)
    assert fee_in_quote(D("0.001"), "eth", "eth_usdt", D(2000)) == D(2)
    assert fee_in_quote(D("0.001"), "BTC", "ETH_USDT", D(2000)) is None
    with pytest.raises(ValueError, match="BASE_QUOTE"):
        fee_in_quote(D(1), "USDT", "BTCUSDT", D(1))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="reference price must be > 0"):
        slippage_bps("buy", D(0), D(1))
    with pytest.raises(ValueError, match="reference price must be > 0"):
        slippage_bps("sell", D(-1), D(1))
    with pytest.raises(ValueError, match="side"):
        slippage_bps("long", D(1), D(1))
    with pytest.raises(ValueError, match="quantity must be > 0"):
        order_quality("buy", D(0), D(1), D(1), [], created_ms=0)
    with pytest.raises(ValueError, match="a fill needs"):
        order_quality("buy", D(1), D(1), D(1), [(D(1), D(0), None, 1)], created_ms=0)
    with pytest.raises(ValueError, match="a fill needs"):
        fill_slippage("buy", D(0), D(1), None, D(1), D(1))
    with pytest.raises(ValueError, match="reference price must be > 0"):
        order_quality("buy", D(1), D(0), None, [(D(1), D(1), None, 1)], created_ms=0)


def row(side: str, qty: str, fills: list, arrival: str | None = "100", created: int = 0) -> OrderQuality:
    return order_quality(side, D(qty), None if arrival is None else D(arrival), None, fills, created_ms=created)


def test_aggregate_by_hand():
    a = row("buy", "2", [(D(1), D("100.10"), D("0.1001"), 150), (D(1), D("100.30"), D("0.1003"), 400)])
    b = row("sell", "3", [(D(1), D("49.90"), D("0.0499"), 250), (D(1), D("49.95"), D("0.04995"), 1000)], "50")
    c = row("buy", "1", [])
    d = row("buy", "1", [(D(1), D(100), D(0), 301)], arrival=None)
    stats = aggregate([a, b, c, d])
    # 4 orders; slippage known for a (20 bps on 200.40) and b (15 bps on 99.85):
    #   notional-weighted (20 x 200.40 + 15 x 99.85) / (200.40 + 99.85) = 5505.75 / 300.25 = 18.337219 bps
    #   p95 nearest rank over [15, 20]: ceil(0.95 x 2) = 2nd smallest = 20
    #   fill ratio (1 + 2/3 + 0 + 1) / 4 = 2/3; time to fill (400 + 1000 + 301) / 3 = 567 ms
    #   fees 0.2004 + 0.09985 + 0 + 0 = 0.30025
    assert stats.orders == 4
    assert r6(stats.avg_slippage_bps) == D("18.337219")
    assert stats.p95_slippage_bps == D(20)
    assert r6(stats.fill_ratio) == D("0.666667")
    assert stats.avg_time_to_fill_ms == 567
    assert stats.fees == D("0.30025")
    assert stats.as_json() == {
        "orders": 4,
        "avgSlippageBps": stats.avg_slippage_bps,
        "p95SlippageBps": D(20),
        "fillRatio": stats.fill_ratio,
        "avgTimeToFillMs": 567,
        "fees": D("0.30025"),
    }


def test_aggregate_of_nothing_and_of_unfilled_orders():
    assert aggregate([]) == QualityStats(0, None, None, None, None, D(0))
    stats = aggregate([row("buy", "1", []), row("sell", "2", [])])
    assert stats == QualityStats(2, None, None, D(0), None, D(0))


def test_average_time_to_fill_rounds_half_even():
    def filled_at(ts: int) -> OrderQuality:
        return row("buy", "1", [(D(1), D(100), D(0), ts)])

    assert aggregate([filled_at(400), filled_at(1001)]).avg_time_to_fill_ms == 700  # 700.5 -> 700
    assert aggregate([filled_at(400), filled_at(1003)]).avg_time_to_fill_ms == 702  # 701.5 -> 702


def test_nearest_rank_by_hand():
    values = [D(v) for v in range(20, 0, -1)]
    assert nearest_rank(values, D("0.95")) == D(19)  # ceil(0.95 x 20) = 19th smallest
    assert nearest_rank([*values, D(21)], D("0.95")) == D(20)  # ceil(0.95 x 21) = ceil(19.95) = 20th
    assert nearest_rank([D(7)], D("0.95")) == D(7)
    assert nearest_rank([], D("0.95")) is None


# --- properties ----------------------------------------------------------------------------------------------------

prices = st.decimals(D("0.0001"), D(10**6), places=4)
quantities = st.decimals(D("0.0001"), D(1000), places=4)


@settings(max_examples=300, deadline=None)
@given(reference=prices, price=prices)
def test_slippage_is_positive_when_worse_and_a_sell_is_a_buy_mirrored(reference, price):
    buy, sell = slippage_bps("buy", reference, price), slippage_bps("sell", reference, price)
    assert buy == -sell
    assert (buy > 0) == (price > reference)  # a buy above the reference is worse
    assert (sell > 0) == (price < reference)  # a sell below it is worse
    assert slippage_bps("buy", reference, reference) == 0


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(["buy", "sell"]),
    arrival=prices,
    fills=st.lists(st.tuples(quantities, prices, st.integers(0, 10**6)), min_size=1, max_size=10),
)
def test_an_orders_slippage_is_the_quantity_weighted_mean_of_its_fills(side, arrival, fills):
    total = sum((q for q, _, _ in fills), D(0))
    order = order_quality(side, total, arrival, arrival, [(q, p, D(0), ts) for q, p, ts in fills], created_ms=0)
    per_fill = [fill_slippage(side, q, p, D(0), arrival, arrival).slippage_bps for q, p, _ in fills]
    mean = sum((s * q for s, (q, _, _) in zip(per_fill, fills, strict=True)), D(0)) / total
    assert order.slippage_bps is not None
    assert abs(order.slippage_bps - mean) <= D("1e-15") * max(D(1), abs(mean))  # equal up to Decimal's 28 digits
    assert order.time_to_fill_ms == max(ts for _, _, ts in fills)
    assert order.fill_ratio == 1


@st.composite
def order_rows(draw: st.DrawFn) -> OrderQuality:
    side = draw(st.sampled_from(["buy", "sell"]))
    arrival = draw(st.one_of(st.none(), prices))
    fills = draw(st.lists(st.tuples(quantities, prices, st.integers(0, 10**6)), max_size=4))
    qty = sum((q for q, _, _ in fills), D(0)) + draw(st.sampled_from([D(0), D(1)]) if fills else st.just(D(1)))
    return order_quality(side, qty, arrival, None, [(q, p, D("0.01"), ts) for q, p, ts in fills], created_ms=0)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(order_rows(), max_size=30))
def test_aggregate_properties(rows):
    stats = aggregate(rows)
    assert stats.orders == len(rows)
    slips = [r.slippage_bps for r in rows if r.slippage_bps is not None]
    if not slips:
        assert stats.avg_slippage_bps is None and stats.p95_slippage_bps is None
    else:
        tolerance = D("1e-20") * (abs(min(slips)) + abs(max(slips)) + 1)  # Decimal's 28 digits
        assert min(slips) - tolerance <= stats.avg_slippage_bps <= max(slips) + tolerance
        p95 = stats.p95_slippage_bps
        assert p95 in slips
        # nearest rank: at least 95% of the values are <= it, fewer than 95% are below it
        assert sum(1 for s in slips if s <= p95) >= math.ceil(D("0.95") * len(slips))
        assert sum(1 for s in slips if s < p95) < math.ceil(D("0.95") * len(slips))
    if rows:
        assert 0 <= stats.fill_ratio <= 1
    assert stats.fees == sum((r.fees for r in rows), D(0))
    times = [r.time_to_fill_ms for r in rows if r.time_to_fill_ms is not None]
    assert (stats.avg_time_to_fill_ms is None) == (not times)
    if times:
        assert min(times) <= stats.avg_time_to_fill_ms <= max(times)
