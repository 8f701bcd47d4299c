"""signal-intake end to end over a real nats-server: signals in (plain NATS or HTTP), results and orders out.

MARKET_DATA=none: the only books are the ones each test publishes. BTC_USDT trades on a 0.01 tick and a
0.001 step (test_order_types.MARKETS); the book used by most tests has the mid 123.45, so the default sizing
(fixed_notional, RISK_PER_TRADE 0.02 of INITIAL_BALANCE 50000) is 1000 / 123.45 = 8.1004... -> 8.100.
The ML and risk services are small aiohttp servers started by the tests on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN
from decimal import Decimal as D
from typing import Any, TypeVar

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.aio.msg import Msg as NatsMsg

from bus.client import Bus
from bus.codec import decode
from bus.embedded import free_port
from gateway.app import Gateway
from schemas.messages import (
    DeadLetter,
    Order,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    RiskAlert,
    SignalEvent,
    SignalReply,
    SignalsPage,
    SignalsQuery,
)
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_gateway_orders import PROBLEM_CT, assert_problem, num
from tests.integration.test_order_types import MARKETS, position, publish_book, settings_for, until

S = OrderStatus
T = TypeVar("T")
PAIR = "BTC_USDT"
BID, ASK = "123.40", "123.50"
MID = D("123.45")
STEP, TICK = D("0.001"), D("0.01")
EQUITY = D(50000)
# what most tests run with: no default bracket, no dedupe window (each test turns on what it is about)
BASE = {"STOP_LOSS_ENABLED": "false", "SIGNAL_DEDUPE_WINDOW": "0"}
SYSTEM_DEFAULTS = BASE  # for make_system (tests/integration/conftest.py)


def down(x: D, step: D = STEP) -> D:
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


NOTIONAL_QTY = down(EQUITY * D("0.02") / MID)  # 8.100


def signal(
    kind: str = "BUY", confidence: float | str = 0.8, source: str = "bot", pair: str = PAIR, **kw: Any
) -> dict[str, Any]:
    return {"pair": pair, "signal": kind, "confidence": confidence, "source": source, "strategy": "t", **kw}


def raw(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


async def ask(client: Bus, body: dict[str, Any] | bytes, timeout: float = 10) -> SignalReply:
    """Send a signal with a reply subject (a plain core request): signal-intake answers with its result."""
    msg = await client.nc.request(client.subjects.signals_submit, raw(body), timeout=timeout)
    return decode(msg.data, SignalReply)


def result(r: SignalReply) -> dict[str, Any]:
    """The SignalEvent part of a reply (without where it was stored)."""
    return {f: getattr(r, f) for f in SignalEvent.__struct_fields__}


async def orders(client: Bus, **q: Any) -> list[Order]:
    page = await client.request(client.subjects.query("orders"), OrdersQuery(**q), OrdersPage)
    return page.orders


async def book(client: Bus, pair: str = PAIR, bid: str = BID, ask_: str = ASK) -> None:
    await publish_book(client, [(bid, "1000")], [(ask_, "1000")], pair=pair)


@dataclass
class Collected:
    """Everything seen on a subject (a plain core subscription: every publish, even one a stream dedupes)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    sub: Any = None

    def where(self, **match: Any) -> list[dict[str, Any]]:
        return [i for i in self.items if all(i.get(k) == v for k, v in match.items())]

    def typed(self, type_: type[T], **match: Any) -> list[T]:
        """The messages that match, decoded as the bus contract's ``type_``."""
        return [
            decode(r, type_)
            for r, i in zip(self.raws, self.items, strict=True)
            if all(i.get(k) == v for k, v in match.items())
        ]

    async def drained(self) -> None:
        """Every message the connection has read is handed to the list."""
        await eventually(lambda: asyncio.sleep(0, self.sub.pending_msgs == 0), what="the subscription drained")


async def collect(client: Bus, subject: str) -> Collected:
    c = Collected()

    async def cb(msg: NatsMsg) -> None:
        c.raws.append(msg.data)
        c.items.append(json.loads(msg.data))

    c.sub = await client.nc.subscribe(subject, cb=cb)
    await client.nc.flush()
    return c


# -- a small HTTP service (the ML or the risk service) -------------------------------------------------------
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class Service:
    url: str
    calls: dict[str, list[dict[str, Any]]]


