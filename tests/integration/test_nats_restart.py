"""A nats-server killed with SIGKILL and restarted (same port, same JetStream folder) under load.

Each test runs its own nats-server (not the session's), so it can kill it; every wait is bounded and the
server is stopped by its pid at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path

import aiohttp
import pytest

from bus.client import Bus, Envelope
from bus.embedded import EmbeddedNats, free_port
from schemas.messages import Fill
from schemas.subjects import Subjects
from tests.conftest import pid_alive
from tests.helpers import eventually, fill


@dataclass
class Restartable:
    """A private nats-server that a test may kill -9 and start again on the same port and folder."""

    data_dir: Path
    port: int
    server: EmbeddedNats | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = EmbeddedNats(self.data_dir, port=self.port)
        self.server.start()

    def kill9(self) -> None:
        assert self.server is not None and self.server.proc is not None
        proc = self.server.proc
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert not pid_alive(proc.pid)
        self.server.proc = None

    def stop(self) -> None:
        if self.server is not None:
            pid = self.server.pid
            self.server.stop()
            assert pid is None or not pid_alive(pid)


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[Restartable]:
    nats = Restartable(tmp_path / "nats", free_port())
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


async def restart(nats: Restartable) -> None:
    """kill -9, then start again (off the event loop: start() polls the port)."""
    nats.kill9()
    await asyncio.sleep(0.3)  # let every client notice the disconnect
    await asyncio.to_thread(nats.start)


async def wait_connected(*buses: Bus, timeout: float = 15.0) -> float:
    """Until every bus is connected again; returns the moment (monotonic)."""

    async def all_connected() -> bool:
        return all(b.nc.is_connected for b in buses)

    await eventually(all_connected, timeout=timeout, every=0.01, what="every client reconnected")
    return time.monotonic()


# -- the bus -------------------------------------------------------------------------------------------
async def test_a_followed_stream_resumes_at_once_after_the_server_restarts(own_nats: Restartable):
    """nats-py re-creates an ordered consumer the restarted server lost only after two missed idle
    heartbeats (10 s); the bus resumes it on the reconnect: a fill stored after the restart is handled
    within a second, and nothing stored before is handled twice."""
    subjects = Subjects("r" + uuid.uuid4().hex[:8])
    writer = await Bus.connect(own_nats.url, name="writer", subjects=subjects)
    reader = await Bus.connect(own_nats.url, name="reader", subjects=subjects)
    try:
        await writer.ensure_layout()
        seen: list[str] = []

        async def on_fill(f: Fill, env: Envelope) -> None:
            seen.append(f.fill_id)

        for i in range(3):
            await writer.js_publish(subjects.fills("BTC_USDT"), fill(f"before-{i}", "buy", "1", "100"))
        await reader.replay(stream=subjects.s_fills, subject=subjects.fills(), type_=Fill, handler=on_fill)
        assert seen == ["before-0", "before-1", "before-2"] and reader.in_sync

        await restart(own_nats)
        assert not reader.in_sync  # disconnected: what it folds may be behind
        await wait_connected(writer, reader)
        assert await reader.wait_in_sync(5.0), "the followed stream was not resumed"
        t0 = time.monotonic()
        await writer.js_publish(subjects.fills("BTC_USDT"), fill("after-0", "buy", "1", "100"))

        async def got() -> bool:
            return "after-0" in seen

        await eventually(got, timeout=5.0, every=0.01, what="the fill stored after the restart")
        # generous on a noisy machine, far below the 10 s of two missed heartbeats
        assert time.monotonic() - t0 < 3.0
        assert seen == ["before-0", "before-1", "before-2", "after-0"]
    finally:
        await reader.close()
        await writer.close()
