"""Execution quality end to end (issue 20): arrival prices recorded by the router, the portfolio-ledger's figures
over the real bus and the gateway over real HTTP (every answer checked against the OpenAPI document), the
SLIPPAGE alert, a restart of the ledger (and an upgrade from a snapshot without the figures), and an algorithm's
children counted in their parent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import aiohttp
import msgspec
import pytest

from actors.snapshots import SnapshotStore
from bus.client import Bus, Envelope
from schemas.messages import (
    ExecutionQuality,
    ExecutionQualityQuery,
    FillRef,
    Order,
    OrderEvent,
    OrderStatus,
    Performance,
    PerformanceQuery,
    RiskAlert,
    now_ms,
)
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_gateway_api import EXTRA, Api, problem
from tests.integration.test_order_types import placed, publish_book, until

S = OrderStatus
SYSTEM_DEFAULTS = {**EXTRA, "MAX_SLIPPAGE_ALERT_BPS": "20"}


@pytest.fixture
async def stack(make_system, nats_url, prefix, make_bus) -> AsyncIterator[tuple[System, Api]]:
    sut = await make_system()
    gw, base = await start_gateway(nats_url, prefix, **SYSTEM_DEFAULTS)
    client = await make_bus("client")
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, base, client, gw)
            await api.load_contract()
            yield sut, api
    finally:
        await gw.stop()


async def quality(bus: Bus, **q: Any) -> ExecutionQuality:
    return await bus.request(
        bus.subjects.query("execution_quality"), ExecutionQualityQuery(**q), ExecutionQuality, timeout=5
    )


async def counted(bus: Bus, n: int, **q: Any) -> ExecutionQuality:
    async def enough() -> ExecutionQuality | None:
        answer = await quality(bus, **q)
        return answer if answer.overall.orders == n else None

    return await eventually(enough, what=f"{n} orders in the execution quality")


def figures(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: answer[k] for k in ("orders", "avgSlippageBps", "p95SlippageBps", "fillRatio", "avgTimeToFillMs")}


async def test_a_market_order_walking_two_levels_checked_by_hand(stack):
    _, api = stack
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        if a.code == "SLIPPAGE":
            alerts.append(a)

    await api.bus.subscribe(api.bus.subjects.risk_events, RiskAlert, on_alert)
    # arrival: bid 99.90, ask 100.10 -> mid 100.00; a market buy of 2 walks two ask levels:
    # 1 @ 100.10 + 1 @ 100.50 -> average 100.30
    # vs arrival: 10000 x (100.30 - 100.00) / 100.00 = 30 bps (above MAX_SLIPPAGE_ALERT_BPS=20: one alert)
    # vs touch:   10000 x (100.30 - 100.10) / 100.10 = 19.98002 -> 19.9800 bps
    # per fill: 10 and 50 bps vs arrival; 0 and 39.96004 vs touch
    # fees: taker 0.1 % -> 0.10010 + 0.10050 = 0.2006 USDT = 10000 x 0.2006 / 200.60 = 10 bps; total cost 40 bps
    await publish_book(api.bus, [("99.90", "5")], [("100.10", "1"), ("100.50", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", type="market", quantity=2))["orderId"]
    placed = await api.until(oid, "filled")
    assert (placed["arrivalMid"], placed["arrivalBid"], placed["arrivalAsk"]) == (100, 99.9, 100.1)
    assert placed["averagePrice"] == 100.3
    await counted(api.bus, 1)
    body = await api.ok("GET", "/api/execution/quality")
    want = {"orders": 1, "avgSlippageBps": 30, "p95SlippageBps": 30, "fillRatio": 1}
    for group, key in (("byPair", "BTC_USDT"), ("byExchange", "paper"), ("byType", "market")):
        assert set(body[group]) == {key}
        got = body[group][key]
        assert {k: got[k] for k in want} == want, (group, got)
        assert (got["fees"], got["feesCurrency"]) == (0.2006, "USDT")
        assert got["avgTimeToFillMs"] is not None and got["avgTimeToFillMs"] >= 0
    one = (await api.ok("GET", f"/api/execution/quality?orderId={oid}"))["order"]
    assert (one["slippageBps"], one["touchSlippageBps"], one["feesBps"], one["costBps"]) == (30, 19.98, 10, 40)
    assert [(f["price"], f["slippageBps"], f["touchSlippageBps"], f["feeBps"]) for f in one["fills"]] == [
        (100.1, 10, 0, 10),
        (100.5, 50, 39.96, 10),
    ]
    perf = await api.ok("GET", "/api/performance")
    assert figures(perf["executionQuality"]["byPair"]["BTC_USDT"]) == figures(body["byPair"]["BTC_USDT"])
    assert figures(perf["executionQuality"]["overall"]) == figures(body["overall"])
    await eventually(lambda: asyncio.sleep(0, len(alerts) == 1), what="the SLIPPAGE alert")
    a = alerts[0]
    assert (a.severity, a.order_id, a.pair) == ("warning", oid, "BTC_USDT") and "30.00 bps" in a.message
    # a second order under the threshold: its row lands, and the first order was alerted once only
    await publish_book(api.bus, [("99.90", "5")], [("100.10", "5")])
    second = (await api.place(pair="BTC_USDT", side="buy", type="market", quantity=1))["orderId"]
    await api.until(second, "filled")
    await counted(api.bus, 2)
    assert [x.order_id for x in alerts] == [oid]


async def test_filters_and_their_422s(stack):
    _, api = stack
    await publish_book(api.bus, [("99.90", "5")], [("100.10", "5")])
    await publish_book(api.bus, [("9.99", "50")], [("10.01", "50")], pair="ETH_USDT")
    btc = (await api.place(pair="BTC_USDT", side="buy", quantity=1))["orderId"]
    eth = (await api.place(pair="ETH_USDT", side="sell", quantity=2))["orderId"]
    for oid in (btc, eth):
        await api.until(oid, "filled")
    await counted(api.bus, 2)
    body = await api.ok("GET", "/api/execution/quality?pair=eth_usdt")
    assert set(body["byPair"]) == {"ETH_USDT"} and body["overall"]["orders"] == 1
    # sold 2 at the bid 9.99 against the mid 10.00: 10 bps
    assert body["byPair"]["ETH_USDT"]["avgSlippageBps"] == 10
    assert (await api.ok("GET", "/api/execution/quality?exchange=PAPER"))["overall"]["orders"] == 2
    later = now_ms() + 3_600_000
    empty = await api.ok("GET", f"/api/execution/quality?since={later}")
    assert empty["byPair"] == {} and empty["overall"]["orders"] == 0 and empty["overall"]["avgSlippageBps"] is None
    assert (await api.ok("GET", f"/api/execution/quality?until={later}&since=1"))["overall"]["orders"] == 2
    for query, field in (
        ("since=abc", "since"),
        ("since=-5", "since"),
        ("until=10&since=10", "until"),
        ("pair=BTCUSDT", "pair"),
        ("exchange=nowhere", "exchange"),
        ("orderId=a%20b", "orderId"),
    ):
        problem(await api.call("GET", f"/api/execution/quality?{query}"), 422, field)
    problem(await api.call("GET", "/api/execution/quality?orderId=ORD_20990101_999999"), 404, "orderId")


async def test_a_restart_of_the_ledger_keeps_the_figures_and_an_older_snapshot_rebuilds_them(stack):
    sut, api = stack
    await publish_book(api.bus, [("99.90", "5")], [("100.10", "1"), ("100.50", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=2))["orderId"]
    await api.until(oid, "filled")
    before = await counted(api.bus, 1)
    await sut.stop("portfolio-ledger")  # (a snapshot at stop)
    await sut.start("portfolio-ledger")
    assert await counted(api.bus, 1) == before
    # an upgrade: the snapshot of a version without execution quality -> rebuilt from ORDERS
    await sut.stop("portfolio-ledger")
    store = SnapshotStore(await api.bus.kv(api.bus.subjects.kv_state), "ledger")
    state = json.loads(await store.load() or b"{}")
    assert state.pop("quality")["rows"], "the snapshot holds the rows"
    await store.save(json.dumps(state).encode())
    await sut.start("portfolio-ledger")
    assert await counted(api.bus, 1) == before


def _order(oid: str, status: S, fills: list[FillRef], **kw: Any) -> Order:
    base: dict[str, Any] = dict(
        order_id=oid, client_order_id=f"c-{oid}", pair="BTC_USDT", side="buy", type="market", quantity=D(2),
        status=status, venue="paper", created_at=1_000, updated_at=5_000, fills=fills,
    )  # fmt: skip
    return Order(**(base | kw))


def _ref(fill_id: str, qty: str, price: str, ts: int) -> FillRef:
    return FillRef(fill_id=fill_id, quantity=D(qty), price=D(price), fee=D("0.1"), fee_currency="USDT",
                   liquidity="taker", timestamp=ts)  # fmt: skip


async def test_children_are_not_counted_their_parent_is_with_all_their_fills(make_system, client):
    # the engine's orders, written by hand on ORDERS: a TWAP parent (arrival mid 100) and two slices
    sut = await make_system()
    await sut.stop("order-router")  # (nobody else writes these ids)
    parent = _order("P1", S.ACCEPTED, [], type="twap", arrival_mid=D(100), arrival_bid=D("99.9"),
                    arrival_ask=D("100.1"))  # fmt: skip
    kid = dict(role="slice", parent_order_id="P1", quantity=D(1), venue_order_id="v", arrival_mid=D(120))
    events = [
        ("accepted", parent),
        ("filled", _order("P1-s0", S.FILLED, [_ref("k1", "1", "100.20", 2_000)], **kid)),
        ("filled", _order("P1-s1", S.FILLED, [_ref("k2", "1", "100.40", 3_000)], **kid)),
        ("filled", msgspec.structs.replace(parent, status=S.FILLED, closed_at=3_000)),
    ]
    for version, (name, o) in enumerate(events):
        ev = OrderEvent(event=name, order=msgspec.structs.replace(o, version=version), ts=now_ms())
        await client.js_publish(client.subjects.order_events(o.pair), ev, msg_id=f"{o.order_id}:{version}")
    answer = await counted(client, 1)
    # one order, the parent: average (100.20 + 100.40) / 2 = 100.30 against the parent's arrival 100: 30 bps;
    # filled 2 of 2 at 3000 ms, created at 1000: 2000 ms to fill; fees 0.1 + 0.1
    assert set(answer.by_type) == {"twap"}
    t = answer.by_type["twap"]
    assert (t.orders, t.avg_slippage_bps, t.fill_ratio, t.avg_time_to_fill_ms, t.fees) == (1, 30, 1, 2_000, D("0.2"))
    one = (await quality(client, order_id="P1")).order
    assert one is not None and [f.fill_id for f in one.fills] == ["k1", "k2"]
    assert (await quality(client, order_id="P1-s0")).order is None  # a child is no row of its own
    # the performance figures carry them when asked (GET /api/performance asks; Kelly sizing's query does not)
    perf = await client.request(client.subjects.query("performance"), PerformanceQuery(quality=True), Performance)
    assert perf.execution_quality is not None and perf.execution_quality.by_type["twap"] == t
    plain = await client.request(client.subjects.query("performance"), PerformanceQuery(), Performance)
    assert plain.execution_quality is None


async def test_a_stop_the_router_triggers_is_measured_against_the_book_it_fired_on(make_system, client):
    await make_system()
    await publish_book(client, [("100.00", "5")], [("100.10", "5")])
    await until(client, (await placed(client, "own", "buy", "1")).order_id, S.FILLED)
    sl = await placed(client, "sl-1", "sell", "1", "stop_loss", stop_price="95.00")
    assert (sl.arrival_mid, sl.arrival_bid, sl.arrival_ask) == (D("100.05"), D("100.00"), D("100.10"))
    # it fires on this book (mid 94.95) and sells 0.4 @ 94.90 + 0.6 @ 94.80 = 94.84 on average:
    # 10000 x (94.95 - 94.84) / 94.95 = 11.5850 bps against its arrival - not against 100.05 from before
    await publish_book(client, [("94.90", "0.400"), ("94.80", "5")], [("95.00", "5")])
    o = await until(client, sl.order_id, S.FILLED)
    assert (o.arrival_mid, o.arrival_bid, o.arrival_ask) == (D("94.95"), D("94.90"), D("95.00"))
    await counted(client, 2)
    view = (await quality(client, order_id=sl.order_id)).order
    assert view is not None and view.slippage_bps == D("11.5850")
