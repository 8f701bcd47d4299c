"""SIGNAL_ORDER_TYPE=twap | vwap: a signal's order is an execution algorithm (issue 20), sized like any signal's
order (with the signal's own stopLoss, when it has one), without a bracket. Set-up of test_signal_intake.py."""

from __future__ import annotations

from decimal import Decimal as D

from schemas.messages import OrderStatus
from tests.integration.test_order_types import until
from tests.integration.test_signal_intake import BASE, EQUITY, MID, NOTIONAL_QTY, ask, book, down, orders, signal

S = OrderStatus
SYSTEM_DEFAULTS = BASE  # for make_system (tests/integration/conftest.py)


async def test_a_twap_signal_without_a_stop_is_a_twap_sized_by_notional(make_system, client):
    await make_system(SIGNAL_ORDER_TYPE="twap", SIGNAL_ALGO_DURATION_MS="2000", SIGNAL_ALGO_SLICES="4")
    await book(client)
    r = await ask(client, signal())
    assert r.status == "executed" and r.linked_orders is None, (r.status, r.reason)
    [o] = await orders(client, order_id=r.orders[0].order_id)
    assert (o.type, o.side, o.quantity) == ("twap", "buy", NOTIONAL_QTY)
    assert o.algo is not None and (o.algo.duration_ms, o.algo.slices) == (2000, 4)
    await until(client, o.order_id, S.FILLED, timeout=20)


async def test_a_twap_signal_with_its_own_stop_is_sized_by_the_stop_without_legs(make_system, client):
    """M2: the stop was dropped before sizing while the method was chosen by it: 'needs a stop-loss price'."""
    await make_system(SIGNAL_ORDER_TYPE="twap", SIGNAL_ALGO_DURATION_MS="2000", SIGNAL_ALGO_SLICES="4")
    await book(client)
    r = await ask(client, signal(stopLoss=120))
    assert r.status == "executed", (r.status, r.reason)
    assert r.linked_orders is None and any("carries no bracket" in n for n in r.notes), r.notes
    assert r.position_sizing is not None and r.position_sizing.method == "fixed_fractional"
    [o] = await orders(client, order_id=r.orders[0].order_id)
    assert o.type == "twap" and not o.linked_orders
    if r.position_sizing.capped_by is None:  # (else a limit made it smaller)
        assert o.quantity == down(EQUITY * D("0.02") / (MID - 120))  # entry: the mid


async def test_a_vwap_signal_with_its_own_stop(make_system, client):
    await make_system(SIGNAL_ORDER_TYPE="vwap", SIGNAL_ALGO_DURATION_MS="2000", SIGNAL_ALGO_SLICES="2")
    await book(client)
    r = await ask(client, signal(stopLoss=str(MID - 5)))
    assert r.status == "executed", (r.status, r.reason)
    assert r.position_sizing is not None and r.position_sizing.method == "fixed_fractional"
    [o] = await orders(client, order_id=r.orders[0].order_id)
    assert o.type == "vwap" and o.algo is not None and o.algo.slices == 2
