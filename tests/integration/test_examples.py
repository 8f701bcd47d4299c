"""The examples a new user runs, as they are: real processes against a real nats-server and real actors,
found through NATS_URL and BUS_PREFIX (never a hard-coded URL)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from decimal import Decimal
from pathlib import Path

from schemas.messages import Book
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


async def run(script: str, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def test_book_feed_signal_and_watcher_examples_work_through_nats_url(make_system, client, nats_url, prefix):
    await make_system()  # MARKET_DATA=none: the book comes from the example feed
    env = {"NATS_URL": nats_url, "BUS_PREFIX": prefix}
    watcher = await run("watch_events.py", env=env)
    feed = None
    try:
        assert watcher.stdout is not None
        first = await asyncio.wait_for(watcher.stdout.readline(), 30)
        assert first.decode().startswith(f"watching {prefix}.events.>")

        books: list[Book] = []

        async def on_book(b: Book, _env: object) -> None:
            books.append(b)

        await client.subscribe(client.subjects.book("BTC_USDT"), Book, on_book)
        feed = await run("book_feed.py", "BTC_USDT", "60000", "--count", "600", "--interval", "0.05", env=env)
        await eventually(lambda: asyncio.sleep(0, len(books) >= 2), timeout=30, what="the example's books")
        assert books[-1].bids[0][0] < 60000 < books[-1].asks[0][0]

        n = 0

        async def executed() -> dict | None:
            nonlocal n
            n += 1  # a signal sent before the risk-gate saw a book is rejected; the next one is a new signal
            sender = await run(
                "publish_signal.py", "BTC_USDT", "BUY", "--quantity", "0.01", f"--signal-id=ex-{n}", env=env
            )
            out, _ = await asyncio.wait_for(sender.communicate(), 60)
            assert sender.returncode == 0, out.decode()
            result = json.loads(out)
            return result if result["status"] == "executed" else None

        result = await eventually(executed, timeout=30, every=0.2, what="an executed signal")
        [order] = result["orders"]
        assert order["side"] == "buy" and Decimal(order["quantity"]) == Decimal("0.01")  # a decimal string

        seen: list[str] = []

        async def watched(pattern: str) -> bool:
            while not any(re.search(pattern, line) for line in seen):
                line = await asyncio.wait_for(watcher.stdout.readline(), 30)
                seen.append(line.decode())
            return True

        await asyncio.wait_for(watched(rf"events\.orders\.BTC_USDT\s+order {order['orderId']} filled"), 30)
        await asyncio.wait_for(watched(r"events\.fills\.BTC_USDT\s+fill \S+: buy 0\.010* BTC_USDT @ "), 30)
        await asyncio.wait_for(watched(r"events\.positions\.BTC_USDT\s+position BTC_USDT: long 0\.010* @"), 30)
    finally:
        for proc in (watcher, feed):
            if proc is not None and proc.returncode is None:
                proc.terminate()
                await proc.wait()


def test_no_example_hard_codes_the_nats_url():
    texts = {p.name: p.read_text() for p in EXAMPLES.glob("*.py")}
    assert {"publish_signal.py", "book_feed.py", "watch_events.py"} <= set(texts)
    for name, text in texts.items():
        assert 'NATS_URL = os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"' in text, name
        assert "nats.connect(NATS_URL" in text, name
    readme = (ROOT / "README.md").read_text()
    assert not re.search(r"""nats\.connect\(\s*["']nats://""", readme)
    assert "NATS_URL" in readme
