"""The lease in one process, over the real nats-server: a second instance waits as a standby (heartbeats
``role: standby``), every stream and KV write of the active carries ``Tbx-Lease``, and once another instance has
the key the deposed one dies and writes nothing (stream or KV)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from actors.fill_tracker import FillTracker
from bus.client import LEASE_HEADER, Bus
from bus.errors import LeaseLost
from config.settings import load_settings
from schemas.messages import Heartbeat, LeaseRecord, RiskAlert
from schemas.subjects import Subjects
from tests.helpers import eventually


async def _tracker(nats_url: str, prefix: str) -> FillTracker:
    settings = load_settings({"NATS_URL": nats_url, "BUS_PREFIX": prefix, "FAILOVER_MS": "600"})
    bus = await Bus.connect(nats_url, name="fill-tracker", subjects=Subjects(prefix))
    await bus.ensure_layout()
    return FillTracker(settings, bus)


async def test_standby_then_takeover_on_stop_and_a_deposed_active_writes_nothing(nats_url, prefix, make_bus):
    client = await make_bus("client")
    beats: dict[str, Heartbeat] = {}

    async def on_beat(hb: Heartbeat, _env: object) -> None:
        beats[hb.instance] = hb

    await client.subscribe(client.subjects.health("fill-tracker"), Heartbeat, on_beat)
    a = await _tracker(nats_url, prefix)
    await a.start()
    assert a.role == "fill-tracker" and a.lease is not None and a.lease.active
    b = await _tracker(nats_url, prefix)
    starting_b = asyncio.create_task(b.start())
    try:
        await eventually(lambda: _v(beats.get(b.instance) and beats[b.instance].role == "standby"), what="standby")
        assert beats[b.instance].status == "standby" and not starting_b.done()
        await eventually(lambda: _v(beats.get(a.instance) and beats[a.instance].role == "active"), what="active")

        # the active's writes carry the lease; the standby's are refused
        seq = await a.bus.js_publish(a.subjects.risk_events, RiskAlert(severity="warning", code="T", message="m", ts=1))
        got = await client.js.get_msg(client.subjects.stream_name("RISK"), seq)
        assert got.headers is not None and got.headers[LEASE_HEADER] == f"fill-tracker:{a.lease.revision}"
        with pytest.raises(LeaseLost):
            await b.bus.js_publish(b.subjects.risk_events, RiskAlert(severity="warning", code="T", message="m", ts=1))

        # someone else takes the key (as a standby would after a stall of ours): a dies, writes nothing more
        kv = await client.kv(client.subjects.kv_lease("fill-tracker"))
        entry = await kv.get("fill-tracker")
        record = msgspec.json.decode(entry.value or b"", type=LeaseRecord)
        intruder = msgspec.structs.replace(record, holder="intruder")
        await kv.update("fill-tracker", msgspec.json.encode(intruder), last=entry.revision)
        reason = await asyncio.wait_for(a.died, 5)
        assert reason.startswith("lease lost") and "intruder" in reason
        with pytest.raises(LeaseLost):
            await a.bus.js_publish(a.subjects.risk_events, RiskAlert(severity="warning", code="T", message="m", ts=2))
        state = await a.bus.kv(a.subjects.kv_state)
        with pytest.raises(LeaseLost):
            await state.put("x", b"1")  # KV writes of its own state are fenced too
        with pytest.raises(LeaseLost):
            a.fence()

        # the intruder goes away cleanly (deletes the key): the standby takes over at once
        intruder_rev = (await kv.get("fill-tracker")).revision
        await kv.delete("fill-tracker", last=intruder_rev)
        await asyncio.wait_for(starting_b, 5)
        assert b.lease is not None and b.lease.active and b.status == "running"
    finally:
        await a.stop()
        if not starting_b.done():
            starting_b.cancel()
        await b.stop()


async def _v(value: object) -> object:
    return value


async def test_an_aborted_instance_renews_its_lease_no_more(nats_url, prefix):
    """Regression: a supervisor aborts an instance whose stop was cut short (tbx/supervisor.py) and starts a fresh
    one; the aborted instance's renewals ran on (they are not one of its background tasks), so it kept the lease for
    ever and every fresh instance stood by behind a dead one. Aborted, its renewals end and a standby takes over
    once the lease runs out."""
    a = await _tracker(nats_url, prefix)
    await a.start()
    b = await _tracker(nats_url, prefix)
    starting_b = asyncio.create_task(b.start())
    try:
        await eventually(lambda: _v(b.standing_by.is_set()), what="b stands by")
        await a.abort()  # no stop first: as after a stop cut short
        assert a._lease_task is not None and a._lease_task.done()
        await asyncio.wait_for(starting_b, 10)  # FAILOVER_MS=600: the lease runs out, b takes it
        assert b.lease is not None and b.lease.active
    finally:
        if not starting_b.done():
            starting_b.cancel()
        await b.stop()
