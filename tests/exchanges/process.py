"""A local test exchange run as its own process: started, its URL printed, stopped on SIGINT / SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Exchange(Protocol):
    async def start(self) -> str: ...

    async def stop(self) -> None: ...


async def serve_until_signal(exchange: Exchange) -> None:
    url = await exchange.start()
    print(url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await exchange.stop()
