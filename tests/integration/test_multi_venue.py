"""One service on three venues at once (issue 17): the local Binance and Alpaca test exchanges, through real ccxt
pointed at them, and the paper venue trading on Binance's books. Best-price routing with fees, a venue going
down (new orders go to the other; an order whose outcome is unknown stays on its venue until that venue says it
lacks it), books and balances per venue, a balance on one venue never paying for an order on another."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import msgspec
import pytest

from bus.client import Bus
from schemas.messages import Empty, PortfolioSnapshot, TransitionState, now_ms
from schemas.subjects import Subjects
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.exchanges.alpaca_model import AssetSpec
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_live_binance import order_of, submit, until
from tests.integration.test_order_types import settings_for

D = Decimal
BN_KEY, BN_SECRET = "multi-binance-key-0123456789", "multi-binance-secret-abcdef0123"
AL_KEY, AL_SECRET = "PKMULTITEST123", "multi-alpaca-secret-abcdef"


@pytest.fixture
async def binance() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(
        api_key=BN_KEY, secret=BN_SECRET, symbols=("BTC/USDT", "ETH/USDT"), balances={"USDT": "100000", "BTC": "1"}
    )
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59990", "1")], asks=[("60000", "0.5"), ("60010", "1")])
    ex.set_book("ETH/USDT", bids=[("2999", "10")], asks=[("3001", "10")])
    yield ex
    await ex.stop()


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaTestExchange]:
    assets = [AssetSpec("BTC/USDT", D("0.0001"), D("0.000000001"), D("1"), "Bitcoin / USD Tether")]
    ex = AlpacaTestExchange(api_key=AL_KEY, secret=AL_SECRET, assets=assets, cash="0", positions={"USDT": "5000"})
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59700", "1")], asks=[("59800", "1")])  # cheaper, with a dearer fee (0.25 %)
    yield ex
    await ex.stop()


def multi_env(binance: BinanceTestExchange, alpaca: AlpacaTestExchange, **extra: str) -> dict[str, str]:
    return {
        "PAPER_TRADING": "false",
        "LIVE_TRADING": "true",
        "EXCHANGES": "binance,alpaca,paper",
        "BINANCE_API_KEY": BN_KEY,
        "BINANCE_API_SECRET": BN_SECRET,
        "BINANCE_API_URL": binance.base_url,
        "ALPACA_API_KEY": AL_KEY,  # the spec's own names
        "ALPACA_API_SECRET": AL_SECRET,
        "ALPACA_API_URL": alpaca.base_url,
        "ALPACA_PAIRS": "BTC_USDT",
        "API_TOKEN": "multi-token",
        "MARKET_DATA": "venue",
        "MARKET_DATA_INTERVAL": "50",
        "EXCHANGE_POLL_MS": "100",
        "RECONCILE_INTERVAL_MS": "300",
        "VENUE_UNKNOWN_GRACE_MS": "1500",
        "INITIAL_BALANCE": "100000",
    } | extra


async def live_approved(nats_url: str, prefix: str) -> None:
    """A paper venue beside live venues starts in paper (issue 18): these tests are about live routing, so the
    deployment is as after an approved paper-to-live transition at its last stage (100 %)."""
    bus = await Bus.connect(nats_url, name="setup", subjects=Subjects(prefix))
    try:
        await bus.ensure_layout()
        kv = await bus.kv(bus.subjects.kv_transition)
        state = TransitionState(mode="live", stage=3, stage_started_at=now_ms(), updated_at=now_ms())
        await kv.put("state", msgspec.json.encode(state))
    finally:
        await bus.close()


@pytest.fixture
async def multi(nats_url, prefix, binance, alpaca) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    systems: list[System] = []
    await live_approved(nats_url, prefix)

    async def make(**extra: str) -> System:
        sut = System(nats_url, settings_for(nats_url, prefix, **multi_env(binance, alpaca, **extra)))
        systems.append(sut)
        await sut.start()
        return sut

    yield make
    for sut in systems:
        await sut.stop()


async def seen_by_router(sut: System, venue: str, pair: str, ask: str) -> None:
    """Wait until the order-router has this venue's book with this best ask (the md-feed polls every 50 ms)."""
    router = sut.running["order-router"]

    async def probe() -> bool | None:
        book = router.router.book_of(venue, pair)  # type: ignore[attr-defined]
        return True if book is not None and book.asks and book.asks[0][0] == D(ask) else None

    await eventually(probe, timeout=10, what=f"{venue} {pair} ask {ask} at the order-router")


