"""Reduce-only exits (domain/exits) and the paper venue's reduce-only guard (domain/matching).

The examples are the issue's own: six stop-losses of a pair firing at once against a small long, brackets
of several signals on one position, a SELL's bracket against a long. The properties check, for any
position and any set of exits, that what may execute never adds up to more than the position.
"""

from __future__ import annotations

import itertools
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from domain.exits import Exit, NetPositions, fit_exits, floor_step, position_change, reducible
from domain.matching import NOTHING_TO_REDUCE, POSITION_CLOSED, MarketSpec, Matcher, SimOrder
from schemas.messages import Book

D = Decimal
STEP = D("0.0001")


def sent(oid: str, side: str, qty: str, at: int, resting: bool = False) -> Exit:
    return Exit(oid, side, D(qty), "sent", (int(resting), at, oid))


def leg(oid: str, side: str, qty: str, kind: str, at: int, busy: bool = False) -> Exit:
    return Exit(oid, side, D(qty), kind, (0, at, oid), busy)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------------
def test_position_change_counts_a_fee_paid_in_the_base_asset():
    assert position_change("buy", D("0.5"), D("0.001"), "BTC", "BTC") == D("0.499")
    assert position_change("sell", D("0.5"), D("0.001"), "BTC", "BTC") == D("-0.501")
    assert position_change("buy", D("0.5"), D("30"), "USDT", "BTC") == D("0.5")
    assert position_change("sell", D("0.5"), D("0"), "BTC", "BTC") == D("-0.5")


def test_reducible_is_the_long_for_a_sell_and_the_short_for_a_buy():
    assert reducible(D("0.3"), "sell") == D("0.3")
    assert reducible(D("0.3"), "buy") == 0
    assert reducible(D("-0.3"), "buy") == D("0.3")
    assert reducible(D("-0.3"), "sell") == 0
    assert reducible(D(0), "sell") == 0


def test_floor_step():
    assert floor_step(D("0.01679"), STEP) == D("0.0167")
    assert floor_step(D("-1"), STEP) == 0
    assert floor_step(D("0.5"), None) == D("0.5")


def test_net_positions_fold_each_fill_id_once():
    p = NetPositions(3)
    px = D("60000")
    assert p.apply("f1", "BTC_USDT", "buy", D("0.5"), px, D("1"), "USDT")
    assert not p.apply("f1", "BTC_USDT", "buy", D("0.5"), px, D("1"), "USDT")
    assert p.apply("f2", "BTC_USDT", "sell", D("0.2"), px, D("0.001"), "BTC")
    assert p.get("BTC_USDT") == D("0.299")
    assert p.get("ETH_USDT") == 0


def test_net_positions_move_only_on_fills_the_ledger_books():
    p = NetPositions(10)
    px = D("60000")
    assert not p.apply("nan", "BTC_USDT", "sell", D("NaN"), px, D("0"), "USDT")
    assert not p.apply("zero", "BTC_USDT", "sell", D("0"), px, D("0"), "USDT")
    assert not p.apply("price", "BTC_USDT", "sell", D("1"), D("0"), D("0"), "USDT")
    assert not p.apply("fee-ccy", "BTC_USDT", "sell", D("1"), px, D("1"), "EUR")
    assert not p.apply("rebate-in-base", "BTC_USDT", "sell", D("1"), px, D("-0.1"), "BTC")
    assert not p.apply("no-pair", "BTCUSDT", "sell", D("1"), px, D("0"), "USDT")
    assert p.get("BTC_USDT") == 0
    assert p.apply("rebate-in-quote", "BTC_USDT", "buy", D("1"), px, D("-0.5"), "USDT")
    assert p.get("BTC_USDT") == 1


# --------------------------------------------------------------------------------------------------
# fit_exits: examples
# --------------------------------------------------------------------------------------------------
def test_six_stop_losses_firing_together_share_a_small_long_oldest_first():
    # the issue: 0.033 BTC long, six triggered stop-loss sells of 0.0168 each
    exits = [sent(f"sl{i}", "sell", "0.0168", 100 + i) for i in range(6)]
    got = fit_exits(D("0.033"), exits, STEP)
    assert got == {"sl0": D("0.0168"), "sl1": D("0.0162"), "sl2": 0, "sl3": 0, "sl4": 0, "sl5": 0}


def test_sent_exits_that_fit_are_left_whole():
    got = fit_exits(D("1"), [sent("a", "sell", "0.4", 1), sent("b", "sell", "0.6", 2)], STEP)
    assert got == {"a": D("0.4"), "b": D("0.6")}


