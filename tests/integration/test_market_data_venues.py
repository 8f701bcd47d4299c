"""Market data per venue (issue 17): the md-feed reading two local test exchanges (Binance- and Alpaca-speaking, real
ccxt pointed at them) and publishing each one's books and trades with the venue named, a venue's books going down
and coming back (one alert and one warning each way), and the paper venue trading on a named venue's books."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import msgspec
import pytest
from loguru import logger

from bus.client import Bus, Envelope
from config.settings import Settings
from schemas.messages import Book, Heartbeat, OrderReply, OrderRequest, RiskAlert, Trade, now_ms
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually
from tests.integration.test_actors import System, filled
from tests.integration.test_order_types import settings_for

BKEY, BSECRET = "md-test-key-0123456789", "md-test-secret-abcdef0123"
AKEY, ASECRET = "PKMDTEST123", "md-alpaca-secret"
D = Decimal


@pytest.fixture
async def binance() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(api_key=BKEY, secret=BSECRET, symbols=("BTC/USDT",), balances={"USDT": "100000"})
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59990", "1")], asks=[("60000", "0.5"), ("60010", "1")])
    yield ex
    await ex.stop()


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaTestExchange]:
    ex = AlpacaTestExchange(api_key=AKEY, secret=ASECRET, cash="100000", positions={"BTC": "1"})
    await ex.start()
    ex.set_book("BTC/USD", bids=[("49990", "1")], asks=[("50010", "1"), ("50020", "1")])
    yield ex
    await ex.stop()


def live_settings(nats_url: str, prefix: str, binance: BinanceTestExchange, **extra: str) -> Settings:
    """Live on the local Binance (the single EXCHANGE: what the loader checks today)."""
    env = {
        "PAPER_TRADING": "false",
        "LIVE_TRADING": "true",
        "EXCHANGE": "binance",
        "EXCHANGE_API_KEY": BKEY,
        "EXCHANGE_API_SECRET": BSECRET,
        "EXCHANGE_API_URL": binance.base_url,
        "API_TOKEN": "live-token",
        "MARKET_DATA": "venue",
        "MARKET_DATA_INTERVAL": "50",
        "PAIRS": "BTC_USDT",
    } | extra
    return settings_for(nats_url, prefix, **env)


def two_venues(nats_url: str, prefix: str, binance: BinanceTestExchange, alpaca: AlpacaTestExchange) -> Settings:
    """EXCHANGES=binance,alpaca with each venue's settings (as the loader fills VENUE_SETTINGS from BINANCE_*,
    ALPACA_* and TOML sections)."""
    base = live_settings(nats_url, prefix, binance, PAIRS="BTC_USDT,BTC_USD")
    return msgspec.structs.replace(
        base,
        EXCHANGES=("binance", "alpaca"),
        VENUE_SETTINGS={
            "BINANCE": {"API_URL": binance.base_url, "PAIRS": "BTC_USDT"},
            "ALPACA": {"API_URL": alpaca.base_url, "API_KEY": AKEY, "API_SECRET": ASECRET, "PAIRS": "BTC_USD"},
        },
    )


class Heard:
    """Everything published on a subject pattern, decoded."""

    def __init__(self) -> None:
        self.items: list = []

    def of(self, **fields: object) -> list:
        return [x for x in self.items if all(getattr(x, k) == v for k, v in fields.items())]


async def listen(client: Bus, subject: str, type_: type) -> Heard:
    heard = Heard()

    async def keep(msg: object, env: Envelope) -> None:
        heard.items.append(msg)

    await client.subscribe(subject, type_, keep)
    return heard


@pytest.fixture
def warnings() -> AsyncIterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    yield lines
    logger.remove(sink)


async def test_each_live_venue_publishes_its_books_and_trades_with_the_venue_named(
    nats_url, prefix, client, binance, alpaca
):
    books = await listen(client, client.subjects.book(), Book)
    trades = await listen(client, client.subjects.trades(), Trade)
    beats = await listen(client, client.subjects.health("md-feed"), Heartbeat)
    sut = System(nats_url, two_venues(nats_url, prefix, binance, alpaca))
    try:
        await sut.start("md-feed")
        b = await eventually(lambda: _last(books.of(venue="binance")), what="a book of binance")
        a = await eventually(lambda: _last(books.of(venue="alpaca")), what="a book of alpaca")
        assert (b.pair, b.bids[0], b.asks[:2]) == (
            "BTC_USDT",
            (D(59990), D(1)),
            [(D(60000), D("0.5")), (D(60010), D(1))],
        )
        assert (a.pair, a.bids[0], a.asks[0]) == ("BTC_USD", (D(49990), D(1)), (D(50010), D(1)))
        assert {(x.venue, x.pair) for x in books.items} == {("binance", "BTC_USDT"), ("alpaca", "BTC_USD")}
        # a book that changes at one venue changes there only
        alpaca.set_book("BTC/USD", bids=[("48000", "2")], asks=[("48010", "2")])
        await eventually(
            lambda: _async(bool(books.of(venue="alpaca") and books.of(venue="alpaca")[-1].asks[0][0] == D(48010))),
            what="alpaca's new book",
        )
        assert books.of(venue="binance")[-1].asks[0][0] == D(60000)
        # a public trade at Alpaca (an order placed there) is published as alpaca's
        alpaca.place_external_order(symbol="BTC/USD", side="buy", qty="0.01")
        t = await eventually(lambda: _last(trades.of(venue="alpaca")), what="alpaca's public trade")
        assert (t.pair, t.price, t.quantity, t.side) == ("BTC_USD", D(48010), D("0.01"), "buy")
        await asyncio.sleep(1.5)  # polled again meanwhile: the same trade is published once
        assert len(trades.of(venue="alpaca")) == 1
        # the heartbeat tells each venue's feed apart
        hb = await eventually(lambda: _async(_both_up(beats.items)), what="a heartbeat with both venues up")
        assert {v.name: v.update_mode for v in hb.venues} == {"binance": "polling", "alpaca": "polling"}
        assert hb.stats["binance.status"] == "up" and int(hb.stats["alpaca.books"]) > 0
    finally:
        await sut.stop()


async def test_a_venue_going_down_and_back_is_one_alert_and_one_warning_each_way(
    nats_url, prefix, client, binance, alpaca, warnings
):
    books = await listen(client, client.subjects.book(), Book)
    alerts = await listen(client, client.subjects.risk_events, RiskAlert)
    beats = await listen(client, client.subjects.health("md-feed"), Heartbeat)
    sut = System(nats_url, two_venues(nats_url, prefix, binance, alpaca))
    try:
        await sut.start("md-feed")
        await eventually(lambda: _async(_both_up(beats.items)), what="both venues up")
        await binance.stop()  # Binance goes away
        down = await eventually(lambda: _async(_alerts(alerts, "MARKET_DATA_DOWN")), what="MARKET_DATA_DOWN")
        assert down[0].severity == "critical" and "market data of binance unavailable" in down[0].message
        seen = len(books.of(venue="alpaca"))
        await eventually(lambda: _async(len(books.of(venue="alpaca")) > seen + 5), what="alpaca's books go on")
        hb = await eventually(lambda: _async(_venue(beats.items, "binance", False)), what="binance down in a beat")
        assert hb.stats["binance.status"] == "down" and hb.stats["alpaca.status"] == "up"
        assert next(v for v in hb.venues if v.name == "binance").last_error
        await asyncio.sleep(1.0)  # several rounds (with back-off) while it is down
        await binance.start()  # back, on the same port
        up = await eventually(lambda: _async(_alerts(alerts, "MARKET_DATA_UP")), what="MARKET_DATA_UP", timeout=40)
        assert up[0].severity == "warning" and "market data of binance" in up[0].message
        before = len(books.of(venue="binance"))
        await eventually(lambda: _async(len(books.of(venue="binance")) > before), what="binance's books again")
        await asyncio.sleep(0.5)
        assert len(_alerts(alerts, "MARKET_DATA_DOWN")) == 1 and len(_alerts(alerts, "MARKET_DATA_UP")) == 1
        assert not [a for a in alerts.items if "alpaca" in a.message]
        about = [w for w in warnings if "binance" in w]
        # one line for the pair's book, one for the alert; none per failed round
        assert len([w for w in about if "book of BTC_USDT not read from binance" in w]) == 1, about
        assert len([w for w in about if "MARKET_DATA_DOWN" in w]) == 1, about
    finally:
        await sut.stop()


async def test_the_paper_venue_trades_on_the_named_venues_books_only(nats_url, prefix, client, binance):
    # the md-feed of a live Binance (on the same bus) publishes its books, named binance, every 10 s: one now
    books = await listen(client, client.subjects.book(), Book)
    feed = System(nats_url, live_settings(nats_url, prefix, binance, MARKET_DATA_INTERVAL="10000"))
    paper = System(nats_url, settings_for(nats_url, prefix, PAPER_BOOKS="binance", PAIRS="BTC_USDT,ETH_USDT"))
    try:
        await paper.start()
        await feed.start("md-feed")
        await eventually(lambda: _last(books.of(venue="binance")), what="binance's book")
        # cheaper books from elsewhere, after Binance's: unnamed (synthetic, an outside feed) and another venue's
        for venue, ask in ((None, "59000"), ("alpaca", "58000")):
            book = Book(pair="BTC_USDT", bids=[(D(ask) - 10, D(5))], asks=[(D(ask), D(5))], ts=now_ms(), venue=venue)
            await client.publish(client.subjects.book("BTC_USDT"), book)
        await client.nc.flush()
        req = OrderRequest(client_order_id="pb-1", pair="BTC_USDT", side="buy", quantity=D("0.01"))
        reply = await client.request(client.subjects.orders_submit, req, OrderReply, timeout=10)
        assert reply.ok, reply.detail
        o = await eventually(lambda: filled(client, "pb-1"), what="the paper fill")
        assert o.average_price == D(60000) and [f.price for f in o.fills] == [D(60000)]  # Binance's ask
    finally:
        await feed.stop()
        await paper.stop()


async def _last(items: list):
    return items[-1] if items else None


async def _async(value):
    return value


def _both_up(beats: list[Heartbeat]) -> Heartbeat | None:
    for hb in reversed(beats):
        if hb.venues and {v.name: v.connected for v in hb.venues} == {"binance": True, "alpaca": True}:
            return hb
    return None


def _venue(beats: list[Heartbeat], name: str, connected: bool) -> Heartbeat | None:
    for hb in reversed(beats):
        if any(v.name == name and v.connected is connected for v in hb.venues or []):
            return hb
    return None


def _alerts(alerts: Heard, code: str) -> list[RiskAlert]:
    return [a for a in alerts.items if a.code == code]