def posts_binance(ex: BinanceTestExchange, coid: str) -> int:
    return len(ex.requests_for("POST", "/api/v3/order", newClientOrderId=coid))


def posts_alpaca(ex: AlpacaTestExchange, coid: str) -> int:
    return sum(1 for o in ex.engine.orders.values() if o.client_order_id == coid)


async def portfolio(client: Bus) -> PortfolioSnapshot:
    snap = await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot, timeout=5)
    assert isinstance(snap, PortfolioSnapshot)
    return snap


async def test_best_price_routing_picks_the_cheaper_book_fees_included(multi, client, binance, alpaca) -> None:
    sut = await multi()
    await seen_by_router(sut, "alpaca", "BTC_USDT", "59800")
    await seen_by_router(sut, "binance", "BTC_USDT", "60000")
    # alpaca: 59800 x 1.0025 = 59949.5 beats binance: 60000 x 1.001 = 60060
    reply = await submit(client, "mv-best-1")
    assert reply.ok, reply.detail
    o = await until(client, "mv-best-1", "filled")
    assert o.venue == "alpaca" and o.paper_trade is False
    assert o.routing is not None and all(v in o.routing for v in ("binance", "alpaca", "paper")), o.routing
    assert "59949.5" in o.routing and "60060" in o.routing, o.routing
    assert "paper excluded" in o.routing  # beside live venues, paper takes only the orders naming it
    assert (posts_alpaca(alpaca, "mv-best-1"), posts_binance(binance, "mv-best-1")) == (1, 0)

    # alpaca's book is still cheaper by price (59990 < 60000), but not with its fee: 60139.975 > 60060
    alpaca.set_book("BTC/USDT", bids=[("59900", "1")], asks=[("59990", "1")])
    await seen_by_router(sut, "alpaca", "BTC_USDT", "59990")
    reply = await submit(client, "mv-best-2")
    assert reply.ok, reply.detail
    o = await until(client, "mv-best-2", "filled")
    assert o.venue == "binance", o.routing
    assert (posts_alpaca(alpaca, "mv-best-2"), posts_binance(binance, "mv-best-2")) == (0, 1)


async def test_a_named_venue_is_used_and_an_order_on_alpaca_cannot_spend_binances_usdt(
    multi, client, binance, alpaca
) -> None:
    await multi()
    reply = await submit(client, "mv-named-1", exchange="paper")
    assert reply.ok, reply.detail
    o = await until(client, "mv-named-1", "filled")
    assert o.venue == "paper" and o.paper_trade is True and o.fallback == []
    # alpaca holds 5000 USDT (binance 100000, paper 100000): 0.2 BTC at ~59800 is not payable there
    reply = await submit(client, "mv-poor-1", exchange="alpaca", quantity=D("0.2"))
    assert not reply.ok and reply.code == "INSUFFICIENT_BALANCE", reply
    assert "alpaca" in (reply.detail or "")
    assert posts_alpaca(alpaca, "mv-poor-1") == 0
    # unnamed, the same order goes where it can be paid for (alpaca is cheaper, but cannot pay)
    reply = await submit(client, "mv-poor-2", quantity=D("0.2"))
    assert reply.ok, reply.detail
    o = await until(client, "mv-poor-2", "filled")
    assert o.venue == "binance" and posts_alpaca(alpaca, "mv-poor-2") == 0


