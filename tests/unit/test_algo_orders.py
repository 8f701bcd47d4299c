"""Algorithm orders' pure rules: the reservation a parent holds (once, whatever its children's fills), the risk
gate's checks of a parent, and the child's client id."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.algo_orders import next_quantity, parent_of_slice, slice_client_id, target_through
from domain.algos import Slice
from domain.ledger import Ledger, child_lock_of, lock_of
from domain.orders import apply_fill
from domain.risk import Approval, Denial, check_order
from schemas.messages import AlgoSpec, Book, Fill, FillRef, MarketRules, Order, OrderRequest, OrderStatus

S = OrderStatus
PAIR = "BTC_USDT"
RULES = MarketRules(
    pair=PAIR, tick_size=D("0.01"), amount_step=D("0.001"), min_notional=D(1), maker_fee=D(0), taker_fee=D(0)
)
BOOK = Book(pair=PAIR, bids=[(D(99), D(50))], asks=[(D(100), D(50))], ts=1)


def parent(side: str = "buy", qty: str = "1", price: str | None = "100") -> Order:
    return Order(
        order_id="P1", client_order_id="c-p1", pair=PAIR, side=side, type="twap", quantity=D(qty),  # type: ignore[arg-type]
        price=D(price) if price else None, reference_price=D(100), status=S.ACCEPTED, venue="paper",
        algo=AlgoSpec(duration_ms=1000, slices=4), created_at=1, updated_at=1,
    )  # fmt: skip


def child(k: int, qty: D, side: str = "buy") -> Order:
    return Order(
        order_id=f"C{k}", client_order_id=slice_client_id("P1", k), pair=PAIR, side=side, type="market",  # type: ignore[arg-type]
        quantity=qty, role="slice", parent_order_id="P1", reference_price=D(100), status=S.SUBMITTED, venue="paper",
        created_at=1, updated_at=1,
    )  # fmt: skip


def child_fill(k: int, n: int, qty: D, side: str = "buy") -> Fill:
    return Fill(
        fill_id=f"paper:{PAIR}:{k}-{n}", order_id=f"C{k}", client_order_id=slice_client_id("P1", k), pair=PAIR,
        side=side, quantity=qty, price=D(100), fee=D(0), fee_currency="USDT", liquidity="taker",  # type: ignore[arg-type]
        venue="paper", timestamp=2,
    )  # fmt: skip


def test_a_childs_client_id_names_its_parent():
    assert slice_client_id("ORD_20261207_000001", 12) == "tbx:ORD_20261207_000001:s12"
    assert parent_of_slice("tbx:ORD_20261207_000001:s12") == "ORD_20261207_000001"
    assert parent_of_slice("tbx:ORD_20261207_000001:stop_loss") is None and parent_of_slice("api-1") is None


def test_a_parent_reserves_its_unfilled_quantity_and_a_live_child_locks_its_own():
    assert lock_of(child(0, D("0.25"))) is None  # the parent's quantity covers it (the risk gate's working exposure)
    lock = lock_of(parent())
    assert lock is not None and lock.amount == D(100) and lock.reserve  # 1 x the cap 100, a reservation
    held = child_lock_of(child(0, D("0.25")))
    assert held is not None and held.amount == D(25) and not held.reserve  # what the venue holds for it


# for any split of the parent into children and any split of each child into fills, in any order of the events the
# ledger sees (a child's fill before or after the parent's event that lists it), what is unavailable is always the
# parent's unfilled quantity at its price: its live child's share locked (as the venue holds it), the rest reserved
# - never counted twice, never released twice
@settings(max_examples=200, deadline=None)
@given(
    side=st.sampled_from(["buy", "sell"]),
    parts=st.lists(st.lists(st.integers(1, 200), min_size=1, max_size=4), min_size=1, max_size=5),
    order_first=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_the_locked_amount_is_the_parents_unfilled_quantity_for_any_sequence_of_child_fills(side, parts, order_first):
    step = D("0.001")
    total = sum(sum(p) for p in parts) * step
    p = parent(side, str(total + 5 * step))  # some left unfilled at the end
    unit = D(100) if side == "buy" else D(1)
    currency = "USDT" if side == "buy" else "BTC"
    led = Ledger("USDT", D(10_000_000))
    led.balance("BTC").total = D(1000)
    led.apply_order(p)
    n = 0
    for k, fills in enumerate(parts):
        c = child(k, sum(fills) * step, side)
        led.apply_order(c)
        assert led.locks[c.order_id].amount == c.quantity * unit and not led.locks[c.order_id].reserve
        for i, units in enumerate(fills):
            f = child_fill(k, i, units * step, side)
            ref = FillRef(
                fill_id=f.fill_id, quantity=f.quantity, price=f.price, fee=f.fee, fee_currency=f.fee_currency,
                liquidity=f.liquidity, timestamp=f.timestamp,
            )  # fmt: skip
            p2 = apply_fill(p, ref)
            c = apply_fill(c, ref)
            if order_first[n % len(order_first)]:  # the parent's event first, then the fill
                led.apply_order(p2)
                led.apply_fill(f)
            else:
                led.apply_fill(f)
                led.apply_order(p2)
            led.apply_order(c)
            led.apply_order(p2)  # (an event seen twice changes nothing)
            p, n = p2, n + 1
            left = (p.quantity - p.filled_quantity) * unit
            working = (c.quantity - c.filled_quantity) * unit  # the live child's, at the venue
            b = led.balance(currency)
            assert (b.locked, b.reserved, b.unavailable) == (working, left - working, left)
            assert led.locks[p.order_id].amount == left - working
            assert set(led.locks) <= {"P1", c.order_id}
    ended = msgspec.structs.replace(p, status=S.EXPIRED)
    led.apply_order(ended)
    b = led.balance(currency)
    assert not led.locks and b.locked == b.reserved == 0 and not led.parent_fills and not led.children


def test_the_next_child_carries_what_earlier_children_left_and_never_exceeds_the_parent():
    plan = [Slice(0, 0, D("0.25")), Slice(1, 10, D("0.25")), Slice(2, 20, D("0.25")), Slice(3, 30, D("0.25"))]
    p = msgspec.structs.replace(parent(), filled_quantity=D("0.1"))  # slice 0 filled 0.1 of its 0.25
    assert next_quantity(p, target_through(plan, 1), D(0), D("0.001")) == D("0.4")  # 0.25 + 0.15 carried
    assert next_quantity(p, target_through(plan, 1), D("0.15"), D("0.001")) == D("0.25")  # still working: not twice
    assert next_quantity(p, target_through(plan, 3), D("0.9"), D("0.001")) == D(0)  # never beyond the parent


def _req(kind: str, algo: AlgoSpec | None, **kw: object) -> OrderRequest:
    return OrderRequest(
        client_order_id="c-1", pair=PAIR, side="buy", quantity=D(kw.pop("quantity", "1")), type=kind,  # type: ignore[arg-type]
        algo=algo, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_the_risk_gate_checks_the_parent_once_as_a_whole():
    ok = check_order(_req("twap", AlgoSpec(duration_ms=1000, slices=4)), pairs=(PAIR,), book=BOOK, rules=RULES)
    assert isinstance(ok, Approval) and ok.estimated_cost == D(100)  # the whole quantity at the walked price
    capped = check_order(
        _req("twap", AlgoSpec(duration_ms=1000, slices=4), price=D(101)), pairs=(PAIR,), book=BOOK, rules=RULES
    )
    assert isinstance(capped, Approval) and capped.estimated_cost == D(101)  # at its cap
    ice = check_order(
        _req("iceberg", AlgoSpec(display_quantity=D("0.2")), price=D(99)), pairs=(PAIR,), book=None, rules=RULES
    )
    assert isinstance(ice, Approval) and ice.estimated_cost == D(99)
    nobook = check_order(_req("twap", AlgoSpec(duration_ms=1000, slices=4)), pairs=(PAIR,), book=None, rules=RULES)
    assert isinstance(nobook, Denial) and nobook.code == "NO_MARKET_DATA"


def test_bad_algorithm_parameters_are_denied_naming_the_field():
    cases = [
        (_req("twap", AlgoSpec(slices=4)), "algo.durationMs"),
        (_req("twap", AlgoSpec(duration_ms=1000)), "algo.slices"),
        (_req("twap", AlgoSpec(duration_ms=1000, slices=20_000)), "algo.slices"),
        (_req("twap", AlgoSpec(duration_ms=0, slices=2)), "algo.durationMs"),
        (_req("twap", AlgoSpec(duration_ms=1000, slices=2, size_jitter=D("0.6"))), "algo.sizeJitter"),
        (_req("twap", AlgoSpec(duration_ms=1000, slices=2, profile=[D(1)])), "algo.profile"),
        (_req("vwap", AlgoSpec(duration_ms=1000, profile=[D(-1), D(2)])), "algo.profile"),
        (_req("vwap", AlgoSpec(duration_ms=1000, slices=3, profile=[D(1), D(2)])), "algo.slices"),
        (_req("vwap", AlgoSpec(duration_ms=1000, slices=2, lookback_ms=0)), "algo.lookbackMs"),
        (_req("iceberg", AlgoSpec(display_quantity=D("0.2"))), "price"),
        (_req("iceberg", AlgoSpec(), price=D(99)), "algo.displayQuantity"),
        (_req("iceberg", AlgoSpec(display_quantity=D("0.0005")), price=D(99)), "algo.displayQuantity"),
        (_req("iceberg", AlgoSpec(display_quantity=D("0.2"), slices=3), price=D(99)), "algo.slices"),
        (_req("twap", AlgoSpec(duration_ms=1000, slices=2), stop_loss=D(90)), "stopLoss"),
        (_req("twap", AlgoSpec(duration_ms=1000, slices=2), reduce_only=True), "reduceOnly"),
        (_req("twap", None), "algo"),
        (_req("market", AlgoSpec(duration_ms=1000, slices=2)), "algo"),
    ]
    for req, field in cases:
        d = check_order(req, pairs=(PAIR,), book=BOOK, rules=RULES, position=D(1))
        assert isinstance(d, Denial) and d.field == field, (req.type, req.algo, d)
        assert d.reason


def test_trading_refusal_stops_algorithms_when_the_gate_would_refuse_an_opening_order() -> None:
    from domain.algo_orders import trading_refusal

    noon = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 12 * 3_600_000  # 12:00 UTC
    assert trading_refusal("ACTIVE", None, "UTC", noon) is None
    assert trading_refusal(None, None, "UTC", noon) is None
    assert "HALTED" in (trading_refusal("HALTED", None, "UTC", noon) or "")
    assert "REDUCING" in (trading_refusal("REDUCING", None, "UTC", noon) or "")
    assert trading_refusal("ACTIVE", (9 * 60, 17 * 60), "UTC", noon) is None
    assert "TRADING_HOURS" in (trading_refusal("ACTIVE", (13 * 60, 17 * 60), "UTC", noon) or "")
    assert trading_refusal("ACTIVE", (22 * 60, 13 * 60), "UTC", noon) is None  # spans midnight


def _kid(qty: str, filled: str, status: str) -> Order:
    return Order(
        order_id=f"k{qty}{filled}{status}", client_order_id="c", pair="BTC_USDT", side="buy", type="market",
        quantity=D(qty), filled_quantity=D(filled), status=OrderStatus(status), created_at=1, updated_at=1,
    )  # fmt: skip


def test_committed_counts_an_ended_child_by_its_fills_and_a_live_one_by_its_quantity() -> None:
    from domain.algo_orders import capped_quantity, committed_of

    kids = [_kid("0.5", "0.5", "filled"), _kid("0.3", "0.1", "canceled"), _kid("0.2", "0", "submitted"), None]
    assert committed_of(kids) == D("0.8")
    # the parent of 1 says it filled nothing yet (its sync is late): the next slice is what is really left
    assert capped_quantity(D(1), D(1), D(1), committed_of(kids), D("0.001")) == D("0.2")
    assert capped_quantity(D("0.1"), D(1), D(1), D("0.8"), D("0.001")) == D("0.1")
    assert capped_quantity(D(1), D("0.5"), D(1), D("0.8"), D("0.001")) == 0


@given(
    st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000), st.booleans()), max_size=8),
    st.integers(0, 5000),
    st.integers(0, 5000),
)
def test_capped_children_never_exceed_the_parent(kids: list[tuple[int, int, bool]], wanted: int, target: int) -> None:
    from domain.algo_orders import capped_quantity, committed_of

    step, quantity = D("0.001"), D(3)
    orders = [
        _kid(str(D(q) * step), str(D(min(f, q)) * step), "filled" if done else "submitted") for q, f, done in kids
    ]
    committed = committed_of(orders)
    q = capped_quantity(D(wanted) * step, D(target) * step, quantity, committed, step)
    assert q >= 0 and q % step == 0
    assert q == 0 or committed + q <= min(D(target) * step, quantity)


def test_a_catch_up_after_a_restart_spreads_the_backlog_and_never_sends_it_at_once() -> None:
    from domain.algo_orders import catchup_cap

    one = [Slice(3, 0, D("0.1"))]
    merged = [Slice(i, 0, D("0.1")) for i in range(2, 7)]  # 5 slices overdue: 0.5 at once without the cap
    assert catchup_cap(merged, D("0.8"), 3, D("0.001")) == D("0.2")  # 0.8 over this one and 3 to come
    assert catchup_cap(merged, D("0.3"), 5, D("0.001")) == D("0.1")  # never less than one slice
    assert catchup_cap(merged, D("0.7"), 0, D("0.001")) == D("0.1")  # past the last slice: one slice, no more
    assert catchup_cap(one, D("0.25"), 0, D("0.001")) == D("0.25")  # the last slice of a catch-up: what is left
    assert catchup_cap(one, D("1"), 2, D("0.001")) == D("0.334")  # rounded up to the step


@given(st.integers(1, 50), st.integers(0, 20), st.integers(1, 10_000))
def test_a_catch_up_spreads_everything_over_what_remains(n_merged: int, later: int, left_steps: int) -> None:
    """Sending the cap at each slice to come (as a single slice) leaves nothing when a slice remains."""
    from domain.algo_orders import catchup_cap

    step = D("0.001")
    merged = [Slice(i, 0, D("0.01")) for i in range(n_merged)]
    left = left_steps * step
    sent = min(left, catchup_cap(merged, left, later, step))
    assert sent <= max(D("0.01"), left) and (later > 0 or n_merged == 1 or sent <= D("0.01"))
    for rest in range(later - 1, -1, -1):  # each later slice: its own cap
        left -= sent
        sent = min(left, catchup_cap([Slice(0, 0, D("0.01"))], left, rest, step))
    if later > 0:
        assert left - sent == 0


def test_trading_refusal_lets_a_reducing_parent_run_while_reducing_and_outside_hours() -> None:
    """m1 (s11): the risk gate lets a reducing order through REDUCING and outside TRADING_HOURS; the parent it
    approved as reducing (algoState.reduces) must not be stopped by the router at its first step for it."""
    from domain.algo_orders import trading_refusal

    noon = 1_767_268_800_000  # 2026-01-01 12:00 UTC
    assert trading_refusal("REDUCING", None, "UTC", noon, reduces=True) is None
    assert trading_refusal("ACTIVE", (13 * 60, 17 * 60), "UTC", noon, reduces=True) is None
    assert "HALTED" in (trading_refusal("HALTED", None, "UTC", noon, reduces=True) or "")  # HALTED: nothing
    assert "REDUCING" in (trading_refusal("REDUCING", None, "UTC", noon, reduces=False) or "")


def _unknown(qty: str, filled: str = "0") -> Order:
    from domain.orders import UNKNOWN_TO_VENUE

    kid = _kid(qty, filled, "rejected")
    return msgspec.structs.replace(kid, reason=f"{UNKNOWN_TO_VENUE} paper has no order with client order id c")


def test_committed_counts_a_child_unknown_to_the_venue_at_its_whole_quantity() -> None:
    """M3 (s11): a child rejected as unknown to the venue may still show up there and fill (``revive``): counted as
    taken at its whole quantity, else the next slice re-sends it and the children total more than the parent."""
    from domain.algo_orders import capped_quantity, committed_of

    assert committed_of([_unknown("0.3")]) == D("0.3")
    assert committed_of([_kid("0.3", "0", "rejected")]) == 0  # rejected by the venue itself: took nothing
    # the parent of 1: 0.5 filled, 0.3 unknown to the venue: at most 0.2 more, never 0.5
    kids = [_kid("0.5", "0.5", "filled"), _unknown("0.3")]
    assert capped_quantity(D("0.5"), D(1), D(1), committed_of(kids), D("0.001")) == D("0.2")


def test_committed_counts_an_ended_child_at_what_the_venue_reported_filled() -> None:
    """M3 (s11): a child that ended here (canceled before the venue answered) that the venue reports filled: its
    fills are on their way, so it took max(filled, venue_filled)."""
    from domain.algo_orders import committed_of

    kid = msgspec.structs.replace(_kid("0.3", "0.1", "canceled"), venue_filled=D("0.3"))
    assert committed_of([kid]) == D("0.3")
    assert committed_of([msgspec.structs.replace(kid, venue_filled=D("0.05"))]) == D("0.1")


@given(
    st.integers(1, 1000),
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.sampled_from(["submitted", "accepted", "partially_filled", "filled", "canceled", "expired", "rejected"]),
    st.booleans(),
)
def test_committed_is_never_below_what_a_child_may_still_end_up_filling(
    q: int, f: int, v: int, status: str, unknown: bool
) -> None:
    """Whatever a child's state, what it counts for is at least what it can still fill: a child that may still
    work (live, or unknown to the venue) its whole quantity, an ended one what the venue said it filled."""
    from domain.algo_orders import committed_of
    from domain.orders import revivable

    step = D("0.001")
    f, v = min(f, q), min(max(v, f), q)
    kid = _kid(str(q * step), str(f * step), status)
    kid = msgspec.structs.replace(kid, venue_filled=v * step if v else None)
    if unknown and status == "rejected":
        kid = msgspec.structs.replace(_unknown(str(q * step), str(f * step)), venue_filled=None)
    taken = committed_of([kid])
    may_fill = kid.quantity if kid.status.value not in ("filled", "canceled", "expired", "rejected") or revivable(
        kid
    ) else max(kid.filled_quantity, kid.venue_filled or 0)  # fmt: skip
    assert taken >= may_fill and taken <= kid.quantity
