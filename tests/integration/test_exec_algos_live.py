"""The execution algorithms (issue 20) on a live venue: the local Binance spot test exchange, through real ccxt
pointed at it (tests/integration/test_live_binance.py has the set-up), over the real bus.

A TWAP and an iceberg trade there child by child (each a normal order at the venue with its own client order id);
a child whose answer is lost stays in flight until the venue says what happened and is never sent twice; a child
the venue rejects stops the parent as the README says; an order-router killed mid-schedule resumes without sending
a slice twice.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from domain.algo_orders import slice_client_id
from domain.venue_ids import BINANCE, venue_client_id
from schemas.messages import AlgoSpec, Order, OrderEventsPage, OrderEventsQuery, OrderStatus, now_ms
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually
from tests.integration import test_live_binance as live_binance
from tests.integration import test_multi_venue as multi_venue
from tests.integration.test_ledger import bal, snap
from tests.integration.test_live_binance import fills_of, posts, submit
from tests.integration.test_order_types import order

exchange = live_binance.exchange  # the fixtures: the local Binance test exchange, the service trading on it
live = live_binance.live
D = Decimal
S = OrderStatus
DONE = (S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED)


async def parent_until(client, order_id: str, *statuses: OrderStatus, timeout: float = 20.0) -> Order:
    async def probe() -> Order | None:
        o = await order(client, order_id)
        return o if o.status in statuses else None

    return await eventually(probe, timeout=timeout, what=f"{order_id} {'/'.join(s.value for s in statuses)}")


async def kids_of(client, p: Order) -> list[Order]:
    return [await order(client, cid) for cid in p.children]


async def trail(client, order_id: str) -> list[tuple[str, str]]:
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=order_id), OrderEventsPage
    )
    return [(e.event, e.order.reason or "") for e in page.events]


def at_venue(exchange: BinanceTestExchange, child: Order) -> list:
    """The venue's orders of this child (by the client order id the venue knows it under)."""
    return exchange.orders("BTC/USDT", client_order_id=venue_client_id(child.client_order_id, BINANCE))


async def placed_algo(client, coid: str, type_: str, quantity: str, **kw: object) -> Order:
    reply = await submit(client, coid, type=type_, quantity=D(quantity), **kw)
    assert reply.ok and reply.order is not None, reply.detail
    assert reply.order.venue == "binance" and reply.order.paper_trade is False
    return reply.order


async def test_a_twap_on_binance_sends_each_slice_as_its_own_order_and_books_each_fill_once(
    live, client, exchange
) -> None:
    await live()
    p = await placed_algo(client, "lva-twap-1", "twap", "0.01", algo=AlgoSpec(duration_ms=2000, slices=4))
    p = await parent_until(client, p.order_id, *DONE)
    assert p.status is S.FILLED, (p.status, p.reason)
    kids = await kids_of(client, p)
    assert len(kids) == 4 and [k.quantity for k in kids] == [D("0.0025")] * 4
    assert p.algo_state is not None and p.algo_state.sent == [0, 1, 2, 3]
    coids = [k.client_order_id for k in kids]
    assert coids == [slice_client_id(p.order_id, i) for i in range(4)]
    for k in kids:
        assert k.role == "slice" and k.parent_order_id == p.order_id and k.venue == "binance"
        assert k.status is S.FILLED and k.paper_trade is False and k.venue_order_id
        [there] = at_venue(exchange, k)  # one order at the venue per child, under its own client id
        assert there.type == "MARKET" and there.status == "FILLED" and there.executed_qty == k.quantity
        assert str(there.order_id) == k.venue_order_id
        assert posts(exchange, venue_client_id(k.client_order_id, BINANCE)) == 1
    # every order at the venue is one of the children: the parent itself was never sent
    assert sorted(o.client_order_id for o in exchange.orders("BTC/USDT")) == sorted(
        venue_client_id(c, BINANCE) for c in coids
    )
    # the parent's fills are its children's: each venue trade once
    trades = exchange.trades("BTC/USDT")
    assert len(trades) == 4
    booked = [f for k in kids for f in await fills_of(client, k.order_id)]
    assert len(booked) == 4 and sorted(f.fill_id for f in booked) == sorted(f.fill_id for f in p.fills)
    assert sorted(f.fill_id.rsplit(":", 1)[-1] for f in booked) == sorted(str(t.trade_id) for t in trades)
    assert p.filled_quantity == sum((k.filled_quantity for k in kids), D(0)) == D("0.01")
    assert p.fees == sum((k.fees for k in kids), D(0)) == D("0.00001")  # 0.1 % of 0.01 BTC, in BTC

    async def booked_once() -> bool:
        return bal(await snap(client), "BTC").total == D("1.00999")  # 1 + 0.01 - the fees, never twice

    await eventually(booked_once, what="the children's fills booked once by the ledger")


