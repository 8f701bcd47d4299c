"""Order ids unique across restarts and across several router instances: a per-day counter in the
JetStream KV bucket STATE, reserved in blocks with compare-and-set."""

from __future__ import annotations

import asyncio

import nats.js.errors
from nats.js.kv import KeyValue

from domain.ids import day_key, order_id
from schemas.messages import now_ms


class OrderIds:
    def __init__(self, kv: KeyValue, block: int = 50) -> None:
        self.kv = kv
        self.block = block
        self.day = ""
        self.next_n = 0
        self.limit = 0  # exclusive
        self._reserving = asyncio.Lock()  # one reservation at a time: callers beside it wait for its block

    async def next(self) -> str:
        day = day_key(now_ms())
        while day != self.day or self.next_n >= self.limit:
            async with self._reserving:
                if day != self.day or self.next_n >= self.limit:  # (not reserved by the caller before us)
                    await self._reserve(day)
        n = self.next_n
        self.next_n += 1
        return order_id(day, n)

    async def _reserve(self, day: str) -> None:
        key = f"orderseq.{day}"
        for _ in range(100):
            try:
                entry = await self.kv.get(key)
                last, rev = int(entry.value or b"0"), entry.revision
            except nats.js.errors.KeyNotFoundError:
                last, rev = 0, None
            new_last = last + self.block
            try:
                if rev is None:
                    await self.kv.create(key, str(new_last).encode())
                else:
                    await self.kv.update(key, str(new_last).encode(), last=rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another router reserved meanwhile: read again
            self.day, self.next_n, self.limit = day, last + 1, new_last + 1
            return
        raise RuntimeError(f"could not reserve order ids for {day}: too much contention")
