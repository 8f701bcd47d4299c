"""Issue 19, "no stage unavailable longer than 3 s after any single kill": what a NATS node's death costs the lease and
the follows, on a real 3-node cluster (bus/cluster.py).

* The leases: each role has a bucket of its own (``<PREFIX>_LEASES_<role>``). Killing the node that leads one role's
  bucket closes that role's fence for about JetStream's leader election (4-9 s timeout in nats-server) and no other
  role's: with the single ``<PREFIX>_LEASES`` bucket of before, every actor stopped writing.
* The follows (``Bus.replay(follow=True)``): an ordered consumer dies with its node; it is made again as soon as the
  stream has a new leader (the election advisory), not after nats-py's missed-heartbeat check (2 x its heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import nats
from nats.js import api

from bus.client import FOLLOW_HEARTBEAT_S, KV_TIMEOUT_S, Bus, is_transient
from bus.cluster import NatsCluster
from bus.lease import LeaseDriver
from domain.lease import preferred_leader
from schemas.messages import RiskAlert
from schemas.subjects import ACTORS, Subjects
from tests.helpers import eventually

FAILOVER_MS = 2000
# the longest a fence may stay closed when its bucket's leader dies: nats-server's election timeout is 4-9 s (fixed),
# then a renewal (every 0.1 x FAILOVER_MS) has to be confirmed; generous for a loaded 2-core machine
FENCE_GAP_BOUND_S = 20.0


async def _leader(nc: nats.NATS, stream: str) -> str:
    info = await nc.jetstream(timeout=5).stream_info(stream)
    assert info.cluster is not None and info.cluster.leader, f"{stream} has no leader"
    return info.cluster.leader


async def _lead_elsewhere(nc: nats.NATS, stream: str, avoid: set[str]) -> str:
    """Step the leader of ``stream`` down until a node outside ``avoid`` leads it; that node's name."""
    deadline = time.monotonic() + 60
    while True:
        try:
            leader = await _leader(nc, stream)
        except Exception:
            leader = ""  # (an election under way)
        if leader and leader not in avoid:
            return leader
        assert time.monotonic() < deadline, f"{stream}: still led by {leader or 'nobody'}"
        if leader:
            with contextlib.suppress(Exception):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(0.5)


async def _sample_fences(drivers: dict[str, LeaseDriver], closed: dict[str, float], stop: asyncio.Event) -> None:
    """The longest time each driver's fence stayed closed (``check`` raising) while sampled every 20 ms."""
    since: dict[str, float | None] = {r: None for r in drivers}
    while not stop.is_set():
        now = time.monotonic()
        for role, d in drivers.items():
            try:
                d.check()
                if since[role] is not None:
                    closed[role] = max(closed[role], now - (since[role] or now))
                since[role] = None
            except Exception:
                since[role] = since[role] or now
                closed[role] = max(closed[role], now - (since[role] or now))
        await asyncio.sleep(0.02)


