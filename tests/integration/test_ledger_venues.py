"""Books per venue (issue 17) over a real NATS: the portfolio-ledger with fills of two venues (byExchange
exact, position events naming the venue, alerts naming the venue, restart and rebuild give the same books),
an old one-Ledger snapshot restored, and the gateway's filters over real HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

import aiohttp
import msgspec

from actors.portfolio_ledger import FOLD_VERSION
from actors.snapshots import SnapshotStore
from bus.client import Envelope
from domain.ledger import Ledger
from domain.performance import EquityTracker
from domain.valuation import DayStart
from schemas.messages import (
    Empty,
    HistoryQuery,
    OrderRequest,
    PortfolioSnapshot,
    PositionsHistory,
    PositionView,
    RiskAlert,
)
from tests.helpers import eventually, fill
from tests.integration.test_actors import System
from tests.integration.test_gateway import call, start_gateway
from tests.integration.test_order_types import publish_book, settings_for

TWO = {"EXCHANGES": "alpha=paper,beta=paper", "INITIAL_BALANCE": "1000", "ALLOW_SHORT": "false"}


async def snap(client) -> PortfolioSnapshot:
    return await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot)


async def booked(client, n: int) -> PortfolioSnapshot:
    async def check() -> PortfolioSnapshot | None:
        s = await snap(client)
        return s if s.fills_applied == n else None

    return await eventually(check, what=f"{n} fills booked")


def comparable(s: PortfolioSnapshot) -> dict:
    d = msgspec.to_builtins(s, builtin_types=(D,))
    d.pop("ts")
    for part in [d, *d["byExchange"].values()]:
        part["summary"].pop("dayPnL")
        for p in part["positions"]:
            p.pop("dayPnL")
    return d


FILLS = [
    fill("a1", "buy", "2", "100", "0.2", venue="alpha", ts=1),
    fill("b1", "buy", "1", "110", "0.11", venue="beta", ts=2),
    fill("b2", "buy", "1", "50", pair="ETH_USDT", venue="beta", ts=3),
    fill("a2", "sell", "1", "120", "0.12", venue="alpha", ts=4),
]


async def test_fills_of_two_venues_make_two_books_exact_and_a_restart_gives_the_same(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, **TWO))
    await sut.start("portfolio-ledger")
    events: list[PositionView] = []

    async def on_position(v: PositionView, env: Envelope) -> None:
        events.append(v)

    await client.subscribe(client.subjects.position_events("BTC_USDT"), PositionView, on_position)
    try:
        for f in FILLS:
            await client.js_publish(client.subjects.fills(f.pair), f, msg_id=f.fill_id)
        s = await booked(client, 4)
        a, b = s.by_exchange["alpha"], s.by_exchange["beta"]
        assert list(s.by_exchange) == ["alpha", "beta"]
        # alpha: 1000 - 200 - 0.2 + 120 - 0.12 USDT, 1 BTC left at 100, realized -0.2 + 20 - 0.12
        assert [(x.currency, x.total, x.available) for x in a.balances] == [
            ("USDT", D("919.68"), D("919.68")), ("BTC", D(1), D(1))]  # fmt: skip
        assert [(p.exchange, p.pair, p.quantity, p.average_price) for p in a.positions] == [
            ("alpha", "BTC_USDT", D(1), D(100))
        ]
        assert a.positions[0].realized_pnl == D("19.68")
        # beta: 1000 - 110 - 0.11 - 50, 1 BTC at 110, 1 ETH at 50: nothing of alpha's
        assert [(x.currency, x.total) for x in b.balances] == [("USDT", D("839.89")), ("BTC", D(1)), ("ETH", D(1))]
        assert [(p.pair, p.quantity, p.average_price) for p in b.positions] == [
            ("BTC_USDT", D(1), D(110)), ("ETH_USDT", D(1), D(50))]  # fmt: skip
        # together: one position per venue and pair, balances summed, totals summed
        assert [(p.pair, p.exchange) for p in s.positions] == [
            ("BTC_USDT", "alpha"), ("BTC_USDT", "beta"), ("ETH_USDT", "beta")]  # fmt: skip
        assert [(x.currency, x.total) for x in s.balances] == [("USDT", D("1759.57")), ("BTC", D(2)), ("ETH", D(1))]
        assert s.summary.total_value == a.summary.total_value + b.summary.total_value
        assert s.summary.realized_pnl == a.summary.realized_pnl + b.summary.realized_pnl
        # every position event names its venue
        await eventually(lambda: asyncio.sleep(0, len(events) >= 3), what="the BTC position events")
        assert [(e.exchange, e.quantity) for e in events] == [("alpha", D(2)), ("beta", D(1)), ("alpha", D(1))]
        hist = await client.request(client.subjects.query("positions_history"), HistoryQuery(), PositionsHistory)
        assert hist.positions == []  # alpha's BTC is still open (sold half), nothing closed
        before = comparable(s)

        await sut.stop("portfolio-ledger")  # a clean stop writes a snapshot
        await sut.start("portfolio-ledger")
        assert sut.running["portfolio-ledger"].saved_at[0] == 4  # type: ignore[attr-defined]  # from the snapshot
        assert comparable(await snap(client)) == before
        await sut.stop("portfolio-ledger")  # and from nothing but the streams
        await (await client.kv(client.subjects.kv_state)).put("ledger.manifest", b"")
        await sut.start("portfolio-ledger")
        assert sut.running["portfolio-ledger"].saved_at[0] == -1  # type: ignore[attr-defined]  # no snapshot
        assert comparable(await booked(client, 4)) == before
    finally:
        await sut.stop()


async def test_a_balance_below_zero_on_one_venue_alerts_naming_it_though_another_holds_enough(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, **TWO))
    alerts: list[RiskAlert] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        if a.code == "NEGATIVE_BALANCE":
            alerts.append(a)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await sut.start("risk-gate", "portfolio-ledger")
    try:  # beta spends 1100 of its 1000 USDT; alpha's 1000 does not pay for it
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("n1", "buy", "11", "100", venue="beta"))
        await eventually(lambda: asyncio.sleep(0, bool(alerts)), what="the alert")
        s = await snap(client)
        assert next((x.currency, x.total) for x in s.balances) == ("USDT", D(900))  # together: enough
        assert alerts[0].message.startswith("USDT balance on beta below zero: total -100")
    finally:
        await sut.stop()


async def test_an_old_one_ledger_snapshot_restores_as_the_books_of_the_venue_its_fills_name(nats_url, prefix, client):
    """A snapshot written before books were kept per venue (one Ledger): restored as the books of the venue
    its fills name; the other configured venue starts with its initial balance; the fills after it go on."""
    sut = System(nats_url, settings_for(nats_url, prefix, **TWO))
    fills = [fill(f"o{i}", "buy" if i % 2 else "sell", "0.5", str(100 + i), "0.01", venue="beta") for i in range(6)]
    old = Ledger("USDT", D(1000))
    for f in fills[:4]:
        await client.js_publish(client.subjects.fills(f.pair), f, msg_id=f.fill_id)
        old.apply_fill(f)
    state = {
        "ledger": msgspec.to_builtins(old), "day": msgspec.to_builtins(DayStart()),
        "tracker": msgspec.to_builtins(EquityTracker(D(1000))), "applied": [f.fill_id for f in fills[:4]],
        "fills_seq": 4, "orders_seq": 0, "fold": FOLD_VERSION, "adjustments_seq": 0, "fill_journal": None,
        "order_journal": None, "readings": {},
    }  # fmt: skip
    await SnapshotStore(await client.kv(client.subjects.kv_state), "ledger").save(msgspec.json.encode(state))
    for f in fills[4:]:
        await client.js_publish(client.subjects.fills(f.pair), f, msg_id=f.fill_id)
    await sut.start("portfolio-ledger")
    try:
        assert sut.running["portfolio-ledger"].saved_at[0] == 4  # type: ignore[attr-defined]  # the old snapshot
        s = await booked(client, 6)
        for f in fills[4:]:
            old.apply_fill(f)
        beta = s.by_exchange["beta"]
        got = {x.currency: x.total for x in beta.balances}
        assert got == {c: b.total for c, b in old.balances.items() if b.total or c == "USDT"}
        assert [(p.quantity, p.average_price) for p in beta.positions] == [
            (abs(p.quantity), p.average_price) for p in old.positions.values() if p.quantity
        ]
        assert [(x.currency, x.total) for x in s.by_exchange["alpha"].balances] == [("USDT", D(1000))]
        assert s.fills_applied == 6
    finally:
        await sut.stop()


async def test_the_gateway_shows_by_exchange_and_filters_positions_and_trades_by_exchange(nats_url, prefix, client):
    two = {"EXCHANGES": "paper,beta=paper", "INITIAL_BALANCE": "1000"}
    sut = System(nats_url, settings_for(nats_url, prefix, **two))
    await sut.start()
    gw, base = await start_gateway(nats_url, prefix, **two)
    sent: list[OrderRequest] = []

    async def on_submit(r: OrderRequest, env: Envelope) -> None:  # the real request, seen on the bus
        sent.append(r)

    await client.subscribe(client.subjects.orders_submit, OrderRequest, on_submit)
    try:
        for f in (
            fill("g1", "buy", "1", "100", venue="paper", ts=1),
            fill("g2", "buy", "2", "100", venue="beta", ts=2),
            fill("g3", "buy", "1", "50", pair="ETH_USDT", venue="beta", ts=3),
        ):
            await client.js_publish(client.subjects.fills(f.pair), f, msg_id=f.fill_id)
        await booked(client, 3)
        async with aiohttp.ClientSession() as http:
            status, _, pf = await call(http, "GET", f"{base}/api/portfolio")
            assert status == 200 and list(pf["byExchange"]) == ["paper", "beta"]
            assert [p["quantity"] for p in pf["byExchange"]["beta"]["positions"]] == [2, 1]
            assert pf["byExchange"]["paper"]["summary"]["totalCash"] == 900
            assert pf["summary"]["totalCash"] == 900 + 750

            status, _, got = await call(http, "GET", f"{base}/api/positions?exchange=BETA")
            assert status == 200
            assert [(p["pair"], p["exchange"], p["quantity"]) for p in got["positions"]] == [
                ("BTC_USDT", "beta", 2), ("ETH_USDT", "beta", 1)]  # fmt: skip
            status, _, got = await call(http, "GET", f"{base}/api/positions?exchange=paper&pair=btc_usdt")
            assert [(p["exchange"], p["quantity"], p["id"]) for p in got["positions"]] == [
                ("paper", 1, "POS_001_BTC_USDT:paper")
            ]
            status, _, got = await call(http, "GET", f"{base}/api/positions?pair=BTC_USDT")
            assert sorted(p["exchange"] for p in got["positions"]) == ["beta", "paper"]
            status, ctype, problem = await call(http, "GET", f"{base}/api/positions?exchange=kraken")
            assert (status, ctype, problem["field"]) == (422, "application/problem+json", "exchange")
            assert "kraken" in problem["detail"] and "paper, beta" in problem["detail"]

            status, _, got = await call(http, "GET", f"{base}/api/trades?exchange=beta")
            assert status == 200 and [(t["fillId"], t["exchange"], t["venue"]) for t in got["trades"]] == [
                ("g3", "beta", "beta"), ("g2", "beta", "beta")]  # fmt: skip
            status, _, got = await call(http, "GET", f"{base}/api/trades")
            assert [t["exchange"] for t in got["trades"]] == ["beta", "beta", "paper"]
            status, _, problem = await call(http, "GET", f"{base}/api/trades?exchange=nope")
            assert (status, problem["field"]) == (422, "exchange")

            # BTC_USDT is held on two venues: which one to close must be named
            status, _, problem = await call(http, "POST", f"{base}/api/positions/BTC_USDT/close")
            assert (status, problem["field"], problem["code"]) == (409, "exchange", "POSITION_ON_SEVERAL_EXCHANGES")
            status, _, problem = await call(http, "POST", f"{base}/api/positions/ETH_USDT/close?exchange=paper")
            assert (status, problem["code"]) == (404, "NO_POSITION")
            assert sent == []  # nothing was sent for any of these
            await publish_book(client, [("99", "5")], [("101", "5")])
            status, _, placed = await call(http, "POST", f"{base}/api/positions/BTC_USDT/close?exchange=paper")
            assert status == 201, placed
            assert placed["side"] == "sell" and placed["quantity"] == 1
            await eventually(lambda: asyncio.sleep(0, bool(sent)), what="the close request on the bus")
            assert [(r.exchange, r.pair, r.quantity, r.reduce_only) for r in sent] == [("paper", "BTC_USDT", 1, True)]
    finally:
        await gw.stop()
        await sut.stop()
