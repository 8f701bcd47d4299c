"""The execution algorithms end to end over the real bus (paper venue, books and trades the test publishes).

MARKET_DATA=none: the only books are ours, so every child's fill is predictable (tests/integration/test_order_types.py
has the markets: BTC_USDT tick 0.01, step 0.001, minimum notional 1, taker fee 0.1%).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from domain.algo_orders import slice_client_id
from domain.algos import twap_schedule
from schemas.messages import (
    AlgoSpec,
    CancelOrder,
    CommandReply,
    Order,
    OrderEventsPage,
    OrderEventsQuery,
    OrderStatus,
    RiskCommand,
    RiskStateChange,
    now_ms,
)
from tests.helpers import eventually
from tests.integration.test_gateway_orders import api, assert_problem  # noqa: F401 (the fixture)
from tests.integration.test_order_types import events, order, placed, publish_book, submit, until

S = OrderStatus
DONE = (S.FILLED, S.CANCELED, S.EXPIRED, S.REJECTED)


async def children(client, parent: Order) -> list[Order]:
    return [await order(client, cid) for cid in parent.children]


async def test_twap_sends_its_slices_at_their_times_and_sizes_and_ends_filled(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    spec = AlgoSpec(duration_ms=2000, slices=4)
    p = await placed(client, "twap-1", "buy", "1", "twap", algo=spec)
    assert p.type == "twap" and p.algo is not None and p.algo.seed is not None and p.algo_state is not None
    p = await until(client, p.order_id, S.FILLED, timeout=20)
    kids = await children(client, p)
    plan = twap_schedule(D(1), p.algo_state.start_ms, 2000, 4, D("0.001"), min_quantity=D("0.01"), seed=p.algo.seed)
    assert [k.quantity for k in kids] == [s.quantity for s in plan] == [D("0.250")] * 4
    for k, s in zip(kids, plan, strict=True):
        assert k.created_at >= s.at_ms  # never early
        assert k.role == "slice" and k.parent_order_id == p.order_id and k.type == "market"
        assert k.client_order_id == slice_client_id(p.order_id, s.index) and k.status is S.FILLED
    assert p.algo_state.sent == [0, 1, 2, 3]
    assert p.filled_quantity == D(1) and p.average_price == D(100) and p.fees == D("0.1")
    assert len(p.fills) == 4 and {f.fill_id for f in p.fills} == {f.fill_id for k in kids for f in k.fills}
    assert (await events(client, p.order_id)).count("slice_sent") == 4


async def test_an_iceberg_never_shows_more_than_its_display_quantity(make_system, client):
    sut = await make_system()
    venue = sut.running["order-router"].venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    spec = AlgoSpec(display_quantity=D("0.3"))
    p = await placed(client, "ice-1", "buy", "1", "iceberg", price="100.00", algo=spec)
    clips = [D("0.3"), D("0.3"), D("0.3"), D("0.1")]
    for i, clip in enumerate(clips):

        async def resting(i: int = i, clip: D = clip):
            opens = await venue.fetch_open_orders("BTC_USDT")
            return opens if opens and opens[0].client_order_id == slice_client_id(p.order_id, i) else None

        opens = await eventually(resting, what=f"clip {i} resting")
        assert len(opens) == 1 and opens[0].quantity - opens[0].filled == clip <= spec.display_quantity
        await publish_book(client, [("99.00", "5")], [("99.95", "0.3")])  # crosses the clip: it fills at 100
        shown = await venue.fetch_open_orders("BTC_USDT")  # (still never more than the display)
        assert sum((o.quantity - o.filled for o in shown), D(0)) <= spec.display_quantity
        await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    p = await until(client, p.order_id, S.FILLED)
    kids = await children(client, p)
    assert [k.quantity for k in kids] == clips and all(k.type == "limit" and k.price == D(100) for k in kids)
    assert p.filled_quantity == D(1) and p.average_price == D(100)
    assert all(f.liquidity == "maker" for f in p.fills)


async def test_a_twap_against_a_thin_book_beats_one_market_order(make_system, client):
    """The reason these exist: the same thin book, replayed (the venue's liquidity comes back between slices)."""
    await make_system()
    asks = [("100.00", "0.200"), ("101.00", "0.200"), ("102.00", "0.200"), ("103.00", "0.200"), ("105.00", "5")]
    await publish_book(client, [("99.00", "5")], asks)
    market = await until(client, (await placed(client, "thin-mkt", "buy", "0.8")).order_id, S.FILLED)
    assert market.average_price == D("101.5")

    stop = asyncio.Event()

    async def replay() -> None:  # the book as it recovers between slices
        while not stop.is_set():
            await publish_book(client, [("99.00", "5")], asks, settle=0.05)

    feed = asyncio.create_task(replay())
    try:
        p = await placed(client, "thin-twap", "buy", "0.8", "twap", algo=AlgoSpec(duration_ms=2400, slices=4))
        p = await until(client, p.order_id, S.FILLED, timeout=20)
    finally:
        stop.set()
        await feed
    assert p.average_price is not None and market.average_price is not None
    assert p.average_price < market.average_price
    assert p.average_price == D(100)  # each slice took the recovered top of the book


async def test_a_vwap_with_a_profile_in_the_request(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    spec = AlgoSpec(duration_ms=900, profile=[D(1), D(0), D(2)])
    p = await placed(client, "vwap-2", "sell", "0.3", "vwap", algo=spec)
    p = await until(client, p.order_id, S.FILLED, timeout=20)
    kids = await children(client, p)
    assert [k.quantity for k in kids] == [D("0.100"), D("0.200")]  # the empty bucket sends nothing
    assert p.algo_state is not None and p.algo_state.sent == [0, 1]  # (slices are numbered as sent)
    assert kids[1].created_at >= p.algo_state.start_ms + 600  # the third bucket's start
    assert p.average_price == D(99)


async def test_cancel_mid_schedule_stops_the_schedule_and_cancels_the_working_clip(make_system, client):
    sut = await make_system()
    venue = sut.running["order-router"].venue  # type: ignore[attr-defined]
    await publish_book(client, [("99.00", "5")], [("101.00", "5")])
    ice = await placed(client, "ice-c", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.4")))
    await eventually(lambda: venue.fetch_open_orders("BTC_USDT"), what="the first clip resting")
    await publish_book(client, [("99.00", "5")], [("99.95", "0.1")])  # 0.1 of the clip fills
    await until(client, ice.order_id, S.PARTIALLY_FILLED)
    reply = await client.request(
        client.subjects.orders_cancel, CancelOrder(order_id=ice.order_id, reason="canceled by request"), CommandReply
    )
    assert reply.ok, reply
    ice = await until(client, ice.order_id, S.CANCELED)
    assert ice.filled_quantity == D("0.1") and ice.reason == "canceled by request"
    clip = await order(client, ice.children[0])
    assert clip.status is S.CANCELED and not await venue.fetch_open_orders("BTC_USDT")
    assert len(ice.children) == 1

    # a TWAP canceled between slices: no slice after the cancel
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    tw = await placed(client, "twap-c", "buy", "1", "twap", algo=AlgoSpec(duration_ms=3000, slices=5))
    tw = await eventually(
        lambda: _with(client, tw.order_id, lambda o: len(o.children) >= 2), what="two slices", timeout=15
    )
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=tw.order_id), CommandReply)
    assert reply.ok
    tw = await until(client, tw.order_id, S.CANCELED)
    n = len(tw.children)
    await asyncio.sleep(1.5)  # two more slice times pass: nothing is sent
    later = await order(client, tw.order_id)
    assert len(later.children) == n and later.status is S.CANCELED and later.filled_quantity == D("0.2") * n


async def _with(client, oid, ok):
    o = await order(client, oid)
    return o if ok(o) else None


async def test_restart_mid_schedule_sends_no_slice_twice_and_skips_none_without_a_reason(make_system, client):
    sut = await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    spec = AlgoSpec(duration_ms=3000, slices=6)
    p = await placed(client, "twap-r", "buy", "0.6", "twap", algo=spec)
    p = await eventually(lambda: _with(client, p.order_id, lambda o: len(o.children) >= 2), what="two slices")
    await sut.stop("order-router")
    assert p.algo_state is not None
    down_until = p.algo_state.start_ms + 4 * 500 + 100  # slices 2 and 3 (and 4?) fall due while it is down
    await asyncio.sleep(max(0.0, (down_until - now_ms()) / 1000))
    await sut.start("order-router")
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    p = await until(client, p.order_id, S.FILLED, timeout=20)
    assert p.algo_state is not None and sorted(p.algo_state.sent) == list(range(6))
    assert len(p.algo_state.sent) == 6  # each index once
    kids = await children(client, p)
    assert len({k.client_order_id for k in kids}) == len(kids) < 6  # overdue slices merged into one child
    assert sum((k.filled_quantity for k in kids), D(0)) == D("0.6") == p.filled_quantity
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=p.order_id), OrderEventsPage
    )
    notes = [e.order.reason or "" for e in page.events if e.event == "slice_sent"]
    assert any("merged: overdue by" in n and "after a restart" in n for n in notes), notes


