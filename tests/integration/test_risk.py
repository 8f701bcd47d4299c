"""The risk-gate's portfolio limits over a real NATS: races, the emergency stop, the daily-loss halt."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from schemas.messages import (
    AlertsPage,
    AlertsQuery,
    Empty,
    OrderStatus,
    RiskCommand,
    RiskMetricsView,
    RiskStateChange,
    now_ms,
)
from tests.helpers import eventually, fill
from tests.integration.test_actors import System
from tests.integration.test_order_types import (
    S,
    order,
    placed,
    publish_book,
    settings_for,
    submit,
    until,
)


def risk_settings(nats_url: str, prefix: str, **extra: str):
    # the defaults of the service for the limits (settings_for relaxes them for the order-type tests)
    limits = {"ALLOW_SHORT": "false", "MAX_POSITION_SIZE": "0.25", "MAX_DAILY_LOSS": "0.05", "PRICE_BAND_PERCENT": "10"}
    return settings_for(nats_url, prefix, **(limits | extra))


async def metrics(client) -> RiskMetricsView:
    return await client.request(client.subjects.query("risk"), Empty(), RiskMetricsView)


async def test_ten_racing_orders_cannot_together_pass_a_limit_each_passes_alone(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix, INITIAL_BALANCE="1000", MAX_POSITION_SIZE="1"))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        # each buys 1.5 x 100 = 150 of the 1000: alone, every one passes; together only 6 fit (900)
        replies = await asyncio.gather(
            *(submit(client, f"race-{i}", "buy", "1.5", "limit", price="100.00") for i in range(10))
        )
        ok = [r for r in replies if r.ok]
        denied = [r for r in replies if not r.ok]
        assert len(ok) == 6 and len(denied) == 4
        assert {r.code for r in denied} == {"INSUFFICIENT_BALANCE"}
    finally:
        await sut.stop()


async def test_position_size_limit_at_the_boundary(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix, INITIAL_BALANCE="1000"))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])  # mid 99.50
        # 25% of 1000 at the mid 99.50: 2.512... -> 2.512 passes (0.2499...), 2.513 is over
        r = await submit(client, "over", "buy", "2.513", "limit", price="100.00")
        assert not r.ok and r.code == "MAX_POSITION_SIZE" and r.field == "quantity" and "> 0.25" in (r.detail or "")
        r = await submit(client, "at", "buy", "2.512", "limit", price="100.00")
        assert r.ok
    finally:
        await sut.stop()


async def test_emergency_stop_halts_cancels_and_closes_then_resume(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        await until(client, (await placed(client, "held", "buy", "10")).order_id, S.FILLED)
        resting = await placed(client, "resting", "buy", "5", "limit", price="95.00")
        await until(client, resting.order_id, S.ACCEPTED)
        # an order racing the stop is denied: both leave at once, the stop wins or the order is canceled
        stop, racer = await asyncio.gather(
            client.request(
                client.subjects.risk_command,
                RiskCommand(action="emergency_stop", close_positions=True),
                RiskStateChange,
                timeout=15,
            ),
            submit(client, "racer", "buy", "1", "limit", price="96.00"),
        )
        assert stop.state == "HALTED" and resting.order_id in stop.canceled_orders and stop.closing_orders
        if racer.ok:  # approved before the stop: then the stop canceled it
            assert racer.order is not None
            assert (await until(client, racer.order.order_id, S.CANCELED)).status is OrderStatus.CANCELED
        else:
            assert racer.code == "TRADING_HALTED"
        after = await submit(client, "after", "buy", "1", "limit", price="96.00")
        assert not after.ok and after.code == "TRADING_HALTED"

        async def flat():
            m = await metrics(client)
            return m if not any(p.position for p in m.pairs) else None

        await eventually(flat, what="positions closed at market")
        assert (await metrics(client)).trading_state == "HALTED"  # latched
        resumed = await client.request(client.subjects.risk_command, RiskCommand(action="resume"), RiskStateChange)
        assert resumed.state == "ACTIVE" and resumed.previous == "HALTED"
        assert (await submit(client, "again", "buy", "1", "limit", price="96.00")).ok
    finally:
        await sut.stop()


async def test_reaching_the_daily_loss_halts_trading_by_itself(nats_url, prefix, client):
    from bus.client import Envelope
    from schemas.messages import RiskAlert

    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    sut = System(nats_url, risk_settings(nats_url, prefix, INITIAL_BALANCE="1000"))
    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        # an outside fill books a loss of 60 (6% of the day's 1000): the limit is 5%
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("loss-1", "buy", "1", "160", "0", ts=now_ms()))
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("loss-2", "sell", "1", "100", "0", ts=now_ms()))

        async def halted():
            m = await metrics(client)
            return m if m.trading_state == "HALTED" else None

        m = await eventually(halted, what="the auto-halt")
        assert m.daily_loss_fraction == D("0.06")
        codes = {a.code for a in alerts}
        assert {"DAILY_LOSS_80", "DAILY_LOSS_LIMIT"} <= codes
        r = await submit(client, "after-loss", "buy", "0.1", "limit", price="100.00")
        assert not r.ok and r.code == "TRADING_HALTED"
        page = await client.request(client.subjects.query("alerts"), AlertsQuery(severity="emergency"), AlertsPage)
        codes = [a.code for a in page.alerts]  # newest first
        assert codes[:2] == ["TRADING_STATE", "DAILY_LOSS_LIMIT"] and page.alerts[0].state == "HALTED"
    finally:
        await sut.stop()


async def test_the_order_rate_throttle_denies_the_excess(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix, MAX_ORDERS_PER_SECOND="5"))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        replies = await asyncio.gather(
            *(submit(client, f"rate-{i}", "buy", "0.1", "limit", price="95.00") for i in range(8))
        )
        assert sum(r.ok for r in replies) == 5
        assert {r.code for r in replies if not r.ok} == {"RATE_LIMIT"}
        await asyncio.sleep(1.1)
        assert (await submit(client, "rate-later", "buy", "0.1", "limit", price="95.00")).ok
    finally:
        await sut.stop()


async def test_metrics_show_the_exposure(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        await until(client, (await placed(client, "m1", "buy", "10")).order_id, S.FILLED)

        async def seen():
            m = await metrics(client)
            return m if m.pairs and m.pairs[0].position == D(10) else None

        m = await eventually(seen, what="the position in the metrics")
        assert m.trading_state == "ACTIVE" and m.pairs[0].mark == D("99.50")
        assert m.pairs[0].exposure == D("995.00") and m.limits["MAX_POSITION_SIZE"] == "0.25"
        _ = await order(client, (await placed(client, "m2", "buy", "1", "limit", price="95.00")).order_id)
    finally:
        await sut.stop()


async def test_a_sale_right_after_the_purchase_is_not_denied(nats_url, prefix, client):
    sut = System(nats_url, risk_settings(nats_url, prefix))
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        for i in range(5):
            bought = await placed(client, f"rt-buy-{i}", "buy", "1")
            await until(client, bought.order_id, S.FILLED)
            sold = await submit(client, f"rt-sell-{i}", "sell", "1")  # at once: the fill may not be read yet
            assert sold.ok, sold
            assert sold.order is not None
            await until(client, sold.order.order_id, S.FILLED)
    finally:
        await sut.stop()


async def test_a_held_pair_with_no_book_counts_at_its_last_fill_price(nats_url, prefix, client):
    """ETH bought by an outside writer, no ETH book ever seen: its exposure is its last fill price, not
    zero, so a BTC order that takes the total over MAX_TOTAL_EXPOSURE is denied."""
    sut = System(
        nats_url,
        settings_for(nats_url, prefix, INITIAL_BALANCE="10000", MAX_TOTAL_EXPOSURE="0.5", MAX_POSITION_SIZE="1"),
    )
    await sut.start("risk-gate", "order-router", "fill-tracker", "portfolio-ledger")
    try:
        await client.js_publish(client.subjects.fills("ETH_USDT"), fill("eth-1", "buy", "4", "1000", pair="ETH_USDT"))
        await publish_book(client, [("99.99", "100")], [("100.01", "100")])

        async def seen() -> bool:
            return any(p.pair == "ETH_USDT" and p.position == 4 for p in (await metrics(client)).pairs)

        await eventually(seen, what="the ETH position in the gate's view")
        r = await submit(client, "btc-over", "buy", "15")  # 1,500 + 4,000 = 0.55 of 10,000
        assert not r.ok and r.code == "MAX_TOTAL_EXPOSURE", r
        r = await submit(client, "btc-under", "buy", "9")  # 900 + 4,000 = 0.49
        assert r.ok, r
    finally:
        await sut.stop()


async def test_watches_side_by_side_halt_once_with_one_alert(nats_url, prefix, client):
    """Review of issue 22, finding 2: orders denied for the daily loss side by side (lanes) each ran the watch, each
    saw ACTIVE and raised its own emergency alert and halt. One watch at a time: one alert, one halt."""
    from bus.client import Envelope
    from schemas.messages import RiskAlert

    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    sut = System(nats_url, risk_settings(nats_url, prefix, INITIAL_BALANCE="1000"))
    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start()
    try:
        await publish_book(client, [("99.00", "100")], [("100.00", "100")])
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("loss-1", "buy", "1", "160", "0", ts=now_ms()))
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("loss-2", "sell", "1", "100", "0", ts=now_ms()))

        async def halted():
            m = await metrics(client)
            return m if m.trading_state == "HALTED" else None

        await eventually(halted, what="the auto-halt")
        gate = sut.running["risk-gate"]
        original = gate.alert

        async def slow_alert(*args, **kwargs):  # a round trip that takes a while: the others come in meanwhile
            await asyncio.sleep(0.05)
            return await original(*args, **kwargs)

        gate.alert = slow_alert  # type: ignore[method-assign]
        resumed = await client.request(client.subjects.risk_command, RiskCommand(action="resume"), RiskStateChange)
        assert resumed.state == "ACTIVE"
        before = sum(a.code == "DAILY_LOSS_LIMIT" for a in alerts)
        await asyncio.gather(*(gate._watch() for _ in range(8)))
        await eventually(halted, what="halted again")
        await asyncio.sleep(0.3)
        assert sum(a.code == "DAILY_LOSS_LIMIT" for a in alerts) - before == 1
    finally:
        await sut.stop()
