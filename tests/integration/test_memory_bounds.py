"""Issue 7: closed orders leave memory for JetStream, and are still answered in full from there.

KEEP_CLOSED (order-router) and KEEP_COMPLETE (fill-tracker) are lowered to 3 before the system starts,
so a dozen orders are enough to push most of them out of memory. The ORDERS stream itself, read here
message by message, is the record every answer is checked against. Everything is real: nats-server,
every actor, the paper venue trading against books the test publishes (MARKET_DATA=none).
"""

from __future__ import annotations

from decimal import Decimal as D

import aiohttp
import pytest

import actors.fill_tracker
import actors.order_router
import actors.order_router.store
from bus.client import Bus
from bus.codec import decode
from schemas.messages import (
    AlgoSpec,
    CancelOrder,
    CommandReply,
    ModifyOrder,
    Order,
    OrderEvent,
    OrderEventsPage,
    OrderEventsQuery,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
)
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_order_types import placed, portfolio, publish_book, submit, trade_report, until

S = OrderStatus
KEEP = 3
SYSTEM_DEFAULTS = {"MAX_ORDERS_PER_SECOND": "1000"}


@pytest.fixture(autouse=True)
def small_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set before any actor starts (make_system is only called inside the tests)."""
    monkeypatch.setattr(actors.order_router.store, "KEEP_CLOSED", KEEP)
    monkeypatch.setattr(actors.fill_tracker, "KEEP_COMPLETE", KEEP)
    # a list query reads ORDERS back a few messages at a time: its stopping rules matter on a dozen orders
    monkeypatch.setattr(actors.order_router.store, "SCAN_BATCH", 4)


# -- helpers ---------------------------------------------------------------------------------------------
def router(sut: System) -> actors.order_router.OrderRouter:
    r = sut.running["order-router"]
    assert isinstance(r, actors.order_router.OrderRouter)
    return r


def tracker(sut: System) -> actors.fill_tracker.FillTracker:
    t = sut.running["fill-tracker"]
    assert isinstance(t, actors.fill_tracker.FillTracker)
    return t


def closed_in_memory(r: actors.order_router.OrderRouter) -> set[str]:
    return set(r.orders) - r.live


def assert_bounded(sut: System) -> None:
    r, t = router(sut), tracker(sut)
    assert len(closed_in_memory(r)) <= KEEP, sorted(closed_in_memory(r))
    assert len(r.events) <= KEEP + len(r.live) and set(r.events) <= set(r.orders)
    assert len(r.by_client) <= KEEP + len(r.live)
    complete = [oid for oid, of in t.orders.items() if of.complete]
    assert len(complete) <= KEEP, complete


async def books(client: Bus) -> None:
    await publish_book(client, [("99.90", "50")], [("100.00", "50")])
    await publish_book(client, [("9.99", "500")], [("10.00", "500")], pair="ETH_USDT")


async def stream_count(client: Bus, stream: str) -> int:
    return (await client.js.stream_info(stream)).state.messages


async def recorded(client: Bus) -> dict[str, list[OrderEvent]]:
    """Every event stored on ORDERS, by order, in stream order: the record the answers are checked against."""
    state = (await client.js.stream_info(client.subjects.s_orders)).state
    out: dict[str, list[OrderEvent]] = {}
    for seq in range(state.first_seq, state.last_seq + 1):
        msg = await client.js.get_msg(client.subjects.s_orders, seq)
        ev = decode(msg.data or b"", OrderEvent)
        out.setdefault(ev.order.order_id, []).append(ev)
    return out


async def by_id(client: Bus, order_id: str) -> list[Order]:
    q = OrdersQuery(order_id=order_id)
    return (await client.request(client.subjects.query("orders"), q, OrdersPage)).orders


async def by_client_id(client: Bus, coid: str) -> list[Order]:
    q = OrdersQuery(client_order_id=coid)
    return (await client.request(client.subjects.query("orders"), q, OrdersPage)).orders


async def events_of(client: Bus, order_id: str) -> list[OrderEvent]:
    q = OrderEventsQuery(order_id=order_id)
    return (await client.request(client.subjects.query("order_events"), q, OrderEventsPage)).events


async def pages(client: Bus, limit: int = 5, **filters: object) -> list[list[Order]]:
    out: list[list[Order]] = []
    cursor = None
    while True:
        q = OrdersQuery(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        page = await client.request(client.subjects.query("orders"), q, OrdersPage)
        out.append(page.orders)
        assert len(out) < 50, "the cursor never ends"
        if page.next_cursor is None:
            return out
        assert len(page.orders) == limit, "a page before the last one is full"
        cursor = page.next_cursor


async def quiet(sut: System, client: Bus, fills: int) -> None:
    """Nothing left working in the router, and the ledger has booked ``fills`` fills."""

    async def done() -> bool:
        snap = await portfolio(client)
        return not router(sut).live and snap.fills_applied == fills

    await eventually(done, what=f"no live order and {fills} fills booked")


async def market_orders(client: Bus, n: int, tag: str) -> list[Order]:
    """``n`` market orders filled one after the other, as the router last saw them: BTC buys, every third
    an ETH buy, every fourth (not ETH) a BTC sell of what the buys before it bought."""
    out = []
    for i in range(n):
        if i % 3 == 2:
            o = await placed(client, f"{tag}-{i}", "buy", "1", pair="ETH_USDT")
        elif i % 4 == 3:
            o = await placed(client, f"{tag}-{i}", "sell", "0.1")
        else:
            o = await placed(client, f"{tag}-{i}", "buy", "0.1")
        out.append(await until(client, o.order_id, S.FILLED))
    return out


async def canceled_limit(client: Bus, coid: str) -> Order:
    o = await placed(client, coid, "buy", "0.1", "limit", price="90.00")
    await until(client, o.order_id, S.ACCEPTED)
    r = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=o.order_id), CommandReply)
    assert r.ok, r
    return await until(client, o.order_id, S.CANCELED)


async def assert_answered(client: Bus, record: dict[str, list[OrderEvent]], o: Order, first: int = 0) -> None:
    """By id, by client order id and its events: exactly what ORDERS holds of it. The first question asked
    reads it back into memory: ``first`` says which one that is (0: by id, 1: by client id, 2: events)."""
    evs = record[o.order_id]
    latest = evs[-1].order

    async def ask_by_id() -> None:
        assert await by_id(client, o.order_id) == [latest], o.order_id

    async def ask_by_client_id() -> None:
        assert await by_client_id(client, o.client_order_id) == [latest], o.client_order_id

    async def ask_events() -> None:
        got = await events_of(client, o.order_id)
        assert got == evs, o.order_id
        assert [e.order.version for e in got] == list(range(1, len(evs) + 1))

    asks = [ask_by_id, ask_by_client_id, ask_events]
    for ask in asks[first:] + asks[:first]:
        await ask()


# -- the tests -------------------------------------------------------------------------------------------
async def test_closed_orders_leave_memory_and_are_still_answered_in_full(make_system, client, nats_url, prefix):
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 4, "mem")
    canceled = [await canceled_limit(client, "mem-limit-a")]
    filled += await market_orders(client, 4, "mem2")
    canceled.append(await canceled_limit(client, "mem-limit-b"))
    filled += await market_orders(client, 4, "mem3")
    assert len(filled) == 12 and all(o.status is S.FILLED for o in filled)
    await quiet(sut, client, fills=sum(len(o.fills) for o in filled))

    # memory: KEEP closed orders, whatever the number of orders; the fill-tracker likewise
    r, t = router(sut), tracker(sut)
    assert_bounded(sut)
    assert closed_in_memory(r) == {o.order_id for o in filled[-KEEP:]}
    assert set(t.orders) == {o.order_id for o in filled[-KEEP:]}
    assert all(t.done.get(o.order_id) == 1 for o in filled[:-KEEP])
    assert all(r.last_seq.get(o.order_id) for o in [*filled, *canceled])

    record = await recorded(client)
    everyone = sorted([*filled, *canceled], key=lambda o: (o.created_at, o.order_id), reverse=True)
    assert {o.order_id for o in everyone} == set(record)
    newest_first = [record[o.order_id][-1].order for o in everyone]

    # the list first (nothing recalled yet): memory and ORDERS merged, newest first, paged by cursor
    got = await pages(client)
    assert [len(p) for p in got] == [5, 5, 4]
    assert [o for p in got for o in p] == newest_first
    got = await pages(client, status=S.FILLED)
    assert [len(p) for p in got] == [5, 5, 2]
    assert [o.order_id for p in got for o in p] == [o.order_id for o in newest_first if o.status is S.FILLED]
    got = await pages(client, status=S.CANCELED)
    assert [o.order_id for p in got for o in p] == [canceled[1].order_id, canceled[0].order_id]
    eth = [o.order_id for o in newest_first if o.pair == "ETH_USDT"]
    sells = [o.order_id for o in newest_first if o.side == "sell"]
    assert len(eth) == 3 and len(sells) == 3 and not set(eth) & set(sells)
    assert [o.order_id for p in await pages(client, pair="ETH_USDT") for o in p] == eth
    assert [o.order_id for p in await pages(client, side="sell") for o in p] == sells
    assert [o.order_id for p in await pages(client, side="sell", pair="ETH_USDT") for o in p] == []
    got = await pages(client, limit=2, pair="BTC_USDT", status=S.FILLED)
    assert [o.order_id for p in got for o in p] == [
        o.order_id for o in newest_first if o.pair == "BTC_USDT" and o.status is S.FILLED
    ]
    middle = newest_first[6].created_at
    got = await pages(client, since=middle)
    assert [o.order_id for p in got for o in p] == [o.order_id for o in newest_first if o.created_at >= middle]
    got = await pages(client, until=middle)
    assert [o.order_id for p in got for o in p] == [o.order_id for o in newest_first if o.created_at < middle]
    assert_bounded(sut)

    # one by one: by id, by client order id, and every event; each out of memory when first asked about
    for i, o in enumerate([*filled, *canceled]):
        assert o.order_id not in r.orders, o.order_id  # read back ones push the newest out in turn
        await assert_answered(client, record, o, first=i % 3)
    assert_bounded(sut)  # what is read back stays only for a while
    assert await by_id(client, "ORD_20990101_999999") == []
    assert await by_client_id(client, "never-used") == []
    assert await events_of(client, "ORD_20990101_999999") == []

    # and over HTTP, after the list again
    got = await pages(client, limit=5)
    assert [o for p in got for o in p] == newest_first
    gw, base = await start_gateway(nats_url, prefix)
    try:
        async with aiohttp.ClientSession() as http:
            for o in (filled[0], filled[2]):
                assert o.order_id not in r.orders
                async with http.get(f"{base}/api/orders/{o.order_id}") as resp:
                    assert resp.status == 200
                    body = await resp.json()
                latest = record[o.order_id][-1].order
                assert (body["orderId"], body["clientOrderId"], body["status"]) == (
                    o.order_id,
                    o.client_order_id,
                    latest.status.value,
                )
                assert [f["fillId"] for f in body["fills"]] == [f.fill_id for f in latest.fills]
                async with http.get(f"{base}/api/orders/{o.order_id}/events") as resp:
                    assert resp.status == 200
                    body = await resp.json()
                assert body["orderId"] == o.order_id
                assert [(e["event"], e["order"]["version"]) for e in body["events"]] == [
                    (e.event, e.order.version) for e in record[o.order_id]
                ]
            async with http.get(f"{base}/api/orders?limit=5") as resp:
                assert resp.status == 200
                assert [x["orderId"] for x in (await resp.json())["orders"]] == [o.order_id for o in newest_first[:5]]
    finally:
        await gw.stop()
    assert_bounded(sut)


async def test_orders_working_since_before_those_out_of_memory_list_in_their_place(make_system, client):
    """Memory holds more than a page, but not the newest orders only: the list must still go to ORDERS."""
    sut = await make_system()
    await books(client)
    resting = []
    for i in range(KEEP):
        o = await placed(client, f"old-rest-{i}", "buy", "0.1", "limit", price=f"9{i}.00")
        resting.append(await until(client, o.order_id, S.ACCEPTED))
    filled = await market_orders(client, 8, "late")
    n_fills = sum(len(o.fills) for o in filled)

    async def settled() -> bool:
        return router(sut).live == {o.order_id for o in resting} and (await portfolio(client)).fills_applied == n_fills

    await eventually(settled, what="only the resting orders working, every fill booked")
    r = router(sut)
    assert len(r.orders) == 2 * KEEP and len(r.orders) > 5  # more than a page of 5 in memory
    assert_bounded(sut)
    record = await recorded(client)
    newest_first = [record[o.order_id][-1].order for o in reversed([*resting, *filled])]
    got = await pages(client)
    assert [len(p) for p in got] == [5, 5, 1]
    assert [o for p in got for o in p] == newest_first
    got = await pages(client, status=S.ACCEPTED)
    assert [o.order_id for p in got for o in p] == [o.order_id for o in reversed(resting)]
    got = await pages(client, limit=2, pair="BTC_USDT", side="buy")
    assert [o.order_id for p in got for o in p] == [
        o.order_id for o in newest_first if o.pair == "BTC_USDT" and o.side == "buy"
    ]
    assert_bounded(sut)


async def test_a_repeated_client_order_id_of_an_order_out_of_memory(make_system, client):
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 8, "rep")
    await quiet(sut, client, fills=sum(len(o.fills) for o in filled))
    r = router(sut)
    orders_before = await stream_count(client, client.subjects.s_orders)
    fills_before = await stream_count(client, client.subjects.s_fills)
    listed_before = [o.order_id for p in await pages(client, limit=50) for o in p]
    assert len(listed_before) == 8

    # same content: the same order answered, no second one
    first = filled[0]
    assert first.order_id not in r.orders
    again = await submit(client, first.client_order_id, "buy", "0.1")
    assert again.ok and again.order is not None, again
    assert again.order.order_id == first.order_id and again.order.status is S.FILLED
    assert again.order.fills == first.fills
    assert await stream_count(client, client.subjects.s_orders) == orders_before

    # other content: refused, naming the order it belongs to
    second = filled[1]
    assert second.order_id not in r.orders
    other = await submit(client, second.client_order_id, "buy", "0.2")
    assert not other.ok and other.code == "DUPLICATE_CLIENT_ORDER_ID" and other.field == "clientOrderId", other
    assert second.order_id in (other.detail or "")
    third = filled[3]  # a BTC sell: its client order id on an ETH buy is other content too
    assert third.order_id not in r.orders and third.pair == "BTC_USDT"
    other = await submit(client, third.client_order_id, "buy", "1", pair="ETH_USDT")
    assert not other.ok and other.code == "DUPLICATE_CLIENT_ORDER_ID", other

    # nothing was created by any of it
    sentinel = await until(client, (await placed(client, "rep-after", "buy", "0.1")).order_id, S.FILLED)
    await quiet(sut, client, fills=sum(len(o.fills) for o in [*filled, sentinel]))
    record = await recorded(client)
    assert set(record) == {o.order_id for o in [*filled, sentinel]}
    assert await stream_count(client, client.subjects.s_fills) == fills_before + len(sentinel.fills)
    listed = [o.order_id for p in await pages(client, limit=50) for o in p]
    assert listed == [sentinel.order_id, *listed_before]
    for o in filled:
        await assert_answered(client, record, o)
    assert_bounded(sut)


async def test_cancel_and_modify_of_an_order_out_of_memory_are_refused(make_system, client):
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 8, "cm")
    await quiet(sut, client, fills=sum(len(o.fills) for o in filled))
    r = router(sut)
    orders_before = await stream_count(client, client.subjects.s_orders)

    o = filled[0]
    assert o.order_id not in r.orders
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=o.order_id), CommandReply)
    assert not reply.ok and reply.code == "CANCEL_REFUSED" and "already filled" in (reply.detail or ""), reply
    assert [x.order_id for x in reply.orders] == [o.order_id] and reply.orders[0].status is S.FILLED

    o = filled[1]
    assert o.order_id not in r.orders
    cmd = CancelOrder(client_order_id=o.client_order_id)
    reply = await client.request(client.subjects.orders_cancel, cmd, CommandReply)
    assert not reply.ok and reply.code == "CANCEL_REFUSED" and "already filled" in (reply.detail or ""), reply
    assert reply.orders[0].order_id == o.order_id

    o = filled[3]
    assert o.order_id not in r.orders
    cmd = ModifyOrder(order_id=o.order_id, quantity=D("0.2"))
    reply = await client.request(client.subjects.orders_modify, cmd, CommandReply)
    assert not reply.ok and reply.code == "MODIFY_REFUSED" and "already filled" in (reply.detail or ""), reply
    assert reply.orders[0].order_id == o.order_id and reply.orders[0].status is S.FILLED

    unknown = "ORD_20990101_999999"
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=unknown), CommandReply)
    assert not reply.ok and reply.code == "ORDER_NOT_FOUND"
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(client_order_id="nope"), CommandReply)
    assert not reply.ok and reply.code == "ORDER_NOT_FOUND"
    reply = await client.request(client.subjects.orders_modify, ModifyOrder(order_id=unknown, price=D(1)), CommandReply)
    assert not reply.ok and reply.code == "ORDER_NOT_FOUND"
    # a spelling of an evicted order's number that is not its id (the table keys by number): not that order
    day, _, n = filled[4].order_id.rpartition("_")
    alias = f"{day}_{int(n)}"
    assert alias != filled[4].order_id and filled[4].order_id not in r.orders
    assert await by_id(client, alias) == []
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=alias), CommandReply)
    assert not reply.ok and reply.code == "ORDER_NOT_FOUND"

    assert await stream_count(client, client.subjects.s_orders) == orders_before  # nothing changed
    assert_bounded(sut)


async def test_a_trade_reported_again_for_a_complete_order_out_of_memory_is_a_repeat(make_system, client):
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 8, "tr")
    n_fills = sum(len(o.fills) for o in filled)
    await quiet(sut, client, fills=n_fills)
    t = tracker(sut)
    o = filled[0]
    assert o.order_id not in t.orders and t.done.get(o.order_id) == 1
    fills_before = await stream_count(client, client.subjects.s_fills)
    assert fills_before == n_fills
    published, duplicates = t.published, t.duplicates

    for i, msg_id in ((0, "resent-by-the-test-1"), (len(o.fills) - 1, "resent-by-the-test-2")):
        await client.js_publish(client.subjects.exec_reports(o.pair), trade_report(o, i), msg_id=msg_id)
    await eventually(lambda: _at_least(t.duplicates, duplicates + 2), what="the repeats dropped")

    assert t.published == published
    assert await stream_count(client, client.subjects.s_fills) == fills_before
    assert (await portfolio(client)).fills_applied == n_fills
    assert (await by_id(client, o.order_id))[0].fills == o.fills
    assert o.order_id not in t.orders  # a repeat brings nothing back
    assert_bounded(sut)


async def _at_least(value: int, floor: int) -> bool:
    return value >= floor


async def test_after_restarts_orders_out_of_memory_are_answered_and_ids_are_new(make_system, client):
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 8, "rs")
    n_fills = sum(len(o.fills) for o in filled)
    await quiet(sut, client, fills=n_fills)
    await sut.stop("order-router")
    await sut.start("order-router")
    await sut.stop("fill-tracker")
    await sut.start("fill-tracker")
    await books(client)  # the restarted router's venue has seen no book yet
    r, t = router(sut), tracker(sut)
    assert_bounded(sut)  # the rebuild keeps no more than the live run did
    assert closed_in_memory(r) == {o.order_id for o in filled[-KEEP:]}
    assert set(t.orders) == {o.order_id for o in filled[-KEEP:]}
    assert all(r.first_seq.get(o.order_id) and r.last_seq.get(o.order_id) for o in filled)

    record = await recorded(client)
    newest_first = [record[o.order_id][-1].order for o in reversed(filled)]
    got = await pages(client)
    assert [len(p) for p in got] == [5, 3] and [o for p in got for o in p] == newest_first
    for i, o in enumerate(filled):
        assert o.order_id not in r.orders or o in filled[-KEEP:]
        await assert_answered(client, record, o, first=i % 3)
    again = await submit(client, filled[0].client_order_id, "buy", "0.1")
    assert again.ok and again.order is not None and again.order.order_id == filled[0].order_id

    # a trade reported again after the restart of the fill-tracker: still a repeat
    o = filled[1]
    assert o.order_id not in t.orders and t.done.get(o.order_id) == 1
    await client.js_publish(client.subjects.exec_reports(o.pair), trade_report(o), msg_id="resent-after-restart")
    await eventually(lambda: _at_least(t.duplicates, 1), what="the repeat dropped")
    assert t.published == 0 and await stream_count(client, client.subjects.s_fills) == n_fills

    new = await until(client, (await placed(client, "rs-new", "buy", "0.1")).order_id, S.FILLED)
    old_ids = {o.order_id for o in filled}
    assert new.order_id not in old_ids and new.order_id > max(old_ids)
    await quiet(sut, client, fills=n_fills + len(new.fills))
    assert_bounded(sut)


async def test_a_bracket_entry_stays_in_memory_while_its_legs_work(make_system, client):
    sut = await make_system()
    await books(client)
    entry = await placed(client, "br-mem", "buy", "1", stop_loss="95.00", take_profit="110.00")
    assert entry.linked_orders is not None
    sl_id, tp_id = entry.linked_orders["stopLoss"], entry.linked_orders["takeProfit"]
    entry = await until(client, entry.order_id, S.FILLED)
    await until(client, sl_id, S.ACCEPTED)
    await until(client, tp_id, S.ACCEPTED)
    filled = await market_orders(client, 2 * KEEP, "br-more")
    await eventually(lambda: _equal(router(sut).live, {sl_id, tp_id}), what="only the legs working")
    r = router(sut)
    assert entry.order_id in r.orders  # closed, and older than KEEP others, but its legs still work
    assert closed_in_memory(r) == {entry.order_id, *(o.order_id for o in filled[-KEEP:])}
    assert all(o.order_id not in r.orders for o in filled[:KEEP])

    # the legs end: the entry may go like any other
    for leg in (sl_id, tp_id):
        reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=leg), CommandReply)
        assert reply.ok, reply
        await until(client, leg, S.CANCELED)
    more = await market_orders(client, KEEP + 1, "br-after")
    await eventually(lambda: _equal(router(sut).live, set()), what="nothing working")
    assert entry.order_id not in r.orders and sl_id not in r.orders and tp_id not in r.orders
    assert closed_in_memory(r) == {o.order_id for o in more[-KEEP:]}

    # and it is still answered in full, legs included; a retry of it creates nothing (not even legs)
    record = await recorded(client)
    for oid in (entry.order_id, sl_id, tp_id):
        assert r.last_seq.get(oid)
        got = await by_id(client, oid)
        assert got == [record[oid][-1].order]
        assert await events_of(client, oid) == record[oid]
    assert (await by_id(client, entry.order_id))[0].linked_orders == {"stopLoss": sl_id, "takeProfit": tp_id}
    more = await market_orders(client, KEEP + 1, "br-evict")  # read back above: out of memory again
    assert entry.order_id not in r.orders and sl_id not in r.orders and tp_id not in r.orders
    orders_before = await stream_count(client, client.subjects.s_orders)
    again = await submit(client, "br-mem", "buy", "1", stop_loss="95.00", take_profit="110.00")
    assert again.ok and again.order is not None and again.order.order_id == entry.order_id, again
    assert again.order.linked_orders == {"stopLoss": sl_id, "takeProfit": tp_id}
    assert await stream_count(client, client.subjects.s_orders) == orders_before
    await eventually(lambda: _equal(router(sut).live, set()), what="nothing working")
    assert_bounded(sut)


async def test_an_algorithms_closed_children_stay_in_memory_while_its_parent_is_live(make_system, client):
    """Issue 20's bench (bench/algos.py, 100 TWAPs x 100 slices): children that closed left memory past KEEP_CLOSED
    while their parents still ran, and every step and every sync of a parent read all its children - those were
    read back from ORDERS each time (hundreds of stream reads each, thrashing in and out of memory): the slices' drift
    grew to seconds and the parents could not keep up. A live parent's closed children now stay in memory; once it
    closed they leave like any other order."""
    sut = await make_system()
    await books(client)
    r = router(sut)
    read_back: list[str] = []
    real = r.store._read_events

    async def counted(order_id: str, first: int, last: int) -> list[OrderEvent]:  # (the real read, counted)
        read_back.append(order_id)
        return await real(order_id, first, last)

    r.store._read_events = counted  # type: ignore[method-assign]
    slices = 3 * KEEP
    spec = AlgoSpec(duration_ms=slices * 150, slices=slices)
    p = await placed(client, "algo-mem", "buy", f"{D('0.1') * slices}", "twap", algo=spec)
    p = await until(client, p.order_id, S.FILLED, timeout=20)
    kids = set(p.children)
    assert len(kids) == slices
    assert not kids & set(read_back), "a child of a live parent was read back from ORDERS"

    # the parent closed: its children go like any other closed order
    more = await market_orders(client, KEEP, "algo-after")
    await eventually(lambda: _equal(router(sut).live, set()), what="nothing working")
    assert not kids & set(r.orders) and p.order_id not in r.orders
    assert closed_in_memory(r) == {o.order_id for o in more}
    assert_bounded(sut)


async def _equal(a: object, b: object) -> bool:
    return a == b


async def test_an_order_id_with_a_non_decimal_digit_is_simply_not_found(make_system, client):
    await make_system()
    for oid in ("ORD_20260101_²", "ORD_²²²²²²²²_000001"):
        assert await by_id(client, oid) == []
        reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=oid), CommandReply)
        assert not reply.ok and reply.code == "ORDER_NOT_FOUND"


async def test_a_working_order_partly_filled_before_a_fill_tracker_restart_still_fills(make_system, client):
    sut = await make_system()
    await books(client)
    o = await placed(client, "part-rest", "buy", "1", "limit", price="99.00")
    await until(client, o.order_id, S.ACCEPTED)
    await publish_book(client, [("98.00", "5")], [("98.90", "0.400"), ("99.00", "0.300"), ("99.10", "5")])
    part = await until(client, o.order_id, S.PARTIALLY_FILLED)
    assert part.filled_quantity == D("0.7")
    await sut.stop("fill-tracker")
    await sut.start("fill-tracker")
    await books(client)  # the limit rests again, untouched by what follows
    others = await market_orders(client, KEEP + 1, "after-part")  # KEEP orders complete after it
    t = tracker(sut)
    published, duplicates = t.published, t.duplicates
    await publish_book(client, [("98.00", "5")], [("98.95", "1.000")])  # the rest trades at 99.00

    async def handled() -> bool:
        return t.published + t.duplicates > published + duplicates

    await eventually(handled, what="the trade of the rest reaching the fill-tracker")
    assert (t.published, t.duplicates) == (published + 1, duplicates), "the trade was dropped as a repeat"
    done = await until(client, o.order_id, S.FILLED)
    assert done.filled_quantity == D(1) and len(done.fills) == 2
    n_fills = sum(len(x.fills) for x in [done, *others])
    await eventually(lambda: _fills_applied(client, n_fills), what="every fill booked")


async def _fills_applied(client: Bus, n: int) -> bool:
    return (await portfolio(client)).fills_applied == n


async def test_a_bracket_leg_out_of_memory_is_still_found_by_its_client_order_id(make_system, client):
    sut = await make_system()
    await books(client)
    entry = await placed(client, "br-leg-coid", "buy", "1", stop_loss="95.00")
    assert entry.linked_orders is not None
    leg_id = entry.linked_orders["stopLoss"]
    leg = await until(client, leg_id, S.ACCEPTED)
    assert await by_client_id(client, leg.client_order_id) == [leg]  # while in memory
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=leg_id), CommandReply)
    assert reply.ok
    leg = await until(client, leg_id, S.CANCELED)
    await market_orders(client, KEEP + 1, "push-out")
    assert leg_id not in router(sut).orders
    assert await by_client_id(client, leg.client_order_id) == [leg]
    cmd = CancelOrder(client_order_id=leg.client_order_id)
    reply = await client.request(client.subjects.orders_cancel, cmd, CommandReply)
    assert reply.code == "CANCEL_REFUSED", reply


async def test_paging_reaches_the_oldest_order_however_far_back(make_system, client, monkeypatch):
    monkeypatch.setattr(actors.order_router.store, "MAX_SCAN", 12)  # 4 orders of 3 events: MAX_SCAN=50,000 in small
    sut = await make_system()
    await books(client)
    filled = await market_orders(client, 8, "deep")
    await quiet(sut, client, fills=sum(len(o.fills) for o in filled))
    got = await pages(client, limit=2)
    assert [o.order_id for p in got for o in p] == [o.order_id for o in reversed(filled)]
