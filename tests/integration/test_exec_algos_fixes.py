"""Regression tests of the execution algorithms' review findings (issue 20): the trading state and the
algorithms, a slice never above the parent's quantity, children never modified, ... Same set-up as
tests/integration/test_exec_algos.py (paper venue, the books the test publishes)."""

from __future__ import annotations

from decimal import Decimal as D

from schemas.messages import AlgoSpec, OrderStatus, RiskCommand, RiskStateChange
from tests.helpers import eventually
from tests.integration.test_exec_algos import children
from tests.integration.test_order_types import order, placed, publish_book, until

S = OrderStatus


async def test_the_automatic_halt_stops_a_running_twap(make_system, client):
    """C1: MAX_DAILY_LOSS halts trading by itself (only the state changes): the TWAP must not buy on."""
    sut = await make_system(INITIAL_BALANCE="1000", MAX_DAILY_LOSS="0.01")
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "h1", "buy", "5", "twap", algo=AlgoSpec(duration_ms=5000, slices=10))

    async def two():
        o = await order(client, p.order_id)
        return o if len(o.children) >= 2 else None

    await eventually(two, timeout=10)
    await publish_book(client, [("80.00", "500")], [("81.00", "500")])  # the book drops: the daily loss is hit
    rg = sut.running["risk-gate"]

    async def halted():
        return rg.trading_state == "HALTED" or None  # type: ignore[attr-defined]

    await eventually(halted, timeout=10, what="halted")
    final = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=15)
    assert final.status is S.CANCELED and "HALTED" in (final.reason or ""), final.reason
    assert final.filled_quantity < D(5)
    kids = await children(client, final)
    after = [k for k in kids if k.created_at > final.closed_at]
    assert not after
    # nothing made after the state was stored: every child came before the halt's alert (at most one in flight)
    assert len(kids) <= 4, [str(k.quantity) for k in kids]


async def test_reducing_stops_a_running_buy_twap(make_system, client):
    """C1: REDUCING (only reducing orders pass): a running buy TWAP stops with the reason on its trail."""
    await make_system()
    await publish_book(client, [("99.00", "500")], [("100.00", "500")])
    p = await placed(client, "r1", "buy", "0.5", "twap", algo=AlgoSpec(duration_ms=3000, slices=6))
    ch = await client.request(client.subjects.risk_command, RiskCommand(action="reduce"), RiskStateChange, timeout=5)
    assert ch.state == "REDUCING"
    final = await until(client, p.order_id, S.FILLED, S.EXPIRED, S.CANCELED, timeout=15)
    assert final.status is S.CANCELED and "REDUCING" in (final.reason or ""), final.reason
    assert final.filled_quantity < D("0.5")
