"""Hot standbys (issue 19): the order-router run twice as real processes (`tbx actor order-router`), the rest of
the service in this process. Exactly one instance is active; a clean stop hands over at once; kill -9 of the
active leaves the standby serving within FAILOVER_MS plus its rebuild, under load, with books equal to the fill
log; an active frozen (SIGSTOP) until a standby took over writes nothing when it wakes and steps down; a lone
instance restarted after kill -9 waits out the dead one's lease."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bus.client import LEASE_HEADER, Bus
from bus.codec import decode
from bus.errors import RequestFailed
from config.settings import load_settings
from domain.lease import timings
from schemas.messages import Fill, Heartbeat, OrderReply
from tests.e2e.procs import Tbx
from tests.helpers import eventually
from tests.integration.test_actors import System, filled, find, order, portfolio

pytestmark = pytest.mark.e2e

FAILOVER_MS = 1000
ROLE = "order-router"
ENV = {
    "MARKET_DATA_INTERVAL": "50",
    "PAIRS": "BTC_USDT,ETH_USDT",
    "MAX_POSITION_SIZE": "1",
    "MAX_DAILY_LOSS": "1",
    "PRICE_BAND_PERCENT": "0",
    "FAILOVER_MS": str(FAILOVER_MS),
}
READY = r"ready: order-router"


@pytest.fixture
async def client(make_bus) -> Bus:
    return await make_bus("client")


@pytest.fixture
async def rest(nats_url: str, prefix: str) -> AsyncIterator[System]:
    """Every actor but the order-router, in this process (the synthetic feed prices the paper venue)."""
    sut = System(nats_url, load_settings({"NATS_URL": nats_url, "BUS_PREFIX": prefix, **ENV}))
    await sut.start("md-feed", "portfolio-ledger", "fill-tracker", "risk-gate", "signal-intake")
    try:
        yield sut
    finally:
        await sut.stop()


class Routers:
    """`tbx actor order-router` processes, and the heartbeats of every instance."""

    def __init__(self, nats_url: str, prefix: str, tmp: Path) -> None:
        self.env = {"NATS_URL": nats_url, "BUS_PREFIX": prefix, **ENV}
        self.tmp = tmp
        self.procs: list[Tbx] = []
        self.beats: dict[str, Heartbeat] = {}

    def start(self) -> Tbx:
        p = Tbx(["actor", ROLE], self.env, self.tmp / f"router{len(self.procs)}.log")
        self.procs.append(p)
        return p

    async def on_beat(self, hb: Heartbeat, _env: object) -> None:
        self.beats[hb.instance] = hb

    def fresh(self, role: str) -> list[Heartbeat]:
        now = time.time() * 1000
        return [b for b in self.beats.values() if b.role == role and now - b.ts < 1500 and b.status != "stopping"]

    def stop_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(Exception):
                if p.proc.poll() is None:
                    p.proc.send_signal(signal.SIGCONT)
            p.ensure_stopped()


@pytest.fixture
async def routers(nats_url: str, prefix: str, tmp_path: Path, client: Bus) -> AsyncIterator[Routers]:
    r = Routers(nats_url, prefix, tmp_path)
    await client.subscribe(client.subjects.health(ROLE), Heartbeat, r.on_beat)
    try:
        yield r
    finally:
        r.stop_all()


async def wait_log(p: Tbx, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    return await asyncio.to_thread(p.wait_for_log, pattern, timeout)


async def submit(client: Bus, coid: str) -> None:
    reply = await client.request(client.subjects.orders_submit, order(coid, "0.001"), OrderReply, timeout=10)
    assert reply.ok, reply


async def submit_retrying(client: Bus, coid: str, tries: int = 4) -> None:
    """Again with the same client order id when unanswered (harmless: the same id never makes a second order)."""
    for attempt in range(tries):
        try:
            reply = await client.request(client.subjects.orders_submit, order(coid, "0.001"), OrderReply, timeout=5)
        except RequestFailed:
            if attempt == tries - 1:
                raise
            continue
        assert reply.ok or reply.order is not None, reply
        return


async def all_filled(client: Bus, coids: list[str], timeout: float) -> None:
    async def done() -> bool:
        for c in coids:
            if not await filled(client, c):
                return False
        return True

    try:
        await eventually(done, timeout=timeout, every=0.2, what=f"{len(coids)} orders filled")
    except AssertionError:
        states = {c: (o.status.value if (o := await find(client, c)) else None) for c in coids}
        raise AssertionError(f"not all filled: {[(c, st) for c, st in states.items() if st != 'filled']}") from None


async def stream_msgs(client: Bus, stream: str) -> list[tuple[int, dict[str, str], int, bytes]]:
    """(seq, headers, stored at epoch ms, data) of every message of ``stream``."""
    info = await client.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq or 1, (info.state.last_seq or 0) + 1):
        try:
            m = await client.js.get_msg(stream, seq)
        except Exception:
            continue  # (a KV value overwritten since: history 1)
        stored = int(m.time.timestamp() * 1000) if m.time else 0  # type: ignore[attr-defined]
        out.append((seq, dict(m.headers or {}), stored, m.data or b""))
    return out


def lease_rev(headers: dict[str, str]) -> int | None:
    value = headers.get(LEASE_HEADER, "")
    role, _, rev = value.rpartition(":")
    return int(rev) if role == ROLE and rev.isdigit() else None


async def test_one_active_a_clean_stop_hands_over_at_once_and_kill_9_under_load_loses_nothing(
    rest: System, routers: Routers, client: Bus
) -> None:
    t = timings(FAILOVER_MS)
    a = routers.start()
    await wait_log(a, READY)
    b = routers.start()
    await wait_log(b, r"standby: order-router is held by")
    await eventually(
        lambda: _async(len(routers.fresh("active")) == 1 and len(routers.fresh("standby")) == 1),
        what="one active and one standby heartbeating",
    )
    assert "ready: order-router" not in b.text()  # the standby serves nothing
    coids = [f"ha-{i}" for i in range(10)]
    for c in coids:
        await submit(client, c)
    await all_filled(client, coids, 20)

    # a clean stop deletes the lease: the standby takes it at once (a create, no wait for the lease time)
    t0 = time.monotonic()
    a.terminate(10)
    await wait_log(b, READY)
    handover = time.monotonic() - t0
    print(f"\nclean stop -> standby ready: {handover * 1000:.0f} ms")
    assert re.search(r"lease order-router acquired: revision \d+ \(created\)", b.text())

    # kill -9 under load: a third instance is the standby; orders keep coming in while b dies
    c = routers.start()
    await wait_log(c, r"standby: order-router is held by")
    submitted: list[str] = []
    attempted: list[str] = []
    stop_load = asyncio.Event()

    async def load() -> None:
        i = 0
        while not stop_load.is_set():
            coid = f"load-{i}"
            i += 1
            attempted.append(coid)
            with contextlib.suppress(Exception):  # unanswered: sent again below (the same id: one order)
                await submit(client, coid)
                submitted.append(coid)
            await asyncio.sleep(0.01)

    loader = asyncio.create_task(load())
    try:
        await eventually(lambda: _async(len(submitted) >= 40), timeout=30, what="load before the kill")
        t_kill = time.monotonic()
        b.kill()
        await wait_log(c, READY, timeout=30)
        failover = time.monotonic() - t_kill
        n_at_ready = len(submitted)
        await eventually(lambda: _async(len(submitted) >= n_at_ready + 40), timeout=30, what="load after the kill")
    finally:
        stop_load.set()
        await loader
    print(f"kill -9 -> standby ready (detection + rebuild): {failover * 1000:.0f} ms (FAILOVER_MS={FAILOVER_MS})")
    assert re.search(r"lease order-router acquired: revision \d+ \(taken over from revision \d+\)", c.text())
    assert failover >= t.takeover_ms / 1000 * 0.9  # it waited the dead lease out, from its last renewal
    assert failover < FAILOVER_MS / 1000 + 10  # generous: a noisy machine; the README has measured numbers
    first_after = f"load-{n_at_ready + 1}"
    await eventually(lambda: filled(client, first_after), timeout=20, what="an order sent after the failover filled")
    for coid in set(attempted) - set(submitted):
        await submit_retrying(client, coid)
    submitted = attempted
    # orders the dead instance had in hand come back after the consumer's ack wait (30 s)
    await all_filled(client, [*coids, *submitted], 50)

    fills = [decode(d, Fill) for _, _, _, d in await stream_msgs(client, client.subjects.s_fills)]
    by_order = Counter(f.client_order_id for f in fills)
    assert set(by_order) == {*coids, *submitted}  # none lost
    assert len({f.fill_id for f in fills}) == len(fills)  # none doubled
    want_qty = sum((f.quantity for f in fills), Decimal(0))
    want_cash = Decimal(50000) - sum((f.quantity * f.price + f.fee for f in fills), Decimal(0))

    async def books():
        snap = await portfolio(client)
        return snap if snap.fills_applied == len(fills) else None

    snap = await eventually(books, timeout=20, what="the ledger booked every fill")
    assert sum((p.quantity for p in snap.positions), Decimal(0)) == want_qty
    assert next(x for x in snap.balances if x.currency == "USDT").total == want_cash


async def test_a_frozen_active_writes_nothing_after_the_takeover_and_steps_down(
    rest: System, routers: Routers, client: Bus
) -> None:
    a = routers.start()
    await wait_log(a, READY)
    b = routers.start()
    await wait_log(b, r"standby: order-router is held by")
    before = [f"pre-{i}" for i in range(5)]
    for coid in before:
        await submit(client, coid)
    await all_filled(client, before, 20)
    await asyncio.sleep(0.3)  # quiet: nothing of a's on its way

    t_stop = int(time.time() * 1000)
    a.proc.send_signal(signal.SIGSTOP)
    try:
        m = await wait_log(b, r"lease order-router acquired: revision (\d+) \(taken over", timeout=30)
        await wait_log(b, READY)
        taken_at = int(m.group(1))
        during = [f"frozen-{i}" for i in range(10)]
        # some of what they cause is delivered to a's socket (its share of the durable consumer and of the
        # order-router's query subscriptions): it has that when it wakes
        sending = [asyncio.create_task(submit_retrying(client, coid)) for coid in during]
        await asyncio.sleep(0.5)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await asyncio.gather(*sending)
    # it wakes, its writes are refused (fence), its renewal is refused: the instance dies, and its supervisor
    # starts a fresh one, which stands by behind the new active (the process itself goes on)
    await wait_log(a, r"lease order-router lost: the lease is held by", timeout=20)
    await wait_log(a, r"order-router cannot go on: lease lost", timeout=20)
    await wait_log(a, r"order-router stands by \(another instance is active\)", timeout=30)
    assert a.proc.poll() is None
    for coid in during:  # each reaches the new active (those a had in hand: handed back when it woke)
        await wait_log(b, rf"\({coid}\) submitted", timeout=20)

    async def any_filled() -> bool:
        return any([await filled(client, c) for c in during])

    # (what a had in hand and never handed back - buffered when it stopped - comes back after the consumer's ack
    # wait: README "High availability"; the kill -9 test waits for all)
    await eventually(any_filled, timeout=20, what="an order of the new active filled")

    s = client.subjects
    old, new = 0, 0
    for stream in (s.s_orders, s.s_hops, f"KV_{s.kv_paper}", f"KV_{s.kv_state}"):
        for seq, headers, stored, _ in await stream_msgs(client, stream):
            rev = lease_rev(headers)
            if rev is None:
                continue
            if rev < taken_at:  # written by a
                old += 1
                assert stored <= t_stop + 5, f"{stream} #{seq} written by the deposed active after it froze"
            else:
                new += 1
    assert old > 0 and new > 0  # both wrote, each while it held the lease


async def test_a_lone_instance_restarted_after_kill_9_waits_out_the_dead_lease(
    rest: System, routers: Routers, client: Bus
) -> None:
    t = timings(FAILOVER_MS)
    a = routers.start()
    await wait_log(a, READY)
    a.kill()
    t_kill = time.monotonic()
    a2 = routers.start()
    await wait_log(a2, READY)
    took = time.monotonic() - t_kill
    print(f"\nrestart after kill -9 -> ready: {took * 1000:.0f} ms")
    assert "standby: order-router is held by" in a2.text()
    assert re.search(r"acquired: revision \d+ \(taken over from revision \d+\)", a2.text())
    assert took >= t.takeover_ms / 1000  # waited the dead lease out: never two writers
    await submit(client, "after-restart")
    await eventually(lambda: filled(client, "after-restart"), timeout=20, what="the order filled")


async def _async(value: object) -> object:
    return value
