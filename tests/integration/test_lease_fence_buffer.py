"""A write that passed the fence while NATS was unreachable must never be sent later (issue 19 review, finding 1).

Instance A reaches NATS through a TCP proxy that is cut and restored; standby B reaches it directly and takes over
while A is cut off. Whatever A tried to write while cut off must not be stored once A reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from nats.js import api

from bus.client import LEASE_HEADER, Bus
from bus.lease import LeaseDriver
from schemas.subjects import Subjects
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

FAILOVER_MS = 1000


def _now(fn: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return fn()

    return check


async def test_a_write_made_while_cut_off_is_not_sent_after_a_standby_took_over(nats_url, prefix, make_bus):
    subjects = Subjects(prefix)
    b: Bus = await make_bus("B")
    stream = f"{prefix.upper()}_PROBE"
    await b.js.add_stream(api.StreamConfig(name=stream, subjects=[f"{prefix}.probe.>"]))
    proxy = TcpProxy(nats_url)
    a = await Bus.connect(await proxy.start(), name="A", subjects=subjects)
    lost: list[str] = []
    la = LeaseDriver(a, role="r", actor="r", partition=None, holder="A", failover_ms=FAILOVER_MS, on_lost=lost.append)
    lb = LeaseDriver(b, role="r", actor="r", partition=None, holder="B", failover_ms=FAILOVER_MS, on_lost=lost.append)
    a.set_fence(la.check)
    b.set_fence(lb.check)
    tasks: list[asyncio.Task[None]] = []
    try:
        await la.acquire()
        tasks.append(asyncio.create_task(la.run()))
        b_acquire = asyncio.create_task(lb.acquire())
        tasks.append(b_acquire)
        await eventually(_now(lambda: lb.lease.seen_since is not None), timeout=10)  # B stands by

        await proxy.cut()  # A loses NATS, B still reaches it
        await eventually(_now(lambda: not a.nc.is_connected), timeout=10)
        a.check_fence()  # A's fence is still open: its last renewal is recent
        # a handler of A writes now, inside its fence (one try): refused or timed out are both fine, as long as
        # it is never stored later
        with contextlib.suppress(Exception):
            await a.js.publish(f"{prefix}.probe.a", b"written by A while cut off", timeout=0.5)

        await asyncio.wait_for(b_acquire, 30)  # B takes over
        tasks.append(asyncio.create_task(lb.run()))
        await b.js.publish(f"{prefix}.probe.b", b"written by B, the holder")

        await proxy.restore()  # A reaches NATS again: anything nats-py kept would be sent now
        await eventually(_now(lambda: a.nc.is_connected), timeout=30)
        await a.nc.flush(timeout=5)  # the server has read all A sent before this
        await b.js.publish(f"{prefix}.probe.b", b"marker, after A is back")

        info = await b.js.stream_info(stream)
        stored = [await b.js.get_msg(stream, seq) for seq in range(1, (info.state.last_seq or 0) + 1)]
        assert [m.data for m in stored] == [b"written by B, the holder", b"marker, after A is back"]
        assert all((m.headers or {}).get(LEASE_HEADER, "").startswith("r:") for m in stored)
    finally:
        for t in tasks:
            t.cancel()
        await proxy.stop()
        await a.close()


async def test_a_fenced_bus_drops_what_is_left_unsent_at_a_disconnect(make_bus):
    """A publish queued in nats-py's buffer just before the connection died is not sent at the reconnect."""
    bus: Bus = await make_bus("fenced")
    bus.set_fence(lambda: "r:1")
    bus.nc._pending.append(b"PUB x 1\r\na\r\n")  # left unsent when the connection died
    bus.nc._pending_data_size += 12
    bus._drop_unsent()
    assert bus.nc._pending == [] and bus.nc._pending_data_size == 0
    assert bus.nc._max_pending_size == 0
