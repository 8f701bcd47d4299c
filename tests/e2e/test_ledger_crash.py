"""Kill -9 the portfolio-ledger (run alone with ``tbx actor``) while fills of two venues are flowing,
restart it: its books, per venue and in total, equal those of an uninterrupted run (the pure fold of the
same fills)."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import msgspec
import pytest

from domain.valuation import books_snapshot, cycle_view
from domain.venue_ledgers import VenueLedgers
from schemas.messages import Empty, Fill, HistoryQuery, PortfolioSnapshot, PositionsHistory
from tests.e2e.procs import Tbx
from tests.helpers import eventually, fill

pytestmark = pytest.mark.e2e

N_FILLS = 600
KILL_AT = 220
VENUES = ("alpha", "beta")  # EXCHANGES=alpha=paper,beta=paper: the books are kept per venue


def random_fills(seed: int = 7) -> list[Fill]:
    rng = random.Random(seed)
    prices = {"BTC_USDT": 60000.0, "ETH_USDT": 3000.0}
    out = []
    for i in range(N_FILLS):
        pair = rng.choice(list(prices))
        prices[pair] *= 1 + rng.uniform(-0.01, 0.01)
        price = Decimal(f"{prices[pair]:.2f}")
        qty = Decimal(rng.randint(1, 500)) / Decimal(1000)
        base = pair.split("_")[0]
        in_base = rng.random() < 0.1
        fee = (qty * Decimal("0.001")) if in_base else (qty * price * Decimal("0.001")).quantize(Decimal("0.0001"))
        out.append(
            fill(
                f"F{i:04d}",
                rng.choice(["buy", "sell"]),
                str(qty),
                str(price),
                str(fee),
                pair=pair,
                fee_currency=base if in_base else "USDT",
                ts=1_700_000_000_000 + i,
                venue=rng.choice(VENUES),
            )
        )
    return out


def comparable(s: PortfolioSnapshot) -> dict:
    # decimals compared by value: the bus writes 0E-8 as 0 (no exponent, no negative zero)
    d = msgspec.to_builtins(s, builtin_types=(Decimal,))
    d.pop("ts")
    for part in [d, *d["byExchange"].values()]:
        part["summary"].pop("dayPnL")
        for p in part["positions"]:
            p.pop("dayPnL")
    return d


@pytest.mark.parametrize("snapshot_ms", ["86400000", "150"], ids=["from-the-stream", "from-a-snapshot"])
async def test_ledger_killed_mid_stream_rebuilds_the_same_books(nats_url, prefix, make_bus, tmp_path, snapshot_ms):
    bus = await make_bus("feeder")
    env = {
        "NATS_URL": nats_url,
        "BUS_PREFIX": prefix,
        "MARKET_DATA": "none",
        "PAIRS": "BTC_USDT,ETH_USDT",
        "POSITION_UPDATE_INTERVAL": "200",
        "SNAPSHOT_INTERVAL": snapshot_ms,
        "EXCHANGES": ",".join(f"{v}=paper" for v in VENUES),
    }
    fills = random_fills()

    async def ledger_snapshot() -> PortfolioSnapshot:
        return await bus.request(bus.subjects.query("portfolio"), Empty(), PortfolioSnapshot, timeout=2)

    first = Tbx(["actor", "portfolio-ledger"], env, tmp_path / "ledger1.log")
    second: Tbx | None = None
    try:
        await asyncio.to_thread(first.wait_for_log, r"ready: portfolio-ledger", 30)
        for i, f in enumerate(fills):
            await bus.js_publish(bus.subjects.fills(f.pair), f, msg_id=f.fill_id)
            if i == 10:  # the same fill again: once with the same id, once bypassing the stream's dedupe
                await bus.js_publish(bus.subjects.fills(f.pair), f, msg_id=f.fill_id)
                await bus.js_publish(bus.subjects.fills(f.pair), f, msg_id=f"{f.fill_id}-again")
            if i == KILL_AT - 20 and snapshot_ms == "150":
                await asyncio.sleep(0.5)  # let it write a snapshot, then keep streaming before the kill
            if i == KILL_AT:
                seen = (await ledger_snapshot()).fills_applied
                assert 0 < seen <= KILL_AT + 1  # it was busy booking when it died
                first.kill()
            if i % 25 == 0:
                await asyncio.sleep(0.01)  # a stream, not one burst
        second = Tbx(["actor", "portfolio-ledger"], env, tmp_path / "ledger2.log")
        await asyncio.to_thread(second.wait_for_log, r"ready: portfolio-ledger", 30)

        async def all_booked():
            snap = await ledger_snapshot()
            return snap if snap.fills_applied == N_FILLS else None

        got = await eventually(all_booked, timeout=30, what="every fill booked after the restart")
        await asyncio.sleep(0.5)
        got = await ledger_snapshot()
        history = await bus.request(bus.subjects.query("positions_history"), HistoryQuery(limit=1000), PositionsHistory)
        if snapshot_ms == "150":
            assert "snapshot loaded" in second.text()
    finally:
        first.ensure_stopped()
        if second is not None:
            second.ensure_stopped()

    uninterrupted = VenueLedgers("USDT", Decimal(50000), VENUES)
    for f in fills:
        uninterrupted.apply_fill(f)
    expected = books_snapshot(uninterrupted, {}, {}, 0, got.last_fill_seq)
    assert got.fills_applied == N_FILLS == expected.fills_applied
    assert comparable(got) == comparable(expected)
    assert [msgspec.to_builtins(c, builtin_types=(Decimal,)) for c in history.positions] == [
        msgspec.to_builtins(cycle_view(c, exchange=v), builtin_types=(Decimal,))
        for v, c in reversed(uninterrupted.history())
    ]
    assert {p.exchange for p in got.positions} == set(VENUES), "open positions on both venues to compare"
