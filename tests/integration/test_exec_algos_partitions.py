"""The execution algorithms (issue 20) with PARTITIONS=2 on one machine (tests/integration/test_partitions.py has
the set-up: two instances of each partitioned actor over a real nats-server, the gateway gathering from both, over
real HTTP): a TWAP on a pair of each partition runs on its own partition's router (parent and children), a cancel of
a parent over REST reaches the partition that has it, and ``GET /api/orders/{id}`` lists a parent's children."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest

from actors.order_router import OrderRouter
from bus.embedded import free_port
from config.settings import load_settings
from domain.algo_orders import slice_client_id
from domain.partitions import partition_of
from gateway.app import Gateway
from tbx.runner import ACTOR_CLASSES, build, connect, shutdown
from tests.helpers import eventually

JSON = {"Content-Type": "application/json"}
P0, P1 = "SOL_USDT", "BTC_USDT"  # partition 0 and 1 of 2
QTY = {P0: Decimal("2"), P1: Decimal("0.02")}


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: object) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as r:  # type: ignore[arg-type]
        return r.status, json.loads(await r.read() or b"{}")


class Deployment:
    def __init__(self, url: str, routers: list[OrderRouter], base: str, started: list) -> None:
        self.url = url
        self.routers = routers  # by partition
        self.base = base
        self.started = started

    async def restart_router(self, k: int) -> OrderRouter:
        """Partition ``k``'s order-router stopped, and a new instance of it started (a restart of that process)."""
        old = self.routers[k]
        await old.stop()
        self.started.remove(old)
        new = OrderRouter(old.settings, await connect(old.settings, self.url, "order-router"))
        await new.start()
        self.started.append(new)
        self.routers[k] = new
        return new


@pytest.fixture
async def partitioned(nats_url: str, prefix: str) -> AsyncIterator[Deployment]:
    port = free_port()
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "PORT": str(port),
            "PAIRS": f"{P1},{P0}",
            "PARTITIONS": "2",
            "MARKET_DATA_INTERVAL": "50",
            "MAX_POSITION_SIZE": "1",
            "MAX_TOTAL_EXPOSURE": "10",
            "MAX_DAILY_LOSS": "1",
            "PRICE_BAND_PERCENT": "0",
            "DEFAULT_ORDER_TIMEOUT": "0",
        }
    )
    assert partition_of(P0, 2) == 0 and partition_of(P1, 2) == 1
    parts = await build(settings, nats_url, list(ACTOR_CLASSES), with_gateway=True)
    started = []
    try:
        for part in parts:
            await part.start()
            started.append(part)
        routers = [p for p in parts if isinstance(p, OrderRouter)]
        assert [r.partition for r in routers] == [0, 1]
        assert any(isinstance(p, Gateway) for p in parts)
        yield Deployment(nats_url, routers, f"http://127.0.0.1:{port}", started)
    finally:
        await shutdown(started)
        for part in parts:
            if part not in started:
                await part.bus.close()  # type: ignore[attr-defined]
        await asyncio.sleep(0)


