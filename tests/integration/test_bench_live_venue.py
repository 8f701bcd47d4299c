"""The live-venue bench stage's own parts against the real local Binance exchange (in this event loop): the raw
client's signed requests are accepted and filled, a refused one is reported (never counted as filled), and the
timing hook records when each order reached the exchange and left it."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator

import pytest

from bench.live_venue import (
    BALANCES,
    KEY,
    LEVELS,
    RAW_SYMBOL,
    SECRET,
    SYMBOL,
    RawVenue,
    Samples,
    TimedExchange,
    raw_posts,
    slow,
    split,
)


@pytest.fixture
async def venue() -> AsyncIterator[tuple[TimedExchange, RawVenue]]:
    ex = TimedExchange(api_key=KEY, secret=SECRET, symbols=[SYMBOL, RAW_SYMBOL], balances=BALANCES)
    raw = RawVenue(await ex.start())
    for symbol in (SYMBOL, RAW_SYMBOL):
        await raw.control("POST", "book", {"symbol": symbol, **LEVELS})
    yield ex, raw
    await raw.close()
    await ex.stop()


async def test_raw_signed_orders_fill_and_are_timed_at_the_exchange(venue: tuple[TimedExchange, RawVenue]) -> None:
    ex, raw = venue
    t0 = time.perf_counter()
    assert await raw.post_order("t-0", 0) is None  # a buy: 200, FILLED, with its fills
    assert await raw.post_order("t-1", 1) is None  # a sell
    assert await raw.get_order("t-0") is None
    t1 = time.perf_counter()
    assert [o.status for o in ex.orders(RAW_SYMBOL)] == ["FILLED", "FILLED"]
    assert not ex.orders(SYMBOL)  # the raw client never trades what tbx trades
    timings = await raw.control("GET", "timings")
    assert set(timings) == {"t-0", "t-1"}
    for t_in, t_out in timings.values():
        assert t0 <= t_in <= t_out <= t1  # one monotonic clock for the harness and the exchange


async def test_a_refused_raw_order_is_reported_not_counted(venue: tuple[TimedExchange, RawVenue]) -> None:
    ex, raw = venue
    ex.set_balance("USDC", "1")  # too little for a 0.001 WBTC buy at 60,000
    assert await raw.post_order("t-poor", 0) == "raw POST HTTP 400"
    assert await raw.get_order("t-poor") == "raw GET HTTP 400"  # no such order (-2013)


def test_the_split_of_an_order_is_before_at_and_after_the_venue() -> None:
    s = Samples()
    s.sent, s.answered, s.filled = {"a": 10.0}, {"a": 10.030}, {"a": 10.025}
    assert split(s, {"a": [10.012, 10.013]}) == {
        "n": 1, "before": 12.0, "venue": 1.0, "after": 17.0, "afterFill": 12.0,
    }  # fmt: skip
    assert split(s, {})["n"] == 0  # an order the exchange never saw is left out, not guessed


async def test_paced_raw_orders_go_a_gap_apart_and_fill(venue: tuple[TimedExchange, RawVenue]) -> None:
    ex, raw = venue
    s = Samples()
    ids = await raw_posts(raw, s, "paced", 0, 4, gap_s=0.03)
    assert len(s.answered) == 4 and not s.refused
    assert [o.status for o in ex.orders(RAW_SYMBOL)] == ["FILLED"] * 4
    sent = [s.sent[cid] for cid in ids]
    # never sooner than the gap (asyncio may fire a timer up to ~1 ms early)
    assert all(b - a >= 0.03 - 0.002 for a, b in itertools.pairwise(sent)), sent


def test_a_slow_reply_is_counted_with_where_its_time_went() -> None:
    s = Samples()
    s.sent = {"fast": 10.0, "stalled": 20.0, "lost": 30.0}
    s.answered = {"fast": 10.008, "stalled": 20.350}
    timings = {"fast": [10.005, 10.006], "stalled": [20.340, 20.341]}
    assert slow(s, timings) == {
        "overMs": 100.0, "n": 1, "of": 2, "maxBefore": 340.0, "maxVenue": 1.0, "maxAfter": 9.0,
    }  # fmt: skip
