"""The deterministic load of a chaos run.

``plan`` (pure) decides every order before the run: per pair a fixed sequence of market buys and sells of
small, seeded sizes (never selling more than was bought). The orders of ``ORDER_PAIRS`` go over REST (POST
/api/orders with a ``clientOrderId``, spread over the gateways, retried by that id on the next gateway after
a refused connection, a timeout or a 5xx); those of ``SIGNAL_PAIRS`` are signals with a ``quantity`` sent as
NATS requests on ``<prefix>.signals.submit`` (the reply is the result: an ack), retried by ``signalId``.

One order is in flight per pair, many pairs at once: the next order of a pair goes only once the order-router's
paper venue itself holds the pair's stepped book (SYNTHETIC_CLOCK=event: one step per order filled), asked with
``<prefix>.query.venue_book`` (the book a market order would match on now), not once some other subscriber has seen
it: a router whose subscription was cut by a NATS node's death may still hold the previous step's book. The fill
price of the k-th order of a pair is then the price of that pair's k-th book in every run: two runs of the same
load see the same prices and must end with the same books.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Literal

import aiohttp
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg as NatsMsg

from domain.synthetic import EventMarket, lot_size, start_price

Via = Literal["rest", "signal"]
ORDER_DEADLINE_S = 90.0  # one order's retries give up after this long (it is then "unanswered")
HTTP_TIMEOUT_S = 10.0
SIGNAL_TIMEOUT_S = 5.0
STEP_WAIT_S = 120.0  # a pair whose book does not step this long after its order was accepted stops there
UNANSWERED_STEP_WAIT_S = 10.0
TICK_S = 0.1  # the feed's interval (topology.BOOK_INTERVAL_MS): the venue is asked again after one
VENUE_ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Planned:
    pair: str
    index: int
    side: Literal["buy", "sell"]
    quantity: Decimal
    via: Via

    @property
    def cid(self) -> str:
        """The client order id (REST) or signal id (signal); a signal's order is ``<signalId>-1``."""
        return f"{'cx' if self.via == 'rest' else 'sx'}-{self.pair}-{self.index}"

    @property
    def order_cid(self) -> str:
        return self.cid if self.via == "rest" else f"{self.cid}-1"


def plan(order_pairs: Sequence[str], signal_pairs: Sequence[str], per_pair: int, seed: int) -> dict[str, list[Planned]]:
    """Every order of the run, per pair, in order. Pure: the same arguments give the same plan."""
    out: dict[str, list[Planned]] = {}
    for via, pairs in (("rest", order_pairs), ("signal", signal_pairs)):
        for pair in pairs:
            rng = random.Random(f"{seed}:{pair}:load")
            price = start_price(pair)
            lot = lot_size(price)
            position = Decimal(0)
            steps: list[Planned] = []
            for i in range(per_pair):
                qty = (Decimal(25 * rng.randint(2, 8)) / price).quantize(lot, ROUND_DOWN)
                side: Literal["buy", "sell"] = "buy" if position <= 0 or rng.random() < 0.55 else "sell"
                if side == "sell":
                    qty = min(qty, position)
                position += qty if side == "buy" else -qty
                steps.append(Planned(pair, i, side, qty, via))  # type: ignore[arg-type]
            out[pair] = steps
    return out


@dataclass(slots=True)
class Sent:
    """What became of one planned order on the client's side (wall-clock seconds)."""

    planned: Planned
    first_sent: float
    first_answer: float | None = None  # any answer of a gateway / signal-intake
    answered: float | None = None  # the final answer
    outcome: Literal["accepted", "denied", "unanswered", "cut"] = "unanswered"  # cut: the run's time ran out
    status: str = ""
    detail: str = ""
    attempts: int = 0
    step_seen: float | None = None  # the pair's book at the next step seen (the order filled, md-feed stepped)
    venue_ready: float | None = None  # ... and held by the router's venue (the pair's next order may go)


