"""The execution-algorithm bench (issue 20, "Bench"): scheduling overhead of many concurrent TWAPs through the bus.

Starts one ``tbx run`` (the harness's way: a private nats-server, a fresh BUS_PREFIX, the harness's SERVICE_ENV:
paper venue, synthetic books, every limit wide open), then places P TWAP parents at once (``POST /api/orders``
``"type": "twap"``, ``"algo": {"durationMs": S x I, "slices": S}``, all buys of S x 0.001 BTC, no price cap: every
child a market IOC of 0.001 BTC, the paper venue's step 0.000001 and minimum notional 1 USDT) and follows them on
``<prefix>.events.orders.BTC_USDT`` until every parent has ended. For every slice of every parent:

  due     its scheduled time: the parent's schedule, ``domain.algo_orders.schedule_of`` on the parent as the router
          stored it (``algoState.startMs``, its step and smallest child), the function the engine itself runs;
  made    the child's ``createdAt``: when the order-router made it (after the id reservation in KV and the parent's
          durable ``slice_sent``), the moment it goes to the venue;
  seen    when the child's first event (``submitted``) reached this bench over NATS;
  done    the child's ``closedAt`` (the paper venue's fill, its report through the fill-tracker and back).

Drift is each of these less ``due``. Slices merged into a later child (``slices i..j merged: overdue by N ms``) count
as sent by that child, with its drift; a slice that sent nothing (its reason on the parent's trail) counts as
skipped, by reason. Every slice index is checked to be sent at most once and every child to be unique (by its
client order id ``tbx:<parent>:s<k>``); the children's quantities never add up to more than the parent's; every
parent must end ``filled``. What the bench followed on the bus is checked against the router's own records at the
end (``GET /api/orders/{id}`` of each parent: ``algoState.sent``, ``children``).

The reference, in the same run and the same window: P x S plain asyncio timers in this bench's own event loop
(P tasks, each sleeping until start + i x I for i < S, all aligned like the parents), their drift; and, before the
parents start, a raw NATS request/reply round trip and one JetStream publish -> stored ack (a durable write; a child
is made after two of them). CPU of ``tbx run`` and nats-server per child made (less what they use idle, measured
for a few seconds before), and the resident memory of ``tbx run``.

    .venv/bin/python -m bench.algos                               # 100 TWAPs x 100 slices, 1 s apart: about 2.5 min
    .venv/bin/python -m bench.algos --parents 10 --slices 10 --interval-ms 500   # a short run

In ``make bench`` it runs after the routing-path stage, before the live venue, on the harness's nats-server; its
rows come before the live venue's, its figures are ``algos`` in ``harness.json``. No timing is asserted anywhere:
the test (tests/integration/test_bench_algos.py) runs a short version and checks counts only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import nats.js.api
from nats.aio.msg import Msg as NatsMsg

from bench.harness import (
    PAIR,
    QTY,
    RAW_PAYLOAD,
    Table,
    Tally,
    Tbx,
    cpu_s,
    nats_alone,
    pct,
    rss_mb,
    say,
    stop_all,
    tree_cpu_s,
)
from domain.algo_orders import schedule_of
from schemas.messages import TERMINAL_STATUSES, Order, OrderEvent

PARENTS = 100
SLICES = 100
INTERVAL_MS = 1000
IDLE_S = 5.0  # CPU of the idle service measured this long before the parents start
END_GRACE_S = 60.0  # how long after its last slice's due time a parent may take to end
REF_ROUND_TRIPS = 500
TITLE = "algorithm scheduling"


# ------------------------------------------------------------------------------------------------------
# what the service says back
# ------------------------------------------------------------------------------------------------------
class StateLite(msgspec.Struct, rename="camel"):
    start_ms: int
    sent: list[int] = []


class OrderLite(msgspec.Struct, rename="camel"):
    order_id: str
    client_order_id: str
    type: str
    status: str
    quantity: Decimal
    filled_quantity: Decimal = Decimal(0)
    role: str | None = None
    parent_order_id: str | None = None
    created_at: int = 0
    updated_at: int = 0
    closed_at: int | None = None
    reason: str | None = None
    children: list[str] = []
    algo_state: StateLite | None = None


class EventLite(msgspec.Struct, rename="camel"):
    event: str
    ts: int
    order: OrderLite


_event_dec = msgspec.json.Decoder(EventLite)
_order_dec = msgspec.json.Decoder(Order)
_full_event_dec = msgspec.json.Decoder(OrderEvent)
TERMINAL = {s.value for s in TERMINAL_STATUSES}


@dataclass
class Child:
    order_id: str
    client_order_id: str
    parent: str
    quantity: Decimal
    created_at: int
    seen_ms: float  # wall-clock ms when its first event reached the bench
    first_event: str
    status: str = "submitted"
    closed_at: int | None = None
    filled: Decimal = Decimal(0)


@dataclass
class Group:
    """What one ``slice_sent`` of a parent did: the slice indexes it marked sent, its child (None: nothing sent),
    the note on the trail, and when the step wrote it (the parent's ``updatedAt``)."""

    indexes: list[int]
    child: str | None
    note: str | None
    decided_at: int


@dataclass
class Parent:
    order_id: str
    client_order_id: str
    status: str = "submitted"
    sent: list[int] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    reason: str | None = None


class Watch:
    """Every order event of the pair (a core subscription on ``<prefix>.events.orders.BTC_USDT``): the parents'
    ``slice_sent`` steps and the children's first and last events."""

    def __init__(self) -> None:
        self.parents: dict[str, Parent] = {}  # by order id
        self.finals: dict[str, Order] = {}  # each parent as the router stored it when it ended (its last event)
        self.children: dict[str, Child] = {}
        self.events = 0
        self.undecodable = 0
        self.twice: list[str] = []  # slice indexes marked sent again, children made again (must stay empty)
        self.ended = asyncio.Event()
        self.expected = 0  # parents placed: ``ended`` is set when that many ended

    async def on_msg(self, msg: NatsMsg) -> None:
        seen = time.time() * 1000
        self.events += 1
        try:
            ev = _event_dec.decode(msg.data)
        except msgspec.DecodeError:
            self.undecodable += 1
            return
        o = ev.order
        if o.type == "twap":
            full = _full_event_dec.decode(msg.data).order if o.status in TERMINAL else None
            self._parent(ev, full)
        elif o.role == "slice":
            self._child(o, ev.event, seen)

    def _parent(self, ev: EventLite, ev_order: Order | None = None) -> None:
        o = ev.order
        p = self.parents.get(o.order_id)
        if p is None:
            p = self.parents[o.order_id] = Parent(o.order_id, o.client_order_id)
        if ev.event == "slice_sent" and o.algo_state is not None:
            new = o.algo_state.sent[len(p.sent) :]
            known = set(p.sent)
            self.twice += [f"{o.order_id} slice {i} marked sent again" for i in new if i in known]
            child = o.children[-1] if len(o.children) > len(p.children) else None
            if child is not None and child in p.children:
                self.twice.append(f"{o.order_id}: child {child} listed twice")
            note = o.reason if o.reason != p.reason else None  # (a step without a note keeps the last reason)
            p.groups.append(Group(list(new), child, note, o.updated_at))
            p.sent = list(o.algo_state.sent)
            p.children = list(o.children)
        p.reason = o.reason
        was_done = p.status in TERMINAL
        p.status = o.status
        if p.status in TERMINAL and ev_order is not None:
            self.finals[o.order_id] = ev_order
        if not was_done and p.status in TERMINAL and self.expected and self.done() >= self.expected:
            self.ended.set()

    def _child(self, o: OrderLite, event: str, seen: float) -> None:
        c = self.children.get(o.order_id)
        if c is None:
            c = self.children[o.order_id] = Child(
                o.order_id, o.client_order_id, o.parent_order_id or "", o.quantity, o.created_at, seen, event
            )
        c.status, c.closed_at, c.filled = o.status, o.closed_at, o.filled_quantity

    def done(self) -> int:
        return sum(1 for p in self.parents.values() if p.status in TERMINAL)


# ------------------------------------------------------------------------------------------------------
# the reference: plain asyncio timers, and the bus's own floor
# ------------------------------------------------------------------------------------------------------
async def timers(parents: int, slices: int, interval_ms: int, start_ms: float) -> list[float]:
    """``parents`` tasks in this loop, each sleeping until start + i x interval for i < slices (absolute times,
    like the engine's heap): the drift of each wake-up, ms."""
    out: list[float] = []

    async def one() -> None:
        for i in range(slices):
            due = start_ms + i * interval_ms
            delay = (due - time.time() * 1000) / 1000
            if delay > 0:
                await asyncio.sleep(delay)
            out.append(time.time() * 1000 - due)

    await asyncio.gather(*(one() for _ in range(parents)))
    return out


async def round_trips(nc: nats.NATS, url: str, n: int) -> tuple[list[float], list[float]]:
    """A raw request/reply to a trivial responder on another connection, and a JetStream publish to a file
    stream until its stored ack, ``n`` of each one at a time: ms."""
    echo = await nats.connect(url, name="bench-algos-echo")
    subject = f"benchecho.{uuid.uuid4().hex[:8]}"
    raw: list[float] = []
    stored: list[float] = []
    try:

        async def reply(msg: NatsMsg) -> None:
            await msg.respond(msg.data)

        await echo.subscribe(subject, cb=reply)
        await echo.flush()
        await asyncio.sleep(0.05)  # interest can take a few ms to be seen by the other connection (as bench.harness)
        for i in range(n + 50):
            t0 = time.perf_counter()
            await nc.request(subject, RAW_PAYLOAD, timeout=5)
            if i >= 50:
                raw.append((time.perf_counter() - t0) * 1000)
    finally:
        await echo.close()
    js = nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    name, js_subject = f"BENCHALGO_{tag}", f"benchalgo.{tag}"
    await js.add_stream(name=name, subjects=[js_subject], storage=nats.js.api.StorageType.FILE)
    try:
        for i in range(n + 50):
            t0 = time.perf_counter()
            await js.publish(js_subject, RAW_PAYLOAD, timeout=5)
            if i >= 50:
                stored.append((time.perf_counter() - t0) * 1000)
    finally:
        await js.delete_stream(name)
    return raw, stored


# ------------------------------------------------------------------------------------------------------
# the analysis (pure: the records in, the figures out)
# ------------------------------------------------------------------------------------------------------
def analyse(finals: dict[str, Order], watch: Watch, fetched: dict[str, Child], slices: int) -> dict[str, Any]:
    """Every slice of every parent: due vs made / seen / done, the counts, the checks. ``finals``: each parent as
    the router has it at the end; ``fetched``: children the bench did not see on the bus, read back."""
    made: list[float] = []
    seen: list[float] = []
    done: list[float] = []
    decided: list[float] = []
    by_index: dict[int, list[float]] = {}
    planned = sent = merged = skipped = children = 0
    skipped_why: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    start_spread: list[int] = []
    kids_of = {**fetched, **watch.children}
    for pid, final in finals.items():
        assert final.algo_state is not None and final.algo_state.step is not None
        start_spread.append(final.algo_state.start_ms)
        ends[_end_of(final)] += 1
        plan = {s.index: s for s in schedule_of(final, final.algo_state.step, final.algo_state.min_quantity or 0)}
        planned += len(plan)
        if len(plan) != slices:
            problems[f"a schedule of {len(plan)} slices, not {slices}"] += 1
        p = watch.parents.get(pid)
        groups = p.groups if p is not None else []
        followed = [i for g in groups for i in g.indexes]
        if sorted(followed) != sorted(final.algo_state.sent) or [g.child for g in groups if g.child] != final.children:
            problems["the bench's view of a parent's steps differs from the router's record (events missed?)"] += 1
        if len(set(final.algo_state.sent)) != len(final.algo_state.sent):
            problems["a slice index marked sent twice"] += 1
        coids = [kids_of[c].client_order_id for c in final.children if c in kids_of]
        if len(set(coids)) != len(coids) or len(set(final.children)) != len(final.children):
            problems["a child made twice"] += 1
        if sum((kids_of[c].quantity for c in final.children if c in kids_of), Decimal(0)) > final.quantity:
            problems["children add up to more than the parent"] += 1
        missing_plan = set(plan) - set(final.algo_state.sent)
        if missing_plan:
            problems["slices never sent nor skipped"] += len(missing_plan)
        for g in groups:
            if g.child is None:
                skipped += len(g.indexes)
                skipped_why[_reason_kind(g.note)] += len(g.indexes)
                continue
            kid = kids_of.get(g.child)
            if kid is None:
                problems["a child never seen nor found"] += 1
                continue
            children += 1
            if len(g.indexes) > 1:
                merged += len(g.indexes) - 1
            for i in g.indexes:
                if i not in plan:
                    problems[f"slice {i} not in the schedule"] += 1
                    continue
                due = plan[i].at_ms
                sent += 1
                made.append(float(kid.created_at - due))
                by_index.setdefault(i, []).append(float(kid.created_at - due))
                seen.append(kid.seen_ms - due)
                decided.append(float(g.decided_at - due))
                if kid.closed_at is not None:
                    done.append(float(kid.closed_at - due))
            if kid.created_at < plan[g.indexes[-1]].at_ms:
                problems["a child made before its slice was due"] += 1
            if kid.status != "filled":
                problems[f"a child ended {kid.status}"] += 1
    problems.update({t: 1 for t in watch.twice})
    return {
        "parents": len(finals),
        "planned": planned,
        "sent": sent,
        "children": children,
        "merged": merged,
        "skipped": skipped,
        "skippedWhy": dict(skipped_why),
        "ends": dict(ends),
        "problems": dict(problems),
        "startSpreadMs": (max(start_spread) - min(start_spread)) if start_spread else 0,
        "made": made,
        "decided": decided,
        "seen": seen,
        "done": done,
        "byIndex": {i: by_index[i] for i in sorted(by_index)},
    }


def _end_of(o: Order) -> str:
    """How a parent ended, its reason's figures left out (so equal ends count together)."""
    if o.status.value not in TERMINAL:
        return f"not ended by the deadline ({o.status.value})"
    if o.status.value == "filled":
        return "filled"
    return f"{o.status.value} ({re.sub(r'[0-9.]+', 'N', o.reason or '')})"


def _reason_kind(note: str | None) -> str:
    """A skipped slice's note, without its figures (so equal reasons count together)."""
    if not note:
        return "no reason on the trail"
    for kind in ("nothing to send", "below the venue's smallest order", "catching up", "merged"):
        if kind in note:
            return kind
    return note[:60]


# ------------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------------
async def _post(http: aiohttp.ClientSession, base: str, cid: str, qty: Decimal, slices: int, interval_ms: int) -> str:
    body = (
        f'{{"pair": "{PAIR}", "side": "buy", "type": "twap", "quantity": {qty}, "clientOrderId": "{cid}", '
        f'"algo": {{"durationMs": {slices * interval_ms}, "slices": {slices}}}}}'
    )
    async with http.post(
        f"{base}/api/orders", data=body, headers={"Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as r:  # fmt: skip
        text = await r.text()
        if r.status != 201:
            raise RuntimeError(f"HTTP {r.status}: {text[:200]}")
        oid: str = json.loads(text)["orderId"]
        return oid


async def _get(http: aiohttp.ClientSession, base: str, oid: str) -> bytes:
    async with http.get(f"{base}/api/orders/{oid}", timeout=aiohttp.ClientTimeout(total=30)) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"GET /api/orders/{oid}: HTTP {r.status}: {data[:200]!r}")
        return data


async def stage(
    nats_url: str,
    nats_pid: int | None,
    tmp: Path,
    tally: Tally,
    parents: int = PARENTS,
    slices: int = SLICES,
    interval_ms: int = INTERVAL_MS,
    python_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The whole stage; everything it starts is stopped before it returns (also on errors). ``python_args`` go before
    ``-m tbx.cli run`` (``-m cProfile -o FILE``: ``--profile``)."""
    tbx: Tbx | None = None
    nc: nats.NATS | None = None
    t_stage = time.perf_counter()
    qty = Decimal(QTY) * slices
    try:
        tbx = Tbx(nats_url, tmp, "algos", python_args=python_args)
        await tbx.wait_healthy()
        watch = Watch()
        nc = await nats.connect(nats_url, name="bench-algos", pending_size=256 * 1024 * 1024)
        await nc.subscribe(f"{tbx.prefix}.events.orders.{PAIR}", cb=watch.on_msg, pending_msgs_limit=-1)
        await nc.flush()
        say(f"algos: raw NATS round trip and JetStream stored ack, {REF_ROUND_TRIPS} each")
        raw, stored = await round_trips(nc, nats_url, REF_ROUND_TRIPS)

        say(f"algos: the idle service's CPU for {IDLE_S:g} s")
        c0, n0, t0 = tree_cpu_s(tbx.pid), cpu_s(nats_pid), time.perf_counter()
        await asyncio.sleep(IDLE_S)
        idle_s = time.perf_counter() - t0
        idle = {"tbx": (tree_cpu_s(tbx.pid) - c0) / idle_s, "nats": (cpu_s(nats_pid) - n0) / idle_s}
        rss_start, _ = rss_mb(tbx.pid)

        say(f"algos: {parents} TWAPs x {slices} slices, {interval_ms} ms apart, placed at once")
        rss_peak = rss_start
        refused: Counter[str] = Counter()
        ids: list[str] = []
        async with aiohttp.ClientSession() as http:
            c1, n1, t1 = tree_cpu_s(tbx.pid), cpu_s(nats_pid), time.perf_counter()
            start_ms = time.time() * 1000
            ref = asyncio.create_task(timers(parents, slices, interval_ms, start_ms + 50))
            posts = await asyncio.gather(
                *(_post(http, tbx.base, f"algo-{i}", qty, slices, interval_ms) for i in range(parents)),
                return_exceptions=True,
            )
            for r in posts:
                if isinstance(r, BaseException):
                    refused[str(r)[:80]] += 1
                else:
                    ids.append(r)
            watch.expected = len(ids)
            if watch.done() >= len(ids):
                watch.ended.set()
            deadline = time.monotonic() + slices * interval_ms / 1000 + END_GRACE_S
            while not watch.ended.is_set() and time.monotonic() < deadline:
                rss_peak = max(rss_peak, rss_mb(tbx.pid)[0])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.ended.wait(), 1.0)
            wall = time.perf_counter() - t1
            cpu = {"tbx": tree_cpu_s(tbx.pid) - c1, "nats": cpu_s(nats_pid) - n1}
            rss_end, kids = rss_mb(tbx.pid)
            rss_peak = max(rss_peak, rss_end)
            reference = await ref

            # the router's own records: each parent as stored when it ended (its last event; read back from ORDERS
            # a parent that left memory costs a read per event of the pair in its lifetime), else as it is now (a
            # live parent is in memory), and any child the bench did not see on the bus
            finals: dict[str, Order] = {}
            unread: Counter[str] = Counter()
            for oid in ids:
                try:
                    finals[oid] = watch.finals.get(oid) or _order_dec.decode(await _get(http, tbx.base, oid))
                except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                    unread[f"a parent not read back: {str(e)[:60]}"] += 1
            fetched: dict[str, Child] = {}
            for final in finals.values():
                for cid in final.children:
                    if cid not in watch.children:
                        try:
                            k = _order_dec.decode(await _get(http, tbx.base, cid))
                        except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
                            unread[f"a child not read back: {str(e)[:60]}"] += 1
                            continue
                        fetched[cid] = Child(
                            k.order_id, k.client_order_id, final.order_id, k.quantity, k.created_at, float("nan"),
                            "fetched", k.status.value, k.closed_at, k.filled_quantity,
                        )  # fmt: skip
        res = analyse(finals, watch, fetched, slices)
        res["problems"].update(unread)
        not_filled = len(ids) - sum(1 for f in finals.values() if f.status.value == "filled")
        tally.add(f"algos: {parents} TWAP parents", parents, len(ids), refused, not_filled)
        made = len(res["made"]) and res["children"]
        res.update(
            {
                "plan": {"parents": parents, "slices": slices, "intervalMs": interval_ms, "quantity": str(qty)},
                "placed": len(ids),
                "refused": dict(refused),
                "notFilled": not_filled,
                "reference": reference,
                "rawMs": raw,
                "storedMs": stored,
                "seenMissing": len(fetched),
                "eventsSeen": watch.events,
                "undecodable": watch.undecodable,
                "wallSeconds": round(wall, 1),
                "cpuSeconds": {k: round(v, 2) for k, v in cpu.items()},
                "idleCores": {k: round(v, 3) for k, v in idle.items()},
                "cpuPerChildMs": {k: round((cpu[k] - idle[k] * wall) / made * 1000, 3) if made else None for k in cpu},
                "cpuPerChildGrossMs": {k: round(cpu[k] / made * 1000, 3) if made else None for k in cpu},
                "rssMb": {"start": round(rss_start, 1), "peak": round(rss_peak, 1), "end": round(rss_end, 1)},
                "descendants": kids,
                "logProblems": dict(tbx.log_problems()),
                "seconds": round(time.perf_counter() - t_stage, 1),
            }
        )
        return res
    finally:
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if tbx is not None:
            tbx.stop()


# ------------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------------
def _stats(xs: list[float]) -> tuple[float, float, float, float]:
    if not xs:
        return (float("nan"),) * 4  # type: ignore[return-value]
    return pct(xs, 50), pct(xs, 95), pct(xs, 99), max(xs)


def _by_phase(by_index: dict[int, list[float]], slices: int) -> list[tuple[str, list[float]]]:
    """Slice 0 (due when its parent is accepted: the acceptance's own writes come first), then the first, middle and
    last tenth of the others: does the drift grow as the run goes on?"""
    out = [("slice 0 (due at acceptance)", by_index.get(0, []))]
    rest = slices - 1
    if rest <= 0:
        return out
    tenth = max(1, rest // 10)
    for name, lo in (("first", 1), ("middle", 1 + (rest - tenth) // 2), ("last", slices - tenth)):
        xs = [x for i in range(lo, lo + tenth) for x in by_index.get(i, [])]
        out.append((f"slices {lo}..{lo + tenth - 1} ({name} tenth)", xs))
    return out


def add_rows(t: Table, res: dict[str, Any]) -> None:
    """This stage's section of the harness's table (and its figures for harness.json)."""
    plan = res["plan"]
    p, s, iv = plan["parents"], plan["slices"], plan["intervalMs"]
    raw50 = pct(res["rawMs"], 50)
    ref50 = pct(res["reference"], 50) if res["reference"] else float("nan")
    head = f"{TITLE}: {p} TWAPs x {s} slices, {iv} ms apart"
    t.lines.append(
        f"{head:<58} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50/raw':>8} {'p50/timer':>9}"
    )
    rows = [
        ("drift: due -> child made (createdAt, the router)", res["made"]),
        ("  due -> parent's slice_sent written", res["decided"]),
        ("  due -> child's first event seen on the bus", [x for x in res["seen"] if x == x]),
        ("  due -> child filled (closedAt)", res["done"]),
        *[(f"  made, {name}", xs) for name, xs in _by_phase(res["byIndex"], s)],
        (f"reference: {p} x {s} plain asyncio timers, bench loop", res["reference"]),
        ("reference: raw NATS request/reply round trip", res["rawMs"]),
        ("reference: JetStream publish -> stored ack", res["storedMs"]),
    ]
    for name, xs in rows:
        a, b, c, d = _stats(xs)
        t.lines.append(f"{name:<58} {len(xs):>6} {a:8.3f} {b:8.3f} {c:8.3f} {d:8.3f} {a / raw50:8.1f} {a / ref50:9.1f}")
        t.figures.append(
            {
                "name": f"algos: {name.strip()}",
                "n": len(xs),
                "p50Ms": round(a, 4),
                "p95Ms": round(b, 4),
                "p99Ms": round(c, 4),
                "maxMs": round(d, 4),
            }
        )
    sent_line = (
        f"{res['sent']:,} of {res['planned']:,} planned ({res['children']:,} children; {res['merged']:,} merged into a "
        f"later child; {res['skipped']:,} skipped"
        + (": " + ", ".join(f"{k} x{v}" for k, v in res["skippedWhy"].items()) if res["skippedWhy"] else "")
        + ")"
    )
    ends = ", ".join(f"{k} x{v}" for k, v in res["ends"].items())
    problems = res["problems"]
    check = (
        "no slice sent twice, no child made twice, none before its time, every child filled"
        if not problems
        else "!!! " + "; ".join(f"{k} x{v}" for k, v in problems.items()) + " !!!"
    )
    cpu, gross, idle = res["cpuPerChildMs"], res["cpuPerChildGrossMs"], res["idleCores"]
    mem = res["rssMb"]
    values = [
        ("slices sent / planned", sent_line),
        ("parents", f"{res['placed']} placed, ended: {ends}; their starts spread over {res['startSpreadMs']} ms"),
        ("checks", check),
        (
            "CPU per child made (less the idle service)",
            f"tbx run {_ms(cpu['tbx'])}, nats-server {_ms(cpu['nats'])} (gross {_ms(gross['tbx'])} / "
            f"{_ms(gross['nats'])}; idle {idle['tbx']:.2f} / {idle['nats']:.2f} cores; "
            f"{res['cpuSeconds']['tbx']:.1f} / {res['cpuSeconds']['nats']:.1f} CPU s in {res['wallSeconds']} s)",
        ),
        (
            "tbx run resident memory",
            f"{mem['start']:.0f} MB before, {mem['peak']:.0f} MB at the peak, {mem['end']:.0f} MB at the end "
            f"({res['descendants']} child processes counted)",
        ),
        (
            "followed on the bus",
            f"{res['eventsSeen']:,} order events; children read back (not seen): {res['seenMissing']}",
        ),
    ]
    for name, value in values:
        t.lines.append(f"  {name:<56} {value}")
    t.figures.append(
        {"name": "algos: counts", **{k: res[k] for k in ("planned", "sent", "children", "merged", "skipped")}}
    )


def _ms(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f} ms"


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """harness.json: the figures without the sample lists."""
    out = {k: v for k, v in res.items() if not isinstance(v, list) and k != "byIndex"}
    for key in ("made", "decided", "seen", "done", "reference", "rawMs", "storedMs"):
        xs = [x for x in res[key] if x == x]
        a, b, c, d = _stats(xs)
        out[key] = {"n": len(xs), **{f"p{q}Ms": round(v, 4) for q, v in zip((50, 95, 99), (a, b, c), strict=True)}}
        out[key]["maxMs"] = round(d, 4)
    return out


# ------------------------------------------------------------------------------------------------------
# this stage alone
# ------------------------------------------------------------------------------------------------------
async def alone(
    parents: int, slices: int, interval_ms: int, profile: str | None = None
) -> tuple[str, dict[str, Any], Tally]:
    tally = Tally()
    python_args = ("-m", "cProfile", "-o", profile) if profile else ()
    async with nats_alone("tbx-algos-") as (url, pid, tmp):
        res = await stage(url, pid, tmp, tally, parents, slices, interval_ms, python_args)
    t = Table(1.0)
    add_rows(t, res)
    title = f"{TITLE} stage alone ({time.strftime('%Y-%m-%d %H:%M')}), load average {_load()}, drift in ms"
    title += " (tbx run under cProfile: not for quoting)" if profile else ""
    return t.text(title), res, tally


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.algos", description=__doc__.split("\n\n")[0])
    p.add_argument("--parents", type=int, default=PARENTS, help=f"concurrent TWAP parents (default {PARENTS})")
    p.add_argument("--slices", type=int, default=SLICES, help=f"slices of each (default {SLICES})")
    p.add_argument("--interval-ms", type=int, default=INTERVAL_MS, help=f"ms between slices (default {INTERVAL_MS})")
    p.add_argument("--profile", metavar="FILE", help="run tbx run under cProfile, stats to FILE (slower)")
    p.add_argument("--out", help="also write the table to OUT.txt and the figures to OUT.json")
    a = p.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)  # as tbx run's loop
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:
            text, res, tally = runner.run(alone(a.parents, a.slices, a.interval_ms, a.profile))
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    print(text)
    print(tally.line())
    if a.out:
        out = Path(a.out)
        out.with_suffix(".txt").write_text(text + "\n" + tally.line() + "\n")
        out.with_suffix(".json").write_text(json.dumps(summary(res), indent=1, default=str) + "\n")
    return 1 if tally.failures or res["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
