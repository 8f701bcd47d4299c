"""The paper exchange's matching engine (domain/matching): rules, taking, making, priority, TIF, edits.

Every expectation is an exact Decimal, written out by hand (fee = quantity x price x rate computed here,
not by calling the engine's formula). The property tests at the end drive random sequences of books,
orders, cancels and edits and check the invariants the module docstring promises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.matching import MarketSpec, Matcher, SimOrder, SimTrade
from schemas.messages import Book

D = Decimal
PAIR = "ETH_USDT"
QUOTE = "USDT"
MAKER = D("0.001")
TAKER = D("0.002")
SPEC = MarketSpec(tick_size=D("0.01"), amount_step=D("0.001"), min_notional=D("10"), maker_fee=MAKER, taker_fee=TAKER)

ASKS = [("100", "1"), ("101", "2"), ("102", "3")]
BIDS = [("99", "1"), ("98", "2"), ("97", "3")]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def lv(levels) -> list[tuple[Decimal, Decimal]]:
    return [(D(p), D(q)) for p, q in levels]


def book(bids=(), asks=(), ts: int = 1) -> Book:
    return Book(pair=PAIR, bids=lv(bids), asks=lv(asks), ts=ts)


def std_book(ts: int = 1) -> Book:
    return book(BIDS, ASKS, ts)


def matcher(b: Book | None = None, slip: str | None = None, spec: MarketSpec = SPEC) -> Matcher:
    m = Matcher(PAIR, QUOTE, spec, D(slip) if slip is not None else None)
    if b is not None:
        assert m.on_book(b, b.ts) == []
    return m


def order(
    cid: str,
    side: str,
    qty: str,
    price: str | None = None,
    *,
    type: str | None = None,
    tif: str = "GTC",
    post_only: bool = False,
) -> SimOrder:
    return SimOrder(
        client_order_id=cid,
        venue_order_id=f"V{cid}",
        pair=PAIR,
        side=side,
        type=type or ("limit" if price is not None else "market"),
        quantity=D(qty),
        price=D(price) if price is not None else None,
        time_in_force=tif,
        post_only=post_only,
    )


def tr(o: SimOrder, n: int, qty: str, price: str, fee: str, liquidity: str, ts: int) -> SimTrade:
    """The trade we expect: the fee is written out by hand by the caller."""
    return SimTrade(
        trade_id=f"{o.venue_order_id}-{n}",
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        fee_currency=QUOTE,
        liquidity=liquidity,
        ts=ts,
    )


def assert_state(o: SimOrder, status: str, filled: str, m: Matcher, *, resting: bool) -> None:
    assert o.status == status
    assert o.filled == D(filled)
    assert o.filled == sum((t.quantity for t in o.trades), D(0))
    assert (o.client_order_id in m.resting) is resting
    if resting:
        assert m.resting[o.client_order_id] is o


def assert_untouched(m: Matcher, b: Book) -> None:
    """Nothing was taken from the current snapshot: a fresh taker gets every level in full."""
    assert m.consumed == {} or all(v == 0 for v in m.consumed.values())
    probe_buy = order("probe-b", "buy", "1000000", tif="IOC")
    probe_sell = order("probe-s", "sell", "1000000", tif="IOC")
    m2 = Matcher(m.pair, m.quote, m.spec, None, book=m.book, consumed=dict(m.consumed))
    got_buy = [(t.price, t.quantity) for t in m2.submit(probe_buy, 0)]
    got_sell = [(t.price, t.quantity) for t in m2.submit(probe_sell, 0)]
    assert got_buy == list(b.asks)
    assert got_sell == list(b.bids)


# --------------------------------------------------------------------------------------------------
# rules
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("o", "words"),
    [
        (order("q-step", "buy", "1.0005", "100"), ["quantity 1.0005", "amount step 0.001", PAIR]),
        (order("q-step-m", "buy", "1.0005"), ["quantity 1.0005", "amount step 0.001"]),
        (order("p-tick", "buy", "1", "100.005"), ["price 100.005", "tick 0.01", PAIR]),
        (order("p-tick-s", "sell", "1", "98.999"), ["price 98.999", "tick 0.01"]),
        (order("notional-l", "buy", "0.099", "100"), ["notional 9.900", "below the minimum 10", PAIR]),
        (order("notional-ls", "sell", "0.05", "120"), ["notional 6.00", "below the minimum 10"]),
        (order("q-zero", "buy", "0", "100"), ["quantity must be positive", "got 0"]),
        (order("q-neg", "sell", "-1", "99"), ["quantity must be positive", "got -1"]),
        (order("q-zero-m", "buy", "0"), ["quantity must be positive"]),
        (order("no-price", "buy", "1", type="limit"), ["limit order needs a positive price"]),
        (order("zero-price", "buy", "1", "0"), ["limit order needs a positive price"]),
        (order("neg-price", "sell", "1", "-99"), ["limit order needs a positive price"]),
    ],
    ids=lambda v: v.client_order_id if isinstance(v, SimOrder) else "",
)
def test_rule_violation_rejects_with_reason(o: SimOrder, words: list[str]):
    b = std_book()
    m = matcher(b)
    assert m.submit(o, 7) == []
    assert o.status == "rejected"
    assert o.reason is not None
    for w in words:
        assert w in o.reason
    assert o.filled == 0 and o.trades == [] and o.cost == 0
    assert o.client_order_id not in m.resting
    assert o.created_at == o.updated_at == 7
    assert_untouched(m, b)
    assert m.on_book(book([("200", "5")], [("1", "5")], ts=8), 8) == []  # never fills later either
    assert o.filled == 0


def test_rejected_even_when_it_would_cross_and_nothing_is_rounded():
    m = matcher(std_book())
    o = order("a", "buy", "1.0005", "101")  # would cross; not rounded down to 1.000
    m.submit(o, 1)
    assert o.status == "rejected"
    assert o.quantity == D("1.0005") and o.price == D("101")
    assert o.trades == []


def test_limit_notional_exactly_at_minimum_is_accepted():
    m = matcher(std_book())
    o = order("a", "buy", "0.1", "100")  # 0.1 x 100 = 10
    trades = m.submit(o, 3)
    assert trades == [tr(o, 1, "0.1", "100", "0.02", "taker", 3)]
    assert_state(o, "closed", "0.1", m, resting=False)
    assert o.reason is None


def test_limit_notional_uses_the_limit_price_not_the_touch():
    # 0.1 x 99.99 = 9.999 < 10: rejected; 0.099 x 101.02 = 10.00098 >= 10: accepted, although it then
    # fills at 100 (9.9 of notional)
    m = matcher(std_book())
    low = order("low", "buy", "0.1", "99.99")
    m.submit(low, 1)
    assert low.status == "rejected" and "notional 9.999" in low.reason
    high = order("high", "buy", "0.099", "101.02")  # 0.099 x 101.02 = 10.00098
    assert m.submit(high, 2) == [tr(high, 1, "0.099", "100", "0.019800", "taker", 2)]
    assert high.status == "closed"


def test_market_notional_uses_the_touch_of_its_side():
    m = matcher(book([("99.99", "5")], [("100", "5")]))
    buy = order("b", "buy", "0.1")  # 0.1 x best ask 100 = 10: ok
    assert m.submit(buy, 1) == [tr(buy, 1, "0.1", "100", "0.02", "taker", 1)]
    sell = order("s", "sell", "0.1")  # 0.1 x best bid 99.99 = 9.999: too small
    assert m.submit(sell, 2) == []
    assert sell.status == "rejected"
    assert "notional 9.999" in sell.reason and "below the minimum 10" in sell.reason
    assert sell.filled == 0 and sell.trades == []


def test_market_notional_is_checked_at_the_touch_even_if_deeper_levels_are_dearer():
    m = matcher(book([], [("99", "0.001"), ("200", "5")]))
    o = order("b", "buy", "0.1")  # 0.1 x 99 = 9.9 < 10 although it would pay 200 for most of it
    m.submit(o, 1)
    assert o.status == "rejected" and "notional 9.9" in o.reason


def test_step_and_tick_of_zero_mean_no_rule():
    spec = MarketSpec(tick_size=D(0), amount_step=D(0), min_notional=D(0), maker_fee=MAKER, taker_fee=TAKER)
    m = matcher(book([], [("100.123456", "0.3333333")]), spec=spec)
    o = order("a", "buy", "0.12345678", "100.5555555")
    assert m.submit(o, 1) == [tr(o, 1, "0.12345678", "100.123456", "0.02472183896046336", "taker", 1)]
    assert o.status == "closed"


# --------------------------------------------------------------------------------------------------
# market orders walking the book
# --------------------------------------------------------------------------------------------------
def test_market_buy_walks_levels_one_trade_per_level():
    m = matcher(std_book())
    o = order("a", "buy", "4", tif="IOC")
    trades = m.submit(o, 5)
    assert trades == [
        tr(o, 1, "1", "100", "0.2", "taker", 5),
        tr(o, 2, "2", "101", "0.404", "taker", 5),
        tr(o, 3, "1", "102", "0.204", "taker", 5),
    ]
    assert o.trades == trades
    assert_state(o, "closed", "4", m, resting=False)
    assert o.cost == D("404")
    assert o.reason is None
    assert o.updated_at == 5


def test_market_sell_walks_bids_one_trade_per_level():
    m = matcher(std_book())
    o = order("a", "sell", "2.5")
    trades = m.submit(o, 6)
    assert trades == [
        tr(o, 1, "1", "99", "0.198", "taker", 6),
        tr(o, 2, "1.5", "98", "0.294", "taker", 6),
    ]
    assert_state(o, "closed", "2.5", m, resting=False)
    assert o.cost == D("246")


def test_market_exact_depth_fills_fully():
    m = matcher(std_book())
    o = order("a", "sell", "6", tif="IOC")
    assert [(t.price, t.quantity) for t in m.submit(o, 1)] == lv(BIDS)
    assert_state(o, "closed", "6", m, resting=False)


def test_market_ioc_partial_when_depth_runs_out_is_canceled():
    m = matcher(std_book())
    o = order("a", "buy", "7", tif="IOC")
    trades = m.submit(o, 9)
    assert trades == [
        tr(o, 1, "1", "100", "0.2", "taker", 9),
        tr(o, 2, "2", "101", "0.404", "taker", 9),
        tr(o, 3, "3", "102", "0.612", "taker", 9),
    ]
    assert_state(o, "canceled", "6", m, resting=False)
    assert o.remaining == D("1")
    assert o.reason == "IOC: the rest was canceled"
    # the canceled rest does not fill on a later book
    assert m.on_book(book([], [("100", "50")], ts=10), 10) == []
    assert o.filled == D("6")


@pytest.mark.parametrize("tif", ["GTC", "GTD"])
def test_market_gtc_partial_keeps_resting_and_takes_from_next_book(tif: str):
    m = matcher(std_book())
    o = order("a", "buy", "7", tif=tif)
    trades = m.submit(o, 9)
    assert [t.trade_id for t in trades] == ["Va-1", "Va-2", "Va-3"]
    assert_state(o, "open", "6", m, resting=True)
    assert o.reason is None
    out = m.on_book(book([("99", "1")], [("103", "0.4"), ("104", "5")], ts=20), 20)
    assert out == [(o, [tr(o, 4, "0.4", "103", "0.0824", "taker", 20), tr(o, 5, "0.6", "104", "0.1248", "taker", 20)])]
    assert_state(o, "closed", "7", m, resting=False)
    assert o.cost == D("711.6")
    assert o.updated_at == 20


def test_market_gtc_waits_through_books_without_its_side():
    m = matcher(book([("99", "1")], [("100", "1")]))
    o = order("a", "buy", "3")
    m.submit(o, 1)
    assert_state(o, "open", "1", m, resting=True)
    assert m.on_book(book([("99", "1")], [], ts=2), 2) == []
    assert_state(o, "open", "1", m, resting=True)
    assert m.on_book(book([], [("105", "9")], ts=3), 3) == [(o, [tr(o, 2, "2", "105", "0.42", "taker", 3)])]
    assert_state(o, "closed", "3", m, resting=False)


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_market_without_book_is_rejected(side: str):
    m = matcher()
    o = order("a", side, "1")
    assert m.submit(o, 4) == []
    assert o.status == "rejected"
    assert o.reason == f"no market data for {PAIR}"
    assert o.client_order_id not in m.resting
    assert m.on_book(std_book(5), 5) == []
    assert o.trades == []


def test_market_with_empty_side_is_rejected_as_no_market_data():
    m = matcher(book([("99", "1")], []))
    buy = order("b", "buy", "1")
    m.submit(buy, 1)
    assert buy.status == "rejected" and buy.reason == f"no market data for {PAIR}"
    sell = order("s", "sell", "1")
    assert m.submit(sell, 2) == [tr(sell, 1, "1", "99", "0.198", "taker", 2)]


# --------------------------------------------------------------------------------------------------
# max slippage band
# --------------------------------------------------------------------------------------------------
def test_market_buy_never_fills_above_the_band_ioc():
    m = matcher(std_book(), slip="1.5")  # band = 100 x 1.015 = 101.5
    o = order("a", "buy", "7", tif="IOC")
    trades = m.submit(o, 3)
    assert o.band == D("101.5")
    assert trades == [tr(o, 1, "1", "100", "0.2", "taker", 3), tr(o, 2, "2", "101", "0.404", "taker", 3)]
    assert_state(o, "canceled", "3", m, resting=False)
    assert o.reason == "IOC: the rest was canceled"


def test_market_sell_never_fills_below_the_band_ioc():
    m = matcher(std_book(), slip="1.5")  # band = 99 x 0.985 = 97.515
    o = order("a", "sell", "7", tif="IOC")
    trades = m.submit(o, 3)
    assert o.band == D("97.515")
    assert trades == [tr(o, 1, "1", "99", "0.198", "taker", 3), tr(o, 2, "2", "98", "0.392", "taker", 3)]
    assert_state(o, "canceled", "3", m, resting=False)


def test_band_is_inclusive():
    m = matcher(
        book([("99", "1"), ("98.01", "1"), ("98", "1")], [("100", "1"), ("101", "1"), ("101.01", "1")]), slip="1"
    )
    buy = order("b", "buy", "3", tif="IOC")  # band 100 x 1.01 = 101: takes 101 itself, not 101.01
    assert [t.price for t in m.submit(buy, 1)] == [D("100"), D("101")]
    assert buy.band == D("101") and buy.filled == D("2")
    sell = order("s", "sell", "3", tif="IOC")  # band 99 x 0.99 = 98.01: takes 98.01 itself, not 98
    assert [t.price for t in m.submit(sell, 1)] == [D("99"), D("98.01")]
    assert sell.band == D("98.01") and sell.filled == D("2")


def test_band_only_touch_when_slippage_is_zero():
    m = matcher(std_book(), slip="0")
    o = order("a", "buy", "3", tif="IOC")
    assert [(t.price, t.quantity) for t in m.submit(o, 1)] == [(D("100"), D("1"))]
    assert o.band == D("100")


def test_no_band_without_slippage_setting():
    m = matcher(std_book())
    o = order("a", "buy", "6", tif="IOC")
    m.submit(o, 1)
    assert o.band is None
    assert o.status == "closed"


def test_band_does_not_apply_to_limit_orders():
    m = matcher(std_book(), slip="0.5")
    o = order("a", "buy", "6", "102", tif="IOC")
    m.submit(o, 1)
    assert o.band is None
    assert [t.price for t in o.trades] == [D("100"), D("101"), D("102")]


def test_band_is_fixed_at_submission_and_kept_on_later_books():
    m = matcher(std_book(), slip="1.5")
    o = order("a", "buy", "7")  # GTC: band 101.5
    m.submit(o, 1)
    assert_state(o, "open", "3", m, resting=True)
    # a book whose touch is worse than the band: nothing
    assert m.on_book(book([], [("102", "10")], ts=2), 2) == []
    assert_state(o, "open", "3", m, resting=True)
    # a cheaper book: a band recomputed from this touch (101 x 1.015 = 102.515) would take 102 as well
    out = m.on_book(book([], [("101", "1"), ("101.5", "1"), ("102", "10")], ts=3), 3)
    assert out == [(o, [tr(o, 3, "1", "101", "0.202", "taker", 3), tr(o, 4, "1", "101.5", "0.203", "taker", 3)])]
    assert_state(o, "open", "5", m, resting=True)
    assert o.band == D("101.5")
    out = m.on_book(book([], [("90", "10")], ts=4), 4)
    assert out == [(o, [tr(o, 5, "2", "90", "0.36", "taker", 4)])]
    assert_state(o, "closed", "7", m, resting=False)


def test_band_sell_kept_on_later_books():
    m = matcher(std_book(), slip="1")  # band 99 x 0.99 = 98.01
    o = order("a", "sell", "4")
    m.submit(o, 1)
    assert o.band == D("98.01")
    assert o.filled == D("1")
    out = m.on_book(book([("98.01", "1"), ("98", "9")], [], ts=2), 2)
    assert out == [(o, [tr(o, 2, "1", "98.01", "0.19602", "taker", 2)])]
    assert_state(o, "open", "2", m, resting=True)


def test_fok_market_respects_band():
    m = matcher(std_book(), slip="1.5")
    o = order("a", "buy", "4", tif="FOK")  # 6 in the book but only 3 within 101.5
    assert m.submit(o, 1) == []
    assert_state(o, "canceled", "0", m, resting=False)
    assert o.reason.startswith("FOK")
    ok = order("b", "buy", "3", tif="FOK")
    assert [t.price for t in m.submit(ok, 2)] == [D("100"), D("101")]
    assert ok.status == "closed"


# --------------------------------------------------------------------------------------------------
# limit orders: taking, resting, making
# --------------------------------------------------------------------------------------------------
def test_marketable_limit_buy_takes_up_to_its_price_then_rests():
    m = matcher(std_book())
    o = order("a", "buy", "4", "101")
    trades = m.submit(o, 2)
    assert trades == [tr(o, 1, "1", "100", "0.2", "taker", 2), tr(o, 2, "2", "101", "0.404", "taker", 2)]
    assert_state(o, "open", "3", m, resting=True)
    assert o.remaining == D("1")


def test_marketable_limit_sell_takes_down_to_its_price():
    m = matcher(std_book())
    o = order("a", "sell", "2", "98", tif="IOC")
    trades = m.submit(o, 2)
    assert trades == [tr(o, 1, "1", "99", "0.198", "taker", 2), tr(o, 2, "1", "98", "0.196", "taker", 2)]
    assert_state(o, "closed", "2", m, resting=False)


def test_marketable_limit_between_levels():
    m = matcher(std_book())
    o = order("a", "buy", "4", "101.99", tif="IOC")
    assert [t.price for t in m.submit(o, 2)] == [D("100"), D("101")]
    assert_state(o, "canceled", "3", m, resting=False)
    assert o.reason == "IOC: the rest was canceled"


@pytest.mark.parametrize(("side", "price"), [("buy", "99.99"), ("buy", "99"), ("sell", "100.01"), ("sell", "103")])
def test_non_marketable_limit_rests(side: str, price: str):
    b = std_book()
    m = matcher(b)
    o = order("a", side, "1", price)
    assert m.submit(o, 2) == []
    assert_state(o, "open", "0", m, resting=True)
    assert o.reason is None
    assert_untouched(m, b)


def test_limit_without_book_rests():
    m = matcher()
    o = order("a", "buy", "1", "100")
    assert m.submit(o, 1) == []
    assert_state(o, "open", "0", m, resting=True)


def test_resting_buy_fills_as_maker_at_its_price_partially_then_fully_over_books():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    # 0.4 at 99 and 0.3 at 99.5 are at or better than 99.5; 100 is not
    out = m.on_book(book([("98", "1")], [("99", "0.4"), ("99.5", "0.3"), ("100", "5")], ts=2), 2)
    assert out == [(o, [tr(o, 1, "0.7", "99.5", "0.06965", "maker", 2)])]
    assert_state(o, "open", "0.7", m, resting=True)
    # a book that does not cross: nothing
    assert m.on_book(book([("98", "1")], [("99.51", "9")], ts=3), 3) == []
    assert_state(o, "open", "0.7", m, resting=True)
    out = m.on_book(book([("98", "1")], [("99.4", "0.2"), ("99.6", "9")], ts=4), 4)
    assert out == [(o, [tr(o, 2, "0.2", "99.5", "0.0199", "maker", 4)])]
    assert_state(o, "open", "0.9", m, resting=True)
    out = m.on_book(book([("98", "1")], [("99.5", "5")], ts=5), 5)
    assert out == [(o, [tr(o, 3, "0.1", "99.5", "0.00995", "maker", 5)])]
    assert_state(o, "closed", "1", m, resting=False)
    assert o.cost == D("99.5")
    assert m.on_book(book([("98", "1")], [("90", "5")], ts=6), 6) == []


def test_resting_sell_fills_as_maker_at_its_price():
    m = matcher(std_book())
    o = order("a", "sell", "1", "100.5")
    m.submit(o, 1)
    out = m.on_book(book([("101", "0.3"), ("100.5", "0.2"), ("100", "9")], [("102", "1")], ts=2), 2)
    assert out == [(o, [tr(o, 1, "0.5", "100.5", "0.05025", "maker", 2)])]
    assert_state(o, "open", "0.5", m, resting=True)


def test_resting_maker_fills_fully_at_its_price_even_deep_in_the_money():
    m = matcher(std_book())
    o = order("a", "buy", "2", "99.5")
    m.submit(o, 1)
    out = m.on_book(book([], [("90", "5")], ts=2), 2)
    assert out == [(o, [tr(o, 1, "2", "99.5", "0.199", "maker", 2)])]
    assert_state(o, "closed", "2", m, resting=False)


def test_partially_taken_limit_then_makes_on_next_book():
    m = matcher(std_book())
    o = order("a", "buy", "4", "101")
    m.submit(o, 1)  # 1@100 + 2@101 taker, 1 left
    out = m.on_book(book([], [("100.5", "3")], ts=2), 2)
    assert out == [(o, [tr(o, 3, "1", "101", "0.101", "maker", 2)])]
    assert [t.liquidity for t in o.trades] == ["taker", "taker", "maker"]
    assert_state(o, "closed", "4", m, resting=False)


def test_on_book_updates_the_book_for_later_submissions():
    m = matcher(std_book())
    m.on_book(book([], [("200", "1")], ts=2), 2)
    o = order("a", "buy", "1", tif="IOC")
    assert m.submit(o, 3) == [tr(o, 1, "1", "200", "0.4", "taker", 3)]


# --------------------------------------------------------------------------------------------------
# one snapshot's liquidity is taken once
# --------------------------------------------------------------------------------------------------
def test_two_takers_share_one_snapshot():
    m = matcher(std_book())
    a = order("a", "buy", "1.5", tif="IOC")
    b = order("b", "buy", "2", tif="IOC")
    assert m.submit(a, 1) == [tr(a, 1, "1", "100", "0.2", "taker", 1), tr(a, 2, "0.5", "101", "0.101", "taker", 1)]
    assert m.submit(b, 2) == [tr(b, 1, "1.5", "101", "0.303", "taker", 2), tr(b, 2, "0.5", "102", "0.102", "taker", 2)]
    c = order("c", "buy", "5", tif="IOC")
    assert [(t.price, t.quantity) for t in m.submit(c, 3)] == [(D("102"), D("2.5"))]
    assert_state(c, "canceled", "2.5", m, resting=False)
    # the sells are independent of what the buys took
    s = order("s", "sell", "1", tif="IOC")
    assert m.submit(s, 4) == [tr(s, 1, "1", "99", "0.198", "taker", 4)]


def test_snapshot_exhausted_then_new_book_resets():
    m = matcher(std_book())
    a = order("a", "buy", "6", tif="IOC")
    m.submit(a, 1)
    b = order("b", "buy", "1", tif="IOC")
    assert m.submit(b, 2) == []
    assert_state(b, "canceled", "0", m, resting=False)
    assert b.reason == "IOC: nothing to fill now"
    m.on_book(std_book(3), 3)  # the same levels again: a new snapshot
    c = order("c", "buy", "1.5", tif="IOC")
    assert m.submit(c, 4) == [tr(c, 1, "1", "100", "0.2", "taker", 4), tr(c, 2, "0.5", "101", "0.101", "taker", 4)]


def test_marketable_limit_gets_only_what_is_left():
    m = matcher(std_book())
    m.submit(order("a", "buy", "2"), 1)  # 1@100, 1@101
    o = order("b", "buy", "3", "101")
    assert m.submit(o, 2) == [tr(o, 1, "1", "101", "0.202", "taker", 2)]
    assert_state(o, "open", "1", m, resting=True)


def test_two_resting_makers_share_a_new_book():
    m = matcher(std_book())
    a = order("a", "buy", "1", "99.5")
    b = order("b", "buy", "1", "99.5")
    m.submit(a, 1)
    m.submit(b, 1)
    out = m.on_book(book([], [("99.5", "1.5")], ts=2), 2)
    assert out == [
        (a, [tr(a, 1, "1", "99.5", "0.0995", "maker", 2)]),
        (b, [tr(b, 1, "0.5", "99.5", "0.04975", "maker", 2)]),
    ]
    assert_state(a, "closed", "1", m, resting=False)
    assert_state(b, "open", "0.5", m, resting=True)


def test_maker_consumption_is_remembered_best_level_first():
    m = matcher(std_book())
    mk = order("mk", "buy", "1", "99.99")
    m.submit(mk, 1)
    out = m.on_book(book([], [("99.5", "0.6"), ("99.99", "1"), ("101", "5")], ts=2), 2)
    assert out == [(mk, [tr(mk, 1, "1", "99.99", "0.09999", "maker", 2)])]
    # the maker used 0.6 at 99.5 and 0.4 at 99.99: a taker finds 0.6 at 99.99 then 101
    t = order("t", "buy", "1", "100", tif="IOC")
    assert m.submit(t, 3) == [tr(t, 1, "0.6", "99.99", "0.119988", "taker", 3)]
    assert_state(t, "canceled", "0.6", m, resting=False)
    assert m.consumed == {("ask", D("99.5")): D("0.6"), ("ask", D("99.99")): D("1.0")}


def test_taker_on_book_leaves_less_for_makers():
    m = matcher(book([("99", "1")], [("101", "0.5")]))
    lim = order("l", "buy", "2", "100")  # arrives first, rests
    m.submit(lim, 1)
    mkt = order("m", "buy", "1.5")  # market GTC: 0.5@101 then rests with 1
    m.submit(mkt, 1)
    out = m.on_book(book([], [("99", "1.5"), ("100", "1")], ts=2), 2)
    # market first (although it arrived later): 1@99; the limit gets 0.5@99 + 1@100 = 1.5 at its price 100
    assert out == [
        (mkt, [tr(mkt, 2, "1", "99", "0.198", "taker", 2)]),
        (lim, [tr(lim, 1, "1.5", "100", "0.15", "maker", 2)]),
    ]
    assert_state(lim, "open", "1.5", m, resting=True)


# --------------------------------------------------------------------------------------------------
# priority on a new book
# --------------------------------------------------------------------------------------------------
def test_priority_market_then_better_price_then_seq_buys():
    m = matcher(book([("98", "1")], [("101", "0.2")]))
    # arrival order l1, l2, l3, mk differs from the priority mk, l2, l3, l1: the engine sorts
    l1 = order("l1", "buy", "1", "100")
    l2 = order("l2", "buy", "1", "100.5")
    l3 = order("l3", "buy", "1", "100.5")
    mk = order("mk", "buy", "1.2")  # market GTC: 0.2@101 now, 1 left
    for o in (l1, l2, l3, mk):
        m.submit(o, 1)
    assert [o.seq for o in (l1, l2, l3, mk)] == [1, 2, 3, 4]
    assert mk.filled == D("0.2") and mk.status == "open"
    assert all(o.status == "open" and o.filled == 0 for o in (l1, l2, l3))
    out = m.on_book(book([], [("100", "2.5")], ts=2), 2)
    assert out == [
        (mk, [tr(mk, 2, "1", "100", "0.2", "taker", 2)]),
        (l2, [tr(l2, 1, "1", "100.5", "0.1005", "maker", 2)]),
        (l3, [tr(l3, 1, "0.5", "100.5", "0.05025", "maker", 2)]),
    ]
    assert_state(l1, "open", "0", m, resting=True)
    assert_state(l3, "open", "0.5", m, resting=True)


def test_priority_sells_lower_price_first():
    m = matcher(book([("99", "1")], [("105", "1")]))
    s_hi = order("hi", "sell", "1", "101")
    s_lo = order("lo", "sell", "1", "100.5")
    m.submit(s_hi, 1)
    m.submit(s_lo, 1)
    out = m.on_book(book([("102", "1.5")], [("105", "1")], ts=2), 2)
    assert out == [
        (s_lo, [tr(s_lo, 1, "1", "100.5", "0.1005", "maker", 2)]),
        (s_hi, [tr(s_hi, 1, "0.5", "101", "0.0505", "maker", 2)]),
    ]


def test_priority_same_price_by_arrival():
    m = matcher(book([("98", "1")], [("105", "1")]))
    early = order("early", "buy", "1", "100")
    late = order("late", "buy", "1", "100")
    m.submit(early, 1)
    m.submit(late, 1)
    out = m.on_book(book([], [("100", "1")], ts=2), 2)
    assert out == [(early, [tr(early, 1, "1", "100", "0.1", "maker", 2)])]
    assert_state(late, "open", "0", m, resting=True)


def test_priority_same_price_by_seq_not_by_insertion():
    # "a" is first in the resting dict, but repricing gave it a later seq than "b"
    m = matcher(book([("98", "1")], [("105", "1")]))
    a = order("a", "buy", "1", "99.99")
    b = order("b", "buy", "1", "100")
    m.submit(a, 1)
    m.submit(b, 1)
    m.edit("a", 2, price=D("100"))
    assert list(m.resting) == ["a", "b"]
    assert a.seq > b.seq
    out = m.on_book(book([], [("100", "1")], ts=3), 3)
    assert out == [(b, [tr(b, 1, "1", "100", "0.1", "maker", 3)])]
    assert_state(a, "open", "0", m, resting=True)


def test_matcher_assigns_arrival_seq_itself():
    m = matcher(std_book())
    m.seq = 41  # e.g. restored from saved orders
    a = SimOrder(
        client_order_id="a",
        venue_order_id="Va",
        pair=PAIR,
        side="buy",
        type="limit",
        quantity=D("1"),
        price=D("99"),
        seq=999,
    )
    rej = order("r", "buy", "0", "99")
    b = order("b", "buy", "1", "99")
    m.submit(a, 1)
    m.submit(rej, 1)
    m.submit(b, 1)
    assert a.seq == 42  # the caller's 999 is overwritten
    assert a.seq < b.seq == m.seq
    m.edit("a", 2, price=D("98"))
    assert a.seq == m.seq > b.seq


def test_market_orders_among_themselves_by_arrival():
    m = matcher(book([("98", "1")], [("101", "0.2")]))
    a = order("a", "buy", "1.1")
    b = order("b", "buy", "1.1")
    m.submit(a, 1)  # 0.2 @ 101, 0.9 left
    m.submit(b, 1)  # nothing left on the snapshot: 1.1 left
    assert a.filled == D("0.2") and b.filled == 0 and b.status == "open"
    out = m.on_book(book([], [("101", "1.5")], ts=2), 2)
    assert out == [
        (a, [tr(a, 2, "0.9", "101", "0.1818", "taker", 2)]),
        (b, [tr(b, 1, "0.6", "101", "0.1212", "taker", 2)]),
    ]
    assert_state(a, "closed", "1.1", m, resting=False)
    assert_state(b, "open", "0.6", m, resting=True)


# --------------------------------------------------------------------------------------------------
# FOK / IOC
# --------------------------------------------------------------------------------------------------
def test_fok_fills_entirely_now():
    m = matcher(std_book())
    o = order("a", "buy", "3", "101", tif="FOK")
    assert m.submit(o, 1) == [tr(o, 1, "1", "100", "0.2", "taker", 1), tr(o, 2, "2", "101", "0.404", "taker", 1)]
    assert_state(o, "closed", "3", m, resting=False)
    assert o.reason is None


@pytest.mark.parametrize(("qty", "price"), [("3.001", "101"), ("6.001", None), ("1", "99.99"), ("2.5", "100")])
def test_fok_not_enough_is_canceled_without_trades(qty: str, price: str | None):
    b = std_book()
    m = matcher(b)
    o = order("a", "buy", qty, price, tif="FOK")
    assert m.submit(o, 1) == []
    assert_state(o, "canceled", "0", m, resting=False)
    assert o.reason == "FOK: not enough liquidity to fill it entirely now"
    assert_untouched(m, b)


def test_fok_market_sell_exact_depth():
    m = matcher(std_book())
    o = order("a", "sell", "6", tif="FOK")
    assert len(m.submit(o, 1)) == 3
    assert_state(o, "closed", "6", m, resting=False)


def test_fok_counts_only_what_is_left_of_the_snapshot():
    m = matcher(std_book())
    m.submit(order("x", "buy", "1", tif="IOC"), 1)  # takes the 100 level
    o = order("a", "buy", "3", "101", tif="FOK")  # would fit a fresh book
    assert m.submit(o, 2) == []
    assert o.status == "canceled" and o.trades == []
    o2 = order("b", "buy", "2", "101", tif="FOK")
    assert m.submit(o2, 3) == [tr(o2, 1, "2", "101", "0.404", "taker", 3)]


def test_fok_without_book_is_canceled():
    m = matcher()
    o = order("a", "buy", "1", "100", tif="FOK")
    m.submit(o, 1)
    assert_state(o, "canceled", "0", m, resting=False)


def test_ioc_fills_what_it_can():
    m = matcher(std_book())
    o = order("a", "sell", "2", "98.5", tif="IOC")
    assert m.submit(o, 1) == [tr(o, 1, "1", "99", "0.198", "taker", 1)]
    assert_state(o, "canceled", "1", m, resting=False)
    assert o.reason == "IOC: the rest was canceled"


def test_ioc_not_marketable_is_canceled_unfilled():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5", tif="IOC")
    assert m.submit(o, 1) == []
    assert_state(o, "canceled", "0", m, resting=False)
    assert o.reason == "IOC: nothing to fill now"


def test_fok_is_all_or_nothing_with_book_sizes_off_the_amount_step():
    # regression: fillable() used to step down the summed depth (0.3) while _take steps down each level
    # (0.1 + 0.1): the FOK passed the check, filled 0.2 and was then canceled with trades
    spec = MarketSpec(tick_size=D("0.01"), amount_step=D("0.1"), min_notional=D("1"), maker_fee=MAKER, taker_fee=TAKER)
    m = matcher(book([("99", "5")], [("100", "0.15"), ("101", "0.15"), ("102", "0.25")]), spec=spec)
    o = order("a", "buy", "0.3", "101", tif="FOK")
    assert m.submit(o, 1) == []
    assert_state(o, "canceled", "0", m, resting=False)
    assert o.reason == "FOK: not enough liquidity to fill it entirely now"
    assert m.consumed == {}
    ok = order("b", "buy", "0.4", "102", tif="FOK")  # 0.1 + 0.1 + 0.2 per level
    assert m.submit(ok, 2) == [
        tr(ok, 1, "0.1", "100", "0.02", "taker", 2),
        tr(ok, 2, "0.1", "101", "0.0202", "taker", 2),
        tr(ok, 3, "0.2", "102", "0.0408", "taker", 2),
    ]
    assert_state(ok, "closed", "0.4", m, resting=False)


def test_maker_fill_is_stepped_down_when_book_sizes_are_off_the_amount_step():
    spec = MarketSpec(tick_size=D("0.01"), amount_step=D("0.1"), min_notional=D("1"), maker_fee=MAKER, taker_fee=TAKER)
    m = matcher(book([("98", "1")], [("101", "1")]), spec=spec)
    o = order("a", "buy", "1", "100")
    m.submit(o, 1)
    out = m.on_book(book([("98", "1")], [("99.5", "0.15"), ("100", "0.17"), ("101", "9")], ts=2), 2)
    # 0.32 at or better than 100: the fill is 0.3, on the step; it uses 0.15 at 99.5 and 0.15 at 100
    assert out == [(o, [tr(o, 1, "0.3", "100", "0.03", "maker", 2)])]
    assert m.consumed == {("ask", D("99.5")): D("0.15"), ("ask", D("100")): D("0.15")}
    assert_state(o, "open", "0.3", m, resting=True)


def test_fok_market_with_book_sizes_off_the_amount_step():
    spec = MarketSpec(tick_size=D("0.01"), amount_step=D("0.1"), min_notional=D("1"), maker_fee=MAKER, taker_fee=TAKER)
    m = matcher(book([("99", "0.15"), ("98", "0.15")], [("100", "9")]), spec=spec)
    o = order("a", "sell", "0.3", tif="FOK")
    assert m.submit(o, 1) == []
    assert_state(o, "canceled", "0", m, resting=False)
    ioc = order("b", "sell", "0.3", tif="IOC")  # what one trade per level can do: 0.1 + 0.1
    assert [(t.price, t.quantity) for t in m.submit(ioc, 2)] == [(D("99"), D("0.1")), (D("98"), D("0.1"))]
    assert_state(ioc, "canceled", "0.2", m, resting=False)


# --------------------------------------------------------------------------------------------------
# post-only
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("side", "price"), [("buy", "100"), ("buy", "150"), ("sell", "99"), ("sell", "50")])
def test_post_only_that_would_take_is_rejected(side: str, price: str):
    b = std_book()
    m = matcher(b)
    o = order("a", side, "1", price, post_only=True)
    assert m.submit(o, 1) == []
    assert_state(o, "rejected", "0", m, resting=False)
    assert o.reason == "post-only order would take liquidity"
    assert_untouched(m, b)


def test_post_only_market_is_rejected():
    m = matcher(std_book())
    o = order("a", "buy", "1", post_only=True)
    m.submit(o, 1)
    assert o.status == "rejected" and o.reason == "post-only order would take liquidity"


def test_post_only_rests_and_makes_later():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.99", post_only=True)
    assert m.submit(o, 1) == []
    assert_state(o, "open", "0", m, resting=True)
    out = m.on_book(book([], [("99", "3")], ts=2), 2)
    assert out == [(o, [tr(o, 1, "1", "99.99", "0.09999", "maker", 2)])]
    assert o.status == "closed"


def test_post_only_edit_to_marketable_price_is_refused():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5", post_only=True)
    m.submit(o, 1)
    seq = o.seq
    got, why, trades = m.edit("a", 2, price=D("100"))
    assert got is o
    assert why == "post-only order would take liquidity"
    assert trades == []
    assert (o.price, o.quantity, o.seq, o.updated_at, o.status) == (D("99.5"), D("1"), seq, 1, "open")
    assert o.trades == []
    got, why, trades = m.edit("a", 3, price=D("99.99"))
    assert (got, why, trades) == (o, None, [])
    assert o.price == D("99.99") and o.updated_at == 3


def test_post_only_sell_edit_to_marketable_price_is_refused():
    m = matcher(std_book())
    o = order("a", "sell", "1", "100.5", post_only=True)
    m.submit(o, 1)
    _, why, trades = m.edit("a", 2, price=D("99"))
    assert why == "post-only order would take liquidity" and trades == []
    assert o.price == D("100.5")


# --------------------------------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------------------------------
def test_cancel_resting_order():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    assert m.cancel("a", 5) is o
    assert_state(o, "canceled", "0", m, resting=False)
    assert o.reason == "canceled"
    assert o.updated_at == 5
    assert m.on_book(book([], [("90", "10")], ts=6), 6) == []
    assert o.trades == []
    assert m.cancel("a", 7) is None  # already gone


def test_cancel_with_reason_keeps_fills():
    m = matcher(std_book())
    o = order("a", "buy", "4", "101")
    m.submit(o, 1)
    assert m.cancel("a", 2, reason="expired by the router") is o
    assert_state(o, "canceled", "3", m, resting=False)
    assert o.reason == "expired by the router"
    assert len(o.trades) == 2


def test_cancel_unknown_or_finished_returns_none():
    m = matcher(std_book())
    assert m.cancel("nope", 1) is None
    done = order("d", "buy", "1", tif="IOC")
    m.submit(done, 1)
    assert done.status == "closed"
    assert m.cancel("d", 2) is None
    assert done.status == "closed"


# --------------------------------------------------------------------------------------------------
# edit
# --------------------------------------------------------------------------------------------------
def _snapshot(o: SimOrder) -> tuple:
    return (o.quantity, o.price, o.seq, o.status, o.filled, o.cost, o.updated_at, list(o.trades), o.reason)


@pytest.mark.parametrize("qty", ["2", "3"])
def test_edit_quantity_not_above_filled_is_refused(qty: str):
    m = matcher(std_book())
    o = order("a", "buy", "4", "101")
    m.submit(o, 1)  # filled 3
    before = _snapshot(o)
    got, why, trades = m.edit("a", 2, quantity=D(qty))
    assert got is o
    assert why is not None and why.startswith(f"quantity {qty} is not above the filled ")
    assert D(why.rsplit(" ", 1)[1]) == D("3")
    assert trades == []
    assert _snapshot(o) == before
    assert "a" in m.resting


def test_edit_quantity_keeps_the_order_and_its_priority():
    m = matcher(book([("98", "1")], [("105", "1")]))
    a = order("a", "buy", "1", "100")
    b = order("b", "buy", "1", "100")
    m.submit(a, 1)
    m.submit(b, 1)
    got, why, trades = m.edit("a", 2, quantity=D("2"))
    assert (got, why, trades) == (a, None, [])
    assert a.quantity == D("2") and a.seq == 1 and a.venue_order_id == "Va" and a.updated_at == 2
    assert m.seq == 2  # a quantity change takes no new place in the queue
    assert m.resting["a"] is a
    out = m.on_book(book([], [("100", "2")], ts=3), 3)
    assert out == [(a, [tr(a, 1, "2", "100", "0.2", "maker", 3)])]
    assert_state(b, "open", "0", m, resting=True)


def test_edit_quantity_of_partially_filled_order():
    m = matcher(std_book())
    o = order("a", "buy", "4", "101")
    m.submit(o, 1)  # filled 3
    got, why, trades = m.edit("a", 2, quantity=D("3.5"))
    assert (got, why, trades) == (o, None, [])
    assert o.remaining == D("0.5")
    assert_state(o, "open", "3", m, resting=True)
    out = m.on_book(book([], [("100", "9")], ts=3), 3)
    assert out == [(o, [tr(o, 3, "0.5", "101", "0.0505", "maker", 3)])]
    assert_state(o, "closed", "3.5", m, resting=False)


def test_edit_price_loses_time_priority():
    m = matcher(book([("97", "1")], [("105", "1")]))
    a = order("a", "buy", "1", "98")
    b = order("b", "buy", "1", "99")
    c = order("c", "buy", "1", "99")
    for o in (a, b, c):
        m.submit(o, 1)
    assert [o.seq for o in (a, b, c)] == [1, 2, 3]
    got, why, trades = m.edit("a", 2, price=D("99"))
    assert (got, why, trades) == (a, None, [])
    assert a.price == D("99")
    assert a.seq == 4
    out = m.on_book(book([], [("99", "2")], ts=3), 3)
    assert [o.client_order_id for o, _ in out] == ["b", "c"]
    assert_state(a, "open", "0", m, resting=True)


def test_edit_to_better_price_moves_ahead():
    m = matcher(book([("97", "1")], [("105", "1")]))
    a = order("a", "buy", "1", "98")
    b = order("b", "buy", "1", "99")
    m.submit(a, 1)
    m.submit(b, 1)
    m.edit("a", 2, price=D("99.5"))
    out = m.on_book(book([], [("98", "1")], ts=3), 3)
    assert out == [(a, [tr(a, 1, "1", "99.5", "0.0995", "maker", 3)])]


def test_edit_price_to_marketable_trades_now_as_taker():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    got, why, trades = m.edit("a", 2, price=D("101"))
    assert got is o and why is None
    assert trades == [tr(o, 1, "1", "100", "0.2", "taker", 2)]
    assert o.trades == trades
    assert_state(o, "closed", "1", m, resting=False)


def test_edit_price_to_marketable_partial_keeps_resting():
    m = matcher(std_book())
    o = order("a", "sell", "3.5", "100")
    m.submit(o, 1)
    _, why, trades = m.edit("a", 2, price=D("98"))
    assert why is None
    assert trades == [tr(o, 1, "1", "99", "0.198", "taker", 2), tr(o, 2, "2", "98", "0.392", "taker", 2)]
    assert_state(o, "open", "3", m, resting=True)
    assert o.remaining == D("0.5")
    assert o.price == D("98")


def test_edit_price_and_quantity_together():
    m = matcher(std_book())
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    _, why, trades = m.edit("a", 2, quantity=D("1.5"), price=D("101"))
    assert why is None
    assert trades == [tr(o, 1, "1", "100", "0.2", "taker", 2), tr(o, 2, "0.5", "101", "0.101", "taker", 2)]
    assert_state(o, "closed", "1.5", m, resting=False)


def test_edit_marketable_shares_the_snapshot():
    m = matcher(std_book())
    m.submit(order("x", "buy", "2", tif="IOC"), 1)  # 1@100 + 1@101
    o = order("a", "buy", "2", "99.5")
    m.submit(o, 1)
    _, why, trades = m.edit("a", 2, price=D("101"))
    assert why is None
    assert trades == [tr(o, 1, "1", "101", "0.202", "taker", 2)]
    assert_state(o, "open", "1", m, resting=True)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"price": D("99.555")}, "price 99.555 is not a multiple of the tick 0.01"),
        ({"quantity": D("1.0001")}, "quantity 1.0001 is not a multiple of the amount step 0.001"),
        ({"quantity": D("0.1")}, "notional 9.95 is below the minimum 10"),
        ({"price": D("1")}, "notional 1 is below the minimum 10"),
        ({"quantity": D("-1")}, "is not above the filled 0"),
        ({"price": D("0")}, "a limit order needs a positive price"),
        ({"price": D("101"), "quantity": D("1.0001")}, "amount step"),
    ],
)
def test_edit_rule_violation_is_refused_and_changes_nothing(kwargs: dict, words: str):
    b = std_book()
    m = matcher(b)
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    before = _snapshot(o)
    got, why, trades = m.edit("a", 9, **kwargs)
    assert got is o
    assert why is not None and words in why
    assert trades == []
    assert _snapshot(o) == before
    assert m.resting["a"] is o
    assert_untouched(m, b)


def test_edit_unknown_or_finished_order():
    m = matcher(std_book())
    assert m.edit("nope", 1, quantity=D("1")) == (None, "the order is not open", [])
    o = order("a", "buy", "1", "99.5")
    m.submit(o, 1)
    m.cancel("a", 2)
    assert m.edit("a", 3, price=D("99")) == (None, "the order is not open", [])
    assert o.price == D("99.5") and o.status == "canceled"


def test_edit_quantity_of_marketable_resting_order_takes_what_is_left():
    # the resting limit crosses the book because the snapshot was used up by another order: a bigger
    # quantity finds nothing left on this snapshot (no double take)
    m = matcher(std_book())
    m.submit(order("x", "buy", "1.5", tif="IOC"), 1)  # 1@100 + 0.5@101
    o = order("a", "buy", "1", "100")
    assert m.submit(o, 1) == []
    assert_state(o, "open", "0", m, resting=True)
    _, why, trades = m.edit("a", 2, quantity=D("2"))
    assert why is None and trades == []
    assert_state(o, "open", "0", m, resting=True)


def test_repriced_orders_keep_priority_over_orders_arriving_later():
    # regression: a repriced order used to get max(resting seqs) + 1, outside the venue's arrival counter,
    # so after two repricings an order arriving later could get a lower seq and jump the queue
    m = matcher(book([("97", "1")], [("105", "1")]))
    a = order("a", "buy", "1", "98")
    b = order("b", "buy", "1", "98")
    m.submit(a, 1)
    m.submit(b, 2)
    m.edit("a", 3, price=D("99"))
    m.edit("b", 4, price=D("99"))
    c = order("c", "buy", "1", "99")  # arrives after both edits
    m.submit(c, 5)
    assert a.seq < b.seq < c.seq
    out = m.on_book(book([], [("99", "2")], ts=6), 6)
    assert [o.client_order_id for o, _ in out] == ["a", "b"]
    assert_state(c, "open", "0", m, resting=True)
    assert b.status == "closed"


# --------------------------------------------------------------------------------------------------
# ids, timestamps and fees
# --------------------------------------------------------------------------------------------------
def test_trade_ids_count_up_across_submit_and_books():
    m = matcher(book([], [("100", "0.5")]))
    o = order("x1", "buy", "2", "100")
    m.submit(o, 1)
    m.on_book(book([], [("100", "0.5")], ts=2), 2)
    m.on_book(book([], [("99", "1")], ts=3), 3)
    assert [t.trade_id for t in o.trades] == ["Vx1-1", "Vx1-2", "Vx1-3"]
    assert [t.liquidity for t in o.trades] == ["taker", "maker", "maker"]
    assert [t.ts for t in o.trades] == [1, 2, 3]
    assert [t.fee for t in o.trades] == [D("0.1"), D("0.05"), D("0.1")]
    assert o.cost == D("200")
    assert o.status == "closed"


def test_fees_are_exact_with_odd_rates():
    spec = MarketSpec(
        tick_size=D("0.0001"),
        amount_step=D("0.00001"),
        min_notional=D("1"),
        maker_fee=D("0.00075"),
        taker_fee=D("0.0012345"),
    )
    m = matcher(book([], [("30123.4567", "0.12345"), ("30123.4568", "1")]), spec=spec)
    o = order("a", "buy", "0.2", tif="IOC")
    assert m.submit(o, 1) == [
        tr(o, 1, "0.12345", "30123.4567", "4.5907854307097175", "taker", 1),
        tr(o, 2, "0.07655", "30123.4568", "2.8466960379703800", "taker", 1),
    ]
    mk = order("b", "sell", "0.5", "30200.1")
    m.submit(mk, 1)
    out = m.on_book(book([("30300", "1")], [], ts=2), 2)
    assert out == [(mk, [tr(mk, 1, "0.5", "30200.1", "11.3250375", "maker", 2)])]


def test_zero_fees():
    spec = MarketSpec(D("0.01"), D("0.001"), D("10"), D(0), D(0))
    m = matcher(std_book(), spec=spec)
    o = order("a", "buy", "1", tif="IOC")
    assert m.submit(o, 1)[0].fee == 0


# --------------------------------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------------------------------
P_TICK = D("0.5")
P_STEP = D("0.1")
P_SPEC = MarketSpec(tick_size=P_TICK, amount_step=P_STEP, min_notional=D("5"), maker_fee=MAKER, taker_fee=TAKER)
BASE_TICKS = 200  # 100.0


level_counts = st.one_of(st.integers(1, 5), st.integers(1, 5), st.integers(1, 5), st.just(0))


@st.composite
def books(draw) -> Book:
    """Sorted, strictly monotonic, uncrossed books with positive step-aligned sizes (sometimes one side empty).
    The centre moves from book to book, so resting orders get crossed by later books."""
    centre = BASE_TICKS + draw(st.integers(-6, 6))
    best_bid = centre - draw(st.integers(0, 3))
    best_ask = centre + draw(st.integers(1, 3))
    bids, asks = [], []
    p = best_bid
    for _ in range(draw(level_counts)):
        bids.append((p * P_TICK, draw(st.integers(1, 30)) * P_STEP))
        p -= draw(st.integers(1, 3))
    p = best_ask
    for _ in range(draw(level_counts)):
        asks.append((p * P_TICK, draw(st.integers(1, 30)) * P_STEP))
        p += draw(st.integers(1, 3))
    return Book(pair=PAIR, bids=bids, asks=asks, ts=0)


order_specs = st.fixed_dictionaries(
    {
        "side": st.sampled_from(["buy", "sell"]),
        "type": st.sampled_from(["market", "limit", "limit"]),
        "qty": st.one_of(
            st.integers(1, 40).map(lambda k: k * P_STEP),
            st.integers(1, 40).map(lambda k: k * P_STEP),
            st.integers(1, 40).map(lambda k: k * P_STEP),
            st.integers(1, 40).map(lambda k: k * P_STEP),
            st.integers(1, 40).map(lambda k: k * P_STEP),
            st.sampled_from([D(0), D("0.05")]),  # against the rules: rejected
        ),
        "price": st.integers(BASE_TICKS - 10, BASE_TICKS + 10).map(lambda k: k * P_TICK),
        "tif": st.sampled_from(["GTC", "GTC", "IOC", "FOK", "GTD"]),
        "post_only": st.sampled_from([False, False, False, True]),
    }
)
book_action = st.tuples(st.just("book"), books())
order_action = st.tuples(st.just("order"), order_specs)
cancel_action = st.tuples(st.just("cancel"), st.integers(0, 30))
edit_action = st.tuples(
    st.just("edit"),
    st.integers(0, 30),
    st.one_of(st.none(), st.integers(1, 60).map(lambda k: k * P_STEP)),
    st.one_of(st.none(), st.integers(BASE_TICKS - 10, BASE_TICKS + 10).map(lambda k: k * P_TICK)),
)
# mostly starting with a book (orders before any book are covered too), orders weighted up
actions = st.tuples(
    st.one_of(st.just([]), st.lists(order_action, max_size=2)),
    book_action,
    st.lists(
        st.one_of(book_action, book_action, order_action, order_action, order_action, cancel_action, edit_action),
        min_size=3,
        max_size=30,
    ),
).map(lambda t: [*t[0], t[1], *t[2]])
slippages = st.sampled_from([None, D("0"), D("0.5"), D("2"), D("5")])


@dataclass
class Fill:
    order: SimOrder
    trade: SimTrade
    snapshot: int  # index of the book it traded against
    bound: Decimal | None  # limit price at the time of the trade, or the market order's band
    source: str  # "book" (on_book), "submit" or "edit"


@dataclass
class Run:
    matcher: Matcher
    orders: list[SimOrder] = field(default_factory=list)
    books: list[Book] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    consumed_ok: bool = True


def run(seq_actions: list, slip: Decimal | None) -> Run:
    m = Matcher(PAIR, QUOTE, P_SPEC, slip)
    r = Run(m)

    def record(o: SimOrder, trades: list[SimTrade], source: str) -> None:
        assert trades == o.trades[len(o.trades) - len(trades) :]
        for t in trades:
            r.fills.append(Fill(o, t, len(r.books) - 1, o.price if o.type == "limit" else o.band, source))

    for ts, a in enumerate(seq_actions, start=1):
        if a[0] == "book":
            b = Book(pair=PAIR, bids=a[1].bids, asks=a[1].asks, ts=ts)
            r.books.append(b)
            for o, trades in m.on_book(b, ts):
                assert trades, "on_book reports only orders that traded"
                record(o, trades, "book")
        elif a[0] == "order":
            s = a[1]
            n = len(r.orders)
            o = SimOrder(
                client_order_id=f"c{n}",
                venue_order_id=f"v{n}",
                pair=PAIR,
                side=s["side"],
                type=s["type"],
                quantity=s["qty"],
                price=s["price"] if s["type"] == "limit" else None,
                time_in_force=s["tif"],
                post_only=s["post_only"],
            )
            r.orders.append(o)
            record(o, m.submit(o, ts), "submit")
        elif r.orders:
            o = r.orders[a[1] % len(r.orders)]
            was_resting = o.client_order_id in m.resting
            if a[0] == "cancel":
                got = m.cancel(o.client_order_id, ts)
                assert got is (o if was_resting else None)
                assert o.status != "open"
            else:
                before = (o.quantity, o.price, o.filled, len(o.trades))
                got, why, trades = m.edit(o.client_order_id, ts, a[2], a[3])
                assert got is (o if was_resting else None)
                if why is not None:
                    assert trades == []
                    assert (o.quantity, o.price, o.filled, len(o.trades)) == before
                elif got is not None:
                    record(o, trades, "edit")
        # white box: what the engine remembers having taken never exceeds the level
        if m.book is not None:
            sizes = {("ask", p): q for p, q in m.book.asks} | {("bid", p): q for p, q in m.book.bids}
            for key, took in m.consumed.items():
                if took > sizes.get(key, D(0)):
                    r.consumed_ok = False
    return r


PROPS = settings(max_examples=200, deadline=None)


@PROPS
@given(actions, slippages)
def test_prop_filled_never_exceeds_quantity_and_equals_trades(seq_actions, slip):
    r = run(seq_actions, slip)
    for o in r.orders:
        assert D(0) <= o.filled <= o.quantity or o.status == "rejected"
        assert o.filled == sum((t.quantity for t in o.trades), D(0))
        assert o.cost == sum((t.quantity * t.price for t in o.trades), D(0))
        assert all(t.quantity > 0 and t.quantity % P_STEP == 0 for t in o.trades)
        assert [t.trade_id for t in o.trades] == [f"{o.venue_order_id}-{i}" for i in range(1, len(o.trades) + 1)]
        if o.status == "rejected":
            assert o.trades == [] and o.reason
        if o.status == "closed":
            assert o.filled == o.quantity
        if o.status == "open":
            assert o.filled < o.quantity
            assert r.matcher.resting.get(o.client_order_id) is o
            assert o.time_in_force not in ("IOC", "FOK")
        else:
            assert o.client_order_id not in r.matcher.resting
        if o.time_in_force == "FOK" and o.status != "rejected":
            assert o.filled in (D(0), o.quantity)
            assert o.status in ("closed", "canceled")


@PROPS
@given(actions, slippages)
def test_prop_snapshot_liquidity_is_never_taken_twice(seq_actions, slip):
    r = run(seq_actions, slip)
    assert r.consumed_ok
    assert all(f.snapshot >= 0 for f in r.fills), "no trade before the first book"
    for idx, b in enumerate(r.books):
        for is_buy, levels in ((True, b.asks), (False, b.bids)):
            sizes = dict(levels)
            fills = [f for f in r.fills if f.snapshot == idx and f.order.is_buy == is_buy]
            # takers trade at a level's own price: per level, never more than its size
            per_level: dict[Decimal, Decimal] = {}
            for f in fills:
                if f.trade.liquidity == "taker":
                    assert f.trade.price in sizes
                    per_level[f.trade.price] = per_level.get(f.trade.price, D(0)) + f.trade.quantity
            for p, took in per_level.items():
                assert took <= sizes[p]
            # a maker at limit L can use any level at or better than L: Hall's condition on best-first prefixes
            better = (lambda p, x: p <= x) if is_buy else (lambda p, x: p >= x)
            for x, _ in levels:
                supply = sum((q for p, q in levels if better(p, x)), D(0))
                demand = D(0)
                for f in fills:
                    if f.trade.liquidity == "taker":
                        demand += f.trade.quantity if better(f.trade.price, x) else D(0)
                    else:
                        usable = [p for p, _ in levels if better(p, f.trade.price)]
                        assert usable, "a maker fill needs a level at or better than its price"
                        if all(better(p, x) for p in usable):
                            demand += f.trade.quantity
                assert demand <= supply


@PROPS
@given(actions, slippages)
def test_prop_prices_respect_limits_and_bands(seq_actions, slip):
    r = run(seq_actions, slip)
    for f in r.fills:
        t, o = f.trade, f.order
        b = r.books[f.snapshot]
        if o.type == "limit":
            assert f.bound is not None
            assert t.price <= f.bound if o.is_buy else t.price >= f.bound
            if t.liquidity == "maker":
                assert t.price == f.bound
            assert t.price % P_TICK == 0
        else:
            assert t.liquidity == "taker"
            if slip is not None:
                assert f.bound is not None
                assert t.price <= f.bound if o.is_buy else t.price >= f.bound
        if t.liquidity == "taker":
            assert t.price in dict(b.asks if o.is_buy else b.bids)
        # new and edited orders take; on a new book, resting limits make and resting market orders take
        expected = "maker" if f.source == "book" and o.type == "limit" else "taker"
        assert t.liquidity == expected


@PROPS
@given(actions, slippages)
def test_prop_replay_is_deterministic(seq_actions, slip):
    def outcome(r: Run) -> list:
        return [
            (f.order.client_order_id, f.snapshot, f.trade.trade_id, f.trade.quantity, f.trade.price, f.trade.fee)
            for f in r.fills
        ] + [(o.client_order_id, o.status, o.filled, o.reason, o.seq, o.price, o.band) for o in r.orders]

    first = run(seq_actions, slip)
    second = run(seq_actions, slip)
    assert [f.trade for f in first.fills] == [f.trade for f in second.fills]
    assert outcome(first) == outcome(second)
    assert first.matcher.consumed == second.matcher.consumed
    assert list(first.matcher.resting) == list(second.matcher.resting)


@PROPS
@given(actions, slippages)
def test_prop_fee_is_quantity_times_price_times_rate(seq_actions, slip):
    r = run(seq_actions, slip)
    for f in r.fills:
        t = f.trade
        rate = MAKER if t.liquidity == "maker" else TAKER
        assert t.fee == t.quantity * t.price * rate
        assert t.fee_currency == QUOTE
        assert t.fee > 0
