"""md-feed: market data for the paper venue, the marks, the stop triggers and routing, with no setup.

MARKET_DATA=synthetic publishes a seeded random-walk L2 book (10 levels a side) for each pair in
PAIRS every MARKET_DATA_INTERVAL ms on ``tbx.md.book.<pair>``; a cross whose currencies both have a
pair in the main quote currency follows them (ETH_BTC mid = ETH_USDT mid / BTC_USDT mid).
With SYNTHETIC_CLOCK=event the books step by events instead of time (``domain.synthetic.EventMarket``):
a pair's book steps once for each of its orders completely filled (a fill with ``orderComplete`` on
``tbx.events.fills.<pair>``, once per order id), and is re-published unchanged (a new ``ts``) every
MARKET_DATA_INTERVAL ms. At start the feed counts the fills already stored (it reads the FILLS stream
from its start) and publishes nothing before it has, so a restarted feed goes on with the very books
it published before: two runs of the same load see the same prices.
MARKET_DATA=replay:FILE publishes the lines of a JSON-lines file at their recorded pace (by
``ts``; gaps over 5 s are cut to 5 s): a line with ``bids``/``asks`` is a book
(``tbx.md.book.<pair>``), a line with ``price``/``quantity`` is a public trade
(``tbx.md.trades.<pair>``); blank lines and lines starting with ``#`` are skipped. After the last
line it keeps re-publishing the last book of each pair. Those books name no venue.

MARKET_DATA=venue (live trading) publishes every live venue's own books (each live venue of EXCHANGES, or
the single EXCHANGE), each ``Book.venue`` / ``Trade.venue`` = the venue's name, on the same subjects: one
``VenueFeed`` (a task of its own) per venue. Books come from ccxt.pro ``watch_order_book`` where the venue
has it, its stream setting is ``auto`` and no API URL override is set; otherwise, and while a stream is down,
each pair's top 10 levels are read every MARKET_DATA_INTERVAL ms. Public trades are polled with ccxt
``fetch_trades`` (about once a second) where the venue has it. Each feed has its own ccxt instance, without
the keys where books are public, so its calls never wait behind the order-router's orders in one rate
limiter (Alpaca's need the keys). Where the venue counts its request budget per IP (Binance), this instance
keeps to a quarter of it and the order-router's to the rest (actors/venues/factory.py).

A venue whose books cannot be read (no pair's book in a round, or its markets not loaded) is down: a critical
MARKET_DATA_DOWN alert (and one warning line) once per outage, reading again with a back-off (doubling from
MARKET_DATA_INTERVAL up to 30 s), and a MARKET_DATA_UP alert once it reads again. Each venue's state is in the
md-feed's heartbeat (``venues``: connected, update mode, last error; stats ``<venue>.status`` and
``<venue>.books``), so a venue's feed failing shows as that venue's, and the actor stays up for the others.
MARKET_DATA=none publishes nothing: any outside publisher of ``tbx.md.book.<pair>`` can feed the service
instead.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from actors.base import Actor
from actors.venues.factory import BOOKS_SHARE, make_ccxt_venue_of
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure, decode
from config.settings import Settings
from config.venues import VenueConfig, market_data_venues
from domain.synthetic import EventMarket, FillClock, SyntheticMarket
from schemas.messages import Book, Fill, Trade, VenueState, now_ms

if TYPE_CHECKING:
    from actors.venues.ccxt_venue import CcxtVenue


BOOK_DEPTH = 10
KEYED_MARKET_DATA = frozenset({"alpaca"})  # venues (ccxt ids) whose markets and books need the account's keys
BACKOFF_MAX_S = 30.0
TRADES_EVERY_S = 1.0  # public trades are polled about this often
TRADES_SEEN = 5_000  # public trade ids remembered per pair (a trade listed twice is published once)


class VenueFeed:
    """One live venue's books and public trades, published with the venue named; its own state and back-off."""

    def __init__(self, actor: MarketDataFeed, cfg: VenueConfig, venue: CcxtVenue) -> None:
        self.actor = actor
        self.cfg = cfg
        self.name = cfg.name
        self.venue = venue
        self.interval = actor.settings.MARKET_DATA_INTERVAL / 1000
        self.loaded = False
        self.up: bool | None = None  # None: not read yet
        self.mode: Literal["stream", "polling"] = "polling"
        self.published = 0
        self.failed = 0
        self.trades_published = 0
        self.last_error: str | None = None
        self.last_error_at: int | None = None
        self.failures = 0  # in a row: the back-off
        self.stream_retry_at = 0.0
        self.stream_failures = 0  # in a row: the stream's own back-off (books are polled meanwhile)
        self.trades_failures = 0
        self.trades_at = 0.0
        self.trades_ok: bool | None = None
        self.trades_since: dict[str, int] = {}
        self.trades_seen: dict[str, OrderedDict[str, None]] = {}
        self.pair_down: set[str] = set()

    def state(self) -> VenueState:
        h = self.venue.health()
        return VenueState(
            name=self.name,
            connected=self.up,
            last_latency_ms=h.last_latency_ms,
            rate_limit_used=h.rate_limit_used,
            update_mode=self.mode,
            last_error=self.last_error,
            last_error_at=self.last_error_at,
        )

    def backoff(self) -> float:
        return min(BACKOFF_MAX_S, self.interval * 2 ** min(self.failures, 20))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.loaded:
                try:
                    await self.venue.load_markets()
                    self.loaded = True
                except Exception as e:
                    await self._down(str(e))
                    await asyncio.sleep(self.backoff())
                    continue
            if self.venue.streams_books and loop.time() >= self.stream_retry_at:
                try:
                    await self._stream()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the stream dropped: books by polling until it is tried again
                    while isinstance(e, ExceptionGroup) and e.exceptions:  # from the watchers' TaskGroup
                        e = e.exceptions[0]  # type: ignore[assignment]
                    self.stream_failures += 1
                    self.stream_retry_at = loop.time() + min(BACKOFF_MAX_S, 2 ** min(self.stream_failures, 10))
                    was_streaming, self.mode = self.mode == "stream", "polling"
                    self._error(self.venue.describe(e))
                    level = "WARNING" if was_streaming or self.stream_failures == 1 else "DEBUG"  # once per outage
                    self.actor.log.log(level, "books of {}: stream dropped, polling: {}", self.name, self.last_error)
                continue
            try:
                ok = await self.poll_once()
                await self._trades_if_due()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # not the venue's (the bus, a bug): logged, and the feed goes on
                self.actor.log.opt(exception=e).error("books of {}: round failed: {}", self.name, e)
                ok = False
            await asyncio.sleep(self.interval if ok else self.backoff())

    async def poll_once(self) -> bool:
        """Every pair's book read once and published; False when none could be read (the venue is down)."""
        read, errors = 0, []
        for pair in self.cfg.pairs:
            try:
                book = await self.venue.fetch_order_book(pair, depth=BOOK_DEPTH)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # no book this round: the next one tries again
                self.failed += 1
                why = self.venue.describe(e)
                errors.append(f"{pair}: {why}")
                if pair not in self.pair_down:  # one line per pair and outage
                    self.pair_down.add(pair)
                    self.actor.log.warning("book of {} not read from {}: {}", pair, self.name, why)
                continue
            read += 1
            if pair in self.pair_down:
                self.pair_down.discard(pair)
                self.actor.log.info("book of {} read from {} again", pair, self.name)
            if book is not None and (book.bids or book.asks):
                await self._publish(book)
        if read == 0:
            await self._down("; ".join(errors) or "no book read")
            return False
        await self._up()
        return True

    async def _stream(self) -> None:
        async def watch(pair: str) -> None:
            while True:
                book = await self.venue.watch_order_book(pair, BOOK_DEPTH)
                if self.mode != "stream":
                    self.mode, self.stream_failures = "stream", 0
                    self.actor.log.info("books of {}: streamed", self.name)
                await self._up()
                if book.bids or book.asks:
                    await self._publish(book)

        async def trades() -> None:
            while True:
                await self._trades_if_due()
                await asyncio.sleep(TRADES_EVERY_S)

        async with asyncio.TaskGroup() as tg:
            for pair in self.cfg.pairs:
                tg.create_task(watch(pair))
            tg.create_task(trades())

    async def _publish(self, book: Book) -> None:
        book.venue = self.name
        await self.actor.publish_book(book)
        self.published += 1

    async def _trades_if_due(self) -> None:
        """Public trades since the last seen, each published once, about every TRADES_EVERY_S. A venue without
        them is not asked; failures are logged once per outage (the books decide whether the venue is up)."""
        loop = asyncio.get_running_loop()
        if not self.venue.has_public_trades or loop.time() < self.trades_at:
            return
        self.trades_at = loop.time() + min(BACKOFF_MAX_S, TRADES_EVERY_S * 2 ** min(self.trades_failures, 10))
        try:
            for pair in self.cfg.pairs:
                for t in await self.venue.fetch_trades(pair, self.trades_since.get(pair)):
                    seen = self.trades_seen.setdefault(pair, OrderedDict())
                    key = t.trade_id or f"{t.ts}:{t.price}:{t.quantity}:{t.side}"
                    if key in seen:
                        continue
                    seen[key] = None
                    while len(seen) > TRADES_SEEN:
                        seen.popitem(last=False)
                    self.trades_since[pair] = max(self.trades_since.get(pair, 0), t.ts)
                    t.venue = self.name
                    await self.actor.bus.publish(self.actor.subjects.trades(pair), t)
                    self.trades_published += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if self.trades_ok is not False:
                self.actor.log.warning("public trades of {} not read: {}", self.name, self.venue.describe(e))
            self.trades_ok = False
            self.trades_failures += 1
            return
        if self.trades_ok is False:
            self.actor.log.info("public trades of {} read again", self.name)
        self.trades_ok, self.trades_failures = True, 0

    def _error(self, why: str) -> None:
        self.last_error, self.last_error_at = why, now_ms()

    async def _down(self, why: str) -> None:
        self.failures += 1
        self._error(why)
        was, self.up = self.up, False
        if was is not False:  # once per outage (and at start when it cannot be read)
            await self.actor.alert("critical", "MARKET_DATA_DOWN", f"market data of {self.name} unavailable: {why}")

    async def _up(self) -> None:
        self.failures = 0
        was, self.up = self.up, True
        if was is False:
            await self.actor.alert("warning", "MARKET_DATA_UP", f"market data of {self.name} read again")
        elif was is None:
            how = "streamed" if self.mode == "stream" else f"read every {self.actor.settings.MARKET_DATA_INTERVAL} ms"
            self.actor.log.info("books of {}: {}", self.name, how)


