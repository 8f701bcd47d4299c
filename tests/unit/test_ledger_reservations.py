"""An algorithm parent's reservation kept apart from what a live venue holds (review s11 C1).

A parent (twap / vwap / iceberg) is never at the venue: its unfilled quantity less what its live children have still
to fill is ``reserved``; each live child locks its own share in ``locked`` (what the venue holds for it). A venue's
reading is compared with ``locked`` only (domain/reconcile.py), so a running parent is never a mismatch, its
reservation is never adjusted away, and ``available`` = total - held - reserved stays reduced by it.
"""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.algo_orders import slice_client_id
from domain.ledger import Ledger
from domain.orders import apply_fill
from domain.reconcile import Books, changes
from domain.valuation import DayStart, snapshot
from domain.venue_ledgers import VenueLedgers
from schemas.messages import AlgoSpec, AlgoState, BalanceAdjusted, Fill, FillRef, Order, OrderStatus

S = OrderStatus
PAIR = "BTC_USDT"
NO_DUST = D("0.00000001")


def books_of(led: Ledger) -> dict[str, Books]:
    """What the portfolio-ledger compares a reading with (actors/portfolio_ledger.py ``_reconcile``)."""
    return {c: Books(b.total, b.locked, b.correction) for c, b in led.balances.items()}


def reading(led: Ledger, venue: dict[str, tuple[str, str]], i: int) -> list[BalanceAdjusted]:
    """Compare the books with a venue's (total, free) and apply what differs, as the portfolio-ledger does."""
    out = []
    for ch in changes(books_of(led), {c: (D(t), D(f)) for c, (t, f) in venue.items()}, lambda c: NO_DUST):
        adj = BalanceAdjusted(
            adjustment_id=f"binance:{i}:{ch.currency}", venue="binance", currency=ch.currency,
            from_total=ch.ledger_total, from_available=ch.ledger_available, to_total=ch.venue_total,
            to_available=ch.venue_free, locked_delta=ch.locked_delta, reason="mismatch", fills_seq=0,
            reading_fills_seq=0, reading_seq=i, reading_ts=i, ts=i,
        )  # fmt: skip
        led.apply_adjustment(adj)
        out.append(adj)
    return out


def twap(qty: str = "1", side: str = "buy", price: str | None = None, typ: str = "twap") -> Order:
    return Order(
        order_id="P1", client_order_id="c-p1", pair=PAIR, side=side, type=typ, quantity=D(qty),  # type: ignore[arg-type]
        price=D(price) if price else None, reference_price=D(5000), status=S.ACCEPTED, venue="binance",
        paper_trade=False, algo=AlgoSpec(duration_ms=600_000, slices=10), algo_state=AlgoState(start_ms=0),
        created_at=1, updated_at=1,
    )  # fmt: skip


def child(k: int, qty: str, side: str = "buy", price: str | None = None, status: S = S.SUBMITTED) -> Order:
    return Order(
        order_id=f"C{k}", client_order_id=slice_client_id("P1", k), pair=PAIR, side=side,  # type: ignore[arg-type]
        type="limit" if price else "market", quantity=D(qty), price=D(price) if price else None, role="slice",
        parent_order_id="P1", reference_price=D(5000), status=status, venue="binance", paper_trade=False,
        created_at=2, updated_at=2,
    )  # fmt: skip


def child_fill(c: Order, n: int, qty: str, price: str = "5000") -> tuple[Fill, FillRef]:
    f = Fill(
        fill_id=f"binance:{PAIR}:{c.order_id}-{n}", order_id=c.order_id, client_order_id=c.client_order_id, pair=PAIR,
        side=c.side, quantity=D(qty), price=D(price), fee=D(0), fee_currency="USDT", liquidity="taker",
        venue="binance", timestamp=3 + n,
    )  # fmt: skip
    ref = FillRef(fill_id=f.fill_id, quantity=f.quantity, price=f.price, fee=f.fee, fee_currency="USDT",
                  liquidity="taker", timestamp=f.timestamp)  # fmt: skip
    return f, ref


