"""The hot-path bench of issue 22: the service's order path beside the limits of its bus, measured in the same run.

Against one nats-server (the harness's, or a private one with ``python -m bench.hotpath``) and a fresh ``tbx run``
(the harness's ``Tbx``: a fresh BUS_PREFIX, SERVICE_ENV, i.e. ``bench.service_env.ACCEPT_EVERY_ORDER``):

Bus limits, raw nats-py against the same nats-server (the service idle, not in the path):
  raw       request/reply round trip to a trivial responder, one at a time (``phase_raw``);
  write     one durable write awaited: a JetStream publish to a file stream until its stored ack, one at a time
            (``phase_js``): p50 and the rate;
  pipeline  N durable writes to a file stream with 1,000 in flight (``js.publish_async``): writes/s;
  read      those N read back by a pull consumer fetching 500 at a time, one ack per batch (AckPolicy.ALL, the
            last message of each batch acked): messages/s;
  CPU       nats-server's CPU per unbatched (awaited) and per batched (pipelined) write, from /proc (``cpu_s``), less
            what it uses idle;
  floor     the path's own NATS floor: K awaited durable writes then R request/reply round trips, one after the
            other, where K and R are counted by tracing one signal -> fill at a time with a wildcard spy
            (``trace_counts``): every publish answered by a stored ack (``{"stream":..``) and every request between
            the signal's publish and its fill event on ``<prefix>.events.fills.>``. Lease renewals, heartbeats,
            market data and advisories are left out.
The service (all of ``tbx run``: its CPU counts every descendant process too), ``--repeat N`` times, each time a
fresh ``tbx run`` (median of the N reported):
  orders    orders.submit pipelined, 64 in flight, each checked completely filled: orders/s, CPU ms per order of
            tbx run (with its children) and of nats-server;
  bus       messages and durable writes per order (``phase_bus_count``: a wildcard subscriber counts everything);
  signal    a signal -> its fill, one at a time (``phase_signal``): p50 / p99, and p50 / the floor;
  POST      POST /api/orders, the harness's rate search (``bench.loadgen``, open loop): the highest step with
            p99 < 20 ms, >= 95 % of its rate achieved and no failure;
  snapshot  the full portfolio snapshot of 10,000 positions (``bench.ledger_bench.valuation_samples``);
  memory    resident memory of tbx run and its descendants after a warm-up and at the end.
Every row gives its value, its target (issue 22), met / NOT MET, and its ratio to the bus limits of the same run:
latencies as x the raw round trip p50 and x the awaited write p50; rates as the share of the pipelined write rate
they use (orders/s x durable writes per order / pipelined writes/s). Any order refused or not completely filled
flags the run (exit 1). No timing is asserted anywhere; bounded in count and time; 127.0.0.1 only; everything
started is stopped by pid (``STARTED`` / ``stop_all``).

    .venv/bin/python -m bench.hotpath               # about 3 to 5 minutes
    .venv/bin/python -m bench.hotpath --quick       # about a minute, counts scaled down: not for quoting
    .venv/bin/python -m bench.hotpath --repeat 3    # the service phases 3 times (3 fresh tbx runs), medians

In ``make bench`` it is the last stage (on the harness's nats-server); its rows close the table, its figures are
``hotpath`` in ``harness.json``, and it also writes ``bench/results/hotpath.txt`` and ``hotpath.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.js.api
from nats.aio.msg import Msg as NatsMsg

from bench.harness import (
    RAW_PAYLOAD,
    RESULTS,
    T_ACHIEVED,
    Ctx,
    Table,
    Tally,
    Tbx,
    cpu_s,
    descendants,
    nats_alone,
    pct,
    phase_bus_count,
    phase_js,
    phase_raw,
    phase_signal,
    rss_mb,
    say,
    stop_all,
    verdict,
)
from bench.harness import Plan as HarnessPlan
from bench.ledger_bench import valuation_samples
from bench.live_venue import _Server

TITLE = "hot path (issue 22)"

# targets of issue 22
T_ORDER_RATE = 2000.0  # orders/s through all actors, durable, 64 in flight
T_CPU_MS = 0.8  # CPU per order, every process together
T_BUS_MSGS = 15.0  # bus messages per order
T_PATH_WRITES = 5  # durable writes on the critical path
T_FLOOR_X = 1.5  # signal -> fill p50 <= 1.5 x the path's own NATS floor
T_SIGNAL_P99_MS = 5.0
T_POST_RATE = 1000.0
T_POST_P99_MS = 20.0
T_SNAPSHOT_MS = 20.0  # 10,000-position full snapshot p99
T_FLAT = 0.05  # memory "flat": at most 5 % more at the end than after the warm-up
SNAPSHOT_POSITIONS = 10_000
IDLE_S = 3.0  # nats-server's idle CPU measured this long before the bus limits (taken out of its CPU per write)
QUIET_S = 0.3  # the bus left quiet before and after each traced signal


@dataclass(frozen=True)
class Plan:
    raw: int = 2000  # raw round trips, one at a time
    writes: int = 2000  # durable writes awaited one at a time
    pipelined: int = 20_000  # durable writes pipelined, then read back in batches
    in_flight: int = 1000
    batch: int = 500
    floor: int = 500  # samples of the path's NATS floor (K writes + R requests each)
    traces: int = 5  # signals traced one at a time
    warmup: int = 2000  # orders before the service phases (memory "before" is read after them)
    signal: int = 1000  # signals -> fill one at a time
    bus_count: int = 2000  # orders counted by the wildcard subscriber (16 in flight)
    orders: int = 20_000  # orders.submit, 64 in flight
    concurrency: int = 64
    steps: tuple[int, ...] = (100, 250, 500, 750, 1000, 1500, 2000)  # POST /api/orders rate search
    step_s: float = 6.0
    snapshot_calls: int = 30
    repeat: int = 1
    drain_s: float = 120.0
    max_minutes: float = 25.0


FULL = Plan()
QUICK = Plan(
    raw=500, writes=500, pipelined=5000, floor=100, traces=3, warmup=300, signal=200, bus_count=300, orders=3000,
    steps=(100, 250, 500, 1000), step_s=2.0, snapshot_calls=10, drain_s=60.0, max_minutes=10.0,
)  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# the trace of one signal -> fill: what is on its critical path (pure: a list of messages in, counts out)
# ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Seen:
    """One message nats-server carried, as the wildcard spy saw it (in the order it saw them)."""

    subject: str
    reply: str | None
    data: bytes


@dataclass
class Trace:
    """The durable writes (publishes answered by a stored ack) and the requests between a signal's publish and its
    fill event, in order; the rest of what went over the bus in that window, by kind."""

    writes: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    other: Counter[str] = field(default_factory=Counter)
    steps: list[str] = field(default_factory=list)  # writes (W) and requests (R) in order, with their connection
    found: bool = False  # both ends (the signal's publish and its fill event) were seen

    @property
    def k(self) -> int:
        return len(self.writes)

    @property
    def r(self) -> int:
        return len(self.requests)


class _SignalLite(msgspec.Struct, rename="camel"):
    signal_id: str | None = None


class _FillLite(msgspec.Struct, rename="camel"):
    client_order_id: str | None = None
    order_complete: bool | None = None


_sig_dec = msgspec.json.Decoder(_SignalLite)
_fill_dec = msgspec.json.Decoder(_FillLite)
STORED_ACK = b'{"stream":'


def idle_traffic(subject: str) -> bool:
    """Traffic that is not the order's: lease renewals (and their stream lookups), heartbeats, market data, the
    server's advisories and system subjects."""
    return (
        "LEASES" in subject or ".health." in subject or ".md." in subject or subject.startswith(("$JS.EVENT.", "$SYS."))
    )