async def test_killing_the_leader_of_one_roles_lease_bucket_closes_only_that_roles_fence(tmp_path: Path) -> None:
    subjects = Subjects("stall")
    roles = ("order-router", "fill-tracker")
    with NatsCluster(tmp_path, 3) as cluster:
        names = [n.name for n in cluster.servers]
        admin = await nats.connect(servers=cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        buses = [
            await Bus.connect(cluster.url, name=f"lease-{r}", subjects=subjects, replicas=3, connect_timeout=10)
            for r in roles
        ]
        drivers = {
            r: LeaseDriver(b, role=r, actor=r, partition=None, holder=f"h-{r}", failover_ms=FAILOVER_MS, on_lost=print)
            for r, b in zip(roles, buses, strict=True)
        }
        runs: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        try:
            for d in drivers.values():
                await asyncio.wait_for(d.acquire(), 60)
                runs.append(asyncio.create_task(d.run()))
            victim_bucket, other_bucket = (f"KV_{subjects.kv_lease(r)}" for r in roles)
            # each active asks for its bucket to be led by its role's node (LeaseDriver.place): different nodes
            if victim_bucket != other_bucket:  # (one bucket for every role: one leader, never apart)
                homes = tuple(preferred_leader(r, names, ACTORS) for r in roles)
                assert homes[0] != homes[1]
                await eventually(
                    lambda: _led_by(admin, (victim_bucket, other_bucket), homes), timeout=30, what="placed"
                )
            victim = await _leader(admin, victim_bucket)
            for role, d in drivers.items():  # both renewing, fences open, before the kill
                await eventually(lambda d=d: _ok(d), timeout=15, what=f"{role} may write")
            closed = dict.fromkeys(roles, 0.0)
            sampler = asyncio.create_task(_sample_fences(drivers, closed, stop))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.kill, names.index(victim))
            # the victim role's fence closes (its renewals go unconfirmed) and opens again after the election
            await eventually(lambda: _closed(drivers[roles[0]]), timeout=10, what="the victim role's fence closing")
            await eventually(lambda: _ok(drivers[roles[0]]), timeout=FENCE_GAP_BOUND_S, what="its fence open again")
            await asyncio.sleep(1.0)
            stop.set()
            await sampler
            assert 0 < closed[roles[0]] < FENCE_GAP_BOUND_S, closed
            # the role whose bucket was led elsewhere never stopped writing
            assert closed[roles[1]] == 0.0, closed
            assert all(d.active for d in drivers.values())  # nobody lost a lease: the actives went on
        finally:
            stop.set()
            for d in drivers.values():
                d.abandon()
            for t in runs:
                t.cancel()
            for b in buses:
                await b.abort()
            await admin.close()


async def _led_by(nc: nats.NATS, streams: tuple[str, ...], nodes: tuple[str, ...]) -> bool:
    """Is each stream led by its node?"""
    return all([await _leader(nc, s) == n for s, n in zip(streams, nodes, strict=True)])


async def _ok(d: LeaseDriver) -> bool:
    try:
        d.check()
    except Exception:
        return False
    return True


async def _closed(d: LeaseDriver) -> bool:
    return not await _ok(d)