class MarketDataFeed(Actor):
    name = "md-feed"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        # with MARKET_DATA=none it publishes nothing: it takes no lease (another deployment's feed may hold it)
        self.leased = settings.MARKET_DATA != "none"
        self.published = 0
        self.last: dict[str, Book] = {}
        self.feeds: dict[str, VenueFeed] = {}  # live venue name -> its feed (MARKET_DATA=venue)

    async def on_start(self) -> None:
        if self.settings.MARKET_DATA == "synthetic" and self.settings.SYNTHETIC_CLOCK == "event":
            await self._start_event_clock()
            self.spawn(self._synthetic_by_events(), "synthetic", essential=True)
        elif self.settings.MARKET_DATA == "synthetic":
            self.spawn(self._synthetic(), "synthetic", essential=True)
        elif self.settings.MARKET_DATA == "venue":
            for cfg in market_data_venues(self.settings):
                # without the keys where the books are public (its own rate limiter, never in the way of orders);
                # Alpaca serves markets and books to key holders only
                venue = make_ccxt_venue_of(cfg, keys=cfg.ccxt_id in KEYED_MARKET_DATA, share=BOOKS_SHARE)
                feed = self.feeds[cfg.name] = VenueFeed(self, cfg, venue)
                self.spawn(feed.run(), f"books of {cfg.name}")
        elif (path := self.settings.replay_file) is not None:
            if not path.is_file():
                raise FileNotFoundError(f"MARKET_DATA={self.settings.MARKET_DATA!r}: no such file")
            self.spawn(self._replay(path), "replay")

    def stats(self) -> dict[str, int | float | str]:
        failed = sum(f.failed for f in self.feeds.values())
        out: dict[str, int | float | str] = {
            "booksPublished": self.published,
            "booksFailed": failed,
            "mode": self.settings.MARKET_DATA,
        }
        for name, f in self.feeds.items():
            out[f"{name}.status"] = "unknown" if f.up is None else "up" if f.up else "down"
            out[f"{name}.books"] = f.published
            out[f"{name}.trades"] = f.trades_published
        return out

    def venue_states(self) -> list[VenueState] | None:
        """Each live venue's market data feed (MARKET_DATA=venue)."""
        return [f.state() for f in self.feeds.values()] if self.feeds else None

    async def publish_book(self, book: Book) -> None:
        await self.bus.publish(self.subjects.book(book.pair), book)
        self.last[book.pair] = book
        self.published += 1

    async def _synthetic(self) -> None:
        market = SyntheticMarket(self.settings.PAIRS, self.settings.MARKET_DATA_SEED)
        interval = self.settings.MARKET_DATA_INTERVAL / 1000
        while True:
            for book in market.next(now_ms()):
                await self.publish_book(book)
            await asyncio.sleep(interval)

    async def _start_event_clock(self) -> None:
        """SYNTHETIC_CLOCK=event: count every fill stored so far (nothing is published meanwhile), then follow."""
        self.event_market = EventMarket(self.settings.PAIRS, self.settings.MARKET_DATA_SEED)
        self.fill_clock = FillClock()
        self.clock_ready = False

        async def on_fill(fill: Fill, env: Envelope) -> None:
            if not self.fill_clock.on_fill(fill.pair, fill.order_id, fill.order_complete):
                return
            if self.clock_ready and fill.pair in self.event_market.pairs:
                for pair in self.event_market.moved_by(fill.pair):  # the new price at once, not at the next tick
                    await self.publish_book(self.event_market.book(pair, self.fill_clock.steps, now_ms()))

        s = self.subjects
        # (like every follow: heartbeats every second, a consumer that died with a NATS node is re-made within seconds)
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=on_fill)
        self.clock_ready = True
        self.log.info("synthetic clock by events: {} orders filled so far", sum(self.fill_clock.steps.values()))

    async def _synthetic_by_events(self) -> None:
        interval = self.settings.MARKET_DATA_INTERVAL / 1000
        while True:
            for book in self.event_market.books(self.fill_clock.steps, now_ms()):
                await self.publish_book(book)
            await asyncio.sleep(interval)

    async def on_stop(self) -> None:
        for task in list(self._tasks):  # the feeds first: no call of theirs in flight when their session closes
            if "books of" in task.get_name():
                task.cancel()
        await asyncio.gather(*(f.venue.stop() for f in self.feeds.values()), return_exceptions=True)

    async def _replay(self, path: Path) -> None:
        prev_ts: int | None = None
        with path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith(b"#"):
                    continue
                try:
                    item = replay_line(line)
                except ValueError as e:
                    await self.bus.dead_letter(f"replay.{path.name}", f"line {n}: {e}", line)
                    continue
                if prev_ts is not None and item.ts > prev_ts:
                    await asyncio.sleep(min((item.ts - prev_ts) / 1000, 5.0))
                prev_ts = item.ts
                if isinstance(item, Book):
                    await self.publish_book(item)
                else:
                    await self.bus.publish(self.subjects.trades(item.pair), item)
        self.log.info("replay of {} done; re-publishing the last books", path)
        while True:
            await asyncio.sleep(self.settings.MARKET_DATA_INTERVAL / 1000)
            for book in list(self.last.values()):
                await self.publish_book(Book(pair=book.pair, bids=book.bids, asks=book.asks, ts=now_ms()))


def replay_line(line: bytes) -> Book | Trade:
    """One line of a replay file: a book (has ``bids``) or a trade (has ``price``)."""
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("a line is a JSON object")
    try:
        return decode(line, Book) if "bids" in raw or "asks" in raw else decode(line, Trade)
    except DecodeFailure as e:
        raise ValueError(e.reason) from None
