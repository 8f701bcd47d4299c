"""The order endpoints of the gateway over real HTTP, with every actor on a real NATS.

MARKET_DATA=none: the only books are the ones each test publishes, so every fill, fee and refusal is
predictable. Both pairs trade on a 0.01 tick and a 0.001 step, maker fee 0.05%, taker fee 0.1%.
Bodies are read with ``parse_float=Decimal``: a JSON number comes back as an int or a Decimal (exact),
a JSON string as a str, so the checks also tell numbers from strings.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from decimal import Decimal as D
from typing import Any

import aiohttp
import pytest

from bus.client import Bus
from gateway.app import Gateway
from gateway.problems import PROBLEM_TYPE
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_order_types import publish_book, settings_for

RULES = {"tickSize": "0.01", "amountStep": "0.001", "minNotional": "1", "makerFee": "0.0005", "takerFee": "0.001"}
MARKETS = {"BTC_USDT": RULES, "ETH_USDT": RULES}
# what the actors and the gateway both run with (start_gateway adds NATS_URL, BUS_PREFIX, PORT and PAIRS)
EXTRA = {
    "MARKET_DATA": "none",
    "PAIRS": "BTC_USDT,ETH_USDT",
    "PAPER_MARKETS": json.dumps(MARKETS),
    "MAX_SLIPPAGE_PERCENT": "0",
    "DEFAULT_ORDER_TIMEOUT": "0",
}
JSON_CT = "application/json"
PROBLEM_CT = "application/problem+json"

PLACED_KEYS = {
    "orderId", "clientOrderId", "status", "pair", "side", "type", "quantity", "riskValidation", "estimatedCost",
    "createdAt", "paperTrade", "venue", "exchange",
}  # fmt: skip
ORDER_KEYS = {
    "orderId", "clientOrderId", "pair", "side", "type", "quantity", "status", "price", "stopPrice", "timeInForce",
    "expireAt", "postOnly", "reduceOnly", "role", "parentOrderId", "linkedOrders", "triggeredAt", "previousStatus",
    "referencePrice",
    "filledQuantity", "averagePrice", "totalCost", "fees", "feeCurrency", "venue", "exchange", "paperTrade",
    "nativeTrigger", "routing", "fallback",
    "venueOrderId", "venueStatus",
    "venueFilled", "source", "signalId", "reason", "version", "createdAt", "updatedAt", "closedAt", "executionTime",
    "fills",
    "algo", "algoState", "children", "arrivalMid", "arrivalBid", "arrivalAsk",  # issue 20
}  # fmt: skip
FILL_KEYS = {"fillId", "quantity", "price", "fee", "feeCurrency", "liquidity", "timestamp"}

Reply = tuple[int, str, Any]


def num(v: object) -> D:
    """A JSON number (never a string, never a bool), as an exact Decimal."""
    assert isinstance(v, int | D) and not isinstance(v, bool), f"{v!r} is not a JSON number"
    return D(v)


def _strict(token: str) -> None:
    raise ValueError(f"{token} is not JSON (RFC 8259)")


def assert_problem(got: Reply, status: int, field: str | None, code: str | None = None) -> dict[str, Any]:
    st, ctype, p = got
    assert (st, ctype) == (status, PROBLEM_CT), got
    assert p["status"] == status and p["type"].startswith(PROBLEM_TYPE) and p["title"] and p["detail"]
    assert p.get("field") == field, p
    if code is not None:
        assert p["code"] == code, p
    assert p["requestId"]
    return p


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    bus: Bus
    system: System

    async def call(self, method: str, path: str, body: object = None, *, raw: bytes | None = None) -> Reply:
        kw: dict[str, Any] = {}
        if body is not None:
            kw["json"] = body
        if raw is not None:
            kw["data"], kw["headers"] = raw, {"Content-Type": JSON_CT}
        async with self.http.request(method, self.base + path, **kw) as r:
            data = await r.read()
            return r.status, r.content_type, json.loads(data, parse_float=D, parse_constant=_strict) if data else None

    async def place(self, **body: object) -> dict[str, Any]:
        status, ctype, placed = await self.call("POST", "/api/orders", body)
        assert (status, ctype) == (201, JSON_CT), placed
        return placed

    async def order(self, order_id: str) -> dict[str, Any]:
        status, ctype, o = await self.call("GET", f"/api/orders/{order_id}")
        assert (status, ctype) == (200, JSON_CT), o
        return o

    async def until(self, order_id: str, *statuses: str, timeout: float = 10) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            o = await self.order(order_id)
            return o if o["status"] in statuses else None

        return await eventually(check, timeout=timeout, what=f"{order_id} in {statuses}")

    async def listed(self, query: str = "") -> dict[str, Any]:
        status, ctype, page = await self.call("GET", f"/api/orders{query}")
        assert (status, ctype) == (200, JSON_CT), page
        return page

    async def book(self, bids: list[tuple[str, str]], asks: list[tuple[str, str]], pair: str = "BTC_USDT") -> None:
        await publish_book(self.bus, bids, asks, pair=pair)


@pytest.fixture
async def api(nats_url, prefix, make_bus):
    sut = System(nats_url, settings_for(nats_url, prefix, **EXTRA))
    gw: Gateway | None = None
    try:
        await sut.start()
        gw, base = await start_gateway(nats_url, prefix, **EXTRA)
        client = await make_bus("client")
        async with aiohttp.ClientSession() as http:
            yield Api(http, base, client, sut)
    finally:
        if gw is not None:
            await gw.stop()
        await sut.stop()


# -- placing orders --------------------------------------------------------------------------------------
async def test_an_order_names_its_venue_as_exchange_and_every_view_shows_it(api):
    await api.book([("99.00", "5")], [("100.00", "5")])
    # any case; the only venue of this deployment is "paper"
    placed = await api.place(pair="BTC_USDT", side="buy", quantity=0.5, exchange="Paper", clientOrderId="gw-ex-1")
    assert (placed["exchange"], placed["venue"]) == ("paper", "paper")
    o = await api.until(placed["orderId"], "filled")
    assert (o["exchange"], o["venue"]) == ("paper", "paper")
    page = await api.listed()
    assert page["orders"] and all(x["exchange"] == x["venue"] for x in page["orders"])
    status, _, v = await api.call(
        "POST", "/api/orders/validate", {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1, "exchange": "paper"}
    )
    assert status == 200 and v["valid"] is True
    # a venue that is not configured: 422 naming the field and the venues there are, for placing and validating
    for path in ("/api/orders", "/api/orders/validate"):
        got = await api.call("POST", path, {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1, "exchange": "kraken"})
        p = assert_problem(got, 422, "exchange", "UNKNOWN_EXCHANGE")
        assert "'kraken'" in p["detail"] and "EXCHANGES: paper" in p["detail"]
    assert not [x for x in (await api.listed())["orders"] if x["clientOrderId"] != "gw-ex-1"]


async def test_an_unknown_exchange_is_refused_naming_the_configured_venues(nats_url, prefix):
    gw, base = await start_gateway(nats_url, prefix, **EXTRA, EXCHANGES="alpha=paper,beta=paper")
    try:
        async with aiohttp.ClientSession() as http:
            body = {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1, "exchange": "binance"}
            async with http.post(base + "/api/orders", json=body) as r:
                got = (r.status, r.content_type, await r.json(content_type=None))
    finally:
        await gw.stop()
    p = assert_problem(got, 422, "exchange", "UNKNOWN_EXCHANGE")
    assert "EXCHANGES: alpha, beta" in p["detail"]


async def test_a_market_order_answers_201_in_the_seed_shape_with_numbers(api):
    await api.book([("99.90", "5")], [("100.00", "5")])
    status, ctype, placed = await api.call(
        "POST", "/api/orders", {"pair": "BTC_USDT", "side": "buy", "quantity": 0.5, "clientOrderId": "gw-mkt-1"}
    )
    assert (status, ctype) == (201, JSON_CT)
    assert set(placed) == PLACED_KEYS
    assert placed["orderId"].startswith("ORD_") and placed["clientOrderId"] == "gw-mkt-1"
    assert (placed["paperTrade"], placed["venue"]) == (True, "paper")
    assert (placed["status"], placed["pair"], placed["side"], placed["type"]) == (
        "submitted",
        "BTC_USDT",
        "buy",
        "market",
    )
    assert num(placed["quantity"]) == D("0.5")
    assert num(placed["estimatedCost"]) == D("50.00")  # 0.5 at the ask 100.00
    rv = placed["riskValidation"]
    assert rv["passed"] is True and num(rv["recommendedSize"]) == D("0.5") and num(rv["maxRisk"]) == D("50.00")
    assert isinstance(placed["createdAt"], int) and placed["createdAt"] > 0
    o = await api.until(placed["orderId"], "filled")
    assert o["clientOrderId"] == "gw-mkt-1" and o["source"] == "api"


async def test_limit_stop_and_take_profit_orders_are_placed_with_their_prices(api):
    await api.book([("99.90", "5")], [("100.00", "5")])
    limit = await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=99.01, clientOrderId="l-1")
    assert (limit["type"], num(limit["price"]), num(limit["quantity"])) == ("limit", D("99.01"), D(1))
    assert limit["clientOrderId"] == "l-1"
    sl = await api.place(pair="BTC_USDT", side="sell", quantity=0.2, type="stop_loss", stopPrice=95.5)
    stl = await api.place(pair="BTC_USDT", side="buy", quantity=1, type="stop_limit", stopPrice=101, price=101.2)
    tp = await api.place(pair="BTC_USDT", side="sell", quantity=1, type="take_profit", stopPrice=102.25)
    assert (sl["type"], stl["type"], tp["type"]) == ("stop_loss", "stop_limit", "take_profit")
    assert "price" not in sl and num(stl["price"]) == D("101.20")
    assert sl["clientOrderId"].startswith("api-")  # none given: the gateway names it
    expected = {
        limit["orderId"]: ("limit", D("99.01"), None, "accepted"),
        sl["orderId"]: ("stop_loss", None, D("95.50"), "accepted"),
        stl["orderId"]: ("stop_limit", D("101.20"), D("101.00"), "accepted"),
        tp["orderId"]: ("take_profit", None, D("102.25"), "accepted"),
    }
    for oid, (type_, price, stop, status) in expected.items():
        o = await api.until(oid, status)
        assert set(o) == ORDER_KEYS
        assert o["type"] == type_ and o["triggeredAt"] is None and o["filledQuantity"] == 0
        assert (None if o["price"] is None else num(o["price"])) == price
        assert (None if o["stopPrice"] is None else num(o["stopPrice"])) == stop


async def test_a_bracket_answers_its_linked_legs_and_each_leg_names_its_entry(api):
    await api.book([("99.90", "5")], [("100.00", "5")])
    entry = await api.place(
        pair="BTC_USDT", side="buy", quantity=1, stopLoss=95, takeProfit=110, clientOrderId="gw-bracket"
    )
    assert set(entry) == PLACED_KEYS | {"linkedOrders"}
    links = entry["linkedOrders"]
    assert set(links) == {"stopLoss", "takeProfit"} and all(v.startswith("ORD_") for v in links.values())
    assert len({entry["orderId"], *links.values()}) == 3
    o = await api.until(entry["orderId"], "filled")
    assert o["role"] == "entry" and o["parentOrderId"] is None and o["linkedOrders"] == links
    sl = await api.until(links["stopLoss"], "accepted")
    tp = await api.until(links["takeProfit"], "accepted")
    for leg, role, type_, trigger, sibling in (
        (sl, "stop_loss", "stop_loss", D(95), links["takeProfit"]),
        (tp, "take_profit", "take_profit", D(110), links["stopLoss"]),
    ):
        assert (leg["role"], leg["type"], leg["side"], leg["parentOrderId"]) == (role, type_, "sell", entry["orderId"])
        assert num(leg["stopPrice"]) == trigger and num(leg["quantity"]) == D(1) and leg["reduceOnly"] is True
        assert leg["linkedOrders"] == {"entry": entry["orderId"], "sibling": sibling}
    # the legs' client ids are ours (a namespace callers cannot use), named after the leg's own order id
    assert (sl["clientOrderId"], tp["clientOrderId"]) == (
        f"tbx:{sl['orderId']}:stop_loss",
        f"tbx:{tp['orderId']}:take_profit",
    )


# -- refusals --------------------------------------------------------------------------------------------
BTC = {"pair": "BTC_USDT", "side": "buy", "quantity": 1}


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        pytest.param({**BTC, "pair": "DOGE_USDT"}, "pair", "UNKNOWN_PAIR", id="unknown-pair"),
        pytest.param({**BTC, "quantity": 0}, "quantity", "INVALID_QUANTITY", id="zero-quantity"),
        pytest.param({**BTC, "quantity": -1}, "quantity", "INVALID_QUANTITY", id="negative-quantity"),
        pytest.param({**BTC, "type": "limit"}, "price", "MISSING_PRICE", id="limit-without-price"),
        pytest.param(
            {**BTC, "side": "sell", "type": "stop_loss", "stopPrice": 100.5},
            "stopPrice",
            "STOP_WRONG_SIDE",
            id="stop-above-the-bid",
        ),
        pytest.param(
            {**BTC, "stopLoss": 100.5, "takeProfit": 110}, "stopLoss", "INVALID_BRACKET", id="stop-loss-above-entry"
        ),
        pytest.param({**BTC, "type": "limit", "price": 99.005}, "price", "INVALID_PRICE", id="price-off-tick"),
        pytest.param(
            {**BTC, "type": "limit", "price": 99, "timeInForce": "GTD"},
            "expireAt",
            "INVALID_EXPIRY",
            id="gtd-no-expiry",
        ),
        pytest.param({**BTC, "leverage": 5}, "leverage", "UNKNOWN_FIELD", id="unknown-field"),
    ],
)
async def test_bad_orders_are_422_naming_the_field_and_nothing_is_submitted(api, body, field, code):
    await api.book([("99.90", "5")], [("100.00", "5")])
    p = assert_problem(await api.call("POST", "/api/orders", body), 422, field, code)
    assert p["type"] == PROBLEM_TYPE + code.lower().replace("_", "-")
    assert (await api.listed())["orders"] == []


# -- reading orders --------------------------------------------------------------------------------------
async def test_a_filled_order_reads_back_with_exact_fills_costs_and_fees(api):
    await api.book([("99.90", "5")], [("100.00", "0.400"), ("100.10", "5")])
    placed = await api.place(pair="BTC_USDT", side="buy", quantity=1, clientOrderId="gw-read")
    o = await api.until(placed["orderId"], "filled")
    assert set(o) == ORDER_KEYS
    assert (o["orderId"], o["clientOrderId"], o["pair"], o["side"], o["type"]) == (
        placed["orderId"], "gw-read", "BTC_USDT", "buy", "market",
    )  # fmt: skip
    assert num(o["quantity"]) == num(o["filledQuantity"]) == D(1)
    assert num(o["totalCost"]) == D("100.06")  # 0.4 * 100.00 + 0.6 * 100.10
    assert num(o["averagePrice"]) == D("100.06")
    assert num(o["fees"]) == D("0.10006") and o["feeCurrency"] == "USDT"  # taker 0.1%
    assert o["price"] is None and o["venue"] == "paper" and o["venueStatus"] == "closed"
    assert isinstance(o["executionTime"], int) and o["executionTime"] == o["closedAt"] - o["createdAt"] >= 0
    assert [set(f) for f in o["fills"]] == [FILL_KEYS, FILL_KEYS]
    got = [(num(f["quantity"]), num(f["price"]), num(f["fee"]), f["liquidity"]) for f in o["fills"]]
    assert got == [(D("0.4"), D("100.00"), D("0.04"), "taker"), (D("0.6"), D("100.10"), D("0.06006"), "taker")]
    assert all(f["fillId"].startswith("paper:") and isinstance(f["timestamp"], int) for f in o["fills"])
    assert len({f["fillId"] for f in o["fills"]}) == 2


async def test_an_unknown_order_is_404_naming_order_id(api):
    for path in ("/api/orders/ORD_20990101_999999", "/api/orders/ORD_20990101_999999/events"):
        p = assert_problem(await api.call("GET", path), 404, "orderId", "ORDER_NOT_FOUND")
        assert "ORD_20990101_999999" in p["detail"]


async def test_the_audit_trail_lists_every_change_in_order_with_versions(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    placed = await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=99)
    oid = placed["orderId"]
    await api.until(oid, "accepted")
    await api.book([("98.00", "5")], [("98.90", "0.400"), ("99.10", "5")])  # 0.4 fills at 99.00 (maker)
    await api.until(oid, "partially_filled")
    await api.book([("98.00", "5")], [("99.00", "5")])
    await api.until(oid, "filled")
    status, ctype, trail = await api.call("GET", f"/api/orders/{oid}/events")
    assert (status, ctype) == (200, JSON_CT)
    assert set(trail) == {"orderId", "events"} and trail["orderId"] == oid
    events = trail["events"]
    assert all(set(e) == {"event", "order", "ts"} and e["order"]["orderId"] == oid for e in events)
    assert [e["order"]["version"] for e in events] == list(range(1, len(events) + 1))
    names = [e["event"] for e in events]
    # the venue's answers are recorded too (an event named after the status), in whichever order they race
    # with the fills: the statuses never go back
    rank = ["submitted", "accepted", "partially_filled", "filled"]
    assert names[0] == "submitted" and names[-1] == "filled" and names.count("filled") == 1
    assert set(names) == set(rank) and [rank.index(n) for n in names] == sorted(rank.index(n) for n in names)
    assert all(e["order"]["status"] == e["event"] for e in events)  # each carries the order after the change
    by_name = {e["event"]: e["order"] for e in events}
    assert num(by_name["partially_filled"]["filledQuantity"]) == D("0.4")
    assert by_name["filled"] == await api.order(oid)


# -- modify ----------------------------------------------------------------------------------------------
async def test_patch_changes_price_and_quantity_of_a_resting_limit(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    placed = await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=97)
    oid = placed["orderId"]
    await api.until(oid, "accepted")
    status, ctype, o = await api.call("PATCH", f"/api/orders/{oid}", {"price": 97.5, "quantity": 2})
    assert (status, ctype) == (200, JSON_CT)
    assert set(o) == ORDER_KEYS and o["orderId"] == oid
    assert (num(o["price"]), num(o["quantity"]), o["status"]) == (D("97.50"), D(2), "accepted")
    again = await api.order(oid)
    assert (num(again["price"]), num(again["quantity"]), again["status"]) == (D("97.50"), D(2), "accepted")


async def test_patch_refusals_name_the_field(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=99))["orderId"]
    await api.until(oid, "accepted")
    await api.book([("98.00", "5")], [("99.00", "0.400"), ("99.10", "5")])
    await api.until(oid, "partially_filled")
    for qty in (0.4, 0.3):  # not above the filled 0.4
        p = assert_problem(await api.call("PATCH", f"/api/orders/{oid}", {"quantity": qty}), 422, "quantity")
        assert p["code"] == "MODIFY_REFUSED" and "0.4" in p["detail"]
    p = assert_problem(await api.call("PATCH", f"/api/orders/{oid}", raw=b'{"price": 9'), 400, None, "MALFORMED_JSON")
    assert "not valid JSON" in p["detail"]
    assert_problem(await api.call("PATCH", f"/api/orders/{oid}", {"side": "sell"}), 422, "side", "UNKNOWN_FIELD")
    assert_problem(await api.call("PATCH", "/api/orders/ORD_20990101_999999", {"price": 98}), 404, "orderId")
    o = await api.order(oid)  # untouched by the refusals
    assert (num(o["price"]), num(o["quantity"]), o["status"]) == (D(99), D(1), "partially_filled")


@pytest.mark.parametrize(
    ("change", "field", "word"),
    [({"price": 97.505}, "price", "tick"), ({"quantity": 1.0005}, "quantity", "step")],
    ids=["price-off-tick", "quantity-off-step"],
)
async def test_patch_off_the_market_rules_is_422_naming_the_field(api, change, field, word):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=97))["orderId"]
    await api.until(oid, "accepted")
    got = await api.call("PATCH", f"/api/orders/{oid}", change)
    assert got[0] == 422 and word in got[2]["detail"]
    o = await api.order(oid)
    assert (o["status"], num(o["price"]), num(o["quantity"])) == ("accepted", D(97), D(1))
    assert_problem(got, 422, field, "MODIFY_REFUSED")


@pytest.mark.parametrize(
    ("change", "field"),
    [({"price": 101.205}, "price"), ({"stopPrice": 101.005}, "stopPrice"), ({"quantity": 1.0005}, "quantity")],
    ids=["price-off-tick", "stop-price-off-tick", "quantity-off-step"],
)
async def test_patch_of_a_waiting_stop_limit_checks_the_market_rules(api, change, field):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="stop_limit", stopPrice=101, price=101.2))[
        "orderId"
    ]
    await api.until(oid, "accepted")
    got = await api.call("PATCH", f"/api/orders/{oid}", change)
    o = await api.order(oid)
    assert (num(o["price"]), num(o["stopPrice"]), num(o["quantity"])) == (D("101.20"), D(101), D(1))
    assert_problem(got, 422, field, "MODIFY_REFUSED")


@pytest.mark.parametrize(
    ("stop", "code"),
    [
        (0, "MODIFY_REFUSED"),
        (-1, "MODIFY_REFUSED"),
        ("-Infinity", "INVALID_FIELD"),  # not a finite decimal: refused by the gateway before the router
        ("NaN", "INVALID_FIELD"),
    ],
)
async def test_patch_stop_price_must_be_a_positive_number(api, stop, code):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="sell", quantity=1, type="stop_loss", stopPrice=95))["orderId"]
    await api.until(oid, "accepted")
    got = await api.call("PATCH", f"/api/orders/{oid}", {"stopPrice": stop})
    assert num((await api.order(oid))["stopPrice"]) == D(95)
    assert_problem(got, 422, "stopPrice", code)


async def test_patch_price_of_a_stop_loss_is_refused(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="sell", quantity=1, type="stop_loss", stopPrice=95))["orderId"]
    await api.until(oid, "accepted")
    got = await api.call("PATCH", f"/api/orders/{oid}", {"price": 96})
    assert (await api.order(oid))["price"] is None
    assert_problem(got, 422, "price", "MODIFY_REFUSED")


async def test_patch_of_a_filled_order_is_409(api):
    await api.book([("99.90", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=100))["orderId"]
    await api.until(oid, "filled")
    p = assert_problem(await api.call("PATCH", f"/api/orders/{oid}", {"price": 99}), 409, "orderId", "MODIFY_REFUSED")
    assert "filled" in p["detail"]


# -- cancel ----------------------------------------------------------------------------------------------
async def test_delete_cancels_a_resting_limit_then_is_409_and_unknown_is_404(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    oid = (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=97))["orderId"]
    await api.until(oid, "accepted")
    status, ctype, o = await api.call("DELETE", f"/api/orders/{oid}")
    assert (status, ctype) == (200, JSON_CT)
    assert set(o) == ORDER_KEYS and o["orderId"] == oid
    assert (o["status"], o["reason"], o["venueStatus"]) == ("canceled", "canceled by request", "canceled")
    assert isinstance(o["closedAt"], int)
    assert (await api.order(oid))["status"] == "canceled"
    p = assert_problem(await api.call("DELETE", f"/api/orders/{oid}"), 409, None, "CANCEL_REFUSED")
    assert "canceled" in p["detail"]
    assert_problem(await api.call("DELETE", "/api/orders/ORD_20990101_999999"), 404, "orderId", "ORDER_NOT_FOUND")


async def test_cancel_all_of_one_pair_then_of_every_pair(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    await api.book([("9.00", "5")], [("10.00", "5")], pair="ETH_USDT")
    done = (await api.place(pair="BTC_USDT", side="buy", quantity=0.1))["orderId"]
    await api.until(done, "filled")
    btc = [
        (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=90))["orderId"],
        (await api.place(pair="BTC_USDT", side="sell", quantity=0.1, type="stop_loss", stopPrice=90))["orderId"],
    ]
    eth = (await api.place(pair="ETH_USDT", side="buy", quantity=1, type="limit", price=9))["orderId"]
    for oid in [*btc, eth]:
        await api.until(oid, "accepted")
    status, ctype, body = await api.call("POST", "/api/orders/cancel-all", {"pair": "BTC_USDT"})
    assert (status, ctype) == (200, JSON_CT) and set(body) == {"orders"}
    assert sorted(o["orderId"] for o in body["orders"]) == sorted(btc)
    assert all(o["status"] == "canceled" and o["reason"] == "cancel-all" for o in body["orders"])
    assert (await api.order(eth))["status"] == "accepted"
    assert (await api.order(done))["status"] == "filled"
    status, ctype, body = await api.call("POST", "/api/orders/cancel-all")  # no body: every pair
    assert (status, ctype) == (200, JSON_CT)
    assert [(o["orderId"], o["status"]) for o in body["orders"]] == [(eth, "canceled")]
    assert (await api.order(eth))["status"] == "canceled"
    status, _, body = await api.call("POST", "/api/orders/cancel-all")
    assert (status, body) == (200, {"orders": []})  # nothing left to cancel


# -- listing ---------------------------------------------------------------------------------------------
async def test_list_filters_by_status_pair_side_and_time(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    await api.book([("9.00", "5")], [("10.00", "5")], pair="ETH_USDT")
    ids: list[str] = []
    for body in (
        {"pair": "BTC_USDT", "side": "buy", "quantity": 1, "type": "limit", "price": 90},
        {"pair": "BTC_USDT", "side": "sell", "quantity": 1, "type": "limit", "price": 110},
        {"pair": "ETH_USDT", "side": "buy", "quantity": 1, "type": "limit", "price": 9},
        {"pair": "BTC_USDT", "side": "buy", "quantity": 0.1},
    ):
        ids.append((await api.place(**body))["orderId"])
        await asyncio.sleep(0.005)  # distinct creation times (epoch ms), for since / until
    a, b, c, d = ids
    await api.until(d, "filled")
    for oid in (a, b, c):
        await api.until(oid, "accepted")
    created = {o["orderId"]: o["createdAt"] for o in (await api.listed())["orders"]}
    assert created[a] < created[b] < created[c] < created[d]

    async def ids_of(query: str) -> list[str]:
        page = await api.listed(query)
        assert set(page) == {"orders", "nextCursor"} and page["nextCursor"] is None
        return [o["orderId"] for o in page["orders"]]

    assert await ids_of("") == [d, c, b, a]  # newest first
    assert await ids_of("?status=filled") == [d]
    assert await ids_of("?status=accepted") == [c, b, a]
    assert await ids_of("?pair=ETH_USDT") == [c]
    assert await ids_of("?pair=btc_usdt") == [d, b, a]
    assert await ids_of("?side=sell") == [b]
    assert await ids_of("?status=accepted&pair=BTC_USDT&side=buy") == [a]
    assert await ids_of(f"?since={created[b]}") == [d, c, b]  # created at or after
    assert await ids_of(f"?until={created[c]}") == [b, a]  # created before
    assert await ids_of(f"?since={created[b]}&until={created[d]}") == [c, b]
    assert await ids_of("?status=canceled") == []


async def test_list_pages_with_limit_and_cursor_newest_first(api):
    await api.book([("98.00", "5")], [("100.00", "5")])
    ids = [
        (await api.place(pair="BTC_USDT", side="buy", quantity=1, type="limit", price=90 + i))["orderId"]
        for i in range(5)
    ]
    first = await api.listed("?limit=2")
    assert [o["orderId"] for o in first["orders"]] == [ids[4], ids[3]] and isinstance(first["nextCursor"], str)
    seen: list[str] = []
    query = "?limit=2"
    pages = 0
    while True:
        page = await api.listed(query)
        pages += 1
        assert len(page["orders"]) <= 2
        seen += [o["orderId"] for o in page["orders"]]
        if page["nextCursor"] is None:
            break
        query = f"?limit=2&cursor={page['nextCursor']}"
    assert seen == list(reversed(ids)) and pages == 3


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("status=done", "status"),
        ("side=long", "side"),
        ("since=-5", "since"),
        ("until=soon", "until"),
        ("cursor=garbage", "cursor"),
    ],
)
async def test_bad_list_parameters_are_422_naming_them(api, query, field):
    p = assert_problem(await api.call("GET", f"/api/orders?{query}"), 422, field, "INVALID_FIELD")
    assert field in p["detail"]


# -- signals ---------------------------------------------------------------------------------------------
async def test_a_signal_with_stop_loss_and_take_profit_becomes_a_bracket(api):
    await api.book([("9.99", "5")], [("10.00", "5")], pair="ETH_USDT")
    raw = (
        b'{"pair": "ETH_USDT", "signal": "BUY", "confidence": 0.8, "source": "ml", "strategy": "s1", '
        b'"signalId": "SIG-BR-1", "quantity": 0.5, "stopLoss": 9.5, "takeProfit": 11}'
    )
    await api.bus.js.publish(api.bus.subjects.signals_submit, raw)

    async def three() -> list[dict[str, Any]] | None:
        orders = (await api.listed("?pair=ETH_USDT"))["orders"]
        return orders if len(orders) == 3 else None

    orders = await eventually(three, what="the bracket of the signal")
    entry = next(o for o in orders if o["role"] == "entry")
    assert (entry["clientOrderId"], entry["signalId"], entry["source"]) == ("SIG-BR-1-1", "SIG-BR-1", "signal:ml")
    assert (entry["side"], entry["type"], num(entry["quantity"])) == ("buy", "market", D("0.5"))
    legs = {o["role"]: o for o in orders if o is not entry}
    assert set(legs) == {"stop_loss", "take_profit"}
    assert entry["linkedOrders"] == {
        "stopLoss": legs["stop_loss"]["orderId"],
        "takeProfit": legs["take_profit"]["orderId"],
    }
    for role, trigger in (("stop_loss", D("9.5")), ("take_profit", D(11))):
        leg = legs[role]
        assert (leg["parentOrderId"], leg["side"], leg["type"], leg["signalId"]) == (
            entry["orderId"], "sell", role, "SIG-BR-1",
        )  # fmt: skip
        assert num(leg["stopPrice"]) == trigger
    await api.until(entry["orderId"], "filled")
    for leg in legs.values():
        o = await api.until(leg["orderId"], "accepted")
        assert num(o["quantity"]) == D("0.5")
    assert len((await api.listed())["orders"]) == 3  # one bracket, nothing else
