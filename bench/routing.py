"""The routing stage of the bench harness (issue 17, "Bench"): how long a routing decision takes.

``domain.routing.decide`` for 3 venues, each with a 20-level book (Decimal prices with 2 decimals, sizes with 6),
different taker fees, for a quantity that walks about half of each book (so each venue's price comes from
several levels), buys and sells alternating, policy ``best_price``. Beside it, in the same run and interleaved
with it (so a change of the machine's load shows in both), the baseline: one ``domain.book.walk_book`` of one
of those books for the same quantity, the least a decision must do per venue. Per call: p50 / p99 in
microseconds (each call timed alone) and calls per second (a tight loop of calls, timed as a whole).

    .venv/bin/python -m bench.routing              # this stage alone: a table in a few seconds
    .venv/bin/python -m bench.routing --quick

In ``make bench`` it runs in-process after the valuation stage; its rows follow the valuation rows. The other
figure of the issue, "submit -> fill with routing on vs off", needs the service with several venues: it is the
routing-path stage (``bench/routing_path.py``: a ``tbx run`` with three paper venues).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench.ledger_bench import pct
from domain.book import walk_book
from domain.routing import Candidate, RouteOrder, decide

if TYPE_CHECKING:
    from bench.harness import Table

VENUES = (("binance", "0.001"), ("alpaca", "0.0025"), ("kraken", "0.0016"))
LEVELS = 20
QUANTITY = Decimal("2.5")  # about half of a side's depth (20 levels of 0.05 .. 0.45)
ROUNDS = 10  # the samples are taken in this many interleaved rounds of baseline then decision


def books(seed: int = 17) -> dict[str, tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]]:
    """Per venue: (asks, bids), 20 levels each, best first, around 60,000 with a venue's own offset."""
    rng = random.Random(seed)
    out = {}
    for i, (venue, _) in enumerate(VENUES):
        mid = 6_000_000 + 300 * i  # cents
        asks, bids = [], []
        a, b = mid + 1, mid - 1
        for _ in range(LEVELS):
            asks.append((Decimal(a).scaleb(-2), Decimal(rng.randint(50_000, 450_000)).scaleb(-6)))
            bids.append((Decimal(b).scaleb(-2), Decimal(rng.randint(50_000, 450_000)).scaleb(-6)))
            a += rng.randint(1, 200)
            b -= rng.randint(1, 200)
        out[venue] = (asks, bids)
    return out


def workload() -> tuple[list[tuple[RouteOrder, list[Candidate]]], list[tuple[list[Any], Decimal, bool]]]:
    """The decisions (a buy and a sell) and the matching baseline walks (one book each)."""
    bk = books()
    decisions, walks = [], []
    for side in ("buy", "sell"):
        order = RouteOrder("BTC_USDT", side, QUANTITY)  # type: ignore[arg-type]
        cands = [
            Candidate(venue, prio, bk[venue][0 if side == "buy" else 1], Decimal(fee))
            for prio, (venue, fee) in enumerate(VENUES)
        ]
        decisions.append((order, cands))
        walks.append((bk["binance"][0 if side == "buy" else 1], QUANTITY, side == "buy"))
    for order, cands in decisions:  # the workload is what it says: every venue priced with its full depth
        d = decide(order, "best_price", cands)
        assert all(r.status == "priced" for r in d.ranked), d.reason
    return decisions, walks


