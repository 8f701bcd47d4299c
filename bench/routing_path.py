"""The routing-path stage of the bench harness (issue 17, "Bench"): submit -> reply and -> fill, routing on vs off.

Starts one ``tbx run`` (the harness's way: its nats-server, a fresh BUS_PREFIX, the harness's SERVICE_ENV) with
three paper venues, ``EXCHANGES=alpha=paper,beta=paper,gamma=paper`` and ``ROUTING=best_price``, all three on
the same synthetic books (``MARKET_DATA=synthetic``) with the same taker fee (``PAPER_TAKER_FEE``). Then, one
order at a time, market orders of 0.001 BTC on ``<prefix>.orders.submit`` of two kinds, interleaved (one of
each kind per round, the kind that goes first alternating from round to round, both orders of a round on the
same side, buys and sells alternating by round), so a drift of the machine's load hits both kinds alike:

  on    routing on: the order names no venue, the order-router routes it by ``best_price`` (a decision over
        the three venues' books, ``domain.routing.decide``);
  off   routing off: the same order naming ``exchange=alpha`` (the router takes the named venue, no decision).

Each order is timed from the request to its reply and to its complete fill event on
``<prefix>.events.fills.BTC_USDT`` (subscribed before the first order). Every order is checked: answered ok,
on venue ``alpha``, completely filled there (a fill event with ``orderComplete`` and ``orderFilledQuantity`` =
its quantity, ``venue`` alpha); a routed order's ``routing`` text prices all three venues, at the same price
(the same books, the same fee: a tie), and picks ``alpha``, the best price by the text's own figures with the
tie going to the first venue of EXCHANGES; a named order's says it was named. Beside it, in process, the
same decision the router makes for these orders (3 venues x the synthetic book's 10 levels, 0.001 BTC) is
timed alone: what routing should add, to compare with the difference on - off.

    .venv/bin/python -m bench.routing_path               # this stage alone (own nats-server), 500 orders of each kind
    .venv/bin/python -m bench.routing_path --orders 200

In ``make bench`` it runs after the memory stage, before the live-venue stage, on the harness's nats-server;
its rows come before the live venue's, its figures are ``routingPath`` in ``harness.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec
import nats
import nats.errors
from nats.aio.msg import Msg as NatsMsg

from bench.harness import (
    PAIR,
    QTY,
    SEED_QTY,
    Cpu,
    Table,
    Tally,
    Tbx,
    nats_alone,
    pct,
    say,
    stop_all,
)
from bus.client import ERROR_HEADER
from bus.codec import encode
from config.settings import Settings
from domain.routing import Candidate, RouteOrder, decide
from domain.synthetic import SyntheticBook
from schemas.messages import OrderRequest, now_ms

VENUES = ("alpha", "beta", "gamma")  # in EXCHANGES order: the priority of a tie
NAMED = "alpha"  # the venue the "off" orders name; also best_price's pick (a tie, alpha first)
ROUTING_ENV = {"EXCHANGES": ",".join(f"{v}=paper" for v in VENUES), "ROUTING": "best_price"}
WARMUP = 10  # untimed orders of each kind first (checked like the others)
FILL_TIMEOUT_S = 10.0
Kind = Literal["on", "off"]
KINDS: tuple[Kind, Kind] = ("on", "off")
LABELS = {"on": "routing on (no venue named, best_price)", "off": f"routing off (exchange={NAMED})"}


# ------------------------------------------------------------------------------------------------------
# what the service says back
# ------------------------------------------------------------------------------------------------------
class OrderLite(msgspec.Struct, rename="camel"):
    venue: str
    quantity: Decimal
    routing: str | None = None


class ReplyLite(msgspec.Struct, rename="camel"):
    ok: bool
    order: OrderLite | None = None
    code: str | None = None
    detail: str | None = None


class FillLite(msgspec.Struct, rename="camel"):
    client_order_id: str
    venue: str
    order_filled_quantity: Decimal | None = None
    order_complete: bool | None = None


_reply_dec = msgspec.json.Decoder(ReplyLite)
_fill_dec = msgspec.json.Decoder(FillLite)


@dataclass(frozen=True, slots=True)
class Done:
    """An order's complete fill event: when it was seen, on which venue, how much the order had filled."""

    t: float
    venue: str
    filled: Decimal | None