def test_a_buy_exit_against_a_long_has_nothing_to_reduce():
    # the exits of a SELL signal's bracket while the account is long
    got = fit_exits(D("0.5"), [leg("sl", "buy", "0.1", "stop", 1), leg("tp", "buy", "0.1", "take_profit", 1)], STEP)
    assert got == {"sl": 0, "tp": 0}


def test_bracket_legs_of_several_entries_cover_the_position_once_oldest_kept():
    # three brackets of 0.1 each, but sells left a 0.15 long: stop-losses cover 0.15, so do take-profits
    exits = [leg(f"sl{i}", "sell", "0.1", "stop", i) for i in range(3)]
    exits += [leg(f"tp{i}", "sell", "0.1", "take_profit", i) for i in range(3)]
    got = fit_exits(D("0.15"), exits, STEP)
    assert [got[f"sl{i}"] for i in range(3)] == [D("0.1"), D("0.05"), 0]
    assert [got[f"tp{i}"] for i in range(3)] == [D("0.1"), D("0.05"), 0]


def test_an_executing_exit_goes_before_a_limit_resting_at_the_venue():
    # a stop that fires is not starved by an older take-profit limit resting above the market
    got = fit_exits(D("0.02"), [sent("tp", "sell", "0.02", 1, resting=True), sent("stop", "sell", "0.02", 9)], STEP)
    assert got == {"stop": D("0.02"), "tp": 0}


def test_waiting_legs_get_what_sent_exits_leave():
    exits = [
        sent("close", "sell", "0.3", 5),
        leg("sl", "sell", "0.5", "stop", 1),
        leg("tp", "sell", "0.5", "take_profit", 1),
    ]
    got = fit_exits(D("0.5"), exits, STEP)
    assert got == {"close": D("0.3"), "sl": D("0.2"), "tp": D("0.2")}


def test_a_leg_whose_sibling_executes_and_a_plain_waiting_stop_are_left_alone():
    exits = [
        sent("tp", "sell", "0.5", 9),
        leg("sl", "sell", "0.5", "stop", 1, busy=True),
        Exit("mine", "sell", D("0.7"), "waiting", (0, 2, "mine")),
    ]
    assert fit_exits(D("0.5"), exits, STEP) == {"tp": D("0.5"), "sl": D("0.5"), "mine": D("0.7")}


# --------------------------------------------------------------------------------------------------
# fit_exits: properties
# --------------------------------------------------------------------------------------------------
qty = st.integers(min_value=1, max_value=5_000).map(lambda n: D(n) * STEP)
exit_st = st.builds(
    lambda i, side, q, kind, at, busy: Exit(f"x{i}", side, q, kind, (at, f"x{i}"), busy),
    st.integers(0, 10_000),
    st.sampled_from(["buy", "sell"]),
    qty,
    st.sampled_from(["sent", "stop", "take_profit", "waiting"]),
    st.integers(0, 50),
    st.booleans(),
)
exits_st = st.lists(exit_st, max_size=12, unique_by=lambda e: e.order_id)
position_st = st.integers(min_value=-5_000, max_value=5_000).map(lambda n: D(n) * STEP)


@given(position_st, exits_st)
def test_what_may_execute_never_exceeds_the_position(position, exits):
    got = fit_exits(position, exits, STEP)
    assert set(got) == {e.order_id for e in exits}
    for e in exits:
        assert 0 <= got[e.order_id] <= e.wanted
        assert got[e.order_id] % STEP == 0
    for side in ("buy", "sell"):
        room = reducible(position, side)
        mine = [e for e in exits if e.side == side]
        on_way = sum((got[e.order_id] for e in mine if e.kind == "sent"), D(0))
        assert on_way <= room  # sent exits never add up to more than the position
        for kind in ("stop", "take_profit"):
            fitted = sum((got[e.order_id] for e in mine if e.kind == kind and not e.sibling_sent), D(0))
            assert on_way + fitted <= room  # nor does one kind of bracket leg on top of them


@given(position_st, exits_st)
def test_nothing_is_cut_when_the_position_covers_everything(position, exits):
    got = fit_exits(position, exits, STEP)
    for side in ("buy", "sell"):
        room = reducible(position, side)
        mine = [e for e in exits if e.side == side]
        on_way = sum((e.wanted for e in mine if e.kind == "sent"), D(0))
        if on_way <= room:
            assert all(got[e.order_id] == e.wanted for e in mine if e.kind == "sent")


@given(position_st, exits_st)
def test_an_older_sent_exit_is_never_cut_for_a_newer_one(position, exits):
    got = fit_exits(position, exits, STEP)
    for side in ("buy", "sell"):
        mine = sorted((e for e in exits if e.side == side and e.kind == "sent"), key=lambda e: e.rank)
        for older, newer in itertools.pairwise(mine):
            if got[newer.order_id] > 0:
                assert got[older.order_id] == older.wanted