def pattern(subject: str, prefix: str) -> str:
    """A subject with the bus prefix as ``<p>`` and long tokens (ids, hashes) as ``*``: what the trace lists."""
    s = subject.replace(prefix, "<p>").replace(prefix.upper(), "<P>")
    return ".".join("*" if len(tok) > 16 else tok for tok in s.split("."))


def _is(msg: Seen, dec: Any, pred: Any) -> bool:
    try:
        return bool(pred(dec.decode(msg.data)))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False


def trace_counts(msgs: Sequence[Seen], prefix: str, signal_id: str) -> Trace:
    """What one signal -> fill put on the bus, from a wildcard spy's messages (``msgs``, in the order seen, running
    a little past the fill so the last stored acks are in).

    The window runs from the signal's publish on ``<prefix>.signals.submit`` (its ``signalId``) to the first fill
    event on ``<prefix>.events.fills.`` of its order (``clientOrderId`` ``<signalId>-1``, ``orderComplete``), both
    included. In it, outside idle traffic (``idle_traffic``):
      a durable write is a message with a reply subject that is later answered by a stored ack (``{"stream":...``;
        the ack itself may come after the window: the fill's own write is on the path);
      a request is any other message with a reply subject that is not JetStream's (a delivery's ``$JS.ACK...``),
        not itself a reply (``_INBOX.``) and not a pull consumer's fetch (``$JS.API.CONSUMER.MSG.NEXT``);
      the rest is counted in ``other``: deliveries, acks, replies, pulls, plain publishes.
    ``steps`` lists the writes (W) and requests (R) in order, each with its connection (c1, c2, ...: by the inbox
    prefix of its reply subject, one per nats-py connection), so what runs beside the path shows.
    The answers to idle traffic (a lease's stored ack) are left out too. Everything in the window is taken as one after
    the other: at one order at a time that is the path."""
    subj_signal = f"{prefix}.signals.submit"
    subj_fills = f"{prefix}.events.fills."
    start = next(
        (
            i
            for i, m in enumerate(msgs)
            if m.subject == subj_signal
            and not (m.reply or "").startswith("$JS.")  # the publish, not a delivery of it
            and _is(m, _sig_dec, lambda s: s.signal_id == signal_id)
        ),
        None,
    )
    out = Trace()
    if start is None:
        return out
    cid = f"{signal_id}-1"
    end = next(
        (
            i
            for i in range(start + 1, len(msgs))
            if msgs[i].subject.startswith(subj_fills)
            and _is(msgs[i], _fill_dec, lambda f: f.client_order_id == cid and f.order_complete)
        ),
        None,
    )
    if end is None:
        return out
    out.found = True
    stored = {m.subject for m in msgs[start:] if m.subject.startswith("_INBOX.") and m.data.startswith(STORED_ACK)}
    conns: dict[str, str] = {}  # a connection's inbox prefix (_INBOX.<nuid>.) -> c1, c2, ... in order of appearance

    def step(kind: str, m: Seen) -> None:
        parts = (m.reply or "").split(".")
        conn = conns.setdefault(parts[1], f"c{len(conns) + 1}") if len(parts) > 2 and parts[0] == "_INBOX" else "?"
        out.steps.append(f"{kind} {pattern(m.subject, prefix)} ({conn})")

    for m in msgs[start : end + 1]:
        if idle_traffic(m.subject) or (m.subject.startswith("_INBOX.") and b"_LEASES" in m.data[:100]):
            continue
        if m.subject.startswith("_INBOX."):
            out.other["reply" if not m.data.startswith(STORED_ACK) else "stored ack"] += 1
        elif m.subject.startswith("$JS.ACK."):
            out.other["ack"] += 1
        elif not m.reply:
            out.other["plain publish"] += 1
        elif m.reply in stored:
            out.writes.append(pattern(m.subject, prefix))
            step("W", m)
        elif m.reply.startswith("$JS."):
            out.other["delivery"] += 1
        elif m.subject.startswith("$JS.API.CONSUMER.MSG.NEXT."):
            out.other["pull (fetch)"] += 1
        else:
            out.requests.append(pattern(m.subject, prefix))
            step("R", m)
    return out


