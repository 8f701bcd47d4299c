"""What a failover costs, per actor: a private nats-server, every actor in this process, a few thousand orders
through them (paper venue, synthetic market data); then for each actor a standby instance is started, the active
one dies without a word (its connection dropped, no release: like kill -9) and the time until the standby is
serving is measured, split into detection (waiting the dead lease out, until the standby holds it) and rebuild
(its ``on_start``: replays, snapshots). Prints one table. 127.0.0.1 only, bounded.

    .venv/bin/python -m bench.failover [--orders 3000] [--failover-ms 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from loguru import logger

from actors.base import Actor
from bus.client import Bus
from bus.embedded import EmbeddedNats, free_port
from config.settings import load_settings
from schemas.messages import OrderReply, OrderRequest
from schemas.subjects import Subjects
from tbx.runner import ACTOR_CLASSES


async def die(actor: Actor) -> None:
    """Gone without a word: tasks stopped, the connection dropped, the lease not released."""
    if actor._lease_task is not None:
        actor._lease_task.cancel()
    for task in list(actor._tasks):
        task.cancel()
    await actor.bus.nc.close()


async def main(orders: int, failover_ms: int) -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", port=free_port())
        url = server.start()
        try:
            settings = load_settings(
                {
                    "NATS_URL": url,
                    "BUS_PREFIX": "bench",
                    "PAIRS": "BTC_USDT,ETH_USDT",
                    "MARKET_DATA_INTERVAL": "100",
                    "MAX_POSITION_SIZE": "1",
                    "MAX_DAILY_LOSS": "1",
                    "PRICE_BAND_PERCENT": "0",
                    "FAILOVER_MS": str(failover_ms),
                }
            )
            subjects = Subjects("bench")

            async def instance(name: str) -> Actor:
                bus = await Bus.connect(url, name=name, subjects=subjects)
                await bus.ensure_layout()
                return ACTOR_CLASSES[name](settings, bus)

            running: dict[str, Actor] = {}
            for name in ACTOR_CLASSES:
                running[name] = await instance(name)
                await running[name].start()
            client = await Bus.connect(url, name="bench", subjects=subjects)
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            sem = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                side = "buy" if i % 2 == 0 else "sell"
                req = OrderRequest(
                    client_order_id=f"b-{i}",
                    pair="BTC_USDT" if i % 3 else "ETH_USDT",
                    side=side,  # type: ignore[arg-type]
                    quantity=Decimal("0.001"),
                )
                async with sem:
                    for _ in range(5):
                        with contextlib.suppress(Exception):
                            await client.request(subjects.orders_submit, req, OrderReply, timeout=10)
                            return

            await asyncio.gather(*(one(i) for i in range(orders)))
            await asyncio.sleep(2.0)  # the last fills booked
            print(f"{orders} orders through the service in {time.monotonic() - t0:.1f} s", file=sys.stderr)

            rows = []
            for name in ACTOR_CLASSES:
                standby = await instance(name)
                starting = asyncio.create_task(standby.start())
                while standby.status != "standby":
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # it has read the key: a standby like any other
                died = time.monotonic()
                await die(running[name])
                while standby.lease is None or not standby.lease.active:
                    await asyncio.sleep(0.001)
                detected = time.monotonic()
                await starting
                served = time.monotonic()
                running[name] = standby
                rows.append((name, (detected - died) * 1000, (served - detected) * 1000, (served - died) * 1000))
            print(f"\nfailover after {orders} orders, FAILOVER_MS={failover_ms} (ms)")
            print(f"{'actor':<18}{'detection':>11}{'rebuild':>10}{'total':>9}")
            for name, det, reb, tot in rows:
                print(f"{name:<18}{det:>11.0f}{reb:>10.0f}{tot:>9.0f}")
            for actor in reversed(list(running.values())):
                with contextlib.suppress(Exception):
                    await actor.stop()
            await client.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--orders", type=int, default=3000)
    p.add_argument("--failover-ms", type=int, default=2000)
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.orders, a.failover_ms)))