@contextlib.asynccontextmanager
async def http_service(routes: dict[str, Handler]) -> AsyncIterator[Service]:
    calls: dict[str, list[dict[str, Any]]] = {path: [] for path in routes}
    app = web.Application()

    def route(path: str, fn: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = json.loads(await request.read(), parse_float=D)
            calls[path].append(body)
            return web.json_response(await fn(body))

        return handle

    for path, fn in routes.items():
        app.router.add_post(path, route(path, fn))
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Service(f"http://127.0.0.1:{port}", calls)
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens there


# == 1. a plain NATS client ===================================================================================
async def test_a_raw_json_signal_from_plain_nats_gets_its_result_as_the_reply_and_its_order_fills(
    make_system, client, nats_url, prefix
):
    await make_system()
    await book(client)
    nc = await nats.connect(nats_url, name="outsider")
    try:
        body = b'{"pair": "BTC_USDT", "signal": "BUY", "confidence": 0.8, "source": "outsider", "signalId": "RAW-1"}'
        msg = await nc.request(f"{prefix}.signals.submit", body, timeout=10)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["signalId"] == "RAW-1" and reply["status"] == "executed" and reply["reason"] is None
    assert reply["pair"] == PAIR and reply["signal"] == "BUY" and reply["source"] == "outsider"
    assert reply["stream"] == client.subjects.stream_name("SIGNALS") and reply["seq"] >= 1
    [o] = reply["orders"]
    assert o["orderId"].startswith("ORD_") and (o["side"], o["type"]) == ("buy", "market")
    sizing = reply["positionSizing"]
    assert sizing["method"] == "fixed_notional" and sizing["decidedBy"] == "local"
    assert D(sizing["recommendedSize"]) == NOTIONAL_QTY == D(o["quantity"])
    filled = await until(client, o["orderId"], S.FILLED)
    assert filled.client_order_id == "RAW-1-1" and filled.signal_id == "RAW-1" and filled.source == "signal:outsider"
    assert filled.filled_quantity == NOTIONAL_QTY


# == 2. exactly one result per signal ==========================================================================
async def test_the_same_signal_id_twice_gets_one_result_one_event_and_one_order(make_system, client):
    await make_system()
    await book(client)
    events = await collect(client, client.subjects.signal_events())
    body = signal(signalId="ONCE-1")
    first = await ask(client, body)
    again = await ask(client, body)  # the very same bytes
    other_bytes = await ask(client, signal(confidence=0.95, signalId="ONCE-1"))  # same id, other content
    assert first.status == "executed" and first.orders
    assert result(again) == result(first) and result(other_bytes) == result(first)
    # a later signal's event as a barrier: signal-intake publishes in order, so a second event of ONCE-1
    # would have arrived before it
    await ask(client, signal("HOLD", signalId="BARRIER"))
    await eventually(lambda: asyncio.sleep(0, events.where(signalId="BARRIER")), what="the barrier's event")
    await events.drained()
    assert len(events.where(signalId="ONCE-1")) == 1
    assert events.where(signalId="ONCE-1")[0]["orders"][0]["orderId"] == first.orders[0].order_id
    assert [o.order_id for o in await orders(client, client_order_id="ONCE-1-1")] == [first.orders[0].order_id]
    assert len(await orders(client)) == 1


# == 3. dedupe window ==========================================================================================
async def test_a_repeat_of_an_executed_signal_within_the_dedupe_window_is_filtered_naming_the_first(
    make_system, client
):
    await make_system(SIGNAL_DEDUPE_WINDOW="60000")
    await book(client)
    first = await ask(client, signal(confidence=0.8, source="bot"))
    assert first.status == "executed" and first.signal_id.startswith("SIG_")  # named by where it was stored
    repeat = await ask(client, signal(confidence=0.75, source="bot"))
    assert repeat.status == "filtered" and repeat.signal_id != first.signal_id
    assert first.signal_id in (repeat.reason or "") and "60000 ms" in (repeat.reason or "")
    assert repeat.orders == []
    other = await ask(client, signal(confidence=0.75, source="other-bot"))
    assert other.status == "executed"
    sell = await ask(client, signal("SELL", confidence=0.75, source="bot"))  # another signal: not a repeat
    assert sell.status == "executed"
    assert len(await orders(client)) == 3


async def test_a_byte_identical_repeat_without_id_gets_its_own_result_as_the_reply(make_system, client):
    await make_system(SIGNAL_DEDUPE_WINDOW="60000")
    await book(client)
    events = await collect(client, client.subjects.signal_events())
    body = signal(confidence=0.8, source="bot")
    first = await ask(client, body)
    repeat = await ask(client, body)  # a bot sending the same JSON again: a signal of its own (no id)
    assert first.status == "executed"
    # the stream stored it and signal-intake decided it correctly: its own id, filtered, naming the first ...
    await eventually(lambda: asyncio.sleep(0, len(events.items) >= 2), what="both results")
    own = next(e for e in events.items if e["signalId"] != first.signal_id)
    assert own["status"] == "filtered" and first.signal_id in own["reason"]
    assert len(await orders(client)) == 1
    # ... but the one who asked must get that result as the reply, not the first signal's
    assert (repeat.signal_id, repeat.status) == (own["signalId"], "filtered")


async def test_identical_bytes_published_plainly_then_as_a_request_each_get_their_own_result(make_system, client):
    """The k-th publish of some bytes is paired with the k-th stored copy of them: a fire-and-forget publish
    is never answered, and a request with the same bytes right after gets its own result, not the first's."""
    await make_system(SIGNAL_DEDUPE_WINDOW="0")
    await book(client)
    events = await collect(client, client.subjects.signal_events())
    body = raw(signal(confidence=0.8, source="twin"))
    await client.nc.publish(client.subjects.signals_submit, body)  # no reply subject
    a, b = await asyncio.gather(ask(client, body), ask(client, body))  # two identical requests in flight
    await eventually(lambda: asyncio.sleep(0, len(events.items) >= 3), what="three results")
    ids = [e["signalId"] for e in events.items]
    assert len(set(ids)) == 3  # three signals, three results
    assert a.signal_id != b.signal_id and {a.signal_id, b.signal_id} == set(ids[1:])
    assert a.status == b.status == "executed" and a.orders[0].order_id != b.orders[0].order_id


async def test_a_publish_heard_but_not_stored_takes_no_later_copys_answer_every_retry_is_answered(make_system, client):
    """A publish signal-intake hears but the stream does not store (here: dropped by the stream's duplicate
    window, as its Nats-Msg-Id is an earlier message's; in the field: sent while the stream had no leader),
    then retries of the same signal id: the k-th publish was paired with the k-th stored copy, so every retry
    got the previous attempt's inbox and was never answered. Paired by the signal id, every inbox is."""
    await make_system()
    subject = client.subjects.signals_submit
    # an earlier message stored under the Nats-Msg-Id "taken"
    first = await client.nc.request(
        subject, raw(signal("HOLD", signalId="EARLIER")), timeout=10, headers={"Nats-Msg-Id": "taken"}
    )
    assert decode(first.data, SignalReply).signal_id == "EARLIER"
    body = raw(signal("HOLD", signalId="RETRIED-1"))
    # the lost attempt: heard by signal-intake, dropped by the stream (a duplicate of "taken")
    lost = asyncio.create_task(client.nc.request(subject, body, timeout=20, headers={"Nats-Msg-Id": "taken"}))
    await asyncio.sleep(0.3)
    retry = await ask(client, body)  # stored: answered with its result, not left to the lost attempt's inbox
    assert (retry.signal_id, retry.status) == ("RETRIED-1", "filtered")
    again = await ask(client, body)  # a retry of a signal that has its result: answered at once
    assert result(again) == result(retry)
    answered_lost = decode((await lost).data, SignalReply)  # the lost attempt's inbox gets the result too
    assert result(answered_lost) == result(retry)
    page = await client.request(client.subjects.query("signals"), SignalsQuery(signal_id="RETRIED-1"), SignalsPage)
    assert len(page.signals) == 1  # one signal, one result


async def test_a_signal_without_id_retried_under_one_nats_msg_id_is_answered_every_time(make_system, client):
    """No signalId: the publish's Nats-Msg-Id pairs it (the stream stores one copy per msg id), so a retry
    dropped as a duplicate is answered with the stored copy's result."""
    await make_system()
    subject = client.subjects.signals_submit
    body = raw(signal("HOLD", source="no-id"))
    answers = [
        decode((await client.nc.request(subject, body, timeout=10, headers={"Nats-Msg-Id": "pub-7"})).data, SignalReply)
        for _ in range(3)
    ]
    assert answers[0].status == "filtered" and answers[0].signal_id.startswith("SIG_")
    assert all(result(a) == result(answers[0]) for a in answers)


async def test_with_dedupe_window_zero_a_repeat_executes(make_system, client):
    await make_system(SIGNAL_DEDUPE_WINDOW="0")
    await book(client)
    first = await ask(client, signal(confidence=0.8, source="bot"))
    second = await ask(client, signal(confidence=0.75, source="bot"))
    assert (first.status, second.status) == ("executed", "executed")
    assert first.orders[0].order_id != second.orders[0].order_id
    assert len(await orders(client)) == 2


# == 4. minimum confidence =====================================================================================
async def test_confidence_below_the_minimum_is_filtered_per_source_and_exactly_the_minimum_passes(make_system, client):
    await make_system(MIN_CONFIDENCE="0.6", SOURCE_MIN_CONFIDENCE='{"picky": "0.9"}')
    await book(client)
    low = await ask(client, signal(confidence=0.59, source="bot"))
    assert low.status == "filtered" and low.reason == "confidence 0.59 is below the minimum 0.6 for bot"
    picky = await ask(client, signal(confidence=0.85, source="picky"))
    assert picky.status == "filtered" and picky.reason == "confidence 0.85 is below the minimum 0.9 for picky"
    relaxed = await ask(client, signal(confidence=0.85, source="relaxed"))
    assert relaxed.status == "executed"
    at_min = await ask(client, signal(confidence=0.6, source="bot"))
    assert at_min.status == "executed"
    picky_at_min = await ask(client, signal(confidence=0.9, source="picky"))
    assert picky_at_min.status == "executed"
    assert len(await orders(client)) == 3


# == 5. HOLD and CLOSE =========================================================================================
async def test_hold_does_nothing_and_close_closes_the_whole_position_or_is_filtered_without_one(make_system, client):
    await make_system()
    await book(client)
    hold = await ask(client, signal("HOLD"))
    assert hold.status == "filtered" and hold.reason == "HOLD does nothing" and hold.orders == []
    nothing = await ask(client, signal("CLOSE"))
    assert nothing.status == "filtered" and nothing.reason == f"no open position in {PAIR}"
    buy = await ask(client, signal(quantity="2.5", signalId="OPEN-1"))
    assert buy.status == "executed" and buy.position_sizing and buy.position_sizing.method == "fixed_quantity"
    await until(client, buy.orders[0].order_id, S.FILLED)
    await eventually(lambda: _equals(position(client), D("2.5")), what="the long booked")
    close = await ask(client, signal("CLOSE", source="exit-bot"))
    assert close.status == "executed" and close.position_sizing and close.position_sizing.method == "close"
    [o] = close.orders
    assert (o.side, o.type, o.quantity) == ("sell", "market", D("2.5"))
    closing = await until(client, o.order_id, S.FILLED)
    assert closing.reduce_only and closing.signal_id == close.signal_id and closing.source == "signal:exit-bot"
    await eventually(lambda: _equals(position(client), D(0)), what="flat")
    assert len(await orders(client)) == 2


async def _equals(coro: Awaitable[D], value: D) -> bool | None:
    return (await coro) == value or None


# == 6. invalid input ==========================================================================================
async def test_invalid_signals_are_rejected_and_malformed_json_gets_a_rejected_reply_and_a_dead_letter(
    make_system, client
):
    await make_system()
    await book(client)
    letters = await collect(client, client.subjects.deadletter(">"))
    too_sure = await ask(client, signal(confidence=1.5))
    assert too_sure.status == "rejected" and too_sure.reason == "confidence must be within 0..1, got 1.5"
    untraded = await ask(client, signal(pair="DOGE_USDT"))
    assert untraded.status == "rejected" and untraded.reason == "pair DOGE_USDT is not traded here"
    msg = await client.nc.request(client.subjects.signals_submit, b'{"pair": "BTC_USDT", "signal": ', timeout=5)
    malformed = decode(msg.data, SignalReply)  # one result per signal, even one that does not decode
    assert malformed.status == "rejected" and "malformed JSON" in (malformed.reason or "") and malformed.signal_id
    await eventually(lambda: asyncio.sleep(0, letters.items), what="the dead letter")
    [letter] = letters.typed(DeadLetter)
    assert letter.actor == "signal-intake" and letter.subject == client.subjects.signals_submit
    assert "malformed JSON" in letter.reason and letter.payload == '{"pair": "BTC_USDT", "signal": '
    assert (await ask(client, signal())).status == "executed"  # and intake goes on
    # a JetStream publisher reads the result as its publish ack (the stream itself does not answer)
    ack = await client.js.publish(client.subjects.signals_submit, raw(signal("HOLD")))
    assert ack.stream == client.subjects.stream_name("SIGNALS") and ack.seq >= 1
    assert len(await orders(client)) == 1


# == 7. aggregation ============================================================================================
async def test_aggregation_window_decides_by_weights(make_system, client):
    await make_system(SIGNAL_AGGREGATION_WINDOW="400", SIGNAL_WEIGHTS='{"a": "3", "b": "1"}', MIN_CONFIDENCE="0.5")
    await book(client)

    # equal weight and confidence, opposite signals: nothing happens
    c, d = await asyncio.gather(
        ask(client, signal("BUY", 0.8, "c", signalId="AG-C")), ask(client, signal("SELL", 0.8, "d", signalId="AG-D"))
    )
    for r in (c, d):
        assert r.status == "filtered" and "cancel out" in (r.reason or "") and r.orders == []
        assert set(r.aggregated or []) == {"AG-C", "AG-D"}
    assert await orders(client) == []

    # weighted majority: net = (3 x 0.9 - 1 x 0.5) / 4 = 0.55 BUY
    a, b = await asyncio.gather(
        ask(client, signal("BUY", 0.9, "a", signalId="AG-A")), ask(client, signal("SELL", 0.5, "b", signalId="AG-B"))
    )
    assert a.status == "executed" and a.adjusted_confidence == D("0.55") and len(a.orders) == 1
    assert b.status == "filtered" and "outvoted" in (b.reason or "") and b.orders == []
    assert set(a.aggregated or []) == set(b.aggregated or []) == {"AG-A", "AG-B"}
    [o] = await orders(client)
    assert o.order_id == a.orders[0].order_id and o.side == "buy"
    assert o.client_order_id == f"{(a.aggregated or [])[0]}-1"  # named after the window's first signal

    # the aggregate below MIN_CONFIDENCE: net = (3 x 0.7 - 1 x 0.9) / 4 = 0.3 BUY < 0.5
    a2, b2 = await asyncio.gather(
        ask(client, signal("BUY", 0.7, "a", pair="ETH_USDT", signalId="AG-A2")),
        ask(client, signal("SELL", 0.9, "b", pair="ETH_USDT", signalId="AG-B2")),
    )
    assert a2.status == "filtered" and "below MIN_CONFIDENCE 0.5" in (a2.reason or "")
    assert a2.adjusted_confidence == D("0.3")
    assert b2.status == "filtered" and "outvoted" in (b2.reason or "")
    assert set(a2.aggregated or []) == {"AG-A2", "AG-B2"}
    assert len(await orders(client)) == 1


# == 8. restart inside a window ================================================================================
async def test_a_signal_held_in_a_window_when_intake_stops_gets_exactly_one_result_after_restart(make_system, client):
    sut = await make_system(SIGNAL_AGGREGATION_WINDOW="1500")
    await book(client)
    events = await collect(client, client.subjects.signal_events())
    await client.nc.publish(client.subjects.signals_submit, raw(signal(signalId="HELD-1")))
    await client.nc.flush()
    stream = client.subjects.stream_name("SIGNALS")

    async def taken() -> bool:  # delivered and acknowledged: held in the window
        info = await client.js.consumer_info(stream, "signal-intake")
        return info.ack_floor.stream_seq >= 1 and info.num_ack_pending == 0

    await eventually(taken, what="the signal taken into the window")
    await sut.stop("signal-intake")
    assert events.where(signalId="HELD-1") == []  # the window had not closed yet
    await sut.start("signal-intake")
    await book(client)  # books are not stored: the restarted intake hears the next one
    await eventually(lambda: asyncio.sleep(0, events.where(signalId="HELD-1")), what="the held signal's result")
    [ev] = events.where(signalId="HELD-1")
    assert ev["status"] == "executed"
    await ask(client, signal("HOLD", signalId="BARRIER"))  # later events come after any second one
    await eventually(lambda: asyncio.sleep(0, events.where(signalId="BARRIER")), what="the barrier's event")
    await events.drained()
    assert len(events.where(signalId="HELD-1")) == 1
    [o] = await orders(client)
    assert o.client_order_id == "HELD-1-1" and o.order_id == ev["orders"][0]["orderId"]


# == 9. the ML service =========================================================================================
def opposite(s: str) -> str:
    return {"BUY": "SELL", "SELL": "BUY"}[s]


async def test_ml_service_adjusts_the_confidence_and_a_slow_one_leaves_it(make_system, client):
    async def predict(q: dict[str, Any]) -> dict[str, Any]:
        if q["strategy"] == "slow":
            await asyncio.sleep(1.0)  # longer than ML_SERVICE_TIMEOUT
        kind = opposite(q["signal"]) if q["strategy"] == "disagree" else q["signal"]
        return {"signal": kind, "confidence": 0.9}

    async with http_service({"/api/predict": predict}) as ml:
        await make_system(
            ML_SERVICE_URL=ml.url,
            ML_SERVICE_TIMEOUT="200",
            ML_WEIGHT="0.5",
            MIN_CONFIDENCE="0.6",
            ML_SIGNAL_SOURCE="model-x",
        )
        await book(client)
        calls = ml.calls["/api/predict"]

        agree = await ask(client, signal(confidence=0.7, strategy="agree"))
        # c' = (1 - w) c + w p = 0.5 x 0.7 + 0.5 x 0.9
        assert agree.status == "executed" and agree.adjusted_confidence == D("0.80") and agree.confidence == D("0.7")
        assert any("ML service predicts BUY at 0.9" in n for n in agree.notes)
        q = calls[-1]
        assert (q["pair"], q["signal"], q["source"], q["strategy"]) == (PAIR, "BUY", "bot", "agree")
        assert q["confidence"] == D("0.7") and q["price"] == MID  # JSON numbers, the mid as the price

        disagree = await ask(client, signal(confidence=0.7, strategy="disagree"))
        # s = 1 - 0.9 = 0.1: 0.5 x 0.7 + 0.5 x 0.1 = 0.40
        assert disagree.status == "filtered" and disagree.adjusted_confidence == D("0.40")
        assert disagree.reason == "confidence 0.40 is below the minimum 0.6 for bot"

        slow = await ask(client, signal(confidence=0.7, strategy="slow"))
        assert slow.status == "executed" and slow.adjusted_confidence is None and slow.confidence == D("0.7")
        assert any("ML service unavailable" in n and "200 ms" in n for n in slow.notes), slow.notes

        before = len(calls)
        own = await ask(client, signal(confidence=0.7, source="model-x", strategy="agree"))
        assert own.status == "executed" and own.adjusted_confidence is None and own.notes == []
        assert len(calls) == before  # the ML service's own signals are not scored by it again
        assert len(await orders(client)) == 3


async def test_ml_service_down_leaves_the_confidence_and_alerts_once(make_system, client):
    alerts = await collect(client, client.subjects.risk_events)
    await make_system(ML_SERVICE_URL=closed_port_url(), ML_SERVICE_TIMEOUT="200")
    await book(client)
    for i in range(3):
        r = await ask(client, signal(confidence=0.7, source=f"bot{i}"))
        assert r.status == "executed" and r.adjusted_confidence is None and r.confidence == D("0.7")
        assert any("ML service unavailable" in n for n in r.notes), r.notes
    await eventually(lambda: asyncio.sleep(0, alerts.where(code="SERVICE_DOWN")), what="the SERVICE_DOWN alert")
    await alerts.drained()  # stored before the results were sent: every alert is in by now
    [alert] = alerts.typed(RiskAlert, code="SERVICE_DOWN")
    assert alert.severity == "critical" and alert.message.startswith("ml service")


# == 10. the risk service's position size ======================================================================
async def test_risk_service_sizes_the_signal_and_a_slow_or_down_one_falls_back_to_local_sizing(make_system, client):
    mode = {"size": "answer"}

    async def position_size(q: dict[str, Any]) -> dict[str, Any]:
        if mode["size"] == "slow":
            await asyncio.sleep(1.0)  # longer than RISK_SERVICE_TIMEOUT
        return {"recommendedSize": 3.14159, "riskAmount": 12.5, "method": "service_kelly"}

    async def validate(q: dict[str, Any]) -> dict[str, Any]:
        return {"approved": True}

    async with http_service({"/api/risk/position-size": position_size, "/api/risk/validate-trade": validate}) as svc:
        await make_system(RISK_SERVICE_URL=svc.url, RISK_SERVICE_TIMEOUT="200")
        await book(client)
        up = await ask(client, signal(confidence=0.7))
        assert up.status == "executed" and up.position_sizing is not None
        assert up.position_sizing.recommended_size == D("3.141")  # rounded down to the amount step
        assert up.position_sizing.decided_by == "risk_service" and up.position_sizing.risk_amount == D("12.5")
        assert up.position_sizing.method == "service_kelly" and up.orders[0].quantity == D("3.141")
        [q] = svc.calls["/api/risk/position-size"]
        assert (q["pair"], q["signal"], q["method"]) == (PAIR, "BUY", "fixed_notional")
        assert q["price"] == MID and q["equity"] == EQUITY and q["maxRiskPercent"] == D("0.02")
        await until(client, up.orders[0].order_id, S.FILLED)

        mode["size"] = "slow"
        slow = await ask(client, signal(confidence=0.7, source="bot2"))
        assert slow.status == "executed" and slow.position_sizing is not None
        assert slow.position_sizing.decided_by == "local" and slow.position_sizing.method == "fixed_notional"
        assert any("risk service unavailable" in n and "200 ms" in n for n in slow.notes), slow.notes

    # the service is gone: its port is closed now
    down_ = await ask(client, signal(confidence=0.7, source="bot3"))
    assert down_.status == "executed" and down_.position_sizing is not None
    assert down_.position_sizing.decided_by == "local" and down_.position_sizing.method == "fixed_notional"
    assert any("risk service unavailable" in n and "sized locally" in n for n in down_.notes), down_.notes


# == 11. sizing ================================================================================================
async def test_position_size_method_setting_fixed_notional_sizes_by_equity_even_with_a_stop(make_system, client):
    await make_system(POSITION_SIZE_METHOD="fixed_notional")
    await book(client)
    r = await ask(client, signal(stopLoss=120))  # auto would size by the stop (fixed_fractional)
    assert r.status == "executed" and r.position_sizing is not None
    ps = r.position_sizing
    assert (ps.method, ps.recommended_size, ps.capped_by) == ("fixed_notional", NOTIONAL_QTY, None)
    assert ps.risk_amount == NOTIONAL_QTY * MID
    assert r.orders[0].quantity == D("8.100")


async def test_risk_parameters_choose_the_method_and_an_unknown_one_is_rejected_naming_the_allowed(make_system, client):
    await make_system()
    await book(client)
    unknown = await ask(client, signal(riskParameters={"positionSizeMethod": "martingale"}))
    assert unknown.status == "rejected" and unknown.orders == []
    for allowed in ("fixed_quantity", "fixed_notional", "fixed_fractional", "kelly_criterion", "volatility_scaled"):
        assert allowed in (unknown.reason or "")
    assert "martingale" in (unknown.reason or "")
    r = await ask(
        client, signal(stopLoss=120, riskParameters={"positionSizeMethod": "fixed_notional", "maxRiskPercent": 0.05})
    )
    assert r.status == "executed" and r.position_sizing is not None
    assert r.position_sizing.method == "fixed_notional"
    assert r.position_sizing.recommended_size == down(EQUITY * D("0.05") / MID) == D("20.251")
    entry = (await orders(client, order_id=r.orders[0].order_id))[0]
    assert entry.quantity == D("20.251") and entry.role == "entry" and entry.linked_orders  # the stop: a leg


async def test_a_size_over_max_position_size_is_capped(make_system, client):
    await make_system(MAX_POSITION_SIZE="0.1")
    await book(client)
    r = await ask(client, signal(riskParameters={"positionSizeMethod": "fixed_notional", "maxRiskPercent": 0.5}))
    assert r.status == "executed" and r.position_sizing is not None
    ps = r.position_sizing
    room = down(D("0.1") * EQUITY / MID)  # 5000 / 123.45 = 40.5022... -> 40.502
    assert (ps.recommended_size, ps.capped_by, ps.method) == (room, "MAX_POSITION_SIZE", "fixed_notional")
    assert room == D("40.502") and r.orders[0].quantity == room
    assert abs(ps.risk_amount - room * MID) < D("0.01")  # the amount at risk scaled down with it
    await until(client, r.orders[0].order_id, S.FILLED)


# == 12. the order's shape =====================================================================================
async def test_stop_loss_enabled_makes_a_bracket_with_the_default_exits(make_system, client):
    await make_system(STOP_LOSS_ENABLED="true", DEFAULT_STOP_LOSS_PERCENT="2", DEFAULT_TAKE_PROFIT_PERCENT="4")
    await book(client)
    r = await ask(client, signal())
    assert r.status == "executed" and r.linked_orders is not None
    assert set(r.linked_orders) == {"stopLoss", "takeProfit"}
    # 123.45 x 0.98 = 120.981 -> 120.99 (up, toward the entry); 123.45 x 1.04 = 128.388 -> 128.38 (down)
    stop, take = D("120.99"), D("128.38")
    assert any(f"stopLoss {stop}, takeProfit {take}" in n for n in r.notes), r.notes
    entry = (await orders(client, order_id=r.orders[0].order_id))[0]
    assert entry.role == "entry" and entry.type == "market" and entry.linked_orders == r.linked_orders
    sl = (await orders(client, order_id=r.linked_orders["stopLoss"]))[0]
    tp = (await orders(client, order_id=r.linked_orders["takeProfit"]))[0]
    assert (sl.type, sl.side, sl.stop_price) == ("stop_loss", "sell", stop)
    assert (tp.type, tp.side, tp.stop_price) == ("take_profit", "sell", take)
    # a default stop is a safety net, not what the size is measured by
    assert r.position_sizing is not None and r.position_sizing.method == "fixed_notional"


async def test_stop_loss_disabled_makes_a_plain_market_order(make_system, client):
    await make_system(STOP_LOSS_ENABLED="false")
    await book(client)
    r = await ask(client, signal())
    assert r.status == "executed" and r.linked_orders is None
    [o] = await orders(client)
    assert (o.type, o.side, o.quantity, o.linked_orders, o.stop_price) == ("market", "buy", NOTIONAL_QTY, None, None)
    await until(client, o.order_id, S.FILLED)


async def test_signal_order_type_limit_places_a_limit_below_the_mid_on_the_tick(make_system, client):
    await make_system(SIGNAL_ORDER_TYPE="limit", SIGNAL_LIMIT_OFFSET_PERCENT="0.1")
    await book(client)
    r = await ask(client, signal())
    assert r.status == "executed" and r.orders[0].type == "limit"
    price = down(MID * (1 - D("0.1") / 100), TICK)  # 123.32655 -> 123.32
    assert price == D("123.32")
    o = await until(client, r.orders[0].order_id, S.ACCEPTED)  # rests: below the ask
    assert (o.type, o.side, o.price) == ("limit", "buy", price)
    assert o.quantity == down(EQUITY * D("0.02") / price)  # sized at its own price


# == 13. over HTTP =============================================================================================
HTTP_EXTRA = {
    "MARKET_DATA": "none",
    "PAIRS": "BTC_USDT,ETH_USDT",
    "PAPER_MARKETS": json.dumps(MARKETS),
    "MAX_SLIPPAGE_PERCENT": "0",
    "DEFAULT_ORDER_TIMEOUT": "0",
    "SIGNAL_AGGREGATION_WINDOW": "0",
    **BASE,
}


@dataclass
class Http:
    http: aiohttp.ClientSession
    base: str
    bus: Bus
    system: System

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, str, Any]:
        async with self.http.request(method, self.base + path, json=body) as r:
            data = await r.read()
            return r.status, r.content_type, json.loads(data, parse_float=D) if data else None

    async def listed(self, query: str = "") -> list[dict[str, Any]]:
        status, ctype, page = await self.call("GET", f"/api/signals{query}")
        assert (status, ctype) == (200, "application/json"), page
        return page["signals"]


