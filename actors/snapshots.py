"""Snapshots of an actor's state in JetStream KV, so a restart does not replay years of events.

A snapshot is compressed and written in chunks (KV values are bounded by the server's max payload)
into one of two fixed slots, the one the current manifest does not name; the manifest, naming the
slot, its chunk count and checksum, is written last. A reader only ever sees a complete snapshot: the
previous one until the new manifest lands. Keys are overwritten, never deleted, so the bucket (one
revision per key) does not grow with every snapshot.
"""

from __future__ import annotations

import hashlib
import zlib

import msgspec
import nats.js.errors
from nats.js.kv import KeyValue

CHUNK = 256 * 1024


class Manifest(msgspec.Struct):
    generation: str  # the slot: "a" or "b"
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
        chunks = [blob[i : i + CHUNK] for i in range(0, len(blob), CHUNK)] or [b""]
        old = await self._manifest()
        slot = "b" if old is not None and old.generation == "a" else "a"
        for i, chunk in enumerate(chunks):
            await self.kv.put(f"{self.name}.{slot}.{i}", chunk)
        manifest = Manifest(slot, len(chunks), hashlib.sha256(data).hexdigest(), len(data))
        await self.kv.put(f"{self.name}.manifest", msgspec.json.encode(manifest))

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
