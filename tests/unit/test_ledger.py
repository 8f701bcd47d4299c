"""The ledger's money maths (domain/ledger.py) and the portfolio valuation built on it (domain/valuation.py)."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import Ledger, LedgerError, Position
from domain.valuation import DayStart, equity, roll_day, snapshot
from schemas.messages import Fill

D = Decimal
INITIAL = D("10000")


def fill(
    side: str,
    qty: str | Decimal,
    price: str | Decimal,
    fee: str | Decimal = "0",
    fee_currency: str = "USDT",
    pair: str = "BTC_USDT",
    ts: int = 1,
    fill_id: str = "f",
) -> Fill:
    return Fill(
        fill_id=fill_id,
        order_id="o",
        client_order_id="c",
        pair=pair,
        side=side,  # type: ignore[arg-type]
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        fee_currency=fee_currency,
        liquidity="taker",
        venue="paper",
        timestamp=ts,
    )


def book(fills: list[Fill], initial: Decimal = INITIAL) -> Ledger:
    ledger = Ledger("USDT", initial)
    for i, f in enumerate(fills):
        ledger.apply_fill(fill(f.side, f.quantity, f.price, f.fee, f.fee_currency, f.pair, ts=i + 1, fill_id=str(i)))
    return ledger


# --------------------------------------------------------------------------------------------------
# Hand-computed cases. Initial balance 10000 USDT, pair BTC_USDT.
# Columns: fills, quantity (signed), side, average price, realized P&L, fees (in USDT), USDT, BTC, cycle
# --------------------------------------------------------------------------------------------------
CASES = [
    pytest.param(
        # buy 2 @ 100 fee 1: avg 100; realized = -fee = -1; USDT = 10000 - 2*100 - 1 = 9799
        [fill("buy", "2", "100", "1")],
        "2", "long", "100", "-1", "1", "9799", "2", 1,
        id="open-long",
    ),
    pytest.param(
        # buy 2 @ 100 fee 1, buy 2 @ 130 fee 1: avg = (2*100 + 2*130) / 4 = 115; realized = -1 - 1 = -2
        # USDT = 10000 - 200 - 1 - 260 - 1 = 9538
        [fill("buy", "2", "100", "1"), fill("buy", "2", "130", "1")],
        "4", "long", "115", "-2", "2", "9538", "4", 1,
        id="add-to-long-moves-average",
    ),
    pytest.param(
        # buy 4 @ 100 fee 2, sell 1 @ 120 fee 0.5: avg stays 100;
        # realized = -2 + [1*(120-100) - 0.5] = -2 + 19.5 = 17.5; USDT = 10000 - 400 - 2 + 120 - 0.5 = 9717.5
        [fill("buy", "4", "100", "2"), fill("sell", "1", "120", "0.5")],
        "3", "long", "100", "17.5", "2.5", "9717.5", "3", 1,
        id="partial-close",
    ),
    pytest.param(
        # buy 3 @ 100 fee 1, sell 3 @ 90 fee 1: flat, avg reset to 0
        # realized = -1 + [3*(90-100) - 1] = -1 - 31 = -32; USDT = 10000 - 300 - 1 + 270 - 1 = 9968
        [fill("buy", "3", "100", "1"), fill("sell", "3", "90", "1")],
        "0", "flat", "0", "-32", "2", "9968", "0", 1,
        id="full-close",
    ),
    pytest.param(
        # buy 1 @ 100, sell 1 @ 110 (realized +10, flat), buy 2 @ 105: a second cycle at avg 105
        # USDT = 10000 - 100 + 110 - 210 = 9800
        [fill("buy", "1", "100"), fill("sell", "1", "110"), fill("buy", "2", "105")],
        "2", "long", "105", "10", "0", "9800", "2", 2,
        id="reopen-after-close",
    ),
    pytest.param(
        # sell 2 @ 50 fee 0.5 (short), buy 2 @ 60 fee 0.5 (cover at a loss)
        # realized = -0.5 + [2*(60-50)*(-1) - 0.5] = -0.5 - 20.5 = -21; USDT = 10000 + 100 - 0.5 - 120 - 0.5 = 9979
        [fill("sell", "2", "50", "0.5"), fill("buy", "2", "60", "0.5")],
        "0", "flat", "0", "-21", "1", "9979", "0", 1,
        id="short-covered-at-a-loss",
    ),
    pytest.param(
        # buy 1 @ 100, sell 3 @ 110 fee 3: closes 1, opens short 2 @ 110
        # fee split 1/3 : 2/3 -> close fee 1, open fee 2; realized = [1*(110-100) - 1] - 2 = 7
        # USDT = 10000 - 100 + 330 - 3 = 10227; BTC = 1 - 3 = -2
        [fill("buy", "1", "100"), fill("sell", "3", "110", "3")],
        "-2", "short", "110", "7", "3", "10227", "-2", 2,
        id="flip-long-to-short",
    ),
    pytest.param(
        # sell 2 @ 100, buy 4 @ 90 fee 2: closes 2, opens long 2 @ 90
        # fee split 2/4 : 2/4 -> close fee 1, open fee 1; realized = [2*(90-100)*(-1) - 1] - 1 = 18
        # USDT = 10000 + 200 - 360 - 2 = 9838
        [fill("sell", "2", "100"), fill("buy", "4", "90", "2")],
        "2", "long", "90", "18", "2", "9838", "2", 2,
        id="flip-short-to-long",
    ),
    pytest.param(
        # a negative quote fee (maker rebate) adds to realized: buy 1 @ 100 fee -0.1
        # realized = +0.1; USDT = 10000 - 100 + 0.1 = 9900.1
        [fill("buy", "1", "100", "-0.1")],
        "1", "long", "100", "0.1", "-0.1", "9900.1", "1", 1,
        id="quote-fee-rebate",
    ),
    pytest.param(
        # buy 2 @ 100, fee 0.002 BTC: BTC balance and position both 2 - 0.002 = 1.998
        # realized falls by the fee's value 0.002 * 100 = 0.2; fees (in quote) 0.2; USDT = 10000 - 200 = 9800
        [fill("buy", "2", "100", "0.002", "BTC")],
        "1.998", "long", "100", "-0.2", "0.2", "9800", "1.998", 1,
        id="base-fee-on-open",
    ),
    pytest.param(
        # buy 1 @ 100, buy 1 @ 120 fee 0.01 BTC: avg (100 + 120) / 2 = 110, the fee's units leave the long
        # at their cost: realized = -0.01 * 110 = -1.1; fees = 0.01 * 120 = 1.2 (valued at the fill price)
        # quantity = 2 - 0.01 = 1.99; USDT = 10000 - 100 - 120 = 9780
        [fill("buy", "1", "100"), fill("buy", "1", "120", "0.01", "BTC")],
        "1.99", "long", "110", "-1.1", "1.2", "9780", "1.99", 1,
        id="base-fee-on-add",
    ),
    pytest.param(
        # sell 1 @ 100, fee 0.001 BTC: the short grows by the fee, entered at 100 -> -1.001 @ 100
        # realized = -0.001 * 100 = -0.1; USDT = 10000 + 100 = 10100; BTC = -1 - 0.001 = -1.001
        [fill("sell", "1", "100", "0.001", "BTC")],
        "-1.001", "short", "100", "-0.1", "0.1", "10100", "-1.001", 1,
        id="base-fee-on-short",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fills", "quantity", "side", "average", "realized", "fees", "usdt", "btc", "cycle"),
    CASES,
)
def test_hand_computed(fills, quantity, side, average, realized, fees, usdt, btc, cycle):
    ledger = book(fills)
    pos = ledger.positions["BTC_USDT"]
    assert pos.quantity == D(quantity)
    assert pos.side == side
    assert pos.average_price == D(average)
    assert pos.realized_pnl == D(realized)
    assert ledger.realized_pnl == D(realized)
    assert pos.fees == D(fees)
    assert ledger.fees_paid == D(fees)
    assert ledger.balance("USDT").total == D(usdt)
    assert ledger.balance("BTC").total == D(btc)
    assert pos.cycle == cycle
    assert ledger.fills_applied == len(fills)


def test_apply_fill_returns_the_realized_pnl_of_that_fill():
    ledger = Ledger("USDT", INITIAL)
    assert ledger.apply_fill(fill("buy", "1", "100", "1")) == D("-1")
    # flip: close 1 @ 110 (+10 - fee 0.5), open 1 short (fee 0.5) -> 9
    assert ledger.apply_fill(fill("sell", "2", "110", "1", ts=2)) == D("9")
    assert ledger.realized_pnl == D("8")


def test_open_time_and_last_price():
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "1", "100", ts=10))
    ledger.apply_fill(fill("buy", "1", "102", ts=20))
    pos = ledger.positions["BTC_USDT"]
    assert (pos.opened_at, pos.updated_at, pos.last_price) == (10, 20, D("102"))
    ledger.apply_fill(fill("sell", "2", "101", ts=30))
    assert (pos.opened_at, pos.updated_at, pos.last_price) == (None, 30, D("101"))
    ledger.apply_fill(fill("sell", "1", "99", ts=40))
    assert (pos.opened_at, pos.cycle) == (40, 2)


def test_unrealized_excludes_fees():
    pos = Position("BTC_USDT")
    pos.apply(True, D("2"), D("100"), D("5"), 1)
    # 2 * (110 - 100) = 20, the fee of 5 is in realized only
    assert pos.unrealized(D("110")) == D("20")
    assert pos.realized_pnl == D("-5")
    pos.apply(False, D("3"), D("100"), D("0"), 2)
    # short 1 @ 100, mark 90: -1 * (90 - 100) = 10
    assert pos.unrealized(D("90")) == D("10")
    assert Position("X_Y").unrealized(D("5")) == 0


def test_fee_in_third_currency_raises():
    ledger = Ledger("USDT", INITIAL)
    with pytest.raises(LedgerError):
        ledger.apply_fill(fill("buy", "1", "100", "0.01", "BNB"))
    # a zero fee in any currency is no fee
    ledger.apply_fill(fill("buy", "1", "100", "0", "BNB"))
    assert ledger.balance("USDT").total == D("9900")
    assert "BNB" not in ledger.balances


INVALID = [
    pytest.param(fill("buy", "0", "100"), id="zero-quantity"),
    pytest.param(fill("sell", "-1", "100"), id="negative-quantity"),
    pytest.param(fill("buy", "1", "0"), id="zero-price"),
    pytest.param(fill("sell", "1", "-5"), id="negative-price"),
    pytest.param(fill("buy", "1", "100", "0.01", "BNB"), id="third-currency-fee"),
    pytest.param(fill("buy", "1", "100", "-0.01", "BTC"), id="negative-base-fee"),
    pytest.param(fill("buy", "1", "100", pair="BTCUSDT"), id="pair-not-base-quote"),
]


@pytest.mark.parametrize("bad", INVALID)
def test_invalid_fill_raises_and_leaves_an_open_position_untouched(bad):
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "1", "90", "0.5"))
    before = copy.deepcopy(ledger)
    with pytest.raises(LedgerError):
        ledger.apply_fill(bad)
    assert ledger == before


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(fill("buy", "0", "100"), id="zero-quantity"),
        pytest.param(fill("sell", "-1", "100"), id="negative-quantity"),
        pytest.param(fill("buy", "1", "0"), id="zero-price"),
        pytest.param(fill("sell", "1", "-5"), id="negative-price"),
        pytest.param(fill("buy", "1", "100", "0.01", "BNB"), id="third-currency-fee"),
        pytest.param(fill("buy", "1", "100", "-0.01", "BTC"), id="negative-base-fee"),
        pytest.param(fill("buy", "1", "100", pair="BTCUSDT"), id="pair-not-base-quote"),
        pytest.param(fill("buy", "NaN", "100"), id="nan-quantity"),
        pytest.param(fill("buy", "1", "Infinity"), id="infinite-price"),
        pytest.param(fill("buy", "1", "100", "NaN"), id="nan-fee"),
    ],
)
def test_invalid_first_fill_of_a_pair_leaves_the_ledger_unchanged(bad):
    # regression: a rejected first fill of a pair used to leave an empty Position behind (fixed in cd4ca6d)
    ledger = Ledger("USDT", INITIAL)
    before = copy.deepcopy(ledger)
    with pytest.raises(LedgerError):
        ledger.apply_fill(bad)
    assert ledger == before
    assert ledger.positions == {}


@pytest.mark.parametrize(("qty", "price"), [("0", "1"), ("-1", "1"), ("1", "0"), ("1", "-1")])
def test_position_apply_rejects_non_positive(qty, price):
    pos = Position("BTC_USDT")
    with pytest.raises(LedgerError):
        pos.apply(True, D(qty), D(price), D(0), 1)
    assert pos == Position("BTC_USDT")


# --------------------------------------------------------------------------------------------------
# Properties over random fill sequences
# --------------------------------------------------------------------------------------------------
PAIRS = ("BTC_USDT", "ETH_USDT")


@st.composite
def fills_strategy(draw: st.DrawFn, max_size: int = 25, base_fees: bool = True) -> list[Fill]:
    n = draw(st.integers(1, max_size))
    out = []
    for i in range(n):
        pair = draw(st.sampled_from(PAIRS))
        side = draw(st.sampled_from(("buy", "sell")))
        qty = D(draw(st.integers(1, 50_000))).scaleb(-4)  # 0.0001 .. 5
        price = D(draw(st.integers(1_000, 200_000))).scaleb(-2)  # 10 .. 2000
        bps = draw(st.integers(0, 20))
        in_base = base_fees and draw(st.booleans())
        if in_base:
            fee, ccy = (qty * bps / 10_000).quantize(D("1e-8")), pair.split("_")[0]
        else:
            fee, ccy = (qty * price * bps / 10_000).quantize(D("1e-6")), "USDT"
        out.append(fill(side, qty, price, fee, ccy, pair, ts=i + 1, fill_id=str(i)))
    return out


marks_strategy = st.fixed_dictionaries({p: st.integers(1_000, 200_000).map(lambda n: D(n).scaleb(-2)) for p in PAIRS})


def _close(a: Decimal, b: Decimal, scale: Decimal) -> bool:
    return abs(a - b) <= D("1e-12") * max(scale, D(1))


@settings(max_examples=300, deadline=None)
@given(fills=fills_strategy(), marks=marks_strategy)
def test_books_balance_at_any_mark(fills, marks):
    """cash + sum(quantity * mark) == initial + realized + sum(unrealized at mark)."""
    ledger = book(fills)
    cash = ledger.balance("USDT").total
    positions_value = sum((p.quantity * marks[k] for k, p in ledger.positions.items()), D(0))
    unrealized = sum((p.unrealized(marks[k]) for k, p in ledger.positions.items()), D(0))
    scale = INITIAL + sum((f.quantity * f.price for f in fills), D(0)) + abs(positions_value)
    assert _close(cash + positions_value, INITIAL + ledger.realized_pnl + unrealized, scale)
    assert _close(equity(ledger, marks), INITIAL + ledger.realized_pnl + unrealized, scale)
    # the ledger totals are the sum of the positions'
    assert _close(ledger.realized_pnl, sum((p.realized_pnl for p in ledger.positions.values()), D(0)), scale)
    assert _close(ledger.fees_paid, sum((p.fees for p in ledger.positions.values()), D(0)), scale)


@settings(max_examples=300, deadline=None)
@given(fills=fills_strategy())
def test_net_quantity_is_the_sum_of_signed_fills_minus_base_fees(fills):
    ledger = book(fills)
    for pair in PAIRS:
        base = pair.split("_")[0]
        expected = sum(
            ((f.quantity if f.side == "buy" else -f.quantity) - (f.fee if f.fee_currency == base else 0))
            for f in fills
            if f.pair == pair
        )
        if pair in ledger.positions:
            assert ledger.positions[pair].quantity == expected
            assert ledger.balance(base).total == expected
        else:
            assert expected == 0 and not any(f.pair == pair for f in fills)
    # USDT moves by the quote legs and the quote fees, exactly
    usdt = INITIAL + sum(
        ((-1 if f.side == "buy" else 1) * f.quantity * f.price - (f.fee if f.fee_currency == "USDT" else 0))
        for f in fills
    )
    assert ledger.balance("USDT").total == usdt
    # a position's side matches its sign, and a flat position has no average price
    for pos in ledger.positions.values():
        assert pos.side == ("long" if pos.quantity > 0 else "short" if pos.quantity < 0 else "flat")
        if pos.quantity == 0:
            assert pos.average_price == 0 and pos.opened_at is None
        else:
            assert pos.average_price > 0


@settings(max_examples=200, deadline=None)
@given(fills=fills_strategy(), data=st.data())
def test_replay_is_deterministic(fills, data):
    one = Ledger("USDT", INITIAL)
    realized_one = [one.apply_fill(f) for f in fills]
    two = Ledger("USDT", INITIAL)
    realized_two = []
    for f in fills:
        realized_two.append(two.apply_fill(f))
    assert one == two
    assert realized_one == realized_two
    # book part of the fills, restore a copy of those books (a snapshot), and book the rest on the copy
    cut = data.draw(st.integers(0, len(fills)), label="cut")
    first = Ledger("USDT", INITIAL)
    for f in fills[:cut]:
        first.apply_fill(f)
    restored = copy.deepcopy(first)
    for f in fills[cut:]:
        restored.apply_fill(f)
    assert restored == one
    assert restored.positions == one.positions
    assert restored.balances == one.balances
    assert restored.realized_pnl == one.realized_pnl


@settings(max_examples=300, deadline=None)
@given(fills=fills_strategy())
def test_realized_changes_only_on_reducing_fills_apart_from_fees(fills):
    ledger = Ledger("USDT", INITIAL)
    for f in fills:
        pos = ledger.positions.get(f.pair)
        q0 = pos.quantity if pos else D(0)
        avg0 = pos.average_price if pos else D(0)
        r0 = pos.realized_pnl if pos else D(0)
        buy = f.side == "buy"
        returned = ledger.apply_fill(f)
        pos = ledger.positions[f.pair]
        # the position's realized P&L moves by what apply_fill returned (up to the 28-digit rounding)
        assert _close(pos.realized_pnl - r0, returned, abs(r0) + f.quantity * f.price + 1)
        in_base = f.fee_currency != "USDT" and f.fee != 0
        reducing = q0 != 0 and (q0 > 0) != buy
        scale = f.quantity * f.price + abs(q0) * avg0 + 1
        if not reducing:
            if not in_base:
                assert returned == -f.fee
            elif pos.quantity > 0 or (pos.quantity == 0 and buy):
                # the fee's units leave a long at their cost (the new average price)
                assert _close(returned, -f.fee * pos.average_price, scale)
            else:
                # the fee's units are added to a short at the fill price
                assert _close(returned, -f.fee * f.price, scale)
        elif not in_base:
            direction = 1 if q0 > 0 else -1
            closing = min(f.quantity, abs(q0))
            assert _close(returned, closing * (f.price - avg0) * direction - f.fee, scale)


# --------------------------------------------------------------------------------------------------
# Valuation
# --------------------------------------------------------------------------------------------------
def _seed_ledger() -> Ledger:
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "0.1", "50000", "5", pair="BTC_USDT", ts=100))
    ledger.apply_fill(fill("sell", "2", "3000", "6", pair="ETH_USDT", ts=200))
    ledger.apply_fill(fill("buy", "1", "150", pair="SOL_USDT", ts=300))
    ledger.apply_fill(fill("sell", "1", "150", pair="SOL_USDT", ts=400))  # flat again: left out of the snapshot
    return ledger


def test_snapshot_numbers():
    ledger = _seed_ledger()
    marks = {"BTC_USDT": D("51000"), "ETH_USDT": D("2900")}
    snap = snapshot(ledger, marks, DayStart(), ts=999, last_seq=7)
    s = snap.summary
    # cash = 10000 - 0.1*50000 - 5 + 2*3000 - 6 - 150 + 150 = 10989
    assert s.total_cash == D("10989")
    # positions = 0.1*51000 + (-2)*2900 = 5100 - 5800 = -700
    assert s.total_positions == D("-700")
    assert s.total_value == D("10289") == s.total_cash + s.total_positions
    # unrealized = 0.1*(51000-50000) + (-2)*(2900-3000) = 100 + 200 = 300
    assert s.unrealized_pnl == D("300")
    assert s.realized_pnl == D("-11")
    assert s.fees_paid == D("11")
    assert s.day_pnl == 0  # no day-start record yet
    assert s.base_currency == "USDT"
    # and the books balance: 10000 - 11 + 300 = 10289
    assert s.total_value == INITIAL + s.realized_pnl + s.unrealized_pnl
    assert (snap.fills_applied, snap.last_fill_seq, snap.ts) == (4, 7, 999)

    btc, eth = snap.positions
    assert (btc.pair, btc.side, btc.quantity, btc.average_price) == ("BTC_USDT", "long", D("0.1"), D("50000"))
    assert (btc.current_price, btc.market_value, btc.unrealized_pnl) == (D("51000"), D("5100"), D("100"))
    assert (btc.realized_pnl, btc.fees, btc.opened_at, btc.updated_at) == (D("-5"), D("5"), 100, 100)
    assert btc.id == "POS_001_BTC_USDT"
    # 5100 / 10289 = 0.49567499... -> 0.495675
    assert btc.risk_metrics.position_size == D("0.495675")
    assert btc.risk_metrics.leverage == 1
    assert (eth.pair, eth.side, eth.quantity, eth.average_price) == ("ETH_USDT", "short", D("2"), D("3000"))
    assert (eth.market_value, eth.unrealized_pnl, eth.realized_pnl) == (D("-5800"), D("200"), D("-6"))
    # |-5800| / 10289 = 0.56370881... -> 0.563709
    assert eth.risk_metrics.position_size == D("0.563709")

    balances = {b.currency: b for b in snap.balances}
    assert snap.balances[0].currency == "USDT"
    assert balances["BTC"].total == D("0.1")
    assert balances["ETH"].total == D("-2")
    assert "SOL" not in balances  # zero balances are left out
    assert balances["USDT"].available == D("10989")


def test_snapshot_marks_fall_back_to_the_last_fill_price():
    ledger = _seed_ledger()
    snap = snapshot(ledger, {}, DayStart(), ts=1, last_seq=0)
    # at the fill prices: unrealized 0, total = 10989 + 5000 - 6000 = 9989
    assert snap.summary.unrealized_pnl == 0
    assert snap.summary.total_value == D("9989")
    assert [p.current_price for p in snap.positions] == [D("50000"), D("3000")]


def test_snapshot_pair_quoted_in_a_currency_that_cannot_be_converted_stays_out_of_the_totals():
    # only ETH_BTC has a mark: BTC has no route into USDT (no BTC_USDT, no USDT_BTC; the bridge is USDT itself)
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "1", "0.05", "0", "BTC", pair="ETH_BTC"))
    snap = snapshot(ledger, {"ETH_BTC": D("0.06")}, DayStart(), ts=1, last_seq=0)
    (pos,) = snap.positions
    assert pos.market_value == D("0.06")  # in BTC, its quote currency
    assert pos.unrealized_pnl == D("0.01")  # in BTC
    assert pos.risk_metrics.position_size == 0  # no value in USDT to compare
    s = snap.summary
    assert s.unconverted == ["BTC"]
    assert s.total_value == INITIAL and s.total_cash == INITIAL  # the BTC spent and the ETH_BTC position: left out
    assert s.unrealized_pnl == 0 and s.total_positions == 0
    assert s.by_currency["BTC"].unrealized_pnl == D("0.01") and s.by_currency["BTC"].balance == D("-0.05")
    assert s.by_currency["ETH"].balance == 1


def test_roll_day_and_day_pnl():
    empty = Ledger("USDT", INITIAL)
    start0 = roll_day(empty, {}, DayStart(), "2024-05-01")
    assert (start0.day, start0.equity) == ("2024-05-01", INITIAL)

    ledger = _seed_ledger()
    open_marks = {"BTC_USDT": D("50000"), "ETH_USDT": D("3000")}
    start = roll_day(ledger, open_marks, DayStart(), "2024-05-01")
    # equity at the open marks = 10989 + 5000 - 6000 = 9989
    assert start.equity == D("9989")
    assert start.realized == {"BTC_USDT": D("-5"), "ETH_USDT": D("-6"), "SOL_USDT": D("0")}
    assert start.unrealized["BTC_USDT"] == 0

    later = {"BTC_USDT": D("51000"), "ETH_USDT": D("2900")}
    # same day: the record is kept as it was
    assert roll_day(ledger, later, start, "2024-05-01") is start
    snap = snapshot(ledger, later, start, ts=2, last_seq=0)
    # day P&L = total value - day-start equity = 10289 - 9989 = 300
    assert snap.summary.day_pnl == D("300")
    assert [p.day_pnl for p in snap.positions] == [D("100"), D("200")]

    # a realized gain during the day counts in the position's day P&L: cover 1 ETH at 2900: +100
    ledger.apply_fill(fill("buy", "1", "2900", pair="ETH_USDT", ts=500))
    snap = snapshot(ledger, later, start, ts=3, last_seq=0)
    assert snap.summary.day_pnl == D("300")
    eth = snap.positions[1]
    # realized +100, unrealized -1*(2900-3000) = 100 (was 0 at the open): 200
    assert (eth.realized_pnl, eth.unrealized_pnl, eth.day_pnl) == (D("94"), D("100"), D("200"))

    # a new day: a new record, taken at the current marks
    nxt = roll_day(ledger, later, start, "2024-05-02")
    assert nxt is not start
    assert nxt.day == "2024-05-02"
    assert nxt.equity == D("10289")
    assert snapshot(ledger, later, nxt, ts=4, last_seq=0).summary.day_pnl == 0