def test_a_reading_while_a_twap_parent_runs_is_no_mismatch_and_available_stays_reduced():
    # the review's probe: 10,000 USDT, a TWAP buy of 1 at reference 5,000; the venue holds nothing between two
    # market children (total = free = 10,000). Before the fix: locked_delta -5000 and available back to 10,000
    led = Ledger("USDT", D(10_000))
    p = twap()
    led.apply_order(p)
    b = led.balance("USDT")
    assert (b.total, b.locked, b.reserved, b.available) == (D(10_000), D(0), D(5000), D(5000))
    assert reading(led, {"USDT": ("10000", "10000")}, 1) == []
    assert (b.correction, b.available) == (D(0), D(5000))
    # a child at the venue (a resting limit child of 0.1 @ 5000): the venue holds 500 for it, the ledger locks it
    c = child(0, "0.1", price="5000")
    led.apply_order(c)
    assert (b.locked, b.reserved, b.available) == (D(500), D(4500), D(5000))
    assert reading(led, {"USDT": ("10000", "9500")}, 2) == []
    # it fills: 500 spent, nothing held at the venue, the parent still reserves the 0.9 it has to buy
    f, ref = child_fill(c, 0, "0.1")
    led.apply_fill(f)
    led.apply_order(apply_fill(c, ref))
    p = apply_fill(p, ref)
    led.apply_order(p)
    assert (b.total, b.locked, b.reserved, b.available) == (D(9500), D(0), D(4500), D(5000))
    assert reading(led, {"USDT": ("9500", "9500"), "BTC": ("0.1", "0.1")}, 3) == []
    assert b.correction == 0 and led.adjustments == []


def test_a_sell_parent_reserves_its_base_and_a_reading_leaves_it_alone():
    led = Ledger("USDT", D(0))
    led.balance("BTC").total = D(2)
    led.apply_order(twap("1.5", "sell"))
    b = led.balance("BTC")
    assert (b.locked, b.reserved, b.available) == (D(0), D("1.5"), D("0.5"))
    led.apply_order(child(0, "0.5", "sell", price="5000"))  # a clip resting at the venue: it holds 0.5 BTC
    assert (b.locked, b.reserved, b.available) == (D("0.5"), D(1), D("0.5"))
    assert reading(led, {"BTC": ("2", "1.5")}, 1) == [] and b.correction == 0


def test_a_real_difference_while_a_parent_runs_is_adjusted_without_touching_the_reservation():
    # an order placed on the venue's website holds 1,000 USDT there: that, and only that, is the difference
    led = Ledger("USDT", D(10_000))
    p = twap()
    led.apply_order(p)
    (adj,) = reading(led, {"USDT": ("10000", "9000")}, 1)
    b = led.balance("USDT")
    assert (adj.locked_delta, adj.from_available, adj.to_available) == (D(1000), D(10_000), D(9000))
    assert (b.held, b.reserved, b.available) == (D(1000), D(5000), D(4000))
    assert reading(led, {"USDT": ("10000", "9000")}, 2) == []  # the same figures again: no difference
    led.apply_order(msgspec.structs.replace(p, status=S.CANCELED))
    assert (b.held, b.reserved, b.available) == (D(1000), D(0), D(9000))  # the outside order stays held


def test_a_parent_that_ends_leaves_no_correction_behind():
    # readings between and during the children of a TWAP; after it ends, an ordinary order's lock counts in full
    # (before the fix the negative correction of the parent hid it: held stayed 0 and the gate over-approved)
    led = Ledger("USDT", D(10_000))
    p = twap()
    led.apply_order(p)
    b = led.balance("USDT")
    total = D(10_000)
    for k in range(4):
        c = child(k, "0.25")
        led.apply_order(c)  # a market child on its way: a reading is not taken now (the router waits for quiet)
        f, ref = child_fill(c, 0, "0.25")
        led.apply_fill(f)
        led.apply_order(apply_fill(c, ref))
        p = apply_fill(p, ref)
        led.apply_order(p)
        total -= 1250
        btc = str(D("0.25") * (k + 1))
        assert reading(led, {"USDT": (str(total), str(total)), "BTC": (btc, btc)}, k) == []
        assert b.available == D(5000)  # 10,000 - the whole parent's 5,000, spent or still reserved
    assert p.status is S.FILLED and led.locks == {} and (b.locked, b.reserved, b.correction) == (0, 0, 0)
    limit = Order(
        order_id="L1", client_order_id="c-l1", pair=PAIR, side="buy", type="limit", quantity=D(1), price=D(1000),
        status=S.ACCEPTED, venue="binance", paper_trade=False,
    )  # fmt: skip
    led.apply_order(limit)
    assert (b.held, b.available) == (D(1000), D(4000))


