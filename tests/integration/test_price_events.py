"""``price`` events on GET /api/stream (SSE) and GET /api/ws: per pair and venue, throttled to PRICE_EVENT_MS (the
latest state at the end of the interval), filtered by pair, without an id, and not in the way of resuming the
stored events. Everything real: nats-server, every actor, the gateway on a TCP port, aiohttp as the client."""

from __future__ import annotations

import asyncio
import json
import math
import time
from decimal import Decimal
from typing import Any

from bus.client import Bus
from schemas.messages import Book, Trade, now_ms
from tests.integration.test_gateway_api import ORDER, Api, launch  # noqa: F401  # the fixture

D = Decimal
INTERVAL_MS = 1000


async def publish(bus: Bus, pair: str, venue: str | None, ask: Decimal) -> None:
    book = Book(pair=pair, bids=[(ask - 1, D(1))], asks=[(ask, D(1))], ts=now_ms(), venue=venue)
    await bus.publish(bus.subjects.book(pair), book)


async def burst(bus: Bus, pair: str, venue: str | None, n: int = 50, span_s: float = 0.1) -> tuple[Decimal, float]:
    """``n`` books in about ``span_s``, the ask rising by 1 each time: (the last ask, how long it took in ms)."""
    t0 = time.monotonic()
    ask = D(60000)
    for i in range(n):
        ask = D(60000 + i)
        await publish(bus, pair, venue, ask)
        await asyncio.sleep(span_s / n)
    await bus.nc.flush()
    return ask, (time.monotonic() - t0) * 1000


def most(took_ms: float) -> int:
    """Price events a burst over ``took_ms`` may make for one pair and venue: one at its start, then at most one per
    interval begun since (2 for a burst within one interval)."""
    return 1 + math.ceil(took_ms / INTERVAL_MS)


async def sse_prices(events: Any, want: Decimal, pair: str, venue: str | None) -> list[dict[str, str]]:
    """SSE events until the price event of (pair, venue) showing the ask ``want``, then one more interval and a
    half (nothing more may come); every event read."""
    got: list[dict[str, str]] = []
    deadline = time.monotonic() + 15
    while True:
        assert time.monotonic() < deadline, f"no price event with ask {want}: {got}"
        ev = await events.next(timeout=15)
        got.append(ev)
        data = json.loads(ev["data"])
        if ev["event"] == "price" and (data["pair"], data["exchange"], D(data["ask"])) == (pair, venue, want):
            break
    try:
        while True:
            got.append(await events.next(timeout=1.5 * INTERVAL_MS / 1000))
    except TimeoutError:
        pass
    return got


async def test_sse_price_events_are_throttled_per_pair_and_venue_and_end_with_the_latest_book(launch):  # noqa: F811
    api: Api = await launch(PRICE_EVENT_MS=str(INTERVAL_MS))
    async with api.sse("?types=price&pairs=BTC_USDT") as events:
        hello = await events.next()
        assert hello["event"] == "hello" and "id" not in hello  # no stored kind followed: no position
        assert json.loads(hello["data"]) == {"kinds": ["price"], "pairs": ["BTC_USDT"]}
        await publish(api.bus, "ETH_USDT", "binance", D(3000))  # another pair: filtered out
        trade = Trade(pair="BTC_USDT", price=D("59999.5"), quantity=D("0.1"), side="buy", ts=now_ms(), venue="binance")
        await api.bus.publish(api.bus.subjects.trades("BTC_USDT"), trade)
        last, took = await burst(api.bus, "BTC_USDT", "binance")
        got = await sse_prices(events, last, "BTC_USDT", "binance")
    assert all(e["event"] == "price" and "id" not in e for e in got), got  # live: never an id
    prices = [json.loads(e["data"]) for e in got]
    for p in prices:
        api.contract.validate(api.contract.component("PriceEvent"), p, "a price event")
    assert {p["pair"] for p in prices} == {"BTC_USDT"}
    mine = [p for p in prices if p["exchange"] == "binance"]
    assert 1 <= len(mine) <= most(took), (took, mine)
    assert (D(mine[-1]["bid"]), D(mine[-1]["ask"]), D(mine[-1]["last"])) == (last - 1, last, D("59999.5"))
    assert isinstance(mine[-1]["ts"], int)


async def test_websocket_price_frames_have_no_id_and_keep_to_the_pairs_asked(launch):  # noqa: F811
    api: Api = await launch(PRICE_EVENT_MS=str(INTERVAL_MS))
    async with api.ws("?types=price&pairs=ETH_USDT") as sock:
        hello = await sock.receive_json(timeout=10)
        assert hello == {"type": "hello", "data": {"kinds": ["price"], "pairs": ["ETH_USDT"]}}
        await publish(api.bus, "BTC_USDT", "alpaca", D(50000))
        last, took = await burst(api.bus, "ETH_USDT", "alpaca")
        await publish(api.bus, "ETH_USDT", None, D(2999))  # an unnamed book (synthetic, an outside feed) is its own
        frames: list[dict[str, Any]] = []

        def done() -> bool:
            alpaca_last = any(f["data"]["exchange"] == "alpaca" and D(f["data"]["ask"]) == last for f in frames)
            return alpaca_last and any(f["data"]["exchange"] is None for f in frames)

        while not done():
            frames.append(await sock.receive_json(timeout=15))
        unnamed = next(f for f in frames if f["data"]["exchange"] is None)
    assert all(set(f) == {"type", "data"} and f["type"] == "price" for f in frames), frames
    assert {f["data"]["pair"] for f in frames} == {"ETH_USDT"}
    alpaca = [f["data"] for f in frames if f["data"]["exchange"] == "alpaca"]
    assert len(alpaca) <= most(took) and D(alpaca[-1]["ask"]) == last and alpaca[-1]["last"] is None
    assert D(unnamed["data"]["ask"]) == D(2999)


async def test_a_resume_after_price_events_gets_every_stored_event_once(launch):  # noqa: F811
    api: Api = await launch(PRICE_EVENT_MS="50")
    await api.book()

    async def next_fill(events: Any, prices: list[dict[str, str]], timeout: float = 10.0) -> dict[str, str]:
        while True:
            ev = await events.next(timeout=timeout)
            if ev["event"] != "price":
                return ev
            prices.append(ev)

    prices: list[dict[str, str]] = []
    async with api.sse("?types=fill,price") as events:
        hello = await events.next()
        first = (await api.place(**ORDER))["orderId"]
        for _ in range(3):
            await api.book()
        seen = await next_fill(events, prices)
        assert json.loads(seen["data"])["orderId"] == first and seen["id"] != hello["id"]
        while len(prices) < 2:  # price events after the fill
            ev = await events.next()
            assert ev["event"] == "price", ev
            prices.append(ev)
    assert prices and all("id" not in p for p in prices)
    away = [await api.filled_buy() for _ in range(2)]
    async with api.sse("?types=fill,price", headers={"Last-Event-ID": seen["id"]}) as events:
        hello = await events.next()
        assert hello["event"] == "hello" and hello["id"] == seen["id"]
        await api.book()
        got = [await next_fill(events, prices) for _ in range(2)]
        assert [json.loads(e["data"])["orderId"] for e in got] == away
        try:
            extra = await next_fill(events, prices, timeout=1.0)
        except TimeoutError:
            extra = None
    assert extra is None, extra  # nothing twice
