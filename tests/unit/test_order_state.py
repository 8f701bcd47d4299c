"""The order state machine (domain/orders.py): the transition table and fill application."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.orders import TRANSITIONS, IllegalTransition, Overfilled, apply_fill, can_transition, transition
from schemas.messages import TERMINAL_STATUSES, FillRef, Order, OrderStatus

S = OrderStatus
D = Decimal
FINAL = (S.FILLED, S.REJECTED, S.DENIED)
ALL = list(OrderStatus)


def order(status: OrderStatus = S.INITIALIZED, quantity: str = "1", **kw: object) -> Order:
    return Order(
        order_id="O1",
        client_order_id="C1",
        pair="BTC_USDT",
        side="buy",
        type="market",
        quantity=D(quantity),
        status=status,
        created_at=1_000,
        updated_at=1_000,
        **kw,  # type: ignore[arg-type]
    )


def ref(fill_id: str, qty: str, price: str = "100", ts: int = 2_000, fee: str = "0.1") -> FillRef:
    return FillRef(
        fill_id=fill_id,
        quantity=D(qty),
        price=D(price),
        fee=D(fee),
        fee_currency="USDT",
        liquidity="taker",
        timestamp=ts,
    )


def test_table_covers_every_status():
    assert set(TRANSITIONS) == set(OrderStatus)
    for targets in TRANSITIONS.values():
        assert targets <= set(OrderStatus)


@pytest.mark.parametrize(("src", "dst"), list(itertools.product(ALL, ALL)), ids=lambda s: s.value)
def test_every_pair_against_the_table(src, dst):
    o = order(src)
    if dst in TRANSITIONS[src]:
        assert can_transition(src, dst)
        new = transition(o, dst, 5_000, reason="why")
        assert new.status is dst
        assert new.updated_at == 5_000
        assert new.reason == "why"
        assert new.closed_at == (5_000 if dst in TERMINAL_STATUSES else None)
        assert o.status is src  # the input is not changed
    else:
        assert not can_transition(src, dst)
        with pytest.raises(IllegalTransition):
            transition(o, dst, 5_000)


# an independent, hand-written statement of the rules the table must encode
MUST_BE_LEGAL = [
    (S.INITIALIZED, S.SUBMITTED),
    (S.INITIALIZED, S.DENIED),
    (S.SUBMITTED, S.ACCEPTED),
    (S.SUBMITTED, S.REJECTED),
    (S.SUBMITTED, S.FILLED),
    (S.ACCEPTED, S.PARTIALLY_FILLED),
    (S.ACCEPTED, S.PENDING_CANCEL),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCELED),
    (S.PENDING_CANCEL, S.CANCELED),
    (S.PENDING_CANCEL, S.ACCEPTED),  # cancel rejected: back to where it was
    (S.PENDING_CANCEL, S.FILLED),  # a fill beats the cancel
    (S.PENDING_UPDATE, S.ACCEPTED),  # modify rejected
    (S.CANCELED, S.PARTIALLY_FILLED),  # late fill after a cancel
    (S.CANCELED, S.FILLED),
    (S.EXPIRED, S.PARTIALLY_FILLED),
    (S.EXPIRED, S.FILLED),
]
MUST_BE_ILLEGAL = [
    (S.INITIALIZED, S.FILLED),
    (S.INITIALIZED, S.PARTIALLY_FILLED),
    (S.INITIALIZED, S.ACCEPTED),
    (S.SUBMITTED, S.SUBMITTED),
    (S.ACCEPTED, S.SUBMITTED),
    (S.PARTIALLY_FILLED, S.SUBMITTED),
    (S.PARTIALLY_FILLED, S.REJECTED),
    (S.CANCELED, S.ACCEPTED),
    (S.CANCELED, S.CANCELED),
    (S.EXPIRED, S.CANCELED),
    (S.DENIED, S.SUBMITTED),
]


@pytest.mark.parametrize(("src", "dst"), MUST_BE_LEGAL, ids=lambda s: s.value)
def test_known_legal(src, dst):
    assert transition(order(src), dst, 1).status is dst


@pytest.mark.parametrize(("src", "dst"), MUST_BE_ILLEGAL, ids=lambda s: s.value)
def test_known_illegal(src, dst):
    with pytest.raises(IllegalTransition):
        transition(order(src), dst, 1)


@pytest.mark.parametrize("final", FINAL, ids=lambda s: s.value)
def test_final_states_accept_nothing(final):
    assert TRANSITIONS[final] == frozenset()
    o = order(final)
    for dst in ALL:
        with pytest.raises(IllegalTransition):
            transition(o, dst, 1)
    with pytest.raises(IllegalTransition):
        apply_fill(o, ref("late", "0.1"))


@pytest.mark.parametrize("stopped", [S.CANCELED, S.EXPIRED], ids=lambda s: s.value)
def test_canceled_and_expired_accept_only_a_late_fill(stopped):
    assert TRANSITIONS[stopped] == frozenset({S.PARTIALLY_FILLED, S.FILLED})
    o = transition(order(S.ACCEPTED), stopped, 3_000)
    assert o.closed_at == 3_000
    part = apply_fill(o, ref("t1", "0.4", ts=4_000))
    assert part.status is S.PARTIALLY_FILLED
    full = apply_fill(o, ref("t1", "1", ts=4_000))
    assert full.status is S.FILLED
    assert full.closed_at == 4_000


def test_transition_keeps_an_earlier_closed_at():
    o = transition(order(S.ACCEPTED), S.CANCELED, 3_000)
    o = transition(o, S.PARTIALLY_FILLED, 4_000)
    o = transition(o, S.CANCELED, 5_000)
    assert (o.status, o.closed_at, o.updated_at) == (S.CANCELED, 3_000, 5_000)


def test_apply_fill_partial_then_full():
    o = order(S.ACCEPTED, quantity="1")
    o1 = apply_fill(o, ref("t1", "0.4", "100", ts=2_000))
    assert o1.status is S.PARTIALLY_FILLED
    assert (o1.filled_quantity, o1.average_price, o1.total_cost, o1.fees) == (D("0.4"), D("100"), D("40"), D("0.1"))
    assert o1.fee_currency == "USDT"
    assert [f.fill_id for f in o1.fills] == ["t1"]
    assert o1.updated_at == 2_000
    assert o1.closed_at is None and o1.execution_time is None
    assert o.status is S.ACCEPTED and o.fills == []  # the input is not changed

    # 0.4 @ 100 + 0.6 @ 110 -> average 106
    o2 = apply_fill(o1, ref("t2", "0.6", "110", ts=2_500))
    assert o2.status is S.FILLED
    assert (o2.filled_quantity, o2.average_price, o2.total_cost, o2.fees) == (D("1"), D("106"), D("106"), D("0.2"))
    assert [f.fill_id for f in o2.fills] == ["t1", "t2"]
    assert o2.closed_at == 2_500
    assert o2.execution_time == 2_500 - 1_000


def test_apply_fill_duplicate_returns_the_same_object():
    o1 = apply_fill(order(S.ACCEPTED), ref("t1", "0.4"))
    again = apply_fill(o1, ref("t1", "0.4"))
    assert again is o1
    # a duplicate of a fill of an order already filled is also a no-op, not an error
    o2 = apply_fill(o1, ref("t2", "0.6"))
    assert apply_fill(o2, ref("t2", "0.6")) is o2


def test_apply_fill_needs_a_live_order():
    with pytest.raises(IllegalTransition):
        apply_fill(order(S.INITIALIZED), ref("t1", "0.4"))


# --------------------------------------------------------------------------------------------------
# Random walks
# --------------------------------------------------------------------------------------------------
step = st.one_of(
    st.tuples(st.just("to"), st.sampled_from(ALL)),
    st.tuples(st.just("fill"), st.integers(1, 4)),  # a fill of qty/4 .. qty of the remaining, in quarters
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=30))
def test_random_walk_follows_the_table(steps):
    o = order(S.INITIALIZED, quantity="4")
    filled = D(0)
    n = 0
    for kind, arg in steps:
        before = o
        if kind == "to":
            legal = arg in TRANSITIONS[o.status]
            try:
                o = transition(o, arg, n)
            except IllegalTransition:
                assert not legal
                assert o is before
                continue
            assert legal
            assert o.status is arg
        else:
            n += 1
            add = min(D(arg), D(4) - filled) or D(1)
            expected = S.FILLED if filled + add >= 4 else S.PARTIALLY_FILLED
            legal = expected in TRANSITIONS[o.status]
            try:
                o = apply_fill(o, ref(f"t{n}", str(add), ts=n))
            except Overfilled:
                assert filled + add > 4  # filled quantity never exceeds the quantity
                assert o is before
                continue
            except IllegalTransition:
                assert not legal
                assert o is before
                continue
            assert legal
            assert o.status is expected
            filled += add
            assert o.filled_quantity == filled
        assert o.status in TRANSITIONS[before.status]
        assert before.status not in FINAL
        if o.status in TERMINAL_STATUSES:
            assert o.closed_at is not None


# -- every operation the router uses, in random order --------------------------------------------------
from domain.orders import back_from_pending, to_pending, trigger  # noqa: E402

ops = st.one_of(
    st.tuples(st.just("to"), st.sampled_from(ALL)),
    st.tuples(st.just("fill"), st.integers(1, 3)),
    st.tuples(st.just("pending"), st.sampled_from([S.PENDING_CANCEL, S.PENDING_UPDATE])),
    st.tuples(st.just("back"), st.none()),
    st.tuples(st.just("trigger"), st.none()),
)


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(ops, max_size=40))
def test_random_operations_never_leave_the_table(steps):
    o = order(S.INITIALIZED, quantity="4")
    n = 0
    for kind, arg in steps:
        n += 1
        before = o
        try:
            if kind == "to":
                o = transition(o, arg, n)
            elif kind == "fill":
                o = apply_fill(o, ref(f"t{n}", str(arg), ts=n))
            elif kind == "pending":
                o = to_pending(o, arg, n)
            elif kind == "back":
                o = back_from_pending(o, n)
            else:
                o = trigger(o, n)
        except (IllegalTransition, Overfilled):
            assert o is before  # a refused operation changes nothing
            continue
        if o is before:
            continue
        assert o.status is before.status or o.status in TRANSITIONS[before.status]  # never off the table
        assert o.filled_quantity <= o.quantity  # never overfilled
        assert o.filled_quantity == sum((f.quantity for f in o.fills), D(0))
        if before.status in FINAL:
            raise AssertionError(f"{before.status.value} changed to {o.status.value}")
        if before.status in (S.CANCELED, S.EXPIRED):  # closed: only a late fill may still come
            assert o.status in (S.PARTIALLY_FILLED, S.FILLED)


# -- the venue's answers ------------------------------------------------------------------------------------
def answer(o: Order, status: str, filled: str = "0", reason: str | None = None) -> Order:
    from domain.orders import with_venue_answer

    return with_venue_answer(o, status, D(filled), "V1", None, None, reason, 5_000)


def test_a_first_answer_accepts_an_ioc_that_expired_unfilled_ends_it_and_a_rejection_rejects():
    assert answer(order(S.SUBMITTED), "open").status is S.ACCEPTED
    assert answer(order(S.SUBMITTED), "expired").status is S.EXPIRED  # nothing filled, nothing to wait for
    waiting = answer(order(S.SUBMITTED), "expired", filled="0.4")
    assert waiting.status is S.SUBMITTED and waiting.venue_filled == D("0.4")  # its fills end it
    rejected = answer(order(S.SUBMITTED), "rejected", reason="insufficient balance")
    assert (rejected.status, rejected.reason, rejected.venue_status) == (S.REJECTED, "insufficient balance", "rejected")


def test_an_order_ended_here_only_records_what_the_venue_says():
    canceled = order(S.CANCELED)
    seen = answer(canceled, "canceled")  # a cancel confirmed at the venue after it was canceled here
    assert seen.status is S.CANCELED and seen.venue_status == "canceled"
    assert answer(seen, "canceled") is seen  # nothing new


def test_an_order_rejected_as_unknown_that_the_venue_shows_works_again_and_nothing_else_is_revived():
    from domain.orders import UNKNOWN_TO_VENUE, revivable

    lost = order(S.REJECTED, reason=f"{UNKNOWN_TO_VENUE} binance has no order ...")
    assert revivable(lost)
    back = answer(lost, "open")
    assert back.status is S.ACCEPTED and back.closed_at is None and back.venue_status == "open"
    assert answer(lost, "rejected").status is S.REJECTED  # the venue refused it after all: stays rejected
    refused = order(S.REJECTED, reason="insufficient balance")
    assert not revivable(refused) and answer(refused, "open").status is S.REJECTED