def test_a_child_that_ends_unfilled_gives_its_quantity_back_to_the_parent():
    # a TWAP of one slice: the child holds all of it; canceled unfilled, the parent reserves it all again
    led = Ledger("USDT", D(10_000))
    led.apply_order(twap())
    c = child(0, "1", price="5000")
    led.apply_order(c)
    b = led.balance("USDT")
    assert (b.locked, b.reserved, b.available) == (D(5000), D(0), D(5000))
    led.apply_order(msgspec.structs.replace(c, status=S.CANCELED))
    assert (b.locked, b.reserved, b.available) == (D(0), D(5000), D(5000))


def test_a_childs_fill_read_before_the_childs_event_counts_once():
    led = Ledger("USDT", D(10_000))
    led.apply_order(twap())
    c = child(0, "0.4", price="5000")
    f, ref = child_fill(c, 0, "0.1")
    led.apply_fill(msgspec.structs.replace(f, order_filled_quantity=D("0.1"), order_complete=False))
    b = led.balance("USDT")
    assert (b.total, b.locked, b.reserved) == (D(9500), D(0), D(4500))  # the parent's 0.9 left
    led.apply_order(c)  # its event from before the fill: the venue holds 0.3 for it, the parent reserves the rest
    assert (b.locked, b.reserved, b.available) == (D(1500), D(3000), D(5000))
    led.apply_order(apply_fill(c, ref))  # the event that shows the fill: nothing counted twice
    assert (b.locked, b.reserved, b.available) == (D(1500), D(3000), D(5000))


def test_the_portfolio_shows_the_reservation_in_locked_and_apart_in_reserved():
    led = Ledger("USDT", D(10_000))
    led.apply_order(twap())
    led.apply_order(child(0, "0.1", price="5000"))
    (usdt,) = snapshot(led, {}, DayStart(), ts=1, last_seq=0).balances
    assert (usdt.total, usdt.available, usdt.locked, usdt.reserved) == (D(10_000), D(5000), D(5000), D(4500))
    books = VenueLedgers("USDT", D(10_000), ("binance",))
    books.apply_order(twap())
    assert books.balances()["USDT"].available == D(5000) and books.available("binance")["USDT"] == D(5000)


# -- every sequence of a parent's and its children's events, as the ledger may see them -------------------------
# The router's truth: children started, filled and ended one step at a time (several may work at once). It writes
# an order event of the child after each change and one of the parent after each fill (listing every fill so far);
# the fill-tracker writes each fill. The ledger reads ORDERS and FILLS as two streams, each in order, interleaved in
# any way (a fill before or after the events that show it), some order events twice.
@st.composite
def histories(draw: st.DrawFn) -> tuple[str, list[Order], list[Fill], dict[tuple[int, int], tuple[D, D, D]], D]:
    side = draw(st.sampled_from(["buy", "sell"]))
    step = D("0.01")
    sizes = draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))
    extra = draw(st.integers(0, 4))
    parent = twap(str((sum(sizes) + extra) * step), side, price=draw(st.sampled_from([None, "5100"])))
    kids = [child(k, str(n * step), side, price=draw(st.sampled_from([None, "5100"]))) for k, n in enumerate(sizes)]
    state: dict[int, Order] = {}
    ended: set[int] = set()
    orders: list[Order] = [parent]
    fills: list[Fill] = []
    # (orders, fills) read -> the parent's unfilled quantity, its live children's, and what they hold (a buy: quote)
    truth: dict[tuple[int, int], tuple[D, D, D]] = {}
    n = 0
    for _ in range(60):
        open_ = [k for k in range(len(kids)) if k not in ended]
        if not open_:
            break
        k = draw(st.sampled_from(open_))
        c = state.get(k)
        if c is None:  # the child is made
            c = state[k] = kids[k]
        else:
            action = draw(st.sampled_from(["fill", "fill", "end"]))
            left = c.quantity - c.filled_quantity
            if action == "fill" and left > 0:
                qty = step * draw(st.integers(1, int(left / step)))
                f, ref = child_fill(c, n, str(qty), "5100" if c.price else "5000")
                done = c.filled_quantity + qty  # the child's running totals, as the fill-tracker writes them
                f = msgspec.structs.replace(f, order_filled_quantity=done, order_complete=done == c.quantity)
                n += 1
                fills.append(f)
                c = state[k] = apply_fill(c, ref)
                parent = apply_fill(parent, ref)
                orders.append(c)
                orders.append(parent)
            else:  # canceled (what it did not fill goes back to the parent), or filled
                c = state[k] = msgspec.structs.replace(c, status=S.FILLED if left == 0 else S.CANCELED)
                ended.add(k)
        orders.append(c)
        live = [x for i, x in state.items() if i not in ended]
        working = sum((x.quantity - x.filled_quantity for x in live), D(0))
        held = sum(((x.quantity - x.filled_quantity) * (x.price or 5000) for x in live), D(0))  # a buy's quote
        truth[(len(orders), len(fills))] = (parent.quantity - parent.filled_quantity, working, held)
    end = S.FILLED if parent.filled_quantity == parent.quantity else draw(st.sampled_from([S.CANCELED, S.EXPIRED]))
    for k, c in state.items():  # the parent ends after its children (a cancel cancels them first)
        if k not in ended:
            orders.append(msgspec.structs.replace(c, status=S.CANCELED))
    orders.append(msgspec.structs.replace(parent, status=end, children=[c.order_id for c in kids]))
    return side, orders, fills, truth, parent.quantity


