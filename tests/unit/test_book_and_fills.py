"""Book walking, per-order fill accounting, the synthetic book and sizing (domain/book, fills, synthetic, sizing)."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.book import mid_price, vwap, walk_book
from domain.fills import OrderFills, Overfill
from domain.sizing import fixed_notional
from domain.synthetic import START_PRICES, SyntheticBook

D = Decimal


def lv(*pairs: tuple[str, str]) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(q)) for p, q in pairs]


ASKS = lv(("100", "1"), ("101", "2"), ("102", "3"))
BIDS = lv(("99", "1"), ("98", "2"), ("97", "3"))


# --------------------------------------------------------------------------------------------------
# walk_book / vwap / mid_price
# --------------------------------------------------------------------------------------------------
def test_walk_takes_levels_best_first():
    slices, left = walk_book(ASKS, D("2.5"))
    assert slices == lv(("100", "1"), ("101", "1.5"))
    assert left == 0


def test_walk_exact_level_boundary():
    slices, left = walk_book(ASKS, D("3"))
    assert slices == lv(("100", "1"), ("101", "2"))
    assert left == 0


def test_walk_partial_when_depth_runs_out():
    slices, left = walk_book(ASKS, D("10"))
    assert slices == ASKS
    assert left == D("4")
    assert walk_book([], D("1")) == ([], D("1"))


def test_walk_skips_empty_levels():
    slices, left = walk_book(lv(("100", "0"), ("101", "1")), D("1"))
    assert slices == lv(("101", "1"))
    assert left == 0


def test_walk_buy_stops_above_the_limit():
    slices, left = walk_book(ASKS, D("5"), D("101"), is_buy=True)
    assert slices == lv(("100", "1"), ("101", "2"))  # 101 is at the limit: taken; 102 is above: not
    assert left == D("2")
    assert walk_book(ASKS, D("1"), D("99.99"), is_buy=True) == ([], D("1"))


def test_walk_sell_stops_below_the_limit():
    slices, left = walk_book(BIDS, D("5"), D("98"), is_buy=False)
    assert slices == lv(("99", "1"), ("98", "2"))
    assert left == D("2")
    assert walk_book(BIDS, D("1"), D("99.01"), is_buy=False) == ([], D("1"))


@pytest.mark.parametrize("qty", ["0", "-1"])
def test_walk_rejects_non_positive_quantity(qty):
    with pytest.raises(ValueError):
        walk_book(ASKS, D(qty))


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 1000), max_size=10),
    qty=st.integers(1, 5000),
    limit=st.one_of(st.none(), st.integers(90, 115)),
    is_buy=st.booleans(),
)
def test_walk_conserves_quantity(sizes, qty, limit, is_buy):
    step = 1 if is_buy else -1
    levels = [(D(100 + step * i), D(s)) for i, s in enumerate(sizes)]
    quantity = D(qty)
    lim = None if limit is None else D(limit)
    slices, left = walk_book(levels, quantity, lim, is_buy=is_buy)
    assert sum(q for _, q in slices) + left == quantity
    assert left >= 0
    assert all(q > 0 for _, q in slices)
    if lim is not None:
        assert all((p <= lim) if is_buy else (p >= lim) for p, _ in slices)
    # slices are a prefix of the book, each level taken whole except possibly the last
    for i, (p, q) in enumerate(slices):
        assert p in dict(levels)
        if i < len(slices) - 1:
            assert q == dict(levels)[p]


def test_vwap():
    # (100*1 + 101*1.5) / 2.5 = 251.5 / 2.5 = 100.6
    assert vwap(lv(("100", "1"), ("101", "1.5"))) == D("100.6")
    assert vwap(lv(("100", "3"))) == D("100")
    assert vwap([]) is None


def test_mid_price():
    assert mid_price(BIDS, ASKS) == D("99.5")
    assert mid_price(BIDS, []) == D("99")
    assert mid_price([], ASKS) == D("100")
    assert mid_price([], []) is None


# --------------------------------------------------------------------------------------------------
# OrderFills
# --------------------------------------------------------------------------------------------------
def test_order_fills_running_totals():
    f = OrderFills(order_quantity=D("1"))
    assert f.average_price is None and not f.complete
    assert f.add("t1", D("0.4"), D("100"), D("0.04"))
    assert (f.filled, f.cost, f.fees, f.average_price) == (D("0.4"), D("40"), D("0.04"), D("100"))
    assert not f.complete
    assert f.add("t2", D("0.6"), D("110"), D("0.066"))
    # (0.4*100 + 0.6*110) / 1 = 106
    assert (f.filled, f.cost, f.fees, f.average_price) == (D("1"), D("106"), D("0.106"), D("106"))
    assert f.complete
    assert f.trade_ids == {"t1", "t2"}


def test_order_fills_duplicate_changes_nothing():
    f = OrderFills(order_quantity=D("1"))
    f.add("t1", D("0.4"), D("100"), D("0.04"))
    before = (set(f.trade_ids), f.filled, f.cost, f.fees)
    assert f.add("t1", D("0.4"), D("100"), D("0.04")) is False
    assert f.add("t1", D("0.5"), D("120"), D("1")) is False  # same id, other numbers: still a duplicate
    assert (f.trade_ids, f.filled, f.cost, f.fees) == before


def test_order_fills_overfill():
    f = OrderFills(order_quantity=D("1"))
    f.add("t1", D("0.7"), D("100"), D("0"))
    with pytest.raises(Overfill):
        f.add("t2", D("0.31"), D("100"), D("0"))
    assert (f.trade_ids, f.filled, f.cost) == ({"t1"}, D("0.7"), D("70"))
    assert f.add("t2", D("0.3"), D("100"), D("0"))  # exactly to the quantity is fine
    assert f.complete
    with pytest.raises(Overfill):
        f.add("t3", D("0.00000001"), D("100"), D("0"))


@pytest.mark.parametrize(("qty", "price"), [("0", "1"), ("-1", "1"), ("1", "0"), ("1", "-1")])
def test_order_fills_rejects_non_positive(qty, price):
    f = OrderFills(order_quantity=D("5"))
    with pytest.raises(ValueError):
        f.add("t1", D(qty), D(price), D(0))
    assert f.trade_ids == set() and f.filled == 0


# --------------------------------------------------------------------------------------------------
# SyntheticBook
# --------------------------------------------------------------------------------------------------
def _check_book(b, pair: str, ts: int) -> None:
    assert (b.pair, b.ts) == (pair, ts)
    assert len(b.bids) == 10 and len(b.asks) == 10
    bid_prices = [p for p, _ in b.bids]
    ask_prices = [p for p, _ in b.asks]
    assert all(a > b_ for a, b_ in itertools.pairwise(bid_prices)), bid_prices
    assert all(a < b_ for a, b_ in itertools.pairwise(ask_prices)), ask_prices
    assert bid_prices[0] < ask_prices[0]
    assert bid_prices[-1] > 0
    assert all(q > 0 for _, q in b.bids + b.asks)
    assert all(isinstance(x, Decimal) for lvl in b.bids + b.asks for x in lvl)


def test_synthetic_same_seed_same_books():
    a = SyntheticBook("BTC_USDT", 42)
    b = SyntheticBook("BTC_USDT", 42)
    books_a = [a.next(t) for t in range(50)]
    books_b = [b.next(t) for t in range(50)]
    assert books_a == books_b
    c = SyntheticBook("BTC_USDT", 43)
    assert [c.next(t) for t in range(50)] != books_a
    # the pair is part of the seed
    d = SyntheticBook("ETH_USDT", 42, start=D("60000"))
    assert [x.bids for x in (d.next(t) for t in range(5))] != [x.bids for x in books_a[:5]]


@pytest.mark.parametrize("base", [*START_PRICES, "UNKNOWN"])
def test_synthetic_book_shape(base):
    pair = f"{base}_USDT"
    sb = SyntheticBook(pair, 7)
    first = sb.next(0)
    mid = mid_price(first.bids, first.asks)
    start = START_PRICES.get(base, D(100))
    assert abs(mid - start) / start < D("0.01")
    for t in range(100):
        _check_book(sb.next(t), pair, t)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10**6), base=st.sampled_from(sorted(START_PRICES)))
def test_synthetic_book_shape_random_seeds(seed, base):
    sb = SyntheticBook(f"{base}_USDT", seed, volatility=0.01)
    for t in range(30):
        _check_book(sb.next(t), f"{base}_USDT", t)


# --------------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------------
def test_fixed_notional_rounds_down():
    # 10000 * 0.02 = 200; 200 / 60000.3 = 0.0033333166... -> 0.00333331 (down, not to nearest)
    qty, amount = fixed_notional(D("10000"), D("0.02"), D("60000.3"))
    assert qty == D("0.00333331")
    assert amount == D("0.00333331") * D("60000.3")
    # 200 / 3 = 66.666666666... -> 66.66666666 (round-half would give ...67)
    qty, amount = fixed_notional(D("10000"), D("0.02"), D("3"))
    assert qty == D("66.66666666")
    assert amount == D("199.99999998")
    # exact division stays exact
    assert fixed_notional(D("10000"), D("0.02"), D("100")) == (D("2"), D("200"))


@pytest.mark.parametrize("price", ["0", "-1"])
def test_fixed_notional_rejects_non_positive_price(price):
    with pytest.raises(ValueError):
        fixed_notional(D("10000"), D("0.02"), D(price))


@settings(max_examples=200, deadline=None)
@given(
    equity=st.integers(1, 10**7),
    fraction_bp=st.integers(1, 10_000),
    price=st.integers(1, 10**9).map(lambda n: D(n).scaleb(-4)),
)
def test_fixed_notional_never_overspends(equity, fraction_bp, price):
    budget = D(equity) * D(fraction_bp).scaleb(-4)
    qty, amount = fixed_notional(D(equity), D(fraction_bp).scaleb(-4), price)
    assert qty >= 0
    assert qty == qty.quantize(D("1e-8"))
    assert amount == qty * price
    assert amount <= budget
    assert budget - amount < D("1e-8") * price  # one more step would overspend