async def test_a_venue_down_new_orders_go_to_the_next_and_an_unknown_outcome_waits_for_its_venue(
    multi, client, binance, alpaca
) -> None:
    sut = await multi()
    await seen_by_router(sut, "alpaca", "BTC_USDT", "59800")
    # the answer to alpaca's send is lost and the order was not carried out: its outcome is unknown
    alpaca.inject("drop_connection", "POST", "/v2/orders")
    reply = await submit(client, "mv-lost-1")
    o = reply.order or await order_of(client, "mv-lost-1")
    assert o is not None and o.venue == "alpaca" and o.venue_status is None
    # while alpaca may still have it, it is never sent elsewhere (grace: VENUE_UNKNOWN_GRACE_MS=1500)
    for _ in range(5):
        cur = await order_of(client, "mv-lost-1")
        assert cur is not None and (cur.venue != "alpaca" or posts_binance(binance, "mv-lost-1") == 0)
        if cur.venue != "alpaca":
            break
        assert posts_binance(binance, "mv-lost-1") == 0
        await asyncio.sleep(0.2)
    # once alpaca says it lacks it (looked up after the grace), it goes to the next venue: binance
    o = await until(client, "mv-lost-1", "filled", timeout=15)
    assert o.venue == "binance" and "alpaca" in (o.routing or "")
    assert posts_binance(binance, "mv-lost-1") == 1 and posts_alpaca(alpaca, "mv-lost-1") == 0

    # binance has the best price now, then goes down (connections refused): the order routed there goes to the
    # next venue at once (certainly not at binance: no connection was made), and the next ones skip binance
    alpaca.set_book("BTC/USDT", bids=[("59900", "1")], asks=[("59990", "1")])
    await seen_by_router(sut, "alpaca", "BTC_USDT", "59990")
    await binance.stop()
    for coid in ("mv-down-1", "mv-down-2"):
        reply = await submit(client, coid)
        assert reply.ok, reply.detail
        o = await until(client, coid, "filled", timeout=15)
        assert o.venue == "alpaca" and posts_binance(binance, coid) == 0, o.routing  # (never paper: not named)
    assert "binance" in (o.routing or "")


async def test_positions_and_balances_are_kept_per_venue(multi, client, binance, alpaca) -> None:
    await multi()
    for coid, venue in (("mv-pos-bn", "binance"), ("mv-pos-al", "alpaca"), ("mv-pos-pp", "paper")):
        reply = await submit(client, coid, exchange=venue)
        assert reply.ok, reply.detail
        await until(client, coid, "filled")

    async def all_booked() -> PortfolioSnapshot | None:
        snap = await portfolio(client)
        return snap if snap.fills_applied >= 3 else None

    snap = await eventually(all_booked, timeout=10, what="three fills booked")
    assert set(snap.by_exchange) >= {"binance", "alpaca", "paper"}
    for venue in ("binance", "alpaca", "paper"):
        mine = [p for p in snap.by_exchange[venue].positions if p.pair == "BTC_USDT" and p.quantity]
        assert len(mine) == 1 and mine[0].exchange == venue, (venue, mine)
    rows = [p for p in snap.positions if p.pair == "BTC_USDT" and p.quantity]
    assert sorted(p.exchange or "" for p in rows) == ["alpaca", "binance", "paper"]
    # each venue's USDT moved by its own fill only
    usdt = {v: next(b for b in snap.by_exchange[v].balances if b.currency == "USDT").total for v in snap.by_exchange}
    assert usdt["alpaca"] < D(5000) and usdt["binance"] < D(100000) and usdt["paper"] < D(100000)
    total = next(b for b in snap.balances if b.currency == "USDT").total
    assert total == sum(usdt.values())


