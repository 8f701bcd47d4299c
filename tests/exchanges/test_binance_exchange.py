"""Real ccxt (``ccxt.async_support.binance``) against the local Binance spot test exchange.

Nothing here reaches the internet: ccxt is pointed at 127.0.0.1 by replacing the scheme and host of
every http(s) URL in its ``urls["api"]`` (as ``EXCHANGE_API_URL`` will do in the service).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
    DDoSProtection,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    NetworkError,
    OrderImmediatelyFillable,
    OrderNotFound,
    RequestTimeout,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.exchanges.binance import BinanceTestExchange
from tests.exchanges.binance_engine import Engine
from tests.exchanges.binance_model import BinanceError, SymbolSpec

KEY, SECRET = "test-key-16", "test-secret-16"
SYM = "BTC/USDT"
BTC_USDT = SymbolSpec(
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.01"),
    min_price=Decimal("0.01"),
    step_size=Decimal("0.00001"),
    min_qty=Decimal("0.00001"),
    max_qty=Decimal("100"),
    min_notional=Decimal("5"),
)
ETH_USDT = SymbolSpec(
    base="ETH",
    quote="USDT",
    tick_size=Decimal("0.1"),
    min_price=Decimal("0.1"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
)
ROOT = Path(__file__).resolve().parents[2]


def point_at(ex: ccxt.Exchange, base_url: str) -> None:
    """EXCHANGE_API_URL: replace scheme and host of every http(s) URL in ``urls['api']``, keep the paths."""
    for key, url in ex.urls["api"].items():
        if isinstance(url, str) and re.match(r"^https?://", url):
            ex.urls["api"][key] = re.sub(r"^https?://[^/]+", base_url.rstrip("/"), url)


def make_client(base_url: str, key: str = KEY, secret: str = SECRET, **extra: Any) -> ccxt.binance:
    ex = ccxt.binance(
        {
            "apiKey": key,
            "secret": secret,
            "enableRateLimit": True,
            "timeout": 3000,
            "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
            **extra,
        }
    )
    point_at(ex, base_url)
    ex.timeout_on_exit = 0  # ccxt sleeps 250 ms in close() by default: nothing to wait for on 127.0.0.1
    return ex


@pytest.fixture
async def venue() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(
        api_key=KEY,
        secret=SECRET,
        symbols=[BTC_USDT, ETH_USDT],
        balances={"USDT": "100000", "BTC": "2"},
        maker_fee="0.0005",
        taker_fee="0.001",
    )
    await ex.start()
    ex.set_book(SYM, bids=[["29990", "1"], ["29980", "2"]], asks=[["30010", "0.005"], ["30020", "2"]])
    yield ex
    await ex.stop()


_markets: list[dict[str, Any]] = []  # parsed by the first real load_markets of this module


@pytest.fixture
async def client(venue: BinanceTestExchange) -> AsyncIterator[ccxt.binance]:
    """A ccxt client on ``venue``. Markets are loaded for real once per module, then handed to the next
    clients (every venue here lists the same symbols): ccxt's rate limiter would otherwise make each
    test wait for the weight of exchangeInfo. test_load_markets_* and the key tests load for real."""
    ex = make_client(venue.base_url)
    if _markets:
        ex.set_markets(copy.deepcopy(_markets))
    else:
        _markets.extend(copy.deepcopy(list((await ex.load_markets()).values())))
    venue.requests.clear()
    yield ex
    await ex.close()


def D(x: Any) -> Decimal:
    return Decimal(str(x))


# --- markets and public data -------------------------------------------------------------------


async def test_load_markets_has_the_filters_as_set(venue: BinanceTestExchange) -> None:
    client = make_client(venue.base_url)
    try:
        await client.load_markets()
    finally:
        await client.close()
    m = client.markets[SYM]
    assert (m["id"], m["base"], m["quote"], m["spot"], m["active"]) == ("BTCUSDT", "BTC", "USDT", True, True)
    assert D(m["precision"]["price"]) == Decimal("0.01") and D(m["precision"]["amount"]) == Decimal("0.00001")
    assert D(m["limits"]["amount"]["min"]) == Decimal("0.00001") and D(m["limits"]["amount"]["max"]) == 100
    assert D(m["limits"]["cost"]["min"]) == 5
    e = client.markets["ETH/USDT"]
    assert D(e["precision"]["price"]) == Decimal("0.1") and D(e["precision"]["amount"]) == Decimal("0.001")
    assert client.amount_to_precision("ETH/USDT", 0.12345) == "0.123"
    # with keys, ccxt 4.5.64's load_markets also signs the two sapi margin-pairs reads
    assert [r.path for r in venue.requests] == [
        "/api/v3/exchangeInfo",
        "/sapi/v1/margin/allPairs",
        "/sapi/v1/margin/isolated/allPairs",
    ]
    assert all("signature" not in r.params for r in venue.requests)
    assert venue.requests[1].api_key == KEY and "timestamp" in venue.requests[1].params


async def test_order_book_ticker_and_balance(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    book = await client.fetch_order_book(SYM)
    assert book["bids"] == [[29990.0, 1.0], [29980.0, 2.0]] and book["asks"][0] == [30010.0, 0.005]
    ticker = await client.fetch_ticker(SYM)
    assert (ticker["bid"], ticker["ask"], ticker["last"]) == (29990.0, 30010.0, 30000.0)
    balance = await client.fetch_balance()
    assert balance["USDT"] == {"free": 100000.0, "used": 0.0, "total": 100000.0}
    assert balance["BTC"]["total"] == 2.0
    raw = await client.public_get_ticker_bookticker({"symbol": "BTCUSDT"})
    assert raw == {
        "symbol": "BTCUSDT",
        "bidPrice": "29990.00000000",
        "bidQty": "1.00000000",
        "askPrice": "30010.00000000",
        "askQty": "0.00500000",
    }
    assert (await client.public_get_ticker_price({"symbol": "BTCUSDT"}))["price"] == "30000.00000000"


# --- orders --------------------------------------------------------------------------------------


async def test_market_buy_walks_the_book_and_pays_commission_in_base(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    order = await client.create_order(SYM, "market", "buy", 0.01, params={"clientOrderId": "mkt-1"})
    assert (order["clientOrderId"], order["status"], order["filled"]) == ("mkt-1", "closed", 0.01)
    # 0.005 @ 30010 and 0.005 @ 30020: one trade per level, ids increasing
    fills = venue.trades(SYM)
    assert [(t.price, t.qty) for t in fills] == [(30010, Decimal("0.005")), (30020, Decimal("0.005"))]
    assert [t.trade_id for t in fills] == [1, 2] and all(not t.is_maker for t in fills)
    assert D(order["cost"]) == Decimal("300.15") and D(order["average"]) == Decimal("30015")
    # a buy pays its commission in the base asset: 0.01 BTC at 0.1% -> 0.00999 BTC credited
    assert sum(t.commission for t in fills) == Decimal("0.00001") and {t.commission_asset for t in fills} == {"BTC"}
    assert venue.balances["BTC"]["free"] == Decimal("2.00999")
    assert venue.balances["USDT"]["free"] == Decimal("100000") - Decimal("300.15")
    trades = await client.fetch_my_trades(SYM, since=int(time.time() * 1000) - 60_000)
    assert [(t["id"], t["order"], t["takerOrMaker"]) for t in trades] == [
        ("1", order["id"], "taker"),
        ("2", order["id"], "taker"),
    ]
    assert trades[0]["fee"] == {"cost": 5e-06, "currency": "BTC"}


async def test_market_sell_pays_commission_in_quote(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    order = await client.create_order(SYM, "market", "sell", 0.5)
    assert order["status"] == "closed" and D(order["cost"]) == Decimal("14995")
    fee = venue.trades(SYM)[0]
    assert (fee.commission, fee.commission_asset) == (Decimal("14.995"), "USDT")
    assert venue.balances["USDT"]["free"] == Decimal("100000") + Decimal("14995") - Decimal("14.995")
    assert venue.balances["BTC"]["free"] == Decimal("1.5")


async def test_market_buy_by_quote_order_qty(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    # ccxt turns a market buy with a price into quoteOrderQty = amount * price
    order = await client.create_order(SYM, "market", "buy", 0.01, 30000)
    sent = venue.requests_for("POST", "/api/v3/order")[0].params
    assert sent["quoteOrderQty"] == "300" and "quantity" not in sent
    # 0.005 @ 30010 = 150.05; the 149.95 left buys 0.00499 @ 30020 (whole steps of 0.00001)
    assert (order["status"], D(order["filled"]), D(order["amount"])) == (
        "closed",
        Decimal("0.00999"),
        Decimal("0.00999"),
    )
    assert D(order["cost"]) == Decimal("150.05") + Decimal("149.7998")


async def test_answer_types_sell_by_quote_and_all_orders(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.1"}
    ack = await client.private_post_order({**base, "price": "29000", "newOrderRespType": "ACK"})
    assert sorted(ack) == ["clientOrderId", "orderId", "orderListId", "symbol", "transactTime"]
    result = await client.private_post_order({**base, "price": "29001", "newOrderRespType": "RESULT"})
    assert result["status"] == "NEW" and result["origQty"] == "0.10000000" and "fills" not in result
    assert result["workingTime"] == result["transactTime"] and result["selfTradePreventionMode"] == "EXPIRE_MAKER"
    sell = await client.private_post_order(
        {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quoteOrderQty": "45000", "newOrderRespType": "FULL"}
    )
    # 1 @ 29990 = 29990, then 15010 / 29980 = 0.50066... -> 0.50066 (whole steps)
    assert [(f["price"], f["qty"]) for f in sell["fills"]] == [
        ("29990.00000000", "1.00000000"),
        ("29980.00000000", "0.50066000"),
    ]
    assert (sell["status"], sell["origQuoteOrderQty"], sell["executedQty"]) == (
        "FILLED",
        "45000.00000000",
        "1.50066000",
    )
    assert sell["fills"][1]["commissionAsset"] == "USDT" and sell["fills"][0]["tradeId"] == 1
    everything = await client.fetch_orders(SYM)
    assert [(o["id"], o["status"]) for o in everything] == [("1", "open"), ("2", "open"), ("3", "closed")]
    assert [o["id"] for o in await client.fetch_closed_orders(SYM)] == ["3"]
    # params={"test": True}: /api/v3/order/test validates as a real order would, and places nothing
    assert await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"test": True}) is not None
    with pytest.raises(InvalidOrder, match="LOT_SIZE"):
        await client.private_post_order_test({**base, "quantity": "0.000015", "price": "29000"})
    assert len(venue.orders()) == 3


async def test_limit_rests_locks_then_fills_as_maker_when_the_book_crosses(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    order = await client.create_order(SYM, "limit", "buy", 0.1, 29500, params={"clientOrderId": "lim-1"})
    assert order["status"] == "open" and order["filled"] == 0
    assert venue.balances["USDT"]["locked"] == Decimal("2950")
    # a book whose ask reaches 29500 fills it partly, then fully, at the order's price
    venue.set_book(SYM, bids=[["29400", "1"]], asks=[["29450", "0.04"], ["29600", "1"]])
    partial = await client.fetch_order(None, SYM, params={"clientOrderId": "lim-1"})
    assert (partial["status"], partial["filled"], partial["info"]["status"]) == ("open", 0.04, "PARTIALLY_FILLED")
    assert venue.balances["USDT"]["locked"] == Decimal("1770")
    venue.set_book(SYM, bids=[["29400", "1"]], asks=[["29500", "5"]])
    done = await client.fetch_order(order["id"], SYM)
    assert (done["status"], done["filled"], done["average"]) == ("closed", 0.1, 29500.0)
    trades = await client.fetch_my_trades(SYM, params={"orderId": order["id"]})
    assert [(t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
        (29500.0, 0.04, "maker"),
        (29500.0, 0.06, "maker"),
    ]
    assert sum(D(t["fee"]["cost"]) for t in trades) == Decimal("0.00005")  # maker 0.05%, in BTC
    assert venue.balances["USDT"] == {"free": Decimal("97050"), "locked": Decimal("0")}


async def test_limit_that_crosses_takes_at_the_book_price_and_rests_the_rest(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    order = await client.create_order(SYM, "limit", "buy", 0.01, 30015)
    assert (order["status"], order["filled"], order["average"]) == ("open", 0.005, 30010.0)
    assert venue.balances["USDT"]["locked"] == Decimal("150.075")  # 0.005 left at 30015


async def test_limit_ioc_and_fok_expire(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    ioc = await client.create_order(SYM, "limit", "buy", 0.01, 30015, params={"timeInForce": "IOC"})
    assert (ioc["status"], ioc["filled"], ioc["info"]["status"]) == ("expired", 0.005, "EXPIRED")
    fok = await client.create_order(SYM, "limit", "buy", 3, 30020, params={"timeInForce": "FOK"})
    assert (fok["status"], fok["filled"]) == ("expired", 0.0)
    assert venue.balances["USDT"]["locked"] == 0


async def test_post_only_is_limit_maker_and_is_refused_when_it_would_take(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    resting = await client.create_order(SYM, "limit", "sell", 0.1, 30005, params={"postOnly": True})
    assert resting["info"]["type"] == "LIMIT_MAKER" and resting["postOnly"] and resting["status"] == "open"
    assert "timeInForce" not in venue.requests_for("POST", "/api/v3/order")[0].params
    with pytest.raises(OrderImmediatelyFillable, match="Order would immediately match and take"):
        await client.create_order(SYM, "limit", "buy", 0.1, 30010, params={"postOnly": True})
    assert len(venue.orders(SYM)) == 1


@pytest.mark.parametrize(
    ("params", "binance_type"),
    [
        ({"stopLossPrice": 29000}, "STOP_LOSS_LIMIT"),
        ({"triggerPrice": 29000}, "STOP_LOSS_LIMIT"),
    ],
)
async def test_stop_loss_limit_waits_then_triggers_on_the_bid(
    client: ccxt.binance, venue: BinanceTestExchange, params: dict[str, Any], binance_type: str
) -> None:
    order = await client.create_order(SYM, "limit", "sell", 0.2, 28900, params={**params, "clientOrderId": "sl-1"})
    assert order["status"] == "open" and order["info"]["type"] == binance_type
    assert venue.balances["BTC"]["locked"] == Decimal("0.2")
    held = await client.fetch_order(None, SYM, params={"clientOrderId": "sl-1"})
    assert (held["triggerPrice"], held["info"]["isWorking"], held["info"]["workingTime"]) == (29000.0, False, -1)
    venue.set_book(SYM, bids=[["29050", "1"]], asks=[["29100", "1"]])  # not yet
    assert venue.orders(client_order_id="sl-1")[0].is_working is False
    venue.set_book(SYM, bids=[["28950", "0.15"], ["28800", "1"]], asks=[["29000", "1"]])
    done = await client.fetch_order(order["id"], SYM)
    # triggered: a limit at 28900 takes 0.15 @ 28950, rests 0.05 (28800 is below its price)
    assert (done["status"], done["filled"], done["info"]["isWorking"]) == ("open", 0.15, True)
    venue.set_book(SYM, bids=[["28900", "1"]], asks=[["29000", "1"]])
    assert (await client.fetch_order(order["id"], SYM))["status"] == "closed"
    assert [t.is_maker for t in venue.trades(SYM)] == [False, True]


async def test_take_profit_limit_and_market_stops(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    tp = await client.create_order(SYM, "limit", "sell", 0.1, 31000, params={"takeProfitPrice": 31000})
    sl = await client.create_order(SYM, "market", "sell", 0.1, None, params={"stopLossPrice": 29500})
    assert (tp["info"]["type"], sl["info"]["type"]) == ("TAKE_PROFIT_LIMIT", "STOP_LOSS")
    assert "price" not in venue.requests_for("POST", "/api/v3/order")[1].params
    venue.set_book(SYM, bids=[["31050", "1"]], asks=[["31060", "1"]])
    assert (await client.fetch_order(tp["id"], SYM))["status"] == "closed"
    assert (await client.fetch_order(sl["id"], SYM))["status"] == "open"
    venue.set_book(SYM, bids=[["29400", "1"]], asks=[["29410", "1"]])
    closed = await client.fetch_order(sl["id"], SYM)
    assert (closed["status"], closed["average"]) == ("closed", 29400.0)
    with pytest.raises(OrderImmediatelyFillable, match="Stop price would trigger immediately"):
        await client.create_order(SYM, "market", "sell", 0.1, None, params={"stopLossPrice": 29500})


async def test_fetch_cancel_and_not_found(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    order = await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "c-1"})
    found = await client.fetch_order(None, SYM, params={"clientOrderId": "c-1"})
    assert (found["id"], found["status"], found["price"], found["amount"]) == (order["id"], "open", 29000.0, 0.1)
    assert venue.requests_for("GET", "/api/v3/order")[0].params["origClientOrderId"] == "c-1"
    assert [o["id"] for o in await client.fetch_open_orders(SYM)] == [order["id"]]
    cancelled = await client.cancel_order(None, SYM, params={"clientOrderId": "c-1"})
    assert cancelled["status"] == "canceled" and cancelled["info"]["origClientOrderId"] == "c-1"
    # as on Binance, a cancel answer's clientOrderId is the cancel request's own id
    assert cancelled["clientOrderId"] != "c-1"
    assert venue.balances["USDT"] == {"free": Decimal("100000"), "locked": Decimal("0")}
    assert await client.fetch_open_orders(SYM) == []
    with pytest.raises(OrderNotFound, match="-2011"):
        await client.cancel_order(order["id"], SYM)
    with pytest.raises(OrderNotFound, match="-2013"):
        await client.fetch_order(None, SYM, params={"clientOrderId": "nope"})
    with pytest.raises(OrderNotFound, match="-2013"):
        await client.fetch_order("999", SYM)


async def test_edit_order_is_cancel_replace(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    order = await client.create_order(SYM, "limit", "buy", 0.1, 29000)
    edited = await client.edit_order(order["id"], SYM, "limit", "buy", 0.2, 29100, params={"clientOrderId": "e-2"})
    assert (edited["status"], edited["amount"], edited["price"], edited["clientOrderId"]) == (
        "open",
        0.2,
        29100.0,
        "e-2",
    )
    assert edited["id"] != order["id"]
    assert (await client.fetch_order(order["id"], SYM))["status"] == "canceled"
    assert venue.balances["USDT"]["locked"] == Decimal("5820")
    sent = venue.requests_for("POST", "/api/v3/order/cancelReplace")[0].params
    assert (sent["cancelReplaceMode"], sent["cancelOrderId"]) == ("STOP_ON_FAILURE", order["id"])
    # the order it replaces is gone: Binance's -2022 with the cancel's failure inside
    with pytest.raises(ccxt.ExchangeError, match="-2022") as err:
        await client.edit_order(order["id"], SYM, "limit", "buy", 0.3, 29100)
    assert '"newOrderResult": "NOT_ATTEMPTED"' in str(err.value)
    assert len(venue.orders(SYM)) == 2


async def test_open_orders_all_symbols_cancel_all_and_external_orders(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    await client.create_order(SYM, "limit", "buy", 0.1, 29000)
    venue.set_balance("ETH", "3")
    web = venue.place_external_order("ETH/USDT", "SELL", "LIMIT", "1.5", "2500.5")
    assert web.client_order_id.startswith("web_") and web.external
    client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    everything = await client.fetch_open_orders()
    assert sorted((o["symbol"], o["clientOrderId"][:4]) for o in everything) == [
        ("BTC/USDT", "x-TK"),  # ccxt's own generated client id (broker prefix)
        ("ETH/USDT", "web_"),
    ]
    cancelled = await client.cancel_all_orders(SYM)
    assert [o["status"] for o in cancelled] == ["canceled"]
    with pytest.raises(OrderNotFound):
        await client.cancel_all_orders(SYM)
    assert [o["clientOrderId"] for o in await client.fetch_open_orders("ETH/USDT")] == [web.client_order_id]
    assert venue.balances["ETH"] == {"free": Decimal("1.5"), "locked": Decimal("1.5")}


async def test_client_order_ids_unique_among_open_orders_only(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    first = await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "dup-1"})
    with pytest.raises(InvalidOrder, match="Duplicate order sent"):
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "dup-1"})
    await client.cancel_order(first["id"], SYM)
    again = await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "dup-1"})
    assert again["id"] != first["id"]
    found = await client.fetch_order(None, SYM, params={"clientOrderId": "dup-1"})
    assert found["id"] == again["id"]  # the open one
    with pytest.raises(BadRequest, match="-1100"):
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "has space"})
    with pytest.raises(BadRequest, match="-1100"):
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "x" * 37})


async def test_filters_precision_balance_and_unread_parameters(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    raw = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}
    with pytest.raises(InvalidOrder, match="LOT_SIZE"):
        await client.private_post_order({**raw, "quantity": "0.000015", "price": "29000"})
    with pytest.raises(InvalidOrder, match="PRICE_FILTER"):
        await client.private_post_order({**raw, "quantity": "0.1", "price": "29000.005"})
    # ccxt 4.5.64 maps -1013 by code to BadRequest; only LOT_SIZE / PRICE_FILTER texts become InvalidOrder
    with pytest.raises(BadRequest, match="Filter failure: NOTIONAL"):
        await client.create_order(SYM, "limit", "buy", 0.0001, 29000)
    with pytest.raises(BadRequest, match="-1111"):
        await client.private_post_order({**raw, "quantity": "0.000000001", "price": "29000"})
    with pytest.raises(InsufficientFunds):
        await client.create_order(SYM, "limit", "buy", 5, 29000)
    with pytest.raises(InsufficientFunds):
        await client.create_order(SYM, "market", "sell", 3)
    with pytest.raises(BadRequest, match="-1104"):  # spot has no reduceOnly
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"reduceOnly": "true"})
    with pytest.raises(BadRequest, match="-1106"):  # no time in force on a market order
        await client.create_order(SYM, "market", "buy", 0.001, None, params={"timeInForce": "GTC"})
    assert venue.orders() == []


async def test_my_trades_since_and_window(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    await client.create_order(SYM, "market", "buy", 0.005)
    await asyncio.sleep(0.01)
    cut = venue.now_ms()
    await asyncio.sleep(0.01)
    second = await client.create_order(SYM, "market", "buy", 0.01)
    recent = await client.fetch_my_trades(SYM, since=cut)
    assert [t["order"] for t in recent] == [second["id"]] and recent[0]["id"] == "2"
    # Binance answers at most 24 hours from startTime: since=0 finds nothing
    assert await client.fetch_my_trades(SYM, since=0) == []
    assert [t["id"] for t in await client.fetch_my_trades(SYM, params={"fromId": 2})] == ["2"]


# --- signatures, keys, clock --------------------------------------------------------------------


@pytest.mark.parametrize(("key", "secret", "code"), [("wrong-key", SECRET, "-2015"), (KEY, "wrong-secret", "-1022")])
async def test_wrong_keys_are_refused(venue: BinanceTestExchange, key: str, secret: str, code: str) -> None:
    ex = make_client(venue.base_url, key, secret)
    try:
        with pytest.raises(AuthenticationError, match=code):
            await ex.load_markets()
        with pytest.raises(AuthenticationError, match=code):
            await ex.fetch_balance()
    finally:
        await ex.close()
    signed = [r for r in venue.requests if r.path != "/api/v3/exchangeInfo"]
    assert {r.path for r in signed} == {"/sapi/v1/margin/allPairs", "/sapi/v1/margin/isolated/allPairs"}
    assert {r.status for r in signed} == {401 if code == "-2015" else 400}


@pytest.mark.parametrize(("offset", "text"), [(20_000, "outside of the recvWindow"), (-5_000, "1000ms ahead")])
async def test_clock_skew_is_invalid_nonce(
    client: ccxt.binance, venue: BinanceTestExchange, offset: int, text: str
) -> None:
    venue.clock_offset_ms = offset
    with pytest.raises(InvalidNonce, match=text):
        await client.create_order(SYM, "market", "buy", 0.001)
    assert venue.orders() == []
    venue.clock_offset_ms = 0
    assert (await client.create_order(SYM, "market", "buy", 0.001))["status"] == "closed"


async def test_a_key_revoked_after_a_success_is_ddos_protection_in_ccxt(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    await client.fetch_balance()
    venue.api_key = "rotated"
    # ccxt 4.5.64 reads -2015 after one authenticated success as a temporary ban, not as bad keys
    with pytest.raises(DDoSProtection, match="-2015"):
        await client.fetch_balance()


async def test_unknown_endpoint_is_a_plain_404(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    with pytest.raises(ExchangeNotAvailable, match="404"):
        await client.public_get_avgprice({"symbol": "BTCUSDT"})
    assert venue.requests[-1].path == "/api/v3/avgPrice" and venue.requests[-1].status == 404
    with pytest.raises(BadRequest, match="-1127"):
        await client.fetch_my_trades(SYM, since=1, params={"endTime": 1 + 25 * 3600 * 1000})


# --- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "status"),
    [
        ("http_429", DDoSProtection, 429),  # ccxt's binance raises DDoSProtection for 418 and 429
        ("http_418", DDoSProtection, 418),
        ("http_503", ExchangeNotAvailable, 503),
        ("drop_connection", ExchangeNotAvailable, None),
    ],
)
async def test_faults_before_processing_place_nothing(
    client: ccxt.binance, venue: BinanceTestExchange, kind: str, error: type[Exception], status: int | None
) -> None:
    venue.inject_fault(kind, "POST", "/api/v3/order")
    with pytest.raises(error):
        await client.create_order(SYM, "market", "buy", 0.001, params={"clientOrderId": f"f-{kind}"})
    assert venue.orders() == [] and venue.trades() == []
    assert [r.status for r in venue.requests_for("POST", "/api/v3/order")] == [status]
    # the fault was for one request: the same order now goes through
    again = await client.create_order(SYM, "market", "buy", 0.001, params={"clientOrderId": f"f-{kind}"})
    assert again["status"] == "closed" and len(venue.orders(client_order_id=f"f-{kind}")) == 1


async def test_429_carries_retry_after(venue: BinanceTestExchange) -> None:
    venue.inject_fault("http_429", "GET", "/api/v3/ping", retry_after=7)
    async with aiohttp.ClientSession() as http, http.get(venue.base_url + "/api/v3/ping") as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "7")
        assert (await resp.json())["code"] == -1003
    async with aiohttp.ClientSession() as http, http.get(venue.base_url + "/api/v3/ping") as resp:
        assert (resp.status, await resp.json()) == (200, {})


async def test_lost_answer_leaves_exactly_one_order_found_by_client_id(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    venue.inject_fault("lost_after_place", "POST", "/api/v3/order")
    with pytest.raises(NetworkError):
        await client.create_order(SYM, "market", "buy", 0.002, params={"clientOrderId": "lost-1"})
    assert len(venue.requests_for("POST", "/api/v3/order", newClientOrderId="lost-1")) == 1
    found = await client.fetch_order(None, SYM, params={"clientOrderId": "lost-1"})
    assert (found["status"], found["filled"]) == ("closed", 0.002)
    assert len(venue.orders(client_order_id="lost-1")) == 1 and len(venue.trades()) == 1


@pytest.mark.parametrize("placed", [True, False])
async def test_unknown_status_is_request_timeout(
    client: ccxt.binance, venue: BinanceTestExchange, placed: bool
) -> None:
    venue.inject_fault("unknown_status", "POST", "/api/v3/order", placed=placed)
    with pytest.raises(RequestTimeout, match="-1007"):
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "unk-1"})
    assert len(venue.orders(client_order_id="unk-1")) == (1 if placed else 0)
    if not placed:
        with pytest.raises(OrderNotFound):
            await client.fetch_order(None, SYM, params={"clientOrderId": "unk-1"})


async def test_slow_answer_is_request_timeout_but_the_order_is_placed(
    client: ccxt.binance, venue: BinanceTestExchange
) -> None:
    client.timeout = 300
    venue.inject_fault("slow", "POST", "/api/v3/order", seconds=2.0)
    with pytest.raises(RequestTimeout):
        await client.create_order(SYM, "limit", "buy", 0.1, 29000, params={"clientOrderId": "slow-1"})
    client.timeout = 3000
    assert (await client.fetch_order(None, SYM, params={"clientOrderId": "slow-1"}))["status"] == "open"


async def test_trade_reported_twice(client: ccxt.binance, venue: BinanceTestExchange) -> None:
    order = await client.create_order(SYM, "market", "buy", 0.002)
    venue.inject_fault("trade_reported_twice", "GET", "/api/v3/myTrades")
    twice = await client.fetch_my_trades(SYM, params={"orderId": order["id"]})
    assert [t["id"] for t in twice] == ["1", "1"]  # ccxt does not deduplicate: the caller must
    once = await client.fetch_my_trades(SYM, params={"orderId": order["id"]})
    assert [t["id"] for t in once] == ["1"]


def test_unknown_fault_kind_is_refused() -> None:
    ex = BinanceTestExchange()
    with pytest.raises(ValueError, match="fault kind 'http_500'"):
        ex.inject_fault("http_500")


# --- the engine alone: money invariants for every sequence of events -----------------------------

PRICES = st.integers(min_value=95, max_value=105).map(lambda p: Decimal(p))
QTYS = st.integers(min_value=1, max_value=40).map(lambda q: Decimal(q) / 10)
OPS = st.one_of(
    st.tuples(st.just("book"), PRICES, QTYS, QTYS),
    st.tuples(st.just("limit"), st.sampled_from(["BUY", "SELL"]), PRICES, QTYS, st.sampled_from(["GTC", "IOC"])),
    st.tuples(st.just("market"), st.sampled_from(["BUY", "SELL"]), QTYS),
    st.tuples(st.just("stop"), st.sampled_from(["BUY", "SELL"]), PRICES, QTYS),
    st.tuples(st.just("cancel"), st.integers(min_value=1, max_value=30)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=25))
def test_balances_are_conserved_and_locked_is_what_open_orders_reserve(ops: list[tuple[Any, ...]]) -> None:
    one, tenth = Decimal(1), Decimal("0.1")
    spec = SymbolSpec("AAA", "QQ", tick_size=one, min_price=one, step_size=tenth, min_qty=tenth, min_notional=one)
    start = {"AAA": Decimal(20), "QQ": Decimal(2000)}
    eng = Engine([spec], start, Decimal("0.0005"), Decimal("0.001"), lambda: 1)
    for op in ops:
        try:
            if op[0] == "book":
                _, mid, bid_qty, ask_qty = op
                eng.set_book("AAA/QQ", [[mid - 1, bid_qty]], [[mid + 1, ask_qty]])
            elif op[0] == "limit":
                _, side, price, qty, tif = op
                p = {"side": side, "type": "LIMIT", "price": str(price), "quantity": str(qty), "timeInForce": tif}
                eng.new_order({"symbol": "AAAQQ", **p})
            elif op[0] == "market":
                eng.new_order({"symbol": "AAAQQ", "side": op[1], "type": "MARKET", "quantity": str(op[2])})
            elif op[0] == "stop":
                _, side, price, qty = op
                p = {"side": side, "type": "STOP_LOSS_LIMIT", "price": str(price), "stopPrice": str(price)}
                eng.new_order({"symbol": "AAAQQ", **p, "quantity": str(qty), "timeInForce": "GTC"})
            else:
                eng.cancel_order(spec, op[1], None)
        except BinanceError as e:
            assert e.code in (-2010, -2011, -1013), e.body()
    for asset in ("AAA", "QQ"):
        free, locked = eng.balance(asset)
        assert free >= 0 and locked >= 0, (asset, free, locked)
        assert locked == sum((o.reserved for o in eng.orders if o.is_open and o.reserve_asset == asset), Decimal(0))
    assert all(o.reserved == 0 for o in eng.orders if not o.is_open)
    bought = [t for t in eng.trades if t.is_buyer]
    sold = [t for t in eng.trades if not t.is_buyer]
    base = (
        start["AAA"] + sum((t.qty - t.commission for t in bought), Decimal(0)) - sum((t.qty for t in sold), Decimal(0))
    )
    quote = start["QQ"] - sum((t.quote_qty for t in bought), Decimal(0))
    quote += sum((t.quote_qty - t.commission for t in sold), Decimal(0))
    assert sum(eng.balance("AAA")) == base and sum(eng.balance("QQ")) == quote
    for order in eng.orders:
        assert sum((t.qty for t in eng.trades if t.order_id == order.order_id), Decimal(0)) == order.executed_qty
        assert order.executed_qty <= order.orig_qty or order.type == "MARKET"


# --- as its own process, controlled over HTTP -----------------------------------------------------


async def test_runs_as_a_process_with_a_json_control_api() -> None:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.exchanges.binance", "--port", "0", "--api-key", KEY, "--secret", SECRET],
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        async with aiohttp.ClientSession() as http:

            async def control(method: str, path: str, body: Any = None) -> Any:
                async with http.request(method, f"{url}/__control/{path}", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    return await resp.json()

            await control("POST", "balances", {"USDT": "1000"})
            await control("POST", "book", {"symbol": "BTC/USDT", "bids": [["100", "1"]], "asks": [["101", "1"]]})
            await control("POST", "faults", {"kind": "lost_after_place", "method": "POST", "path": "/api/v3/order"})
            ex = make_client(url)
            try:
                with pytest.raises(NetworkError):
                    await ex.create_order(SYM, "market", "buy", 0.5, params={"clientOrderId": "proc-1"})
                found = await ex.fetch_order(None, SYM, params={"clientOrderId": "proc-1"})
                assert found["status"] == "closed"
            finally:
                await ex.close()
            orders = await control("GET", "orders?clientOrderId=proc-1")
            assert [(o["status"], o["executedQty"], o["external"]) for o in orders] == [("FILLED", "0.50000000", False)]
            balances = await control("GET", "balances")
            assert balances["BTC"]["free"] == "0.49950000"
            posted = [r for r in await control("GET", "requests") if r["path"] == "/api/v3/order"]
            assert [r["method"] for r in posted] == ["POST", "GET"] and "signature" not in json.dumps(posted)
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
