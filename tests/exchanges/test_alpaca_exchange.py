"""Real ccxt (``ccxt.async_support.alpaca``) against the local Alpaca test exchange; no internet.

The ccxt client is built as the service builds it (keys, ``enableRateLimit``, a timeout) and pointed at
the exchange by replacing scheme and host of every http(s) URL in ``urls['api']`` (``EXCHANGE_API_URL``).
Only ``rateLimit`` is lowered in most tests to keep the file fast; one test runs ccxt's default.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt.async_support as ccxt
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.exchanges.alpaca import AlpacaTestExchange
from tests.exchanges.alpaca_engine import D0, AlpacaEngine, AlpacaError
from tests.helpers import eventually

KEY, SECRET = "PKTEST123", "secret-abc"
REPO = Path(__file__).resolve().parents[2]
D = Decimal


def point_at(urls: Any, base_url: str) -> Any:
    """EXCHANGE_API_URL: scheme and host of every http(s) URL replaced by ``base_url``'s, paths kept."""
    base = urlsplit(base_url)
    if isinstance(urls, dict):
        return {k: point_at(v, base_url) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        return urlsplit(urls)._replace(scheme=base.scheme, netloc=base.netloc).geturl()
    return urls


def make_client(base_url: str, *, key: str = KEY, secret: str = SECRET, **extra: Any) -> ccxt.alpaca:
    ex = ccxt.alpaca({"apiKey": key, "secret": secret, "enableRateLimit": True, "timeout": 3000, **extra})
    ex.urls["api"] = point_at(ex.urls["api"], base_url)
    return ex


@pytest.fixture
async def venue() -> AsyncIterator[AlpacaTestExchange]:
    exchange = AlpacaTestExchange(api_key=KEY, secret=SECRET, cash="100000", positions={"BTC": "0.5"})
    await exchange.start()
    exchange.set_book("BTC/USD", bids=[("49990", "1"), ("49980", "2")], asks=[("50010", "0.005"), ("50020", "1")])
    exchange.set_book("ETH/USD", bids=[("2999.9", "10")], asks=[("3000.1", "10")])
    yield exchange
    await exchange.stop()


@pytest.fixture
async def ex(venue: AlpacaTestExchange) -> AsyncIterator[ccxt.alpaca]:
    client = make_client(venue.base_url, rateLimit=5)
    await client.load_markets()
    yield client
    await client.close()


async def by_client_id(ex: ccxt.alpaca, cid: str) -> dict[str, Any]:
    raw = await ex.request("v2/orders:by_client_order_id", ["trader", "private"], "GET", {"client_order_id": cid})
    return ex.parse_order(raw)


async def until_status(ex: ccxt.alpaca, order_id: str, *statuses: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        order = await ex.fetch_order(order_id)
        return order if order["info"]["status"] in statuses else None

    return await eventually(probe, timeout=5, what=f"order {order_id} in {statuses}")


# ---- markets, market data, account --------------------------------------------------------------


async def test_load_markets_as_the_service_builds_ccxt(venue: AlpacaTestExchange) -> None:
    client = make_client(venue.base_url)  # ccxt's default rateLimit
    try:
        markets = await client.load_markets()
    finally:
        await client.close()
    btc = markets["BTC/USD"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["active"]) == ("BTC/USD", "BTC", "USD", True, True)
    assert btc["precision"] == {"amount": 1e-09, "price": 1.0}
    assert btc["limits"]["amount"]["min"] == 0.0001
    assert markets["ETH/BTC"]["precision"]["price"] == 0.00001
    [req] = venue.requests_to("GET", "/v2/assets")
    assert req["params"] == {"asset_class": "crypto", "status": "active"}
    assert req["status"] == 200


async def test_wrong_or_missing_keys_are_refused(venue: AlpacaTestExchange) -> None:
    client = make_client(venue.base_url, secret="wrong", rateLimit=5)
    try:
        with pytest.raises(ccxt.PermissionDenied) as caught:  # 40110000; an AuthenticationError
            await client.load_markets()
        assert isinstance(caught.value, ccxt.AuthenticationError)
    finally:
        await client.close()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{venue.base_url}/v2/account", headers={"APCA-API-KEY-ID": KEY}) as resp,
    ):
        assert resp.status == 401
        assert await resp.json() == {"code": 40110000, "message": "request is not authorized"}


async def test_order_book_ticker_and_public_trades(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    book = await ex.fetch_order_book("BTC/USD")
    assert book["bids"] == [[49990.0, 1.0], [49980.0, 2.0]]
    assert book["asks"] == [[50010.0, 0.005], [50020.0, 1.0]]
    ticker = await ex.fetch_ticker("BTC/USD")
    assert (ticker["bid"], ticker["ask"], ticker["last"]) == (49990.0, 50010.0, None)  # no trade yet
    await ex.create_order("BTC/USD", "market", "buy", 0.001)
    await eventually(lambda: asyncio.sleep(0, venue.fills), what="a fill")
    ticker = await ex.fetch_ticker("BTC/USD")
    assert ticker["last"] == 50010.0
    trades = await ex.fetch_trades("BTC/USD")
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(50010.0, 0.001, "buy")]
    [candle] = await ex.fetch_ohlcv("BTC/USD", "1m")
    assert candle[1:] == [50010.0, 50010.0, 50010.0, 50010.0, 0.001]
    with pytest.raises(ccxt.BadSymbol):
        await ex.marketPublicGetV1beta3CryptoLocLatestOrderbooks({"loc": "us", "symbols": "btcusd"})


async def test_balance_is_usd_and_positions_hold_the_coin_minus_the_fee(
    venue: AlpacaTestExchange, ex: ccxt.alpaca
) -> None:
    balance = await ex.fetch_balance()
    assert balance["USD"]["free"] == 100000.0
    assert balance["USD"]["total"] == pytest.approx(100000 + 0.5 * 50000)  # equity: cash + coin at mid
    order = await ex.create_order("BTC/USD", "market", "buy", 0.01, None, {"clientOrderId": "buy-1"})
    await until_status(ex, order["id"], "filled")
    cost = D("0.005") * 50010 + D("0.005") * 50020
    assert venue.cash == D(100000) - cost
    fee = D("0.01") * D("0.0025")  # taker, charged in BTC
    assert venue.positions["BTC"] == D("0.5") + D("0.01") - fee
    [position] = await ex.traderPrivateGetV2Positions()
    assert position["symbol"] == "BTCUSD"
    assert D(position["qty"]) == D("0.509975")
    assert D(position["qty_available"]) == D("0.509975")
    assert (await ex.fetch_balance())["USD"]["free"] == float(D(100000) - cost)


# ---- orders ------------------------------------------------------------------------------------


async def test_market_order_is_answered_pending_new_then_fills_across_levels(
    venue: AlpacaTestExchange, ex: ccxt.alpaca
) -> None:
    order = await ex.create_order("BTC/USD", "market", "buy", 0.01, None, {"clientOrderId": "mkt-1"})
    assert order["info"]["status"] == "pending_new"
    assert (order["status"], order["filled"], order["clientOrderId"]) == ("open", 0.0, "mkt-1")
    assert order["info"]["filled_avg_price"] is None
    done = await until_status(ex, order["id"], "filled")
    assert (done["status"], done["filled"], done["average"]) == ("closed", 0.01, 50015.0)
    trades = await ex.fetch_my_trades("BTC/USD")
    assert sorted((t["price"], t["amount"], t["order"]) for t in trades) == [
        (50010.0, 0.005, order["id"]),
        (50020.0, 0.005, order["id"]),
    ]
    assert all(t["fee"]["cost"] is None for t in trades)  # fills carry no fee: CFEE activities do
    fees = await ex.traderPrivateGetV2AccountActivitiesActivityType({"activity_type": "CFEE"})
    assert sorted(D(f["qty"]) for f in fees) == [D("-0.0000125"), D("-0.0000125")]
    assert {f["symbol"] for f in fees} == {"BTCUSD"}


async def test_market_buy_by_cost_is_a_notional_order(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_market_buy_order_with_cost("BTC/USD", 100)
    [sent] = venue.requests_to("POST", "/v2/orders")
    assert (sent["params"]["notional"], "qty" in sent["params"]) == ("100", False)
    done = await until_status(ex, order["id"], "filled")
    assert (done["filled"], done["average"], done["info"]["notional"]) == (0.0019996, 50010.0, "100")
    [fill] = venue.fills
    assert (fill["qty"], fill["order_status"], fill["type"]) == ("0.0019996", "filled", "fill")
    assert venue.cash == D(100000) - D("0.0019996") * 50010


async def test_limit_order_rests_then_fills_as_maker_when_the_book_crosses(
    venue: AlpacaTestExchange, ex: ccxt.alpaca
) -> None:
    order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 49000, {"clientOrderId": "lim-1"})
    await until_status(ex, order["id"], "new")
    assert [o["id"] for o in await ex.fetch_open_orders()] == [order["id"]]
    assert venue.positions["BTC"] == D("0.5")
    venue.set_book("BTC/USD", bids=[("48800", "1")], asks=[("48900", "0.004"), ("48950", "1")])
    done = await until_status(ex, order["id"], "filled")
    assert done["average"] == 49000.0  # a maker fill is at the resting order's price
    assert venue.positions["BTC"] == D("0.5") + D("0.01") * (1 - D("0.0015"))
    assert venue.cash == D(100000) - D("0.01") * 49000
    assert await ex.fetch_open_orders() == []


async def test_crossing_limit_takes_what_crosses_and_rests_the_rest(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50015)
    partial = await until_status(ex, order["id"], "partially_filled")
    assert (partial["filled"], partial["average"], partial["status"]) == (0.005, 50010.0, "open")
    balance = await ex.fetch_balance()
    assert balance["info"]["buying_power"] == str(D(100000) - D("0.005") * 50010 - D("0.005") * 50015)


async def test_ioc_limit_that_does_not_cross_is_canceled(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 49000, {"timeInForce": "ioc"})
    done = await until_status(ex, order["id"], "canceled")
    assert done["filled"] == 0.0


async def test_stop_limit_is_held_until_the_book_reaches_the_stop(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 51100, {"triggerPrice": 51000})
    [sent] = venue.requests_to("POST", "/v2/orders")
    assert (sent["params"]["type"], sent["params"]["stop_price"], sent["params"]["limit_price"]) == (
        "stop_limit",
        "51000",
        "51100",
    )
    held = await until_status(ex, order["id"], "new")
    assert (held["type"], held["triggerPrice"], held["price"]) == ("limit", 51000.0, 51100.0)
    venue.set_book("BTC/USD", bids=[("50900", "1")], asks=[("50950", "1")])  # below the stop: still held
    assert (await ex.fetch_order(order["id"]))["filled"] == 0.0
    venue.set_book("BTC/USD", bids=[("51000", "1")], asks=[("51050", "1")])
    done = await until_status(ex, order["id"], "filled")
    assert done["average"] == 51050.0


async def test_market_stops_are_not_supported(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    with pytest.raises(ccxt.NotSupported):  # ccxt refuses before sending anything
        await ex.create_order("BTC/USD", "market", "sell", 0.01, None, {"triggerPrice": 45000})
    assert venue.requests_to("POST", "/v2/orders") == []
    with pytest.raises(ccxt.BadRequest, match="stop_price must not be set for market orders"):
        await ex.traderPrivatePostV2Orders(
            {
                "symbol": "BTC/USD",
                "side": "sell",
                "type": "market",
                "qty": "0.01",
                "time_in_force": "gtc",
                "stop_price": "45000",
            }
        )


async def test_find_by_client_id_and_unknown_ids(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "limit", "sell", 0.01, 60000, {"clientOrderId": "svc-abc"})
    found = await by_client_id(ex, "svc-abc")
    assert (found["id"], found["clientOrderId"], found["side"], found["price"]) == (
        order["id"],
        "svc-abc",
        "sell",
        60000.0,
    )
    with pytest.raises(ccxt.InvalidOrder, match="order not found"):  # 404 40410000, not OrderNotFound
        await by_client_id(ex, "never-sent")
    with pytest.raises(ccxt.InvalidOrder):
        await ex.fetch_order("00000000-0000-0000-0000-000000000000")
    async with (
        aiohttp.ClientSession(headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}) as http,
        http.get(f"{venue.base_url}/v2/no-such-endpoint") as resp,
    ):
        assert (resp.status, await resp.json()) == (404, {"code": 40410000, "message": "endpoint not found"})


async def test_client_order_id_is_unique_across_every_order_ever_placed(
    venue: AlpacaTestExchange, ex: ccxt.alpaca
) -> None:
    order = await ex.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": "once"})
    await until_status(ex, order["id"], "filled")
    with pytest.raises(ccxt.BadRequest, match="client_order_id must be unique"):
        await ex.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": "once"})
    with pytest.raises(ccxt.BadRequest, match="128"):
        await ex.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": "x" * 129})
    assert len(venue.orders_with_client_id("once")) == 1


async def test_cancel_answers_no_body_so_fetch_after(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 40000)
    await until_status(ex, order["id"], "new")
    answer = await ex.cancel_order(order["id"])
    assert (answer["id"], answer["status"]) == (None, None)  # 204: nothing to parse
    after = await ex.fetch_order(order["id"])
    assert (after["status"], after["info"]["canceled_at"] is not None) == ("canceled", True)
    with pytest.raises(ccxt.ExchangeError, match='already in \\\\"canceled\\\\" state'):
        await ex.cancel_order(order["id"])
    with pytest.raises(ccxt.InvalidOrder):
        await ex.cancel_order("00000000-0000-0000-0000-000000000000")


async def test_cancel_all_and_listing_orders(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    ids = [(await ex.create_order("BTC/USD", "limit", "buy", 0.001, 40000 + i))["id"] for i in range(3)]
    filled = await ex.create_order("ETH/USD", "market", "buy", 0.01)
    await until_status(ex, filled["id"], "filled")
    open_orders = await ex.fetch_open_orders()
    assert sorted(o["id"] for o in open_orders) == sorted(ids)
    assert [o["id"] for o in await ex.fetch_closed_orders()] == [filled["id"]]
    assert [o["id"] for o in await ex.fetch_orders("ETH/USD")] == [filled["id"]]
    asc = await ex.traderPrivateGetV2Orders({"status": "all", "direction": "asc", "limit": 2})
    assert [o["id"] for o in asc] == ids[:2]
    with pytest.raises(ccxt.BadRequest, match="limit must be between 1 and 500"):
        await ex.fetch_orders(limit=501)
    canceled = await ex.cancel_all_orders()
    assert sorted(o["id"] for o in canceled) == sorted(ids)
    assert await ex.fetch_open_orders() == []


async def test_edit_order_replaces_with_a_new_order(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    old = await ex.create_order("BTC/USD", "limit", "buy", 0.01, 40000, {"clientOrderId": "v1"})
    await until_status(ex, old["id"], "new")
    new = await ex.edit_order(old["id"], "BTC/USD", "limit", "buy", 0.02, 41000, {"clientOrderId": "v2"})
    assert new["id"] != old["id"]
    assert (new["clientOrderId"], new["amount"], new["price"]) == ("v2", 0.02, 41000.0)
    assert new["info"]["replaces"] == old["id"]
    replaced = await ex.fetch_order(old["id"])
    assert (replaced["status"], replaced["info"]["replaced_by"]) == ("replaced", new["id"])


async def test_time_in_force_is_gtc_or_ioc_only(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    for tif in ("IOC", "day", "fok"):
        with pytest.raises(ccxt.BadRequest, match="invalid crypto time_in_force"):
            await ex.create_order("BTC/USD", "limit", "buy", 0.01, 40000, {"timeInForce": tif})
    assert venue.orders == []


async def test_minimum_cost_and_balance_raise_insufficient_funds(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="cost basis must be >= minimal amount of order 10"):
        await ex.create_order("BTC/USD", "limit", "buy", 0.0001, 40000)  # $4
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance for USD"):
        await ex.create_order("BTC/USD", "limit", "buy", 3, 40000)  # $120,000 > $100,000
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance for BTC"):
        await ex.create_order("BTC/USD", "limit", "sell", 0.6, 60000)  # holds 0.5
    await ex.create_order("BTC/USD", "limit", "sell", 0.4, 60000)  # holds 0.4 of the 0.5 back
    with pytest.raises(ccxt.InsufficientFunds, match=r"requested: 0.2, available: 0.1"):
        await ex.create_order("BTC/USD", "limit", "sell", 0.2, 60000)
    assert len(venue.orders) == 1


async def test_external_order_is_listed_and_filled(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    placed = venue.place_external_order(symbol="ETH/USD", side="buy", type="market", qty="0.5")
    done = await until_status(ex, placed["id"], "filled")
    assert done["filled"] == 0.5
    assert [o["id"] for o in await ex.fetch_closed_orders("ETH/USD")] == [placed["id"]]
    assert venue.requests_to("POST", "/v2/orders") == []
    assert venue.positions["ETH"] == D("0.5") * (1 - D("0.0025"))


# ---- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error", "placed"),
    [
        ("http_429", ccxt.RateLimitExceeded, False),
        ("http_503", ccxt.ExchangeNotAvailable, False),
        ("drop_connection", ccxt.ExchangeNotAvailable, False),
        ("lost_after_place", ccxt.ExchangeNotAvailable, True),
        ("http_500_placed", ccxt.ExchangeError, True),
        ("slow", ccxt.RequestTimeout, True),
    ],
)
async def test_fault_on_create_order_raises_the_ccxt_class(
    venue: AlpacaTestExchange, ex: ccxt.alpaca, fault: str, error: type[Exception], placed: bool
) -> None:
    ex.timeout = 300
    venue.inject(fault, "POST", "/v2/orders", seconds=0.8)
    with pytest.raises(error) as caught:
        await ex.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": f"f-{fault}"})
    assert type(caught.value) is error  # exactly: e.g. a 500 with Alpaca's JSON body is no NetworkError
    assert len(venue.requests_to("POST", "/v2/orders")) == 1
    assert len(venue.orders_with_client_id(f"f-{fault}")) == (1 if placed else 0)
    ex.timeout = 3000
    if placed:
        found = await by_client_id(ex, f"f-{fault}")
        done = await until_status(ex, found["id"], "filled")
        assert done["filled"] == 0.001
    else:
        with pytest.raises(ccxt.InvalidOrder):
            await by_client_id(ex, f"f-{fault}")
    # the next request is served normally
    again = await ex.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": f"g-{fault}"})
    assert again["info"]["status"] == "pending_new"


async def test_lost_answer_leaves_exactly_one_order_found_by_client_id(
    venue: AlpacaTestExchange, ex: ccxt.alpaca
) -> None:
    venue.inject("lost_after_place", "POST", "/v2/orders")
    with pytest.raises(ccxt.NetworkError):
        await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50010, {"clientOrderId": "lost-1"})
    found = await by_client_id(ex, "lost-1")
    assert found["clientOrderId"] == "lost-1"
    with pytest.raises(ccxt.BadRequest, match="client_order_id must be unique"):  # a blind resend is refused
        await ex.create_order("BTC/USD", "limit", "buy", 0.01, 50010, {"clientOrderId": "lost-1"})
    assert len(venue.orders_with_client_id("lost-1")) == 1
    assert [r["params"]["client_order_id"] for r in venue.requests_to("POST", "/v2/orders")] == ["lost-1", "lost-1"]
    assert [r["status"] for r in venue.requests_to("POST", "/v2/orders")] == ["dropped", 422]


async def test_faults_on_reads_and_fill_reported_twice(venue: AlpacaTestExchange, ex: ccxt.alpaca) -> None:
    order = await ex.create_order("BTC/USD", "market", "buy", 0.001)
    await until_status(ex, order["id"], "filled")
    venue.inject("fill_reported_twice", "GET", "/v2/account/activities/*")
    trades = await ex.fetch_my_trades()
    assert len(trades) == 2 and trades[0]["id"] == trades[1]["id"]
    assert len(await ex.fetch_my_trades()) == 1  # the fault was for one request
    venue.inject("http_503", "GET", "/v2/orders/*", times=2)
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            await ex.fetch_order(order["id"])
    assert (await ex.fetch_order(order["id"]))["status"] == "closed"
    venue.inject("http_429", "GET", "/v2/account")
    with pytest.raises(ccxt.RateLimitExceeded):
        await ex.fetch_balance()
    with pytest.raises(ValueError, match="unknown fault"):
        venue.inject("explode")


# ---- as its own process -------------------------------------------------------------------------


async def test_runs_as_a_process_controlled_over_http() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.exchanges.alpaca",
        "--port",
        "0",
        "--api-key",
        KEY,
        "--secret",
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        client = make_client(url, rateLimit=5)
        async with aiohttp.ClientSession() as http:
            book = {"symbol": "BTC/USD", "bids": [["49000", "1"]], "asks": [["49010", "1"]]}
            async with http.post(f"{url}/__control/book", json=book) as resp:
                assert resp.status == 200
            fault = {"kind": "http_429", "method": "GET", "path": "/v2/account"}
            async with http.post(f"{url}/__control/fault", json=fault) as resp:
                assert resp.status == 200
            try:
                order = await client.create_order("BTC/USD", "market", "buy", 0.001, None, {"clientOrderId": "p-1"})
                await until_status(client, order["id"], "filled")
                with pytest.raises(ccxt.RateLimitExceeded):
                    await client.fetch_balance()
            finally:
                await client.close()
            async with http.get(f"{url}/__control/state") as resp:
                state = json.loads(await resp.text())
        assert state["positions"] == {"BTC": "0.0009975"}
        assert [o["client_order_id"] for o in state["orders"]] == ["p-1"]
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0


# ---- the engine's money maths, for every sequence of books and orders ---------------------------

_prices = st.integers(min_value=45000, max_value=55000).map(D)
_sizes = st.integers(min_value=1, max_value=3000).map(lambda n: D(n) / 10000)  # 0.0001 .. 0.3
_levels = st.lists(st.tuples(_prices, _sizes), max_size=4)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("book"), _levels, _levels),
        st.tuples(st.just("limit"), st.sampled_from(["buy", "sell"]), _sizes, _prices, st.sampled_from(["gtc", "ioc"])),
        st.tuples(st.just("market"), st.sampled_from(["buy", "sell"]), _sizes),
        st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=20)),
    ),
    max_size=25,
)