async def test_every_venue_in_api_exchanges_and_its_test_then_one_down(
    multi, client, binance, alpaca, nats_url, prefix
) -> None:
    import aiohttp

    from tests.integration.test_gateway import start_gateway

    await multi()
    gw, base = await start_gateway(nats_url, prefix, **multi_env(binance, alpaca))
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer multi-token"}) as http:

            async def views(want: dict[str, set[str]]) -> dict[str, dict] | None:
                async with http.get(f"{base}/api/exchanges") as r:
                    got = {v["id"]: v for v in (await r.json())["exchanges"]}
                return got if all(got.get(k, {}).get("status") in s for k, s in want.items()) else None

            # (alpaca's limiter is kept busy by the tests' 100 ms polls: it may show degraded, never down)
            live = {"up", "degraded"}
            got = await eventually(lambda: views({"binance": live, "alpaca": live, "paper": {"up"}}), what="all up")
            assert list(got) == ["binance", "alpaca", "paper"]  # priority order
            assert [(v["ccxtId"], v["paper"]) for v in got.values()] == [
                ("binance", False), ("alpaca", False), ("paper", True)
            ]  # fmt: skip
            async with http.post(f"{base}/api/exchanges/test") as r:
                checks = {c["id"]: c for c in (await r.json())["exchanges"]}
            assert set(checks) == {"binance", "alpaca", "paper"} and all(c["ok"] for c in checks.values()), checks
            assert checks["binance"]["keysAccepted"] and checks["alpaca"]["balanceRead"]

            await binance.stop()  # down: the next call fails, the venue shows down, the others stay up
            async with http.post(f"{base}/api/exchanges/test") as r:
                checks = {c["id"]: c for c in (await r.json())["exchanges"]}
            assert not checks["binance"]["ok"] and checks["binance"]["error"]
            assert checks["alpaca"]["ok"] and checks["paper"]["ok"]
            await eventually(lambda: views({"binance": {"down"}, "alpaca": live}), timeout=15, what="binance down")
    finally:
        await gw.stop()


async def test_a_venue_down_at_start_is_skipped_by_routing_and_trades_again_once_back(
    multi, client, binance, alpaca
) -> None:
    from schemas.messages import RiskAlert

    heard: list[RiskAlert] = []

    async def on(a: RiskAlert, env: object) -> None:
        heard.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on)
    await alpaca.stop()  # alpaca (the cheapest book) does not answer when the service starts
    sut = await multi()  # ... the service starts all the same: the other venues trade
    router = sut.running["order-router"]
    reply = await submit(client, "mv-start-1")
    assert reply.ok, reply.detail
    o = await until(client, "mv-start-1", "filled")
    assert o.venue == "binance" and "alpaca down" in (o.routing or ""), o.routing
    assert any(a.code == "VENUE_DOWN" and "alpaca" in a.message for a in heard)
    # a named order waits for its venue (never sent elsewhere)
    named = await submit(client, "mv-start-named", exchange="alpaca")
    assert named.ok and named.order is not None and named.order.venue == "alpaca"

    await alpaca.start()  # back, on the same port: it starts, comes up, and trades again
    await eventually(lambda: asyncio.sleep(0, router.sessions["alpaca"].up() or None), timeout=30, what="alpaca up")
    await seen_by_router(sut, "alpaca", "BTC_USDT", "59800")
    assert any(a.code == "VENUE_UP" and "alpaca" in a.message for a in heard)
    o = await until(client, "mv-start-named", "filled", timeout=15)
    assert o.venue == "alpaca" and posts_alpaca(alpaca, "mv-start-named") == 1
    reply = await submit(client, "mv-start-2")
    assert reply.ok, reply.detail
    o = await until(client, "mv-start-2", "filled")
    assert o.venue == "alpaca", o.routing


async def test_a_venues_balance_readings_follow_its_own_fills_only(multi, client, binance, alpaca) -> None:
    """A fill on binance neither makes alpaca's next reading a later one nor keeps alpaca from being read: each
    venue's readings vouch for its own fills (the ledger compares them with that venue's books)."""
    from schemas.messages import VenueBalances

    readings: list[tuple[VenueBalances, int]] = []

    async def on(r: VenueBalances, env: object) -> None:
        readings.append((r, getattr(env, "seq", 0) or 0))

    s = client.subjects
    await multi()
    reply = await submit(client, "mv-bal-1", exchange="binance")
    assert reply.ok, reply.detail
    await until(client, "mv-bal-1", "filled")
    await client.subscribe(s.balances("alpaca"), VenueBalances, on)  # the readings published from now on
    mine = await eventually(lambda: asyncio.sleep(0, readings[-1][0] if readings else None), what="an alpaca reading")
    assert mine.venue == "alpaca" and mine.fills_seq == 0  # no alpaca fill yet: binance's does not count
    reply = await submit(client, "mv-bal-2", exchange="alpaca")
    assert reply.ok, reply.detail
    await until(client, "mv-bal-2", "filled")
    readings.clear()
    later = await eventually(
        lambda: asyncio.sleep(0, next((r for r, _ in readings if r.fills_seq > 0), None)), what="a later reading"
    )
    assert later.venue == "alpaca" and not later.opening


