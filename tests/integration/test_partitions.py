"""Pair partitions (PARTITIONS=2) on one machine over a real nats-server: the hash is nats-server's own, and two
instances of each partitioned actor each handle only their own pairs, with the gateway gathering from both."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import msgspec
from nats.js import api

from actors.fill_tracker import FillTracker
from actors.order_router import OrderRouter
from actors.signal_intake import SignalIntake
from bus.embedded import free_port
from config.settings import load_settings
from domain.partitions import partition_of
from gateway.app import Gateway
from tbx.runner import ACTOR_CLASSES, build, shutdown
from tests.helpers import eventually

JSON = {"Content-Type": "application/json"}
P0, P1 = "SOL_USDT", "BTC_USDT"  # partition 0 and 1 of 2


async def test_partition_of_is_nats_servers_partition_function(client, prefix):
    """A stream whose subject transform is ``{{partition(n,1)}}``: the server's partition of each pair is ours."""
    js = client.js
    pairs = [f"P{i}X_USDT" for i in range(300)] + ["BTC_USDT", "ETH_USDT", "SOL_USDT", "RVN_USDT"]
    for n in (2, 7):
        name = f"{prefix.upper().replace('-', '_')}_PTEST{n}"
        await js.add_stream(
            api.StreamConfig(
                name=name,
                subjects=[f"{prefix}.ptest{n}.*"],
                subject_transform=api.SubjectTransform(
                    src=f"{prefix}.ptest{n}.*", dest=f"{prefix}.ptest{n}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}"
                ),
            )
        )
        for pair in pairs:
            await js.publish(f"{prefix}.ptest{n}.{pair}", b"x")
        for seq, pair in enumerate(pairs, start=1):
            msg = await js.get_msg(name, seq)
            assert msg.subject == f"{prefix}.ptest{n}.{partition_of(pair, n)}.{pair}", pair
        await js.delete_stream(name)


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict]:
    async with http.request(method, url, **kw) as r:
        return r.status, json.loads(await r.read() or b"{}")