class Fills:
    """Complete fill events on ``<prefix>.events.fills.<pair>``, by client order id."""

    def __init__(self) -> None:
        self.done: dict[str, Done] = {}
        self.waiters: dict[str, asyncio.Future[Done]] = {}

    async def on_msg(self, msg: NatsMsg) -> None:
        t = time.perf_counter()
        f = _fill_dec.decode(msg.data)
        if not f.order_complete or f.client_order_id in self.done:
            return
        d = self.done[f.client_order_id] = Done(t, f.venue, f.order_filled_quantity)
        fut = self.waiters.pop(f.client_order_id, None)
        if fut is not None and not fut.done():
            fut.set_result(d)

    def expect(self, cid: str) -> asyncio.Future[Done]:
        fut: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        if cid in self.done:
            fut.set_result(self.done[cid])
        else:
            self.waiters[cid] = fut
        return fut

    def forget(self, cid: str) -> None:
        self.waiters.pop(cid, None)


# ------------------------------------------------------------------------------------------------------
# the checks of one order (pure: tests/unit/test_bench_routing_path.py)
# ------------------------------------------------------------------------------------------------------
_PRICED = re.compile(r"(\w+) ([0-9]+(?:\.[0-9]+)?) \(fee ([0-9.]+)%\)")


def best_price_pick(side: str, priced: list[tuple[str, Decimal]], venues: tuple[str, ...] = VENUES) -> str:
    """The venue best_price must pick among ``priced`` (venue, expected price with the fee): the lowest price
    for a buy, the highest for a sell, a tie to the venue listed first in EXCHANGES (``venues``)."""
    sign = 1 if side == "buy" else -1
    return min(priced, key=lambda vp: (sign * vp[1], venues.index(vp[0])))[0]


def parse_routing(text: str) -> tuple[str, list[tuple[str, Decimal, Decimal]], str] | None:
    """A best_price ``routing`` text read back: its side, each priced venue (name, expected price, fee in %) in
    the text's order, and the venue it picked; None when it is not a best_price decision."""
    head, sep, chosen = text.rpartition(" -> ")
    policy, _, rest = head.partition(" ")
    if not sep or policy != "best_price":
        return None
    side = rest.split(" ", 1)[0]
    priced = [(v, Decimal(p), Decimal(f)) for v, p, f in _PRICED.findall(head.partition(": ")[2])]
    return side, priced, chosen


def check_routing(side: str, text: str | None) -> str | None:
    """A routed order's ``routing`` text: every venue priced, all at one price (the same books and fee: a tie),
    and the pick is best_price's by those prices (a tie: the first of EXCHANGES, alpha). None when it is so."""
    parsed = parse_routing(text) if text else None
    if parsed is None or parsed[0] != side:
        return "routed: not a best_price decision of its side"
    _, priced, chosen = parsed
    if sorted(v for v, _, _ in priced) != sorted(VENUES):
        return "routed: not every venue priced"
    if len({p for _, p, _ in priced}) != 1 or len({f for _, _, f in priced}) != 1:
        return "routed: not a tie (the venues' prices or fees differ)"
    pick = best_price_pick(side, [(v, p) for v, p, _ in priced])
    if chosen != pick:
        return f"routed: picked {chosen}, best_price picks {pick}"
    if chosen != NAMED:
        return f"routed: picked {chosen}, not {NAMED}"
    return None


