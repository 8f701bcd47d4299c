"""The ccxt venue (real ccxt) against the local Alpaca test exchange, pointed at it with EXCHANGE_API_URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from actors.venues.base import OutcomeUnknown, VenueOrder, VenueOrderRequest, VenueRefused, VenueStartError, VenueTrade
from actors.venues.ccxt_venue import CcxtVenue
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.helpers import eventually

KEY, SECRET = "PKTEST123", "secret-abc"
D = Decimal


@pytest.fixture
async def exchange() -> AsyncIterator[AlpacaTestExchange]:
    ex = AlpacaTestExchange(api_key=KEY, secret=SECRET, cash="100000", positions={"BTC": "0.5"})
    await ex.start()
    ex.set_book("BTC/USD", bids=[("49990", "1"), ("49980", "2")], asks=[("50010", "0.005"), ("50020", "1")])
    ex.set_book("ETH/USD", bids=[("2999.9", "10")], asks=[("3000.1", "10")])
    yield ex
    await ex.stop()


def make(exchange: AlpacaTestExchange, **kw: object) -> CcxtVenue:
    args: dict = {"pairs": ("BTC_USD", "ETH_USD"), "api_key": KEY, "secret": SECRET, "api_url": exchange.base_url}
    args.update(poll_ms=50, lookup_delay_s=0.05, backoff_s=0.05, stream="off", ccxt_config={"rateLimit": 10})
    args.update(kw)
    return CcxtVenue("alpaca", **args)  # type: ignore[arg-type]


@pytest.fixture
async def venue(exchange: AlpacaTestExchange) -> AsyncIterator[CcxtVenue]:
    v = make(exchange)
    await v.start()
    yield v
    await v.stop()


def req(cid: str, **kw: object) -> VenueOrderRequest:
    base: dict = {"client_order_id": cid, "pair": "BTC_USD", "side": "buy", "type": "market", "quantity": D("0.01")}
    base.update(kw)
    return VenueOrderRequest(**base)


async def settled(venue: CcxtVenue, cid: str, pair: str = "BTC_USD") -> VenueOrder:
    async def probe() -> VenueOrder | None:
        o = await venue.fetch_order(cid, pair)
        return o if o is not None and o.status != "open" else None

    return await eventually(probe, timeout=5, what=f"{cid} settled")


async def test_start_check_native_types_markets_and_health(venue: CcxtVenue) -> None:
    assert venue.native_types == {"stop_loss_limit"}  # market stops, take-profits: emulated by the router
    rules = {r.pair: r for r in await venue.markets()}
    assert rules["BTC_USD"].amount_step == D("0.000000001") and rules["BTC_USD"].tick_size == D(1)
    assert rules["BTC_USD"].min_amount == D("0.0001")
    h = venue.health()
    assert h.connected is True and h.update_mode == "polling" and h.last_latency_ms is not None


async def test_wrong_keys_and_unknown_pair_stop_the_start(exchange: AlpacaTestExchange) -> None:
    bad = make(exchange, secret="wrong")
    with pytest.raises(VenueStartError, match=r"^keys refused by alpaca: ") as e:
        await bad.start()
    assert "wrong" not in str(e.value) and "\n" not in str(e.value)
    unknown = make(exchange, pairs=("BTC_USD", "DOGE_USD"))
    with pytest.raises(VenueStartError, match="DOGE_USD not listed by alpaca"):
        await unknown.start()


async def test_market_buy_fills_with_the_fee_in_the_coin_received(venue: CcxtVenue, exchange) -> None:
    placed = await venue.create_order(req("buy-1"))
    assert placed.status == "open" and placed.client_order_id == "buy-1"  # Alpaca answers pending_new
    order = await settled(venue, "buy-1")
    assert order.status == "closed" and order.filled == D("0.01")
    assert sorted((t.quantity, t.price) for t in order.trades) == [(D("0.005"), D(50010)), (D("0.005"), D(50020))]
    assert [(t.fee, t.fee_currency) for t in order.trades] == [(D("0.0000125"), "BTC"), (D("0.0000125"), "BTC")]
    assert {t.trade_id for t in order.trades} == {f["id"] for f in exchange.fills}
    [sent] = exchange.requests_to("POST", "/v2/orders")
    assert "limit_price" not in sent["params"] and "time_in_force" in sent["params"]


async def test_limit_ioc_and_native_stop_limit(venue: CcxtVenue, exchange) -> None:
    o = await venue.create_order(req("ioc-1", type="limit", price=D(50010), time_in_force="IOC"))
    assert o.status != "rejected"
    [sent] = exchange.requests_to("POST", "/v2/orders")
    assert sent["params"]["time_in_force"] == "ioc"
    stop = await venue.create_order(
        req("stop-1", side="sell", type="stop_loss_limit", price=D(48000), stop_price=D(48500), quantity=D("0.1"))
    )
    assert stop.status == "open" and stop.stop_price == D(48500)
    assert exchange.order_by_client_id("stop-1")["type"] == "stop_limit"
    fok = await venue.create_order(req("fok-1", type="limit", price=D(50000), time_in_force="FOK"))
    assert (fok.status, fok.code) == ("rejected", "INVALID_ORDER") and "gtc or ioc" in (fok.reason or "").lower()
    po = await venue.create_order(req("po-1", type="limit", price=D(40000), post_only=True))
    assert (po.status, po.code) == ("rejected", "INVALID_ORDER") and not exchange.orders_with_client_id("po-1")
    take = await venue.create_order(req("tp-1", type="take_profit", stop_price=D(60000)))
    assert (take.status, take.code) == ("rejected", "NOT_SUPPORTED")


async def test_cancel_fetches_after_the_204_and_a_second_cancel_is_refused(venue: CcxtVenue) -> None:
    await venue.create_order(req("rest-1", type="limit", price=D(40000)))
    await eventually(lambda: venue.fetch_order("rest-1", "BTC_USD"), what="order visible")
    canceled = await venue.cancel_order("rest-1", "BTC_USD")
    assert canceled.status == "canceled" and canceled.venue_order_id
    with pytest.raises(VenueRefused, match="canceled"):
        await venue.cancel_order("rest-1", "BTC_USD")
    with pytest.raises(VenueRefused, match="unknown"):
        await venue.cancel_order("never-sent", "BTC_USD")
    with pytest.raises(VenueRefused, match="cannot change an order in place"):
        await venue.edit_order("rest-1", "BTC_USD", price=D(41000))
    assert await venue.fetch_order("never-sent", "BTC_USD") is None


async def test_lost_answer_returns_the_one_order_found_by_client_id(venue: CcxtVenue, exchange) -> None:
    exchange.inject("lost_after_place", "POST", "/v2/orders")
    o = await venue.create_order(req("lost-1"))
    assert o.client_order_id == "lost-1" and o.venue_order_id
    assert len(exchange.requests_to("POST", "/v2/orders")) == 1 and len(exchange.orders_with_client_id("lost-1")) == 1


async def test_unknown_outcome_that_never_placed_raises_and_sends_once(venue: CcxtVenue, exchange) -> None:
    exchange.inject("drop_connection", "POST", "/v2/orders")
    with pytest.raises(OutcomeUnknown, match="lost-2"):
        await venue.create_order(req("lost-2"))
    assert len(exchange.requests_to("POST", "/v2/orders")) == 1 and not exchange.orders_with_client_id("lost-2")


async def test_429_is_backed_off_and_sent_again(venue: CcxtVenue, exchange) -> None:
    exchange.inject("http_429", "POST", "/v2/orders", times=2)
    o = await venue.create_order(req("rl-1"))
    assert o.status != "rejected" and len(exchange.orders_with_client_id("rl-1")) == 1
    assert len(exchange.requests_to("POST", "/v2/orders")) == 3


async def test_insufficient_funds_and_a_duplicate_client_id(venue: CcxtVenue, exchange) -> None:
    poor = await venue.create_order(req("big-1", quantity=D(100)))
    assert (poor.status, poor.code) == ("rejected", "INSUFFICIENT_FUNDS") and poor.reason
    first = await venue.create_order(req("dup-1"))
    again = await venue.create_order(req("dup-1"))  # Alpaca: 422 "client_order_id must be unique" -> the order
    assert again.venue_order_id == first.venue_order_id and len(exchange.orders_with_client_id("dup-1")) == 1


async def test_balances_cash_and_coins(venue: CcxtVenue) -> None:
    b = await venue.fetch_balance()
    assert b["USD"].total == D(100000) and b["BTC"].total == D("0.5")


async def test_polling_passes_a_resting_fill_once_and_an_external_order(venue: CcxtVenue, exchange) -> None:
    got: list[tuple[VenueOrder, list[VenueTrade]]] = []

    async def listener(o: VenueOrder, new: list[VenueTrade]) -> None:
        got.append((o, new))

    venue.set_listener(listener)
    await venue.create_order(req("rest-2", type="limit", price=D(49000), quantity=D("0.002")))
    await asyncio.sleep(0.2)  # the order rests; a poll or two go by
    exchange.inject("fill_reported_twice", "GET", "/v2/account/activities/FILL", times=50)
    exchange.set_book("BTC/USD", bids=[("48990", "1")], asks=[("48995", "1")])  # crosses the resting buy
    mine = await eventually(lambda: asyncio.sleep(0, [g for g in got if g[0].client_order_id == "rest-2"]))
    await asyncio.sleep(0.3)
    mine = [g for g in got if g[0].client_order_id == "rest-2"]
    trades = [t for _, new in mine for t in new]
    assert len(trades) == 1 and trades[0].quantity == D("0.002") and trades[0].fee_currency == "BTC"
    assert mine[-1][0].status == "closed" and not mine[-1][0].external
    exchange.place_external_order(symbol="BTC/USD", side="buy", type="limit", qty="0.001", limit_price="40000",
                                  client_order_id="web_1")  # fmt: skip
    ext = await eventually(lambda: asyncio.sleep(0, [g for g in got if g[0].client_order_id == "web_1"]))
    assert ext[0][0].external is True and ext[0][1] == []
