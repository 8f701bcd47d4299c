"""The portfolio-ledger over a real NATS: locks from working orders, alerts, history, performance,
refresh, snapshots."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from bus.client import Envelope
from schemas.messages import (
    BalanceView,
    CancelOrder,
    CommandReply,
    Empty,
    HistoryQuery,
    Performance,
    PortfolioSnapshot,
    PositionsHistory,
    RiskAlert,
    now_ms,
)
from tests.helpers import eventually, fill
from tests.integration.test_actors import System
from tests.integration.test_order_types import S, placed, publish_book, settings_for, until


async def snap(client) -> PortfolioSnapshot:
    return await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot)


def bal(s: PortfolioSnapshot, currency: str) -> BalanceView:
    zero = BalanceView(currency=currency, total=D(0), available=D(0), locked=D(0))  # listed only when not zero
    return next((b for b in s.balances if b.currency == currency), zero)


async def test_working_orders_lock_funds_and_release_them(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start()
    try:
        await publish_book(client, [("98.00", "5")], [("100.00", "5")])
        buy = await placed(client, "lock-buy", "buy", "2", "limit", price="95.00")
        await until(client, buy.order_id, S.ACCEPTED)

        async def locked(amount: D, currency: str = "USDT"):
            s = await snap(client)
            b = bal(s, currency)
            return s if b.locked == amount and b.available == b.total - amount else None

        await eventually(lambda: locked(D("190.00")), what="2 x 95 locked in USDT")
        await client.request(client.subjects.orders_cancel, CancelOrder(order_id=buy.order_id), CommandReply)
        await eventually(lambda: locked(D(0)), what="released by the cancel")
        await until(client, (await placed(client, "own", "buy", "1")).order_id, S.FILLED)
        sell = await placed(client, "lock-sell", "sell", "1", "limit", price="105.00")
        await until(client, sell.order_id, S.ACCEPTED)
        await eventually(lambda: locked(D(1), "BTC"), what="1 BTC locked by the working sell")
        await publish_book(client, [("105.50", "5")], [("106.00", "5")])  # the sell fills as maker
        await until(client, sell.order_id, S.FILLED)
        s = await eventually(lambda: locked(D(0), "BTC"), what="released by the fill")
        assert bal(s, "BTC").total == D(0)
    finally:
        await sut.stop()


async def test_a_negative_balance_raises_a_critical_alert(nats_url, prefix, client):
    # without shorts a sale of what is not held is a breach (with ALLOW_SHORT=true it is a short: see
    # tests/integration/test_portfolio_currencies.py)
    sut = System(nats_url, settings_for(nats_url, prefix, ALLOW_SHORT="false"))
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start("risk-gate", "portfolio-ledger")  # the ledger alerts once the gate says ALLOW_SHORT
    try:  # an outside writer books a sale of BTC we never had
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("neg-1", "sell", "0.5", "100", "0.05"))
        await eventually(lambda: asyncio.sleep(0, bool(alerts)), what="the alert")
        assert alerts[0].severity == "critical" and alerts[0].code == "NEGATIVE_BALANCE" and "BTC" in alerts[0].message
    finally:
        await sut.stop()


async def test_history_performance_and_refresh(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, CURRENCY_PRECISION='{"USDT": 2}'))
    await sut.start("portfolio-ledger")
    events: list[PortfolioSnapshot] = []

    async def on_snapshot(s: PortfolioSnapshot, env: Envelope) -> None:
        events.append(s)

    await client.subscribe(client.subjects.portfolio_events, PortfolioSnapshot, on_snapshot)
    try:
        t = now_ms()
        fills = [
            fill("h1", "buy", "1", "100", "0.10", ts=t),  # open long 1 @ 100
            fill("h2", "sell", "1", "110", "0.11", ts=t + 1),  # close: +10 - 0.10 - 0.11 = +9.79
            fill("h3", "sell", "2", "110", "0.22", ts=t + 2),  # open short 2 @ 110
            fill("h4", "buy", "2", "115", "0.23", ts=t + 3),  # cover at a loss: -10 - 0.22 - 0.23 = -10.45
            fill("h5", "buy", "1", "50", "0.05", pair="ETH_USDT", ts=t + 4),  # open, stays open
        ]
        for f in fills:
            await client.js_publish(client.subjects.fills(f.pair), f, msg_id=f.fill_id)

        async def booked():
            s = await snap(client)
            return s if s.fills_applied == 5 else None

        await eventually(booked, what="five fills booked")
        hist = await client.request(client.subjects.query("positions_history"), HistoryQuery(), PositionsHistory)
        assert [(c.pair, c.side, c.realized_pnl) for c in hist.positions] == [
            ("BTC_USDT", "short", D("-10.45")),
            ("BTC_USDT", "long", D("9.79")),
        ]
        short = hist.positions[0]
        assert (short.quantity, short.average_open_price, short.average_close_price, short.fees) == (
            D(2), D(110), D(115), D("0.45"))  # fmt: skip
        only_eth = await client.request(
            client.subjects.query("positions_history"), HistoryQuery(pair="ETH_USDT"), PositionsHistory
        )
        assert only_eth.positions == []
        perf = await client.request(client.subjects.query("performance"), Empty(), Performance)
        assert perf.trades.round_trips == 2 and perf.trades.wins == 1 and perf.trades.losses == 1
        assert perf.trades.win_rate == D("0.5") and perf.trades.profit_factor == D("0.936842")  # 9.79 / 10.45
        assert perf.trades.expectancy == D("-0.33")  # (9.79 - 10.45) / 2
        assert perf.fees_paid == D("0.71")
        assert perf.equity == D(50000) - D("0.66") - D("0.05")  # realized -0.66, ETH fee; ETH marked at its fill
        assert perf.total_return == D("-0.000014")  # -0.71 / 50000 = -0.0000142
        assert [p.pair for p in perf.per_pair] == ["BTC_USDT", "ETH_USDT"]
        assert perf.per_pair[0].trades.round_trips == 2 and perf.per_pair[1].trades.round_trips == 0
        before = len(events)
        refreshed = await client.request(client.subjects.query("portfolio_refresh"), Empty(), PortfolioSnapshot)
        await eventually(lambda: asyncio.sleep(0, len(events) > before), what="the refresh published")
        assert refreshed.summary.total_value == D("49999.29") and refreshed.summary.total_cash == D("49949.29")
    finally:
        await sut.stop()


async def test_a_restart_from_a_snapshot_gives_the_same_books(nats_url, prefix, client):
    settings = settings_for(nats_url, prefix)
    sut = System(nats_url, settings)
    await sut.start("portfolio-ledger")
    try:
        for i in range(40):
            await client.js_publish(
                client.subjects.fills("BTC_USDT"),
                fill(f"s{i}", "buy" if i % 3 else "sell", "0.1", str(100 + i), "0.01"),
            )

        async def booked(n: int):
            s = await snap(client)
            return s if s.fills_applied == n else None

        first = await eventually(lambda: booked(40), what="40 fills")
        await sut.stop("portfolio-ledger")  # a clean stop writes a snapshot
        for i in range(40, 60):
            await client.js_publish(client.subjects.fills("BTC_USDT"), fill(f"s{i}", "sell", "0.1", str(100 + i)))
        await sut.start("portfolio-ledger")
        ledger = sut.running["portfolio-ledger"]
        assert ledger.saved_at[0] == 40  # type: ignore[attr-defined]  # it started from the snapshot, not seq 1
        after = await eventually(lambda: booked(60), what="the 20 fills after the snapshot")
        history = await client.request(client.subjects.query("positions_history"), HistoryQuery(), PositionsHistory)
    finally:
        await sut.stop()
    # the same 60 fills folded from scratch, without any snapshot
    from domain.ledger import Ledger
    from domain.valuation import DayStart, snapshot

    fresh = Ledger("USDT", D(50000))
    for i in range(60):
        fresh.apply_fill(
            fill(f"s{i}", "buy" if (i % 3 and i < 40) else "sell", "0.1", str(100 + i), "0.01" if i < 40 else "0")
        )
    expected = snapshot(fresh, {}, DayStart(), 0, after.last_fill_seq)
    assert (after.summary.realized_pnl, after.summary.total_cash, after.summary.fees_paid) == (
        expected.summary.realized_pnl, expected.summary.total_cash, expected.summary.fees_paid)  # fmt: skip
    assert [(p.quantity, p.average_price) for p in after.positions] == [
        (p.quantity, p.average_price) for p in expected.positions
    ]
    assert len(history.positions) == len(fresh.history)
    assert first.fills_applied == 40


async def test_spending_almost_all_the_cash_raises_no_false_alert(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, INITIAL_BALANCE="1000"))
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start()
    try:
        await publish_book(client, [("98.00", "50")], [("110.00", "50")])
        for i in range(5):  # each round trip locks most of the cash, then spends it
            buy = await placed(client, f"big-{i}", "buy", "8", "limit", price="100.00")
            await until(client, buy.order_id, S.ACCEPTED)
            await publish_book(client, [("98.00", "50")], [("100.00", "50")])
            await until(client, buy.order_id, S.FILLED)
            sell = await placed(client, f"back-{i}", "sell", "8")
            await until(client, sell.order_id, S.FILLED)
            await publish_book(client, [("98.00", "50")], [("110.00", "50")])
        await asyncio.sleep(0.5)
        assert alerts == []
        s = await snap(client)
        assert all(b.locked == 0 for b in s.balances)
    finally:
        await sut.stop()


async def test_a_restart_with_nothing_new_since_the_snapshot_starts_at_once(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start("portfolio-ledger")
    try:
        for i in range(5):
            await client.js_publish(client.subjects.fills("BTC_USDT"), fill(f"q{i}", "buy", "0.1", "100"))
        await eventually(lambda: _applied(client, 5), what="5 fills")
        before = await snap(client)
        await sut.stop("portfolio-ledger")
        t0 = asyncio.get_running_loop().time()
        await asyncio.wait_for(sut.start("portfolio-ledger"), 10)
        assert asyncio.get_running_loop().time() - t0 < 5
        after = await snap(client)
        assert (after.fills_applied, after.summary.total_cash, after.positions) == (
            before.fills_applied, before.summary.total_cash, before.positions)  # fmt: skip
    finally:
        await sut.stop()


async def _applied(client, n: int):
    s = await snap(client)
    return s if s.fills_applied == n else None


async def test_a_snapshot_of_an_older_fold_rebuilds_the_books_but_keeps_the_equity_curve(
    nats_url, prefix, client, monkeypatch
):
    """A new version of the books (FOLD_VERSION) refolds the streams; the equity curve is in no stream,
    so it is kept from the snapshot (it once restarted empty: returns, Sharpe, drawdowns all lost)."""
    import actors.portfolio_ledger as pl

    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start("portfolio-ledger")
    try:
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("c1", "buy", "0.1", "100"))
        await eventually(lambda: _applied(client, 1), what="the fill")
        ledger = sut.running["portfolio-ledger"]
        await ledger.revalue()  # type: ignore[attr-defined]
        curve = list(ledger.tracker.curve)  # type: ignore[attr-defined]
        assert curve
        monkeypatch.setattr(pl, "FOLD_VERSION", pl.FOLD_VERSION - 1)  # the snapshot an older version wrote
        await sut.stop("portfolio-ledger")
        monkeypatch.setattr(pl, "FOLD_VERSION", pl.FOLD_VERSION + 1)
        await sut.start("portfolio-ledger")
        again = sut.running["portfolio-ledger"]
        assert list(again.tracker.curve)[: len(curve)] == curve  # type: ignore[attr-defined]
        assert (await snap(client)).fills_applied == 1  # the books refolded from the streams
    finally:
        await sut.stop()