def check_order(kind: Kind, side: str, qty: Decimal, reply: ReplyLite, fill: Done | None) -> str | None:
    """One order of the stage: None when it is what it must be, else what is wrong (a failure's cause)."""
    if not reply.ok:
        return f"denied {reply.code}"
    o = reply.order
    if o is None:
        return "answered ok without the order"
    if o.venue != NAMED:
        return f"{kind}: on venue {o.venue}, not {NAMED}"
    if o.quantity != qty:
        return f"{kind}: quantity {o.quantity}, not {qty}"
    if kind == "on":
        why = check_routing(side, o.routing)
        if why:
            return why
    elif o.routing != f"named by the order: {NAMED}":
        return "named: routing text is not 'named by the order'"
    if fill is None:
        return f"{kind}: no complete fill within {FILL_TIMEOUT_S:g} s"
    if fill.venue != NAMED:
        return f"{kind}: filled on {fill.venue}, not {NAMED}"
    if fill.filled != qty:
        return f"{kind}: filled {fill.filled} of {qty}"
    return None


# ------------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------------
@dataclass
class Samples:
    sent: int = 0
    ok: int = 0
    reply_ms: list[float] = field(default_factory=list)
    fill_ms: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    example: str | None = None  # one order's routing text


class Client:
    def __init__(self, nc: nats.NATS, prefix: str, fills: Fills) -> None:
        self.nc, self.subject, self.fills = nc, f"{prefix}.orders.submit", fills

    async def order(self, s: Samples, kind: Kind, cid: str, side: str, qty: str = QTY) -> None:
        """One order, timed and checked; counted in ``s``."""
        s.sent += 1
        venue = None if kind == "on" else NAMED
        req = OrderRequest(
            client_order_id=cid, pair=PAIR, side=side, quantity=Decimal(qty), ts=now_ms(),  # type: ignore[arg-type]
            exchange=venue,
        )  # fmt: skip
        body = encode(req)
        fut = self.fills.expect(cid)
        t0 = time.perf_counter()
        try:
            msg = await self.nc.request(self.subject, body, timeout=FILL_TIMEOUT_S)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError) as e:
            self.fills.forget(cid)
            s.refused[f"bus {type(e).__name__}"] += 1
            return
        t1 = time.perf_counter()
        if msg.headers and ERROR_HEADER in msg.headers:
            self.fills.forget(cid)
            s.refused[f"bus error: {msg.headers[ERROR_HEADER][:60]}"] += 1
            return
        reply = _reply_dec.decode(msg.data)
        fill: Done | None = None
        if reply.ok:
            with contextlib.suppress(TimeoutError):
                fill = await asyncio.wait_for(fut, FILL_TIMEOUT_S)
        self.fills.forget(cid)
        why = check_order(kind, side, Decimal(qty), reply, fill)
        if why:
            s.refused[why[:80]] += 1
            return
        s.ok += 1
        s.reply_ms.append((t1 - t0) * 1000)
        assert fill is not None
        s.fill_ms.append((fill.t - t0) * 1000)
        if kind == "on" and s.example is None and reply.order is not None:
            s.example = reply.order.routing


async def interleaved(client: Client, samples: dict[Kind, Samples], tag: str, rounds: int) -> None:
    """``rounds`` rounds of one order of each kind; the kind going first alternates, both orders of a round are
    on the same side, and the side alternates by round."""
    for i in range(rounds):
        side = "buy" if i % 2 == 0 else "sell"
        for kind in KINDS if i % 2 == 0 else KINDS[::-1]:
            await client.order(samples[kind], kind, f"{tag}{kind}-{i}", side)


def decision_reference(n: int) -> dict[str, Any]:
    """The decision the router makes for these orders, in process: 3 venues on the same synthetic book (its 10
    levels), the paper taker fee, 0.001 BTC, buys and sells alternating. p50 / p99 in microseconds."""
    book = SyntheticBook(PAIR, 42).next(0)
    fee = Settings().PAPER_TAKER_FEE
    work = []
    for side in ("buy", "sell"):
        levels = book.asks if side == "buy" else book.bids
        cands = [Candidate(v, i, levels, fee) for i, v in enumerate(VENUES)]
        work.append((RouteOrder(PAIR, side, Decimal(QTY)), cands))  # type: ignore[arg-type]
    for order, cands in work:
        assert decide(order, "best_price", cands).venue == NAMED
    clock = time.perf_counter_ns
    us = []
    for i in range(n + 200):
        order, cands = work[i & 1]
        t0 = clock()
        decide(order, "best_price", cands)
        if i >= 200:  # the first 200: warm-up
            us.append((clock() - t0) / 1000)
    return {"n": n, "levels": len(book.asks), "p50Us": round(pct(us, 50), 2), "p99Us": round(pct(us, 99), 2)}


