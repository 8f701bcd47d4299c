"""Ledger benchmark: portfolio valuation with 1, 100 and 10,000 positions, and fills per second.

- valuation: the full portfolio snapshot (every position valued at its mark, balances, summary) and the
  equity alone, for 1, 100 and 10,000 open positions: p50 / p99 per call, as the ledger actor makes them
  (one ViewCache kept between calls; before each call 1% of the marks moved and one fill booked); and for
  10,000 positions the snapshot when nothing changed, when every mark moved, and cold (no cache);
- fills per second, pure: ``Ledger.apply_fill`` over 100,000 fills (the maths alone);
- fills per second through the actor: ``tbx actor portfolio-ledger`` as its own process on a private
  nats-server, (a) replaying 20,000 fills already stored (a restart without snapshot), (b) booking
  20,000 fills published while it runs (publish to booked, end to end).
Prints one table and writes it to bench/results/ledger.txt. 127.0.0.1 only, bounded.

    .venv/bin/python -m bench.ledger_bench
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from bus.client import Bus
from bus.codec import encode
from bus.embedded import EmbeddedNats, free_port
from domain.ledger import Ledger
from domain.valuation import DayStart, ViewCache, equity, snapshot
from schemas.messages import Empty, Fill, PortfolioSnapshot
from schemas.subjects import Subjects

RESULTS = Path(__file__).parent / "results"
N_ACTOR_FILLS = 20_000


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fill(i: int, pair: str, side: str, qty: Decimal, price: Decimal) -> Fill:
    return Fill(
        fill_id=f"F{i}",
        order_id=f"O{i}",
        client_order_id=f"C{i}",
        pair=pair,
        side=side,  # type: ignore[arg-type]
        quantity=qty,
        price=price,
        fee=qty * price / 1000,
        fee_currency="USDT",
        liquidity="taker",
        venue="bench",
        timestamp=1_700_000_000_000 + i,
    )


def book_with(n: int) -> tuple[Ledger, dict[str, Decimal]]:
    ledger = Ledger("USDT", Decimal(10) ** 9)
    marks = {}
    for i in range(n):
        pair = f"P{i}_USDT"
        ledger.apply_fill(fill(i, pair, "buy", Decimal("1.5"), Decimal(100 + i % 50)))
        marks[pair] = Decimal(101 + i % 50)
    return ledger, marks


def time_calls(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def random_fills(n: int) -> list[Fill]:
    rng = random.Random(1)
    pairs = [f"P{i}_USDT" for i in range(20)]
    return [
        fill(
            i,
            rng.choice(pairs),
            rng.choice(("buy", "sell")),
            Decimal(rng.randint(1, 100)) / 100,
            Decimal(rng.randint(9000, 11000)) / 100,
        )
        for i in range(n)
    ]


async def actor_rates(tmp: Path) -> tuple[float, float]:
    server = EmbeddedNats(tmp / "nats", port=free_port())
    url = server.start()
    env = {
        **os.environ,
        "NATS_URL": url,
        "BUS_PREFIX": "bench",
        "MARKET_DATA": "none",
        "LOG_LEVEL": "WARNING",
        "PAIRS": "BTC_USDT",
        "INITIAL_BALANCE": "1000000000",
    }
    bus = await Bus.connect(url, name="bench", subjects=Subjects("bench"))
    await bus.ensure_layout()
    fills = random_fills(2 * N_ACTOR_FILLS)
    procs: list[asyncio.subprocess.Process] = []
    try:
        for f in fills[:N_ACTOR_FILLS]:  # stored before the ledger starts
            await bus.js_publish(bus.subjects.fills(f.pair), f)

        async def booked(n: int) -> None:
            while True:
                try:
                    s = await bus.request(bus.subjects.query("portfolio"), Empty(), PortfolioSnapshot, timeout=2)
                    if s.fills_applied >= n:
                        return
                except Exception:  # not up yet
                    pass
                await asyncio.sleep(0.02)

        t0 = time.perf_counter()
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tbx.cli", "actor", "portfolio-ledger",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        await booked(N_ACTOR_FILLS)
        replay = N_ACTOR_FILLS / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        acks = [await bus.js.publish_async(bus.subjects.fills(f.pair), encode(f)) for f in fills[N_ACTOR_FILLS:]]
        await asyncio.gather(*acks)
        await booked(2 * N_ACTOR_FILLS)
        live = N_ACTOR_FILLS / (time.perf_counter() - t0)
        return replay, live
    finally:
        for p in procs:
            p.terminate()
            await asyncio.wait_for(p.wait(), 10)
        await bus.close()
        server.stop()


VALUATION_SIZES = (1, 100, 10_000)
MOVED = 0.01  # the share of the marks that move between two valuations (at least one)


def _moved(marks: dict[str, Decimal], rng: random.Random, share: float) -> None:
    """Move ``share`` of the marks (new objects, as a new book's mid): in place, as the actor's marks."""
    pairs = list(marks)
    for pair in rng.sample(pairs, max(1, int(len(pairs) * share))):
        marks[pair] = marks[pair] + Decimal("0.01") * rng.choice((-1, 1))


def valuation_samples(n: int, repeat: int | None = None, share: float = MOVED) -> tuple[list[float], list[float]]:
    """Per-call times (ms) of the full snapshot and of the equity alone over a book of ``n`` positions, as the
    ledger actor makes them: one ``ViewCache`` kept from call to call, and before each call ``share`` of the
    marks moved and one fill booked (untimed). The first (cold) valuation is made before the timed ones."""
    ledger, marks = book_with(n)
    rng = random.Random(n)
    repeat = repeat or (200 if n < 10_000 else 30)
    cache, day = ViewCache(), DayStart()
    snapshot(ledger, marks, day, 0, 0, cache=cache)
    snap, eq = [], []
    for i in range(repeat):
        _moved(marks, rng, share)
        ledger.apply_fill(fill(n + i, f"P{rng.randrange(n)}_USDT", "buy", Decimal("0.5"), Decimal(101)))
        t0 = time.perf_counter()
        snapshot(ledger, marks, day, 0, 0, cache=cache)
        snap.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        equity(ledger, marks)
        eq.append((time.perf_counter() - t0) * 1000)
    return snap, eq


def valuation_variants(n: int = 10_000, repeat: int = 30) -> list[tuple[str, float, float]]:
    """The full snapshot of ``n`` positions in the other cases: nothing changed since the last call (a repeated
    GET /api/portfolio), every mark moved, and cold (no cache: the first valuation after a start)."""
    ledger, marks = book_with(n)
    rng = random.Random(n)
    cache, day = ViewCache(), DayStart()
    snapshot(ledger, marks, day, 0, 0, cache=cache)
    same = time_calls(lambda: snapshot(ledger, marks, day, 0, 0, cache=cache), repeat)
    every = []
    for _ in range(repeat):
        _moved(marks, rng, 1.0)
        t0 = time.perf_counter()
        snapshot(ledger, marks, day, 0, 0, cache=cache)
        every.append((time.perf_counter() - t0) * 1000)
    cold = time_calls(lambda: snapshot(ledger, marks, day, 0, 0), max(5, repeat // 3))
    return [
        (f"snapshot, {n} positions, nothing changed", pct(same, 50), pct(same, 99)),
        (f"snapshot, {n} positions, every mark moved", pct(every, 50), pct(every, 99)),
        (f"snapshot, {n} positions, cold (no cache)", pct(cold, 50), pct(cold, 99)),
    ]


def valuation_rows(sizes: tuple[int, ...] = VALUATION_SIZES) -> list[tuple[str, float, float]]:
    rows = []
    for n in sizes:
        snap, eq = valuation_samples(n)
        rows.append((f"snapshot, {n} positions", pct(snap, 50), pct(snap, 99)))
        rows.append((f"equity only, {n} positions", pct(eq, 50), pct(eq, 99)))
    return rows + valuation_variants()


def main() -> str:
    rows = valuation_rows()
    fills = random_fills(100_000)
    ledger = Ledger("USDT", Decimal(10) ** 9)
    t0 = time.perf_counter()
    for f in fills:
        ledger.apply_fill(f)
    pure = len(fills) / (time.perf_counter() - t0)
    replay, live = asyncio.run(actor_rates(Path(tempfile.mkdtemp(prefix="tbx-ledger-bench-"))))
    out = [f"ledger benchmark ({time.strftime('%Y-%m-%d %H:%M')})", f"{'valuation':<32} {'p50 ms':>9} {'p99 ms':>9}"]
    out += [f"{name:<48} {p50:9.3f} {p99:9.3f}" for name, p50, p99 in rows]
    out += [
        f"{'fills per second':<32} {'rate':>9}",
        f"{'Ledger.apply_fill (pure)':<32} {pure:9.0f}",
        f"{'actor replay (restart)':<32} {replay:9.0f}",
        f"{'actor live (publish->booked)':<32} {live:9.0f}",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    table = main()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ledger.txt").write_text(table + "\n")
