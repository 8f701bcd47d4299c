"""The live-venue stage of the bench harness (issue 16, "Bench"): our path against the local Binance exchange.

Starts the local Binance spot exchange (``tests/exchanges/binance.py``) as its own process on 127.0.0.1,
with a deep book and a large balance so every order fills, and a ``tbx run`` in live mode against it
(``LIVE_TRADING=true``, ``EXCHANGE=binance``, ``EXCHANGE_API_URL`` at the exchange, ``MARKET_DATA=venue``,
a fresh ``BUS_PREFIX`` on the harness's nats-server). Then, one request at a time:

  raw POST   a signed ``POST /api/v3/order`` (market, ``newOrderRespType=FULL``, a new ``newClientOrderId``
             each) from an aiohttp keep-alive client straight to the exchange: the work the venue does for
             us, without our path (on WBTC/USDC, a symbol with the same book and filters that tbx does not
             trade: see RAW_SYMBOL). Binance's FULL answer carries the order's trades, so this round trip is
             also the raw "submit -> fill";
  raw GET    a signed ``GET /api/v3/order`` (one of those orders, by client id): a second baseline;
  submit     ``<prefix>.orders.submit`` request -> reply (live: after the venue's first answer) and -> the
             order's fill event on ``<prefix>.events.fills.<pair>`` (subscribed before the first order);
  REST       ``POST /api/orders`` -> 201 (after the venue's answer), and -> the same fill event.

The timed POSTs (raw and ours) start at least PACE_MS (50 ms) apart: inside the request budget ccxt's limiter
gives tbx run's order-router (``venue_budget``), so the rows time our path, not the limiter's waits. Then the
same number of orders.submit go back to back (rows of their own): what the budget does to a burst.

The raw requests are measured half before and half after ours, so a drift of the machine's load shows in
both. The exchange process runs with a timing hook (:class:`TimedExchange`: the same exchange, plus the
monotonic time each ``POST /api/v3/order`` reached it and left it, read back through
``GET /__control/timings``), so each order's latency splits into: before the venue (our path up to the
request arriving), at the venue, and after the venue (its answer -> our reply / fill event). The clock is
CLOCK_MONOTONIC in every process (``time.perf_counter`` on Linux).

Every order is checked: ours answered ok and completely filled (a fill event with ``orderComplete``), the raw
ones answered 200 ``FILLED``, and the exchange's own list has every one of them ``FILLED``.

    .venv/bin/python -m bench.live_venue                  # this stage alone (own nats-server), 300 orders per path
    .venv/bin/python -m bench.live_venue --orders 1000
    .venv/bin/python -m bench.live_venue --pace-ms 0                # the timed orders back to back (over the budget)
    .venv/bin/python -m bench.live_venue --profile /tmp/tbx.prof   # tbx run under cProfile (slower: not for quoting)
    .venv/bin/python -m bench.live_venue exchange --port 0 ...     # the timed exchange alone (the stage starts it)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

from bench.harness import (
    PAIR,
    QTY,
    STARTED,
    Ctx,
    Plan,
    Table,
    Tally,
    Tbx,
    nats_alone,
    pct,
    say,
    stop_all,
    stop_pid,
)
from bus.embedded import _die_with_parent
from tests.exchanges.binance import BinanceTestExchange

SYMBOL, SYMBOL_ID = "BTC/USDT", "BTCUSDT"  # what tbx run trades (PAIRS=BTC_USDT)
# the raw client trades its own symbol, same filters, same book, same size: on BTC/USDT its orders would be
# orders of the account that tbx did not place, which its poll finds and adopts as external orders (two more
# signed calls each, through ccxt's rate limiter: they would slow our path down, not the raw one); and none of
# its currencies is one of PAIRS, or the balances tbx reconciles would move under it (BALANCE_MISMATCH)
RAW_SYMBOL, RAW_SYMBOL_ID = "WBTC/USDC", "WBTCUSDC"
KEY = "bench-live-key-0123456789abcdef"
SECRET = "bench-live-secret-0123456789abcdef"
TOKEN = "bench-live-token-0123456789"
# a large balance and a deep book: every order of the stage fills at the best level (<= 4 BTC taken a side)
BALANCES = {"USDT": "1000000000", "BTC": "10000", "USDC": "1000000000", "WBTC": "10000"}
LEVELS = {
    "bids": [[f"{59999.99 - i:.2f}", "1000"] for i in range(10)],
    "asks": [[f"{60000.00 + i:.2f}", "1000"] for i in range(10)],
}
# tbx run in live mode against the exchange (laid over the harness's SERVICE_ENV), with the polling
# intervals of a real deployment on Binance (bench/README.md, "Live venue": the request-weight budget)
EXCHANGE_POLL_MS = 1000
MARKET_DATA_INTERVAL = 1000
LIVE_ENV = {
    "PAPER_TRADING": "false",
    "LIVE_TRADING": "true",
    "EXCHANGE": "binance",
    "EXCHANGE_API_KEY": KEY,
    "EXCHANGE_API_SECRET": SECRET,
    "API_TOKEN": TOKEN,
    "MARKET_DATA": "venue",
    "MARKET_DATA_INTERVAL": str(MARKET_DATA_INTERVAL),
    "EXCHANGE_POLL_MS": str(EXCHANGE_POLL_MS),
}
AIM_ADDED_P50_MS = 2.0  # issue 16: our path adds at most 2 ms p50 over the raw round trip
WARMUP = 10  # untimed requests of each kind first (connections, caches, the first-call costs)
# the timed orders (ours and the raw POSTs) start at least this far apart: 20 orders a second, inside the request
# budget ccxt's limiter holds tbx run's order-router to (venue_budget(); bench/README.md, "Live venue": one at a time
# back to back, our orders went at about 170/s, 2.4 times that budget, and every ~2 s the limiter's window ran dry:
# the p99 stall of ~350 ms was that wait). Binance itself takes at most 100 orders per 10 s of an account
PACE_MS = 50
SLOW_MS = 100.0  # a reply slower than this is counted as a stall (the table's "replies over 100 ms")


# ------------------------------------------------------------------------------------------------------
# the request budget of tbx run's order-router at the venue
# ------------------------------------------------------------------------------------------------------
def venue_budget(pace_ms: float = PACE_MS, poll_ms: int = EXCHANGE_POLL_MS) -> dict[str, float]:
    """What the stage's orders and polls take of the budget ccxt's limiter gives tbx run's order-router, in ccxt's
    cost units per limiter window. Read from the ccxt instance as the service builds it (``CcxtVenue``, Binance, the
    order-router's share ``ORDERS_SHARE`` of the per-IP weight) and ccxt's own endpoint costs: ``maxCost`` per
    ``windowMs``; ``orders``: our orders paced ``pace_ms`` apart (0: back to back, no bound); ``polls``: the poll
    rounds one window can hold (myTrades and openOrders of one symbol each ``poll_ms``, one round more for where the
    window falls) and one balance reading (the reconcile)."""
    from actors.venues.ccxt_venue import CcxtVenue
    from actors.venues.factory import ORDERS_SHARE

    venue = CcxtVenue(
        "binance", pairs=[PAIR], api_key=KEY, secret=SECRET, api_url="http://127.0.0.1:9", rate_share=ORDERS_SHARE
    )  # never opens a session: nothing to close
    cfg, api = venue.ex.throttler.config, venue.ex.api["private"]

    def cost(method: str, path: str) -> float:
        c = api[method][path]
        return float(c["cost"] if isinstance(c, dict) else c)

    window = float(cfg["windowSize"])
    order = cost("post", "order")
    orders = float("inf") if pace_ms <= 0 else order * window / pace_ms
    polls = (window // poll_ms + 1) * (cost("get", "myTrades") + cost("get", "openOrders")) + cost("get", "account")
    return {"windowMs": window, "maxCost": float(cfg["maxWeight"]), "orderCost": order, "orders": orders,
            "polls": polls, "ordersPerSecond": 1000 / pace_ms if pace_ms > 0 else float("inf")}  # fmt: skip


class Pacer:
    """Starts of a loop at least ``gap_s`` apart (0: no wait)."""

    def __init__(self, gap_s: float) -> None:
        self.gap_s = gap_s
        self.next_at = 0.0

    async def wait(self) -> None:
        if self.gap_s > 0:
            delay = self.next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.next_at = time.perf_counter() + self.gap_s


# ------------------------------------------------------------------------------------------------------
# the exchange, as its own process, with a timing hook
# ------------------------------------------------------------------------------------------------------
class TimedExchange(BinanceTestExchange):
    """The local Binance exchange, unchanged, plus when each ``POST /api/v3/order`` reached its handler and
    when the answer left it (``time.perf_counter``, CLOCK_MONOTONIC: comparable across processes), by
    ``newClientOrderId``; ``GET /__control/timings`` returns them."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.timings: dict[str, tuple[float, float]] = {}

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        t_in = time.perf_counter()
        resp = await super()._dispatch(request)
        if request.method == "POST" and request.path == "/api/v3/order":
            t_out = time.perf_counter()
            body = await request.text()  # read (and cached) by the exchange already
            params = dict(parse_qsl(body)) | dict(parse_qsl(request.rel_url.raw_query_string))
            cid = params.get("newClientOrderId")
            if cid:
                self.timings[cid] = (t_in, t_out)
        return resp

    def _control_routes(self) -> dict[tuple[str, str], Callable[[Any, dict[str, str]], Awaitable[Any]]]:
        routes = super()._control_routes()

        async def timings(body: Any, q: dict[str, str]) -> Any:
            return self.timings

        routes[("GET", "/timings")] = timings
        return routes


async def _serve_exchange(a: argparse.Namespace) -> None:
    balances = dict(b.split("=", 1) for b in a.balance)
    symbols = [SYMBOL, RAW_SYMBOL]
    ex = TimedExchange(api_key=a.api_key, secret=a.secret, symbols=symbols, balances=balances, port=a.port)
    print(await ex.start(), flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (2, 15):  # SIGINT, SIGTERM
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await ex.stop()


class ExchangeProcess:
    """``python -m bench.live_venue exchange``: the timed exchange on 127.0.0.1, registered with the harness
    and stopped by pid (also when the harness dies: PR_SET_PDEATHSIG)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "bench.live_venue", "exchange", "--port", "0",
                    "--api-key", KEY, "--secret", SECRET, *(f"--balance={k}={v}" for k, v in BALANCES.items()),
                ],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            )  # fmt: skip
        STARTED[self.proc.pid] = "binance test exchange"
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the local Binance exchange did not start: {line!r}\n{self.log_tail()}")
        self.url = line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self) -> None:
        stop_pid(self.proc.pid)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# ------------------------------------------------------------------------------------------------------
# the raw client: what ccxt sends, signed the same way, without our path
# ------------------------------------------------------------------------------------------------------
class RawVenue:
    def __init__(self, base: str) -> None:
        self.base = base
        # one keep-alive connection, as ccxt's session keeps one to the venue
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))

    async def close(self) -> None:
        await self.http.close()

    @staticmethod
    def signed(params: dict[str, str]) -> str:
        params = {"timestamp": str(int(time.time() * 1000)), **params, "recvWindow": "10000"}
        query = urlencode(params)
        return query + "&signature=" + hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()

    async def post_order(self, cid: str, i: int) -> str | None:
        """A market order straight to the exchange (the parameters ccxt sends for ours); None when it
        answered 200 FILLED, else what went wrong."""
        body = self.signed(
            {
                "symbol": RAW_SYMBOL_ID,
                "side": "BUY" if i % 2 == 0 else "SELL",
                "newClientOrderId": cid,
                "newOrderRespType": "FULL",
                "type": "MARKET",
                "quantity": QTY,
            }
        )
        headers = {"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"}
        async with self.http.post(f"{self.base}/api/v3/order", data=body, headers=headers) as r:
            data = await r.read()
            if r.status != 200:
                return f"raw POST HTTP {r.status}"
        answer = json.loads(data)
        return None if answer.get("status") == "FILLED" and answer.get("fills") else f"raw POST {answer.get('status')}"

    async def get_order(self, cid: str) -> str | None:
        query = self.signed({"symbol": RAW_SYMBOL_ID, "origClientOrderId": cid})
        async with self.http.get(f"{self.base}/api/v3/order?{query}", headers={"X-MBX-APIKEY": KEY}) as r:
            await r.read()
            return None if r.status == 200 else f"raw GET HTTP {r.status}"

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.base}/__control/{path}", json=body) as r:
            if r.status != 200:
                raise RuntimeError(f"exchange control {method} {path}: HTTP {r.status} {await r.text()}")
            return await r.json()


# ------------------------------------------------------------------------------------------------------
# the measurements
# ------------------------------------------------------------------------------------------------------
class Samples:
    """One kind of request: latencies (ms), send times, and what refused the rest."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self.fill_ms: list[float] = []
        self.sent: dict[str, float] = {}  # client order id -> perf_counter at send
        self.answered: dict[str, float] = {}  # -> perf_counter at the answer (ok ones)
        self.filled: dict[str, float] = {}  # -> perf_counter at the fill event
        self.refused: Counter[str] = Counter()
        self.not_filled = 0


async def raw_posts(raw: RawVenue, s: Samples, tag: str, start: int, n: int, gap_s: float = 0.0) -> list[str]:
    ids = []
    pacer = Pacer(gap_s)
    for i in range(start, start + n):
        cid = f"{tag}-{i}"
        ids.append(cid)
        await pacer.wait()
        t0 = time.perf_counter()
        why = await raw.post_order(cid, i)
        t1 = time.perf_counter()
        s.sent[cid] = t0
        if why is None:
            s.answered[cid] = t1
            s.ms.append((t1 - t0) * 1000)
        else:
            s.refused[why] += 1
    return ids


async def raw_gets(raw: RawVenue, s: Samples, cids: list[str]) -> None:
    for cid in cids:
        t0 = time.perf_counter()
        why = await raw.get_order(cid)
        if why is None:
            s.ms.append((time.perf_counter() - t0) * 1000)
        else:
            s.refused[why] += 1


async def ours(
    ctx: Ctx, s: Samples, tag: str, n: int, send: Callable[[str, int], Awaitable[str | None]], gap_s: float = 0.0
) -> None:
    """``n`` orders one at a time, each started at least ``gap_s`` after the one before: the reply (venue
    acknowledgement) and then the fill event of each."""
    pacer = Pacer(gap_s)
    for i in range(n):
        cid = f"{tag}-{i}"
        await pacer.wait()
        fut = ctx.fills.expect(cid)  # the fill subscription is up since ctx.open()
        t0 = time.perf_counter()
        why = await send(cid, i)
        t1 = time.perf_counter()
        s.sent[cid] = t0
        if why is not None:
            s.refused[why] += 1
            ctx.fills.forget(cid)
            continue
        s.answered[cid] = t1
        s.ms.append((t1 - t0) * 1000)
        try:
            t2 = await asyncio.wait_for(fut, 10)
        except TimeoutError:
            s.not_filled += 1
            continue
        s.filled[cid] = t2
        s.fill_ms.append((t2 - t0) * 1000)


def rest_sender(http: aiohttp.ClientSession, base: str) -> Callable[[str, int], Awaitable[str | None]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def send(cid: str, i: int) -> str | None:
        side = "buy" if i % 2 == 0 else "sell"
        body = f'{{"pair":"{PAIR}","side":"{side}","type":"market","quantity":{QTY},"clientOrderId":"{cid}"}}'
        try:
            async with http.post(f"{base}/api/orders", data=body, headers=headers) as r:
                text = await r.read()
                if r.status == 201:
                    return None
                return f"HTTP {r.status}: {text[:60].decode(errors='replace')}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return f"HTTP {type(e).__name__}"

    return send


def split(s: Samples, timings: dict[str, list[float]]) -> dict[str, float | None]:
    """p50 of each part of the orders' latency (ms): before the venue (send -> the request at the
    exchange), at the venue (in the exchange's handler), after it (the exchange's answer -> our answer, and
    -> the fill event)."""
    before, venue, after, after_fill = [], [], [], []
    for cid, t0 in s.sent.items():
        t = timings.get(cid)
        if t is None or cid not in s.answered:
            continue
        before.append((t[0] - t0) * 1000)
        venue.append((t[1] - t[0]) * 1000)
        after.append((s.answered[cid] - t[1]) * 1000)
        if cid in s.filled:
            after_fill.append((s.filled[cid] - t[1]) * 1000)

    def p50(xs: list[float]) -> float | None:
        return round(pct(xs, 50), 3) if xs else None

    return {
        "n": len(before),
        "before": p50(before),
        "venue": p50(venue),
        "after": p50(after),
        "afterFill": p50(after_fill),
    }


def slow(s: Samples, timings: dict[str, list[float]], over_ms: float = SLOW_MS) -> dict[str, Any]:
    """The orders whose reply took more than ``over_ms``: how many, and where their time went (the largest "before the
    venue", at it, and after it, ms): a wait in ccxt's limiter is before the venue."""
    parts: list[tuple[float, float, float]] = []
    for cid, t0 in s.sent.items():
        t1 = s.answered.get(cid)
        if t1 is None or (t1 - t0) * 1000 <= over_ms:
            continue
        t = timings.get(cid)
        parts.append(((t[0] - t0) * 1000, (t[1] - t[0]) * 1000, (t1 - t[1]) * 1000) if t else (-1.0, -1.0, -1.0))
    top = [round(max((p[i] for p in parts), default=0.0), 1) for i in range(3)]
    return {"overMs": over_ms, "n": len(parts), "of": len(s.answered), "maxBefore": top[0], "maxVenue": top[1],
            "maxAfter": top[2]}  # fmt: skip


async def stage(
    nats_url: str,
    nats_pid: int | None,
    tmp: Path,
    n: int,
    tally: Tally,
    python_args: tuple[str, ...] = (),
    probe_env: dict[str, str] | None = None,
    pace_ms: float = PACE_MS,
) -> dict[str, Any]:
    """The whole stage; everything it starts is stopped before it returns (also on errors). The timed POSTs (raw
    and ours) start ``pace_ms`` apart; then ``n`` more orders.submit go back to back (over the venue budget)."""
    gap = pace_ms / 1000
    exchange: ExchangeProcess | None = None
    tbx: Tbx | None = None
    ctx: Ctx | None = None
    raw: RawVenue | None = None
    http: aiohttp.ClientSession | None = None
    t_stage = time.perf_counter()
    try:
        exchange = ExchangeProcess(tmp / "binance-exchange.log")
        raw = RawVenue(exchange.url)
        for symbol in (SYMBOL, RAW_SYMBOL):
            await raw.control("POST", "book", {"symbol": symbol, **LEVELS})
        tbx = Tbx(
            nats_url, tmp, "live", {**LIVE_ENV, "EXCHANGE_API_URL": exchange.url, **(probe_env or {})}, python_args
        )
        await tbx.wait_healthy(120.0)
        ctx = Ctx(tbx, _Server(nats_url, nats_pid), Plan(), tally)  # type: ignore[arg-type]
        await ctx.open()
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        rest = rest_sender(http, tbx.base)

        # untimed: connections opened, first-call costs paid (these orders are checked too)
        warm = Samples()
        await raw_posts(raw, warm, "lvw", 0, WARMUP)
        await raw_gets(raw, warm, [f"lvw-{i}" for i in range(WARMUP)])
        await ours(ctx, warm, "lvwn", WARMUP, ctx.submit)
        await ours(ctx, warm, "lvwr", WARMUP, rest)

        raw_post, raw_get, sub, post, b2b = Samples(), Samples(), Samples(), Samples(), Samples()
        half = n // 2
        say(
            f"live venue: {n} raw signed POST /api/v3/order and GET, orders.submit, POST /api/orders, one at a time, "
            f"{pace_ms:g} ms apart; then {n} orders.submit back to back"
        )
        with ctx.cpu() as cpu_raw1:
            ids = await raw_posts(raw, raw_post, "lvraw", 0, half, gap)
            await raw_gets(raw, raw_get, ids)
        with ctx.cpu() as cpu_ours:
            t_ours = time.perf_counter()
            await ours(ctx, sub, "lvsub", n, ctx.submit, gap)
            await ours(ctx, post, "lvpost", n, rest, gap)
            t_ours = time.perf_counter() - t_ours
        # over the budget: the orders as fast as one at a time goes (what the stage did before it was paced)
        t_b2b = time.perf_counter()
        await ours(ctx, b2b, "lvb2b", n, ctx.submit)
        t_b2b = time.perf_counter() - t_b2b
        with ctx.cpu() as cpu_raw2:
            ids = await raw_posts(raw, raw_post, "lvraw", half, n - half, gap)
            await raw_gets(raw, raw_get, ids)

        # the exchange's own list: every order of the stage FILLED there
        timings: dict[str, list[float]] = await raw.control("GET", "timings")
        venue_orders = await raw.control("GET", "orders")
        venue_status = {o["clientOrderId"]: o["status"] for o in venue_orders}
        requests = await raw.control("GET", "requests")
        (tmp / "binance-requests.json").write_text(json.dumps(requests))
        for label, s in (
            ("warm-up", warm),
            ("raw POST", raw_post),
            ("orders.submit", sub),
            ("POST /api/orders", post),
            ("orders.submit back to back", b2b),
        ):
            unfilled = [c for c in s.answered if venue_status.get(c) != "FILLED"]
            if unfilled:
                s.refused[f"{label}: not FILLED at the exchange"] += len(unfilled)
        for label, s in (
            ("live venue: warm-up", warm),
            ("live venue: raw POST /api/v3/order", raw_post),
            ("live venue: orders.submit", sub),
            ("live venue: POST /api/orders", post),
            ("live venue: orders.submit back to back", b2b),
        ):
            tally.add(label, len(s.sent), len(s.answered), s.refused, s.not_filled)
        tally.add("live venue: raw GET /api/v3/order", len(raw_get.ms) + sum(raw_get.refused.values()),
                  len(raw_get.ms), raw_get.refused, 0)  # fmt: skip
        problems = tbx.log_problems()
        return {
            "n": n,
            "exchangePollMs": EXCHANGE_POLL_MS,
            "marketDataIntervalMs": MARKET_DATA_INTERVAL,
            "rawPost": raw_post.ms,
            "rawGet": raw_get.ms,
            "submitAck": sub.ms,
            "submitFill": sub.fill_ms,
            "restAck": post.ms,
            "restFill": post.fill_ms,
            "b2bAck": b2b.ms,
            "b2bFill": b2b.fill_ms,
            "b2bPerSecond": round(len(b2b.answered) / t_b2b, 1) if t_b2b > 0 else None,
            "paceMs": pace_ms,
            "budget": venue_budget(pace_ms),
            "split": {"rawPost": split(raw_post, timings), "submit": split(sub, timings), "rest": split(post, timings)},
            "slow": {"submit": slow(sub, timings), "rest": slow(post, timings), "b2b": slow(b2b, timings)},
            "venueOrders": len(venue_orders),
            "venueFilled": sum(1 for o in venue_orders if o["status"] == "FILLED"),
            "expectedOrders": sum(len(s.sent) for s in (warm, raw_post, sub, post, b2b)),
            "failures": {
                k: dict(s.refused) | ({"not filled": s.not_filled} if s.not_filled else {})
                for k, s in (
                    ("warm", warm),
                    ("rawPost", raw_post),
                    ("rawGet", raw_get),
                    ("submit", sub),
                    ("rest", post),
                    ("b2b", b2b),
                )
            },
            "cores": {"raw": _avg(cpu_raw1.cores, cpu_raw2.cores), "ours": cpu_ours.cores},
            # CPU ms per order of our phases (both paths, one at a time; polls and books included)
            "cpuMsPerOrder": {
                k: round(cpu_ours.cores.get(k, 0.0) * t_ours / max(1, 2 * n) * 1000, 2) for k in ("tbx", "nats")
            },
            "exchangePid": exchange.pid,
            "logProblems": dict(problems),
            "seconds": round(time.perf_counter() - t_stage, 1),
        }
    finally:
        if http is not None:
            await http.close()
        if ctx is not None:
            await ctx.close()
        if raw is not None:
            await raw.close()
        if tbx is not None:
            tbx.stop()
        if exchange is not None:
            exchange.stop()


class _Server:
    """What Ctx needs of the harness's EmbeddedNats: its URL and pid."""

    def __init__(self, url: str, pid: int | None) -> None:
        self.url, self.pid = url, pid


def _avg(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: round((a.get(k, 0.0) + b.get(k, 0.0)) / 2, 2) for k in a}


# ------------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------------
def add_rows(t: Table, res: dict[str, Any]) -> None:
    """This stage's section of the harness's table (and its figures for harness.json)."""
    raw_post, raw_get = res["rawPost"], res["rawGet"]
    r50, r99 = (pct(raw_post, 50), pct(raw_post, 99)) if raw_post else (float("nan"), float("nan"))
    t.lines.append(
        f"{'live venue: local Binance exchange, one at a time':<50} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'+p50 raw':>8} {'+p99 raw':>8}  {'target':<28} result"
    )
    rows = (
        ("raw signed POST /api/v3/order (market, FULL)", raw_post, False, False),
        ("raw signed GET /api/v3/order", raw_get, False, False),
        ("orders.submit -> reply (venue acknowledgement)", res["submitAck"], True, True),
        ("POST /api/orders -> 201 (venue acknowledgement)", res["restAck"], True, True),
        ("orders.submit -> fill event", res["submitFill"], True, True),
        ("POST /api/orders -> fill event", res["restFill"], True, True),
        ("orders.submit -> reply, back to back", res["b2bAck"], False, True),
        ("orders.submit -> fill event, back to back", res["b2bFill"], False, True),
    )
    for name, xs, judged, ours in rows:
        if not xs:
            t.lines.append(f"{name:<50} {0:>6}  (no sample: every request failed)")
            t.figures.append({"name": name, "n": 0})
            continue
        p50, p99 = pct(xs, 50), pct(xs, 99)
        add50, add99 = p50 - r50, p99 - r99
        target = f"+p50 <= {AIM_ADDED_P50_MS:g} ms over raw POST" if judged else ""
        result = ("met" if add50 <= AIM_ADDED_P50_MS else "NOT MET") if judged else ""
        adds = f"{add50:+8.3f} {add99:+8.3f}" if ours else f"{'-':>8} {'-':>8}"
        t.lines.append(f"{name:<50} {len(xs):>6} {p50:8.3f} {p99:8.3f} {adds}  {target:<28} {result}".rstrip())
        t.figures.append(
            {
                "name": f"live venue: {name}",
                "n": len(xs),
                "p50Ms": round(p50, 4),
                "p99Ms": round(p99, 4),
                **({"addedP50Ms": round(add50, 4), "addedP99Ms": round(add99, 4)} if ours else {}),
                "target": target,
                "result": result,
            }
        )
    sp = res["split"]

    def f(x: float | None) -> str:
        return "?" if x is None else f"{x:.2f}"

    for key, label in (("submit", "orders.submit"), ("rest", "POST /api/orders")):
        s = sp[key]
        value = (
            f"before the venue {f(s['before'])}, at it {f(s['venue'])}, after it {f(s['after'])} "
            f"(to the fill {f(s['afterFill'])})"
        )
        t.lines.append(f"{'  p50 ms of ' + label:<50} {value}")
        t.figures.append({"name": f"live venue: split of {label}", **s})
    s = sp["rawPost"]
    value = f"before the venue {f(s['before'])}, at it {f(s['venue'])}, after it {f(s['after'])}"
    t.lines.append(f"{'  p50 ms of the raw POST':<50} {value}")
    t.figures.append({"name": "live venue: split of the raw POST", **s})
    sl = res["slow"]
    over = f"{sl['submit']['overMs']:g}"

    def stalls(x: dict[str, Any]) -> str:
        where = (
            f" (the most before the venue {x['maxBefore']:.1f}, at it {x['maxVenue']:.1f}, "
            f"after it {x['maxAfter']:.1f})"
            if x["n"]
            else ""
        )
        return f"{x['n']} of {x['of']}{where}"

    value = f"paced: orders.submit {stalls(sl['submit'])}, POST {stalls(sl['rest'])}; back to back {stalls(sl['b2b'])}"
    t.lines.append(f"{'  replies over ' + over + ' ms':<50} {value}")
    t.figures.append({"name": f"live venue: replies over {over} ms", **sl})
    b = res["budget"]
    value = (
        f"paced {res['paceMs']:g} ms apart ({b['ordersPerSecond']:g}/s): orders {b['orders']:g} + polls "
        f"{b['polls']:g} of the {b['maxCost']:g} cost units ccxt's limiter gives the order-router per "
        f"{b['windowMs'] / 1000:g} s (an order {b['orderCost']:g}); back to back {res['b2bPerSecond']}/s"
    )
    t.lines.append(f"{'  pace, venue budget':<50} {value}")
    t.figures.append({"name": "live venue: pace and budget", "paceMs": res["paceMs"],
                      "backToBackPerSecond": res["b2bPerSecond"], **b})  # fmt: skip
    expected, filled = res["expectedOrders"], res["venueFilled"]
    check = (
        f"every one of {expected:,} orders FILLED at the exchange"
        if filled == expected == res["venueOrders"]
        else f"!!! {filled:,} FILLED at the exchange of {res['venueOrders']:,} it holds, {expected:,} sent !!!"
    )
    t.lines.append(
        f"{'  orders, settings':<50} {check}; EXCHANGE_POLL_MS={res['exchangePollMs']}, "
        f"MARKET_DATA_INTERVAL={res['marketDataIntervalMs']}"
    )
    c, cpu = res["cores"], res["cpuMsPerOrder"]
    t.lines.append(
        f"{'  CPU of our orders (one at a time)':<50} tbx run {cpu['tbx']:.2f} ms + nats-server {cpu['nats']:.2f} ms "
        f"an order; cores tbx/nats/harness {c['ours'].get('tbx', 0):.2f}/{c['ours'].get('nats', 0):.2f}/"
        f"{c['ours'].get('harness', 0):.2f} (raw phases: harness {c['raw'].get('harness', 0):.2f})"
    )


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """harness.json: the figures without the sample lists."""
    return {k: v for k, v in res.items() if not isinstance(v, list)}


# ------------------------------------------------------------------------------------------------------
# this stage alone
# ------------------------------------------------------------------------------------------------------
PROBES = ("record", "idle-refill", "no-throttle")


async def alone(
    n: int, profile: str | None, probe: str | None, pace_ms: float = PACE_MS
) -> tuple[str, dict[str, Any], Tally]:
    tally = Tally()
    python_args = ("-m", "cProfile", "-o", profile) if profile else ()
    async with nats_alone("tbx-live-venue-") as (url, pid, tmp):
        probe_env = None
        if probe:  # bench/probe/sitecustomize.py in tbx run: ccxt's calls timed (and its throttle changed)
            probe_out = tmp / "probe.json"
            path = [str(Path(__file__).parent / "probe"), os.environ.get("PYTHONPATH", "")]
            probe_env = {"PYTHONPATH": os.pathsep.join(p for p in path if p), "TBX_BENCH_PROBE": probe,
                         "TBX_BENCH_PROBE_OUT": str(probe_out)}  # fmt: skip
        res = await stage(url, pid, tmp, n, tally, python_args, probe_env, pace_ms)
        if probe:
            res["probe"] = probe_report(json.loads(probe_out.read_text()))
    t = Table(1.0)
    add_rows(t, res)
    title = f"live venue stage alone, {n} orders per path"
    title += " (tbx run under cProfile)" if profile else ""
    title += f" (probe {probe}: not the service as shipped)" if probe and probe != "record" else ""
    text = t.text(title)
    if probe:
        text += "\n" + res["probe"]
    return text, res, tally


def probe_report(data: dict[str, Any]) -> str:
    """ccxt's REST calls in tbx run, by method and path: count, p50 / p99 of the throttle's wait and of the
    HTTP exchange (ms), and the cost ccxt charged."""
    by: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for method, path, cost, waited, http, *_ in data["calls"]:
        by.setdefault((method, path), []).append((cost, waited, http))
    lines = [f"ccxt calls in tbx run (probe {data['mode']}){'':<14} {'n':>6} {'cost':>5} {'wait p50':>9} "
             f"{'wait p99':>9} {'http p50':>9} {'http p99':>9}"]  # fmt: skip
    for (method, path), xs in sorted(by.items(), key=lambda kv: -len(kv[1])):
        w, h = [x[1] for x in xs], [x[2] for x in xs]
        lines.append(
            f"  {method + ' ' + path:<46} {len(xs):>6} {xs[-1][0]:>5g} {pct(w, 50):9.2f} {pct(w, 99):9.2f} "
            f"{pct(h, 50):9.2f} {pct(h, 99):9.2f}"
        )
    # the calls that waited in the limiter, and what its window held when they asked (the probe's later fields)
    waited = [c for c in data["calls"] if c[3] > 50 and len(c) > 6]
    if waited:
        spent = [c[6] for c in waited]
        behind = sum(1 for c in waited if c[7])
        lines.append(
            f"  {len(waited)} calls waited > 50 ms for the request budget (longest {max(c[3] for c in waited):.0f} "
            f"ms); its window held {min(spent):g}-{max(spent):g} cost units when they asked; {behind} queued behind "
            "another call"
        )
    else:
        lines.append("  no call waited > 50 ms for the request budget")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["exchange"]:
        p = argparse.ArgumentParser(prog="python -m bench.live_venue exchange")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--api-key", default=KEY)
        p.add_argument("--secret", default=SECRET)
        p.add_argument("--balance", action="append", default=[], help="ASSET=AMOUNT")
        a = p.parse_args(argv[1:])
        asyncio.run(_serve_exchange(a))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.live_venue", description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=300, help="orders per path (raw, orders.submit, POST)")
    p.add_argument("--profile", metavar="FILE", help="run tbx run under cProfile, stats to FILE")
    p.add_argument(
        "--probe", choices=PROBES, help="time ccxt's calls in tbx run (bench/probe/sitecustomize.py); "
        "idle-refill and no-throttle also change ccxt's rate limiter: a diagnosis, not the service as shipped",
    )  # fmt: skip
    p.add_argument(
        "--pace-ms", type=float, default=PACE_MS,
        help=f"the timed orders start this far apart (default {PACE_MS}: inside the venue budget; 0: back to back)",
    )  # fmt: skip
    a = p.parse_args(argv)
    try:
        text, _, tally = asyncio.run(alone(a.orders, a.profile, a.probe, a.pace_ms))
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    print(text)
    print(tally.line())
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