# --------------------------------------------------------------------------------------------------
# the paper venue never fills a reduce-only order beyond the position
# --------------------------------------------------------------------------------------------------
SPEC = MarketSpec(tick_size=D("0.01"), amount_step=D("0.001"), min_notional=D("1"), maker_fee=D(0), taker_fee=D(0))


def book(ts: int = 1, bid: str = "99", ask: str = "100") -> Book:
    return Book(pair="ETH_USDT", bids=[(D(bid), D("50"))], asks=[(D(ask), D("50"))], ts=ts)


def sim(cid: str, side: str, qty: str, price: str | None = None, reduce_only: bool = False) -> SimOrder:
    return SimOrder(
        client_order_id=cid, venue_order_id=f"V{cid}", pair="ETH_USDT", side=side,  # type: ignore[arg-type]
        type="limit" if price else "market", quantity=D(qty), price=D(price) if price else None,
        reduce_only=reduce_only,
    )  # fmt: skip


def test_a_reduce_only_order_with_nothing_to_reduce_is_rejected():
    m = Matcher("ETH_USDT", "USDT", SPEC)
    m.on_book(book(), 1)
    o = sim("r", "sell", "1", reduce_only=True)
    assert m.submit(o, 2) == []
    assert (o.status, o.reason) == ("rejected", NOTHING_TO_REDUCE)


def test_a_reduce_only_market_sell_fills_the_position_and_no_more():
    m = Matcher("ETH_USDT", "USDT", SPEC)
    m.on_book(book(), 1)
    m.submit(sim("b", "buy", "0.3"), 2)
    assert m.position == D("0.3")
    o = sim("r", "sell", "1", reduce_only=True)
    trades = m.submit(o, 3)
    assert [t.quantity for t in trades] == [D("0.3")]
    assert (o.status, o.filled, o.reason) == ("canceled", D("0.3"), POSITION_CLOSED)
    assert m.position == 0


def test_a_resting_reduce_only_limit_is_canceled_once_the_position_is_gone():
    m = Matcher("ETH_USDT", "USDT", SPEC)
    m.on_book(book(), 1)
    m.submit(sim("b", "buy", "0.3"), 2)
    tp = sim("tp", "sell", "0.3", "120", reduce_only=True)
    assert m.submit(tp, 3) == [] and tp.status == "open"
    m.submit(sim("s", "sell", "0.2"), 4)  # the trader sells most of it by hand
    assert m.position == D("0.1")
    got = m.on_book(book(5, bid="121", ask="122"), 5)  # the book crosses the take-profit
    assert [(o.client_order_id, [t.quantity for t in ts]) for o, ts in got] == [("tp", [D("0.1")])]
    assert (tp.status, tp.filled, tp.reason) == ("canceled", D("0.1"), POSITION_CLOSED)
    assert m.position == 0 and "tp" not in m.resting


def test_a_reduce_only_buy_reduces_a_short_only():
    m = Matcher("ETH_USDT", "USDT", SPEC)
    m.on_book(book(), 1)
    m.submit(sim("s", "sell", "0.2"), 2)
    o = sim("r", "buy", "0.5", "100", reduce_only=True)
    assert [t.quantity for t in m.submit(o, 3)] == [D("0.2")]
    assert m.position == 0 and o.status == "canceled"


def check_trades(o: SimOrder, trades: list, position: Decimal) -> Decimal:
    """Walk ``o``'s trades from ``position``; a reduce-only trade must never grow it or cross zero."""
    for t in trades:
        after = position + (t.quantity if o.side == "buy" else -t.quantity)
        if o.reduce_only:
            assert abs(after) < abs(position) and after * position >= 0, (o, position, after)
        position = after
    return position


@given(
    st.lists(
        st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 500), st.booleans(), st.integers(95, 105)),
        max_size=30,
    )
)
def test_reduce_only_orders_never_grow_the_position_or_cross_zero(actions):
    m = Matcher("ETH_USDT", "USDT", SPEC)
    m.on_book(book(), 0)
    for ts, (side, n, reduce_only, px) in enumerate(actions, start=1):
        o = sim(f"o{ts}", side, str(D(n) / 1000), None if ts % 3 else str(px), reduce_only)
        before = m.position
        position = check_trades(o, m.submit(o, ts), before)
        for r, trades in m.on_book(book(ts, bid=str(px - 1), ask=str(px)), ts):
            position = check_trades(r, trades, position)
        assert position == m.position
        assert all(r.status == "open" for r in m.resting.values())