class BookWatcher:
    """The latest book levels of each pair as published, and how often each was seen."""

    def __init__(self, market: EventMarket) -> None:
        self.market = market
        self.latest: dict[str, tuple[bytes, int, float]] = {}  # pair -> (levels JSON, times seen, first seen)
        self.changed: dict[str, asyncio.Event] = {}
        self._expected: dict[tuple[str, int], bytes] = {}

    def levels_of(self, pair: str, step: int) -> bytes:
        key = (pair, step)
        if key not in self._expected:
            b = self.market.book(pair, {pair: step}, 0)
            self._expected[key] = json.dumps([[str(p), str(q)] for p, q in b.bids + b.asks]).encode()
        return self._expected[key]

    async def on_msg(self, msg: NatsMsg) -> None:
        try:
            raw = json.loads(msg.data)
            pair = raw["pair"]
        except (ValueError, KeyError, TypeError):
            return
        levels = book_levels(raw)
        if levels is None:
            return
        prev = self.latest.get(pair)
        if prev is not None and prev[0] == levels:
            self.latest[pair] = (levels, prev[1] + 1, prev[2])
        else:
            self.latest[pair] = (levels, 1, time.time())
        ev = self.changed.get(pair)
        if ev is not None:
            ev.set()

    async def wait_seen(self, pair: str, step: int, timeout: float) -> float | None:
        """Until ``pair``'s book at ``step`` is the latest seen here; returns when it was first seen (None: timeout)."""
        want = self.levels_of(pair, step)
        ev = self.changed.setdefault(pair, asyncio.Event())
        deadline = time.monotonic() + timeout
        while True:
            cur = self.latest.get(pair)
            if cur is not None and cur[0] == want:
                return cur[2]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ev.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), min(left, 1.0))


def book_levels(raw: object) -> bytes | None:
    """A book's levels as ``BookWatcher`` keys them (bids then asks, as strings), from its JSON form."""
    if not isinstance(raw, dict):
        return None
    try:
        return json.dumps([[str(p), str(q)] for p, q in raw["bids"] + raw["asks"]]).encode()
    except (KeyError, TypeError, ValueError):
        return None


async def quiet(e: Exception) -> None:
    """A NATS node killed under us: nats-py reconnects to another; nothing to print (its default prints tracebacks)."""
    return None


class Pacer:
    """At most ``rate`` orders a second over all pairs (the load spreads over the kill schedule)."""

    def __init__(self, rate: float | None) -> None:
        self.every = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        if not self.every:
            return
        async with self.lock:
            now = time.monotonic()
            wait = self.next_at - now
            self.next_at = max(now, self.next_at) + self.every
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass(slots=True)
class LoadResult:
    sent: list[Sent] = field(default_factory=list)
    stalled: list[str] = field(default_factory=list)  # "PAIR at order i: why"
    started: float = 0.0
    ended: float = 0.0