async def test_algo_parameters_are_refused_naming_the_field(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    cases = [
        ("twap", AlgoSpec(slices=3), {}, "algo.durationMs"),
        ("twap", AlgoSpec(duration_ms=1000, slices=0), {}, "algo.slices"),
        ("twap", AlgoSpec(duration_ms=1000, slices=3, size_jitter=D("0.9")), {}, "algo.sizeJitter"),
        ("vwap", AlgoSpec(duration_ms=1000, profile=[D(0), D(0)]), {}, "algo.profile"),
        ("iceberg", AlgoSpec(display_quantity=D("0.1")), {}, "price"),
        ("iceberg", AlgoSpec(display_quantity=D("2")), {"price": "100.00"}, "algo.displayQuantity"),
        ("twap", AlgoSpec(duration_ms=1000, slices=2), {"stop_loss": "90.00"}, "stopLoss"),
        ("twap", None, {}, "algo"),
    ]
    for i, (kind, spec, extra, field) in enumerate(cases):
        r = await submit(client, f"bad-{i}", "buy", "1", kind, algo=spec, **extra)
        assert not r.ok and r.field == field, (kind, spec, r)
        assert r.code == "INVALID_ALGO" or field == "price", r


async def test_emergency_stop_stops_every_algorithm(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "50")], [("101.00", "50")])
    tw = await placed(client, "twap-e", "buy", "1", "twap", algo=AlgoSpec(duration_ms=60_000, slices=10))
    ice = await placed(client, "ice-e", "buy", "1", "iceberg", price="100.00", algo=AlgoSpec(display_quantity=D("0.2")))
    ice = await eventually(lambda: _with(client, ice.order_id, lambda o: len(o.children) == 1), what="a clip")
    stop = await client.request(
        client.subjects.risk_command, RiskCommand(action="emergency_stop"), RiskStateChange, timeout=15
    )
    assert stop.state == "HALTED" and {tw.order_id, ice.order_id} <= set(stop.canceled_orders)
    tw = await until(client, tw.order_id, S.CANCELED)
    ice = await until(client, ice.order_id, S.CANCELED)
    assert (await order(client, ice.children[0])).status is S.CANCELED
    n = len(tw.children)
    await asyncio.sleep(6.5)  # the TWAP's next slice time passes: nothing is sent
    assert len((await order(client, tw.order_id)).children) == n