async def test_twaps_on_both_partitions_run_on_their_own_router_cancel_reaches_the_right_one(partitioned) -> None:
    routers, base = partitioned.routers, partitioned.base
    async with aiohttp.ClientSession() as http:

        async def priced() -> bool:
            return all(r.books.mids.get(p) for r in routers for p in (P0, P1))

        await eventually(priced, what="books of both pairs")
        quick: dict[str, dict] = {}
        long: dict[str, dict] = {}
        for pair in (P0, P1):
            body = {"pair": pair, "side": "buy", "type": "twap", "quantity": float(QTY[pair])}
            status, quick[pair] = await call(
                http,
                "POST",
                f"{base}/api/orders",
                json=body | {"algo": {"durationMs": 1000, "slices": 2}},
                headers=JSON,
            )
            assert status == 201 and quick[pair]["type"] == "twap", quick[pair]
            status, long[pair] = await call(
                http,
                "POST",
                f"{base}/api/orders",
                json=body | {"algo": {"durationMs": 60000, "slices": 10}},
                headers=JSON,
            )
            assert status == 201, long[pair]

        # the quick ones complete, each on its own partition's router, and list their children
        for pair, placed in quick.items():
            oid = placed["orderId"]

            async def filled(oid: str = oid) -> dict | None:
                status, o = await call(http, "GET", f"{base}/api/orders/{oid}")
                return o if status == 200 and o["status"] == "filled" else None

            parent = await eventually(filled, timeout=20, what=f"the {pair} TWAP filled")
            assert Decimal(str(parent["filledQuantity"])) == QTY[pair] and len(parent["children"]) == 2
            assert parent["algoState"]["sent"] == [0, 1]
            for k, cid in enumerate(parent["children"]):
                status, child = await call(http, "GET", f"{base}/api/orders/{cid}")
                assert status == 200 and child["parentOrderId"] == oid and child["role"] == "slice", child
                assert child["pair"] == pair and child["clientOrderId"] == slice_client_id(oid, k)
                assert child["status"] == "filled"
            mine = routers[partition_of(pair, 2)]
            other = routers[1 - partition_of(pair, 2)]
            for x in (oid, *parent["children"]):  # parent and children: on the pair's partition, and only there
                assert x in mine.store.orders and x not in other.store.orders
            status, ev = await call(http, "GET", f"{base}/api/orders/{oid}/events")
            assert status == 200 and [e["event"] for e in ev["events"]].count("slice_sent") == 2

        # the long ones: their first child went at once; a cancel over REST reaches the partition that has each
        for pair, placed in long.items():
            oid = placed["orderId"]
            mine = routers[partition_of(pair, 2)]

            async def started(oid: str = oid, mine: OrderRouter = mine) -> bool:
                o = mine.store.orders.get(oid)
                return o is not None and len(o.children) == 1 and o.filled_quantity > 0

            await eventually(started, what=f"the long {pair} TWAP's first child filled")
            status, o = await call(http, "DELETE", f"{base}/api/orders/{oid}")
            assert status == 200 and o["orderId"] == oid and o["status"] in ("pending_cancel", "canceled"), o

            async def canceled(oid: str = oid) -> dict | None:
                _, o = await call(http, "GET", f"{base}/api/orders/{oid}")
                return o if o.get("status") == "canceled" else None

            parent = await eventually(canceled, what=f"the long {pair} TWAP canceled")
            assert parent["reason"] == "canceled by request" and len(parent["children"]) == 1
            assert Decimal(str(parent["filledQuantity"])) == QTY[pair] / 10
            assert mine.store.orders[oid].status.value == "canceled"
            assert oid not in routers[1 - partition_of(pair, 2)].store.orders
        # a second cancel: the parent is closed (409 from whichever partition has it), not a 404
        status, problem = await call(http, "DELETE", f"{base}/api/orders/{long[P1]['orderId']}")
        assert status == 409, problem
        # each router made only its own pair's children: 2 + 1 each
        for r in routers:
            kids = [o for o in r.store.orders.values() if o.role == "slice"]
            assert len(kids) == 3 and all(partition_of(k.pair, 2) == r.partition for k in kids)


async def test_a_partitions_router_restarted_mid_schedule_sends_no_slice_twice_the_other_goes_on(partitioned) -> None:
    dep = partitioned
    base = dep.base
    async with aiohttp.ClientSession() as http:

        async def priced() -> bool:
            return all(r.books.mids.get(p) for r in dep.routers for p in (P0, P1))

        await eventually(priced, what="books of both pairs")
        ids: dict[str, str] = {}
        for pair in (P0, P1):
            body = {"pair": pair, "side": "buy", "type": "twap", "quantity": float(QTY[pair] * 3)}
            status, o = await call(
                http,
                "POST",
                f"{base}/api/orders",
                json=body | {"algo": {"durationMs": 3000, "slices": 6}},
                headers=JSON,
            )
            assert status == 201, o
            ids[pair] = o["orderId"]
        k = partition_of(P1, 2)

        async def two_sent() -> bool:
            o = dep.routers[k].store.orders.get(ids[P1])
            return o is not None and len(o.children) >= 2

        await eventually(two_sent, what="two slices of the BTC TWAP sent")
        await dep.restart_router(k)  # while partition 0's TWAP goes on
        parents: dict[str, dict] = {}
        for pair, oid in ids.items():

            async def ended(oid: str = oid) -> dict | None:
                _, o = await call(http, "GET", f"{base}/api/orders/{oid}")
                return o if o.get("status") in ("filled", "expired", "canceled") else None

            parents[pair] = await eventually(ended, timeout=30, what=f"the {pair} TWAP ended")
        for pair, parent in parents.items():
            assert parent["status"] == "filled", (pair, parent["status"], parent.get("reason"))
            assert sorted(parent["algoState"]["sent"]) == list(range(6)) == sorted(set(parent["algoState"]["sent"]))
            kids = []
            for cid in parent["children"]:
                status, child = await call(http, "GET", f"{base}/api/orders/{cid}")
                assert status == 200 and child["parentOrderId"] == parent["orderId"]
                kids.append(child)
            coids = [c["clientOrderId"] for c in kids]
            assert len(set(coids)) == len(coids) and all(c["status"] == "filled" for c in kids)
            total = sum((Decimal(str(c["filledQuantity"])) for c in kids), Decimal(0))
            assert total == Decimal(str(parent["filledQuantity"])) == QTY[pair] * 3
            # the restarted router's new instance holds them; the other partition's never did
            mine = dep.routers[partition_of(pair, 2)]
            other = dep.routers[1 - partition_of(pair, 2)]
            assert all(c["orderId"] in mine.store.orders for c in kids)
            assert not any(c["orderId"] in other.store.orders for c in kids)
        # partition 0's router was never restarted: the instance that started its TWAP finished it
        assert dep.routers[partition_of(P0, 2)].store.orders[ids[P0]].status.value == "filled"
