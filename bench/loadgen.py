"""HTTP load generator for the bench harness: its own process, aiohttp over keep-alive, 127.0.0.1 only.

Two modes, both bounded by a count and a duration:

- ``open`` (default): request i is scheduled at ``t0 + i / rate`` whatever happened to the ones
  before it, and its latency is measured from that scheduled time, not from when it actually went
  out. A slow answer therefore cannot hold the next requests back and hide itself (no coordinated
  omission): if the server (or this process) falls behind, the waiting shows up in the latencies.
- ``closed``: ``--concurrency`` clients, each sending its next request as soon as the previous answer
  is in, for ``--duration`` s: the most requests per second the server answers.

``--order PAIR:QTY`` makes each request a ``POST`` of a paper market order (``clientOrderId``
``<id-prefix>-<i>``, buy and sell alternating); otherwise the requests are plain ``GET``.
Prints one JSON object on stdout (latencies in ms of the answers with the expected status; every
other outcome counted by status or error) and nothing else.

    python -m bench.loadgen --url http://127.0.0.1:3004/api/orders --order BTC_USDT:0.001 \\
        --rate 500 --count 2500 --duration 5 --id-prefix r500 --expect 201
    python -m bench.loadgen --url http://127.0.0.1:3004/api/portfolio --mode closed --concurrency 16 \\
        --duration 5 --count 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import aiohttp

MAX_FAILED_IDS = 1000
MAX_COUNT = 2_000_000
MAX_DURATION_S = 600.0


def order_body(pair: str, qty: str, client_order_id: str, i: int) -> bytes:
    side = "buy" if i % 2 == 0 else "sell"
    return (
        f'{{"pair":"{pair}","side":"{side}","type":"market","quantity":{qty},"clientOrderId":"{client_order_id}"}}'
    ).encode()


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.latencies: list[float] = []
        self.series: list[tuple[float, float]] = []  # (scheduled send, s from the start; latency ms)
        self.statuses: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failed_ids: list[str] = []
        self.sent = 0
        self.ok = 0
        self.first_at = 0.0
        self.last_done = 0.0
        self.max_lag = 0.0
        if args.order:
            pair, _, qty = args.order.partition(":")
            self.pair, self.qty = pair, qty
        self.method = "POST" if args.order else "GET"

    def request(self, i: int) -> tuple[str | None, bytes | None]:
        if not self.args.order:
            return None, None
        cid = f"{self.args.id_prefix}-{i}"
        return cid, order_body(self.pair, self.qty, cid, i)

    async def one(self, http: aiohttp.ClientSession, i: int, start: float) -> None:
        """One request, timed from ``start`` (its scheduled time in open mode, its send time in closed)."""
        cid, body = self.request(i)
        self.sent += 1
        outcome: str
        try:
            async with http.request(
                self.method, self.args.url, data=body, headers={"Content-Type": "application/json"} if body else None
            ) as r:
                await r.read()
                outcome = str(r.status)
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError as e:
            outcome = type(e).__name__
        done = time.perf_counter()
        self.last_done = max(self.last_done, done)
        if outcome == str(self.args.expect):
            self.ok += 1
            self.latencies.append(round((done - start) * 1000, 4))
            if self.args.series:
                self.series.append((round(start - self.first_at, 4), self.latencies[-1]))
            return
        if outcome.isdigit():
            self.statuses[outcome] += 1
        else:
            self.errors[outcome] += 1
        if cid is not None and len(self.failed_ids) < MAX_FAILED_IDS:
            self.failed_ids.append(cid)

    async def open_loop(self, http: aiohttp.ClientSession) -> int:
        a = self.args
        n = min(a.count, int(a.duration * a.rate))
        interval = 1.0 / a.rate
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter() + 0.01
        self.first_at = t0
        for i in range(n):
            at = t0 + i * interval
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.max_lag = max(self.max_lag, time.perf_counter() - at)
            task = asyncio.create_task(self.one(http, i, at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=a.drain)
            for t in pending:
                t.cancel()
            if pending:
                self.errors["unfinished"] += len(pending)
        return n

    async def closed_loop(self, http: aiohttp.ClientSession) -> int:
        a = self.args
        deadline = time.perf_counter() + a.duration
        counter = iter(range(a.count))
        self.first_at = time.perf_counter()

        async def client() -> None:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                await self.one(http, i, time.perf_counter())

        await asyncio.gather(*(client() for _ in range(a.concurrency)))
        return self.sent

    async def warm_up(self, http: aiohttp.ClientSession) -> None:
        """Open the keep-alive connections before the clock starts (not counted)."""
        health = self.args.url.split("/api/", 1)[0] + "/api/health"

        async def ping() -> None:
            try:
                async with http.get(health) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass

        await asyncio.gather(*(ping() for _ in range(min(self.args.concurrency, 64))))

    async def main(self) -> dict[str, object]:
        a = self.args
        self.cpu0 = time.process_time()
        connector = aiohttp.TCPConnector(limit=a.concurrency, limit_per_host=a.concurrency, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=a.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            await self.warm_up(http)
            scheduled = await (self.open_loop(http) if a.mode == "open" else self.closed_loop(http))
        elapsed = max(1e-9, self.last_done - self.first_at) if self.last_done else 0.0
        return {
            "mode": a.mode,
            "method": self.method,
            "url": a.url,
            "target_rate": a.rate if a.mode == "open" else None,
            "concurrency": a.concurrency,
            "scheduled": scheduled,
            "sent": self.sent,
            "ok": self.ok,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "failed_ids": self.failed_ids,
            "failed_ids_truncated": len(self.failed_ids) >= MAX_FAILED_IDS,
            "elapsed_s": round(elapsed, 4),
            "achieved_rate": round(self.ok / elapsed, 2) if elapsed else 0.0,
            "max_send_lag_ms": round(self.max_lag * 1000, 3),
            "cpu_s": round(time.process_time() - self.cpu0, 3),
            "latencies_ms": self.latencies,
            **({"series": sorted(self.series)} if a.series else {}),
        }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT/... (127.0.0.1 only)")
    p.add_argument("--mode", choices=("open", "closed"), default="open")
    p.add_argument("--rate", type=float, default=100.0, help="open mode: requests per second")
    p.add_argument("--count", type=int, required=True, help="at most this many requests")
    p.add_argument("--duration", type=float, required=True, help="at most this many seconds of sending")
    p.add_argument("--concurrency", type=int, default=256, help="connections (closed mode: clients)")
    p.add_argument("--order", metavar="PAIR:QTY", help="POST paper market orders of this size")
    p.add_argument("--id-prefix", default="lg", help="clientOrderId prefix (ids are <prefix>-<i>)")
    p.add_argument("--expect", type=int, default=200, help="the status of a successful answer")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--series", action="store_true", help="also print (send time, latency) of each answer")
    p.add_argument("--drain", type=float, default=15.0, help="open mode: wait this long for the last answers")
    a = p.parse_args(argv)
    u = urlsplit(a.url)
    if u.scheme != "http" or u.hostname != "127.0.0.1":
        p.error("--url must be http://127.0.0.1:PORT/... (the load stays on this machine)")
    if not (0 < a.count <= MAX_COUNT and 0 < a.duration <= MAX_DURATION_S and a.rate > 0 and a.concurrency > 0):
        p.error(f"bounded: 0 < count <= {MAX_COUNT}, 0 < duration <= {MAX_DURATION_S:g}, rate and concurrency > 0")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    with runner:
        result = runner.run(Run(args).main())
    json.dump(result, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
