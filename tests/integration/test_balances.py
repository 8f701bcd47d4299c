"""A live venue's balances reconciled into the ledger, over a real NATS with the real portfolio-ledger.

The test publishes ``VenueBalances`` on ``tbx.events.balances.<venue>`` as the order-router's venue
session does (that is the bus contract), and fills on the FILLS stream as the fill-tracker does."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from bus.client import Bus, Envelope
from schemas.messages import (
    BalanceAdjusted,
    Empty,
    Performance,
    PortfolioSnapshot,
    RiskAlert,
    RiskMetricsView,
    VenueBalanceFigures,
    VenueBalances,
    now_ms,
)
from tests.helpers import eventually
from tests.helpers import fill as a_fill
from tests.integration.test_actors import System
from tests.integration.test_ledger import bal, snap
from tests.integration.test_order_types import publish_book
from tests.integration.test_order_types import settings_for as order_settings

VENUE = "binance"


def settings_for(nats_url: str, prefix: str, **extra: str):  # type: ignore[no-untyped-def]
    """The books are per venue: the readings' venue is the deployment's (one venue, named binance, whose
    orders nothing here sends) and the fills are that venue's."""
    return order_settings(nats_url, prefix, **({"EXCHANGES": f"{VENUE}=paper"} | extra))


def fill(*args: str, **kw: str):  # type: ignore[no-untyped-def]
    return a_fill(*args, **({"venue": VENUE} | kw))


def reading(fills_seq: int, opening: bool = False, **figures: tuple[str, str]) -> VenueBalances:
    """figures: currency=(free, total)."""
    return VenueBalances(
        venue=VENUE,
        balances={c: VenueBalanceFigures(free=D(f), total=D(t)) for c, (f, t) in figures.items()},
        ts=now_ms(),
        fills_seq=fills_seq,
        opening=opening,
    )


class Alerts:
    def __init__(self) -> None:
        self.got: list[RiskAlert] = []

    async def on(self, a: RiskAlert, env: Envelope) -> None:
        if a.code == "BALANCE_MISMATCH":
            self.got.append(a)

    def of(self, currency: str) -> list[RiskAlert]:
        return [a for a in self.got if a.balance is not None and a.balance.currency == currency]


async def alerts_on(client: Bus) -> Alerts:
    alerts = Alerts()
    await client.subscribe(client.subjects.risk_events, RiskAlert, alerts.on)
    return alerts


async def adjustments(client: Bus) -> list[BalanceAdjusted]:
    """Every BalanceAdjusted stored on the ADJUSTMENTS stream."""
    out: list[BalanceAdjusted] = []

    async def on(a: BalanceAdjusted, env: Envelope) -> None:
        out.append(a)

    s = client.subjects
    await client.replay(stream=s.s_adjustments, subject=s.balance_adjustments(), type_=BalanceAdjusted, handler=on,
                        follow=False)  # fmt: skip
    return out


async def booked(client: Bus, n: int) -> PortfolioSnapshot:
    async def check() -> PortfolioSnapshot | None:
        s = await snap(client)
        return s if s.fills_applied >= n else None

    return await eventually(check, what=f"{n} fills booked")


async def publish(client: Bus, r: VenueBalances) -> int:
    return await client.js_publish(client.subjects.balances(r.venue), r)


def books(s: PortfolioSnapshot) -> list[tuple[str, D, D, D]]:
    return [(b.currency, b.total, b.available, b.locked) for b in s.balances]


async def compared(client: Bus, seq: int) -> None:
    """Wait until the ledger has handled (acknowledged) every reading up to BALANCES sequence ``seq``."""

    async def check() -> bool:
        info = await client.js.consumer_info(client.subjects.s_balances, "portfolio-ledger-balances")
        return (info.ack_floor.stream_seq or 0) >= seq

    await eventually(check, what=f"the readings up to {seq} compared")


async def test_a_mismatch_alerts_with_both_figures_the_venue_wins_and_a_restart_keeps_it(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start("portfolio-ledger")
    alerts = await alerts_on(client)
    try:
        seq = await client.js_publish(client.subjects.fills("BTC_USDT"), fill("b-1", "buy", "0.1", "100", "0.01"))
        await booked(client, 1)  # USDT 50000 - 10 - 0.01 = 49989.99, BTC 0.1
        # the venue agrees on BTC, holds 9.99 USDT for an order we do not know, and holds BNB we never had
        agreeing = reading(seq, USDT=("49989.99", "49989.99"), BTC=("0.1", "0.1"))
        await publish(client, agreeing)
        mismatch = reading(seq, USDT=("49980", "49989.99"), BTC=("0.1", "0.1"), BNB=("0.5", "0.5"))
        await publish(client, mismatch)
        await eventually(lambda: asyncio.sleep(0, len(alerts.got) >= 2), what="the two alerts")
        assert sorted(a.balance.currency for a in alerts.got if a.balance) == ["BNB", "USDT"]
        usdt = alerts.of("USDT")[0]
        assert usdt.severity == "critical" and usdt.balance is not None and usdt.balance.venue == VENUE
        assert (usdt.balance.ledger_total, usdt.balance.ledger_available) == (D("49989.99"), D("49989.99"))
        assert (usdt.balance.venue_total, usdt.balance.venue_free) == (D("49989.99"), D("49980"))
        assert "49989.99" in usdt.message and "49980" in usdt.message and VENUE in usdt.message
        bnb = alerts.of("BNB")[0].balance
        assert bnb is not None and (bnb.ledger_total, bnb.venue_total) == (D(0), D("0.5"))

        s = await snap(client)
        assert books(s) == [
            ("USDT", D("49989.99"), D("49980"), D("9.99")),
            ("BNB", D("0.5"), D("0.5"), D(0)),
            ("BTC", D("0.1"), D("0.1"), D(0)),
        ]
        shown = {a.currency: a for a in s.balance_adjustments}
        assert shown.keys() == {"USDT", "BNB"}
        assert (shown["USDT"].from_available, shown["USDT"].to_available) == (D("49989.99"), D("49980"))
        assert shown["USDT"].reason == "mismatch" and shown["USDT"].fills_seq == seq

        # the same reading again (a redelivery): nothing more
        await compared(client, await publish(client, mismatch))
        assert len(alerts.of("USDT")) == 1 and len(alerts.of("BNB")) == 1
        stored = await adjustments(client)
        assert sorted(a.currency for a in stored) == ["BNB", "USDT"]

        # a later fill moves the adjusted books as any fill does: USDT 9.99 stays held
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("b-2", "sell", "0.05", "110"))
        s = await booked(client, 2)
        assert bal(s, "USDT").total == D("49995.49") and bal(s, "USDT").available == D("49985.5")
        before = books(s)

        # restarted: the same books (snapshot + streams) ...
        await sut.stop("portfolio-ledger")
        await sut.start("portfolio-ledger")
        assert books(await snap(client)) == before
        # ... and rebuilt from nothing but the streams
        await sut.stop("portfolio-ledger")
        kv = await client.kv(client.subjects.kv_state)
        await kv.put("ledger.manifest", b"")
        await sut.start("portfolio-ledger")
        again = await snap(client)
        assert books(again) == before
        assert [a.adjustment_id for a in again.balance_adjustments] == [a.adjustment_id for a in s.balance_adjustments]
    finally:
        await sut.stop()


