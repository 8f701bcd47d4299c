"""SYNTHETIC_CLOCK=event (domain/synthetic.py): prices step by events, so the same events give the same prices."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.book import book_problem
from domain.synthetic import EventMarket, FillClock

PAIRS = ["BTC_USDT", "ETH_USDT", "ETH_BTC", "SOL_USDT"]

# an event: (pair, order number on that pair, complete?) - replays of the same fill included
events_st = st.lists(
    st.tuples(st.sampled_from(PAIRS), st.integers(0, 6), st.booleans()),
    max_size=60,
)


def prices_seen(seed: int, events: list[tuple[str, int, bool]]) -> list[tuple[str, list[object], list[object]]]:
    """What a feed publishes after each event that steps: every moved pair's book (levels only)."""
    market, clock, out = EventMarket(PAIRS, seed), FillClock(), []
    for pair, n, complete in events:
        if clock.on_fill(pair, f"O{pair}{n}", complete):
            for p in market.moved_by(pair):
                b = market.book(p, clock.steps, ts=0)
                out.append((p, b.bids, b.asks))
    return out


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), events=events_st)
def test_same_seed_and_events_give_the_same_prices(seed: int, events: list[tuple[str, int, bool]]) -> None:
    assert prices_seen(seed, events) == prices_seen(seed, events)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1000), events=events_st)
def test_a_restarted_feed_publishes_the_same_book(seed: int, events: list[tuple[str, int, bool]]) -> None:
    """A feed that counted every event as it came and one that counts them all at once (a restart, reading
    the streams) agree on every pair's book; a fill seen again (redelivered, stored twice) steps nothing."""
    live, clock = EventMarket(PAIRS, seed), FillClock()
    for pair, n, complete in events:
        if clock.on_fill(pair, f"O{pair}{n}", complete):
            live.book(pair, clock.steps, ts=0)  # walked one step at a time
    again, recount = EventMarket(PAIRS, seed), FillClock()
    for pair, n, complete in events + events:  # every fill delivered twice
        recount.on_fill(pair, f"O{pair}{n}", complete)
    assert recount.steps == clock.steps
    for p in PAIRS:
        a, b = live.book(p, clock.steps, ts=1), again.book(p, recount.steps, ts=1)
        assert (a.bids, a.asks) == (b.bids, b.asks)
        assert book_problem(a.bids, a.asks) is None


def test_only_completed_orders_step_and_each_once() -> None:
    clock = FillClock()
    assert not clock.on_fill("BTC_USDT", "O1", False)  # a partial fill
    assert not clock.on_fill("BTC_USDT", "O1", None)  # an outside fill without the order's totals
    assert clock.on_fill("BTC_USDT", "O1", True)
    assert not clock.on_fill("BTC_USDT", "O1", True)  # the same order again
    assert clock.on_fill("BTC_USDT", "O2", True)
    assert clock.on_fill("ETH_USDT", "O1", True)  # per pair
    assert clock.steps == {"BTC_USDT": 2, "ETH_USDT": 1}


def test_a_step_moves_the_pair_and_its_crosses_only() -> None:
    m = EventMarket(PAIRS, 7)
    before = {p: m.book(p, {}, 0) for p in PAIRS}
    after = {p: m.book(p, {"BTC_USDT": 1}, 0) for p in PAIRS}
    assert sorted(m.moved_by("BTC_USDT")) == ["BTC_USDT", "ETH_BTC"]
    assert m.moved_by("ETH_BTC") == []  # a cross follows its legs, its own fills step nothing
    for p in PAIRS:
        changed = (before[p].bids, before[p].asks) != (after[p].bids, after[p].asks)
        assert changed == (p in ("BTC_USDT", "ETH_BTC")), p
    assert m.mid("BTC_USDT", 0) == 60000.0  # step 0 is the start price
    assert m.mid("ETH_USDT", 3) != m.mid("ETH_USDT", 2)


def test_other_seeds_give_other_prices() -> None:
    a, b = EventMarket(PAIRS, 1), EventMarket(PAIRS, 2)
    assert a.mid("BTC_USDT", 5) != b.mid("BTC_USDT", 5)