class LoadClient:
    def __init__(
        self,
        gateways: Sequence[str],  # base URLs: http://127.0.0.1:PORT
        nats_url: str,
        prefix: str,
        market: EventMarket,
        orders: dict[str, list[Planned]],
        rate: float | None = None,
    ) -> None:
        self.gateways = list(gateways)
        self.nats_url = nats_url
        self.prefix = prefix
        self.books = BookWatcher(market)
        self.orders = orders
        self.pacer = Pacer(rate)
        self.result = LoadResult()
        self.stop = asyncio.Event()
        self.nc: NatsClient | None = None
        self.http: aiohttp.ClientSession | None = None

    async def run(self) -> LoadResult:
        self.nc = await nats.connect(
            servers=self.nats_url.split(","),
            name="chaos-load",
            max_reconnect_attempts=-1,
            error_cb=quiet,
            reconnect_time_wait=0.2,
        )
        await self.nc.subscribe(f"{self.prefix}.md.book.*", cb=self.books.on_msg)
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        self.result.started = time.time()
        try:
            await asyncio.gather(*(self._pair(p, steps) for p, steps in self.orders.items()))
        finally:
            self.result.ended = time.time()
            await self.http.close()
            await self.nc.close()
        return self.result

    async def venue_at(self, pair: str, step: int, timeout: float) -> tuple[float, float] | None:
        """Until the router's venue holds ``pair``'s book at ``step`` (``query.venue_book``): (when this client
        first saw that book, when the venue was seen holding it); None: not within ``timeout`` or the run stopped.
        Asked once the book is the latest seen here, then again every tick until the venue has it too."""
        assert self.nc is not None
        want = self.books.levels_of(pair, step)
        subject = f"{self.prefix}.query.venue_book"
        ask = json.dumps({"pair": pair}).encode()
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            seen = await self.books.wait_seen(pair, step, min(left, 1.0))
            if seen is None:
                continue
            with contextlib.suppress(nats.errors.Error, TimeoutError, ValueError):
                msg = await self.nc.request(subject, ask, timeout=VENUE_ASK_TIMEOUT_S)
                if book_levels(json.loads(msg.data).get("book")) == want:
                    return seen, time.time()
            await asyncio.sleep(TICK_S)
        return None

    async def _pair(self, pair: str, steps: list[Planned]) -> None:
        step = 0
        if await self.venue_at(pair, 0, STEP_WAIT_S) is None:  # the feed is up and the venue has its first book
            why = "the run's time was up" if self.stop.is_set() else "the venue never held its first book"
            self.result.stalled.append(f"{pair} at order 0: {why}")
            return
        for i, p in enumerate(steps):
            if self.stop.is_set():
                self.result.stalled.append(f"{pair} at order {i}: the run's time was up")
                return
            await self.pacer.take()
            s = Sent(p, first_sent=time.time())
            self.result.sent.append(s)
            await (self._rest(s) if p.via == "rest" else self._signal(s))
            if s.outcome == "unanswered" and self.stop.is_set():
                s.outcome = "cut"
                self.result.stalled.append(f"{pair} at order {i}: the run's time was up while it was being sent")
                return
            if s.outcome == "unanswered":  # (a miss of its own) it may have traded all the same: then it stepped
                if (ready := await self.venue_at(pair, step + 1, UNANSWERED_STEP_WAIT_S)) is not None:
                    s.step_seen, s.venue_ready = ready
                    step += 1
                continue
            if s.outcome != "accepted":
                continue  # denied: no fill, no step: the next order sees the same book (a miss of its own)
            ready = await self.venue_at(pair, step + 1, STEP_WAIT_S)
            if ready is None:
                self.result.stalled.append(f"{pair} at order {i}: the venue's book did not step ({s.status})")
                return
            s.step_seen, s.venue_ready = ready
            step += 1

    async def _rest(self, s: Sent) -> None:
        assert self.http is not None
        p = s.planned
        body = json.dumps(
            {"pair": p.pair, "side": p.side, "type": "market", "quantity": str(p.quantity), "clientOrderId": p.cid}
        )
        start = hash(p.cid) % len(self.gateways)
        while time.time() - s.first_sent < ORDER_DEADLINE_S and not self.stop.is_set():
            url = self.gateways[(start + s.attempts) % len(self.gateways)] + "/api/orders"
            s.attempts += 1
            try:
                async with self.http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    text = await r.text()
                    status = r.status
                    retry_after = r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                s.detail = f"{type(e).__name__}"  # a gateway down or slow: the other one next
                await asyncio.sleep(0.05 if s.attempts % len(self.gateways) else 0.25)
                continue
            now = time.time()
            s.first_answer = s.first_answer or now
            s.status = str(status)
            if status == 201:
                s.outcome, s.answered = "accepted", now
                return
            if status >= 500 or status == 429:
                s.detail = text[:200]
                await asyncio.sleep(min(float(retry_after or 0.25), 1.0))
                continue
            s.outcome, s.answered, s.detail = "denied", now, text[:300]
            return

    async def _signal(self, s: Sent) -> None:
        assert self.nc is not None
        p = s.planned
        body = json.dumps(
            {
                "pair": p.pair, "signal": p.side.upper(), "confidence": 0.9, "source": "chaos", "strategy": "chaos",
                "signalId": p.cid, "quantity": str(p.quantity),
            }
        ).encode()  # fmt: skip
        subject = f"{self.prefix}.signals.submit"
        while time.time() - s.first_sent < ORDER_DEADLINE_S and not self.stop.is_set():
            s.attempts += 1
            try:
                msg = await self.nc.request(subject, body, timeout=SIGNAL_TIMEOUT_S)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionReconnectingError,
                    nats.errors.ConnectionClosedError, TimeoutError) as e:  # fmt: skip
                s.detail = type(e).__name__
                await asyncio.sleep(0.25)
                continue
            now = time.time()
            s.first_answer = s.first_answer or now
            try:
                reply = json.loads(msg.data)
                status = str(reply.get("status", ""))
            except (ValueError, AttributeError):
                s.detail = msg.data[:200].decode(errors="replace")
                await asyncio.sleep(0.25)
                continue
            s.status = status
            if status == "executed":
                s.outcome, s.answered = "accepted", now
                return
            if status in ("rejected", "filtered") and reply.get("code") not in ("SERVICE_UNAVAILABLE", "RETRY_LATER"):
                s.outcome, s.answered, s.detail = "denied", now, str(reply.get("reason", ""))[:300]
                return
            s.detail = str(reply.get("reason", status))[:200]  # accepted (still working) or "try again"
            await asyncio.sleep(0.25)
