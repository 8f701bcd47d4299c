"""A VWAP's volume profile over the real bus (review findings M2 and m3 of issue 20): the weights come only from the
part of the lookback window the order-router watched in full, and only from the parent's venue's trades.

Same set-up as tests/integration/test_exec_algos.py: MARKET_DATA=none, the paper venue trades on the unnamed books and
its market's trades are the unnamed ones (``Trade.venue`` None); the test publishes both.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from schemas.messages import AlgoSpec, OrderEventsPage, OrderEventsQuery, OrderStatus, Trade, now_ms
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_exec_algos import children
from tests.integration.test_gateway_orders import api  # noqa: F401 (the fixture)
from tests.integration.test_order_types import placed, publish_book, settings_for, until
from tests.tcp_proxy import TcpProxy

S = OrderStatus


async def trade(client, ts: int, qty: str, venue: str | None = None) -> None:
    t = Trade(pair="BTC_USDT", price=D(100), quantity=D(qty), side="buy", ts=ts, venue=venue)
    await client.publish(client.subjects.trades("BTC_USDT"), t)


async def seen(router, venue: str | None, total: D) -> None:
    """Until the router's volume of ``venue``'s BTC_USDT trades holds ``total`` (core NATS: once delivered)."""

    async def check():
        market = router.algos.volume.get((venue, "BTC_USDT"))
        return (market is not None and sum(market.cells[-1].values(), D(0)) == total) or None

    await eventually(check, what=f"{total} of {venue} trades at the router")


async def test_a_vwap_right_after_a_restart_gets_a_flat_schedule_not_one_child(make_system, client):
    """M2: the router restarted a moment ago, every trade it has seen is in the last bucket of the lookback window
    (10 min, 4 buckets). Before: weights [0, 0, 0, 6] and the whole quantity in one child at the last bucket's
    time. Now: the buckets it did not watch in full get their time share - none was - so flat, said on the parent's
    trail and in algoState."""
    sut = await make_system()
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    await trade(client, now_ms() - 400_000, "50")  # seen by the first run, lost by the restart
    await sut.stop("order-router")
    await sut.start("order-router")
    router = sut.running["order-router"]
    watched = router.algos.watching_since  # type: ignore[attr-defined]
    assert watched is not None
    await publish_book(client, [("99.00", "50")], [("100.00", "50")])
    now = now_ms()
    for ts in (now - 300, now - 200, now - 100):
        await trade(client, ts, "2")
    await seen(router, None, D(6))
    spec = AlgoSpec(duration_ms=2000, slices=4, lookback_ms=600_000)
    p = await placed(client, "vwap-flat", "buy", "0.8", "vwap", algo=spec)
    st = p.algo_state
    assert st is not None and st.weights == [D("0.25")] * 4
    assert st.profile_source == "flat" and st.covered_from_ms is not None and st.covered_from_ms >= watched
    assert p.reason is not None and p.reason.startswith("vwap profile flat: BTC_USDT trades (unnamed")
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=p.order_id), OrderEventsPage
    )
    assert "watched in full only since" in (page.events[0].order.reason or "")  # on the trail: its submitted event
    p = await until(client, p.order_id, S.FILLED, timeout=20)
    kids = await children(client, p)
    assert [k.quantity for k in kids] == [D("0.200")] * 4  # four slices, not one of 0.8
    assert all(k.created_at >= p.algo_state.start_ms + i * 500 for i, k in enumerate(kids))  # at each bucket


async def test_a_vwap_on_a_window_watched_in_full_follows_its_venues_volume_only(api):  # noqa: F811
    """The window (8 s, 2 buckets) lies after the router subscribed: the weights follow the volume, 2 then 6.
    m3: another venue's trades of the same pair (binance's, 100 in the first bucket) are not this venue's volume.
    Through REST: algoState.profileSource "volume", coveredFromMs, weights as shares of 1."""
    router = api.system.running["order-router"]
    watched = router.algos.watching_since  # type: ignore[attr-defined]
    assert watched is not None
    lookback = 8000
    await asyncio.sleep(max(0.0, (watched + lookback + 300 - now_ms()) / 1000))  # the whole window after it
    await api.book([("99.00", "50")], [("100.00", "50")])
    now = now_ms()
    # the window is [c - 8000, c) with c the acceptance, a moment later: bucket 0 [c - 8000, c - 4000), bucket 1 after
    for ts, qty in ((now - 5500, "1"), (now - 5000, "1"), (now - 1000, "6")):
        await trade(api.bus, ts, qty)
    await trade(api.bus, now - 5200, "100", venue="binance")
    await seen(router, None, D(8))
    await seen(router, "binance", D(100))
    algo = {"durationMs": 1000, "slices": 2, "lookbackMs": lookback}
    p = await api.place(pair="BTC_USDT", side="buy", quantity=0.8, type="vwap", algo=algo, clientOrderId="vwap-vol")
    o = await api.order(p["orderId"])  # (GET /api/orders/{id}: the order with its algoState)
    st = o["algoState"]
    assert st["weights"] == [D("0.25"), D("0.75")]
    assert st["profileSource"] == "volume" and watched <= st["coveredFromMs"] <= o["createdAt"] - lookback
    assert o["reason"] is None  # (nothing to say: every bucket by volume)
    o = await api.until(p["orderId"], "filled", timeout=20)
    kids = [await api.order(cid) for cid in o["children"]]
    assert [D(k["quantity"]) for k in kids] == [D("0.2"), D("0.6")]  # the profile: 1/4 then 3/4


async def test_a_reconnect_of_the_router_is_a_gap_in_the_trades_it_watched(nats_url, prefix, client):
    """Core NATS: trades published while the router's connection is down never reach it. Its watch starts again at
    the reconnect, so a window that holds the gap is not taken as fully watched (before: a window with its volume
    missing counted as quiet buckets, weight 0)."""
    proxy = TcpProxy(nats_url)
    sut = System(await proxy.start(), settings_for(nats_url, prefix))
    try:
        await sut.start()
        router = sut.running["order-router"]
        algos = router.algos  # type: ignore[attr-defined]
        lookback = 4000
        first = algos.watching_since
        assert first is not None
        await asyncio.sleep(max(0.0, (first + lookback + 300 - now_ms()) / 1000))  # the window after the watch
        assert proxy.close_client("tbx-order-router") == 1
        cut_at = now_ms()
        await trade(client, cut_at, "50")  # (published while it is away: lost to it)

        async def back():
            return (router.bus.nc.is_connected and router.bus.nc.stats["reconnects"] >= 1) or None  # type: ignore[attr-defined]

        await eventually(back, what="the router reconnected")
        await publish_book(client, [("99.00", "50")], [("100.00", "50")])
        await trade(client, now_ms(), "1")
        await seen(router, None, D(1))
        spec = AlgoSpec(duration_ms=1000, slices=4, lookback_ms=lookback)
        p = await placed(client, "vwap-gap", "buy", "0.4", "vwap", algo=spec)
        st = p.algo_state
        assert st is not None and st.covered_from_ms is not None and st.covered_from_ms >= cut_at
        assert st.profile_source in ("blend", "flat") and st.weights is not None and st.weights[0] == D("0.25")
        assert p.reason is not None and "watched in full" in p.reason
    finally:
        await sut.stop()
        await proxy.stop()