def paired_median(on: list[float], off: list[float]) -> float | None:
    """The median of the per-round differences on - off (rounds where both orders were timed in order)."""
    diffs = sorted(a - b for a, b in zip(on, off, strict=False))
    return pct(diffs, 50) if diffs else None


async def stage(nats_url: str, nats_pid: int | None, tmp: Path, n: int, tally: Tally) -> dict[str, Any]:
    """The whole stage: ``n`` orders of each kind (after WARMUP of each); everything it starts is stopped
    before it returns (also on errors)."""
    tbx: Tbx | None = None
    nc: nats.NATS | None = None
    t_stage = time.perf_counter()
    try:
        tbx = Tbx(nats_url, tmp, "routing", ROUTING_ENV)
        await tbx.wait_healthy()
        fills = Fills()
        nc = await nats.connect(nats_url, name="bench-routing-path")
        await nc.subscribe(f"{tbx.prefix}.events.fills.{PAIR}", cb=fills.on_msg, pending_msgs_limit=-1)
        await nc.flush()
        client = Client(nc, tbx.prefix, fills)

        # a BTC holding on alpha first (every order lands there): the sells sell what is held (see Ctx.seed)
        seed = Samples()
        await client.order(seed, "off", "rpseed-0", "buy", SEED_QTY)
        warm: dict[Kind, Samples] = {"on": Samples(), "off": Samples()}
        await interleaved(client, warm, "rpw", WARMUP)
        samples: dict[Kind, Samples] = {"on": Samples(), "off": Samples()}
        say(f"routing path: {n} orders routed by best_price and {n} naming {NAMED}, interleaved, one at a time")
        with Cpu({"tbx": tbx.pid, "nats": nats_pid}) as cpu:
            await interleaved(client, samples, "rp", n)
        reference = decision_reference(2000)

        for label, s in (
            ("routing path: seed", seed),
            ("routing path: warm-up routed", warm["on"]),
            ("routing path: warm-up named", warm["off"]),
            ("routing path: routed (best_price)", samples["on"]),
            (f"routing path: named ({NAMED})", samples["off"]),
        ):
            tally.add(label, s.sent, s.ok, s.refused, 0)  # an unfilled order is a failure, counted in refused
        all_s = (seed, *warm.values(), *samples.values())
        on, off = samples["on"], samples["off"]
        return {
            "n": n,
            "venues": list(VENUES),
            "exchanges": ROUTING_ENV["EXCHANGES"],
            "sent": sum(s.sent for s in all_s),
            "checked": sum(s.ok for s in all_s),
            "failures": {k: dict(s.refused) for k, s in (("seed", seed), ("on", on), ("off", off))}
            | {"warm": dict(warm["on"].refused + warm["off"].refused)},
            "onReply": on.reply_ms,
            "onFill": on.fill_ms,
            "offReply": off.reply_ms,
            "offFill": off.fill_ms,
            "pairedReplyMs": paired_median(on.reply_ms, off.reply_ms) if not (on.refused or off.refused) else None,
            "pairedFillMs": paired_median(on.fill_ms, off.fill_ms) if not (on.refused or off.refused) else None,
            "example": on.example,
            "decision": reference,
            "cores": cpu.cores,
            "logProblems": dict(tbx.log_problems()),
            "seconds": round(time.perf_counter() - t_stage, 1),
        }
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if tbx is not None:
            tbx.stop()


# ------------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------------
def _p(xs: list[float], q: float) -> float:
    return pct(xs, q) if xs else float("nan")