async def test_an_iceberg_on_binance_rests_one_clip_at_a_time_never_more_than_its_display(
    live, client, exchange
) -> None:
    await live()
    display = D("0.004")
    p = await placed_algo(
        client, "lva-ice-1", "iceberg", "0.01", price=D("59000"), algo=AlgoSpec(display_quantity=display)
    )
    clips = [D("0.004"), D("0.004"), D("0.002")]
    for i, clip in enumerate(clips):
        coid = venue_client_id(slice_client_id(p.order_id, i), BINANCE)

        async def resting(coid: str = coid) -> list | None:
            there = exchange.orders("BTC/USDT", open_only=True)
            return there if there and there[-1].client_order_id == coid else None

        there = await eventually(resting, what=f"clip {i} resting at the venue")
        assert len(there) == 1 and there[0].orig_qty == clip <= display  # never more than the display shows
        assert there[0].type == "LIMIT" and there[0].price == D(59000) and there[0].time_in_force == "GTC"
        exchange.set_book("BTC/USDT", bids=[("58900", "1")], asks=[("58950", "1")])  # crosses: the clip fills
        assert not exchange.orders("BTC/USDT", open_only=True)
        exchange.set_book("BTC/USDT", bids=[("58000", "1")], asks=[("60000", "1")])  # back above it
    p = await parent_until(client, p.order_id, *DONE)
    assert p.status is S.FILLED, (p.status, p.reason)
    kids = await kids_of(client, p)
    assert [k.quantity for k in kids] == clips and all(k.status is S.FILLED for k in kids)
    assert len(exchange.orders("BTC/USDT")) == 3
    assert p.filled_quantity == D("0.01") and len(p.fills) == len(exchange.trades("BTC/USDT")) == 3
    assert all(f.liquidity == "maker" and f.price == D(59000) for f in p.fills)


async def test_a_childs_lost_answer_keeps_it_in_flight_until_the_venue_says_never_sent_twice_the_schedule_goes_on(
    live, client, exchange
) -> None:
    await live()
    exchange.inject_fault("lost_after_place", after=1)  # the second child: the venue takes it, the answer is lost
    exchange.inject_fault("slow", "GET", "/api/v3/order", seconds=1.5, times=2)  # its first lookups come late
    p = await placed_algo(client, "lva-lost-1", "twap", "0.01", algo=AlgoSpec(duration_ms=2000, slices=4))
    second = slice_client_id(p.order_id, 1)

    async def in_flight_while_the_next_goes() -> Order | None:
        cur = await order(client, p.order_id)
        if len(cur.children) < 3:
            return None
        kid = await order(client, cur.children[1])
        return cur if kid.status is S.SUBMITTED and kid.venue_status is None else None

    await eventually(in_flight_while_the_next_goes, what="the next slice sent while the second child is in flight")
    p = await parent_until(client, p.order_id, *DONE)
    assert p.status is S.FILLED, (p.status, p.reason)
    kids = await kids_of(client, p)
    # no slice doubled (the one in flight counted as working), none skipped, each child one order at the venue
    assert [k.quantity for k in kids] == [D("0.0025")] * 4 and all(k.status is S.FILLED for k in kids)
    assert p.algo_state is not None and p.algo_state.sent == [0, 1, 2, 3]
    for k in kids:
        assert posts(exchange, venue_client_id(k.client_order_id, BINANCE)) == 1
        assert len(at_venue(exchange, k)) == 1
    lost = next(k for k in kids if k.client_order_id == second)
    lookups = exchange.requests_for("GET", "/api/v3/order", origClientOrderId=venue_client_id(second, BINANCE))
    assert lookups and lost.venue_order_id == str(at_venue(exchange, lost)[0].order_id)  # found by its client id
    assert len(exchange.orders("BTC/USDT")) == len(exchange.trades("BTC/USDT")) == 4
    assert p.filled_quantity == D("0.01") and len(p.fills) == 4
    assert len(await fills_of(client, lost.order_id)) == 1
    assert not [e for e in await trail(client, p.order_id) if e[0] == "slice_carried"]