# -- over real HTTP --------------------------------------------------------------------------------------
async def test_rest_places_algorithm_orders_and_refuses_bad_parameters_naming_the_field(api):  # noqa: F811
    await api.book([("99.00", "50")], [("100.00", "50")])
    twap = {"pair": "BTC_USDT", "side": "buy", "quantity": 0.4, "type": "twap"}
    status, _, body = await api.call("POST", "/api/orders", twap | {"algo": {"durationMs": 600, "slices": 2}})
    assert status == 201 and body["type"] == "twap", body
    parent = await api.until(body["orderId"], "filled", timeout=15)
    assert len(parent["children"]) == 2 and parent["filledQuantity"] == D("0.4")
    assert parent["algo"]["durationMs"] == 600 and parent["algoState"]["sent"] == [0, 1]
    for cid in parent["children"]:  # each child carries its parent
        child = await api.order(cid)
        assert child["parentOrderId"] == parent["orderId"] and child["role"] == "slice"
    # modify of a parent: a clear 4xx
    ice = await api.place(
        pair="BTC_USDT", side="buy", quantity=1, type="iceberg", price=98, algo={"displayQuantity": 0.25}
    )
    got = await api.call("PATCH", f"/api/orders/{ice['orderId']}", {"price": 97})
    assert "not supported for algorithm orders" in assert_problem(got, 422, "orderId", "MODIFY_REFUSED")["detail"]
    status, _, canceled = await api.call("DELETE", f"/api/orders/{ice['orderId']}")
    assert status == 200 and canceled["status"] in ("pending_cancel", "canceled")
    await api.until(ice["orderId"], "canceled")
    # refusals name the field
    for algo, extra, field in (
        ({"slices": 2}, {}, "algo.durationMs"),
        ({"durationMs": 1000, "slices": 0}, {}, "algo.slices"),
        ({"durationMs": 1000, "slices": 2, "timeJitter": 0.7}, {}, "algo.timeJitter"),
        ({"durationMs": 1000, "slices": 2, "displayQuantity": 0.1}, {}, "algo.displayQuantity"),
        ({"durationMs": 1000, "slices": 2, "bogus": 1}, {}, "algo.bogus"),
        ({"durationMs": 1000, "slices": 2}, {"stopLoss": 90}, "stopLoss"),
    ):
        got = await api.call("POST", "/api/orders", twap | extra | {"algo": algo})
        assert_problem(got, 422, field)
    got = await api.call("POST", "/api/orders", twap | {"type": "iceberg", "algo": {"displayQuantity": 0.1}})
    assert_problem(got, 422, "price")
    got = await api.call("POST", "/api/orders", twap | {"type": "vwap", "algo": {"durationMs": 1000, "profile": [0]}})
    assert_problem(got, 422, "algo.profile", "INVALID_ALGO")
