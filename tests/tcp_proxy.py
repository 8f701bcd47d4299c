"""A TCP proxy in front of a real server (the nats-server): every byte passes untouched until a test tells it
otherwise. It can cut every connection (and take no new one until ``restore``), close the connections of one
client (by the ``name`` of its NATS CONNECT, with last words first), or cut a connection the moment the server
sends it some bytes (a publish ack lost with its connection)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

_CONNECT_NAME = re.compile(rb'CONNECT \{[^\r\n]*"name":\s*"([^"]+)"')


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter

    def abort(self) -> None:
        for w in (self.client, self.server):
            w.transport.abort()


class TcpProxy:
    def __init__(self, upstream: str) -> None:
        """``upstream``: ``nats://host:port`` (or ``host:port``) of the real server."""
        host, port = upstream.removeprefix("nats://").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.port = 0  # ours, once started (kept by ``restore``)
        self.server: asyncio.Server | None = None
        self.links: list[_Link] = []
        self.clients: dict[str, list[asyncio.StreamWriter]] = {}  # CONNECT name -> writers to that client
        self.cut_on: bytes | None = None  # armed: the next server chunk holding these bytes cuts its connection
        self.cuts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.url

    async def cut(self) -> None:
        """Every connection aborted (no goodbye: as a network failure looks) and no new one taken."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for link in self.links:
            link.abort()
        self.links.clear()

    async def restore(self) -> None:
        """Take connections again, on the same port."""
        await self.start()

    def close_client(self, name: str, last_words: bytes = b"") -> int:
        """Send the live connections of client ``name`` ``last_words`` and close them; how many there were."""
        writers = [w for w in self.clients.pop(name, []) if not w.is_closing()]
        for w in writers:
            w.write(last_words)
            w.close()
        return len(writers)

    def cut_when_server_sends(self, marker: bytes) -> None:
        """Arm: the next chunk the server sends that holds ``marker`` is not delivered; its connection is cut."""
        self.cut_on = marker

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        link = _Link(writer, up_writer)
        self.links.append(link)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, from_server: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not from_server and (m := _CONNECT_NAME.search(data)):
                        self.clients.setdefault(m.group(1).decode(), []).append(writer)
                    if from_server and self.cut_on is not None and self.cut_on in data:
                        self.cut_on = None
                        self.cuts += 1
                        break
                    if dst.is_closing():
                        break
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, up_writer):
                    w.close()

        try:
            await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        finally:
            with contextlib.suppress(ValueError):
                self.links.remove(link)