async def test_a_child_refused_by_the_venue_stops_the_parent_with_the_reason_on_its_trail(
    live, client, exchange
) -> None:
    await live()
    p = await placed_algo(client, "lva-rej-1", "twap", "0.01", algo=AlgoSpec(duration_ms=3000, slices=3))

    async def first_filled() -> Order | None:
        cur = await order(client, p.order_id)
        return cur if cur.filled_quantity > 0 else None

    await eventually(first_filled, what="the first child filled")
    exchange.set_balance("USDT", "10")  # the next child cannot pay: Binance refuses it (-2010)
    p = await parent_until(client, p.order_id, *DONE)
    kids = await kids_of(client, p)
    assert len(kids) == 2 and kids[1].status is S.REJECTED, [(k.status, k.reason) for k in kids]
    why = f"child {kids[1].order_id} rejected by binance"
    # README: a child rejected by the venue (funds, rules) stops the parent: canceled, with the reason; its fills stay
    assert p.status is S.CANCELED and (p.reason or "").startswith(why), p.reason
    assert p.filled_quantity == kids[0].filled_quantity == kids[0].quantity == D("0.00334")
    events = await trail(client, p.order_id)
    assert any(ev == "stopping" and r.startswith(why) for ev, r in events), events
    assert events[-1][0] == "canceled"
    assert p.algo_state is not None
    while now_ms() < p.algo_state.start_ms + 2500:  # the third slice's time passes: nothing more is sent
        assert len((await order(client, p.order_id)).children) == 2
        assert len(exchange.orders("BTC/USDT")) == 1  # the refused one never made an order there
        await asyncio.sleep(0.1)


async def test_the_service_killed_while_a_childs_create_is_in_flight_resumes_and_sends_no_slice_twice(
    live, client, exchange
) -> None:
    """Killed (a graceful stop of every actor) while the second child's create has no answer yet, and down while
    two more slices fall due: the next run finds that child at the venue by its client id (never sent again), merges
    the overdue slices and catches up; and the stopping router made no child its stopped venue could not take (it
    did: such children were taken, after the restart, for children whose answer was lost - rejected as unknown to
    the venue, their quantity never traded)."""
    sut = await live()
    exchange.inject_fault("slow", after=1, seconds=3)  # the second child: taken at once, its answer comes too late
    p = await placed_algo(client, "lva-kill-1", "twap", "0.012", algo=AlgoSpec(duration_ms=6000, slices=6))
    assert p.algo_state is not None
    start = p.algo_state.start_ms
    second = venue_client_id(slice_client_id(p.order_id, 1), BINANCE)

    async def second_at_venue() -> bool:
        return bool(exchange.orders("BTC/USDT", client_order_id=second))

    await eventually(second_at_venue, what="the second child at the venue, its answer not back")
    await sut.stop()  # the whole service, while that create has no answer
    await eventually(lambda: _after(start + 3500), timeout=10, what="slices 2 and 3 falling due while down")
    back = now_ms()
    await sut.start()
    p = await parent_until(client, p.order_id, *DONE, timeout=30)
    kids = await kids_of(client, p)
    assert not [k for k in kids if k.status is S.REJECTED], [(k.client_order_id, k.reason) for k in kids]
    if back < start + 5000:  # back before the last slice: the backlog is spread over the slices to come
        assert p.status is S.FILLED, (p.status, p.reason)
    else:  # (a very slow machine) back after it: one slice's size at most, the rest left unfilled
        assert p.status is S.EXPIRED and (p.reason or "").startswith("unfilled at the end of the schedule"), p.reason
    assert p.algo_state is not None and sorted(p.algo_state.sent) == list(range(6)) == sorted(set(p.algo_state.sent))
    coids = [venue_client_id(k.client_order_id, BINANCE) for k in kids]
    assert len(set(coids)) == len(coids) < 6  # the overdue slices merged into one child
    for c in coids:  # never sent twice: one create and one order at the venue per child
        assert posts(exchange, c) == 1 and len(exchange.orders("BTC/USDT", client_order_id=c)) == 1
    assert len(exchange.orders("BTC/USDT")) == len(kids) and all(k.status is S.FILLED for k in kids)
    assert p.filled_quantity == sum((k.filled_quantity for k in kids), D(0)) <= D("0.012")
    assert len(p.fills) == len(exchange.trades("BTC/USDT")) == len(kids)
    notes = [r for ev, r in await trail(client, p.order_id) if ev == "slice_sent"]
    assert any("merged: overdue by" in n and "after a restart" in n for n in notes), notes


async def _after(ms: int | None) -> bool:
    return ms is not None and now_ms() >= ms


