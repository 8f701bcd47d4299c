"""The bench harness (`make bench`): every figure of issue 7 in one run, against a private nats-server.

Starts a private nats-server (JetStream in a temp dir) and ``tbx run`` against it as a subprocess (a
fresh BUS_PREFIX, 127.0.0.1, synthetic market data, the order-rate throttle raised and a balance large
enough that every order is a real accepted and filled order), then measures, in this order:

  raw        a nats-py request/reply round trip to a trivial responder (the baseline of every ratio);
  path       orders.submit -> reply and -> its complete fill, one at a time;
  signal     a signal published on NATS -> its fill event, one at a time (light load);
  post       POST /api/orders at a light fixed rate, from the load generator (``bench.loadgen``, its
             own process, open loop): p50 / p99 / p999;
  search     POST /api/orders at stepped target rates: the highest whose p99 < 20 ms and whose achieved
             rate is >= 95 % of the target (the search stops at the first step that fails);
  flow       N signals published as fast as possible -> N fills seen, and booked by the ledger
             (signal-intake, risk-gate, order-router, fill-tracker, portfolio-ledger; durable hops);
             then N orders.submit requests pipelined with bounded concurrency;
  get        GET /api/portfolio from concurrent keep-alive clients of the load generator;
  valuation  domain.valuation over 1, 100 and 10,000 positions (bench.ledger_bench's code);
  routing    domain.routing.decide for 3 venues with 20-level books beside one walk_book of one book, in
             process (``bench/routing.py``): p50 / p99 in microseconds and decisions per second;
  memory     a second, fresh ``tbx run``: resident memory after half and all of 100,000 orders;
  routing path  a third ``tbx run`` with three paper venues (``EXCHANGES=alpha=paper,beta=paper,gamma=paper``):
             orders.submit -> reply and -> fill, routed by best_price (no venue named) and naming ``alpha``,
             interleaved one order of each kind, one at a time (``bench/routing_path.py``);
  algos      a fourth ``tbx run``: 100 TWAPs of 100 slices each placed at once (POST /api/orders), the drift of
             every slice's child against its schedule, beside plain asyncio timers (``bench/algos.py``);
  live       the local Binance exchange (its own process) and a fifth ``tbx run``, in live mode against it:
             a raw signed POST /api/v3/order (and GET) beside orders.submit and POST /api/orders -> the
             venue's acknowledgement and -> the fill event, one at a time (``bench/live_venue.py``);
  dashboard  a sixth ``tbx run`` with 1,000 orders and about 10,000 fills in its books: the dashboard page's
             load to its first full render in headless Chromium (p50 / p99, what it fetched), then the
             browser's memory while an hour of fills (3,600, compressed into 90 s) goes into the open page
             (``bench/dashboard.py``; needs Playwright for Python and /usr/bin/chromium);
  hotpath    a seventh ``tbx run`` (issue 22): the limits of the bus (raw round trip, awaited and pipelined
             durable writes, batched reads, nats-server CPU per write, the path's own NATS floor from a trace of
             one signal -> fill) beside the service's orders/s, CPU per order, bus messages per order, signal ->
             fill, POST rate, snapshot and memory, each row with its ratio to those limits (``bench/hotpath.py``;
             also written to bench/results/hotpath.txt and hotpath.json).

Every accepted order is checked to be completely filled; denials and failures are counted and a run
with any is flagged in the table. Prints one table and writes it to bench/results/harness.txt (and
the raw figures to harness.json). Bounded in count and time, 127.0.0.1 only; everything it started
is stopped by pid at the end, also on errors and Ctrl-C.

    .venv/bin/python -m bench.harness            # the full run (about 12 minutes on 2 cores)
    .venv/bin/python -m bench.harness --quick    # a smoke run with every count scaled down
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import nats.errors
import nats.js.api
from nats.aio.msg import Msg as NatsMsg

from bench import routing
from bench.ledger_bench import VALUATION_SIZES, pct, valuation_samples
from bench.service_env import ACCEPT_EVERY_ORDER
from bus.client import ERROR_HEADER
from bus.codec import encode
from bus.embedded import EmbeddedNats, _die_with_parent, find_binary, free_port
from config.settings import PARSERS
from domain.synthetic import SyntheticBook
from schemas.messages import OrderRequest, now_ms

RESULTS = Path(__file__).parent / "results"
LOGS = Path(tempfile.gettempdir()) / "tbx-harness-logs"  # the last run's logs (the temp dir is removed)
PAIR = "BTC_USDT"
QTY = "0.001"
SEED_QTY = "0.5"  # bought first: what the sells sell (see Ctx.seed)
RAW_PAYLOAD = b"x" * 200
CLK_TCK = os.sysconf("SC_CLK_TCK")

# tbx run's settings for the load: every order a real accepted and filled one, never a denial
SERVICE_ENV = ACCEPT_EVERY_ORDER | {"PAIRS": PAIR, "INITIAL_BALANCE": "1000000000000", "LOG_LEVEL": "WARNING"}

# targets of issue 7
T_SIGNAL_P50_RAW = 5.0
T_SIGNAL_P99_MS = 10.0
T_FLOW_RATE = 2000.0
T_POST_RATE = 1000.0
T_POST_P99_MS = 20.0
T_ACHIEVED = 0.95
T_GET_RPS = 5000.0
T_VALUATION_MS = 20.0
T_RSS_MB = 250.0
T_FLAT = 0.05  # "flat": at most 5 % more resident memory after all the orders than after half of them


@dataclass(frozen=True)
class Plan:
    raw: int = 2000
    path: int = 1000
    bus_count: int = 2000
    signal: int = 1000
    post_rate: float = 100.0
    post_s: float = 40.0
    steps: tuple[int, ...] = (100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000)
    step_s: float = 6.0
    flow_signals: int = 20_000
    flow_orders: int = 20_000
    flow_concurrency: int = 64
    get_s: float = 10.0
    get_clients: int = 32
    memory_orders: int = 100_000
    memory_concurrency: int = 64
    drain_s: float = 120.0  # how long we wait for the fills of a phase after its last request
    max_minutes: float = 45.0  # the whole run is stopped past this, whatever it is doing
    live_orders: int = 1000  # the live-venue stage (bench/live_venue.py): orders per path, one at a time
    routing_calls: int = 20_000  # the routing stage (bench/routing.py): timed decisions (and baseline walks)
    routing_orders: int = 500  # the routing-path stage (bench/routing_path.py): orders of each kind, routed / named
    algo_parents: int = 100  # the algorithm stage (bench/algos.py): concurrent TWAP parents,
    algo_slices: int = 100  # ... slices of each,
    algo_interval_ms: int = 1000  # ... this far apart
    dashboard_orders: int = 1000  # the dashboard stage (bench/dashboard.py): orders seeded (about 10 fills each),
    dashboard_loads: int = 20  # ... timed page loads,
    dashboard_fills: int = 3600  # ... fills into the open page ("an hour at one a second"),
    dashboard_seconds: float = 90.0  # ... over this long


FULL = Plan()
QUICK = Plan(
    raw=500, path=200, bus_count=300, signal=200, post_s=10.0, step_s=2.0, flow_signals=3000, flow_orders=3000,
    get_s=3.0, memory_orders=10_000, drain_s=60.0, max_minutes=12.0, live_orders=100, routing_calls=2000,
    routing_orders=100, algo_parents=10, algo_slices=10, algo_interval_ms=500, dashboard_orders=100,
    dashboard_loads=5, dashboard_fills=600, dashboard_seconds=30.0,
)  # fmt: skip


# ------------------------------------------------------------------------------------------------------
# processes: everything started here is registered and stopped by pid, whatever happens
# ------------------------------------------------------------------------------------------------------
STARTED: dict[int, str] = {}


def stop_pid(pid: int, grace: float = 8.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` s; reaps our own children."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped already (or not ours): is it gone?
            if not Path(f"/proc/{pid}").exists():
                break
            done = 0
        if done:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    STARTED.pop(pid, None)


def stop_all() -> None:
    for pid in list(STARTED):
        stop_pid(pid)


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process and of every descendant it has now (``tbx run``'s worker processes,
    RUN_PROCESSES): a child that has already exited is not counted."""
    if pid is None:
        return 0.0
    return cpu_s(pid) + sum(cpu_s(kid) for kid in descendants(pid))


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *descendants(k)]
    return out


