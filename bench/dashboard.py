"""The dashboard stage of the bench harness (issue 21, "Bench"): the page's load and the browser's memory.

Starts one ``tbx run`` (the harness's way: its nats-server, a fresh BUS_PREFIX, the harness's SERVICE_ENV) on
four pairs (``PAIRS=BTC_USDT,ETH_USDT,SOL_USDT,LTC_USDT``, synthetic books every ``MARKET_DATA_INTERVAL=100`` ms)
and fills its books through the real bus, then opens the dashboard page (``GET /dashboard``) in headless
Chromium (``/usr/bin/chromium``, driven by Playwright for Python):

  seed     1,000 market orders on ``<prefix>.orders.submit`` (one at a time per pair, the four pairs at once,
           buys and sells alternating), each for the whole of one side of the latest synthetic book of its
           pair (its 10 levels): the paper venue fills it level by level, 10 fills an order when it trades on
           that book (on a newer book: what that book has, the rest on the next one). So 1,000 orders and
           about 10,000 fills, every one a real fill of a real order, booked by the ledger; the stage waits
           for every order's complete fill and for every reader of FILLS (the ledger's, the gateway's) to be
           at the end of the stream, and counts the fills stored in FILLS;
  load     N loads of the page, each in a fresh browser context (an empty cache and sessionStorage): the
           time from the navigation's start (``performance.timeOrigin``) to ``document.body.dataset.ready
           == "1"`` (the page's first full render, /work/notes/i21 contract: a MutationObserver notes the
           moment in the page), p50 / p99 / max; the requests the page made until then (API calls by path
           and the bytes of their answers, the page's own files) - it must fetch pages, not everything;
  memory   "an hour of simulated fills, compressed in time": 3,600 small market orders (one fill each) at an
           even rate over 90 s, into one open page; every 5 s the page's JS heap after a forced garbage
           collection (CDP ``HeapProfiler.collectGarbage`` then ``Performance.getMetrics``: ``JSHeapUsedSize``,
           ``Nodes``, ``JSEventListeners``) and the rows of ``#fills``: start / end / max and the slope per
           1,000 fills (least squares over the samples). At the end it waits for the last fill's row
           (``#fills tbody tr[data-fill-id=...]``) and counts the rows whose fill id is shown twice;
  reference the same browser loading an empty page of the same origin (routed by Playwright, no request to
           the service) and ``GET /api/orders?limit=50`` / ``GET /api/trades?limit=50`` round trips from
           aiohttp; and what fetching every fill would cost: every page of ``GET /api/trades?limit=500``.

No figure is judged against a time (no timed assertion): the table states what was measured.

    .venv/bin/python -m bench.dashboard                           # this stage alone (own nats-server)
    .venv/bin/python -m bench.dashboard --orders 200 --memory-fills 600 --memory-seconds 30 --loads 5
    .venv/bin/python -m bench.dashboard --page-file /tmp/page.html   # serve this file as the page (development)

In ``make bench`` it runs last, on the harness's nats-server; its rows come last, its figures are ``dashboard``
in ``harness.json``. Playwright for Python must be installed in the venv (``pip install playwright``; the
browser is the machine's Chromium, ``CHROMIUM`` to name another).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import nats
import nats.errors
from nats.aio.msg import Msg as NatsMsg

from bench.harness import STARTED, Table, Tally, Tbx, keep_logs, pct, say, stop_all
from bus.client import ERROR_HEADER
from bus.codec import encode
from bus.embedded import EmbeddedNats, free_port
from domain.synthetic import lot_size
from schemas.messages import Book, OrderRequest, now_ms
from schemas.subjects import Subjects

PAIRS = ("BTC_USDT", "ETH_USDT", "SOL_USDT", "LTC_USDT")
DASH_ENV = {"PAIRS": ",".join(PAIRS), "MARKET_DATA_INTERVAL": "100"}
PAGE_PATH = "/dashboard"
EMPTY_PATH = "/__bench_empty_page__"  # routed inside the browser: never reaches the service
EMPTY_HTML = (
    "<!doctype html><html><head><title>empty</title></head>"
    "<body><script>document.body.dataset.ready='1'</script></body></html>"
)
SMALL_NOTIONAL = Decimal(100)  # about this much quote a memory-phase order (one level: one fill)
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
READY_TIMEOUT_S = 60.0
FILL_TIMEOUT_S = 120.0
LAST_ROW_TIMEOUT_S = 15.0
# noted in the page before any of its scripts runs: the moment body.dataset.ready becomes "1"
READY_PROBE = """
(() => {
  const note = () => {
    if (window.__benchReadyAt === undefined && document.body && document.body.dataset.ready === "1") {
      window.__benchReadyAt = performance.now();
      obs.disconnect();
    }
  };
  const obs = new MutationObserver(note);
  obs.observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-ready"]});
})();
"""
ROWS_JS = """() => {
  const rows = [...document.querySelectorAll('#fills tbody tr[data-fill-id]')];
  const ids = rows.map(r => r.dataset.fillId);
  return {rows: rows.length, unique: new Set(ids).size};
}"""


@dataclass(frozen=True)
class Plan:
    orders: int = 1000  # seeded orders (each the whole side of a book: about 10 fills)
    loads: int = 20  # timed page loads
    memory_fills: int = 3600  # "an hour of fills at one a second" ...
    memory_seconds: float = 90.0  # ... compressed into this long
    sample_s: float = 5.0  # heap and nodes sampled this often
    refs: int = 50  # raw GET round trips of each reference
    shown_orders: int = 20  # orders placed over REST, each timed until its row and fill show on the open page


QUICK = Plan(orders=100, loads=5, memory_fills=600, memory_seconds=30.0, refs=20, shown_orders=5)


# ------------------------------------------------------------------------------------------------------
# pure: figures of the samples (tests/unit/test_bench_dashboard.py)
# ------------------------------------------------------------------------------------------------------
def slope(xs: list[float], ys: list[float]) -> float | None:
    """The least-squares slope of ys over xs; None with fewer than two distinct xs."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        return None
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def series(samples: list[dict[str, float]], key: str) -> dict[str, float | None]:
    """Start, end, max of one sampled figure and its slope per 1,000 fills (over ``fills``)."""
    ys = [s[key] for s in samples]
    if not ys:
        return {"start": None, "end": None, "max": None, "per1000Fills": None, "per1000FillsLastHalf": None}
    k = slope([s["fills"] for s in samples], ys)
    late = samples[len(samples) // 2 :]  # the second half: past the page's warm-up (its lists filled to their caps)
    k2 = slope([s["fills"] for s in late], [s[key] for s in late])
    return {
        "start": ys[0],
        "end": ys[-1],
        "max": max(ys),
        "per1000Fills": None if k is None else k * 1000,
        "per1000FillsLastHalf": None if k2 is None else k2 * 1000,
    }


def loads_summary(ms: list[float]) -> dict[str, float | int | None]:
    if not ms:
        return {"n": 0, "p50Ms": None, "p99Ms": None, "maxMs": None}
    return {"n": len(ms), "p50Ms": round(pct(ms, 50), 1), "p99Ms": round(pct(ms, 99), 1), "maxMs": round(max(ms), 1)}


def api_path(url: str) -> str | None:
    """``/api/orders?status=open&limit=100`` of a request URL, None when it is not an API call."""
    rest = url.split("://", 1)[-1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path if path.startswith("/api/") else None


def side_depth(book: Book, side: str) -> Decimal:
    """What a market order takes from ``book`` to empty the side it trades against (every level of it)."""
    return sum((q for _, q in (book.asks if side == "buy" else book.bids)), Decimal(0))


def small_qty(book: Book) -> Decimal:
    """A quantity worth about SMALL_NOTIONAL at the book's price, in the synthetic book's lot, at least one lot
    and never more than either top level (one level: one fill)."""
    price = book.asks[0][0]
    lot = lot_size(price)
    qty = max(lot, (SMALL_NOTIONAL / price).quantize(lot, ROUND_DOWN))
    return min(qty, book.asks[0][1], book.bids[0][1])


# ------------------------------------------------------------------------------------------------------
# the service side: books, fills, orders
# ------------------------------------------------------------------------------------------------------
class FillLite(msgspec.Struct, rename="camel"):
    client_order_id: str
    fill_id: str
    order_complete: bool | None = None


class ReplyLite(msgspec.Struct, rename="camel"):
    ok: bool
    code: str | None = None
    detail: str | None = None


_fill_dec = msgspec.json.Decoder(FillLite)
_reply_dec = msgspec.json.Decoder(ReplyLite)
_book_dec = msgspec.json.Decoder(Book)


class Market:
    """The latest synthetic book of each pair (as the paper venue sees them) and every fill event."""

    def __init__(self) -> None:
        self.books: dict[str, Book] = {}
        self.fresh: dict[str, asyncio.Event] = {p: asyncio.Event() for p in PAIRS}
        self.fills = 0
        self.complete: set[str] = set()
        self.last_fill_id: str | None = None

    async def on_book(self, msg: NatsMsg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            b = _book_dec.decode(msg.data)
            if b.pair in self.fresh and b.bids and b.asks:
                self.books[b.pair] = b
                self.fresh[b.pair].set()

    async def on_fill(self, msg: NatsMsg) -> None:
        f = _fill_dec.decode(msg.data)
        self.fills += 1
        self.last_fill_id = f.fill_id
        if f.order_complete:
            self.complete.add(f.client_order_id)

    async def next_book(self, pair: str) -> Book:
        """A book of ``pair`` newer than the one asked for before."""
        ev = self.fresh[pair]
        ev.clear()
        await asyncio.wait_for(ev.wait(), 10.0)
        return self.books[pair]

    async def wait_complete(self, ids: set[str], timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not ids <= self.complete and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return len(ids - self.complete)


@dataclass
class Orders:
    sent: int = 0
    ok: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)


async def submit(nc: nats.NATS, subject: str, o: Orders, cid: str, pair: str, side: str, qty: Decimal) -> None:
    o.sent += 1
    req = OrderRequest(
        client_order_id=cid, pair=pair, side=side, quantity=qty, type="market", time_in_force="GTC",  # type: ignore[arg-type]
        ts=now_ms(), source="bench",
    )  # fmt: skip
    try:
        msg = await nc.request(subject, encode(req), timeout=30.0)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError) as e:
        o.refused[f"bus {type(e).__name__}"] += 1
        return
    if msg.headers and ERROR_HEADER in msg.headers:
        o.refused[f"bus error: {msg.headers[ERROR_HEADER][:60]}"] += 1
        return
    reply = _reply_dec.decode(msg.data)
    if not reply.ok:
        o.refused[f"denied {reply.code}"] += 1
        return
    o.ok += 1
    o.ids.add(cid)


async def seed(nc: nats.NATS, prefix: str, market: Market, n: int) -> Orders:
    """``n`` orders, each the whole of one side of a fresh book of its pair (one at a time per pair, the pairs
    at once, buys and sells alternating)."""
    o = Orders()
    subject = Subjects(prefix).orders_submit

    async def one_pair(k: int, pair: str) -> None:
        for i in range(k, n, len(PAIRS)):
            side = "buy" if (i // len(PAIRS)) % 2 == 0 else "sell"
            book = await market.next_book(pair)
            await submit(nc, subject, o, f"dbseed-{i}", pair, side, side_depth(book, side))

    await asyncio.gather(*(one_pair(k, p) for k, p in enumerate(PAIRS)))
    return o


async def drip(nc: nats.NATS, prefix: str, market: Market, n: int, seconds: float) -> Orders:
    """``n`` small market orders (one fill each) at an even rate over ``seconds``, the pairs in turn, buys
    and sells alternating; open loop (an order is sent on time whatever the previous one is doing)."""
    o = Orders()
    subject = Subjects(prefix).orders_submit
    t0 = time.perf_counter()
    tasks: set[asyncio.Task[None]] = set()
    for i in range(n):
        wait = t0 + i * seconds / max(1, n) - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        pair = PAIRS[i % len(PAIRS)]
        side = "buy" if (i // len(PAIRS)) % 2 == 0 else "sell"
        t = asyncio.create_task(submit(nc, subject, o, f"dbdrip-{i}", pair, side, small_qty(market.books[pair])))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return o


async def fills_caught_up(nc: nats.NATS, prefix: str, timeout: float = 60.0) -> int:
    """Wait until every consumer of FILLS (the ledger's, the gateway's) has read and acknowledged the whole
    stream; the number of fills stored."""
    js = nc.jetstream()
    stream = Subjects(prefix).s_fills
    deadline = time.monotonic() + timeout
    while True:
        info = await js.stream_info(stream)
        consumers = await js.consumers_info(stream)
        behind = sum((c.num_pending or 0) + (c.num_ack_pending or 0) for c in consumers)
        if behind == 0 or time.monotonic() > deadline:
            return info.state.messages
        await asyncio.sleep(0.1)


async def round_trips(base: str, path: str, n: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as http:
        for i in range(n + 5):
            t0 = time.perf_counter()
            async with http.get(base + path) as r:
                await r.read()
                r.raise_for_status()
            if i >= 5:  # warm-up
                out.append((time.perf_counter() - t0) * 1000)
    return out


async def every_fill(base: str) -> dict[str, int]:
    """What fetching every fill costs: every page of GET /api/trades?limit=500, following nextCursor."""
    pages, fills, size = 0, 0, 0
    cursor: str | None = None
    async with aiohttp.ClientSession() as http:
        while True:
            url = f"{base}/api/trades?limit=500" + (f"&cursor={cursor}" if cursor else "")
            async with http.get(url) as r:
                r.raise_for_status()
                body = await r.read()
            page = msgspec.json.decode(body)
            pages, fills, size = pages + 1, fills + len(page["trades"]), size + len(body)
            cursor = page.get("nextCursor")
            if not cursor:
                return {"requests": pages, "fills": fills, "bytes": size}


# ------------------------------------------------------------------------------------------------------
# the browser side
# ------------------------------------------------------------------------------------------------------
class Browser:
    """Headless Chromium through Playwright; ``page_file``: served as the page instead of the service's."""

    def __init__(self, base: str, page_file: Path | None) -> None:
        self.base = base
        self.page_file = page_file

    async def __aenter__(self) -> Browser:
        try:
            from playwright.async_api import async_playwright
        except ImportError as e:  # pragma: no cover - a setup problem, said plainly
            raise RuntimeError(
                "the dashboard bench needs Playwright for Python: .venv/bin/pip install playwright"
            ) from e
        self.pw = await async_playwright().start()
        self.browser = await self.pw.chromium.launch(
            executable_path=CHROMIUM, args=["--enable-precise-memory-info", "--disable-dev-shm-usage"]
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            await self.browser.close()
        with contextlib.suppress(Exception):
            await self.pw.stop()

    async def context(self) -> Any:
        ctx = await self.browser.new_context(viewport={"width": 1440, "height": 900})
        await ctx.add_init_script(READY_PROBE)
        await ctx.route(
            f"{self.base}{EMPTY_PATH}", lambda route: route.fulfill(body=EMPTY_HTML, content_type="text/html")
        )
        if self.page_file is not None:
            html = self.page_file.read_text()
            await ctx.route(f"{self.base}{PAGE_PATH}", lambda route: route.fulfill(body=html, content_type="text/html"))
        return ctx

    async def load(self, path: str) -> dict[str, Any]:
        """One load in a fresh context: ms from the navigation's start to body.dataset.ready == "1", and the
        requests made until then."""
        ctx = await self.context()
        try:
            page = await ctx.new_page()
            requests: list[Any] = []
            page.on("request", lambda r: requests.append(r))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            resp = await page.goto(self.base + path, wait_until="commit")
            if resp is None or resp.status != 200:
                raise RuntimeError(f"GET {path}: {resp.status if resp else 'no answer'} (is the page there?)")
            await page.wait_for_selector("body[data-ready='1']", state="attached", timeout=READY_TIMEOUT_S * 1000)
            ready_ms = float(await page.evaluate("window.__benchReadyAt"))
            return {"ms": ready_ms, "requests": await _requests(requests), "errors": errors}
        finally:
            await ctx.close()


async def _requests(requests: list[Any]) -> dict[str, Any]:
    """The requests made by the time the page was ready: API calls by path (count, answer bytes), the page's
    own files (count, bytes), the live stream (still open)."""
    api: Counter[str] = Counter()
    api_bytes = 0
    files = file_bytes = streams = 0
    largest = ("", 0)
    for r in list(requests):
        path = api_path(r.url)
        if path is not None and path.startswith("/api/stream"):
            streams += 1
            continue
        resp = await r.response()
        if resp is None:
            continue
        with contextlib.suppress(Exception):
            await resp.finished()
        try:
            sizes = await r.sizes()
            size = int(sizes.get("responseBodySize", 0)) + int(sizes.get("responseHeadersSize", 0))
        except Exception:
            size = 0
        if path is not None:
            api[path] += 1
            api_bytes += size
            if size > largest[1]:
                largest = (path, size)
        else:
            files += 1
            file_bytes += size
    return {
        "api": dict(api),
        "apiRequests": sum(api.values()),
        "apiBytes": api_bytes,
        "largest": {"path": largest[0], "bytes": largest[1]},
        "files": files,
        "fileBytes": file_bytes,
        "streams": streams,
    }


async def memory_phase(
    b: Browser, nc: nats.NATS, prefix: str, market: Market, plan: Plan
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """One page open while ``plan.memory_fills`` fills go through the service: heap and nodes sampled."""
    ctx = await b.context()
    try:
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(b.base + PAGE_PATH, wait_until="commit")
        await page.wait_for_selector("body[data-ready='1']", state="attached", timeout=READY_TIMEOUT_S * 1000)
        cdp = await ctx.new_cdp_session(page)
        await cdp.send("Performance.enable")
        fills0 = market.fills
        samples: list[dict[str, float]] = []
        t0 = time.perf_counter()

        async def sample() -> None:
            await cdp.send("HeapProfiler.collectGarbage")
            m = {x["name"]: x["value"] for x in (await cdp.send("Performance.getMetrics"))["metrics"]}
            rows = await page.evaluate(ROWS_JS)
            samples.append(
                {
                    "s": round(time.perf_counter() - t0, 1),
                    "fills": market.fills - fills0,
                    "heapMb": m.get("JSHeapUsedSize", 0) / 1e6,
                    "nodes": m.get("Nodes", 0),
                    "listeners": m.get("JSEventListeners", 0),
                    "rows": rows["rows"],
                }
            )

        await sample()
        driver = asyncio.create_task(drip(nc, prefix, market, plan.memory_fills, plan.memory_seconds))
        while not driver.done():
            await asyncio.wait({driver}, timeout=plan.sample_s)
            if not driver.done():
                await sample()
        orders = driver.result()
        missing = await market.wait_complete(orders.ids, FILL_TIMEOUT_S)
        last = market.last_fill_id
        shown = False
        if last is not None:
            with contextlib.suppress(Exception):
                await page.wait_for_selector(
                    f'#fills tbody tr[data-fill-id="{last}"]', state="attached", timeout=LAST_ROW_TIMEOUT_S * 1000
                )
                shown = True
        await sample()
        rows = await page.evaluate(ROWS_JS)
        fills, seconds = market.fills - fills0, round(time.perf_counter() - t0, 1)
        shown_ms = await rest_to_page(page, b.base, market, plan.shown_orders)  # after the count: its own fills
        return samples, {
            "shownMs": shown_ms,
            "orders": orders,
            "notFilled": missing,
            "fills": fills,
            "lastFillShown": shown,
            "rows": rows["rows"],
            "doubled": rows["rows"] - rows["unique"],
            "errors": errors,
            "seconds": seconds,
        }
    finally:
        await ctx.close()


async def rest_to_page(page: Any, base: str, market: Market, n: int) -> list[float]:
    """The issue's "an order placed via REST shows its row and its fill on the page": ``n`` small market orders,
    one at a time, each timed from its POST /api/orders to its row reading "filled" and its fill's row on the open
    page (ms); an order not shown within LAST_ROW_TIMEOUT_S is left out (the table says how many were timed)."""
    out: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            pair = PAIRS[i % len(PAIRS)]
            body = {"pair": pair, "side": "buy" if i % 2 == 0 else "sell", "type": "market",
                    "quantity": str(small_qty(market.books[pair])), "clientOrderId": f"dbshown-{i}"}  # fmt: skip
            t0 = time.perf_counter()
            async with http.post(f"{base}/api/orders", json=body) as r:
                if r.status != 201:
                    continue
                oid = (await r.json())["orderId"]
            with contextlib.suppress(Exception):
                limit = LAST_ROW_TIMEOUT_S * 1000
                status = page.locator(f'#orders tbody tr[data-order-id="{oid}"] td[data-field="status"]')
                await status.filter(has_text="filled").first.wait_for(state="attached", timeout=limit)
                await page.locator("#fills tbody tr", has_text=oid).first.wait_for(state="attached", timeout=limit)
                out.append((time.perf_counter() - t0) * 1000)
    return out


# ------------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------------
async def stage(
    nats_url: str, nats_pid: int | None, tmp: Path, plan: Plan, tally: Tally, page_file: Path | None = None
) -> dict[str, Any]:
    """The whole stage; everything it starts is stopped before it returns (also on errors)."""
    tbx: Tbx | None = None
    nc: nats.NATS | None = None
    t_stage = time.perf_counter()
    try:
        tbx = Tbx(nats_url, tmp, "dashboard", DASH_ENV)
        await tbx.wait_healthy()
        market = Market()
        nc = await nats.connect(nats_url, name="bench-dashboard", pending_size=64 * 1024 * 1024)
        subjects = Subjects(tbx.prefix)
        await nc.subscribe(subjects.book("*"), cb=market.on_book, pending_msgs_limit=-1)
        await nc.subscribe(subjects.fills("*"), cb=market.on_fill, pending_msgs_limit=-1)
        await nc.flush()

        say(f"dashboard: seeding {plan.orders:,} orders, each one side of a book (about 10 fills each)")
        t_seed = time.perf_counter()
        seeded = await seed(nc, tbx.prefix, market, plan.orders)
        seed_missing = await market.wait_complete(seeded.ids, FILL_TIMEOUT_S)
        seed_fills = market.fills
        stored = await fills_caught_up(nc, tbx.prefix)
        seed_s = time.perf_counter() - t_seed
        tally.add("dashboard: seed", seeded.sent, seeded.ok, seeded.refused, seed_missing)

        say(f"dashboard: {plan.loads} page loads and the references")
        async with Browser(tbx.base, page_file) as b:
            empty = [(await b.load(EMPTY_PATH))["ms"] for _ in range(max(1, plan.loads // 2))]
            await b.load(PAGE_PATH)  # warm-up (the service's first answers), not counted
            loads = [await b.load(PAGE_PATH) for _ in range(plan.loads)]
            refs = {
                "orders": await round_trips(tbx.base, "/api/orders?limit=50", plan.refs),
                "trades": await round_trips(tbx.base, "/api/trades?limit=50", plan.refs),
            }
            everything = await every_fill(tbx.base)
            say(f"dashboard: {plan.memory_fills:,} fills over {plan.memory_seconds:g} s into an open page")
            samples, mem = await memory_phase(b, nc, tbx.prefix, market, plan)
        drip_orders: Orders = mem.pop("orders")
        tally.add(
            "dashboard: fills into the page", drip_orders.sent, drip_orders.ok, drip_orders.refused, mem["notFilled"]
        )
        return {
            "plan": plan.__dict__,
            "pairs": list(PAIRS),
            "seed": {
                "sent": seeded.sent,
                "orders": seeded.ok,
                "refused": dict(seeded.refused),
                "notFilled": seed_missing,
                "fills": seed_fills,
                "storedFills": stored,
                "seconds": round(seed_s, 1),
            },
            "loadMs": [round(x["ms"], 1) for x in loads],
            "load": loads_summary([x["ms"] for x in loads]),
            "requests": loads[-1]["requests"] if loads else {},
            "consoleErrors": sorted({e for x in loads for e in x["errors"]}),
            "emptyMs": [round(x, 1) for x in empty],
            "empty": loads_summary(empty),
            "refOrders": loads_summary(refs["orders"]),
            "refTrades": loads_summary(refs["trades"]),
            "shown": loads_summary(mem["shownMs"]),
            "everyFill": everything,
            "samples": samples,
            "memory": mem
            | {
                "heapMb": series(samples, "heapMb"),
                "nodes": series(samples, "nodes"),
                "rows": series(samples, "rows"),
                "listeners": series(samples, "listeners"),
            },
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
def _f(x: float | None, fmt: str = ".1f") -> str:
    return "?" if x is None else format(x, fmt)


def add_rows(t: Table, res: dict[str, Any]) -> None:
    """This stage's section of the harness's table (and its figures for harness.json)."""
    if "error" in res:  # the stage failed in the harness (e.g. no page, no Playwright): the run goes on
        t.lines.append(f"{'dashboard (GET /dashboard, headless Chromium)':<50} !!! STAGE FAILED: {res['error']} !!!")
        t.figures.append({"name": "dashboard", "error": res["error"]})
        return
    s = res["seed"]
    t.lines.append(
        f"{'dashboard (GET /dashboard, headless Chromium)':<50} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    rows = (
        ("page load -> first full render (data-ready)", res["load"]),
        ("  reference: an empty page, same browser", res["empty"]),
        ("  reference: GET /api/orders?limit=50 (aiohttp)", res["refOrders"]),
        ("  reference: GET /api/trades?limit=50 (aiohttp)", res["refTrades"]),
        ("REST order -> its row filled + its fill on the page", res["shown"]),
    )
    for name, r in rows:
        t.lines.append(f"{name:<50} {r['n']:>6} {_f(r['p50Ms']):>8} {_f(r['p99Ms']):>8} {_f(r['maxMs']):>8}")
        t.figures.append({"name": f"dashboard: {name.strip()}", **r})
    books = (
        f"{s['orders']:,} orders, {s['storedFills']:,} fills stored ({s['fills']:,} fill events) in {s['seconds']:g} s"
    )
    t.lines.append(f"{'  the books when loaded':<50} {books}")
    rq = res["requests"]
    calls = ", ".join(f"{p} x{n}" if n > 1 else p for p, n in sorted(rq.get("api", {}).items()))
    big = rq.get("largest", {})
    fetched = (
        f"{rq.get('apiRequests', 0)} API requests, {rq.get('apiBytes', 0) / 1024:.1f} KB "
        f"(largest {big.get('path', '?')} {big.get('bytes', 0) / 1024:.1f} KB); "
        f"{rq.get('files', 0)} files of the page, {rq.get('fileBytes', 0) / 1024:.1f} KB; "
        f"{rq.get('streams', 0)} live stream"
    )
    t.lines.append(f"{'  what one load fetched':<50} {fetched}")
    t.lines.append(f"{'    API calls':<50} {calls}")
    e = res["everyFill"]
    t.lines.append(
        f"{'  every fill instead (GET /api/trades, all pages)':<50} {e['requests']} requests, "
        f"{e['bytes'] / 1024:.1f} KB for {e['fills']:,} fills"
    )
    t.figures.append({"name": "dashboard: requests of one load", **rq, "everyFill": e, "books": s})
    m = res["memory"]
    sim_h = m["fills"] / 3600
    t.lines.append(
        f"{'dashboard memory: fills into one open page':<50} {'start':>8} {'end':>8} {'max':>8} "
        f"{'/1k fills':>10} {'2nd half':>10}"
        f"   ({m['fills']:,} fills = {sim_h:.2f} h at 1/s, in {m['seconds']:g} s; after a forced GC)"
    )
    for key, label, fmt in (
        ("heapMb", "JS heap used (MB)", ".2f"),
        ("nodes", "DOM nodes", ".0f"),
        ("rows", "#fills rows", ".0f"),
        ("listeners", "JS event listeners", ".0f"),
    ):
        r = m[key]
        t.lines.append(
            f"{'  ' + label:<50} {_f(r['start'], fmt):>8} {_f(r['end'], fmt):>8} {_f(r['max'], fmt):>8} "
            f"{_f(r['per1000Fills'], '+.3f'):>10} {_f(r['per1000FillsLastHalf'], '+.3f'):>10}"
        )
        t.figures.append({"name": f"dashboard memory: {label}", **r})
    checks = (
        f"the last fill's row {'shown' if m['lastFillShown'] else 'NOT SHOWN'}; "
        f"{m['doubled']} fill rows shown twice; {len(res['samples'])} samples; "
        f"page errors: {len(m['errors']) + len(res['consoleErrors'])}"
    )
    t.lines.append(f"{'  checks':<50} {checks}")


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """harness.json: everything (the samples are few)."""
    return res


# ------------------------------------------------------------------------------------------------------
# this stage alone
# ------------------------------------------------------------------------------------------------------
async def alone(plan: Plan, page_file: Path | None) -> tuple[str, dict[str, Any], Tally]:
    tmp = Path(tempfile.mkdtemp(prefix="tbx-dashboard-"))
    server = EmbeddedNats(tmp / "nats", port=free_port())
    tally = Tally()
    try:
        url = server.start()
        if server.pid is not None:
            STARTED[server.pid] = "nats-server"
        res = await stage(url, server.pid, tmp, plan, tally, page_file)
    finally:
        server.stop()
        if server.pid is not None:
            STARTED.pop(server.pid, None)
        keep_logs(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    t = Table(1.0)
    add_rows(t, res)
    text = t.text(f"dashboard stage alone ({time.strftime('%Y-%m-%d %H:%M')}), {os.cpu_count()} cores")
    return text, res, tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    d = Plan()
    p.add_argument("--quick", action="store_true", help="a smoke run with every count scaled down")
    p.add_argument("--orders", type=int, help=f"seeded orders (default {d.orders:,}, about 10 fills each)")
    p.add_argument("--loads", type=int, help=f"timed page loads (default {d.loads})")
    p.add_argument("--memory-fills", type=int, help=f"fills into the open page (default {d.memory_fills:,})")
    p.add_argument("--memory-seconds", type=float, help=f"... over this long (default {d.memory_seconds:g})")
    p.add_argument("--page-file", type=Path, help="serve this HTML file as the page (developing the bench)")
    p.add_argument("--json", type=Path, help="write the figures here too")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else d
    over = {
        k: v
        for k, v in (
            ("orders", a.orders),
            ("loads", a.loads),
            ("memory_fills", a.memory_fills),
            ("memory_seconds", a.memory_seconds),
        )
        if v is not None
    }
    plan = Plan(**(plan.__dict__ | over))
    try:
        text, res, tally = asyncio.run(alone(plan, a.page_file))
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    print(text)
    print(tally.line())
    if a.json:
        import json

        a.json.write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