async def test_a_child_the_venue_never_got_is_rejected_after_the_grace_never_resent_nor_traded_again(
    live, client, exchange
) -> None:
    """The second child's create has no answer and the venue never took it: looked up by its client id until
    VENUE_UNKNOWN_GRACE_MS (1 s), then rejected as unknown to the venue - never sent again under its id - and, as
    it may still show up at the venue and fill, its quantity is never traded again by a later slice (never more
    than the parent): the parent ends expired with that much left, and the trail says why (child_unknown)."""
    await live()
    exchange.inject_fault("unknown_status", placed=False, after=1)  # -1007: the second child never reached it
    p = await placed_algo(client, "lva-unk-1", "twap", "0.012", algo=AlgoSpec(duration_ms=12000, slices=6))
    p = await parent_until(client, p.order_id, *DONE, timeout=30)
    assert p.status is S.EXPIRED, (p.status, p.reason)
    assert p.reason == "unfilled at the end of the schedule: 0.002 left", p.reason
    kids = await kids_of(client, p)
    lost = kids[1]
    assert lost.client_order_id == slice_client_id(p.order_id, 1) and lost.status is S.REJECTED
    assert (lost.reason or "").startswith("unknown to the venue:"), lost.reason
    assert posts(exchange, venue_client_id(lost.client_order_id, BINANCE)) == 1 and not at_venue(exchange, lost)
    assert p.filled_quantity == D("0.010") == sum((k.filled_quantity for k in kids), D(0))
    assert all(k.quantity == D("0.002") for k in kids)  # no later child took the lost one's quantity on
    assert len(exchange.orders("BTC/USDT")) == len(kids) - 1 == len(exchange.trades("BTC/USDT"))
    events = await trail(client, p.order_id)
    assert any(ev == "child_unknown" for ev, _ in events), events


# -- several venues (tests/integration/test_multi_venue.py has the set-up: Binance, Alpaca and paper at once) ----
binance = multi_venue.binance
alpaca = multi_venue.alpaca
multi = multi_venue.multi


def alpaca_orders(ex: AlpacaTestExchange, coid: str) -> list:
    return [o for o in ex.engine.orders.values() if o.client_order_id == coid]


async def test_a_twap_naming_its_exchange_sends_every_child_there(multi, client, binance, alpaca) -> None:
    sut = await multi()
    await multi_venue.seen_by_router(sut, "alpaca", "BTC_USDT", "59800")  # alpaca is the cheaper: unnamed goes there
    reply = await submit(
        client, "lva-mv-named", type="twap", quantity=D("0.01"), exchange="binance",
        algo=AlgoSpec(duration_ms=1500, slices=3),
    )  # fmt: skip
    assert reply.ok and reply.order is not None, reply.detail
    p = await parent_until(client, reply.order.order_id, *DONE)
    assert p.status is S.FILLED and p.venue == "binance", (p.status, p.reason, p.venue)
    kids = await kids_of(client, p)
    assert len(kids) == 3 and all(k.venue == "binance" and k.status is S.FILLED for k in kids)
    for k in kids:
        assert posts(binance, venue_client_id(k.client_order_id, BINANCE)) == 1
        assert not alpaca_orders(alpaca, k.client_order_id)
    assert len(binance.orders("BTC/USDT")) == 3 and not alpaca.engine.orders
    assert p.filled_quantity == D("0.01") == sum((k.filled_quantity for k in kids), D(0))


async def test_an_unnamed_twap_is_routed_once_as_a_whole_and_its_children_stay_on_that_venue(
    multi, client, binance, alpaca
) -> None:
    """README: a parent's ``exchange`` is where its children go - named by the order, else chosen as for any order
    (ROUTING, best price with fees, for its whole quantity) when it is accepted. Its children stay there even when
    another venue's book becomes the better one mid-schedule: one parent, one venue, one reservation."""
    sut = await multi()
    await multi_venue.seen_by_router(sut, "alpaca", "BTC_USDT", "59800")
    await multi_venue.seen_by_router(sut, "binance", "BTC_USDT", "60000")
    reply = await submit(
        client, "lva-mv-best", type="twap", quantity=D("0.03"), algo=AlgoSpec(duration_ms=3000, slices=3)
    )
    assert reply.ok and reply.order is not None, reply.detail
    p = reply.order
    # alpaca: 59800 x 1.0025 = 59949.5 beats binance: 60000 x 1.001 = 60060
    assert p.venue == "alpaca" and p.routing is not None and "59949.5" in p.routing and "60060" in p.routing

    async def first_filled() -> Order | None:
        cur = await order(client, p.order_id)
        return cur if cur.filled_quantity > 0 else None

    await eventually(first_filled, what="the first child filled at alpaca")
    binance.set_book("BTC/USDT", bids=[("58990", "1")], asks=[("59000", "1")])  # binance is now the cheaper
    await multi_venue.seen_by_router(sut, "binance", "BTC_USDT", "59000")
    p = await parent_until(client, p.order_id, *DONE)
    assert p.status is S.FILLED, (p.status, p.reason)
    kids = await kids_of(client, p)
    assert len(kids) == 3 and all(k.venue == "alpaca" and k.status is S.FILLED for k in kids)
    for k in kids:
        assert len(alpaca_orders(alpaca, k.client_order_id)) == 1
    assert not binance.orders("BTC/USDT")
    assert p.filled_quantity == D("0.03") == sum((k.filled_quantity for k in kids), D(0))