def rss_mb(pid: int) -> tuple[float, int]:
    """VmRSS of the process and all its descendants (MB), and how many descendants there are."""
    total = 0
    kids = descendants(pid)
    for p in (pid, *kids):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024, len(kids)


class Tbx:
    """``tbx run`` as a subprocess against our nats-server, with a fresh bus prefix."""

    def __init__(
        self,
        nats_url: str,
        tmp: Path,
        label: str,
        extra_env: dict[str, str] | None = None,
        python_args: tuple[str, ...] = (),
    ) -> None:
        """``extra_env`` is laid over SERVICE_ENV (the live stage: live-mode settings); ``python_args`` go
        before ``-m tbx.cli run`` (e.g. ``-m cProfile -o FILE`` to profile it)."""
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.log_path = tmp / f"tbx-{label}.log"
        env = {k: v for k, v in os.environ.items() if k not in PARSERS and k != "TBX_CONFIG"}
        env.update(SERVICE_ENV)
        env.update(extra_env or {})
        env.update(NATS_URL=nats_url, PORT=str(self.port), BUS_PREFIX=self.prefix, DATA_DIR=str(tmp / self.prefix))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *python_args, "-m", "tbx.cli", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # never outlives the harness, even one killed with -9
            )
        STARTED[self.proc.pid] = f"tbx run ({label})"

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tbx run exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base}/api/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            await asyncio.sleep(1.0)  # a few books for the venue and the marks
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"tbx run not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def log_problems(self) -> Counter[str]:
        """WARNING / ERROR / CRITICAL lines of its log (LOG_LEVEL=WARNING: nothing else is written)."""
        out: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                parts = line.split(maxsplit=2)
                if len(parts) > 1 and parts[1] in ("WARNING", "ERROR", "CRITICAL"):
                    out[parts[1]] += 1
        return out

    def stop(self) -> None:
        stop_pid(self.pid)


# ------------------------------------------------------------------------------------------------------
# what the service says back: fills, signal results, order replies
# ------------------------------------------------------------------------------------------------------
class FillLite(msgspec.Struct, rename="camel"):
    client_order_id: str
    order_complete: bool | None = None


class SignalLite(msgspec.Struct, rename="camel"):
    signal_id: str
    status: str
    reason: str | None = None
    code: str | None = None


class ReplyLite(msgspec.Struct, rename="camel"):
    ok: bool
    code: str | None = None
    detail: str | None = None


class SnapshotLite(msgspec.Struct, rename="camel"):
    fills_applied: int


_fill_dec = msgspec.json.Decoder(FillLite)
_signal_dec = msgspec.json.Decoder(SignalLite)
_reply_dec = msgspec.json.Decoder(ReplyLite)
_snapshot_dec = msgspec.json.Decoder(SnapshotLite)


def tag_of(client_order_id: str) -> str:
    return client_order_id.split("-", 1)[0]


