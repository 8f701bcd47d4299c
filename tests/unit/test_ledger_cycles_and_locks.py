"""Position cycles (``Ledger.history``, ``Position.current``) and the funds working orders lock (``lock_of``,
``Ledger.apply_order``, ``Balance.available``, ``Ledger.negative``) of domain/ledger.py. Pure: no bus."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.ledger import ClosedCycle, CycleStats, Ledger, lock_of
from schemas.messages import Fill, Order, OrderStatus

D = Decimal
S = OrderStatus
INITIAL = D("10000")
PAIR = "BTC_USDT"


def held(lock):
    """A lock as (currency, amount), the way the tests write it."""
    return None if lock is None else (lock.currency, lock.amount)


def held_all(locks):
    return {oid: held(lock) for oid, lock in locks.items()}


def fill(
    side: str,
    qty: str | Decimal,
    price: str | Decimal,
    fee: str | Decimal = "0",
    fee_currency: str = "USDT",
    pair: str = PAIR,
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


def cycle(
    n: int,
    side: str,
    qty: str,
    open_price: str,
    close_price: str | None,
    realized: str,
    fees: str,
    opened_at: int,
    closed_at: int,
    pair: str = PAIR,
) -> ClosedCycle:
    return ClosedCycle(
        pair=pair,
        cycle=n,
        side=side,
        quantity=D(qty),
        average_open_price=D(open_price),
        average_close_price=None if close_price is None else D(close_price),
        realized_pnl=D(realized),
        fees=D(fees),
        opened_at=opened_at,
        closed_at=closed_at,
    )


def stats(side: str, opened_at: int, open_qty: str, open_cost: str, realized: str, fees: str) -> CycleStats:
    """The open cycle just after it opened (nothing closed yet)."""
    return CycleStats(
        side=side, opened_at=opened_at, open_qty=D(open_qty), open_cost=D(open_cost), realized=D(realized), fees=D(fees)
    )


def book(fills: list[Fill]) -> Ledger:
    ledger = Ledger("USDT", INITIAL)
    for f in fills:
        ledger.apply_fill(f)
    return ledger


# --------------------------------------------------------------------------------------------------
# Position cycles, by hand. Columns: fills, Ledger.history, the open cycle (Position.current), Position.cycle
# cycle(n, side, quantity opened, avg open, avg close, realized (fees subtracted), fees, opened_at, closed_at)
# --------------------------------------------------------------------------------------------------
CYCLES = [
    pytest.param(
        # buy 2 @ 100 fee 1, sell 2 @ 110 fee 1: realized = -1 + [2*(110-100) - 1] = 18; fees 1 + 1 = 2
        [fill("buy", "2", "100", "1", ts=10), fill("sell", "2", "110", "1", ts=20)],
        [cycle(1, "long", "2", "100", "110", "18", "2", 10, 20)],
        None, 1,
        id="open-close-long",
    ),
    pytest.param(
        # buy 1 @ 100 fee 0.5, buy 3 @ 120 fee 1.5: opened 4, avg open = (100 + 360) / 4 = 115
        # sell 2 @ 130 fee 1: +2*(130-115) - 1 = 29; sell 2 @ 110 fee 1: 2*(110-115) - 1 = -11
        # realized = -0.5 - 1.5 + 29 - 11 = 16 (= 4*(120-115) - 4 fees); avg close = (260 + 220) / 4 = 120
        [
            fill("buy", "1", "100", "0.5", ts=10),
            fill("buy", "3", "120", "1.5", ts=20),
            fill("sell", "2", "130", "1", ts=30),
            fill("sell", "2", "110", "1", ts=40),
        ],
        [cycle(1, "long", "4", "115", "120", "16", "4", 10, 40)],
        None, 1,
        id="add-then-close-in-two-parts",
    ),
    pytest.param(
        # part of a long closed: the cycle stays open, nothing in history yet
        # buy 4 @ 100 fee 2 (realized -2), sell 1 @ 120 fee 0.5 (+20 - 0.5): realized 17.5, fees 2.5
        [fill("buy", "4", "100", "2", ts=10), fill("sell", "1", "120", "0.5", ts=20)],
        [],
        CycleStats("long", 10, D(4), D(400), D(1), D(120), D("17.5"), D("2.5")), 1,
        id="partial-close-keeps-the-cycle-open",
    ),
    pytest.param(
        # sell 2 @ 50 fee 0.5, buy 2 @ 60 fee 0.5: realized = -0.5 + [2*(60-50)*(-1) - 0.5] = -21; fees 1
        [fill("sell", "2", "50", "0.5", ts=10), fill("buy", "2", "60", "0.5", ts=20)],
        [cycle(1, "short", "2", "50", "60", "-21", "1", 10, 20)],
        None, 1,
        id="short-covered-at-a-loss",
    ),
    pytest.param(
        # buy 1 @ 100 fee 0.2; sell 4 @ 110 fee 2 closes 1 and opens a short of 3 @ 110
        # fee split 1/4 : 3/4 -> closing share 0.5 (cycle 1), opening share 1.5 (cycle 2)
        # cycle 1: realized = -0.2 + [1*(110-100) - 0.5] = 9.3; fees 0.2 + 0.5 = 0.7
        # cycle 2 starts with realized -1.5, fees 1.5, open 3 for 330
        [fill("buy", "1", "100", "0.2", ts=10), fill("sell", "4", "110", "2", ts=20)],
        [cycle(1, "long", "1", "100", "110", "9.3", "0.7", 10, 20)],
        stats("short", 20, "3", "330", "-1.5", "1.5"), 2,
        id="flip-long-to-short",
    ),
    pytest.param(
        # the same flip, then the short of 3 @ 110 is covered at 100 fee 0.6: 3*(100-110)*(-1) - 0.6 = 29.4
        # cycle 2: realized = -1.5 + 29.4 = 27.9; fees 1.5 + 0.6 = 2.1
        [
            fill("buy", "1", "100", "0.2", ts=10),
            fill("sell", "4", "110", "2", ts=20),
            fill("buy", "3", "100", "0.6", ts=30),
        ],
        [
            cycle(1, "long", "1", "100", "110", "9.3", "0.7", 10, 20),
            cycle(2, "short", "3", "110", "100", "27.9", "2.1", 20, 30),
        ],
        None, 2,
        id="flip-long-to-short-then-cover",
    ),
    pytest.param(
        # sell 2 @ 100; buy 4 @ 90 fee 2 covers 2 and opens a long of 2 @ 90; split 2/4 : 2/4 -> 1 and 1
        # cycle 1: realized = 2*(90-100)*(-1) - 1 = 19, fees 1; cycle 2 starts at -1, fees 1
        # then sell 2 @ 95 fee 0.5: 2*(95-90) - 0.5 = 9.5; cycle 2: realized -1 + 9.5 = 8.5, fees 1.5
        [
            fill("sell", "2", "100", ts=10),
            fill("buy", "4", "90", "2", ts=20),
            fill("sell", "2", "95", "0.5", ts=30),
        ],
        [
            cycle(1, "short", "2", "100", "90", "19", "1", 10, 20),
            cycle(2, "long", "2", "90", "95", "8.5", "1.5", 20, 30),
        ],
        None, 2,
        id="flip-short-to-long",
    ),
    pytest.param(
        # the flip alone: the new long starts with the opening share of the fee (1) as fees and -1 realized
        [fill("sell", "2", "100", ts=10), fill("buy", "4", "90", "2", ts=20)],
        [cycle(1, "short", "2", "100", "90", "19", "1", 10, 20)],
        stats("long", 20, "2", "180", "-1", "1"), 2,
        id="flip-short-to-long-open-cycle",
    ),
    pytest.param(
        # buy 1 @ 100, sell 1 @ 110: cycle 1, +10. sell 2 @ 105 fee 0.1 (cycle 2, short), buy 2 @ 100:
        # 2*(100-105)*(-1) - 0.1 = 9.9. buy 1 @ 101 at ts 50 opens cycle 3
        [
            fill("buy", "1", "100", ts=10),
            fill("sell", "1", "110", ts=20),
            fill("sell", "2", "105", "0.1", ts=30),
            fill("buy", "2", "100", ts=40),
            fill("buy", "1", "101", ts=50),
        ],
        [
            cycle(1, "long", "1", "100", "110", "10", "0", 10, 20),
            cycle(2, "short", "2", "105", "100", "9.9", "0.1", 30, 40),
        ],
        stats("long", 50, "1", "101", "0", "0"), 3,
        id="reopen-after-close",
    ),
    pytest.param(
        # buy 2 @ 100, fee 0.002 BTC: the long is 1.998; the fee's units leave at their cost 0.002*100 = 0.2
        # sell 1.998 @ 110 fee 0.2 USDT: 1.998*(110-100) - 0.2 = 19.78
        # realized = -0.2 + 19.78 = 19.58; fees 0.2 (0.002 BTC at 100) + 0.2 = 0.4; quantity opened 2
        [fill("buy", "2", "100", "0.002", "BTC", ts=10), fill("sell", "1.998", "110", "0.2", ts=20)],
        [cycle(1, "long", "2", "100", "110", "19.58", "0.4", 10, 20)],
        None, 1,
        id="fee-in-base",
    ),
    pytest.param(
        # buy 1 @ 100, buy 1 @ 120 fee 0.01 BTC: avg (100 + 120) / 2 = 110; the fee's units leave at their
        # cost: realized -0.01*110 = -1.1, but the fee is valued at the fill price: 0.01*120 = 1.2
        # sell 1.99 @ 130: 1.99*(130-110) = 39.8; realized = -1.1 + 39.8 = 38.7; avg open 220 / 2 = 110
        [
            fill("buy", "1", "100", ts=10),
            fill("buy", "1", "120", "0.01", "BTC", ts=20),
            fill("sell", "1.99", "130", ts=30),
        ],
        [cycle(1, "long", "2", "110", "130", "38.7", "1.2", 10, 30)],
        None, 1,
        id="fee-in-base-on-add",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("fills", "history", "current", "cycles"), CYCLES)
def test_cycles_by_hand(fills, history, current, cycles):
    ledger = book(fills)
    pos = ledger.positions[PAIR]
    assert ledger.history == history
    assert pos.current == current
    assert pos.cycle == cycles
    assert pos.closed_cycles == []  # drained into the ledger's history after every fill
    # the position's totals are its cycles' totals
    open_realized = current.realized if current else D(0)
    open_fees = current.fees if current else D(0)
    assert pos.realized_pnl == sum((c.realized_pnl for c in history), D(0)) + open_realized
    assert pos.fees == sum((c.fees for c in history), D(0)) + open_fees


def test_a_cycle_is_recorded_when_it_closes_not_before():
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "2", "100", ts=1))
    ledger.apply_fill(fill("sell", "1", "101", ts=2))
    assert ledger.history == []
    ledger.apply_fill(fill("sell", "1", "103", ts=3))
    # avg close = (101 + 103) / 2 = 102; realized 1 + 3 = 4
    assert ledger.history == [cycle(1, "long", "2", "100", "102", "4", "0", 1, 3)]
    assert ledger.positions[PAIR].current is None


def test_history_of_two_pairs_in_closing_order():
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("buy", "1", "100", ts=1))
    ledger.apply_fill(fill("sell", "2", "10", pair="ETH_USDT", ts=2))
    ledger.apply_fill(fill("buy", "2", "9", pair="ETH_USDT", ts=3))  # 2*(9-10)*(-1) = 2
    ledger.apply_fill(fill("sell", "1", "99", ts=4))  # 1*(99-100) = -1
    assert ledger.history == [
        cycle(1, "short", "2", "10", "9", "2", "0", 2, 3, pair="ETH_USDT"),
        cycle(1, "long", "1", "100", "99", "-1", "0", 1, 4),
    ]


def test_base_fee_of_a_flip_is_split_between_the_cycles():
    # sell 1 @ 100 (short), buy 3 @ 90 fee 0.003 BTC: covers 1, opens a long of 2 (1.997 after the fee).
    # The module's rule: a fill that crosses zero has its fee split in proportion to the two parts, the
    # closing part's share belonging to the closed cycle: 1/3 of 0.003 BTC = 0.001 BTC = 0.09 USDT.
    # cycle 1: realized = 1*(90-100)*(-1) - 0.09 = 9.91, fees 0.09
    # cycle 2: the remaining 0.002 BTC (0.18 USDT) -> realized -0.18, fees 0.18
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_fill(fill("sell", "1", "100", ts=1))
    ledger.apply_fill(fill("buy", "3", "90", "0.003", "BTC", ts=2))
    # the totals are right either way: 10 - 0.27 = 9.73 realized, 0.27 fees
    assert ledger.realized_pnl == D("9.73")
    assert ledger.fees_paid == D("0.27")
    assert ledger.history == [cycle(1, "short", "1", "100", "90", "9.91", "0.09", 1, 2)]
    cur = ledger.positions[PAIR].current
    assert cur is not None
    assert (cur.realized, cur.fees) == (D("-0.18"), D("0.18"))


# --------------------------------------------------------------------------------------------------
# Property: the cycles account for all of the ledger's realized P&L and fees (fees in quote)
# --------------------------------------------------------------------------------------------------
PAIRS = ("BTC_USDT", "ETH_USDT")
# few distinct sizes, so that positions often go back to exactly zero and cycles close and flip
SIZES = st.sampled_from(["0.5", "1", "1.5", "2", "3"]).map(D) | st.integers(1, 50_000).map(lambda n: D(n).scaleb(-4))


TOLERANCE = D("1e-15")  # amounts here stay below 1e7, so 28 significant digits reach 1e-21


@st.composite
def quote_fee_fills(draw: st.DrawFn) -> list[Fill]:
    out = []
    for i in range(draw(st.integers(1, 30))):
        pair = draw(st.sampled_from(PAIRS))
        qty = draw(SIZES)
        price = D(draw(st.integers(1_000, 200_000))).scaleb(-2)
        bps = draw(st.integers(-2, 20))  # a negative fee is a maker rebate
        fee = (qty * price * bps / 10_000).quantize(D("1e-6"))
        side = draw(st.sampled_from(("buy", "sell")))
        out.append(fill(side, qty, price, fee, "USDT", pair, ts=i + 1, fill_id=str(i)))
    return out


@settings(max_examples=200, deadline=None)
@given(fills=quote_fee_fills())
def test_cycles_account_for_realized_and_fees(fills):
    ledger = Ledger("USDT", INITIAL)
    for f in fills:
        ledger.apply_fill(f)
        open_cycles = [p.current for p in ledger.positions.values() if p.current is not None]
        realized = sum((c.realized_pnl for c in ledger.history), D(0)) + sum((c.realized for c in open_cycles), D(0))
        fees = sum((c.fees for c in ledger.history), D(0)) + sum((c.fees for c in open_cycles), D(0))
        # equal up to the last of the 28 significant digits: average prices like 10.00333... are rounded
        # there, and the ledger and the cycles add the same terms in a different order
        assert abs(realized - ledger.realized_pnl) <= TOLERANCE
        assert abs(fees - ledger.fees_paid) <= TOLERANCE
    for pair, pos in ledger.positions.items():
        closed = [c for c in ledger.history if c.pair == pair]
        # cycles are numbered 1, 2, ... in the order they close; the open one (if any) is the last number
        assert [c.cycle for c in closed] == list(range(1, len(closed) + 1))
        assert pos.cycle == len(closed) + (pos.current is not None)
        assert (pos.current is None) == (pos.quantity == 0)
        if pos.current is not None:
            assert pos.current.side == pos.side
        for c in closed:
            assert c.side in ("long", "short")
            assert c.quantity > 0 and c.average_open_price > 0
            assert c.average_close_price is not None and c.average_close_price > 0
            assert c.opened_at <= c.closed_at
        for a, b in itertools.pairwise(closed):
            assert a.closed_at <= b.opened_at


# --------------------------------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------------------------------
def order(
    side: str = "buy",
    type: str = "limit",
    qty: str = "2",
    price: str | None = "100",
    status: OrderStatus = S.ACCEPTED,
    filled: str = "0",
    reference_price: str | None = None,
    stop_price: str | None = None,
    triggered_at: int | None = None,
    order_id: str = "O1",
    pair: str = PAIR,
) -> Order:
    return Order(
        order_id=order_id,
        client_order_id=f"C-{order_id}",
        pair=pair,
        side=side,  # type: ignore[arg-type]
        type=type,  # type: ignore[arg-type]
        quantity=D(qty),
        status=status,
        price=None if price is None else D(price),
        stop_price=None if stop_price is None else D(stop_price),
        reference_price=None if reference_price is None else D(reference_price),
        triggered_at=triggered_at,
        filled_quantity=D(filled),
    )


LOCK_CASES = [
    # a buy limit locks quote: left x limit price = 2 * 100
    pytest.param(order(), ("USDT", D("200")), id="buy-limit"),
    # a sell locks base: what is left to fill
    pytest.param(order(side="sell", price="120"), ("BTC", D("2")), id="sell-limit"),
    pytest.param(order(side="sell", type="market", price=None), ("BTC", D("2")), id="sell-market"),
    # a market buy has no price: it locks at the risk-gate's reference price, 2 * 101.5
    pytest.param(order(type="market", price=None, reference_price="101.5"), ("USDT", D("203")), id="buy-market"),
    # ... and nothing at all without one
    pytest.param(order(type="market", price=None), None, id="buy-market-no-reference"),
    # partially filled: only what is left. buy 2 @ 100 with 0.5 filled: 1.5 * 100; sell: 1.5 BTC
    pytest.param(order(status=S.PARTIALLY_FILLED, filled="0.5"), ("USDT", D("150")), id="buy-partial"),
    pytest.param(order(side="sell", status=S.PARTIALLY_FILLED, filled="0.5"), ("BTC", D("1.5")), id="sell-partial"),
    pytest.param(order(status=S.PARTIALLY_FILLED, filled="2"), None, id="nothing-left"),
    # a limit price wins over the reference price
    pytest.param(order(reference_price="90"), ("USDT", D("200")), id="limit-price-over-reference"),
    # stops and take-profits: nothing while the router holds them, the order's size once triggered
    pytest.param(order(side="sell", type="stop_loss", price=None, stop_price="90"), None, id="stop-untriggered"),
    pytest.param(
        order(side="sell", type="stop_loss", price=None, stop_price="90", status=S.TRIGGERED, triggered_at=5),
        ("BTC", D("2")),
        id="stop-sell-triggered",
    ),
    # a triggered buy stop (market at the venue, no reference price) locks at its stop price: 2 * 110
    pytest.param(
        order(type="stop_loss", price=None, stop_price="110", status=S.TRIGGERED, triggered_at=5),
        ("USDT", D("220")),
        id="stop-buy-triggered",
    ),
    # a triggered buy stop-limit locks at its limit price: 2 * 112
    pytest.param(
        order(type="stop_limit", price="112", stop_price="110", status=S.TRIGGERED, triggered_at=5),
        ("USDT", D("224")),
        id="stop-limit-buy-triggered",
    ),
    pytest.param(order(type="take_profit", price=None, stop_price="90"), None, id="take-profit-untriggered"),
    pytest.param(
        order(side="sell", type="take_profit", price=None, stop_price="130", status=S.PENDING_CANCEL),
        None,
        id="take-profit-untriggered-pending-cancel",
    ),
    # a bracket leg waiting for its entry
    pytest.param(
        order(side="sell", type="stop_loss", price=None, stop_price="90", status=S.INITIALIZED),
        None,
        id="bracket-leg-initialized",
    ),
    # quote of another pair
    pytest.param(order(pair="ETH_BTC", price="0.05"), ("BTC", D("0.10")), id="buy-quoted-in-btc"),
]


@pytest.mark.parametrize(("o", "expected"), LOCK_CASES)
def test_lock_of(o, expected):
    assert held(lock_of(o)) == expected


# written out by hand (not taken from ledger.LOCKING), so that a change to that set shows up here
HOLDS_FUNDS = {S.SUBMITTED, S.ACCEPTED, S.TRIGGERED, S.PARTIALLY_FILLED, S.PENDING_UPDATE, S.PENDING_CANCEL}


@pytest.mark.parametrize("status", list(OrderStatus))
@pytest.mark.parametrize("side", ["buy", "sell"])
def test_lock_by_status(status, side):
    o = order(side=side, status=status, filled="0.5" if status is S.PARTIALLY_FILLED else "0")
    left = D("1.5") if status is S.PARTIALLY_FILLED else D("2")
    expected = (("USDT", left * 100) if side == "buy" else ("BTC", left)) if status in HOLDS_FUNDS else None
    assert held(lock_of(o)) == expected


def test_apply_order_is_idempotent_and_the_latest_state_wins():
    ledger = Ledger("USDT", INITIAL)
    usdt = ledger.balance("USDT")
    accepted = order(status=S.ACCEPTED)  # buy 2 @ 100
    ledger.apply_order(accepted)
    ledger.apply_order(accepted)  # the same event again
    assert held_all(ledger.locks) == {"O1": ("USDT", D("200"))}
    assert (usdt.total, usdt.locked, usdt.available) == (INITIAL, D("200"), D("9800"))

    # modified to 2 @ 90: the new lock replaces the old one, 2 * 90 = 180
    ledger.apply_order(order(status=S.PENDING_UPDATE))
    ledger.apply_order(order(price="90", status=S.ACCEPTED))
    assert held_all(ledger.locks) == {"O1": ("USDT", D("180"))}
    assert (usdt.locked, usdt.available) == (D("180"), D("9820"))

    # a second order adds up; cancelling the first releases only its own
    ledger.apply_order(order(qty="1", price="50", order_id="O2"))
    assert usdt.locked == D("230")
    ledger.apply_order(order(price="90", status=S.CANCELED))
    assert held_all(ledger.locks) == {"O2": ("USDT", D("50"))}
    assert (usdt.locked, usdt.available) == (D("50"), D("9950"))
    ledger.apply_order(order(price="90", status=S.CANCELED))  # again: nothing more is released
    assert usdt.locked == D("50")


def test_locks_follow_the_fills_and_the_last_fill_releases():
    ledger = Ledger("USDT", INITIAL)
    usdt, btc = ledger.balance("USDT"), ledger.balance("BTC")
    ledger.apply_order(order(qty="2", price="100", status=S.SUBMITTED))
    assert (usdt.total, usdt.locked, usdt.available) == (INITIAL, D("200"), D("9800"))
    # 0.5 filled at 100 fee 0.05: total 10000 - 50 - 0.05 = 9949.95; lock 1.5 * 100 = 150
    ledger.apply_fill(fill("buy", "0.5", "100", "0.05"))
    ledger.apply_order(order(status=S.PARTIALLY_FILLED, filled="0.5"))
    assert (usdt.total, usdt.locked, usdt.available) == (D("9949.95"), D("150"), D("9799.95"))
    # the rest at 100 fee 0.15: total 9949.95 - 150 - 0.15 = 9799.8, nothing locked any more
    ledger.apply_fill(fill("buy", "1.5", "100", "0.15"))
    ledger.apply_order(order(status=S.FILLED, filled="2"))
    assert held_all(ledger.locks) == {}
    assert (usdt.total, usdt.locked, usdt.available) == (D("9799.8"), D("0"), D("9799.8"))
    # now sell 1.2 of the 2 BTC: the sell locks base
    ledger.apply_order(order(side="sell", qty="1.2", price="110", order_id="O2"))
    assert (btc.total, btc.locked, btc.available) == (D("2"), D("1.2"), D("0.8"))
    ledger.apply_order(order(side="sell", qty="1.2", price="110", order_id="O2", status=S.EXPIRED))
    assert (btc.locked, btc.available) == (D("0"), D("2"))
    assert ledger.negative() == []


def test_lock_in_a_currency_not_seen_yet():
    ledger = Ledger("USDT", INITIAL)
    ledger.apply_order(order(side="sell", qty="3", pair="ETH_USDT"))
    eth = ledger.balances["ETH"]
    assert (eth.total, eth.locked, eth.available) == (D("0"), D("3"), D("-3"))
    assert ledger.negative() == ["ETH"]  # selling what we do not have shows up as a negative available
    ledger.apply_order(order(side="sell", qty="3", pair="ETH_USDT", status=S.REJECTED))
    assert (eth.locked, eth.available) == (D("0"), D("0"))
    assert ledger.negative() == []


def test_negative_lists_total_or_available_below_zero():
    ledger = Ledger("USDT", D("1000"))
    assert ledger.negative() == []
    # sell 1 BTC we do not have: BTC total -1; USDT 1000 + 100 = 1100
    ledger.apply_fill(fill("sell", "1", "100"))
    assert ledger.negative() == ["BTC"]
    # a buy locking more USDT than there is: 2 * 600 = 1200 > 1100 -> available -100, total still positive
    ledger.apply_order(order(qty="2", price="600"))
    usdt = ledger.balance("USDT")
    assert (usdt.total, usdt.available) == (D("1100"), D("-100"))
    assert sorted(ledger.negative()) == ["BTC", "USDT"]
    # exactly zero is not negative: lock 1100 instead
    ledger.apply_order(order(qty="2", price="550"))
    assert usdt.available == 0
    assert ledger.negative() == ["BTC"]
    # cover the short: BTC back to 0
    ledger.apply_fill(fill("buy", "1", "100"))
    assert ledger.balance("BTC").total == 0
    assert ledger.negative() == ["USDT"]  # 1100 - 100 = 1000 total, 1100 locked