def add_rows(t: Table, res: dict[str, Any]) -> None:
    """This stage's section of the harness's table (and its figures for harness.json)."""
    t.lines.append(
        f"{'routing on vs off: 3 paper venues, one at a time':<50} {'n':>6} {'reply p50':>9} {'reply p99':>9} "
        f"{'fill p50':>9} {'fill p99':>9}"
    )
    figs = {}
    for kind in KINDS:
        reply, fill = res[f"{kind}Reply"], res[f"{kind}Fill"]
        figs[kind] = (_p(reply, 50), _p(reply, 99), _p(fill, 50), _p(fill, 99))
        a, b, c, d = figs[kind]
        t.lines.append(f"{LABELS[kind]:<50} {len(reply):>6} {a:9.3f} {b:9.3f} {c:9.3f} {d:9.3f}")
        t.figures.append(
            {
                "name": f"routing path: {LABELS[kind]}",
                "n": len(reply),
                "replyP50Ms": round(a, 4),
                "replyP99Ms": round(b, 4),
                "fillP50Ms": round(c, 4),
                "fillP99Ms": round(d, 4),
            }
        )
    diff = tuple(x - y for x, y in zip(figs["on"], figs["off"], strict=True))
    t.lines.append(
        f"{'difference on - off (ms)':<50} {'':>6} {diff[0]:+9.3f} {diff[1]:+9.3f} {diff[2]:+9.3f} {diff[3]:+9.3f}"
    )
    t.figures.append(
        {
            "name": "routing path: difference on - off",
            "replyP50Ms": round(diff[0], 4),
            "replyP99Ms": round(diff[1], 4),
            "fillP50Ms": round(diff[2], 4),
            "fillP99Ms": round(diff[3], 4),
            "pairedReplyMs": res["pairedReplyMs"],
            "pairedFillMs": res["pairedFillMs"],
        }
    )

    def ms(x: float | None) -> str:
        return "?" if x is None else f"{x:+.3f} ms"

    paired = f"reply {ms(res['pairedReplyMs'])}, fill {ms(res['pairedFillMs'])}"
    t.lines.append(f"{'  median of the per-round differences on - off':<50} {paired}")
    r = res["decision"]
    t.lines.append(
        f"{'  the decision alone, in process':<50} p50 {r['p50Us'] / 1000:.3f} ms, p99 {r['p99Us'] / 1000:.3f} ms "
        f"(decide, {len(res['venues'])} venues x {r['levels']} levels, {r['n']:,} calls)"
    )
    t.figures.append({"name": "routing path: the decision alone (us)", **r})
    failed = sum(sum(f.values()) for f in res["failures"].values())
    check = (
        f"every one of {res['sent']:,} orders answered ok, on {NAMED} and completely filled there"
        if not failed and res["checked"] == res["sent"]
        else f"!!! {failed:,} of {res['sent']:,} orders failed a check: {res['failures']} !!!"
    )
    t.lines.append(f"{'  orders, settings':<50} {check}; EXCHANGES={res['exchanges']}, ROUTING=best_price")
    if res["example"]:
        t.lines.append(f"{'  a routed order':<50} {res['example']}")


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """harness.json: the figures without the sample lists."""
    out = {k: v for k, v in res.items() if not isinstance(v, list)}
    for key in ("onReply", "onFill", "offReply", "offFill"):
        xs = res[key]
        out[key] = {"n": len(xs), "p50Ms": round(_p(xs, 50), 4), "p99Ms": round(_p(xs, 99), 4)}
    out["venues"] = res["venues"]
    return out


# ------------------------------------------------------------------------------------------------------
# this stage alone
# ------------------------------------------------------------------------------------------------------
async def alone(n: int) -> tuple[str, dict[str, Any], Tally]:
    tally = Tally()
    async with nats_alone("tbx-routing-path-") as (url, pid, tmp):
        res = await stage(url, pid, tmp, n, tally)
    t = Table(1.0)
    add_rows(t, res)
    text = t.text(f"routing path stage alone ({time.strftime('%Y-%m-%d %H:%M')}), {n} orders of each kind, ms")
    return text, res, tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.routing_path", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=500, help="orders of each kind, routed and named (default 500)")
    a = p.parse_args(argv)
    try:
        text, _, tally = asyncio.run(alone(a.orders))
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    print(text)
    print(tally.line())
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