class FillWatch:
    """Every fill event of the run (core subscription on ``<prefix>.events.fills.>``): when each order
    was seen completely filled, by client order id."""

    def __init__(self) -> None:
        self.done: dict[str, float] = {}
        self.by_tag: Counter[str] = Counter()
        self.events = 0
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def on_msg(self, msg: NatsMsg) -> None:
        t = time.perf_counter()
        self.events += 1
        f = _fill_dec.decode(msg.data)
        if not f.order_complete or f.client_order_id in self.done:
            return
        self.done[f.client_order_id] = t
        self.by_tag[tag_of(f.client_order_id)] += 1
        fut = self.waiters.pop(f.client_order_id, None)
        if fut is not None and not fut.done():
            fut.set_result(t)

    def expect(self, cid: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if cid in self.done:
            fut.set_result(self.done[cid])
        else:
            self.waiters[cid] = fut
        return fut

    def fail(self, cid: str, why: str) -> None:
        fut = self.waiters.pop(cid, None)
        if fut is not None and not fut.done():
            fut.set_exception(RuntimeError(why))

    def forget(self, cid: str) -> None:
        self.waiters.pop(cid, None)

    async def wait_all(self, ids: list[str], timeout: float, expected_failures: Callable[[], int] = lambda: 0) -> int:
        """Wait until every id in ``ids`` (all of one tag, used by no other call) is filled, or ``timeout``;
        the number missing."""
        if not ids:
            return 0
        tag = tag_of(ids[0])
        deadline = time.monotonic() + timeout
        while self.by_tag[tag] < len(ids) - expected_failures() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return sum(1 for cid in ids if cid not in self.done)

    async def wait_count(self, tag: str, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.by_tag[tag] < n and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return max(0, n - self.by_tag[tag])

    def last_done(self, ids: list[str]) -> float:
        return max((self.done[c] for c in ids if c in self.done), default=0.0)


class SignalWatch:
    """Every signal result (``<prefix>.events.signals.>``): those that were not executed, by tag."""

    def __init__(self, fills: FillWatch) -> None:
        self.fills = fills
        self.by_tag: Counter[str] = Counter()
        self.not_executed: Counter[str] = Counter()
        self.not_executed_by_tag: Counter[str] = Counter()

    async def on_msg(self, msg: NatsMsg) -> None:
        ev = _signal_dec.decode(msg.data)
        tag = tag_of(ev.signal_id)
        self.by_tag[tag] += 1
        if ev.status != "executed":
            why = f"signal {ev.status}: {ev.code or ev.reason or '?'}"
            self.not_executed[why[:80]] += 1
            self.not_executed_by_tag[tag] += 1
            self.fills.fail(f"{ev.signal_id}-1", why)


# ------------------------------------------------------------------------------------------------------
# the run's bookkeeping: every order asked for, and what became of it
# ------------------------------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.not_filled = 0
        self.phases: dict[str, dict[str, Any]] = {}

    def add(self, phase: str, sent: int, accepted: int, refused: Counter[str], not_filled: int) -> None:
        self.sent += sent
        self.accepted += accepted
        self.refused.update(refused)
        self.not_filled += not_filled
        self.phases[phase] = {
            "sent": sent,
            "accepted": accepted,
            "refused": dict(refused),
            "notFilled": not_filled,
        }

    @property
    def failures(self) -> int:
        return sum(self.refused.values()) + self.not_filled

    def line(self) -> str:
        head = f"orders: {self.sent:,} asked for, {self.accepted:,} accepted"
        if not self.failures:
            return head + ", every one accepted and completely filled: no denial, no failure"
        refused = ", ".join(f"{k} x{v}" for k, v in self.refused.most_common(8)) or "none"
        n_refused = sum(self.refused.values())
        return f"{head}; FAILURES: refused or failed {n_refused:,} ({refused}); unfilled {self.not_filled:,}"


class Cpu:
    """Cores used by each process between ``start`` and ``stop`` (CPU seconds / wall seconds)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids

    def __enter__(self) -> Cpu:
        self.t0 = time.perf_counter()
        self.c0 = {k: tree_cpu_s(p) for k, p in self.pids.items()}
        self.h0 = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(1e-9, time.perf_counter() - self.t0)
        self.cores = {k: round((tree_cpu_s(p) - self.c0[k]) / wall, 2) for k, p in self.pids.items()}
        self.cores["harness"] = round((time.process_time() - self.h0) / wall, 2)


# ------------------------------------------------------------------------------------------------------
# one service under load
# ------------------------------------------------------------------------------------------------------
class Ctx:
    def __init__(self, tbx: Tbx, server: EmbeddedNats, plan: Plan, tally: Tally) -> None:
        self.tbx = tbx
        self.server = server
        self.plan = plan
        self.tally = tally
        self.p = tbx.prefix
        self.fills = FillWatch()
        self.signals = SignalWatch(self.fills)

    async def open(self) -> None:
        self.nc = await nats.connect(self.server.url, name="bench-harness", pending_size=64 * 1024 * 1024)
        await self.nc.subscribe(f"{self.p}.events.fills.>", cb=self.fills.on_msg, pending_msgs_limit=-1)
        await self.nc.subscribe(f"{self.p}.events.signals.>", cb=self.signals.on_msg, pending_msgs_limit=-1)
        await self.nc.flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.nc.close()

    def cpu(self) -> Cpu:
        return Cpu({"tbx": self.tbx.pid, "nats": self.server.pid})

    async def seed(self) -> None:
        """Buy SEED_QTY first, so the sells that follow sell what is held: buys and sells alternate, but
        with many in flight a sell can be working before the buy before it is filled, and an account
        with no base at all would go short (with ALLOW_SHORT=true the ledger then raises a critical
        'balance below zero' alert each time, which is not what we measure)."""
        fut = self.fills.expect("seed-0")
        why = await self.submit("seed-0", 0, SEED_QTY)
        missing = 0
        if why is None:
            try:
                await asyncio.wait_for(fut, 30)
            except TimeoutError:
                missing = 1
        self.tally.add(f"seed {self.p}", 1, int(why is None), Counter([why] if why else []), missing)

    async def submit(self, cid: str, i: int, qty: str = QTY) -> str | None:
        """One order on ``<prefix>.orders.submit``; None when accepted, else what refused it."""
        req = OrderRequest(
            client_order_id=cid, pair=PAIR, side="buy" if i % 2 == 0 else "sell", quantity=Decimal(qty), ts=now_ms()
        )
        try:
            msg = await self.nc.request(f"{self.p}.orders.submit", encode(req), timeout=10)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError) as e:
            return f"bus {type(e).__name__}"
        if msg.headers and ERROR_HEADER in msg.headers:
            return f"bus error: {msg.headers[ERROR_HEADER][:60]}"
        r = _reply_dec.decode(msg.data)
        return None if r.ok else f"denied {r.code}"

    def signal_body(self, sid: str, i: int) -> bytes:
        return msgspec.json.encode(
            {
                "pair": PAIR,
                "signal": "BUY" if i % 2 == 0 else "SELL",
                "confidence": "0.9",
                "source": "bench",
                "strategy": "bench",
                "signalId": sid,
                "quantity": QTY,
            }
        )

    async def fills_applied(self) -> int:
        msg = await self.nc.request(f"{self.p}.query.portfolio", b"{}", timeout=10)
        return _snapshot_dec.decode(msg.data).fills_applied

    async def loadgen(self, *args: str, timeout: float) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.loadgen", *args,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )  # fmt: skip
        STARTED[proc.pid] = "loadgen"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        finally:
            if proc.returncode is None:
                stop_pid(proc.pid, grace=2.0)
            STARTED.pop(proc.pid, None)
        if proc.returncode != 0:
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        return json.loads(out)

    async def post_orders(self, tag: str, rate: float, seconds: float) -> dict[str, Any]:
        """POST /api/orders from the load generator at ``rate``/s for ``seconds``; waits for the fills."""
        count = max(1, int(rate * seconds))
        t_wall = time.perf_counter()
        c0 = {"tbx": tree_cpu_s(self.tbx.pid), "nats": cpu_s(self.server.pid), "harness": time.process_time()}
        res = await self.loadgen(
            "--url", f"{self.tbx.base}/api/orders", "--order", f"{PAIR}:{QTY}", "--rate", f"{rate:g}",
            "--count", str(count), "--duration", f"{seconds:g}", "--id-prefix", tag, "--expect", "201",
            "--concurrency", "256", timeout=seconds + 120,
        )  # fmt: skip
        wall = max(1e-9, time.perf_counter() - t_wall)
        res["cores"] = {
            "tbx": round((tree_cpu_s(self.tbx.pid) - c0["tbx"]) / wall, 2),
            "nats": round((cpu_s(self.server.pid) - c0["nats"]) / wall, 2),
            "harness": round((time.process_time() - c0["harness"]) / wall, 2),
            "loadgen": round(res.get("cpu_s", 0.0) / wall, 2),
        }
        failed = set(res["failed_ids"])
        ids = [f"{tag}-{i}" for i in range(res["scheduled"]) if f"{tag}-{i}" not in failed]
        refused: Counter[str] = Counter({f"HTTP {k}": v for k, v in res["statuses"].items()})
        refused.update({f"HTTP {k}": v for k, v in res["errors"].items()})
        if res["failed_ids_truncated"]:  # too many failures to name them all: count what was filled
            missing = await self.fills.wait_count(tag, res["ok"], self.plan.drain_s)
        else:
            missing = await self.fills.wait_all(ids, self.plan.drain_s)
        self.tally.add(f"POST {tag}", res["scheduled"], res["ok"], refused, missing)
        res["not_filled"] = missing
        res["refused"] = dict(refused)
        return res

    async def pipelined(self, tag: str, start: int, n: int, concurrency: int) -> dict[str, Any]:
        """``n`` orders on orders.submit, ``concurrency`` in flight; until each accepted one is filled."""
        numbers = iter(range(start, start + n))
        accepted: list[str] = []
        refused: Counter[str] = Counter()

        async def worker() -> None:
            for i in numbers:
                cid = f"{tag}-{i}"
                why = await self.submit(cid, i)
                if why is None:
                    accepted.append(cid)
                else:
                    refused[why] += 1

        with self.cpu() as cpu:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            t_replies = time.perf_counter()
            missing = await self.fills.wait_all(accepted, self.plan.drain_s + n / 200)
            t_last = self.fills.last_done(accepted)
        self.tally.add(f"orders.submit {tag} {start}+{n}", n, len(accepted), refused, missing)
        filled = len(accepted) - missing
        return {
            "n": n,
            "accepted": len(accepted),
            "refused": dict(refused),
            "notFilled": missing,
            "replyRate": round(len(accepted) / (t_replies - t0), 1),
            "fillRate": round(filled / (t_last - t0), 1) if filled else 0.0,
            "seconds": round(t_last - t0, 3) if filled else None,
            "cores": cpu.cores,
        }


# ------------------------------------------------------------------------------------------------------
# the phases
# ------------------------------------------------------------------------------------------------------
async def one_at_a_time(call: Callable[[], Awaitable[object]], n: int, warmup: int = 50) -> list[float]:
    """Milliseconds of each of ``n`` calls made one after the other, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        await call()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def phase_raw(ctx: Ctx, n: int) -> list[float]:
    echo_nc = await nats.connect(ctx.server.url, name="bench-echo")
    subject = f"benchecho.{uuid.uuid4().hex[:8]}"
    try:

        async def echo(msg: NatsMsg) -> None:
            await msg.respond(msg.data)

        await echo_nc.subscribe(subject, cb=echo)
        await echo_nc.flush()
        await asyncio.sleep(0.05)  # interest can take a few ms to be seen by the other connection
        return await one_at_a_time(lambda: ctx.nc.request(subject, RAW_PAYLOAD, timeout=2), n)
    finally:
        await echo_nc.close()


async def phase_js(ctx: Ctx, n: int) -> list[float]:
    """One durable write: a JetStream publish to a file-storage stream until its stored ack, one at a time.
    Every hop of the service that is "persisted before it goes on" costs at least this."""
    js = ctx.nc.jetstream()
    tag = uuid.uuid4().hex[:8]
    name, subject = f"BENCHJS_{tag}", f"benchjs.{tag}"
    await js.add_stream(name=name, subjects=[subject], storage=nats.js.api.StorageType.FILE)
    try:
        return await one_at_a_time(lambda: js.publish(subject, RAW_PAYLOAD, timeout=2), n)
    finally:
        await js.delete_stream(name)


async def phase_bus_count(ctx: Ctx, n: int, concurrency: int) -> dict[str, Any]:
    """What one order costs on the bus: every message nats-server carries (a wildcard subscriber counts
    them) while ``n`` orders go through orders.submit, and of those the JetStream stored acks (one per
    durable write). A separate short phase: the counting subscriber adds its own load."""
    spy = await nats.connect(ctx.server.url, name="bench-spy", pending_size=64 * 1024 * 1024)
    counts = Counter[str]()

    async def cb(msg: NatsMsg) -> None:
        counts["all"] += 1
        if msg.subject.startswith("_INBOX.") and msg.data.startswith(b'{"stream":'):
            counts["stored"] += 1

    try:
        await spy.subscribe(">", cb=cb, pending_msgs_limit=-1)
        await spy.flush()
        await asyncio.sleep(1.0)
        idle0 = counts["all"]
        await asyncio.sleep(1.0)
        idle_per_s = counts["all"] - idle0  # heartbeats, books: taken out below
        counts.clear()
        t0 = time.perf_counter()
        res = await ctx.pipelined("bc", 0, n, concurrency)
        await asyncio.sleep(0.5)  # the last acks and deliveries
        seconds = time.perf_counter() - t0
    finally:
        await spy.close()
    per_order = (counts["all"] - idle_per_s * seconds) / n
    return {"n": n, "perOrder": round(per_order, 1), "storedPerOrder": round(counts["stored"] / n, 2), **res}


async def phase_path(ctx: Ctx, n: int) -> tuple[list[float], list[float]]:
    """orders.submit -> reply and -> complete fill, one order at a time."""
    replies, fills = [], []
    refused: Counter[str] = Counter()
    missing = 0
    for i in range(n):
        cid = f"sq-{i}"
        fut = ctx.fills.expect(cid)
        t0 = time.perf_counter()
        why = await ctx.submit(cid, i)
        t1 = time.perf_counter()
        if why is not None:
            refused[why] += 1
            ctx.fills.forget(cid)
            continue
        replies.append((t1 - t0) * 1000)
        try:
            fills.append((await asyncio.wait_for(fut, 10) - t0) * 1000)
        except TimeoutError:
            missing += 1
    ctx.tally.add("orders.submit one at a time", n, n - sum(refused.values()), refused, missing)
    return replies, fills


async def phase_signal(ctx: Ctx, n: int) -> list[float]:
    """A signal published (plain NATS publish) -> its fill event, one at a time."""
    out = []
    refused: Counter[str] = Counter()
    subject = f"{ctx.p}.signals.submit"
    for i in range(n):
        sid = f"sl-{i}"
        fut = ctx.fills.expect(f"{sid}-1")
        body = ctx.signal_body(sid, i)
        t0 = time.perf_counter()
        await ctx.nc.publish(subject, body)
        try:
            out.append((await asyncio.wait_for(fut, 10) - t0) * 1000)
        except TimeoutError:
            refused["signal: no fill within 10 s"] += 1
        except RuntimeError as e:
            refused[str(e)[:80]] += 1
    ctx.tally.add("signal one at a time", n, n - sum(refused.values()), refused, 0)
    return out


async def phase_flow_signals(ctx: Ctx, n: int) -> dict[str, Any]:
    """N signals published as fast as possible -> N fills seen, and booked by the ledger."""
    subject = f"{ctx.p}.signals.submit"
    tag = "fs"
    ids = [f"{tag}-{i}-1" for i in range(n)]
    bodies = [ctx.signal_body(f"{tag}-{i}", i) for i in range(n)]
    base = await ctx.fills_applied()
    booked_at: list[float] = []

    async def watch_ledger() -> None:
        while True:
            with contextlib.suppress(Exception):
                if await ctx.fills_applied() >= base + n - ctx.signals.not_executed_by_tag[tag]:
                    booked_at.append(time.perf_counter())
                    return
            await asyncio.sleep(0.05)

    with ctx.cpu() as cpu:
        t0 = time.perf_counter()
        for i, body in enumerate(bodies):
            await ctx.nc.publish(subject, body)
            if i % 1000 == 999:
                await ctx.nc.flush()
        await ctx.nc.flush()
        t_published = time.perf_counter()
        ledger = asyncio.create_task(watch_ledger())
        missing = await ctx.fills.wait_all(
            ids, ctx.plan.drain_s + n / 200, lambda: ctx.signals.not_executed_by_tag[tag]
        )
        t_last = ctx.fills.last_done(ids)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ledger, 60)
    failed = ctx.signals.not_executed_by_tag[tag]
    filled = n - missing
    ctx.tally.add(
        "signals as fast as possible",
        n,
        n - failed,
        Counter({"signal not executed": failed}) if failed else Counter(),
        missing - failed,
    )
    return {
        "n": n,
        "publishSeconds": round(t_published - t0, 3),
        "fillSeconds": round(t_last - t0, 3) if filled else None,
        "fillRate": round(filled / (t_last - t0), 1) if filled else 0.0,
        "bookedSeconds": round(booked_at[0] - t0, 3) if booked_at else None,
        "bookedRate": round(filled / (booked_at[0] - t0), 1) if booked_at and filled else 0.0,
        "notExecuted": failed,
        "notFilled": missing,
        "cores": cpu.cores,
    }


async def phase_get(ctx: Ctx, seconds: float, clients: int) -> dict[str, Any]:
    t_wall = time.perf_counter()
    c0 = {"tbx": tree_cpu_s(ctx.tbx.pid), "nats": cpu_s(ctx.server.pid)}
    res = await ctx.loadgen(
        "--url", f"{ctx.tbx.base}/api/portfolio", "--mode", "closed", "--concurrency", str(clients),
        "--duration", f"{seconds:g}", "--count", "2000000", "--expect", "200", timeout=seconds + 60,
    )  # fmt: skip
    wall = max(1e-9, time.perf_counter() - t_wall)
    res["cores"] = {
        "tbx": round((tree_cpu_s(ctx.tbx.pid) - c0["tbx"]) / wall, 2),
        "nats": round((cpu_s(ctx.server.pid) - c0["nats"]) / wall, 2),
        "loadgen": round(res.get("cpu_s", 0.0) / wall, 2),
    }
    return res


# ------------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


class Table:
    def __init__(self, raw_p50: float) -> None:
        self.raw = raw_p50
        self.lines: list[str] = []
        self.figures: list[dict[str, Any]] = []

    def head_latency(self, title: str) -> None:
        self.lines.append(
            f"{title:<50} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'p999 ms':>8} {'p50/raw':>8} {'p99/raw':>8}"
            f"  {'target':<28} result"
        )

    def latency(self, name: str, xs: list[float], target: str = "", result: str = "", p999: bool = False) -> None:
        if not xs:
            self.lines.append(f"{name:<50} {0:>6}  (no sample: every request failed)  {target:<28} {result}")
            self.figures.append({"name": name, "n": 0, "target": target, "result": result})
            return
        p50, p99, p999v = pct(xs, 50), pct(xs, 99), pct(xs, 99.9)
        p999s = f"{p999v:8.3f}" if p999 else f"{'-':>8}"
        self.lines.append(
            f"{name:<50} {len(xs):>6} {p50:8.3f} {p99:8.3f} {p999s} {p50 / self.raw:8.1f} {p99 / self.raw:8.1f}"
            f"  {target:<28} {result}".rstrip()
        )
        self.figures.append(
            {
                "name": name,
                "n": len(xs),
                "p50Ms": round(p50, 4),
                "p99Ms": round(p99, 4),
                "p999Ms": round(p999v, 4) if p999 else None,
                "p50Raw": round(p50 / self.raw, 2),
                "p99Raw": round(p99 / self.raw, 2),
                "target": target,
                "result": result,
            }
        )

    def head_value(self, title: str) -> None:
        self.lines.append(f"{title:<50} {'value':<56}  {'target':<28} result")

    def value(self, name: str, value: str, target: str = "", result: str = "", **raw: Any) -> None:
        self.lines.append(f"{name:<50} {value:<56}  {target:<28} {result}".rstrip())
        self.figures.append({"name": name, "value": value, "target": target, "result": result, **raw})

    def text(self, title: str) -> str:
        return "\n".join([title, *self.lines])


def fmt_rate(x: float) -> str:
    return f"{x:,.0f} /s"


# ------------------------------------------------------------------------------------------------------
async def run(plan: Plan, quick: bool, results: Path = RESULTS) -> tuple[str, dict[str, Any]]:
    """The whole run; ``results``: where the stages that write files of their own put them (hotpath.txt/.json)."""
    t_start = time.perf_counter()
    started_at = time.strftime("%Y-%m-%d %H:%M")
    load_at_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tbx-harness-"))
    server = EmbeddedNats(tmp / "nats", port=free_port())
    tally = Tally()
    out: dict[str, Any] = {"plan": plan.__dict__ | {"steps": list(plan.steps)}, "quick": quick}
    tbx: Tbx | None = None
    ctx: Ctx | None = None
    try:
        url = server.start()
        nats_pid = server.pid
        if nats_pid is not None:
            STARTED[nats_pid] = "nats-server"
        out["depth"] = depth_check(plan)

        # -------- service A: latency, rates, throughput --------------------------------------------------
        tbx = Tbx(url, tmp, "a")
        await tbx.wait_healthy()
        ctx = Ctx(tbx, server, plan, tally)
        await ctx.open()
        await ctx.seed()
        say("raw NATS round trip")
        raw = await phase_raw(ctx, plan.raw)
        say("JetStream publish -> stored, one at a time")
        stored = await phase_js(ctx, plan.raw)
        say("orders.submit one at a time")
        path_reply, path_fill = await phase_path(ctx, plan.path)
        say(f"messages per order ({plan.bus_count:,} orders, counted)")
        bus_count = await phase_bus_count(ctx, plan.bus_count, 16)
        say("signal -> fill one at a time")
        sig = await phase_signal(ctx, plan.signal)
        say(f"POST /api/orders at {plan.post_rate:g}/s for {plan.post_s:g}s")
        light = await ctx.post_orders("pl", plan.post_rate, plan.post_s)
        steps = []
        for rate in plan.steps:
            say(f"POST /api/orders at {rate}/s for {plan.step_s:g}s")
            res = await ctx.post_orders(f"r{rate}", rate, plan.step_s)
            lat = res["latencies_ms"]
            p99 = pct(lat, 99) if lat else float("inf")
            bad = sum(res["refused"].values()) + res["not_filled"]
            res["passed"] = bool(lat) and p99 < T_POST_P99_MS and res["achieved_rate"] >= T_ACHIEVED * rate and not bad
            steps.append(res)
            if not res["passed"]:
                break
        say(f"{plan.flow_signals:,} signals as fast as possible")
        flow_sig = await phase_flow_signals(ctx, plan.flow_signals)
        say(f"{plan.flow_orders:,} orders.submit, {plan.flow_concurrency} in flight")
        flow_ord = await ctx.pipelined("fo", 0, plan.flow_orders, plan.flow_concurrency)
        say(f"GET /api/portfolio, {plan.get_clients} clients for {plan.get_s:g}s")
        get = await phase_get(ctx, plan.get_s, plan.get_clients)
        out["fillEventsA"] = ctx.fills.events
        out["signalsNotExecuted"] = dict(ctx.signals.not_executed)
        await ctx.close()
        problems_a = tbx.log_problems()
        tbx.stop()
        tbx = None

        # -------- valuation (nothing else running but an idle nats-server) -----------------------------------
        say("valuation of 1, 100 and 10,000 positions")
        valuation = {n: valuation_samples(n) for n in VALUATION_SIZES}
        say(f"routing decision: 3 venues x 20 levels, {plan.routing_calls:,} calls")
        routing_res = routing.measure(plan.routing_calls)

        # -------- service B: memory -----------------------------------------------------------------------
        tbx = Tbx(url, tmp, "b")
        await tbx.wait_healthy()
        ctx = Ctx(tbx, server, plan, tally)
        await ctx.open()
        await ctx.seed()
        half = plan.memory_orders // 2
        rss0, kids = rss_mb(tbx.pid)
        say(f"memory: {half:,} orders.submit, {plan.memory_concurrency} in flight")
        mem1 = await ctx.pipelined("ma", 0, half, plan.memory_concurrency)
        await asyncio.sleep(2.0)
        rss1, _ = rss_mb(tbx.pid)
        say(f"memory: {plan.memory_orders - half:,} more")
        mem2 = await ctx.pipelined("mb", half, plan.memory_orders - half, plan.memory_concurrency)
        await asyncio.sleep(2.0)
        rss2, kids = rss_mb(tbx.pid)
        await ctx.close()
        problems_b = tbx.log_problems()
        tbx.stop()
        tbx = None

        # -------- routing path: three paper venues, routing on vs off (bench/routing_path.py) -------------
        from bench import algos, live_venue, routing_path

        say(f"routing path: three paper venues, {plan.routing_orders} orders routed and {plan.routing_orders} named")
        rpath = await routing_path.stage(url, nats_pid, tmp, plan.routing_orders, tally)

        # -------- execution algorithms: concurrent TWAPs, the drift of their slices (bench/algos.py) ---------
        say(f"algos: {plan.algo_parents} TWAPs x {plan.algo_slices} slices, {plan.algo_interval_ms} ms apart")
        algo = await algos.stage(url, nats_pid, tmp, tally, plan.algo_parents, plan.algo_slices, plan.algo_interval_ms)

        # -------- live venue: the local Binance exchange and a live tbx run (bench/live_venue.py) --------

        say(f"live venue: the local Binance exchange, {plan.live_orders} orders per path")
        live = await live_venue.stage(url, nats_pid, tmp, plan.live_orders, tally)

        # -------- the dashboard: page load and the browser's memory (bench/dashboard.py) ----------------
        from bench import dashboard

        dash_plan = dashboard.Plan(
            orders=plan.dashboard_orders, loads=plan.dashboard_loads, memory_fills=plan.dashboard_fills,
            memory_seconds=plan.dashboard_seconds,
        )  # fmt: skip
        say(f"dashboard: {plan.dashboard_orders:,} orders in the books, {plan.dashboard_loads} page loads")
        try:  # a page or a browser missing must not lose the figures of the whole run: said in the table
            dash = await dashboard.stage(url, nats_pid, tmp, dash_plan, tally)
        except Exception as e:
            say(f"dashboard: the stage failed: {e}")
            dash = {"error": f"{type(e).__name__}: {e}"[:300], "logProblems": {}}

        # -------- the hot path of issue 22: the bus limits beside the service, same run (bench/hotpath.py) ------
        from bench import hotpath

        say("hot path: the bus limits, a trace of the path, the service beside them")
        try:  # as the dashboard: a failed stage is said in the table, the figures of the run are kept
            hot = await hotpath.stage(url, nats_pid, tmp, tally, hotpath.QUICK if quick else hotpath.FULL)
        except Exception as e:
            say(f"hot path: the stage failed: {e}")
            hot = {"error": f"{type(e).__name__}: {e}"[:300], "logProblems": {}}
        hotpath.write(results / "hotpath", hotpath.report(hot, quick), hot)
    finally:
        if ctx is not None:
            await ctx.close()
        if tbx is not None:
            tbx.stop()
        server.stop()
        for pid, what in list(STARTED.items()):
            if what == "nats-server":
                STARTED.pop(pid)
        keep_logs(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    run_s = time.perf_counter() - t_start

    # -------- the table -----------------------------------------------------------------------------------
    raw50 = pct(raw, 50)
    t = Table(raw50)
    t.head_latency("latency (ratios: x the raw round trip p50)")
    t.latency("raw NATS request/reply (baseline)", raw)
    t.latency("JetStream publish -> stored ack (one durable write)", stored)
    t.latency("orders.submit -> reply (one at a time)", path_reply)
    t.latency("orders.submit -> complete fill (one at a time)", path_fill)
    s50, s99 = (pct(sig, 50), pct(sig, 99)) if sig else (float("inf"), float("inf"))
    t.latency(
        "signal (NATS publish) -> fill, one at a time",
        sig,
        f"p50 <= {T_SIGNAL_P50_RAW:g} raw; p99 < {T_SIGNAL_P99_MS:g} ms",
        f"{verdict(s50 <= T_SIGNAL_P50_RAW * raw50)} / {verdict(s99 < T_SIGNAL_P99_MS)}",
    )
    t.latency(f"POST /api/orders -> 201 at {plan.post_rate:g}/s (open loop)", light["latencies_ms"], p999=True)
    passed = [s for s in steps if s["passed"]]
    best = passed[-1] if passed else None
    for s in steps:
        ok = "ok" if s["passed"] else "FAIL"
        t.latency(
            f"POST /api/orders at {s['target_rate']:g}/s: {s['achieved_rate']:,.0f}/s {ok}",
            s["latencies_ms"],
            p999=True,
        )
    t.head_value("rate, size")
    t.value(
        "bus messages per order (wildcard subscriber)",
        f"{bus_count['perOrder']:.1f}, of which {bus_count['storedPerOrder']:.1f} durable writes (stored acks)",
        perOrder=bus_count["perOrder"],
        storedPerOrder=bus_count["storedPerOrder"],
    )
    best_rate = best["target_rate"] if best else 0
    t.value(
        "POST /api/orders sustained, p99 < 20 ms",
        (
            f"{best_rate:,.0f} /s (achieved {best['achieved_rate']:,.0f}/s, p99 {pct(best['latencies_ms'], 99):.1f} ms)"
            if best
            else "none of the steps"
        ),
        f">= {T_POST_RATE:,.0f} /s, p99 < {T_POST_P99_MS:g} ms",
        verdict(best_rate >= T_POST_RATE),
        rate=best_rate,
    )
    if steps and not steps[-1]["passed"]:
        s = steps[-1]
        lat = s["latencies_ms"]
        t.value(
            f"  first step that failed: {s['target_rate']:g}/s",
            f"achieved {s['achieved_rate']:,.0f}/s, p99 {pct(lat, 99) if lat else float('nan'):.1f} ms, "
            f"{sum(s['refused'].values())} refused",
        )
    t.value(
        "signals -> fills booked by the ledger (5 actors)",
        f"{fmt_rate(flow_sig['bookedRate'])} ({flow_sig['n']:,} in {flow_sig['bookedSeconds']} s)",
        f">= {T_FLOW_RATE:,.0f} /s",
        verdict(flow_sig["bookedRate"] >= T_FLOW_RATE),
        **flow_sig,
    )
    t.value(
        "  signals -> fill events seen",
        f"{fmt_rate(flow_sig['fillRate'])} ({flow_sig['n']:,} in {flow_sig['fillSeconds']} s; "
        f"published in {flow_sig['publishSeconds']} s)",
    )
    t.value(
        f"orders.submit -> fills, {plan.flow_concurrency} in flight",
        f"{fmt_rate(flow_ord['fillRate'])} ({flow_ord['n']:,} in {flow_ord['seconds']} s; "
        f"replies {flow_ord['replyRate']:,.0f}/s)",
        **flow_ord,
    )
    cores, rate = flow_ord["cores"], flow_ord["fillRate"]
    if rate:
        tbx_ms, nats_ms = cores["tbx"] / rate * 1000, cores["nats"] / rate * 1000
        ceiling = (os.cpu_count() or 1) * 1000 / (tbx_ms + nats_ms)
        t.value(
            "  CPU per order in that flow",
            f"tbx run {tbx_ms:.2f} ms + nats-server {nats_ms:.2f} ms; "
            f"{ceiling:,.0f} orders/s would fill {os.cpu_count()} cores",
            tbxMs=round(tbx_ms, 3),
            natsMs=round(nats_ms, 3),
            ceiling=round(ceiling),
        )
    get_lat = get["latencies_ms"]
    t.value(
        f"GET /api/portfolio, {plan.get_clients} keep-alive clients",
        f"{fmt_rate(get['achieved_rate'])} (p50 {pct(get_lat, 50):.1f} ms, p99 {pct(get_lat, 99):.1f} ms)"
        if get_lat
        else "no answer",
        f">= {T_GET_RPS:,.0f} /s",
        verdict(get["achieved_rate"] >= T_GET_RPS),
        rate=get["achieved_rate"],
        errors={**get["statuses"], **get["errors"]},
        cores=get.get("cores"),
    )
    for n, (snap, eq) in valuation.items():
        judged = n == 10_000
        for what, xs in (("full snapshot", snap), ("equity only", eq)):
            t.value(
                f"valuation, {n:,} positions: {what}",
                f"p50 {pct(xs, 50):.3f} ms, p99 {pct(xs, 99):.3f} ms ({len(xs)} calls)",
                f"p99 < {T_VALUATION_MS:g} ms" if judged else "",
                verdict(pct(xs, 99) < T_VALUATION_MS) if judged else "",
                p50Ms=pct(xs, 50),
                p99Ms=pct(xs, 99),
            )
    routing.add_rows(t, routing_res)
    n_mem = plan.memory_orders
    t.value("tbx run resident memory at start (fresh)", f"{rss0:.0f} MB", rss=rss0)
    t.value(f"  after {half:,} orders", f"{rss1:.0f} MB", rss=rss1)
    t.value(
        f"  after {n_mem:,} orders",
        f"{rss2:.0f} MB ({kids} child processes counted)",
        f"< {T_RSS_MB:g} MB",
        verdict(rss2 < T_RSS_MB),
        rss=rss2,
    )
    growth = rss2 - rss1
    t.value(
        f"  growth {half:,} -> {n_mem:,} orders",
        f"{growth:+.0f} MB ({growth / rss1 * 100:+.1f} %); orders at {mem2['fillRate']:,.0f}/s filled",
        f"flat (<= +{T_FLAT * 100:g} %)",
        verdict(growth <= T_FLAT * rss1),
        growth=growth,
    )

    # issue 17's "submit -> fill with routing on vs off" (bench/routing_path.py), then the live venue's rows
    routing_path.add_rows(t, rpath)
    algos.add_rows(t, algo)
    live_venue.add_rows(t, live)
    dashboard.add_rows(t, dash)
    hotpath.add_rows(t, hot)

    title = (
        f"tbx bench harness, {'QUICK (counts scaled down: not for quoting)' if quick else 'full'} run, "
        f"{started_at}, {os.cpu_count()} cores, load average at start {load_at_start[0]:.2f}, "
        f"Python {platform.python_version()}, {nats_version()}"
    )
    lines = [t.text(title)]
    lines.append("")
    lines.append(tally.line())
    probs = (
        problems_a
        + problems_b
        + Counter(rpath["logProblems"])
        + Counter(algo["logProblems"])
        + Counter(live["logProblems"])
        + Counter(dash["logProblems"])
        + Counter(hot["logProblems"])
    )
    lines.append(
        "tbx run logs (LOG_LEVEL=WARNING): "
        + (", ".join(f"{k} x{v}" for k, v in sorted(probs.items())) if probs else "no warning, no error")
    )
    lines.append(cpu_line(steps, flow_sig, flow_ord, get))
    lines.append(f"run time {run_s / 60:.1f} min")
    if tally.failures:
        banner = f"!!! THIS RUN HAD {tally.failures:,} FAILED ORDERS: not every figure is of filled orders !!!"
        lines = [banner, *lines, banner]
    text = "\n".join(lines)

    for s in (*steps, light, get):
        s.pop("latencies_ms", None)
    out.update(
        startedAt=started_at,
        runSeconds=round(run_s, 1),
        loadAverageAtStart=load_at_start,
        rawP50Ms=raw50,
        busCount=bus_count,
        figures=t.figures,
        steps=steps,
        postLight=light,
        flowSignals=flow_sig,
        flowOrders=flow_ord,
        get=get,
        memory={"startMb": rss0, "halfMb": rss1, "fullMb": rss2, "half": mem1, "second": mem2},
        orders={
            "sent": tally.sent,
            "accepted": tally.accepted,
            "refused": dict(tally.refused),
            "notFilled": tally.not_filled,
            "phases": tally.phases,
        },
        logProblems={
            "a": dict(problems_a),
            "b": dict(problems_b),
            "routingPath": rpath["logProblems"],
            "algos": algo["logProblems"],
            "live": live["logProblems"],
            "dashboard": dash["logProblems"],
            "hotpath": hot["logProblems"],
        },
        routingPath=routing_path.summary(rpath),
        algos=algos.summary(algo),
        liveVenue=live_venue.summary(live),
        dashboard=dashboard.summary(dash),
        hotpath=hotpath.summary(hot),
        routing=routing_res,
    )
    return text, out


def cpu_line(steps: list[dict[str, Any]], flow_sig: dict[str, Any], flow_ord: dict[str, Any], get: dict) -> str:
    """Cores each process used in the loaded phases: where the time goes (2 cores in all)."""
    parts = []
    for s in steps[-2:]:
        parts.append(f"POST {s['target_rate']:g}/s {_cores(s['cores'])}")
    parts.append(f"signals flow {_cores(flow_sig['cores'])}")
    parts.append(f"orders flow {_cores(flow_ord['cores'])}")
    parts.append(f"GET portfolio {_cores(get['cores'])}")
    return "cores used (tbx run / nats-server / harness / loadgen): " + "; ".join(parts)


def _cores(c: dict[str, float]) -> str:
    return "/".join(f"{c.get(k, 0.0):.2f}" if k in c else "-" for k in ("tbx", "nats", "harness", "loadgen"))


def depth_check(plan: Plan) -> dict[str, Any]:
    """The synthetic book has depth enough for our orders: what one book interval of the highest rate
    takes from one side, against the smallest depth a synthetic side can have."""
    book = SyntheticBook(PAIR, 42).next(0)
    min_side = min(sum(q for _, q in book.bids), sum(q for _, q in book.asks))
    worst_case_side = 10 * Decimal(5000) / Decimal(book.asks[-1][0])  # every level at its smallest notional
    interval_s = Decimal(250) / 1000
    take = Decimal(QTY) * Decimal(max(plan.steps)) * interval_s / 2  # half the orders buy, half sell
    if take > worst_case_side / 2:
        raise RuntimeError(f"synthetic depth {worst_case_side} too thin for {take} per side per book")
    return {"firstBookMinSide": str(min_side), "worstCaseSide": str(worst_case_side), "takenPerSidePerBook": str(take)}


def keep_logs(tmp: Path) -> None:
    """Copy the logs of tbx run, nats-server and the live stage's exchange out of the temp dir (removed at the
    end) to LOGS."""
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    kept = [*tmp.glob("tbx-*.log"), *tmp.glob("binance-*"), *tmp.glob("probe.json"), tmp / "nats" / "nats-server.log"]
    for log in kept:
        with contextlib.suppress(OSError):
            shutil.copy(log, LOGS / log.name)
    say(f"logs of tbx run and nats-server: {LOGS}")


@contextlib.asynccontextmanager
async def nats_alone(prefix: str) -> AsyncIterator[tuple[str, int | None, Path]]:
    """A stage run alone (``python -m bench.X``): a fresh embedded nats-server in a temp dir, yielded as (its URL, its
    pid, the temp dir); at the end it is stopped, the logs kept (``keep_logs``) and the temp dir removed."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedNats(tmp / "nats", port=free_port())
    try:
        url = server.start()
        if server.pid is not None:
            STARTED[server.pid] = "nats-server"
        yield url, server.pid, tmp
    finally:
        server.stop()
        if server.pid is not None:
            STARTED.pop(server.pid, None)
        keep_logs(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def nats_version() -> str:
    try:
        v = subprocess.run([find_binary(), "--version"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nats-server ?"
    return v.replace("nats-server: ", "nats-server ")


def say(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: every count scaled down (1-2 min)")
    p.add_argument("--memory-orders", type=int, help="orders of the memory phase (default 100,000)")
    p.add_argument("--flow", type=int, help="signals and orders of the throughput phase (default 20,000 each)")
    p.add_argument("--step-seconds", type=float, help="seconds per target rate of the search (default 6)")
    p.add_argument("--steps", help="target rates of the search, comma-separated (default 100,...,2000)")
    p.add_argument("--live-orders", type=int, help="orders per path of the live-venue stage (default 1,000)")
    p.add_argument("--routing-calls", type=int, help="timed calls of the routing stage (default 20,000)")
    p.add_argument("--routing-orders", type=int, help="orders of each kind of the routing-path stage (default 500)")
    p.add_argument("--algo-parents", type=int, help="concurrent TWAPs of the algorithm stage (default 100)")
    p.add_argument("--algo-slices", type=int, help="slices of each TWAP of the algorithm stage (default 100)")
    p.add_argument("--dashboard-orders", type=int, help="orders seeded for the dashboard stage (default 1,000)")
    p.add_argument(
        "--out", default=str(RESULTS / "harness"), help="write OUT.txt and OUT.json (and hotpath.txt/.json beside)"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    plan = QUICK if a.quick else FULL
    if a.memory_orders:
        plan = replace(plan, memory_orders=a.memory_orders)
    if a.flow:
        plan = replace(plan, flow_signals=a.flow, flow_orders=a.flow)
    if a.step_seconds:
        plan = replace(plan, step_s=a.step_seconds)
    if a.steps:
        plan = replace(plan, steps=tuple(int(x) for x in a.steps.split(",")))
    if a.live_orders:
        plan = replace(plan, live_orders=a.live_orders)
    if a.routing_calls:
        plan = replace(plan, routing_calls=a.routing_calls)
    if a.routing_orders:
        plan = replace(plan, routing_orders=a.routing_orders)
    if a.algo_parents:
        plan = replace(plan, algo_parents=a.algo_parents)
    if a.algo_slices:
        plan = replace(plan, algo_slices=a.algo_slices)
    if a.dashboard_orders:
        plan = replace(plan, dashboard_orders=a.dashboard_orders)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        runner = asyncio.Runner()
    try:
        with runner:

            async def go() -> tuple[str, dict[str, Any]]:
                task = asyncio.current_task()
                assert task is not None
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)  # stop as on Ctrl-C
                return await asyncio.wait_for(run(plan, a.quick, Path(a.out).parent), plan.max_minutes * 60)

            text, data = runner.run(go())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("harness: interrupted, everything it started is stopped", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"harness: stopped after {plan.max_minutes:g} minutes, everything it started is stopped", file=sys.stderr)
        return 2
    finally:
        stop_all()
    print(text)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".txt").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    return 1 if "FAILED ORDERS" in text or "STAGE FAILED" in text else 0


if __name__ == "__main__":
    # run as bench.harness, not __main__: bench.live_venue imports bench.harness, and there must be one
    # module (one STARTED registry of the processes to stop)
    from bench.harness import main as harness_main

    sys.exit(harness_main())