async def test_an_unnamed_reduce_only_order_goes_where_the_position_is(multi, client, binance, alpaca) -> None:
    sut = await multi()
    reply = await submit(client, "mv-ro-open", exchange="binance")
    assert reply.ok, reply.detail
    await until(client, "mv-ro-open", "filled")
    # alpaca bids far more (60500 x 0.9975 = 60348.75 against binance's 59990 x 0.999), but holds no position
    alpaca.set_book("BTC/USDT", bids=[("60500", "1")], asks=[("60600", "1")])
    await seen_by_router(sut, "alpaca", "BTC_USDT", "60600")
    reply = await submit(client, "mv-ro-close", side="sell", quantity=D("0.00999"), reduce_only=True)
    assert reply.ok, reply.detail
    o = await until(client, "mv-ro-close", "filled")
    assert o.venue == "binance" and "alpaca excluded (no BTC_USDT position there to reduce)" in (o.routing or "")
    assert posts_alpaca(alpaca, "mv-ro-close") == 0


async def test_bracket_legs_cut_off_from_their_rerouted_entry_by_a_crash_follow_it_at_start(
    make_system, client
) -> None:
    """A crash after the entry's reroute was stored, before its legs' were: at start the legs go where it went."""
    from loguru import logger

    from actors.order_router.store import OrderStore
    from tests.integration.test_order_types import placed, publish_book

    sut = await make_system(EXCHANGES="alpha=paper,beta=paper")
    await publish_book(client, [("59990", "1")], [("60000", "1")])
    entry = await placed(client, "mv-br-1", "buy", "0.01", "limit", price="50000", stop_loss="45000", exchange="alpha")
    legs = list((entry.linked_orders or {}).values())
    assert legs
    await sut.stop("order-router")
    store = OrderStore(client, logger)  # the entry moved to beta, its legs not (the crash)
    await store.load()
    moved = await store.update(entry.order_id, lambda c: msgspec.structs.replace(c, venue="beta"), "rerouted")
    assert moved is not None and moved.venue == "beta"
    await sut.start("order-router")
    router = sut.running["order-router"]
    assert all(router.store.orders[leg].venue == "beta" for leg in legs)  # type: ignore[attr-defined]


async def test_an_order_no_venue_can_take_is_kept_rejected_and_frees_its_reservation(
    multi, client, binance, alpaca
) -> None:
    sut = await multi()
    router, gate = sut.running["order-router"], sut.running["risk-gate"]
    await seen_by_router(sut, "binance", "BTC_USDT", "60000")  # books priced (the last ones stay)
    await eventually(lambda: asyncio.sleep(0, gate.books.mids.get("BTC_USDT")), what="a price at the risk gate")  # type: ignore[attr-defined]
    await binance.stop()
    await alpaca.stop()  # every live venue down (paper takes only orders naming it)

    async def both_down() -> bool | None:
        return True if not any(router.sessions[v].up() for v in ("binance", "alpaca")) else None  # type: ignore[attr-defined]

    await eventually(both_down, timeout=15, what="both live venues down")
    reply = await submit(client, "mv-none-1")
    assert not reply.ok and reply.code == "NO_VENUE", reply
    assert reply.order is not None and reply.order.status.value == "rejected" and "down" in (reply.order.reason or "")
    o = await order_of(client, "mv-none-1")
    assert o is not None and o.status.value == "rejected"  # kept: the audit trail says why
    # its order event ended the approval's reservation (not held for minutes)
    await eventually(lambda: asyncio.sleep(0, "mv-none-1" not in gate.pending or None), what="reservation freed")  # type: ignore[attr-defined]
