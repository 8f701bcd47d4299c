"""Snapshots of an actor's state in JetStream KV, so a restart does not replay years of events.

A snapshot is compressed and written in chunks (KV values are bounded by the server's max payload)
under a fresh generation id; the manifest, naming the generation, its chunk count and checksum, is
written last. A reader only ever sees a complete snapshot: the previous one until the new manifest
lands. Old generations are purged afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
import zlib

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

CHUNK = 256 * 1024


class Manifest(msgspec.Struct):
    generation: str
    chunks: int
    sha256: str
    size: int


class SnapshotStore:
    def __init__(self, kv: KeyValue, name: str) -> None:
        self.kv = kv
        self.name = name

    async def _manifest(self) -> Manifest | None:
        try:
            entry = await self.kv.get(f"{self.name}.manifest")
        except nats.js.errors.KeyNotFoundError:
            return None
        return msgspec.json.decode(entry.value, type=Manifest) if entry.value else None

    async def save(self, data: bytes) -> None:
        blob = zlib.compress(data, 6)
        gen = uuid.uuid4().hex[:12]
        chunks = [blob[i : i + CHUNK] for i in range(0, len(blob), CHUNK)] or [b""]
        for i, chunk in enumerate(chunks):
            await self.kv.put(f"{self.name}.{gen}.{i}", chunk)
        old = await self._manifest()
        manifest = Manifest(gen, len(chunks), hashlib.sha256(data).hexdigest(), len(data))
        await self.kv.put(f"{self.name}.manifest", msgspec.json.encode(manifest))
        if old is not None and old.generation != gen:
            for i in range(old.chunks):
                with contextlib.suppress(Exception):
                    await self.kv.purge(f"{self.name}.{old.generation}.{i}")

    async def load(self) -> bytes | None:
        """The latest complete snapshot, or None (none yet, or unreadable: the caller rebuilds)."""
        m = await self._manifest()
        if m is None:
            return None
        parts = []
        for i in range(m.chunks):
            try:
                parts.append((await self.kv.get(f"{self.name}.{m.generation}.{i}")).value or b"")
            except nats.js.errors.KeyNotFoundError:
                return None
        try:
            data = zlib.decompress(b"".join(parts))
        except zlib.error:
            return None
        return data if hashlib.sha256(data).hexdigest() == m.sha256 else None
