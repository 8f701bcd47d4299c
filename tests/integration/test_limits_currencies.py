"""The risk limits and signal sizing in BASE_CURRENCY over the real bus and the gateway over real HTTP,
with ETH_BTC beside BTC_USDT and ETH_USDT (the review's money bug: quote amounts were compared with equity in
USDT as if they were USDT). Also: a malformed signal whose signalId already has a result gets that result.

Marks: BTC_USDT 60000, ETH_USDT 3000, ETH_BTC 0.05 (= 3000 / 60000); equity 50,000 USDT. Every number is
worked out by hand in the comments.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal as D
from typing import Any

from bus.codec import decode
from schemas.messages import SignalReply
from tests.helpers import eventually
from tests.integration.test_gateway_api import Api, launch, problem  # noqa: F401  (launch: the fixture)

THREE = "BTC_USDT,ETH_USDT,ETH_BTC"
FEES = {"makerFee": "0.0005", "takerFee": "0.001"}
MARKETS = {
    "BTC_USDT": {"tickSize": "0.01", "amountStep": "0.00001", "minNotional": "1", **FEES},
    "ETH_USDT": {"tickSize": "0.01", "amountStep": "0.001", "minNotional": "1", **FEES},
    "ETH_BTC": {"tickSize": "0.00001", "amountStep": "0.001", "minNotional": "0.0001", **FEES},
}
SETTINGS = {
    "PAIRS": THREE,
    "PAPER_MARKETS": json.dumps(MARKETS),
    "INITIAL_BALANCE": "50000",
    "ALLOW_SHORT": "true",
    "MAX_ORDER_NOTIONAL": "10000",
    "MAX_POSITION_SIZE": "0.25",
    "STOP_LOSS_ENABLED": "false",
}


async def books(api: Api) -> None:
    await api.book("BTC_USDT", "59990", "60010", "100")
    await api.book("ETH_USDT", "2999", "3001", "10000")
    await api.book("ETH_BTC", "0.04999", "0.05001", "10000")


async def exact(api: Api, path: str) -> Any:
    r = await api.call("GET", path)
    assert r.status == 200, (path, r.status, r.body)
    return json.loads(r.raw, parse_float=D, parse_int=D)


def _sid() -> str:
    return f"CUR-{uuid.uuid4().hex[:10]}"


async def test_the_oversized_eth_btc_short_is_denied_and_a_sell_signal_is_sized_in_btc(launch):  # noqa: F811
    api: Api = await launch(**SETTINGS)
    await books(api)
    # 4000 ETH = 200 BTC = 12,000,000 USDT (the verified defect: it passed as a notional of "200")
    r = await api.call("POST", "/api/orders", {"pair": "ETH_BTC", "side": "sell", "type": "market", "quantity": 4000})
    p = problem(r, 422, "quantity", "MAX_ORDER_NOTIONAL")
    assert "USDT" in p["detail"] and "> 10000" in p["detail"], p["detail"]
    r = await api.call("POST", "/api/orders", {"pair": "ETH_USDT", "side": "sell", "type": "market", "quantity": 4000})
    problem(r, 422, "quantity", "MAX_ORDER_NOTIONAL")  # the same sale on ETH_USDT, as before
    # MAX_POSITION_SIZE 0.25 of 50,000 USDT = 12,500 USDT: a limit sell of 4.2 ETH at 0.05 is 12,600 USDT
    # (MAX_ORDER_NOTIONAL out of the way for this one)
    await api.ok("PUT", "/api/risk/config", {"maxOrderNotional": 0})
    r = await api.call(
        "POST", "/api/orders", {"pair": "ETH_BTC", "side": "sell", "type": "limit", "price": 0.05, "quantity": 4.2}
    )
    problem(r, 422, "quantity", "MAX_POSITION_SIZE")
    await api.ok("PUT", "/api/risk/config", {"maxOrderNotional": 10000})
    # the advice: risking RISK_PER_TRADE 2% of 50,000 USDT = 1,000 USDT = 0.01666... BTC over a stop 0.01 BTC
    # away is 1.666 ETH (MAX_POSITION_SIZE would allow 12,500 / 3,000 = 4.166)
    body = {"pair": "ETH_BTC", "side": "sell", "type": "limit", "price": 0.05, "quantity": 3, "stopLoss": 0.06}
    v = await api.ok("POST", "/api/orders/validate", body)
    assert v["valid"] and v["riskValidation"]["recommendedSize"] == 1.666, v

    # a SELL signal, fixed_notional 2% of equity: 1,000 USDT = 1000 / 60000 BTC, at the mid 0.05 BTC:
    # 0.3333... ETH, 0.333 on the 0.001 step (not 50000 x 0.02 / 0.05 = 20,000 ETH)
    body = {"pair": "ETH_BTC", "signal": "SELL", "confidence": 0.9, "source": "cur", "signalId": _sid()}
    ev = await api.ok("POST", "/api/signals/execute", body)
    assert ev["status"] == "executed", ev
    sizing = ev["positionSizing"]
    assert (sizing["recommendedSize"], sizing["method"], sizing["currency"]) == (0.333, "fixed_notional", "BTC")
    assert sizing["riskAmount"] == 0.01665  # 0.333 x 0.05 BTC
    oid = ev["orders"][0]["orderId"]
    order = await api.until(oid, "filled")
    assert (order["pair"], order["side"], order["quantity"]) == ("ETH_BTC", "sell", 0.333)

    # GET /api/risk/metrics: the short's exposure in USDT, 0.333 x 0.05 x 60000 = 999
    async def booked() -> Any:
        m = await exact(api, "/api/risk/metrics")
        return m if any(p["pair"] == "ETH_BTC" and p["position"] for p in m["pairs"]) else None

    m = await eventually(booked, what="the short in the risk-gate's books")
    [ethbtc] = [p for p in m["pairs"] if p["pair"] == "ETH_BTC"]
    assert (ethbtc["position"], ethbtc["mark"], ethbtc["rate"], ethbtc["exposure"]) == (
        D("-0.333"), D("0.05"), 60000, 999)  # fmt: skip
    assert ethbtc["fraction"] == D(999) / m["equity"] and D("0.019") < ethbtc["fraction"] < D("0.021")
    assert (m["baseCurrency"], m["conversionRates"], m["unconverted"]) == ("USDT", {"BTC": 60000}, [])
    assert m["totalExposureFraction"] == ethbtc["fraction"]


async def test_eth_btc_without_a_btc_rate_is_denied_naming_the_currency(launch):  # noqa: F811
    # no BTC_USDT book (and no USDT_BTC): BTC cannot be valued in USDT
    api: Api = await launch(**SETTINGS)
    await api.book("ETH_BTC", "0.04999", "0.05001", "10000")
    r = await api.call("POST", "/api/orders", {"pair": "ETH_BTC", "side": "sell", "type": "market", "quantity": 1})
    p = problem(r, 422, "pair", "NO_CONVERSION")
    assert "cannot value ETH_BTC in USDT: no rate for BTC" in p["detail"], p["detail"]
    body = {"pair": "ETH_BTC", "signal": "BUY", "confidence": 0.9, "source": "cur", "signalId": _sid()}
    p = problem(await api.call("POST", "/api/signals/execute", body), 422, None, "NO_CONVERSION")
    assert "cannot value ETH_BTC in USDT: no rate for BTC" in p["detail"], p["detail"]


async def test_a_malformed_signal_whose_id_has_a_result_gets_that_result(launch):  # noqa: F811
    api: Api = await launch(**SETTINGS)
    bus = api.bus
    sid = _sid()
    first = {"pair": "ETH_BTC", "signal": "HOLD", "confidence": 0.9, "source": "cur", "signalId": sid}
    msg = await bus.nc.request(bus.subjects.signals_submit, json.dumps(first).encode(), timeout=10)
    stored = decode(msg.data, SignalReply)
    assert (stored.signal_id, stored.status, stored.reason) == (sid, "filtered", "HOLD does nothing")
    # the same id again, now with a confidence that does not decode: answered with the result it has
    again = {**first, "signal": "BUY", "confidence": "very"}
    msg = await bus.nc.request(bus.subjects.signals_submit, json.dumps(again).encode(), timeout=10)
    assert "error" not in json.loads(msg.data)
    reply = decode(msg.data, SignalReply)
    assert (reply.signal_id, reply.status, reply.signal, reply.reason) == (sid, "filtered", "HOLD", "HOLD does nothing")
    assert (reply.code, reply.field, reply.ts) == (None, None, stored.ts)
    # a malformed signal with a new id is still rejected at once
    fresh = await bus.nc.request(bus.subjects.signals_submit, json.dumps({**again, "signalId": _sid()}).encode())
    assert decode(fresh.data, SignalReply).status == "rejected"
