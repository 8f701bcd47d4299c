"""Totals in BASE_CURRENCY when pairs are quoted in other currencies (issue 15, part 2), the cycle and
whole-life figures of a position, and which balances are a breach (issue 15, part 3). Pure: no bus.

Every expected number is worked out by hand in the comments.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import Ledger
from domain.performance import EquityTracker, report
from domain.synthetic import SyntheticMarket, start_price
from domain.valuation import Converter, DayStart, Rounding, conversion_route, equity, position_view, roll_day, snapshot
from schemas.messages import Fill, Order, OrderStatus

D = Decimal


def fill(
    side: str, qty: str, price: str, fee: str = "0", fee_ccy: str = "USDT", pair: str = "BTC_USDT", n: int = 0
) -> Fill:
    return Fill(
        fill_id=f"f{n}",
        order_id=f"o{n}",
        client_order_id=f"c{n}",
        pair=pair,
        side=side,  # type: ignore[arg-type]
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        fee_currency=fee_ccy,
        liquidity="taker",
        venue="paper",
        timestamp=1_000 + n,
    )


def three_pairs() -> Ledger:
    """20000 USDT; BTC_USDT, ETH_USDT and ETH_BTC (fees in the quote currency).

    1. buy 0.2 BTC_USDT @ 60000 fee 12:   USDT 20000 - 12000 - 12 = 7988, BTC 0.2
    2. buy 1 ETH_USDT @ 3000 fee 3:       USDT 7988 - 3000 - 3 = 4985, ETH 1
    3. buy 2 ETH_BTC @ 0.05 fee 0.0001:   BTC 0.2 - 0.1 - 0.0001 = 0.0999, ETH 3
    4. sell 1 ETH_BTC @ 0.052 fee 0.000052: realized 1 x (0.052 - 0.05) - 0.000052 = 0.001948 BTC
                                          BTC 0.0999 + 0.052 - 0.000052 = 0.151848, ETH 2
    ETH_BTC: realized -0.0001 + 0.001948 = 0.001848 BTC, fees 0.000152 BTC, open 1 @ 0.05
    """
    ledger = Ledger("USDT", D(20000))
    for n, f in enumerate(
        [
            fill("buy", "0.2", "60000", "12"),
            fill("buy", "1", "3000", "3", pair="ETH_USDT"),
            fill("buy", "2", "0.05", "0.0001", "BTC", pair="ETH_BTC"),
            fill("sell", "1", "0.052", "0.000052", "BTC", pair="ETH_BTC"),
        ]
    ):
        f.fill_id, f.timestamp = f"f{n}", 1_000 + n
        ledger.apply_fill(f)
    return ledger


# consistent marks: ETH_BTC = 3255 / 62000 = 0.0525
MARKS = {"BTC_USDT": D(62000), "ETH_USDT": D(3255), "ETH_BTC": D("0.0525")}


def test_eth_btc_beside_btc_usdt_and_eth_usdt_by_hand():
    snap = snapshot(three_pairs(), MARKS, DayStart(), ts=1, last_seq=0)
    s = snap.summary
    # own units: USDT: balance 4985, realized -12 - 3 = -15, fees 15, unrealized 0.2 x 2000 + 1 x 255 = 655
    usdt, btc, eth = s.by_currency["USDT"], s.by_currency["BTC"], s.by_currency["ETH"]
    assert (usdt.balance, usdt.realized_pnl, usdt.fees_paid, usdt.unrealized_pnl) == (D(4985), -15, 15, 655)
    # BTC: balance 0.151848, realized 0.001848, fees 0.000152, unrealized 1 x (0.0525 - 0.05) = 0.0025
    assert (btc.balance, btc.realized_pnl, btc.fees_paid, btc.unrealized_pnl) == (
        D("0.151848"), D("0.001848"), D("0.000152"), D("0.0025"))  # fmt: skip
    assert (eth.balance, eth.realized_pnl, eth.fees_paid, eth.unrealized_pnl) == (2, 0, 0, 0)
    assert s.unconverted == []
    assert s.conversion_rates == {"BTC": 62000}  # ETH needs no rate: its 2 units are the two ETH positions
    # converted at BTC = 62000 USDT (the direct pair BTC_USDT):
    # realized  -15 + 0.001848 x 62000 (114.576) = 99.576
    assert s.realized_pnl == D("99.576")
    # fees      15 + 0.000152 x 62000 (9.424) = 24.424
    assert s.fees_paid == D("24.424")
    # unrealized 655 + 0.0025 x 62000 (155) = 810
    assert s.unrealized_pnl == D(810)
    # positions 0.2 x 62000 + 1 x 3255 + 1 x 0.0525 x 62000 = 12400 + 3255 + 3255 = 18910
    assert s.total_positions == D(18910)
    # cash: USDT 4985, BTC 0.151848 - 0.2 held in BTC_USDT = -0.048152 (paid for ETH_BTC) x 62000 = -2985.424
    assert s.total_cash == D("1999.576")
    assert s.total_value == D("20909.576") == s.total_cash + s.total_positions
    # the books balance: 20000 + 99.576 + 810
    assert s.total_value == 20000 + s.realized_pnl + s.unrealized_pnl
    # and with consistent marks it is what the balances are worth: 4985 + 0.151848 x 62000 + 2 x 3255
    assert s.total_value == 4985 + D("0.151848") * 62000 + 2 * 3255
    assert equity(three_pairs(), MARKS) == D("20909.576")
    # a position's own figures stay in its quote currency; its share of the total is converted
    ethbtc = next(p for p in snap.positions if p.pair == "ETH_BTC")
    assert (ethbtc.market_value, ethbtc.unrealized_pnl, ethbtc.realized_pnl) == (
        D("0.0525"),
        D("0.0025"),
        D("0.001848"),
    )
    assert ethbtc.risk_metrics.position_size == D("0.155670")  # 0.0525 x 62000 = 3255; / 20909.576 = 0.15567030...


def test_position_size_of_a_cross_is_its_converted_value_over_the_total():
    snap = snapshot(three_pairs(), MARKS, DayStart(), ts=1, last_seq=0)
    sizes = {p.pair: p.risk_metrics.position_size for p in snap.positions}
    # 12400 / 20909.576 = 0.59302971...; 3255 / 20909.576 = 0.15567030...
    assert sizes == {"BTC_USDT": D("0.593030"), "ETH_USDT": D("0.155670"), "ETH_BTC": D("0.155670")}


def test_performance_converts_round_trips_and_per_pair_figures():
    """Two round trips: BTC_USDT -100 USDT, ETH_BTC +0.005 BTC; BTC marked at 62000 USDT.

    ETH_BTC's 0.005 BTC is 310 USDT: wins 1 (310), losses 1 (-100), gross profit 310, gross loss -100,
    profit factor 3.1, expectancy (310 - 100) / 2 = 105; equity 20000 - 100 + 0.005 x 62000 = 20210.
    Added raw, the old way, the gross profit would have been 0.005 and the expectancy -49.9975.
    """
    ledger = Ledger("USDT", D(20000))
    for n, f in enumerate(
        [
            fill("buy", "0.1", "60000"),
            fill("sell", "0.1", "59000"),
            fill("buy", "1", "0.05", pair="ETH_BTC"),
            fill("sell", "1", "0.055", pair="ETH_BTC"),
        ]
    ):
        f.fill_id, f.timestamp = f"f{n}", 1_000 + n
        ledger.apply_fill(f)
    marks = {"BTC_USDT": D(62000), "ETH_BTC": D("0.05")}
    r = report(ledger, EquityTracker(D(20000)), marks, 10_000, Rounding({"USDT": 2}))
    assert r.equity == D(20210) and r.total_return == D("0.0105")
    t = r.trades
    assert (t.round_trips, t.wins, t.losses) == (2, 1, 1)
    assert (t.gross_profit, t.gross_loss, t.profit_factor, t.expectancy) == (310, -100, D("3.1"), 105)
    assert (t.average_win, t.average_loss, t.realized_pnl) == (310, -100, 210)
    assert r.unconverted == []
    btc, eth = r.per_pair
    assert (btc.pair, btc.currency, btc.realized_pnl, btc.trades.gross_loss) == ("BTC_USDT", "USDT", -100, -100)
    assert (eth.pair, eth.currency, eth.realized_pnl, eth.trades.gross_profit) == ("ETH_BTC", "USDT", 310, 310)
    # the summary agrees: realized -100 + 310
    assert snapshot(ledger, marks, DayStart(), 1, 0).summary.realized_pnl == 210


def test_performance_keeps_an_unconvertible_pair_in_its_own_currency_and_out_of_the_totals():
    ledger = Ledger("USDT", D(20000))
    ledger.apply_fill(fill("buy", "0.1", "60000", n=1))
    ledger.apply_fill(fill("sell", "0.1", "59000", n=2))
    ledger.apply_fill(fill("buy", "1", "2", pair="XMR_ZZZ", n=3))
    ledger.apply_fill(fill("sell", "1", "3", pair="XMR_ZZZ", n=4))  # +1 ZZZ, and ZZZ has no route into USDT
    r = report(ledger, EquityTracker(D(20000)), {"BTC_USDT": D(62000)}, 10_000)
    assert r.unconverted == ["ZZZ"]
    assert (r.trades.round_trips, r.trades.realized_pnl) == (1, -100)  # ZZZ's round trip is not added
    assert r.equity == D(19900)
    xmr = r.per_pair[1]
    assert (xmr.pair, xmr.currency, xmr.realized_pnl, xmr.trades.round_trips) == ("XMR_ZZZ", "ZZZ", 1, 1)


# --------------------------------------------------------------------------------------------------
# Routes: direct X_BASE, else inverse BASE_X, else through the bridge
# --------------------------------------------------------------------------------------------------
def rate(marks: dict[str, Decimal], currency: str, base: str = "USDT", bridge: str = "USDT") -> Decimal | None:
    return Converter(Ledger(base, D(1)), marks, bridge).rate(currency)


def test_routes_by_hand():
    assert rate({"BTC_USDT": D(62000)}, "BTC") == 62000  # direct
    assert rate({"BTC_USDT": D(62000)}, "USDT") == 1  # the base itself
    assert rate({"USDT_TRY": D(32)}, "TRY") == D(1) / 32  # inverse: 1 USDT = 32 TRY
    # base EUR through USDT: BTC -> USDT 62000 (BTC_USDT), USDT -> EUR 1 / 1.25 (EUR_USDT inverted)
    assert rate({"BTC_USDT": D(62000), "EUR_USDT": D("1.25")}, "BTC", "EUR") == D(49600)
    # both legs inverted: USDT_XYZ 4 (XYZ -> USDT 1/4), USDT_EUR 0.8 (USDT -> EUR 0.8): 0.2 EUR per XYZ
    assert rate({"USDT_XYZ": D(4), "USDT_EUR": D("0.8")}, "XYZ", "EUR") == D("0.2")
    # a bridge other than USDT
    assert rate({"ETH_BTC": D("0.05"), "BTC_EUR": D(50000)}, "ETH", "EUR", bridge="BTC") == D(2500)
    assert rate({"ETH_BTC": D("0.05"), "BTC_EUR": D(50000)}, "ETH", "EUR", bridge="USDT") is None
    # no route
    assert rate({"ETH_BTC": D("0.05")}, "BTC") is None
    assert rate({}, "BTC") is None


def test_direct_comes_before_inverse_and_inverse_before_the_bridge():
    ledger = Ledger("EUR", D(1))
    marks = {"BTC_EUR": D(50000), "EUR_BTC": D("0.00001"), "BTC_USDT": D(60000), "USDT_EUR": D("0.9")}
    assert conversion_route("BTC", "EUR", "USDT", ledger, marks) == (("BTC_EUR", False),)
    del marks["BTC_EUR"]
    assert conversion_route("BTC", "EUR", "USDT", ledger, marks) == (("EUR_BTC", True),)
    del marks["EUR_BTC"]
    assert conversion_route("BTC", "EUR", "USDT", ledger, marks) == (("BTC_USDT", False), ("USDT_EUR", False))
    assert rate(marks, "BTC", "EUR") == D(54000)


def test_a_pair_without_a_book_converts_at_its_last_fill():
    ledger = Ledger("USDT", D(100000))
    ledger.apply_fill(fill("buy", "0.1", "60000"))
    assert Converter(ledger, {}).rate("BTC") == 60000  # the mark of BTC_USDT is its last fill price
    assert Converter(ledger, {"BTC_USDT": D(61000)}).rate("BTC") == 61000  # a book's mid comes first


def test_each_route_is_found_once_per_valuation():
    looked: list[str] = []

    class Marks(dict[str, Decimal]):
        def get(self, key, default=None):  # type: ignore[no-untyped-def, override]
            looked.append(key)
            return super().get(key, default)

    ledger = Ledger("USDT", D(10**9))
    marks = Marks({"BTC_USDT": D(62000)})
    for i in range(50):
        f = fill("buy", "1", "0.05", pair=f"P{i}_BTC", n=i)
        ledger.apply_fill(f)
        marks[f"P{i}_BTC"] = D("0.05")
    snapshot(ledger, marks, DayStart(), 1, 0)
    assert looked.count("BTC_USDT") == 1  # 50 positions quoted in BTC, one route


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------
prices = st.integers(1, 10**8).map(lambda n: D(n).scaleb(-4))  # 0.0001 .. 10000 (in some numeraire)


def _close(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) <= D("1e-20") * max(abs(a), abs(b), D(1))


@settings(max_examples=300, deadline=None)
@given(x=prices, base=prices, bridge=prices)
def test_direct_inverse_and_bridged_agree_when_marks_are_consistent(x, base, bridge):
    """With every currency worth p in some numeraire, a pair A_B marked p_A / p_B: the rate of X into
    BASE is p_X / p_BASE whichever route gives it."""
    direct = rate({"X_BASE": x / base}, "X", "BASE", "BR")
    inverse = rate({"BASE_X": base / x}, "X", "BASE", "BR")
    bridged = [
        rate({first: a, second: b}, "X", "BASE", "BR")
        for first, a in (("X_BR", x / bridge), ("BR_X", bridge / x))
        for second, b in (("BR_BASE", bridge / base), ("BASE_BR", base / bridge))
    ]
    for got in [inverse, *bridged]:
        assert got is not None and direct is not None and _close(got, direct)
    assert direct is not None and _close(direct, x / base)


PAIRS = ("BTC_USDT", "ETH_USDT", "ETH_BTC", "XMR_ZZZ")


@st.composite
def mixed_fills(draw: st.DrawFn) -> list[Fill]:
    out = []
    for n in range(draw(st.integers(1, 20))):
        pair = draw(st.sampled_from(PAIRS))
        qty = D(draw(st.integers(1, 20_000))).scaleb(-4)
        price = D(draw(st.integers(1, 10**6))).scaleb(-4)
        fee = (qty * price * draw(st.integers(0, 20)) / 10_000).quantize(D("1e-8"))
        out.append(
            fill(draw(st.sampled_from(("buy", "sell"))), str(qty), str(price), str(fee), pair.split("_")[1], pair, n)
        )
    return out


@settings(max_examples=200, deadline=None)
@given(fills=mixed_fills(), btc=prices, eth=prices, cross=prices, xmr=prices)
def test_totals_never_include_an_unconverted_currency(fills, btc, eth, cross, xmr):
    """ZZZ has no route into USDT: trading XMR_ZZZ changes no total, ZZZ is listed as unconverted, and the
    books still balance in USDT (total = initial + realized + unrealized, all converted), at any marks
    (the cross need not agree with its legs)."""
    marks = {"BTC_USDT": btc, "ETH_USDT": eth, "ETH_BTC": cross, "XMR_ZZZ": xmr}
    with_zzz, without = Ledger("USDT", D(10000)), Ledger("USDT", D(10000))
    for f in fills:
        with_zzz.apply_fill(f)
        if f.pair != "XMR_ZZZ":
            without.apply_fill(f)
    a = snapshot(with_zzz, marks, DayStart(), 1, 0).summary
    b = snapshot(without, marks, DayStart(), 1, 0).summary
    assert ("ZZZ" in a.unconverted) == any(f.pair == "XMR_ZZZ" for f in fills)
    assert "ZZZ" not in a.conversion_rates and "XMR" not in a.unconverted
    for name in ("total_value", "total_cash", "total_positions", "unrealized_pnl", "realized_pnl", "fees_paid"):
        assert getattr(a, name) == getattr(b, name), name
    assert abs(a.total_value - (10000 + a.realized_pnl + a.unrealized_pnl)) <= D("2e-8")
    assert abs(a.total_value - (a.total_cash + a.total_positions)) <= D("2e-8")
    assert abs(equity(with_zzz, marks) - a.total_value) <= D("1e-8")


@settings(max_examples=200, deadline=None)
@given(fills=mixed_fills(), btc=prices, eth=prices)
def test_at_consistent_marks_the_total_is_what_the_balances_are_worth(fills, btc, eth):
    marks = {"BTC_USDT": btc, "ETH_USDT": eth, "ETH_BTC": eth / btc}
    ledger = Ledger("USDT", D(10000))
    for f in fills:
        if f.pair != "XMR_ZZZ":
            ledger.apply_fill(f)
    worth = {"USDT": D(1), "BTC": btc, "ETH": eth}
    by_balances = sum((b.total * worth[c] for c, b in ledger.balances.items()), D(0))
    assert abs(equity(ledger, marks) - by_balances) <= D("1e-12") * max(abs(by_balances), D(1))


# --------------------------------------------------------------------------------------------------
# A position's current cycle and the pair's whole life (issue 15, part 3)
# --------------------------------------------------------------------------------------------------
def test_an_open_position_shows_its_cycle_and_the_pairs_whole_life():
    ledger = Ledger("USDT", D(10000))
    ledger.apply_fill(fill("buy", "1", "100", "0.1", n=1))  # cycle 1: -0.1
    ledger.apply_fill(fill("sell", "1", "110", "0.11", n=2))  # closes: +10 - 0.11 -> cycle 1 = 9.79
    ledger.apply_fill(fill("buy", "2", "105", "0.21", n=3))  # cycle 2 opens: -0.21
    ledger.apply_fill(fill("sell", "1", "107", "0.107", n=4))  # part: +2 - 0.107 -> cycle 2 = 1.683
    view = snapshot(ledger, {"BTC_USDT": D(106)}, DayStart(), 1, 0).positions[0]
    assert view.id == "POS_002_BTC_USDT"
    assert (view.cycle_realized_pnl, view.cycle_fees) == (D("1.683"), D("0.317"))  # 0.21 + 0.107
    assert (view.pair_realized_pnl, view.pair_fees) == (D("11.473"), D("0.527"))  # 9.79 + 1.683; 0.21 + 0.317
    assert (view.realized_pnl, view.fees) == (view.pair_realized_pnl, view.pair_fees)  # kept, as before
    # a flip: the remainder opens cycle 3 with its share of the fee only
    ledger.apply_fill(fill("sell", "3", "100", "0.3", n=5))  # closes 1 (fee 0.1), opens short 2 (fee 0.2)
    view = position_view(ledger, "BTC_USDT", {}, DayStart(), D(10000))
    assert view.id == "POS_003_BTC_USDT" and view.side == "short"
    assert (view.cycle_realized_pnl, view.cycle_fees) == (D("-0.2"), D("0.2"))
    # flat: no cycle open
    ledger.apply_fill(fill("buy", "2", "100", n=6))
    view = position_view(ledger, "BTC_USDT", {}, DayStart(), D(10000))
    assert view.side == "flat" and (view.cycle_realized_pnl, view.cycle_fees) == (0, 0)


def test_the_first_cycle_is_the_whole_life():
    ledger = Ledger("USDT", D(10000))
    ledger.apply_fill(fill("buy", "2", "100", "0.2", n=1))
    ledger.apply_fill(fill("sell", "1", "120", "0.12", n=2))
    view = position_view(ledger, "BTC_USDT", {}, DayStart(), D(10000))
    # realized -0.2 + (20 - 0.12) = 19.68, fees 0.32
    assert (view.cycle_realized_pnl, view.cycle_fees, view.pair_realized_pnl, view.pair_fees) == (
        D("19.68"), D("0.32"), D("19.68"), D("0.32"))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Breaches: a short is not a negative balance (issue 15, part 3)
# --------------------------------------------------------------------------------------------------
def order(side: str, qty: str, price: str, order_id: str, pair: str = "BTC_USDT") -> Order:
    return Order(
        order_id=order_id, client_order_id=order_id, pair=pair, side=side,  # type: ignore[arg-type]
        type="limit", quantity=D(qty), price=D(price), status=OrderStatus.ACCEPTED,
    )  # fmt: skip


def test_with_shorts_allowed_a_short_is_no_breach_but_spending_what_is_not_there_is():
    ledger = Ledger("USDT", D(1000))
    ledger.apply_fill(fill("sell", "0.5", "100", n=1))  # short 0.5 BTC: BTC -0.5, USDT 1050
    assert ledger.breaches(allow_short=True) == []
    assert ledger.breaches(allow_short=False) == ["BTC"]  # forbidden: below zero
    ledger.apply_order(order("sell", "0.3", "101", "S1"))  # a working sell adds to the short: allowed
    assert ledger.balance("BTC").available == D("-0.8") and ledger.breaches(allow_short=True) == []
    ledger.apply_order(order("buy", "11", "100", "B1"))  # locks 1100 USDT of 1050: a breach either way
    assert ledger.breaches(allow_short=True) == ["USDT"]
    ledger.apply_order(Order(**{**_fields(order("buy", "11", "100", "B1")), "status": OrderStatus.CANCELED}))
    assert ledger.breaches(allow_short=True) == []
    # BTC spent on ETH_BTC beyond the short: BTC -0.5 - 0.05 = -0.55, below the -0.5 short
    ledger.apply_fill(fill("buy", "1", "0.05", pair="ETH_BTC", n=2))
    assert ledger.breaches(allow_short=True) == ["BTC"]


def _fields(o: Order) -> dict[str, object]:
    return {f: getattr(o, f) for f in o.__struct_fields__}


# --------------------------------------------------------------------------------------------------
# The synthetic feed prices crosses from their legs
# --------------------------------------------------------------------------------------------------
def mid(book) -> Decimal:  # type: ignore[no-untyped-def]
    return (book.bids[0][0] + book.asks[0][0]) / 2


def test_synthetic_crosses_follow_their_legs():
    market = SyntheticMarket(["ETH_BTC", "BTC_USDT", "ETH_USDT", "XMR_BTC"], seed=7)
    assert market.crosses == {"ETH_BTC": ("ETH_USDT", "BTC_USDT")}  # XMR has no USDT leg: it walks alone
    for ts in range(500):
        books = {b.pair: b for b in market.next(ts)}
        assert list(books) == ["ETH_BTC", "BTC_USDT", "ETH_USDT", "XMR_BTC"]
        implied = mid(books["ETH_USDT"]) / mid(books["BTC_USDT"])
        # the books' ticks and spreads: within 0.05 % of the legs' ratio
        assert abs(mid(books["ETH_BTC"]) / implied - 1) < D("0.0005")
    assert D("0.001") < mid(books["XMR_BTC"]) < D("0.01")  # 160 / 60000 = 0.00267 to start


def test_cross_start_prices_and_ticks():
    assert start_price("ETH_BTC") == D("0.05")
    assert start_price("BTC_USDT") == 60000
    book = SyntheticMarket(["BTC_USDT", "ETH_USDT", "ETH_BTC"], seed=1).next(0)[2]
    assert book.bids[0][0] < book.asks[0][0] and book.asks[0][0] - book.bids[0][0] < D("0.0001")


@pytest.mark.parametrize("day", ["2024-05-01"])
def test_day_start_equity_is_converted(day):
    start = roll_day(three_pairs(), MARKS, DayStart(), day)
    assert start.equity == D("20909.576")
