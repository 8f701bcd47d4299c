"""The actors on the simplest path, in-process, over a real nats-server.

Each actor has its own NATS connection, exactly as in ``tbx run``; stopping one of them is the same as
its process going down, as far as the others can tell.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import nats.js.errors
import pytest

from actors.base import Actor
from bus.client import Bus, Envelope
from bus.errors import RequestFailed
from config.settings import Settings, load_settings
from schemas.messages import (
    Empty,
    Heartbeat,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    PortfolioSnapshot,
    SignalEvent,
)
from schemas.subjects import Subjects
from tbx.runner import ACTOR_CLASSES
from tests.helpers import eventually

EXAMPLE_REPLAY = Path(__file__).resolve().parents[2] / "examples" / "replay.jsonl"


class System:
    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self.running: dict[str, Actor] = {}

    async def start(self, *names: str) -> None:
        for name in names or tuple(ACTOR_CLASSES):
            bus = await Bus.connect(self.url, name=name, subjects=Subjects(self.settings.BUS_PREFIX))
            await bus.ensure_layout()
            actor = ACTOR_CLASSES[name](self.settings, bus)
            await actor.start()
            self.running[name] = actor

    async def stop(self, *names: str) -> None:
        for name in names or tuple(reversed(self.running)):
            actor = self.running.pop(name, None)
            if actor:
                await actor.stop()


@pytest.fixture
async def system(nats_url, prefix):
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "MARKET_DATA_INTERVAL": "50",
            "POSITION_UPDATE_INTERVAL": "200",
            "PAIRS": "BTC_USDT,ETH_USDT",
        }
    )
    sut = System(nats_url, settings)
    yield sut
    await sut.stop()


def order(coid: str, qty: str = "0.01", side: str = "buy", pair: str = "BTC_USDT") -> OrderRequest:
    return OrderRequest(client_order_id=coid, pair=pair, side=side, quantity=Decimal(qty))  # type: ignore[arg-type]


async def find(client: Bus, coid: str):
    page = await client.request(client.subjects.query("orders"), OrdersQuery(client_order_id=coid), OrdersPage)
    return page.orders[0] if page.orders else None


async def filled(client: Bus, coid: str):
    o = await find(client, coid)
    return o if o is not None and o.status is OrderStatus.FILLED else None


async def portfolio(client: Bus) -> PortfolioSnapshot:
    return await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot)


async def priced(client: Bus) -> None:
    """Wait until the risk-gate has a book (the synthetic feed runs every 50 ms)."""
    await asyncio.sleep(0.2)


async def test_market_order_travels_the_whole_path_and_lands_in_the_books(system, client):
    await system.start()
    await priced(client)
    reply = await client.request(client.subjects.orders_submit, order("c-1", "0.02"), OrderReply)
    assert reply.ok and reply.order is not None
    assert reply.order.order_id.startswith("ORD_") and reply.order.status is OrderStatus.SUBMITTED
    assert reply.risk_validation is not None and reply.risk_validation.passed
    o = await eventually(lambda: filled(client, "c-1"), what="the fill")
    assert o.filled_quantity == Decimal("0.02") and o.fills and o.average_price is not None
    assert o.fees == sum((f.fee for f in o.fills), Decimal(0))
    assert o.fees == (o.total_cost * Decimal("0.001"))  # taker fee 0.1%
    snap = await eventually(lambda: _with_position(client), what="the position")
    pos = snap.positions[0]
    assert pos.pair == "BTC_USDT" and pos.side == "long" and pos.quantity == Decimal("0.02")
    assert pos.average_price == o.average_price
    cash = next(b for b in snap.balances if b.currency == "USDT").total
    assert cash == Decimal(50000) - o.total_cost - o.fees


async def _with_position(client: Bus):
    snap = await portfolio(client)
    return snap if snap.positions else None


async def test_same_client_order_id_never_makes_a_second_order(system, client):
    await system.start()
    await priced(client)
    first = await client.request(client.subjects.orders_submit, order("dup-1"), OrderReply)
    again = await client.request(client.subjects.orders_submit, order("dup-1"), OrderReply)
    assert first.order and again.order and first.order.order_id == again.order.order_id
    await eventually(lambda: filled(client, "dup-1"), what="the fill")
    await asyncio.sleep(0.3)
    page = await client.request(client.subjects.query("orders"), OrdersQuery(), OrdersPage)
    assert len(page.orders) == 1
    snap = await portfolio(client)
    assert snap.fills_applied == len(page.orders[0].fills)


async def test_denials_name_the_field_and_reason(system, client):
    await system.start()
    await priced(client)
    r = await client.request(client.subjects.orders_submit, order("d-1", pair="DOGE_USDT"), OrderReply)
    assert not r.ok and r.code == "UNKNOWN_PAIR" and r.field == "pair" and "DOGE_USDT" in (r.detail or "")
    r = await client.request(client.subjects.orders_submit, order("d-2", qty="0"), OrderReply)
    assert not r.ok and r.code == "INVALID_QUANTITY" and r.field == "quantity"
    r = await client.request(client.subjects.orders_submit, order("bad id with spaces"), OrderReply)
    assert not r.ok and r.field == "clientOrderId"


async def test_an_order_approved_while_the_router_is_down_is_routed_when_it_is_back(system, client):
    await system.start("md-feed", "portfolio-ledger", "fill-tracker", "risk-gate")
    await priced(client)
    with pytest.raises(RequestFailed) as err:  # approved and persisted, but nobody routes it yet
        await client.request(client.subjects.orders_submit, order("late-1"), OrderReply, timeout=1.0)
    assert err.value.timeout
    await system.start("order-router")
    o = await eventually(lambda: filled(client, "late-1"), what="the order routed after the router came back")
    assert o.filled_quantity == Decimal("0.01")


async def test_router_restart_keeps_its_orders_and_never_reuses_an_id(system, client):
    await system.start()
    await priced(client)
    r1 = await client.request(client.subjects.orders_submit, order("r-1"), OrderReply)
    await eventually(lambda: filled(client, "r-1"), what="first fill")
    await system.stop("order-router")
    await system.start("order-router")
    o1 = await find(client, "r-1")
    assert o1 is not None and o1.status is OrderStatus.FILLED and r1.order and o1.order_id == r1.order.order_id
    r2 = await client.request(client.subjects.orders_submit, order("r-2"), OrderReply)
    assert r2.order and r2.order.order_id != o1.order_id
    await eventually(lambda: filled(client, "r-2"), what="second fill")


async def test_a_signal_published_while_intake_is_down_becomes_a_fill_when_it_is_back(system, client):
    await system.start("md-feed", "portfolio-ledger", "fill-tracker", "order-router", "risk-gate")
    await priced(client)
    events: list[SignalEvent] = []

    async def on_event(ev: SignalEvent, env: Envelope) -> None:
        events.append(ev)

    await client.subscribe(client.subjects.signal_events(), SignalEvent, on_event)
    raw = (
        b'{"pair": "ETH_USDT", "signal": "BUY", "confidence": 0.82, "source": "ml_prediction", '
        b'"strategy": "ensemble_model", "signalId": "SIG-T-1", "riskParameters": {"maxRiskPercent": 0.01}}'
    )
    # plain publishes: nobody answers a reply subject while signal-intake is down, the stream keeps them
    await client.nc.publish(client.subjects.signals_submit, raw)
    await client.nc.publish(
        client.subjects.signals_submit, b'{"pair": "ETH_USDT", "signal": "HOLD", "confidence": 0.5, "source": "core"}'
    )
    await client.nc.flush()
    await system.start("signal-intake")
    o = await eventually(lambda: filled(client, "SIG-T-1-1"), what="the signal's order filled")
    assert o.signal_id == "SIG-T-1" and o.side == "buy" and o.source == "signal:ml_prediction"
    # 1% of 50,000 at the mid, rounded down to 1e-8
    assert Decimal(450) < o.quantity * o.average_price < Decimal(550)
    await eventually(lambda: asyncio.sleep(0, len(events) >= 2), what="two signal events")
    statuses = {e.signal_id: e.status for e in events}
    assert statuses["SIG-T-1"] == "executed"
    assert "filtered" in statuses.values()


async def test_every_actor_beats_on_its_health_subject(system, client):
    beats: dict[str, Heartbeat] = {}

    async def on_beat(hb: Heartbeat, env: Envelope) -> None:
        beats[hb.actor] = hb

    await client.subscribe(client.subjects.health(), Heartbeat, on_beat)
    await system.start()
    await eventually(lambda: asyncio.sleep(0, set(beats) == set(ACTOR_CLASSES)), timeout=5, what="all heartbeats")
    first = dict(beats)
    await asyncio.sleep(1.3)
    assert all(beats[a].ts > first[a].ts for a in ACTOR_CLASSES)
    assert beats["order-router"].stats["ordersProcessed"] == 0


async def test_a_malformed_signal_is_dead_lettered_and_intake_goes_on(system, client):
    from schemas.messages import DeadLetter

    await system.start()
    await priced(client)
    letters: list[DeadLetter] = []

    async def on_letter(d: DeadLetter, env: Envelope) -> None:
        letters.append(d)

    await client.subscribe(client.subjects.deadletter(">"), DeadLetter, on_letter)
    with pytest.raises(nats.js.errors.APIError, match="confidence"):  # a JetStream publisher hears why at once
        await client.js.publish(client.subjects.signals_submit, b'{"pair": "ETH_USDT", "signal": "BUY"}')
    await client.js.publish(
        client.subjects.signals_submit,
        b'{"pair": "ETH_USDT", "signal": "BUY", '
        b'"confidence": 0.7, "source": "t", "signalId": "after-bad", "quantity": "0.1"}',
    )
    await eventually(lambda: filled(client, "after-bad-1"), what="the good signal after the bad one")
    assert len(letters) == 1 and letters[0].actor == "signal-intake"
    assert letters[0].subject == client.subjects.signals_submit and "confidence" in letters[0].reason


async def test_a_reused_client_order_id_with_other_content_is_refused(system, client):
    await system.start()
    await priced(client)
    first = await client.request(client.subjects.orders_submit, order("same-id", "0.01"), OrderReply)
    other = await client.request(client.subjects.orders_submit, order("same-id", "0.02"), OrderReply)
    assert first.ok and not other.ok
    assert other.code == "DUPLICATE_CLIENT_ORDER_ID" and other.field == "clientOrderId"
    assert first.order and first.order.order_id in (other.detail or "")


async def test_router_sends_the_venue_trades_again_when_it_died_before_reporting_them(system, client):
    """The router recorded the venue's answer but died before the execution reports were stored:
    the reconcile at start asks the venue by client order id and reports the trades."""
    import msgspec

    from actors.venues.paper import _key
    from domain.matching import SimOrder, SimTrade
    from schemas.messages import Order, OrderEvent

    await system.start("portfolio-ledger", "fill-tracker")
    coid = "lost-reports-1"
    trades = [
        SimTrade(
            trade_id="PV-1-1",
            quantity=Decimal("0.3"),
            price=Decimal("60000"),
            fee=Decimal("18"),
            fee_currency="USDT",
            liquidity="taker",
            ts=1,
        ),
        SimTrade(
            trade_id="PV-1-2",
            quantity=Decimal("0.2"),
            price=Decimal("60010"),
            fee=Decimal("12.002"),
            fee_currency="USDT",
            liquidity="taker",
            ts=1,
        ),
    ]
    kv = await client.kv(client.subjects.kv_paper)
    sim = SimOrder(
        client_order_id=coid,
        venue_order_id="PV-1",
        pair="BTC_USDT",
        side="buy",
        type="market",
        quantity=Decimal("0.5"),
        status="closed",
        filled=Decimal("0.5"),
        cost=Decimal("30002"),
        trades=trades,
    )
    await kv.put(_key(coid), msgspec.json.encode(sim))
    recorded = Order(
        order_id="ORD_20260101_000001",
        client_order_id=coid,
        pair="BTC_USDT",
        side="buy",
        type="market",
        quantity=Decimal("0.5"),
        status=OrderStatus.ACCEPTED,
        venue_order_id="PV-1",
        venue_status="closed",
        venue_filled=Decimal("0.5"),
        version=2,
        created_at=1,
        updated_at=1,
    )
    await client.js_publish(
        client.subjects.order_events("BTC_USDT"), OrderEvent(event="accepted", order=recorded, ts=1)
    )
    await system.start("order-router")
    o = await eventually(lambda: filled(client, coid), what="the order filled from the re-sent reports")
    assert [f.fill_id for f in o.fills] == ["paper:BTC_USDT:PV-1-1", "paper:BTC_USDT:PV-1-2"]
    assert o.average_price == (Decimal("0.3") * 60000 + Decimal("0.2") * 60010) / Decimal("0.5")
    snap = await portfolio(client)
    assert snap.fills_applied == 2 and snap.positions[0].quantity == Decimal("0.5")


async def test_two_close_signals_for_one_position_make_one_order(system, client):
    await system.start()
    await priced(client)
    await client.request(client.subjects.orders_submit, order("open-long", "0.5", pair="ETH_USDT"), OrderReply)
    await eventually(lambda: filled(client, "open-long"), what="the long")
    await eventually(lambda: _with_position(client), what="the position booked")
    for source in ("core", "ml"):
        await client.js.publish(
            client.subjects.signals_submit,
            f'{{"pair": "ETH_USDT", "signal": "CLOSE", "confidence": 0.9, "source": "{source}"}}'.encode(),
        )

    async def flat():
        snap = await portfolio(client)
        return snap if not snap.positions and snap.fills_applied >= 2 else None

    await eventually(flat, what="the position closed")
    await asyncio.sleep(0.5)
    snap = await portfolio(client)
    assert snap.positions == []  # flat, not short
    page = await client.request(client.subjects.query("orders"), OrdersQuery(pair="ETH_USDT"), OrdersPage)
    assert len(page.orders) == 2  # the long and one close


async def test_an_unusable_book_is_dead_lettered_and_never_used(nats_url, prefix, client):
    from schemas.messages import Book, DeadLetter

    settings = load_settings({"NATS_URL": nats_url, "BUS_PREFIX": prefix, "MARKET_DATA": "none", "PAIRS": "BTC_USDT"})
    sut = System(nats_url, settings)
    await sut.start("order-router", "risk-gate")  # the router: asked whether a denied client order id names an order
    letters: list[DeadLetter] = []

    async def on_letter(d: DeadLetter, env: Envelope) -> None:
        letters.append(d)

    await client.subscribe(client.subjects.deadletter(">"), DeadLetter, on_letter)
    try:
        crossed = Book(pair="BTC_USDT", bids=[(Decimal(101), Decimal(1))], asks=[(Decimal(100), Decimal(1))], ts=1)
        await client.publish(client.subjects.book("BTC_USDT"), crossed)
        await eventually(lambda: asyncio.sleep(0, bool(letters)), what="the dead letter")
        assert "crossed book" in letters[0].reason
        r = await client.request(client.subjects.orders_submit, order("no-book"), OrderReply, timeout=5)
        assert not r.ok and r.code == "NO_MARKET_DATA"
    finally:
        await sut.stop()


async def test_replay_file_publishes_books_and_trades_in_order(nats_url, prefix, client, tmp_path):
    from schemas.messages import Book, DeadLetter, Trade

    path = tmp_path / "replay.jsonl"
    path.write_text(EXAMPLE_REPLAY.read_text() + "not json\n")
    books: list[Book] = []
    trades: list[Trade] = []
    letters: list[DeadLetter] = []

    async def on_book(b: Book, env: Envelope) -> None:
        books.append(b)

    async def on_trade(t: Trade, env: Envelope) -> None:
        trades.append(t)

    async def on_letter(d: DeadLetter, env: Envelope) -> None:
        letters.append(d)

    await client.subscribe(client.subjects.book(), Book, on_book)
    await client.subscribe(client.subjects.trades(), Trade, on_trade)
    await client.subscribe(client.subjects.deadletter(">"), DeadLetter, on_letter)
    settings = load_settings(
        {
            "NATS_URL": nats_url,
            "BUS_PREFIX": prefix,
            "MARKET_DATA": f"replay:{path}",
            "PAIRS": "BTC_USDT,ETH_USDT",
            "MARKET_DATA_INTERVAL": "100",
        }
    )
    sut = System(nats_url, settings)
    await sut.start("md-feed")
    try:
        await eventually(lambda: asyncio.sleep(0, len(books) >= 5 and letters), timeout=10, what="the replay")
    finally:
        await sut.stop()
    assert [b.ts for b in books[:4]] == [1767225600000, 1767225600500, 1767225600600, 1767225601000]
    assert [(t.price, t.side) for t in trades] == [(Decimal("60010.00"), "buy"), (Decimal("60000.00"), "sell")]
    assert books[4].pair in ("BTC_USDT", "ETH_USDT") and books[4].ts > 1767225601000  # the last books again
    assert "line 8" in letters[0].reason
