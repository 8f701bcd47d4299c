"""``price`` events for the live streams: best bid, best ask and last trade per pair and venue, throttled.

The gateway listens to ``tbx.md.book.*`` and ``tbx.md.trades.*`` (every venue's, and unnamed books) and keeps,
per pair and venue, the best bid and ask of the latest usable book and the price of the latest public
trade. A change is sent to the stream clients that follow prices (``types`` has ``price``, ``pairs`` has
the pair) at most once per pair and venue every PRICE_EVENT_MS: at once when none was sent for that long,
else the latest state when the interval ends (``domain.throttle``), never a state already replaced.
Price events are live only: not stored, without an event id, never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import msgspec
from loguru import logger
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

from bus.client import Bus
from bus.codec import encode
from domain.book import book_problem
from domain.throttle import Throttle
from schemas.messages import Book, Msg, Trade
from schemas.subjects import PAIR_RE

MAX_KEYS = 10_000  # pairs x venues followed (an outside publisher could invent pairs without end)
Listener = Callable[[str, bytes], None]  # (pair, the event's JSON) -> None; must not block


class PriceEvent(Msg):
    """A ``price`` event on /api/stream and /api/ws: one pair on one venue (decimal strings, as the bus)."""

    pair: str
    exchange: str | None  # the venue whose book and trades these are (null: unnamed books: synthetic, replay...)
    bid: Decimal | None  # best bid of the latest book (null: no bids)
    ask: Decimal | None  # best ask of the latest book
    last: Decimal | None  # the latest public trade's price seen (null: none seen yet)
    ts: int  # the time of the latest book or trade behind it (epoch ms)


@dataclass(slots=True)
class _State:
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None
    last_ts: int = 0
    ts: int = 0
    booked: bool = False  # a book was seen (a trade alone sends nothing until then)


_book = msgspec.json.Decoder(Book)
_trade = msgspec.json.Decoder(Trade)


class PriceBoard:
    def __init__(self, bus: Bus, interval_ms: int) -> None:
        self.bus = bus
        self.throttle: Throttle[tuple[str, str | None], bool] = Throttle(interval_ms)
        self.state: dict[tuple[str, str | None], _State] = {}
        self.listeners: set[Listener] = set()
        self.subs: list[Subscription] = []
        self.sent = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._full_logged = False

    async def start(self) -> None:
        s = self.bus.subjects
        self.subs.append(await self.bus.nc.subscribe(s.book(), cb=self._on_book))
        self.subs.append(await self.bus.nc.subscribe(s.trades(), cb=self._on_trade))

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self.subs.clear()

    def add(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def discard(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    # -- input ---------------------------------------------------------------------------------------
    def _key_state(self, pair: str, venue: str | None) -> _State | None:
        key = (pair, venue)
        st = self.state.get(key)
        if st is None:
            if len(self.state) >= MAX_KEYS or not PAIR_RE.match(pair):
                if not self._full_logged and len(self.state) >= MAX_KEYS:
                    self._full_logged = True
                    logger.bind(actor="gateway").warning("price events: more than {} pairs x venues", MAX_KEYS)
                return None
            st = self.state[key] = _State()
        return st

    async def _on_book(self, msg: NatsMsg) -> None:
        try:
            book = _book.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # the actors' caches dead-letter it
        if book_problem(book.bids, book.asks) is not None:
            return
        st = self._key_state(book.pair, book.venue)
        if st is None:
            return
        st.bid = book.bids[0][0] if book.bids else None
        st.ask = book.asks[0][0] if book.asks else None
        st.ts = max(st.ts, book.ts)
        st.booked = True
        self._offer((book.pair, book.venue))

    async def _on_trade(self, msg: NatsMsg) -> None:
        try:
            trade = _trade.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        st = self._key_state(trade.pair, trade.venue)
        if st is None or (st.last is not None and trade.ts < st.last_ts):
            return  # an older print than the one shown
        st.last, st.last_ts = trade.price, trade.ts
        st.ts = max(st.ts, trade.ts)
        if st.booked:
            self._offer((trade.pair, trade.venue))

    # -- output --------------------------------------------------------------------------------------
    def _offer(self, key: tuple[str, str | None]) -> None:
        now = time.monotonic() * 1000
        if self.throttle.offer(key, True, now):
            self._send(key)
        self._arm()

    def _arm(self) -> None:
        due = self.throttle.next_due()
        if due is None or (self._timer_at is not None and self._timer_at <= due):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = due
        delay = max(0.0, due / 1000 - time.monotonic()) + 0.001  # not before it is due (timers may run early)
        self._timer = asyncio.get_running_loop().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._timer = self._timer_at = None
        for key, _ in self.throttle.flush(time.monotonic() * 1000):
            self._send(key)
        self._arm()

    def _send(self, key: tuple[str, str | None]) -> None:
        st = self.state[key]
        pair, venue = key
        data = encode(PriceEvent(pair=pair, exchange=venue, bid=st.bid, ask=st.ask, last=st.last, ts=st.ts))
        self.sent += 1
        for listener in list(self.listeners):
            listener(pair, data)
