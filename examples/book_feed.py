"""Feed order books for one pair from outside, as a market-data program would.

    MARKET_DATA=none tbx run                       # the service without its synthetic feed
    NATS_URL=$(cat data/nats.url) python examples/book_feed.py BTC_USDT 60000 --count 100

The paper venue matches against the latest book of tbx.md.book.<pair>, whoever publishes it; run the service
with MARKET_DATA=none so that its own synthetic feed does not publish books for the same pairs. Prices and
sizes are decimal strings. NATS_URL (default nats://127.0.0.1:4222) and BUS_PREFIX (default tbx) come from
the environment. Needs only nats-py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from decimal import Decimal

import nats

NATS_URL = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
PREFIX = os.environ.get("BUS_PREFIX") or "tbx"


def book(pair: str, mid: Decimal, levels: int = 5) -> dict[str, object]:
    step = mid / 10_000  # 1 bp between levels
    return {
        "pair": pair,
        "bids": [[str(mid - step * (i + 1)), "1.5"] for i in range(levels)],  # best (highest) first
        "asks": [[str(mid + step * (i + 1)), "1.5"] for i in range(levels)],  # best (lowest) first
        "ts": time.time_ns() // 1_000_000,  # epoch milliseconds
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pair", help="e.g. BTC_USDT")
    p.add_argument("mid", type=Decimal, help="the mid price, e.g. 60000")
    p.add_argument("--count", type=int, default=0, help="books to send (0: until Ctrl-C)")
    p.add_argument("--interval", type=float, default=0.25, help="seconds between books")
    args = p.parse_args()
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=1)
    try:
        sent = 0
        while args.count == 0 or sent < args.count:
            await nc.publish(f"{PREFIX}.md.book.{args.pair}", json.dumps(book(args.pair, args.mid)).encode())
            await nc.flush()
            sent += 1
            await asyncio.sleep(args.interval)
    finally:
        await nc.close()
    print(f"sent {sent} books for {args.pair} on {PREFIX}.md.book.{args.pair}")


if __name__ == "__main__":
    asyncio.run(main())