@settings(max_examples=300, deadline=None)
@given(h=histories(), picks=st.lists(st.booleans(), min_size=1, max_size=200), twice=st.lists(st.booleans()))
def test_the_reservation_never_goes_negative_and_is_released_exactly_once(h, picks, twice):
    side, orders, fills, truth, quantity = h
    parent_unit = D(1) if side == "sell" else (orders[0].price or D(5000))  # a buy: at its cap, else its reference
    currency = "BTC" if side == "sell" else "USDT"
    led = Ledger("USDT", D(1_000_000))
    led.balance("BTC").total = D(1_000)
    b = led.balance(currency)
    i = j = 0
    seen: set[str] = set()  # the fill ids the ledger has seen (a fill, or the parent's event listing it)
    parent_live = False  # (its first event read, its last not yet)
    while i < len(orders) or j < len(fills):
        take_order = j >= len(fills) or (i < len(orders) and picks[(i + j) % len(picks)])
        if take_order:
            o = orders[i]
            led.apply_order(o)
            if twice and twice[i % len(twice)]:
                led.apply_order(o)  # an event seen twice changes nothing
            if o.order_id == "P1":
                seen |= {r.fill_id for r in o.fills}
                parent_live = o.status not in (S.FILLED, S.CANCELED, S.EXPIRED)
            i += 1
        else:
            led.apply_fill(fills[j])
            seen.add(fills[j].fill_id)
            j += 1
        # never negative, and the balance is always the sum of what the locks hold: nothing released twice
        locks = led.locks.values()
        assert all(lk.amount >= 0 for lk in locks) and b.reserved >= 0 and b.locked >= 0
        assert b.reserved == sum((lk.amount for lk in locks if lk.reserve), D(0))
        assert b.locked == sum((lk.amount for lk in locks if not lk.reserve), D(0))
        if parent_live:  # the parent's whole unfilled quantity (as the ledger knows it) stays unavailable
            filled = sum((f.quantity for f in fills if f.fill_id in seen), D(0))
            if side == "sell":
                assert b.unavailable >= quantity - filled
            else:
                assert b.unavailable >= (quantity - filled) * 5000
        point = truth.get((i, j))
        if point is not None:  # both streams read up to a step of the router: exact
            unfilled, working, held = point
            locked = working if side == "sell" else held  # what the venue holds for the live children
            assert (b.locked, b.reserved) == (locked, (unfilled - working) * parent_unit)
    # all read: nothing locked, nothing reserved, nothing remembered
    assert led.locks == {} and b.locked == 0 and b.reserved == 0
    assert led.children == {} and led.parent_fills == {} and led.filled_by_fills == {}
