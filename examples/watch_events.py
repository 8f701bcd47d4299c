"""Print what the service publishes: order events, fills, positions, portfolio snapshots, signal results,
risk alerts (every subject under tbx.events.>), one line each.

    NATS_URL=$(cat data/nats.url) python examples/watch_events.py

A plain subscription sees the messages as they are published; to read the history too, consume the
JetStream streams (TBX_ORDERS, TBX_FILLS, ...; see the README). NATS_URL (default nats://127.0.0.1:4222)
and BUS_PREFIX (default tbx) come from the environment. Needs only nats-py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import nats

NATS_URL = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
PREFIX = os.environ.get("BUS_PREFIX") or "tbx"


def summary(subject: str, body: dict) -> str:
    kind = subject.split(".")[2]  # <prefix>.events.<kind>[.<pair>]
    if kind == "orders":  # {"event": ..., "order": {...}, "ts": ...}
        o = body["order"]
        return f"order {o['orderId']} {body['event']}: {o['side']} {o['quantity']} {o['pair']} ({o['status']})"
    if kind == "fills":
        return f"fill {body['fillId']}: {body['side']} {body['quantity']} {body['pair']} @ {body['price']}"
    if kind == "positions":
        return f"position {body['pair']}: {body['side']} {body['quantity']} @ {body['averagePrice']}"
    if kind == "portfolio":
        return f"portfolio: totalValue {body['summary']['totalValue']} {body['summary']['baseCurrency']}"
    if kind == "signals":
        return f"signal {body['signalId']}: {body['status']} {body.get('reason') or ''}".rstrip()
    return f"{kind}: {json.dumps(body)}"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=0, help="stop after this many messages (0: until Ctrl-C)")
    args = p.parse_args()
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=1)
    done = asyncio.Event()
    seen = 0

    async def on_msg(msg: nats.aio.msg.Msg) -> None:
        nonlocal seen
        print(f"{msg.subject}  {summary(msg.subject, json.loads(msg.data))}", flush=True)
        seen += 1
        if args.count and seen >= args.count:
            done.set()

    await nc.subscribe(f"{PREFIX}.events.>", cb=on_msg)
    await nc.flush()
    print(f"watching {PREFIX}.events.>", flush=True)
    try:
        await done.wait()
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
