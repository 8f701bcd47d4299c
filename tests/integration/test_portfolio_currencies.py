"""The books over the real bus and the gateway over real HTTP when pairs are quoted in different
currencies (issue 15, part 2), and the NEGATIVE_BALANCE alert with shorts allowed (issue 15, part 3).

Every answer is checked against the OpenAPI document by ``Api.call``; the numbers are read back exactly
(JSON numbers as Decimal) and worked out by hand in the comments.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D
from typing import Any

from bus.client import Bus, Envelope
from schemas.messages import Empty, PortfolioSnapshot, RiskAlert, RiskConfigReply, RiskLimits
from tests.helpers import eventually, fill
from tests.integration.test_actors import System
from tests.integration.test_gateway_api import Api, launch  # noqa: F401  (launch: the fixture)
from tests.integration.test_order_types import settings_for

THREE = "BTC_USDT,ETH_USDT,ETH_BTC"


async def exact(api: Api, path: str) -> Any:
    """GET ``path`` (checked against the contract), its JSON numbers read as exact decimals."""
    r = await api.call("GET", path)
    assert r.status == 200, (path, r.status, r.body)
    return json.loads(r.raw, parse_float=D, parse_int=D)


async def test_portfolio_and_performance_in_usdt_with_eth_btc_beside_btc_usdt_and_eth_usdt(launch):  # noqa: F811
    api: Api = await launch(PAIRS=THREE, INITIAL_BALANCE="20000", CURRENCY_PRECISION='{"USDT": 6}')
    # marks: BTC_USDT 62000, ETH_USDT 3255, ETH_BTC 0.0525 (= 3255 / 62000)
    await api.book("BTC_USDT", "61990", "62010")
    await api.book("ETH_USDT", "3254", "3256")
    await api.book("ETH_BTC", "0.0524", "0.0526")
    bus = api.bus
    for f in (
        fill("x1", "buy", "0.2", "60000", "12"),  # USDT 20000 - 12000 - 12 = 7988, BTC 0.2
        fill("x2", "buy", "1", "3000", "3", pair="ETH_USDT"),  # USDT 4985, ETH 1
        fill("x3", "buy", "2", "0.05", "0.0001", pair="ETH_BTC", fee_currency="BTC"),  # BTC 0.0999, ETH 3
        # closes 1 of 2: realized 0.002 - 0.000052 = 0.001948 BTC; BTC 0.151848, ETH 2
        fill("x4", "sell", "1", "0.052", "0.000052", pair="ETH_BTC", fee_currency="BTC"),
    ):
        await bus.js_publish(bus.subjects.fills(f.pair), f, msg_id=f.fill_id)

    async def marked() -> Any:
        snap = await exact(api, "/api/portfolio")
        prices = {p["pair"]: p["currentPrice"] for p in snap["positions"]}
        ok = snap["fillsApplied"] == 4 and prices == {"BTC_USDT": 62000, "ETH_USDT": 3255, "ETH_BTC": D("0.0525")}
        return snap if ok else None

    snap = await eventually(marked, what="four fills booked and marked at the books")
    s = snap["summary"]
    assert s["baseCurrency"] == "USDT" and s["unconverted"] == []
    assert s["conversionRates"] == {"BTC": 62000}
    assert s["byCurrency"] == {
        "BTC": {"realizedPnL": D("0.001848"), "unrealizedPnL": D("0.0025"), "feesPaid": D("0.000152"),
                "balance": D("0.151848")},
        "ETH": {"realizedPnL": 0, "unrealizedPnL": 0, "feesPaid": 0, "balance": 2},
        "USDT": {"realizedPnL": -15, "unrealizedPnL": 655, "feesPaid": 15, "balance": 4985},
    }  # fmt: skip
    # in USDT, BTC at 62000: realized -15 + 0.001848 x 62000 = 99.576; fees 15 + 9.424 = 24.424;
    # unrealized 655 + 0.0025 x 62000 = 810; positions 12400 + 3255 + 0.0525 x 62000 = 18910;
    # cash 4985 + (0.151848 - 0.2) x 62000 = 1999.576; total 20909.576 = 20000 + 99.576 + 810
    assert (s["realizedPnL"], s["feesPaid"], s["unrealizedPnL"]) == (D("99.576"), D("24.424"), 810)
    assert (s["totalPositions"], s["totalCash"], s["totalValue"]) == (18910, D("1999.576"), D("20909.576"))
    ethbtc = next(p for p in snap["positions"] if p["pair"] == "ETH_BTC")
    assert (ethbtc["marketValue"], ethbtc["unrealizedPnL"], ethbtc["realizedPnL"]) == (
        D("0.0525"), D("0.0025"), D("0.001848"))  # fmt: skip  # in BTC, its quote
    assert (ethbtc["cycleRealizedPnL"], ethbtc["pairRealizedPnL"]) == (D("0.001848"), D("0.001848"))
    assert ethbtc["riskMetrics"]["positionSize"] == D("0.155670")  # 3255 / 20909.576

    perf = await exact(api, "/api/performance")
    assert (perf["equity"], perf["feesPaid"], perf["unconverted"]) == (D("20909.576"), D("24.424"), [])
    per_pair = {p["pair"]: p for p in perf["perPair"]}
    assert {p: (x["currency"], x["realizedPnL"]) for p, x in per_pair.items()} == {
        "BTC_USDT": ("USDT", -12), "ETH_USDT": ("USDT", -3), "ETH_BTC": ("USDT", D("114.576"))}  # fmt: skip


async def test_a_short_is_no_negative_balance_and_a_real_breach_alerts_once(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, ALLOW_SHORT="true", PAIRS=THREE, INITIAL_BALANCE="1000"))
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start("risk-gate", "portfolio-ledger")  # the ledger alerts once the gate says ALLOW_SHORT

    async def booked(n: int) -> PortfolioSnapshot | None:
        s = await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot)
        return s if s.fills_applied == n else None

    try:
        n = 0
        for _ in range(5):  # short, cover, short again...: no alert, shorts are allowed
            for side in ("sell", "buy"):
                n += 1
                f = fill(f"sh{n}", side, "0.5", "100")
                await client.js_publish(client.subjects.fills("BTC_USDT"), f)
        n += 1
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill(f"sh{n}", "sell", "0.5", "100"))  # short
        await eventually(lambda: booked(n), what="the short cycles booked")
        # a real breach: USDT spent that is not there (1000 + 50 on the open short, 2 x 600 bought)
        n += 1
        await client.js_publish(client.subjects.fills("ETH_USDT"), fill(f"sh{n}", "buy", "2", "600", pair="ETH_USDT"))
        await eventually(
            lambda: asyncio.sleep(0, any(a.code == "NEGATIVE_BALANCE" for a in alerts)), what="the USDT alert"
        )
        # alerts come in order on one subject: had a short alerted, it would be first
        mine = [a for a in alerts if a.code == "NEGATIVE_BALANCE"]
        assert [(a.code, a.severity, a.message.split()[0]) for a in mine] == [("NEGATIVE_BALANCE", "critical", "USDT")]
        for i in range(3):  # USDT stays below zero: no new alert
            n += 1
            f = fill(f"sh{n}", "buy" if i % 2 else "sell", "0.01", "600", pair="ETH_USDT")
            await client.js_publish(client.subjects.fills("ETH_USDT"), f)
        # BTC spent on ETH_BTC beyond the 0.5 short: -0.5 - 0.05, a second real breach
        n += 1
        await client.js_publish(client.subjects.fills("ETH_BTC"), fill(f"sh{n}", "buy", "1", "0.05", pair="ETH_BTC"))
        negative = lambda: [a for a in alerts if a.code == "NEGATIVE_BALANCE"]  # noqa: E731
        await eventually(lambda: asyncio.sleep(0, len(negative()) >= 2), what="the BTC alert")
        await eventually(lambda: booked(n), what="every fill booked")
        assert [a.message.split()[0] for a in negative()] == ["USDT", "BTC"]
    finally:
        await sut.stop()


async def allow_shorts_by_config(client: Bus, sut: System) -> None:
    """PUT allowShort=true through the risk config, and wait until the ledger follows it."""
    reply = await client.request(client.subjects.risk_config, RiskLimits(allow_short=True), RiskConfigReply)
    assert reply.ok, reply
    ledger = sut.running["portfolio-ledger"]
    await eventually(lambda: asyncio.sleep(0, ledger.allow_short), what="the ledger reads allowShort")  # type: ignore[attr-defined]


async def test_the_ledger_follows_allow_short_set_with_the_risk_config(nats_url, prefix, client):
    settings = settings_for(
        nats_url, prefix, ALLOW_SHORT="false", INITIAL_BALANCE="1000", POSITION_UPDATE_INTERVAL="100"
    )
    sut = System(nats_url, settings)
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        if a.code == "NEGATIVE_BALANCE":
            alerts.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start("risk-gate", "portfolio-ledger")
    try:
        await allow_shorts_by_config(client, sut)
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("cfg1", "sell", "0.5", "100"))  # a short
        await client.js_publish(client.subjects.fills("ETH_USDT"), fill("cfg2", "buy", "2", "600", pair="ETH_USDT"))
        await eventually(lambda: asyncio.sleep(0, bool(alerts)), what="the USDT alert")
        assert [a.message.split()[0] for a in alerts] == ["USDT"]  # the short before it raised none
    finally:
        await sut.stop()


async def test_a_restart_with_allow_short_set_by_the_risk_config_raises_no_false_alert(nats_url, prefix, client):
    """ALLOW_SHORT=false in the environment, true since PUT /api/risk/config, a short open: started again
    (the ledger before the risk-gate, as tbx run does), the ledger waits for the gate's word and raises no
    NEGATIVE_BALANCE alert for the short."""
    settings = settings_for(nats_url, prefix, ALLOW_SHORT="false", INITIAL_BALANCE="1000")
    sut = System(nats_url, settings)
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        if a.code == "NEGATIVE_BALANCE":
            alerts.append(a)

    await sut.start("risk-gate", "portfolio-ledger")
    try:
        await allow_shorts_by_config(client, sut)
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("rs1", "sell", "0.5", "100"))  # a short
        await asyncio.sleep(0.5)
        await sut.stop()
        await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
        await sut.start("portfolio-ledger")
        await asyncio.sleep(0.5)
        await sut.start("risk-gate")

        async def told() -> bool:
            return bool(sut.running["portfolio-ledger"].limits_known)  # type: ignore[attr-defined]

        await eventually(told, timeout=15, what="the ledger hears ALLOW_SHORT from the risk-gate")
        await asyncio.sleep(0.3)
        assert alerts == []
    finally:
        await sut.stop()