async def test_two_partitions_on_one_machine(nats_url, prefix):
    port = free_port()
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "PORT": str(port),
            "PAIRS": f"{P1},{P0}",
            "PARTITIONS": "2",
            "MARKET_DATA_INTERVAL": "50",
            "ALLOW_SHORT": "true",
            "MAX_POSITION_SIZE": "1",
            "MAX_DAILY_LOSS": "1",
            "PRICE_BAND_PERCENT": "0",
            "DEFAULT_ORDER_TIMEOUT": "0",
            "STOP_LOSS_ENABLED": "false",  # a signal's order alone, no bracket legs
            "DEFAULT_TAKE_PROFIT_PERCENT": "0",
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
        trackers = [p for p in parts if isinstance(p, FillTracker)]
        intakes = [p for p in parts if isinstance(p, SignalIntake)]
        assert [r.partition for r in routers] == [0, 1] and [t.partition for t in trackers] == [0, 1]
        assert [i.partition for i in intakes] == [0, 1]
        gateway = next(p for p in parts if isinstance(p, Gateway))
        client = gateway.bus
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:

            async def prices() -> bool:
                status, _body = await call(http, "GET", f"{base}/api/risk/metrics")
                return status == 200 and all(r.books.mids.get(p) for r in routers for p in (P0, P1))

            await eventually(prices, what="books of both pairs")
            # market orders on both partitions' pairs, and resting limits far from the market to cancel / modify
            placed: dict[str, dict] = {}
            for coid, body in {
                "m-sol": {"pair": P0, "side": "buy", "type": "market", "quantity": 1},
                "m-btc": {"pair": P1, "side": "buy", "type": "market", "quantity": 0.01},
                "l-sol": {"pair": P0, "side": "buy", "type": "limit", "quantity": 1, "price": 10},
                "l-btc": {"pair": P1, "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000},
                "k-sol": {"pair": P0, "side": "buy", "type": "limit", "quantity": 1, "price": 11},
                "k-btc": {"pair": P1, "side": "buy", "type": "limit", "quantity": 0.01, "price": 1001},
            }.items():
                status, out = await call(
                    http, "POST", f"{base}/api/orders", json={**body, "clientOrderId": coid}, headers=JSON
                )
                assert status == 201, out
                placed[coid] = out
            # signals over NATS on both pairs: each answered by its own partition, executed once
            for sid, pair, qty in (("s-sol", P0, "0.5"), ("s-btc", P1, "0.002")):
                signal = {"pair": pair, "signal": "BUY", "confidence": 0.9, "source": "t", "signalId": sid,
                          "quantity": qty}  # fmt: skip
                reply = await client.nc.request(client.subjects.signals_submit, json.dumps(signal).encode(), 10)
                result = msgspec.json.decode(reply.data)
                assert result["status"] == "executed", result

            # each partition handled only its own pairs
            for r in routers:
                assert r.store.orders and all(partition_of(o.pair, 2) == r.partition for o in r.store.orders.values())
            for i in intakes:
                assert sum(i.counts.values()) == 1 and all(partition_of(ev.pair, 2) == i.partition
                                                           for ev in i.results.values())  # fmt: skip

            async def all_listed() -> list[dict] | None:
                status, page = await call(http, "GET", f"{base}/api/orders?limit=500")
                assert status == 200
                return page["orders"] if len(page["orders"]) == 8 else None

            orders = await eventually(all_listed, what="the 8 orders of both partitions listed")
            assert sorted(o["clientOrderId"] for o in orders if not o["clientOrderId"].startswith("s-")) == sorted(
                placed
            )
            assert [(o["createdAt"], o["orderId"]) for o in orders] == sorted(
                ((o["createdAt"], o["orderId"]) for o in orders), reverse=True
            )
            # pages of 3 through both partitions: every order once
            seen, cursor = [], None
            while True:
                url = f"{base}/api/orders?limit=3" + (f"&cursor={cursor}" if cursor else "")
                status, page = await call(http, "GET", url)
                assert status == 200 and len(page["orders"]) <= 3
                seen += [o["orderId"] for o in page["orders"]]
                if not (cursor := page.get("nextCursor")):
                    break
            assert seen == [o["orderId"] for o in orders]

            async def fills_of_both() -> bool:
                return all(t.published >= 2 for t in trackers)

            await eventually(fills_of_both, what="each partition's fill-tracker made its fills")
            for t in trackers:  # each fill-tracker saw only its own pairs' reports
                assert t.orders and all(
                    next(o for r in routers for o in r.store.orders.values() if o.order_id == oid).pair
                    in ((P0,) if t.partition == 0 else (P1,))
                    for oid in t.orders
                )
            # one order by id, its events, modify and cancel: whichever partition has it
            for coid in ("m-sol", "m-btc"):
                oid = placed[coid]["orderId"]
                status, o = await call(http, "GET", f"{base}/api/orders/{oid}")
                assert status == 200 and o["clientOrderId"] == coid
                status, ev = await call(http, "GET", f"{base}/api/orders/{oid}/events")
                assert status == 200 and ev["events"]
            status, _ = await call(http, "GET", f"{base}/api/orders/ORD_20200101_999999")
            assert status == 404
            for coid, price in (("l-sol", 12), ("l-btc", 1002)):
                oid = placed[coid]["orderId"]
                status, o = await call(http, "PATCH", f"{base}/api/orders/{oid}", json={"price": price}, headers=JSON)
                assert status == 200 and Decimal(str(o["price"])) == price, o
                status, o = await call(http, "DELETE", f"{base}/api/orders/{oid}")
                assert status == 200 and o["status"] in ("canceled", "pending_cancel"), o
            status, _ = await call(http, "DELETE", f"{base}/api/orders/ORD_20200101_999999")
            assert status == 404
            # the emergency stop cancels the working orders of both partitions
            status, change = await call(http, "POST", f"{base}/api/risk/emergency-stop", json={}, headers=JSON)
            assert status == 200, change
            assert {placed["k-sol"]["orderId"], placed["k-btc"]["orderId"]} <= set(change["canceledOrders"])

            async def all_closed() -> bool:
                _status, page = await call(http, "GET", f"{base}/api/orders?limit=500")
                return all(o["status"] in ("filled", "canceled") for o in page["orders"])

            await eventually(all_closed, what="every order filled or canceled")
            # the books: the ledger's positions are the fills of both partitions
            fills: dict[str, Decimal] = {P0: Decimal(0), P1: Decimal(0)}
            status, page = await call(http, "GET", f"{base}/api/orders?status=filled&limit=500")
            for o in page["orders"]:
                fills[o["pair"]] += Decimal(str(o["filledQuantity"]))
            assert fills == {P0: Decimal("1.5"), P1: Decimal("0.012")}

            async def booked() -> bool:
                _status, pf = await call(http, "GET", f"{base}/api/portfolio")
                got = {p["pair"]: Decimal(str(p["quantity"])) for p in pf.get("positions", [])}
                return got == fills

            await eventually(booked, what="the ledger's positions equal the fills of both partitions")
            status, sigs = await call(http, "GET", f"{base}/api/signals")
            assert status == 200 and {s["signalId"] for s in sigs["signals"]} == {"s-sol", "s-btc"}
    finally:
        await shutdown(started)
        for part in parts:
            if part not in started:
                await part.bus.close()  # type: ignore[attr-defined]
        await asyncio.sleep(0)
