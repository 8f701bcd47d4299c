"""The whole service trading live on the local Alpaca test exchange (crypto, trading API v2 and market data),
over the real bus, through real ccxt pointed at it with EXCHANGE_API_URL: native stop-limits, emulated market
stops, fees in the asset received, a lost answer, an order placed on the website."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import pytest

from schemas.messages import CancelOrder, CommandReply
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.integration.test_actors import System
from tests.integration.test_live_binance import fills_of, submit, until
from tests.integration.test_order_types import settings_for

KEY, SECRET = "PKLIVETEST123", "live-secret-abcdef"
D = Decimal


@pytest.fixture
async def exchange() -> AsyncIterator[AlpacaTestExchange]:
    ex = AlpacaTestExchange(api_key=KEY, secret=SECRET, cash="100000", positions={"BTC": "0.5"})
    await ex.start()
    ex.set_book("BTC/USD", bids=[("49990", "1"), ("49980", "2")], asks=[("50010", "1"), ("50020", "1")])
    ex.set_book("ETH/USD", bids=[("2999.9", "10")], asks=[("3000.1", "10")])
    yield ex
    await ex.stop()


@pytest.fixture
async def live(nats_url, prefix, exchange) -> AsyncIterator[Callable[..., Awaitable[System]]]:
    systems: list[System] = []

    async def make(**extra: str) -> System:
        env = {
            "PAPER_TRADING": "false",
            "LIVE_TRADING": "true",
            "EXCHANGE": "alpaca",
            "ALPACA_API_KEY": KEY,  # the spec's own names for Alpaca's keys
            "ALPACA_API_SECRET": SECRET,
            "EXCHANGE_API_URL": exchange.base_url,
            "API_TOKEN": "live-token",
            "PAIRS": "BTC_USD,ETH_USD",
            "BASE_CURRENCY": "USD",
            "MARKET_DATA": "venue",
            "MARKET_DATA_INTERVAL": "50",
            "EXCHANGE_POLL_MS": "100",
            "RECONCILE_INTERVAL_MS": "300",
            "VENUE_UNKNOWN_GRACE_MS": "1000",
        } | extra
        sut = System(nats_url, settings_for(nats_url, prefix, **env))
        systems.append(sut)
        await sut.start()
        return sut

    yield make
    for sut in systems:
        await sut.stop()


async def test_a_market_buy_fills_with_alpacas_fee_in_the_coin_received(live, client, exchange) -> None:
    await live()
    reply = await submit(client, "al-mkt-1", pair="BTC_USD")
    assert reply.ok, reply.detail
    o = await until(client, "al-mkt-1", "filled")
    assert o.paper_trade is False and o.venue == "alpaca" and o.venue_order_id
    fills = await fills_of(client, o.order_id)
    assert len(fills) == len(exchange.fills) == 1
    assert fills[0].fee_currency == "BTC" and fills[0].fee == D("0.000025")  # 0.25 % of 0.01 BTC, in BTC
    assert exchange.positions["BTC"] == D("0.5") + D("0.01") - D("0.000025")


async def test_a_limit_rests_and_fills_as_maker_when_the_book_comes_to_it(live, client, exchange) -> None:
    await live()
    reply = await submit(client, "al-lim-1", pair="BTC_USD", type="limit", price=D("49000"))
    assert reply.ok, reply.detail
    await until(client, "al-lim-1", "accepted")
    exchange.set_book("BTC/USD", bids=[("48900", "1")], asks=[("48950", "1")])
    o = await until(client, "al-lim-1", "filled")
    assert [f.price for f in await fills_of(client, o.order_id)] == [D("49000")]


async def test_a_stop_limit_is_held_by_alpaca_and_a_market_stop_is_emulated_here(live, client, exchange) -> None:
    await live()
    native = await submit(
        client, "al-stp-1", pair="BTC_USD", side="sell", type="stop_limit", stop_price=D("49000"), price=D("48900")
    )
    emulated = await submit(client, "al-stp-2", pair="BTC_USD", side="sell", type="stop_loss", stop_price=D("49000"))
    assert native.ok and emulated.ok, (native.detail, emulated.detail)
    held = await until(client, "al-stp-1", "accepted")
    waiting = await until(client, "al-stp-2", "accepted")
    assert held.native_trigger and not waiting.native_trigger  # Alpaca has no market stops
    assert [o["client_order_id"] for o in exchange.orders] == ["al-stp-1"]  # only the stop-limit is there
    exchange.set_book("BTC/USD", bids=[("48950", "1"), ("48900", "1")], asks=[("48960", "1")])
    await until(client, "al-stp-1", "filled")
    fired = await until(client, "al-stp-2", "filled")
    assert fired.triggered_at is not None  # triggered here on the venue's books (md-feed), then sent at market


async def test_a_lost_answer_leaves_one_order_at_alpaca_found_by_its_client_id(live, client, exchange) -> None:
    await live()
    exchange.inject("lost_after_place")
    reply = await submit(client, "al-lost-1", pair="BTC_USD")
    assert reply.ok, reply.detail
    await until(client, "al-lost-1", "filled")
    assert [o["client_order_id"] for o in exchange.orders].count("al-lost-1") == 1


async def test_an_order_placed_on_alpacas_website_is_adopted(live, client, exchange) -> None:
    await live()
    web = exchange.place_external_order(symbol="BTC/USD", side="buy", type="limit", qty="0.02", limit_price="49500")
    o = await until(client, web["client_order_id"], "accepted")
    assert o.source == "external" and o.quantity == D("0.02")
    exchange.set_book("BTC/USD", bids=[("49400", "1")], asks=[("49450", "1")])
    o = await until(client, web["client_order_id"], "filled")
    assert sum(f.quantity for f in await fills_of(client, o.order_id)) == D("0.02")


async def test_every_order_type_on_alpaca_native_or_emulated(live, client, exchange) -> None:
    await live()
    kinds: dict[str, dict] = {
        "market": {},
        "limit": {"type": "limit", "price": D("49000")},
        "ioc": {"type": "limit", "price": D("50010"), "time_in_force": "IOC"},
        "stop-loss": {"side": "sell", "type": "stop_loss", "stop_price": D("49200")},
        "stop-limit": {"side": "sell", "type": "stop_limit", "stop_price": D("49200"), "price": D("48800")},
        "take-profit": {"side": "sell", "type": "take_profit", "stop_price": D("51000")},
        "take-profit-limit": {"side": "sell", "type": "take_profit", "stop_price": D("51000"), "price": D("50900")},
    }
    for name, kw in kinds.items():
        reply = await submit(client, f"al-all-{name}", pair="BTC_USD", **kw)
        assert reply.ok, (name, reply.detail)
    for name, kw in {"post-only": {"post_only": True}, "fok": {"time_in_force": "FOK"}}.items():
        refused = await submit(client, f"al-all-{name}", pair="BTC_USD", type="limit", price=D("49000"), **kw)
        assert not refused.ok and refused.code == "INVALID_ORDER", (name, refused.detail)  # none for crypto
    for name in ("market", "ioc"):
        await until(client, f"al-all-{name}", "filled")
    native = {name: (await until(client, f"al-all-{name}", "accepted")).native_trigger for name in list(kinds)[3:]}
    assert native == {"stop-loss": False, "stop-limit": True, "take-profit": False, "take-profit-limit": False}
    exchange.set_book("BTC/USD", bids=[("48900", "5")], asks=[("48950", "5")])  # down: the buy fills, stops fire
    for name in ("limit", "stop-loss", "stop-limit"):
        await until(client, f"al-all-{name}", "filled")
    exchange.set_book("BTC/USD", bids=[("51100", "5")], asks=[("51150", "5")])  # up: the take-profits fire here
    for name in ("take-profit", "take-profit-limit"):
        o = await until(client, f"al-all-{name}", "filled")
        assert o.triggered_at is not None


async def test_a_cancel_whose_answer_is_lost_after_alpaca_canceled_is_settled_by_the_lookup(
    live, client, exchange
) -> None:
    await live()
    assert (await submit(client, "al-cxl-lost-1", pair="BTC_USD", type="limit", price=D("49000"))).ok
    o = await until(client, "al-cxl-lost-1", "accepted")
    exchange.inject("lost_after_place", "DELETE", "/v2/orders/*")  # canceled there, the answer lost
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=o.order_id), CommandReply)
    assert isinstance(reply, CommandReply) and reply.ok
    await until(client, "al-cxl-lost-1", "canceled")
    assert [x["status"] for x in exchange.orders if x["client_order_id"] == "al-cxl-lost-1"] == ["canceled"]
