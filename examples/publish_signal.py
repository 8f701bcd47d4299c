"""Send one trading signal over NATS and print its result.

    NATS_URL=$(cat data/nats.url) python examples/publish_signal.py ETH_USDT BUY --quantity 0.5

NATS_URL (default nats://127.0.0.1:4222) and BUS_PREFIX (default tbx) are read from the environment, like
the service reads them. Needs only nats-py (pip install nats-py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid

import nats

NATS_URL = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
PREFIX = os.environ.get("BUS_PREFIX") or "tbx"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pair", help="e.g. ETH_USDT")
    p.add_argument("signal", choices=["BUY", "SELL", "HOLD", "CLOSE"])
    p.add_argument("--confidence", default="0.8")
    p.add_argument("--quantity", help="a fixed size instead of the sizing rule")
    p.add_argument("--signal-id", default=f"example-{uuid.uuid4().hex[:12]}")
    args = p.parse_args()
    signal = {
        "pair": args.pair,  # required
        "signal": args.signal,  # required: BUY, SELL, HOLD or CLOSE
        "confidence": args.confidence,  # required: 0..1
        "source": "my_script",
        "strategy": "example",
        "signalId": args.signal_id,  # makes a resend safe: the same id is one signal
    }
    if args.quantity:
        signal["quantity"] = args.quantity
    nc = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=1)
    try:
        reply = await nc.request(f"{PREFIX}.signals.submit", json.dumps(signal).encode(), timeout=15)
    finally:
        await nc.close()
    print(json.dumps(json.loads(reply.data), indent=2))  # {"signalId": ..., "status": "executed", "orders": [...]}


if __name__ == "__main__":
    asyncio.run(main())