@pytest.fixture
async def api(nats_url, prefix, make_bus):
    sut = System(nats_url, settings_for(nats_url, prefix, **HTTP_EXTRA))
    gw: Gateway | None = None
    try:
        await sut.start()
        gw, base = await start_gateway(nats_url, prefix, **HTTP_EXTRA)
        bus = await make_bus("client")
        async with aiohttp.ClientSession() as http:
            yield Http(http, base, bus, sut)
    finally:
        if gw is not None:
            await gw.stop()
        await sut.stop()


async def test_http_execute_answers_executed_in_the_seed_shape_and_filtered_with_the_reason(api):
    await book(api.bus)
    status, ctype, body = await api.call(
        "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.8, "source": "ml"}
    )
    assert (status, ctype) == (200, "application/json"), body
    assert body["status"] == "executed" and body["signalId"].startswith("SIG_")
    [o] = body["orders"]
    assert {"orderId", "type", "side", "quantity", "status"} <= set(o)
    assert o["orderId"].startswith("ORD_") and (o["type"], o["side"]) == ("market", "buy")
    assert num(o["quantity"]) == NOTIONAL_QTY
    ps = body["positionSizing"]
    assert {"recommendedSize", "riskAmount", "method"} <= set(ps)
    assert num(ps["recommendedSize"]) == NOTIONAL_QTY and num(ps["riskAmount"]) == NOTIONAL_QTY * MID
    assert ps["method"] == "fixed_notional"
    status, _, low = await api.call(
        "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.3, "signalId": "LOW-1"}
    )
    assert status == 200 and low["status"] == "filtered" and low["signalId"] == "LOW-1"
    assert low["reason"] == "confidence 0.3 is below the minimum 0.6 for api" and low["orders"] == []