def path_counts(traces: Iterable[Trace]) -> tuple[int, int]:
    """K and R of the path: the (writes, requests) seen most often among the traces found (ties: the larger)."""
    seen = Counter((t.k, t.r) for t in traces if t.found)
    if not seen:
        raise RuntimeError("no traced signal was seen from its publish to its fill event")
    top = max(seen.values())
    return max(kr for kr, n in seen.items() if n == top)


async def trace(ctx: Ctx, url: str, n: int) -> list[Trace]:
    """``n`` signals one at a time, each with the bus quiet before and after, under a wildcard spy."""
    spy = await nats.connect(url, name="bench-hotpath-spy", pending_size=64 * 1024 * 1024)
    seen: list[Seen] = []

    async def cb(msg: NatsMsg) -> None:
        seen.append(Seen(msg.subject, msg.reply or None, msg.data))

    out: list[Trace] = []
    refused: Counter[str] = Counter()
    try:
        await spy.subscribe(">", cb=cb, pending_msgs_limit=-1)
        await spy.flush()
        for i in range(n):
            await asyncio.sleep(QUIET_S)
            sid = f"hptrace{uuid.uuid4().hex[:6]}-{i}"
            fut = ctx.fills.expect(f"{sid}-1")
            mark = len(seen)
            await ctx.nc.publish(f"{ctx.p}.signals.submit", ctx.signal_body(sid, i))
            try:
                await asyncio.wait_for(fut, 10)
            except TimeoutError:
                refused["traced signal: no fill within 10 s"] += 1
            except RuntimeError as e:  # its signal was not executed (SignalWatch)
                refused[str(e)[:80]] += 1
            await asyncio.sleep(QUIET_S)  # the last stored acks
            await spy.flush()
            out.append(trace_counts(seen[mark:], ctx.p, sid))
    finally:
        await spy.close()
    ctx.tally.add("hot path: traced signals", n, n - sum(refused.values()), refused, 0)
    return out


# ------------------------------------------------------------------------------------------------------
# the bus limits (raw nats-py, the service idle)
# ------------------------------------------------------------------------------------------------------
async def idle_cores(pid: int | None, seconds: float) -> float:
    c0, t0 = cpu_s(pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return (cpu_s(pid) - c0) / (time.perf_counter() - t0)


@contextlib.asynccontextmanager
async def file_stream(nc: nats.NATS, tag: str) -> Any:
    js = nc.jetstream()
    uid = uuid.uuid4().hex[:8]
    name, subject = f"BENCHHP{tag}_{uid}", f"benchhp.{tag}.{uid}"
    await js.add_stream(name=name, subjects=[subject], storage=nats.js.api.StorageType.FILE)
    try:
        yield name, subject
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)


async def bus_limits(ctx: Ctx, nats_pid: int | None, plan: Plan) -> dict[str, Any]:
    idle = await idle_cores(nats_pid, IDLE_S)
    say(f"hot path: raw round trip x{plan.raw:,}")
    raw = await phase_raw(ctx, plan.raw)

    say(f"hot path: durable writes awaited x{plan.writes:,}")
    c0, t0 = cpu_s(nats_pid), time.perf_counter()
    stored = await phase_js(ctx, plan.writes)  # (50 untimed first: their CPU is counted, and divided by, below)
    wall = time.perf_counter() - t0
    unbatched_us = (cpu_s(nats_pid) - c0 - idle * wall) / (plan.writes + 50) * 1e6

    say(f"hot path: {plan.pipelined:,} durable writes, {plan.in_flight:,} in flight; read back {plan.batch} at a time")
    js = ctx.nc.jetstream(publish_async_max_pending=plan.in_flight)
    async with file_stream(ctx.nc, "W") as (name, subject):
        c0, t0 = cpu_s(nats_pid), time.perf_counter()
        futs = [await js.publish_async(subject, RAW_PAYLOAD) for _ in range(plan.pipelined)]
        acks = await asyncio.gather(*futs)
        wall = time.perf_counter() - t0
        batched_us = (cpu_s(nats_pid) - c0 - idle * wall) / plan.pipelined * 1e6
        if sorted(a.seq for a in acks) != list(range(1, plan.pipelined + 1)):
            raise RuntimeError("pipelined writes: the stored acks are not the sequence 1..N")
        pipelined_rate = plan.pipelined / wall

        sub = await js.pull_subscribe(
            subject,
            durable="reader",
            stream=name,
            config=nats.js.api.ConsumerConfig(ack_policy=nats.js.api.AckPolicy.ALL, max_ack_pending=plan.batch * 2),
        )
        got = 0
        t0 = time.perf_counter()
        while got < plan.pipelined:
            msgs = await sub.fetch(min(plan.batch, plan.pipelined - got), timeout=10)
            got += len(msgs)
            await msgs[-1].ack()
        read_rate = got / (time.perf_counter() - t0)
        await sub.unsubscribe()
    return {
        "rawMs": raw,
        "writeMs": stored,
        "awaitedRate": round(1000 / statistics.fmean(stored), 1),
        "pipelinedRate": round(pipelined_rate, 1),
        "readRate": round(read_rate, 1),
        "natsIdleCores": round(idle, 3),
        "natsUsPerUnbatchedWrite": round(unbatched_us, 2),
        "natsUsPerBatchedWrite": round(batched_us, 2),
    }