def _timed(fn: Callable[[int], object], n: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        out.append((clock() - t0) / 1000)
    return out


def _rate(fn: Callable[[int], object], n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - t0)


def measure(n: int = 20_000) -> dict[str, Any]:
    """``n`` timed calls of each (plus ``n`` more of each in tight loops for the rates), interleaved in rounds."""
    decisions, walks = workload()

    def one_decision(i: int) -> object:
        order, cands = decisions[i & 1]
        return decide(order, "best_price", cands)

    def one_walk(i: int) -> object:
        levels, qty, is_buy = walks[i & 1]
        return walk_book(levels, qty, None, is_buy=is_buy)

    per_round = max(1, n // ROUNDS)
    _timed(one_decision, min(per_round, 500))  # warm-up
    _timed(one_walk, min(per_round, 500))
    base_us: list[float] = []
    dec_us: list[float] = []
    base_rates: list[float] = []
    dec_rates: list[float] = []
    for _ in range(ROUNDS):
        base_us += _timed(one_walk, per_round)
        dec_us += _timed(one_decision, per_round)
        base_rates.append(_rate(one_walk, per_round))
        dec_rates.append(_rate(one_decision, per_round))
    example = one_decision(0)
    return {
        "n": len(dec_us),
        "venues": len(VENUES),
        "levels": LEVELS,
        "quantity": str(QUANTITY),
        "decisionP50Us": round(pct(dec_us, 50), 2),
        "decisionP99Us": round(pct(dec_us, 99), 2),
        "decisionsPerSecond": round(sorted(dec_rates)[len(dec_rates) // 2]),  # the median round
        "walkP50Us": round(pct(base_us, 50), 2),
        "walkP99Us": round(pct(base_us, 99), 2),
        "walksPerSecond": round(sorted(base_rates)[len(base_rates) // 2]),
        "example": example.reason,  # type: ignore[attr-defined]
    }


def add_rows(t: Table, r: dict[str, Any]) -> None:
    """The stage's rows in the harness's table (after the valuation rows)."""
    ratio50 = r["decisionP50Us"] / r["walkP50Us"] if r["walkP50Us"] else float("nan")
    ratio99 = r["decisionP99Us"] / r["walkP99Us"] if r["walkP99Us"] else float("nan")
    t.value(
        f"routing: one walk_book, {r['levels']} levels (baseline)",
        f"p50 {r['walkP50Us']:.1f} us, p99 {r['walkP99Us']:.1f} us, {r['walksPerSecond']:,} /s ({r['n']:,} calls)",
        walkP50Us=r["walkP50Us"],
        walkP99Us=r["walkP99Us"],
        walksPerSecond=r["walksPerSecond"],
    )
    t.value(
        f"routing: decide, {r['venues']} venues x {r['levels']} levels",
        f"p50 {r['decisionP50Us']:.1f} us, p99 {r['decisionP99Us']:.1f} us, {r['decisionsPerSecond']:,} /s "
        f"(x{ratio50:.1f} / x{ratio99:.1f} the walk)",
        decisionP50Us=r["decisionP50Us"],
        decisionP99Us=r["decisionP99Us"],
        decisionsPerSecond=r["decisionsPerSecond"],
        p50PerWalk=round(ratio50, 2),
        p99PerWalk=round(ratio99, 2),
    )


def table(r: dict[str, Any]) -> str:
    head = f"{'routing (best_price, Decimal)':<44} {'n':>7} {'p50 us':>8} {'p99 us':>8} {'per second':>11}"
    head += f" {'p50/walk':>9}"
    walk = f"{'one walk_book, ' + str(r['levels']) + ' levels (baseline)':<44}"
    dec = f"{'decide, ' + str(r['venues']) + ' venues x ' + str(r['levels']) + ' levels':<44}"
    ratio = r["decisionP50Us"] / r["walkP50Us"] if r["walkP50Us"] else float("nan")
    return "\n".join(
        [
            f"routing benchmark ({time.strftime('%Y-%m-%d %H:%M')}), quantity {r['quantity']}",
            head,
            f"{walk} {r['n']:>7,} {r['walkP50Us']:8.1f} {r['walkP99Us']:8.1f} {r['walksPerSecond']:>11,} {1:>9.1f}",
            f"{dec} {r['n']:>7,} {r['decisionP50Us']:8.1f} {r['decisionP99Us']:8.1f} "
            f"{r['decisionsPerSecond']:>11,} {ratio:>9.1f}",
            f"a decision's audit line: {r['example']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 calls of each instead of 20,000")
    p.add_argument("-n", type=int, help="timed calls of each (default 20,000)")
    a = p.parse_args(argv)
    print(table(measure(a.n or (2_000 if a.quick else 20_000))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
