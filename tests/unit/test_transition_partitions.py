"""The automatic revert follows every partition's order-router (domain/transition.py ``RouterWatch``): a live venue
failing in one partition, or one partition silent, is not masked by the others' heartbeats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.transition import RouterWatch

GRACE = 2000
VENUE = "binance"


def test_one_partition_failing_is_not_cleared_by_the_others():
    """The review's probe: partition 1 cannot reach the venue, partition 0 can; their beats alternate."""
    w = RouterWatch.start(2, 0)
    t = 0
    for _ in range(10):
        t += 250
        w.beat(1, {VENUE: True}, t)
        t += 250
        w.beat(0, {VENUE: False}, t)
    why = w.failing(t, GRACE)
    assert why is not None and "binance (partition 1)" in why


def test_one_partition_silent_is_not_covered_by_the_others():
    w = RouterWatch.start(2, 0)
    for t in range(0, 5000, 500):
        w.beat(0, {VENUE: False}, t)
    why = w.failing(5000, GRACE)
    assert why is not None and "order-router (partition 1)" in why


def test_one_partition_names_nothing_new():
    w = RouterWatch.start(1, 0)
    w.beat(None, {VENUE: True}, 100)
    assert w.failing(1000, GRACE) is None
    assert w.failing(2100, GRACE) == "the order-router has sent no heartbeat for 2 s (grace 2 s)"
    w.beat(None, {VENUE: True}, 2200)
    assert w.failing(2200, GRACE) == f"live venue {VENUE} failing its checks for 2 s (grace 2 s)"
    w.beat(7, {VENUE: False}, 2300)  # a partition this deployment does not have: ignored
    assert w.failing(2300, GRACE) is not None


events = st.lists(
    st.tuples(st.integers(0, 1500), st.integers(0, 3), st.booleans()),  # (ms since the last, partition, failing)
    max_size=40,
)


@given(st.integers(1, 4), events, st.integers(0, 3000))
def test_failing_exactly_when_some_partition_fails_or_is_silent_past_the_grace(n, evs, tail):
    w = RouterWatch.start(n, 0)
    t = 0
    beats: dict[int | None, list[tuple[int, bool]]] = {k: [] for k in w.partitions}
    for gap, k, bad in evs:
        t += gap
        part = None if n == 1 else k % n
        w.beat(part, {VENUE: bad}, t)
        beats[part].append((t, bad))
    now = t + tail
    expected = False
    for seen in beats.values():
        last = seen[-1][0] if seen else 0
        if now - last >= GRACE:
            expected = True
        since = None  # the first beat of the trailing run of failing beats
        for at, bad in seen:
            since = (since if since is not None else at) if bad else None
        if since is not None and now - since >= GRACE:
            expected = True
    assert (w.failing(now, GRACE) is not None) == expected
