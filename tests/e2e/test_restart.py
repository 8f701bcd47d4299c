"""End to end: `tbx run` restarts a part that died, with a fresh instance on a fresh connection.

A part dies when its NATS connection is closed for good: the server sends ``-ERR`` (a protocol error) and closes
the connection, and nats-py does not reconnect after that. To make that happen to one part of a running `tbx run`
(the md-feed) and to no other, the test puts a TCP proxy between tbx and the real nats-server that, when told to,
sends that part's connection such an ``-ERR`` and closes it; every other byte passes through untouched."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import aiohttp
import pytest

from bus.embedded import free_port
from tests.e2e.procs import Tbx
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


class KillingProxy:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("nats://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.clients: dict[str, list[asyncio.StreamWriter]] = {}  # connection name -> writers to the client
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    def kill(self, name: str) -> int:
        """Send the live connections named ``name`` a fatal protocol error and close them; how many."""
        writers = [w for w in self.clients.pop(name, []) if not w.is_closing()]
        for w in writers:
            w.write(b"-ERR 'Unknown Protocol Operation'\r\n")
            w.close()
        return len(writers)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while data := await src.read(65536):
                    if from_client and (m := re.search(rb'CONNECT \{[^\r\n]*"name":\s*"([^"]+)"', data)):
                        self.clients.setdefault(m.group(1).decode(), []).append(writer)
                    if not dst.is_closing():
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))


async def test_tbx_run_restarts_a_part_whose_connection_was_closed_for_good(nats_url: str, tmp_path: Path) -> None:
    proxy = KillingProxy(nats_url)
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
        assert proxy.kill("tbx-md-feed") == 1
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
            proxy.stop()
    assert proc.proc.returncode == 0, proc.text()[-3000:]
