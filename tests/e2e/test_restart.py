"""End to end: `tbx run` restarts a part that died, with a fresh instance on a fresh connection.

A part dies when its NATS connection is closed for good: the server sends ``-ERR`` (a protocol error) and closes
the connection, and nats-py does not reconnect after that. To make that happen to one part of a running `tbx run`
(the md-feed) and to no other, the test puts a TCP proxy between tbx and the real nats-server that, when told to,
sends that part's connection such an ``-ERR`` and closes it; every other byte passes through untouched."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from bus.embedded import free_port
from tests.e2e.procs import Tbx
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e


async def test_tbx_run_restarts_a_part_whose_connection_was_closed_for_good(nats_url: str, tmp_path: Path) -> None:
    proxy = TcpProxy(nats_url)
    url = await proxy.start()
    port = free_port()
    proc = Tbx(
        ["run"],
        {
            "NATS_URL": url,
            "BUS_PREFIX": "t" + uuid.uuid4().hex[:10],
            "PORT": str(port),
            "DATA_DIR": str(tmp_path / "data"),
            "MARKET_DATA_INTERVAL": "100",
        },
        tmp_path / "tbx.log",
    )
    try:
        await asyncio.to_thread(proc.wait_for_log, r"ready: http://", 90)
        assert proxy.close_client("tbx-md-feed", b"-ERR 'Unknown Protocol Operation'\r\n") == 1
        await asyncio.to_thread(proc.wait_for_log, r"md-feed died after [0-9.]+ s: the NATS connection was closed", 30)
        await asyncio.to_thread(proc.wait_for_log, r"md-feed running again \(instance 2 since the start\)", 60)
        assert len(proxy.clients.get("tbx-md-feed", [])) == 1  # the fresh instance's own new connection
        async with aiohttp.ClientSession() as http:

            async def fresh_books() -> bool:  # the fresh md-feed publishes: the health counts it running
                async with http.get(f"http://127.0.0.1:{port}/api/health") as r:
                    body = await r.json()
                return r.status == 200 and body["actors"]["md-feed"]["status"] == "running"

            await eventually(fresh_books, timeout=30, what="md-feed running again in /api/health")
        assert proc.proc.poll() is None  # the process went on: only the part was restarted
        assert "Traceback" not in proc.text()
    finally:
        try:
            await asyncio.to_thread(proc.terminate, 10)  # (the proxy runs in this loop: never block it)
        finally:
            proc.ensure_stopped()
            await proxy.stop()
    assert proc.proc.returncode == 0, proc.text()[-3000:]
