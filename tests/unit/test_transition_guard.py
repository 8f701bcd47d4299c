"""What the transition lets through to a live venue (domain/transition_guard.py), pure: the order-router's check of
an approval against the stored state and its epoch, with a property over every sequence of steps (an approval
made before a revert, or in paper, never passes; a reducing order always does), and what a revert cancels."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import transition as tr
from domain.transition_guard import live_refusal, revert_cleanup
from schemas.messages import Milestone, Order, OrderStatus, TransitionState

D = Decimal
STAGES = (D(10), D(25), D(50), D(100))
MET = (Milestone(name="winRate", value=D(1), required=D("0.6"), met=True),)


def ctx(now: int) -> tr.Context:
    return tr.Context(approval="manual", stages=STAGES, has_live=True, now=now, milestones=MET, live_capital=D(1000))


def test_paper_refuses_live_orders_but_not_reducing_ones() -> None:
    paper = TransitionState(mode="paper", epoch=2)
    why = live_refusal(paper, 2, False, "binance")
    assert why is not None and why.startswith("LIVE_NOT_APPROVED") and "binance" in why
    assert live_refusal(paper, 2, True, "binance") is None  # a close of a kept position
    assert live_refusal(None, None, False, "binance") is None  # no stored state: not decided by a transition


def test_an_approval_of_an_earlier_epoch_is_refused_even_when_live_again() -> None:
    live = TransitionState(mode="live", stage=0, epoch=3)
    assert live_refusal(live, 3, False, "binance") is None
    why = live_refusal(live, 2, False, "binance")
    assert why is not None and "before a revert" in why and "epoch 2" in why


def test_a_revert_adds_an_epoch_and_leaves_a_cleanup_to_do() -> None:
    st = TransitionState(mode="live", stage=1, epoch=4)
    out = tr.step(st, "revert", ctx(1), "ann", "stop")
    assert isinstance(out, tr.Step)
    assert (out.state.mode, out.state.epoch, out.state.cleanup_pending) == ("paper", 5, True)
    assert (out.event.epoch, out.event.cleanup_pending) == (5, True)
    again = tr.step(out.state, "revert", ctx(2))  # reverting in paper: never refused, a new epoch
    assert isinstance(again, tr.Step) and again.state.epoch == 6
    paper_only = tr.step(TransitionState(mode="paper"), "revert", tr.Context("manual", STAGES, False, 3))
    assert isinstance(paper_only, tr.Step) and not paper_only.state.cleanup_pending  # no live venue to clean


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["initiate", "approve", "reject", "revert", "auto_revert"]), st.booleans()),
                max_size=25))  # fmt: skip
def test_no_approval_outlives_a_revert(steps: list[tuple[str, bool]]) -> None:
    """Every sequence of steps, with approvals of live orders taken along the way (the epoch they carry and whether
    the gate let them through: live mode only): at the end the router lets an approval through only when the gate
    did and no revert came since; a reducing order always passes."""
    state = TransitionState(mode="paper")
    approvals: list[tuple[int, bool, int]] = []  # (epoch carried, gate let it through, reverts before it)
    reverts = 0
    for i, (action, approve_now) in enumerate(steps):
        out = tr.step(state, action, ctx(i + 1), "x")
        if isinstance(out, tr.Step):
            state = out.state
            reverts += action in ("revert", "auto_revert")
        if approve_now:
            approvals.append((state.epoch, state.mode == "live", reverts))
    assert state.epoch == reverts  # the epoch counts the reverts, whatever else happened
    for epoch, passed_gate, reverts_then in approvals:
        if not passed_gate:
            continue  # the gate denied it (LIVE_NOT_APPROVED): never an approval
        ok = live_refusal(state, epoch, False, "binance") is None
        assert ok == (reverts_then == reverts and state.mode == "live")
        assert live_refusal(state, epoch, True, "binance") is None


def order(oid: str, venue: str, status: OrderStatus, reduce_only: bool = False) -> Order:
    return Order(
        order_id=oid, client_order_id=f"c-{oid}", pair="BTC_USDT", side="sell" if reduce_only else "buy",
        type="stop_loss", quantity=D(1), status=status, venue=venue, reduce_only=reduce_only, created_at=1,
        updated_at=1,
    )  # fmt: skip


def test_a_revert_cancels_every_open_live_order_held_ones_too_and_keeps_exits_when_keeping() -> None:
    S = OrderStatus
    orders = [
        order("held-stop", "binance", S.ACCEPTED), order("leg", "binance", S.INITIALIZED, reduce_only=True),
        order("working", "binance", S.PARTIALLY_FILLED), order("done", "binance", S.FILLED),
        order("paper", "paper", S.ACCEPTED), order("exit", "binance", S.ACCEPTED, reduce_only=True),
    ]  # fmt: skip
    keep = revert_cleanup(orders, ["binance"], keep_exits=True)
    assert keep.cancel == ["held-stop", "working"] and keep.kept == ["exit", "leg"]
    flat = revert_cleanup(orders, ["binance"], keep_exits=False)
    assert flat.cancel == ["exit", "held-stop", "leg", "working"] and flat.kept == []