async def test_a_fill_in_flight_is_no_mismatch_nor_one_booked_after_the_reading(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start("portfolio-ledger")
    alerts = await alerts_on(client)
    try:
        seq = await client.js_publish(client.subjects.fills("BTC_USDT"), fill("f-1", "buy", "0.1", "100"))
        await booked(client, 1)
        # the venue already counts the next trade (0.1 BTC more, 10 USDT less) whose fill is not stored yet
        await publish(client, reading(seq + 1, USDT=("49980", "49980"), BTC=("0.2", "0.2")))
        await asyncio.sleep(0.3)  # the ledger waits for that fill: it must not compare before it
        assert alerts.got == []
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("f-2", "buy", "0.1", "100"))
        # a fill booked after a reading's point is not in the venue's figures: no difference either
        await client.js_publish(client.subjects.fills("BTC_USDT"), fill("f-3", "buy", "0.1", "100"))
        await booked(client, 3)
        await compared(client, await publish(client, reading(seq + 1, USDT=("49980", "49980"), BTC=("0.2", "0.2"))))
        assert alerts.got == []
        assert await adjustments(client) == []
        s = await snap(client)
        assert (bal(s, "USDT").total, bal(s, "BTC").total) == (D("49970"), D("0.3"))
    finally:
        await sut.stop()


async def test_opening_balances_replace_the_initial_balance_at_a_fresh_start(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix, POSITION_UPDATE_INTERVAL="100"))
    await sut.start("portfolio-ledger", "risk-gate")
    alerts = await alerts_on(client)
    try:
        await publish_book(client, [("99", "1")], [("101", "1")])  # BTC marked at 100
        await publish(client, reading(0, opening=True, USDT=("900", "1000"), BTC=("0.5", "0.5")))

        async def opened() -> PortfolioSnapshot | None:
            s = await snap(client)
            return s if bal(s, "BTC").total == D("0.5") and bal(s, "USDT").total == D(1000) else None

        s = await eventually(opened, what="the opening balances")
        assert books(s) == [("USDT", D(1000), D(900), D(100)), ("BTC", D("0.5"), D("0.5"), D(0))]
        assert {a.reason for a in s.balance_adjustments} == {"opening"}
        assert s.summary.total_value == D(1050)

        async def started() -> Performance | None:
            p = await client.request(client.subjects.query("performance"), Empty(), Performance)
            return p if p.initial_balance == D(1050) else None

        perf = await eventually(started, what="the starting equity of the opening balances")
        assert perf.total_return == D(0)
        assert alerts.got == []  # an opening is no alarm (the ledger handled it: its books show it)

        async def gate_sees_it() -> RiskMetricsView | None:  # the risk-gate's checks use the same balances
            m = await client.request(client.subjects.query("risk"), Empty(), RiskMetricsView)
            return m if m.equity == D(1050) else None

        await eventually(gate_sees_it, what="the risk-gate's equity from the opening balances")
    finally:
        await sut.stop()


async def test_one_alert_per_breach_while_the_venue_keeps_differing(nats_url, prefix, client):
    sut = System(nats_url, settings_for(nats_url, prefix))
    await sut.start("portfolio-ledger")
    alerts = await alerts_on(client)
    try:
        # 50000 USDT in the books; the venue has 49990, then 49980 (still differing: adjusted, no new alert),
        # then agrees, then differs again (a new breach: a new alert)
        for total in ("49990", "49980"):
            await compared(client, await publish(client, reading(0, USDT=(total, total))))
        assert bal(await snap(client), "USDT").total == D(49980)
        await compared(client, await publish(client, reading(0, USDT=("49980", "49980"))))
        await compared(client, await publish(client, reading(0, USDT=("49970", "49970"))))
        # (the alerts come in the order they were published: once the last is in, so are the others)
        await eventually(
            lambda: asyncio.sleep(0, any(a.balance.venue_total == D(49970) for a in alerts.got if a.balance))
        )
        assert [a.balance.venue_total for a in alerts.of("USDT") if a.balance] == [D(49990), D(49970)]
        assert [a.to_total for a in await adjustments(client)] == [D(49990), D(49980), D(49970)]
    finally:
        await sut.stop()
