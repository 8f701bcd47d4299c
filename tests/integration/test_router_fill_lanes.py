"""Review 2 of issue 22: the order-router's fills in lanes by order id were folded into its position out of FILLS
order; a reduce-only exit the position covered all along was then cut at the venue on a dip that never was. Fills go
in lanes by pair: one pair's in FILLS order."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import msgspec

from schemas.messages import OrderStatus
from tests.helpers import fill
from tests.integration.test_order_types import order, placed, until
from tests.integration.test_reduce_only import long_position

S = OrderStatus


def outside(fill_id: str, order_id: str, side: str, qty: str):
    f = fill(fill_id, side, qty, "60000")
    return msgspec.structs.replace(f, order_id=order_id, client_order_id=f"C-{order_id}")


async def test_outside_fills_out_of_fills_order_never_cut_a_covered_exit(make_system, client):
    sut = await long_position(make_system, client, "0.02", ALLOW_SHORT="true")
    tp = await placed(client, "tp", "sell", "0.02", "limit", price="61000", reduce_only=True)
    await until(client, tp.order_id, S.ACCEPTED)
    router = sut.running["order-router"]
    # FILLS order: A buys 0.001, A buys 0.02, B sells 0.02 -> the long is 0.021, 0.041, 0.021: the 0.02 exit is
    # covered at every step. The router is busy (its store lock held, as under approvals' load) while they arrive.
    async with router.store.lock:
        for f in (
            outside("a0", "X-A", "buy", "0.001"),
            outside("a1", "X-A", "buy", "0.02"),
            outside("b0", "X-B", "sell", "0.02"),
        ):
            await client.js_publish(client.subjects.fills("BTC_USDT"), f)
        await asyncio.sleep(0.5)  # all three delivered: a0 and b0 wait on the lock, a1 in a0's lane
    await asyncio.sleep(1.0)
    o = await order(client, tp.order_id)
    assert (o.status, o.quantity) == (S.ACCEPTED, D("0.02")), (
        f"covered exit touched: {o.status} {o.quantity} {o.reason}"
    )
