"""Issue 21 (the dashboard's working orders): ``GET /api/orders?status=open`` lists every working order, paged, and
a query for working orders only is answered from the router's memory, never by reading closed orders back from
ORDERS (only closed orders ever leave memory). KEEP_CLOSED is lowered to 3 before the system starts, as in
test_memory_bounds.py, so a few filled orders are enough to push closed ones out of memory."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

import actors.order_router.store
from bus.client import Bus
from schemas.messages import OrdersPage, OrdersQuery, OrderStatus
from tests.helpers import eventually
from tests.integration.test_gateway import start_gateway
from tests.integration.test_memory_bounds import books, market_orders, pages, portfolio, router
from tests.integration.test_order_types import placed, until

S = OrderStatus
KEEP = 3


@pytest.fixture(autouse=True)
def small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors.order_router.store, "KEEP_CLOSED", KEEP)
    monkeypatch.setattr(actors.order_router.store, "SCAN_BATCH", 4)


class ReadBack:
    """Counts the router store's reads of ORDERS (the real reads, made as before)."""

    def __init__(self, store: Any) -> None:
        self.calls = 0
        self.real = store._stored

    async def __call__(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        return await self.real(*args, **kw)


async def test_open_lists_every_working_order_from_memory_and_never_reads_closed_ones_back(
    make_system: Any, client: Bus, nats_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sut = await make_system()
    await books(client)
    resting = []
    for i in range(4):  # limit buys under the book: they rest (accepted)
        o = await placed(client, f"open-rest-{i}", "buy", "0.1", "limit", price=f"9{i}.00")
        resting.append(await until(client, o.order_id, S.ACCEPTED))
    filled = await market_orders(client, 8, "open-late")
    n_fills = sum(len(o.fills) for o in filled)

    async def settled() -> bool:
        snap = await portfolio(client)
        return router(sut).live == {o.order_id for o in resting} and snap.fills_applied == n_fills

    await eventually(settled, what="only the resting orders working, every fill booked")
    store = router(sut).store
    assert store.evicted_created, "closed orders left memory"
    reads = ReadBack(store)
    monkeypatch.setattr(store, "_stored", reads)

    newest_first = [o.order_id for o in reversed(resting)]
    got = await pages(client, limit=3, open=True)  # a page of 3, then the last one: the cursor works
    assert [[o.order_id for o in p] for p in got] == [newest_first[:3], newest_first[3:]]
    got = await pages(client, limit=10, status=S.ACCEPTED)
    assert [o.order_id for p in got for o in p] == newest_first
    assert reads.calls == 0, "a query for working orders only read closed orders back from ORDERS"

    # a closed status still reads them back (the filled ones out of memory are listed)
    got = await pages(client, limit=10, status=S.FILLED)
    assert [o.order_id for p in got for o in p] == [o.order_id for o in reversed(filled)]
    assert reads.calls > 0

    # the same over REST: ?status=open (any case), paged by nextCursor
    gw, base = await start_gateway(nats_url, prefix)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/orders", params={"status": "OPEN", "limit": "3"}) as r:
                assert r.status == 200
                body = await r.json()
            assert [o["orderId"] for o in body["orders"]] == newest_first[:3]
            assert all(o["status"] == "accepted" for o in body["orders"])
            cursor = body["nextCursor"]
            async with http.get(f"{base}/api/orders", params={"status": "open", "cursor": cursor}) as r:
                body = await r.json()
            assert [o["orderId"] for o in body["orders"]] == newest_first[3:] and body.get("nextCursor") is None
            async with http.get(f"{base}/api/orders", params={"status": "working"}) as r:
                assert r.status == 422
                problem = await r.json()
            assert problem["field"] == "status" and "open" in problem["detail"]
    finally:
        await gw.stop()

    q = OrdersQuery(open=True, pair="ETH_USDT")  # no working ETH order
    assert (await client.request(client.subjects.query("orders"), q, OrdersPage)).orders == []