async def test_a_follow_whose_consumer_died_with_the_stream_leader_resumes_when_a_leader_is_elected(
    tmp_path: Path,
) -> None:
    """Regression: a follow's ordered consumer (R1) lives on the stream leader's node; when that node died, nats-py
    re-made it only after two missed idle heartbeats (10-20 s at its default 5 s), and actors following a stream
    (the ledger, signal-intake, risk-gate) stalled that long. Here the heartbeats are made too slow to help (60 s):
    the follow must resume because the stream elected a leader."""
    subjects = Subjects("follow")
    with NatsCluster(tmp_path, 3) as cluster:
        names = [n.name for n in cluster.servers]
        admin = await nats.connect(servers=cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        writer = await Bus.connect(cluster.url, name="writer", subjects=subjects, replicas=3, connect_timeout=10)
        reader: Bus | None = None
        try:
            await writer.ensure_layout()
            stream = subjects.stream_name("RISK")
            # the reader talks to a node that will live: its own connection is not what this is about
            home = names[0]
            await _lead_elsewhere(admin, stream, {home})
            reader = await Bus.connect(
                cluster.servers[0].url, name="reader", subjects=subjects, replicas=3, connect_timeout=10
            )
            seen: list[str] = []

            async def on_alert(a: RiskAlert, _env: object) -> None:
                seen.append(a.code)

            await writer.js_publish(subjects.risk_events, RiskAlert(severity="warning", code="A0", message="m", ts=1))
            sub = await reader.replay(
                stream=stream, subject=subjects.risk_events, type_=RiskAlert, handler=on_alert, idle_heartbeat=30.0
            )
            assert sub is not None and seen == ["A0"]
            leader = await _consumer_on_the_leader(admin, sub, stream, home)
            await asyncio.to_thread(cluster.kill, names.index(leader))
            t_kill = time.monotonic()
            # stored once the stream has a new leader (the publish retries through the election)
            deadline = time.monotonic() + 30
            while True:
                try:
                    await writer.js_publish(
                        subjects.risk_events, RiskAlert(severity="warning", code="A1", message="m", ts=2), msg_id="a1"
                    )
                    break
                except Exception:
                    assert time.monotonic() < deadline, "the stream elected no leader"
            stored = time.monotonic()
            await eventually(lambda: _v("A1" in seen), timeout=20, what="the follow to deliver A1")
            print(f"stored {stored - t_kill:.1f} s after the kill, followed {time.monotonic() - stored:.1f} s later")
            assert seen == ["A0", "A1"]  # once each, in order
        finally:
            if reader is not None:
                await reader.abort()
            await writer.abort()
            await admin.close()


async def _v(value: object) -> object:
    return value


async def _consumer_on_the_leader(nc: nats.NATS, sub: object, stream: str, home: str) -> str:
    """Until the follow's consumer lives on the stream leader's node, and that is not ``home``: step the stream's
    leader down (its election advisory makes the follow's consumer anew, placed again) and look again. That node."""
    deadline = time.monotonic() + 90
    while True:
        try:
            info = await sub.consumer_info()  # type: ignore[attr-defined]
            host = info.cluster.leader if info.cluster is not None else None
            leader = await _leader(nc, stream)
        except Exception:
            host = leader = None  # (a consumer being made anew, an election)
        if host is not None and host == leader != home:
            return leader
        assert time.monotonic() < deadline, f"the consumer never on the stream leader's node ({host}, {leader})"
        if leader is not None:
            with contextlib.suppress(Exception):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        await asyncio.sleep(1.0)


async def test_every_follow_asks_for_short_idle_heartbeats(nats_url: str, prefix: str, make_bus) -> None:
    """Regression: only md-feed's follow asked for 1 s heartbeats; every other follow had nats-py's 5 s, so a
    consumer lost with its node was noticed 10-20 s later."""
    bus = await make_bus("follower")
    await bus.ensure_layout()
    s = bus.subjects

    async def ignore(_a: RiskAlert, _env: object) -> None:
        return None

    sub = await bus.replay(stream=s.stream_name("RISK"), subject=s.risk_events, type_=RiskAlert, handler=ignore)
    assert sub is not None
    info = await sub.consumer_info()
    assert info.config.idle_heartbeat == FOLLOW_HEARTBEAT_S <= 1.0
    assert info.config.deliver_policy in (api.DeliverPolicy.ALL, api.DeliverPolicy.BY_START_SEQUENCE)


async def test_a_kv_read_while_its_bucket_elects_a_leader_fails_soon_and_is_answered_after(tmp_path: Path) -> None:
    """Regression (make chaos, the stream leader killed): the order-router's KV reads (``Bus.kv``) were made through
    the JetStream context's 10 s timeout; while the bucket elected a leader a read went unanswered, and held its
    handler 10 s, twice in a row in one run (27 s). Each try now fails within KV_TIMEOUT_S (transient: tried again)."""
    subjects = Subjects("kvstall")
    with NatsCluster(tmp_path, 3) as cluster:
        names = [n.name for n in cluster.servers]
        admin = await nats.connect(servers=cluster.url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        bus = await Bus.connect(cluster.servers[0].url, name="kv", subjects=subjects, replicas=3, connect_timeout=10)
        try:
            kv = await bus.kv(subjects.kv_state)
            await kv.put("k", b"v")
            stream = f"KV_{subjects.kv_state}"
            victim = await _lead_elsewhere(admin, stream, {names[0]})  # our own connection stays up
            await asyncio.to_thread(cluster.kill, names.index(victim))
            tries: list[float] = []
            deadline = time.monotonic() + 60
            while True:
                t0 = time.monotonic()
                try:
                    entry = await kv.get("k")
                    tries.append(time.monotonic() - t0)
                    break
                except Exception as e:
                    tries.append(time.monotonic() - t0)
                    assert is_transient(e), e
                    assert time.monotonic() < deadline, "the bucket was never readable again"
                    await asyncio.sleep(0.1)
            print("tries (s):", [round(t, 2) for t in tries])
            assert entry.value == b"v"
            assert max(tries) < KV_TIMEOUT_S + 3.0, tries  # (10 s each before)
        finally:
            await bus.abort()
            await admin.close()