_OVERSPEND = [  # two resting buys worth more than the cash together, then a book that fills both
    ("limit", "buy", D("0.1"), D(50000), "gtc"),
    ("limit", "buy", D("0.1"), D(50000), "gtc"),
    ("book", [], [(D(49000), D("0.3"))]),
]
_OVERSELL = [  # two resting sells of more coin than is held together, then a book that fills both
    ("limit", "sell", D("0.3"), D(52000), "gtc"),
    ("limit", "sell", D("0.3"), D(52000), "gtc"),
    ("book", [(D(53000), D("1"))], []),
]


@settings(max_examples=80, deadline=None)
@example(steps=_OVERSPEND, limits_only=True)
@example(steps=_OVERSELL, limits_only=True)
@given(steps=_steps, limits_only=st.booleans())
def test_engine_conserves_money_and_never_overspends(steps: list[tuple[Any, ...]], limits_only: bool) -> None:
    engine = AlpacaEngine(cash="8000", positions={"BTC": "0.4"})
    engine.set_book("BTC/USD", [("49000", "1")], [("51000", "1")])
    for step in steps:
        try:
            if step[0] == "book":
                engine.set_book("BTC/USD", step[1], step[2])
            elif step[0] == "limit" or (step[0] == "market" and limits_only):
                side, qty = step[1], step[2]
                price = step[3] if step[0] == "limit" else D(51000 if side == "buy" else 49000)
                tif = step[4] if step[0] == "limit" else "ioc"
                order = engine.place(
                    {
                        "symbol": "BTC/USD",
                        "side": side,
                        "type": "limit",
                        "qty": qty,
                        "limit_price": price,
                        "time_in_force": tif,
                    }
                )
                engine.activate(order.id)
            elif step[0] == "market":
                order = engine.place(
                    {"symbol": "BTC/USD", "side": step[1], "type": "market", "qty": step[2], "time_in_force": "gtc"}
                )
                engine.activate(order.id)
            else:
                ids = list(engine.orders)
                if ids:
                    engine.cancel(ids[step[1] % len(ids)])
        except AlpacaError as e:
            assert e.status in (403, 422), e.body
    fills = [a for a in engine.activities if a["activity_type"] == "FILL"]
    fees = [a for a in engine.activities if a["activity_type"] == "CFEE"]
    assert len(fees) == len(fills)
    bought = sum((D(f["qty"]) for f in fills if f["side"] == "buy"), D0)
    sold = sum((D(f["qty"]) for f in fills if f["side"] == "sell"), D0)
    spent = sum((D(f["qty"]) * D(f["price"]) for f in fills if f["side"] == "buy"), D0)
    earned = sum((D(f["qty"]) * D(f["price"]) for f in fills if f["side"] == "sell"), D0)
    coin_fees = -sum((D(c["qty"]) for c in fees), D0)
    usd_fees = -sum((D(c["net_amount"]) for c in fees), D0)
    assert engine.cash == D(8000) - spent + earned - usd_fees
    assert engine.positions["BTC"] == D("0.4") + bought - coin_fees - sold
    for fill, fee in zip(fills, fees, strict=True):
        rate = {D("0.0025"), D("0.0015")}
        if fill["side"] == "buy":  # in the coin received
            assert (D(fee["net_amount"]), fee["symbol"]) == (0, "BTCUSD")
            assert -D(fee["qty"]) / D(fill["qty"]) in rate
        else:  # in the USD received
            assert D(fee["qty"]) == 0
            assert -D(fee["net_amount"]) / (D(fill["qty"]) * D(fill["price"])) in rate
    for order in engine.orders.values():
        mine = [f for f in fills if f["order_id"] == order.id]
        assert order.filled_qty == sum((D(f["qty"]) for f in mine), D0)
        assert order.qty is not None and order.filled_qty <= order.qty
        assert (order.status == "filled") == (order.filled_qty == order.qty)
        if order.limit_price is not None:  # never a worse price than the limit
            worse = [f for f in mine if (D(f["price"]) > order.limit_price) == (order.side == "buy")]
            assert all(D(f["price"]) == order.limit_price for f in worse)
    if limits_only:  # every buy reserved its worst cost: nothing overdrawn
        assert engine.cash >= 0
    assert engine.positions["BTC"] >= 0  # sells reserve the coin they sell