async def floor(nc: nats.NATS, url: str, k: int, r: int, n: int) -> list[float]:
    """The path's own NATS floor: ``k`` durable writes awaited then ``r`` request/reply round trips, one after the
    other, ``n`` times (after 20 untimed): ms of each."""
    echo = await nats.connect(url, name="bench-hotpath-echo")
    subject = f"benchecho.{uuid.uuid4().hex[:8]}"
    js = nc.jetstream()
    out: list[float] = []
    try:

        async def reply(msg: NatsMsg) -> None:
            await msg.respond(msg.data)

        await echo.subscribe(subject, cb=reply)
        await echo.flush()
        await asyncio.sleep(0.05)  # interest seen by the other connection
        async with file_stream(nc, "F") as (_, js_subject):
            for i in range(n + 20):
                t0 = time.perf_counter()
                for _ in range(k):
                    await js.publish(js_subject, RAW_PAYLOAD, timeout=5)
                for _ in range(r):
                    await nc.request(subject, RAW_PAYLOAD, timeout=5)
                if i >= 20:
                    out.append((time.perf_counter() - t0) * 1000)
    finally:
        await echo.close()
    return out


# ------------------------------------------------------------------------------------------------------
# the service
# ------------------------------------------------------------------------------------------------------
def group_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of ``pid`` and of each of its descendants, by pid."""
    return {p: cpu_s(p) for p in (pid, *descendants(pid))}


async def orders_flow(ctx: Ctx, nats_pid: int | None, tag: str, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` orders through ``ctx.pipelined`` in two halves, with the CPU of tbx run's whole process tree and of
    nats-server around each; the resident memory of the tree 2 s after each half (outside the timed parts)."""
    pid = ctx.tbx.pid
    tbx = nats_s = bench = seconds = 0.0
    accepted = not_filled = gone = kids = 0
    refused: Counter[str] = Counter()
    rss: list[float] = []
    for half, (start, count) in zip("ab", ((0, n // 2), (n // 2, n - n // 2)), strict=True):
        g0, n0, h0 = group_cpu(pid), cpu_s(nats_pid), time.process_time()
        res = await ctx.pipelined(f"{tag}{half}", start, count, concurrency)
        g1, n1, h1 = group_cpu(pid), cpu_s(nats_pid), time.process_time()
        gone += sum(1 for p in g0 if p not in g1)  # a process that ended meanwhile: its CPU is lost (said)
        kids = max(kids, len(g1) - 1)
        tbx += sum(c - g0.get(p, 0.0) for p, c in g1.items())
        nats_s += n1 - n0
        bench += h1 - h0
        seconds += res["seconds"] or 0.0  # first submit -> last fill
        accepted += res["accepted"]
        not_filled += res["notFilled"]
        refused.update(res["refused"])
        await asyncio.sleep(2.0)
        rss.append(round(rss_mb(pid)[0], 1))
    filled = accepted - not_filled
    per = (lambda s: round(s / filled * 1000, 4)) if filled else (lambda s: None)
    return {
        "n": n,
        "accepted": accepted,
        "refused": dict(refused),
        "notFilled": not_filled,
        "seconds": round(seconds, 3),
        "fillRate": round(filled / seconds, 1) if filled and seconds else 0.0,
        "cpuMsPerOrder": {"tbx": per(tbx), "nats": per(nats_s), "total": per(tbx + nats_s)},
        "benchMsPerOrder": per(bench),
        "cores": {"tbx": round(tbx / seconds, 2), "nats": round(nats_s / seconds, 2)} if seconds else {},
        "childProcesses": kids,
        "processesGone": gone,
        "rssHalfMb": rss[0],
        "rssFullMb": rss[1],
    }


async def rate_search(ctx: Ctx, tag: str, steps: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    """The harness's search: POST /api/orders at each rate; it stops at the first step that fails (p99 >= 20 ms,
    < 95 % of the rate achieved, or any order refused or not filled)."""
    out = []
    for rate in steps:
        say(f"hot path: POST /api/orders at {rate}/s for {seconds:g}s")
        res = await ctx.post_orders(f"{tag}r{rate}", rate, seconds)
        lat = res.pop("latencies_ms")
        bad = sum(res["refused"].values()) + res["not_filled"]
        res["p50Ms"] = pct(lat, 50) if lat else None
        res["p99Ms"] = pct(lat, 99) if lat else None
        res["passed"] = bool(lat) and pct(lat, 99) < T_POST_P99_MS and res["achieved_rate"] >= T_ACHIEVED * rate
        res["passed"] = res["passed"] and not bad
        res.pop("failed_ids", None)
        out.append(res)
        if not res["passed"]:
            break
    return out


def sustained(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [s for s in steps if s["passed"]]
    return passed[-1] if passed else None


async def service_phases(ctx: Ctx, nats_pid: int | None, plan: Plan, i: int) -> dict[str, Any]:
    """The service phases of one run, on a service already seeded and warmed up."""
    n = f"[{i + 1}/{plan.repeat}]"
    say(f"hot path {n}: signal -> fill one at a time x{plan.signal:,}")
    sig = await phase_signal(ctx, plan.signal)
    say(f"hot path {n}: bus messages per order ({plan.bus_count:,} orders, counted)")
    bus = await phase_bus_count(ctx, plan.bus_count, 16)
    say(f"hot path {n}: {plan.orders:,} orders.submit, {plan.concurrency} in flight")
    flow = await orders_flow(ctx, nats_pid, f"hp{i}fo", plan.orders, plan.concurrency)
    steps = await rate_search(ctx, f"hp{i}", plan.steps, plan.step_s)
    say(f"hot path {n}: the full snapshot of {SNAPSHOT_POSITIONS:,} positions x{plan.snapshot_calls}")
    snap, _ = valuation_samples(SNAPSHOT_POSITIONS, plan.snapshot_calls)
    return {"signalMs": sig, "busCount": bus, "flow": flow, "steps": steps, "snapshotMs": snap}


async def stage(url: str, nats_pid: int | None, tmp: Path, tally: Tally, plan: Plan = FULL) -> dict[str, Any]:
    """The whole stage, ``plan.repeat`` fresh tbx runs one after the other. With the first one idle (seeded and warmed
    up): the bus limits, the trace and the path's floor. Everything it starts is stopped before it returns (also on
    errors)."""
    t_stage = time.perf_counter()
    out: dict[str, Any] = {"plan": plan.__dict__ | {"steps": list(plan.steps)}, "runs": [], "loadAtStart": _load()}
    problems: Counter[str] = Counter()
    for i in range(plan.repeat):
        tbx = Tbx(url, tmp, f"hotpath{i}")
        ctx = Ctx(tbx, _Server(url, nats_pid), HarnessPlan(drain_s=plan.drain_s), tally)  # type: ignore[arg-type]
        try:
            await tbx.wait_healthy()
            await ctx.open()
            rss_fresh, _ = rss_mb(tbx.pid)
            if i == 0:
                out["limits"] = await bus_limits(ctx, nats_pid, plan)
            await ctx.seed()
            say(f"hot path [{i + 1}/{plan.repeat}]: warm-up, {plan.warmup:,} orders")
            await ctx.pipelined(f"hp{i}wu", 0, plan.warmup, plan.concurrency)
            await asyncio.sleep(2.0)
            rss_before, _ = rss_mb(tbx.pid)
            if i == 0:
                say(f"hot path: tracing {plan.traces} signals, one at a time (wildcard spy)")
                traces = await trace(ctx, url, plan.traces)
                k, r = path_counts(traces)
                out.update(k=k, r=r, traces=[_trace_json(t) for t in traces])
                say(f"hot path: the path's NATS floor: {k} writes + {r} requests, x{plan.floor}")
                out["floorMs"] = await floor(ctx.nc, url, k, r, plan.floor)
            run = await service_phases(ctx, nats_pid, plan, i)
            await asyncio.sleep(2.0)
            rss_after, kids = rss_mb(tbx.pid)
            run.update(
                prefix=ctx.p,
                rssMb={"fresh": round(rss_fresh, 1), "before": round(rss_before, 1), "after": round(rss_after, 1)},
                descendants=kids,
            )
            out["runs"].append(run)
        finally:
            await ctx.close()
            problems.update(tbx.log_problems())
            tbx.stop()
    out["logProblems"] = dict(problems)
    out["seconds"] = round(time.perf_counter() - t_stage, 1)
    out["loadAtEnd"] = _load()
    return out


def _trace_json(t: Trace) -> dict[str, Any]:
    return {
        "found": t.found,
        "k": t.k,
        "r": t.r,
        "writes": t.writes,
        "requests": t.requests,
        "steps": t.steps,
        "other": dict(t.other),
    }


# ------------------------------------------------------------------------------------------------------
# the figures (median over the runs) and the table
# ------------------------------------------------------------------------------------------------------
def run_figures(run: dict[str, Any]) -> dict[str, float | None]:
    """The figures of one run that the table shows (medians are taken of these)."""
    flow, bus, sig, snap = run["flow"], run["busCount"], run["signalMs"], run["snapshotMs"]
    best = sustained(run["steps"])
    rss = run["rssMb"]
    return {
        "orderRate": flow["fillRate"],
        "cpuTbxMs": flow["cpuMsPerOrder"]["tbx"],
        "cpuNatsMs": flow["cpuMsPerOrder"]["nats"],
        "cpuTotalMs": flow["cpuMsPerOrder"]["total"],
        "coresTbx": flow["cores"]["tbx"],
        "coresNats": flow["cores"]["nats"],
        "busPerOrder": bus["perOrder"],
        "writesPerOrder": bus["storedPerOrder"],
        "signalP50Ms": pct(sig, 50) if sig else None,
        "signalP99Ms": pct(sig, 99) if sig else None,
        "postRate": best["target_rate"] if best else 0.0,
        "postAchieved": best["achieved_rate"] if best else None,
        "postP99Ms": best["p99Ms"] if best else None,
        "snapshotP50Ms": pct(snap, 50),
        "snapshotP99Ms": pct(snap, 99),
        "rssFreshMb": rss["fresh"],
        "rssBeforeMb": rss["before"],
        "rssHalfMb": flow["rssHalfMb"],
        "rssFullMb": flow["rssFullMb"],
        "rssAfterMb": rss["after"],
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    per_run = [run_figures(r) for r in runs]
    out: dict[str, float | None] = {}
    for key in per_run[0]:
        xs = [f[key] for f in per_run if f[key] is not None]
        out[key] = round(statistics.median(xs), 4) if xs else None  # type: ignore[type-var]
    return out


def _x(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}" if a is not None and b else "-"


class _Rows:
    """The section's lines: name, value, target, result, then the ratios to the bus limits of the same run."""

    def __init__(self, t: Table, raw50: float, write50: float, pipelined: float) -> None:
        self.t, self.raw50, self.write50, self.pipelined = t, raw50, write50, pipelined

    def head(self, title: str) -> None:
        self.t.lines.append(
            f"{title:<50} {'value':<60} {'target':<30} {'result':<13} {'x rtt':>6} {'x write':>7} {'bus use':>7}"
        )

    def row(
        self,
        name: str,
        value: str,
        target: str = "",
        result: str = "",
        ms: float | None = None,
        use: float | None = None,
        **raw: Any,
    ) -> None:
        """``ms``: a latency (its ratios to the raw round trip and the awaited write); ``use``: durable writes per
        second, its share of the pipelined write rate."""
        rtt = _x(ms, self.raw50) if ms is not None else ""
        write = _x(ms, self.write50) if ms is not None else ""
        share = _x(use, self.pipelined, 3) if use is not None else ""
        self.t.lines.append(f"{name:<50} {value:<60} {target:<30} {result:<13} {rtt:>6} {write:>7} {share:>7}".rstrip())
        self.t.figures.append(
            {
                "name": f"hotpath: {name.strip()}",
                "value": value,
                "target": target,
                "result": result,
                **({"xRawRtt": _num(ms, self.raw50), "xAwaitedWrite": _num(ms, self.write50)} if ms else {}),
                **({"busUse": _num(use, self.pipelined, 4)} if use is not None else {}),
                **raw,
            }
        )

    def note(self, name: str, value: str) -> None:
        self.t.lines.append(f"{name:<50} {value}")


def _num(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _f(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def _ms(x: float | None, digits: int = 3) -> str:
    return "?" if x is None else f"{x:.{digits}f} ms"


def add_rows(t: Table, res: dict[str, Any]) -> None:
    """This stage's section of the table (the harness's or its own), and its figures for the JSON."""
    if "error" in res:  # the stage failed in the harness: the run goes on, and says so
        t.lines.append(f"{TITLE:<50} !!! STAGE FAILED: {res['error']} !!!")
        t.figures.append({"name": "hotpath", "error": res["error"]})
        return
    lim, runs = res["limits"], res["runs"]
    m = medians(runs)
    raw, write, fl = lim["rawMs"], lim["writeMs"], res["floorMs"]
    raw50, write50, floor50 = pct(raw, 50), pct(write, 50), pct(fl, 50)
    pipelined = lim["pipelinedRate"]
    w = m["writesPerOrder"] or 0.0
    rows = _Rows(t, raw50, write50, pipelined)
    n = len(runs)
    rows.head(f"{TITLE}, {'median of ' + str(n) + ' runs' if n > 1 else 'one run'}")

    rows.row("bus: raw request/reply round trip", f"p50 {raw50:.3f} ms, p99 {pct(raw, 99):.3f} ms ({len(raw):,})",
             ms=raw50, p50Ms=raw50, p99Ms=pct(raw, 99))  # fmt: skip
    rows.row(
        "bus: one durable write awaited (-> stored ack)",
        f"p50 {write50:.3f} ms, p99 {pct(write, 99):.3f} ms; {lim['awaitedRate']:,.0f} /s",
        ms=write50,
        use=lim["awaitedRate"],
        p50Ms=write50,
        p99Ms=pct(write, 99),
        rate=lim["awaitedRate"],
    )
    plan = res["plan"]
    rows.row(
        f"bus: durable writes pipelined, {plan['in_flight']:,} in flight",
        f"{pipelined:,.0f} /s ({plan['pipelined']:,} writes)",
        use=pipelined,
        rate=pipelined,
    )
    rows.row(
        f"bus: batched read, pull {plan['batch']}, one ack per batch",
        f"{lim['readRate']:,.0f} /s ({plan['pipelined']:,} messages)",
        use=lim["readRate"],
        rate=lim["readRate"],
    )
    rows.row(
        "bus: nats-server CPU per durable write",
        f"unbatched {lim['natsUsPerUnbatchedWrite']:.1f} us, batched {lim['natsUsPerBatchedWrite']:.1f} us "
        f"(idle {lim['natsIdleCores']:.3f} cores out)",
        unbatchedUs=lim["natsUsPerUnbatchedWrite"],
        batchedUs=lim["natsUsPerBatchedWrite"],
    )
    k, r = res["k"], res["r"]
    rows.row(
        f"bus: the path's NATS floor, {k} writes + {r} requests",
        f"p50 {floor50:.3f} ms, p99 {pct(fl, 99):.3f} ms ({len(fl):,}; sum of p50s {k * write50 + r * raw50:.3f} ms)",
        ms=floor50,
        p50Ms=floor50,
        p99Ms=pct(fl, 99),
        k=k,
        r=r,
    )
    traces = res["traces"]
    found = [x for x in traces if x["found"]]
    kinds = Counter(f"K={x['k']} R={x['r']}" for x in found)
    rows.note(
        "  traced signals (one at a time, wildcard spy)",
        f"{len(found)} of {len(traces)} seen publish -> fill: " + ", ".join(f"{kr} x{c}" for kr, c in kinds.items()),
    )
    typical = next((x for x in found if (x["k"], x["r"]) == (k, r)), None)
    if typical is not None:
        head = "  one of them, in order (W write, R request)"
        for j, st in enumerate(typical["steps"]):
            rows.note(head if j == 0 else "", f"{j + 1:>2} {st}")
        rows.note("  also in its window (not counted)", ", ".join(f"{a} x{b}" for a, b in typical["other"].items()))

    rate = m["orderRate"] or 0.0
    flow0 = runs[0]["flow"]
    rows.row(
        f"orders through all actors, {plan['concurrency']} in flight",
        f"{rate:,.0f} /s ({plan['orders']:,} orders.submit, each completely filled)",
        f">= {T_ORDER_RATE:,.0f} /s",
        verdict(rate >= T_ORDER_RATE),
        use=rate * w,
        rate=rate,
        perRun=[x["flow"]["fillRate"] for x in runs],
    )
    total = m["cpuTotalMs"]
    rows.row(
        "  CPU per order, every process",
        f"{_ms(total, 2)} = tbx run {_f(m['cpuTbxMs'])} (+{flow0['childProcesses']} children) "
        f"+ nats-server {_f(m['cpuNatsMs'])}",
        f"<= {T_CPU_MS:g} ms",
        verdict(total is not None and total <= T_CPU_MS),
        totalMs=total,
        tbxMs=m["cpuTbxMs"],
        natsMs=m["cpuNatsMs"],
        childProcesses=flow0["childProcesses"],
    )
    rows.note(
        "  cores used in that flow",
        f"tbx run {m['coresTbx']:.2f}, nats-server {m['coresNats']:.2f}"
        + (f" ({flow0['processesGone']} processes ended during it: their CPU is not counted)"
           if flow0["processesGone"] else ""),
    )  # fmt: skip
    bus = m["busPerOrder"] or 0.0
    rows.row(
        "bus messages per order (wildcard count)",
        f"{bus:.1f} ({plan['bus_count']:,} orders.submit, 16 in flight)",
        f"<= {T_BUS_MSGS:g}",
        verdict(bus <= T_BUS_MSGS),
        perOrder=bus,
    )
    rows.row(
        "  durable writes per order, all (stored acks)",
        f"{w:.2f} (the writes per order of every 'bus use' figure)",
        storedPerOrder=w,
    )
    rows.row(
        "durable writes on the critical path (traced K)",
        f"{k} (and {r} requests), signal -> fill",
        f"<= {T_PATH_WRITES}",
        verdict(k <= T_PATH_WRITES),
        k=k,
        r=r,
    )
    s50, s99 = m["signalP50Ms"], m["signalP99Ms"]
    rows.row(
        "signal -> fill, one at a time",
        f"p50 {_ms(s50)}, p99 {_ms(s99)}; p50 = {_x(s50, floor50, 2)} x the floor ({plan['signal']:,})",
        f"p50 <= {T_FLOOR_X:g} x floor; p99 < {T_SIGNAL_P99_MS:g} ms",
        f"{verdict(s50 is not None and s50 <= T_FLOOR_X * floor50)} / "
        f"{verdict(s99 is not None and s99 < T_SIGNAL_P99_MS)}",
        ms=s50,
        p50Ms=s50,
        p99Ms=s99,
        xFloor=_num(s50, floor50),
    )
    post = m["postRate"] or 0.0
    rows.row(
        "POST /api/orders sustained (rate search)",
        f"{post:,.0f} /s" + (f" (achieved {m['postAchieved']:,.0f}/s, p99 {_ms(m['postP99Ms'], 1)})" if post else ""),
        f">= {T_POST_RATE:,.0f} /s, p99 < {T_POST_P99_MS:g} ms",
        verdict(post >= T_POST_RATE),
        use=post * w,
        rate=post,
        perRun=[run_figures(x)["postRate"] for x in runs],
    )
    for i, run in enumerate(runs):
        steps = "; ".join(
            f"{s['target_rate']:g} {'ok' if s['passed'] else 'FAIL'} (p99 {_ms(s['p99Ms'], 1)}"
            + ("" if s["passed"] else f", achieved {s['achieved_rate']:,.0f}/s, {sum(s['refused'].values())} refused")
            + ")"
            for s in run["steps"]
        )
        rows.note(f"  steps{f' (run {i + 1})' if n > 1 else ''}, {plan['step_s']:g} s each", steps)
    p50, p99 = m["snapshotP50Ms"], m["snapshotP99Ms"]
    rows.row(
        f"full portfolio snapshot, {SNAPSHOT_POSITIONS:,} positions",
        f"p50 {_ms(p50)}, p99 {_ms(p99)} ({plan['snapshot_calls']} calls)",
        f"p99 < {T_SNAPSHOT_MS:g} ms",
        verdict(p99 is not None and p99 < T_SNAPSHOT_MS),
        ms=p50,
        p50Ms=p50,
        p99Ms=p99,
    )
    fresh, before, after = m["rssFreshMb"] or 0.0, m["rssBeforeMb"] or 0.0, m["rssAfterMb"] or 0.0
    half, full = m["rssHalfMb"] or 0.0, m["rssFullMb"] or 0.0
    growth = (full - half) / half if half else 0.0
    rows.row(
        "resident memory, tbx run and its children",
        f"{half:.0f} MB after half the orders flow, {full:.0f} MB after all of it ({growth * 100:+.1f} %)",
        f"flat (<= +{T_FLAT * 100:g} %)",
        verdict(growth <= T_FLAT),
        freshMb=fresh,
        beforeMb=before,
        halfMb=half,
        fullMb=full,
        afterMb=after,
        descendants=runs[0]["descendants"],
    )
    rows.note(
        "  and",
        f"fresh {fresh:.0f} MB, after the warm-up {before:.0f}, at the end {after:.0f} "
        f"({runs[0]['descendants']} child processes counted)",
    )


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON: every figure, the sample lists as percentiles."""
    if "error" in res:
        return res

    def lat(xs: list[float]) -> dict[str, Any]:
        return {"n": len(xs), "p50Ms": pct(xs, 50), "p99Ms": pct(xs, 99), "maxMs": max(xs)} if xs else {"n": 0}

    lim = dict(res["limits"])
    lim["rawMs"], lim["writeMs"] = lat(lim["rawMs"]), lat(lim["writeMs"])
    runs = []
    for run in res["runs"]:
        runs.append(
            {
                **{k: v for k, v in run.items() if k not in ("signalMs", "snapshotMs")},
                "signalMs": lat(run["signalMs"]),
                "snapshotMs": lat(run["snapshotMs"]),
                "figures": run_figures(run),
            }
        )
    return {
        **{k: v for k, v in res.items() if k not in ("limits", "floorMs", "runs")},
        "limits": lim,
        "floorMs": lat(res["floorMs"]),
        "median": medians(res["runs"]),
        "runs": runs,
    }


def report(res: dict[str, Any], quick: bool, tally: Tally | None = None) -> str:
    """The section alone as a text (hotpath.txt): a title, the rows, the orders."""
    t = Table(1.0)
    add_rows(t, res)
    title = (
        f"{TITLE}, {'QUICK (counts scaled down: not for quoting)' if quick else 'full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"load average at start {res.get('loadAtStart', '?')}, at the end {res.get('loadAtEnd', '?')}; "
        f"the stage took {res.get('seconds', '?')} s"
    )
    lines = [t.text(title)]
    if tally is not None:
        lines += ["", tally.line()]
        if tally.failures:
            banner = f"!!! THIS RUN HAD {tally.failures:,} FAILED ORDERS: not every figure is of filled orders !!!"
            lines = [banner, *lines, banner]
    probs = res.get("logProblems") or {}
    lines.append(
        "tbx run logs (LOG_LEVEL=WARNING): "
        + (", ".join(f"{k} x{v}" for k, v in sorted(probs.items())) if probs else "no warning, no error")
    )
    return "\n".join(lines)


def write(out: Path, text: str, res: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(summary(res), indent=1, default=str) + "\n")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------------------------
# this stage alone
# ------------------------------------------------------------------------------------------------------
async def alone(plan: Plan) -> tuple[dict[str, Any], Tally]:
    tally = Tally()
    async with nats_alone("tbx-hotpath-") as (url, pid, tmp):
        res = await asyncio.wait_for(stage(url, pid, tmp, tally, plan), plan.max_minutes * 60)
    return res, tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run, every count scaled down (about a minute)")
    p.add_argument("--repeat", type=int, default=1, help="run the service phases N times (fresh tbx runs): medians")
    p.add_argument("--out", default=str(RESULTS / "hotpath"), help="write OUT.txt and OUT.json")
    a = p.parse_args(argv)
    if not 1 <= a.repeat <= 9:
        p.error("--repeat: 1 to 9")
    plan = replace(QUICK if a.quick else FULL, repeat=a.repeat)
    plan = replace(plan, max_minutes=plan.max_minutes * a.repeat)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:
            res, tally = runner.run(alone(plan))
    except KeyboardInterrupt:
        print("hotpath: interrupted, everything it started is stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"hotpath: stopped after {plan.max_minutes:g} minutes, everything it started is stopped", file=sys.stderr)
        return 2
    finally:
        stop_all()
    text = report(res, a.quick, tally)
    print(text)
    write(Path(a.out), text, res)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    # run as bench.hotpath, not __main__: one bench.harness module (one STARTED registry of the processes to stop)
    from bench.hotpath import main as hotpath_main

    sys.exit(hotpath_main())
