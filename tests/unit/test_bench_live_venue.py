"""The live-venue bench stage's pace (bench/live_venue.py): its timed orders stay inside the request budget ccxt's
limiter gives tbx run's order-router (read from the ccxt instance as the service builds it), so the stage times our
path and not the limiter's waits; back to back they cannot. Regression: unpaced, the stage sent about 170 orders a
second, 2.4 times that budget, and every ~2 s the limiter's window ran dry (the p99 stall of ~350 ms)."""

from __future__ import annotations

import asyncio
import itertools
import time

from bench.live_venue import PACE_MS, Pacer, venue_budget


def test_the_paced_orders_and_the_polls_fit_the_order_router_s_budget() -> None:
    b = venue_budget(PACE_MS)
    assert b["windowMs"] == 2000 and b["orderCost"] == 0.2  # ccxt's Binance order cost, the adapter's window
    assert 0 < b["maxCost"] <= 30.0  # the order-router's share (3/4) of Binance's 20 cost units a second
    assert b["orders"] + b["polls"] <= b["maxCost"]


def test_back_to_back_orders_are_not_bounded_by_the_budget() -> None:
    b = venue_budget(0)
    assert b["orders"] > b["maxCost"]
    fast = venue_budget(1000 / 170)  # the stage unpaced: about 170 orders a second, one at a time
    assert fast["orders"] + fast["polls"] > 2 * fast["maxCost"]


async def test_the_pacer_starts_at_least_a_gap_apart() -> None:
    pacer, starts = Pacer(0.02), []
    for _ in range(4):
        await pacer.wait()
        starts.append(time.perf_counter())
        await asyncio.sleep(0)  # work shorter than the gap
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.02 - 0.002 for g in gaps), gaps  # never sooner (asyncio may fire a timer ~1 ms early)


async def test_no_pace_never_waits() -> None:
    pacer = Pacer(0.0)
    await pacer.wait()
    assert pacer.next_at == 0.0  # nothing scheduled: back to back
