"""domain.throttle: at most one value per key every interval, the latest state at the end, never a stale one."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.throttle import Throttle

INTERVAL = 1000


def run(
    arrivals: list[tuple[int, str, int]], interval: int = INTERVAL, stale: list | None = None
) -> tuple[list[tuple[int, str, int]], dict]:
    """Drive a throttle as the gateway does (a timer at ``next_due``); arrivals (time, key, value) in time order.
    Returns what was sent, (time, key, value), and the latest value offered per key; ``stale`` collects any
    value sent when a newer one of its key had been offered already."""
    t = Throttle[str, int](interval)
    sent: list[tuple[int, str, int]] = []
    latest: dict[str, int] = {}

    def send(at: float, key: str, value: int) -> None:
        if stale is not None and value != latest[key]:
            stale.append((at, key, value))
        sent.append((int(at), key, value))

    def flush_until(now: float) -> None:
        while (due := t.next_due()) is not None and due <= now:
            for k, v in t.flush(due):
                send(due, k, v)

    for now, key, value in arrivals:
        flush_until(now)
        latest[key] = value
        if (out := t.offer(key, value, now)) is not None:
            send(now, key, out)
    flush_until(float("inf"))
    return sent, latest


arrivals = st.lists(
    st.tuples(st.integers(0, 5_000), st.sampled_from(["BTC/binance", "BTC/alpaca", "ETH/binance"])), max_size=60
).map(lambda xs: [(t, k, i) for i, (t, k) in enumerate(sorted(xs, key=lambda x: x[0]))])


@settings(max_examples=300, deadline=None)
@given(arrivals)
def test_per_key_sends_are_an_interval_apart_fresh_and_end_with_the_latest(events):
    stale: list = []
    sent, latest = run(events, stale=stale)
    assert stale == []  # never stale: what is sent is the latest offered when it is sent
    for key in latest:
        mine = [(t, v) for t, k, v in sent if k == key]
        times = [t for t, _ in mine]
        assert all(b - a >= INTERVAL for a, b in itertools.pairwise(times)), times  # one per interval
        assert mine[-1][1] == latest[key]  # the last state always goes out
        assert len({v for _, v in mine}) == len(mine)  # a value is sent once


def test_a_burst_within_one_interval_sends_its_first_and_its_last():
    sent, _ = run([(i * 2, "k", i) for i in range(50)])  # 50 values in 100 ms
    assert sent == [(0, "k", 0), (INTERVAL, "k", 49)]


def test_a_value_after_a_quiet_interval_goes_out_at_once():
    sent, _ = run([(0, "k", 1), (1500, "k", 2), (1600, "k", 3)])
    assert sent == [(0, "k", 1), (1500, "k", 2), (2500, "k", 3)]


def test_keys_do_not_hold_each_other_back():
    sent, _ = run([(0, "a", 1), (10, "b", 2), (20, "a", 3)])
    assert sent == [(0, "a", 1), (10, "b", 2), (1000, "a", 3)]


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval"):
        Throttle(0)
