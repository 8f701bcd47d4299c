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


def test_the_transition_follows_each_partitions_heartbeats(monkeypatch):
    """The review's probe on the transition itself: partition 1's session cannot reach the live venue, partition
    0's can, their heartbeats alternate: after the grace the venue is failing (the revert's reason); a standby's
    beats never keep a silent partition alive."""
    import asyncio

    import actors.transition as transition
    from config.settings import load_settings
    from schemas.messages import Heartbeat, VenueState

    clock = [1_000_000]
    monkeypatch.setattr(transition, "_mono_ms", lambda: clock[0])
    t = transition.Transition.__new__(transition.Transition)
    t.live_venues = ["binance"]
    t.settings = load_settings({"PARTITIONS": "2", "TRANSITION_REVERT_VENUE_GRACE_MS": "2000"})
    t.router = transition.tr.RouterWatch.start(2, clock[0])

    def hb(k: int, ok: bool, role: str = "active") -> Heartbeat:
        return Heartbeat(
            actor="order-router", instance=f"i{k}{role}", ts=0, started_at=0, role=role, partition=k,  # type: ignore[arg-type]
            venues=[VenueState(name="binance", connected=ok)],
        )  # fmt: skip

    async def run() -> None:
        for _ in range(10):
            clock[0] += 250
            await t._on_router_heartbeat(hb(1, False), None)  # type: ignore[arg-type]
            clock[0] += 250
            await t._on_router_heartbeat(hb(0, True), None)  # type: ignore[arg-type]
        why = t.venue_failing()
        assert why is not None and "binance (partition 1)" in why, why
        for _ in range(12):  # partition 1 is now silent; only its standby and partition 0 beat
            clock[0] += 250
            await t._on_router_heartbeat(hb(1, True, "standby"), None)  # type: ignore[arg-type]
            await t._on_router_heartbeat(hb(0, True), None)  # type: ignore[arg-type]
        why = t.venue_failing()
        assert why is not None and "order-router (partition 1) has sent no heartbeat" in why, why

    asyncio.run(run())