async def test_http_rejections_are_problems_naming_the_field(api):
    got = await api.call("POST", "/api/signals/execute", {"pair": "DOGE_USDT", "signal": "BUY", "confidence": 0.8})
    p = assert_problem(got, 422, "pair")
    assert got[1] == PROBLEM_CT and p["signalId"].startswith("SIG_") and "DOGE_USDT" in p["detail"]
    p = assert_problem(
        await api.call("POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.8, "colour": 1}),
        422,
        "colour",
        "UNKNOWN_FIELD",
    )
    assert "colour" in p["detail"]


async def test_http_lists_signal_results_newest_first_and_filters_them(api):
    await book(api.bus)
    for sid, conf in (("L-1", 0.8), ("L-2", 0.3), ("L-3", 0.7)):
        status, _, _ = await api.call(
            "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": conf, "signalId": sid}
        )
        assert status == 200
    assert [s["signalId"] for s in await api.listed()] == ["L-3", "L-2", "L-1"]
    assert [s["signalId"] for s in await api.listed("?status=executed")] == ["L-3", "L-1"]
    assert [s["signalId"] for s in await api.listed("?status=filtered")] == ["L-2"]
    [one] = await api.listed("?signalId=L-2")
    assert one["status"] == "filtered" and one["reason"]


async def test_http_signal_while_intake_is_down_is_accepted_and_listed_once_intake_is_back(api):
    await book(api.bus)
    await api.system.stop("signal-intake")
    status, ctype, body = await api.call(  # the gateway waits window + 10 s for the result
        "POST", "/api/signals/execute", {"pair": PAIR, "signal": "BUY", "confidence": 0.8}
    )
    assert (status, ctype) == (202, "application/json"), body
    assert body["status"] == "accepted"
    assert body["signalId"].startswith("SIG_") and sid_in(body["signalId"], body["detail"])
    sid = body["signalId"]
    await api.system.start("signal-intake")
    await book(api.bus)  # the restarted intake needs a price

    async def listed() -> list[dict[str, Any]] | None:
        return await api.listed(f"?signalId={sid}") or None

    [ev] = await eventually(listed, what="the late signal's result")
    assert ev["status"] == "executed" and ev["orders"][0]["orderId"].startswith("ORD_")


def sid_in(sid: str, detail: str) -> bool:
    return f"GET /api/signals?signalId={sid}" in detail
