"""The paper exchange: a venue that fills our orders against the latest books of ``tbx.md.book.<pair>``.

It trades on one source's books only (``paper_book_source``): PAPER_BOOKS' venue (books with ``venue`` =
that name, e.g. a live venue's md-feed: paper trading on real prices); unset, the first live venue of
EXCHANGES when MARKET_DATA=venue, else the unnamed books (synthetic, replay, an outside publisher).

It behaves like an outside venue: it keeps its own record of every order in the JetStream KV bucket
PAPER (so resting orders survive a restart of the router, as they would at a real exchange), answers
by our client order id, never double-fills a retried order, and pushes fills of resting orders to its
listener. The matching itself is ``domain.matching`` (pure); see its docstring for the rules.
Every command waits PAPER_LATENCY_MS first (simulated round trip). A pair with no book yet (the router
just started) waits up to BOOK_WAIT_S for one (see actors/books.py).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable
from decimal import Decimal

import msgspec
import nats.js.errors
from loguru import logger

from actors.books import BookCache
from actors.venues.base import (
    Listener,
    VenueBalance,
    VenueHealth,
    VenueOrder,
    VenueOrderRequest,
    VenueRefused,
    VenueStartError,
    VenueTrade,
)
from bus.client import Bus
from bus.errors import LeaseLost
from config.settings import Settings, parse_paper_markets
from config.venues import PAPER, live_venues, venue_configs, venue_names
from domain.matching import MarketSpec, Matcher, SimOrder, SimTrade
from domain.partitions import owns
from domain.synthetic import START_PRICES, lot_size, start_price, tick_size
from schemas.messages import Book, MarketRules, VenueCheck, now_ms
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
RECENT_TRADES = 10_000
RECENT_ORDERS = 10_000

_enc = msgspec.json.Encoder()
_dec_order = msgspec.json.Decoder(SimOrder)
_dec_balances = msgspec.json.Decoder(dict[str, Decimal])


def _key(client_order_id: str) -> str:
    return "o." + hashlib.sha1(client_order_id.encode()).hexdigest()


def _venue_trade(t: SimTrade) -> VenueTrade:
    return VenueTrade(t.trade_id, t.quantity, t.price, t.fee, t.fee_currency, t.liquidity, t.ts)


def _view(o: SimOrder) -> VenueOrder:
    return VenueOrder(
        client_order_id=o.client_order_id,
        venue_order_id=o.venue_order_id,
        pair=o.pair,
        status=o.status,
        filled=o.filled,
        trades=[_venue_trade(t) for t in o.trades],
        reason=o.reason,
        quantity=o.quantity,
        price=o.price,
    )


def market_spec(settings: Settings, pair: str) -> MarketSpec:
    """The paper venue's rules for ``pair``: PAPER_MARKETS overrides, else from the pair's price."""
    start = START_PRICES.get(pair_currencies(pair)[0], Decimal(100))
    o = parse_paper_markets(settings.PAPER_MARKETS).get(pair)
    return MarketSpec(
        tick_size=(o and o.tick_size) or tick_size(start_price(pair)),  # ETH_BTC: of 0.05, not of 3000
        amount_step=(o and o.amount_step) or lot_size(start),
        min_notional=o.min_notional if o and o.min_notional is not None else settings.PAPER_MIN_NOTIONAL,
        maker_fee=o.maker_fee if o and o.maker_fee is not None else settings.PAPER_MAKER_FEE,
        taker_fee=o.taker_fee if o and o.taker_fee is not None else settings.PAPER_TAKER_FEE,
    )


def paper_book_source(settings: Settings) -> str | None:
    """The venue whose books the paper venue trades on (None: the unnamed books)."""
    if settings.PAPER_BOOKS:
        return settings.PAPER_BOOKS
    if settings.MARKET_DATA == "venue":
        live = live_venues(settings)
        if live:
            return live[0].name
    return None


class PaperVenue:
    name = "paper"
    native_types: frozenset[str] = frozenset()  # stops and take-profits wait in the order-router
    authoritative_lookup = True  # its records are in KV, written before it answers: unknown = never got it

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        books: BookCache | None = None,
        pairs: tuple[str, ...] | None = None,
        name: str = PAPER,
    ) -> None:
        if settings.LIVE_TRADING and not any(v.paper for v in venue_configs(settings)):
            # never paper trade silently when live trading was asked for (paper beside live venues is listed)
            raise VenueStartError(f"the paper venue cannot serve LIVE_TRADING=true on {settings.EXCHANGE}")
        self.settings = settings
        self.pairs = pairs or settings.PAIRS
        self.name = name  # several paper venues (alpha=paper,beta=paper): each its own name and store
        self.bus = bus
        self.books = books or BookCache(bus, venue_names(settings))
        self.source = paper_book_source(settings)  # whose books it matches on (None: unnamed ones)
        self.books.add_hook(self._on_book)  # resting orders match before anything else sees the book
        self.matchers: dict[str, Matcher] = {}
        self.latency = settings.PAPER_LATENCY_MS / 1000
        self.listener: Listener | None = None
        # partitioned (PARTITIONS > 1, in the order-router of partition k): it keeps the orders of its partition's
        # pairs only, and the balance changes of its trades under a key of its own (``balances.p<k>``, partition 0
        # keeps ``balances`` and the initial balance): the account is the sum, and two partitions never overwrite
        # each other's figures
        self.partition = settings.PARTITION if settings.PARTITIONS > 1 else None
        self.balances_key = "balances" if not self.partition else f"balances.p{self.partition}"
        self.balances: dict[str, Decimal] = (
            {settings.BASE_CURRENCY: settings.INITIAL_BALANCE} if not self.partition else {}
        )
        # the other parts of the account: the other partitions' keys, and any ``balances*`` key found at the start
        # (a partition of an earlier PARTITIONS, after a drain): ``fetch_balance`` answers the sum of them all
        self.other_balance_keys: set[str] = (
            {"balances", *(f"balances.p{k}" for k in range(1, settings.PARTITIONS))} - {self.balances_key}
            if settings.PARTITIONS > 1
            else set()
        )
        self.trades: deque[tuple[str, VenueTrade]] = deque(maxlen=RECENT_TRADES)
        self.recent: OrderedDict[str, SimOrder] = OrderedDict()  # orders of this run, newest last
        self.lock = asyncio.Lock()
        self._balances_unsaved = False  # a balance write failed after its order was stored: write at the next save
        self._health = VenueHealth(name=self.name, connected=True, update_mode="push")

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        subjects = self.bus.subjects
        store = subjects.kv_paper if self.name == PAPER else subjects.bucket_name(f"PAPER_{self.name.upper()}")
        self.kv = await self.bus.kv(store)
        try:
            entry = await self.kv.get(self.balances_key)
            if entry.value:
                self.balances = _dec_balances.decode(entry.value)
        except nats.js.errors.KeyNotFoundError:
            pass
        await self._load_resting()
        await self.books.start()

    async def stop(self) -> None:
        return None

    def set_listener(self, listener: Listener) -> None:
        self.listener = listener

    def track(self, client_order_ids: Iterable[str]) -> None:
        """Nothing to map: the paper venue keeps our client order ids as they are (and never sees external orders)."""
        return None

    async def _load_resting(self) -> None:
        try:
            keys = await self.kv.keys()  # (nats-py's key filters match substrings, not subject wildcards)
        except nats.js.errors.NoKeysError:
            return
        for key in keys:
            if key.startswith("balances") and key != self.balances_key:
                self.other_balance_keys.add(key)  # another partition's (or one of an earlier PARTITIONS)
            if not key.startswith("o."):
                continue
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            o = _dec_order.decode(entry.value)
            if not owns(self.partition, self.settings.PARTITIONS, o.pair):  # another partition's order
                continue
            m = self._matcher(o.pair)
            m.seq = max(m.seq, o.seq)
            m.position += o.filled if o.is_buy else -o.filled  # every order's record: the pair's position
            if o.status == "open":
                m.resting[o.client_order_id] = o

    def _matcher(self, pair: str) -> Matcher:
        m = self.matchers.get(pair)
        if m is None:
            slip = self.settings.MAX_SLIPPAGE_PERCENT
            quote = pair_currencies(pair)[1]
            m = self.matchers[pair] = Matcher(pair, quote, market_spec(self.settings, pair), slip or None)
        return m

    def _remember(self, o: SimOrder) -> None:
        self.recent[o.client_order_id] = o
        self.recent.move_to_end(o.client_order_id)
        while len(self.recent) > RECENT_ORDERS:
            self.recent.popitem(last=False)

    async def _save(self, o: SimOrder, new_trades: list[SimTrade], *, new: bool = False) -> None:
        """Store the order, then, if it traded, the balances. Callers hold ``self.lock``, so two balance writes
        never race each other. The balances in memory change only once the order is stored (a failed order
        write leaves them as stored, for the caller to roll the order back); a balance write that fails after
        the order was stored keeps them in memory (they are what the stored orders say) and the next save
        writes them. ``new``: the order's first record, written only if it has none (one write that is also the
        check that no earlier run made it: KeyWrongLastSequenceError if one did)."""
        if new:
            await self.kv.create(_key(o.client_order_id), _enc.encode(o))
        else:
            await self.kv.put(_key(o.client_order_id), _enc.encode(o))
        if new_trades:
            base, quote = pair_currencies(o.pair)
            sign = Decimal(1) if o.side == "buy" else Decimal(-1)
            for t in new_trades:
                self.balances[base] = self.balances.get(base, ZERO) + sign * t.quantity
                self.balances[quote] = self.balances.get(quote, ZERO) - sign * t.quantity * t.price - t.fee
                self.trades.append((o.pair, _venue_trade(t)))
            self._balances_unsaved = True
        if self._balances_unsaved:
            await self.kv.put(self.balances_key, _enc.encode(self.balances))
            self._balances_unsaved = False

    # -- market data -----------------------------------------------------------------------------------
    async def _on_book(self, book: Book) -> None:
        if book.venue != self.source:
            return  # another venue's book: never matched on
        m = self._matcher(book.pair)
        log = logger.bind(actor="order-router")
        saved: list[tuple[SimOrder, list[SimTrade]]] = []
        async with self.lock:
            try:  # an instance that may not write matches nothing: what it holds stays what is stored
                self.bus.check_fence()
            except LeaseLost:
                return
            before = {cid: _copy(o) for cid, o in m.resting.items()}
            filled = m.on_book(book, now_ms())
            for o, trades in filled:
                try:
                    await self._save(o, trades)
                except Exception as e:  # not stored: as if this book had not touched it (the next one may)
                    log.opt(exception=e).error(
                        "paper venue: fill of {} not stored, rolled back: {}", o.client_order_id, e
                    )
                    _roll_back(m, o, before[o.client_order_id], trades)
                    continue
                self._remember(o)
                saved.append((o, trades))
        for o, trades in saved:
            if self.listener is not None:
                try:
                    await self.listener(_view(o), [_venue_trade(t) for t in trades])
                except Exception as e:  # one failing push must not hide the others; the reconcile catches up
                    log.opt(exception=e).error("paper venue: update of {} not delivered: {}", o.client_order_id, e)

    # -- the unified API -------------------------------------------------------------------------------
    async def markets(self) -> list[MarketRules]:
        out = []
        for pair in self.pairs:
            s = market_spec(self.settings, pair)
            out.append(
                MarketRules(
                    pair=pair,
                    tick_size=s.tick_size,
                    amount_step=s.amount_step,
                    min_notional=s.min_notional,
                    maker_fee=s.maker_fee,
                    taker_fee=s.taker_fee,
                )
            )
        return out

    async def fetch_order(self, client_order_id: str, pair: str) -> VenueOrder | None:
        try:
            entry = await self.kv.get(_key(client_order_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _view(_dec_order.decode(entry.value)) if entry.value else None

    async def fetch_open_orders(self, pair: str | None = None) -> list[VenueOrder]:
        return [_view(o) for m in self.matchers.values() if pair is None or m.pair == pair for o in m.resting.values()]

    async def fetch_my_trades(self, pair: str, since: int = 0) -> list[VenueTrade]:
        return [t for p, t in self.trades if p == pair and t.ts >= since]

    async def fetch_balance(self) -> dict[str, VenueBalance]:
        """The paper account: this partition's balances plus every other part's (``balances``, ``balances.p<k>``:
        each partition keeps the changes of its own trades; PARTITIONS = 1 with no other key: its own)."""
        parts = [self.balances]
        for key in sorted(self.other_balance_keys):
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue  # that partition has not traded yet
            if entry.value:
                parts.append(_dec_balances.decode(entry.value))
        total = sum_balances(parts)
        return {c: VenueBalance(free=v, total=v) for c, v in total.items()}  # it locks nothing

    def health(self) -> VenueHealth:
        return self._health

    async def check(self) -> VenueCheck:
        ms = float(self.settings.PAPER_LATENCY_MS)
        return VenueCheck(
            id=self.name, ccxt_id=PAPER, ok=True, markets_loaded=True, pairs_listed=True, keys_accepted=None,
            balance_read=True, clock_skew_ms=0.0, latency_ms=ms,
        )  # fmt: skip

    def describe(self, e: BaseException) -> str:
        return f"{type(e).__name__}: {e}"  # nothing secret in the paper venue's errors

    async def fetch_order_book(self, pair: str) -> Book | None:
        """The book a market order of ``pair`` would match on now: its matcher's (else the cache's latest)."""
        m = self.matchers.get(pair)
        if m is not None and m.book is not None:
            return m.book
        return await self.books.get(pair, wait=0, venue=self.source)

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        if self.latency:
            await asyncio.sleep(self.latency)
        m = self._matcher(req.pair)
        if m.book is None:
            # waits for a first book of its source; the hook hands it to the matcher - but the wait ends when the
            # cache has it, before its hooks ran: hand it over here if the hook has not yet (twice is harmless)
            book = await self.books.get(req.pair, venue=self.source)
            if book is not None and m.book is None:
                await self._on_book(book)
        async with self.lock:  # one create per client order id, ever: memory, then the venue's records
            if (o := self.recent.get(req.client_order_id) or m.resting.get(req.client_order_id)) is not None:
                return _view(o)
            o = SimOrder(
                client_order_id=req.client_order_id,
                venue_order_id="P" + hashlib.sha1(req.client_order_id.encode()).hexdigest()[:16],
                pair=req.pair,
                side=req.side,
                type=req.type,
                quantity=req.quantity,
                price=req.price,
                time_in_force=req.time_in_force,
                post_only=req.post_only,
                reduce_only=req.reduce_only,
            )
            consumed = dict(m.consumed)  # the book's liquidity taken so far (restored if this order already exists)
            trades = m.submit(o, now_ms())
            self._remember(o)  # before the save: a failed save must not let a retry trade it again
            try:
                await self._save(o, trades, new=True)
            except nats.js.errors.KeyWrongLastSequenceError:
                # its record exists: made by an earlier run (a retry of an order that left memory) - that one is
                # the order; what this try matched is undone, and nothing of it was stored
                _undo_new(m, o, trades, consumed)
                self.recent.pop(o.client_order_id, None)
                if (known := await self.fetch_order(req.client_order_id, req.pair)) is None:
                    raise
                return known
        return _view(o)

    async def cancel_order(self, client_order_id: str, pair: str, reason: str = "canceled") -> VenueOrder:
        if self.latency:
            await asyncio.sleep(self.latency)
        async with self.lock:
            o = self._matcher(pair).cancel(client_order_id, now_ms(), reason)
            if o is None:
                known = await self.fetch_order(client_order_id, pair)
                state = known.status if known else "unknown"
                raise VenueRefused(f"cannot cancel: the order is {state}")
            await self._save(o, [])
        return _view(o)

    async def edit_order(
        self, client_order_id: str, pair: str, quantity: Decimal | None = None, price: Decimal | None = None
    ) -> VenueOrder:
        if self.latency:
            await asyncio.sleep(self.latency)
        async with self.lock:
            o, refusal, trades = self._matcher(pair).edit(client_order_id, now_ms(), quantity, price)
            if o is None or refusal is not None:
                raise VenueRefused(f"cannot modify: {refusal}")
            await self._save(o, trades)
        return _view(o)


def _copy(o: SimOrder) -> SimOrder:
    """A copy of a resting order that matching cannot change (its trade list is its own)."""
    return msgspec.structs.replace(o, trades=list(o.trades))


def _undo_new(m: Matcher, o: SimOrder, trades: list[SimTrade], consumed: dict[tuple[str, Decimal], Decimal]) -> None:
    """Undo what ``Matcher.submit`` did for a new order that turned out to exist already: its trades leave the
    pair's position, it rests no more, and the book's liquidity it took is there again (``consumed``: as it was
    before; nothing else matched meanwhile - the venue's lock was held)."""
    for t in trades:
        m.position -= t.quantity if o.is_buy else -t.quantity
    m.resting.pop(o.client_order_id, None)
    m.consumed = consumed


def _roll_back(m: Matcher, o: SimOrder, was: SimOrder, trades: list[SimTrade]) -> None:
    """Undo what ``Matcher.on_book`` did to ``o`` (its trades, its end) when storing it failed: it rests again as
    it was stored, and the pair's position no longer counts its trades. (The book liquidity it took stays taken
    until the next book: it can only make this book fill less, never more.)"""
    for t in trades:
        m.position -= t.quantity if o.is_buy else -t.quantity
    for f in SimOrder.__struct_fields__:  # in place: whoever holds ``o`` (the recent orders) sees it as stored
        setattr(o, f, getattr(was, f))
    m.resting[o.client_order_id] = o


def sum_balances(parts: Iterable[dict[str, Decimal]]) -> dict[str, Decimal]:
    """One account out of its parts (each partition's balance changes, one with the initial balance): per currency,
    the sum."""
    out: dict[str, Decimal] = {}
    for part in parts:
        for currency, amount in part.items():
            out[currency] = out.get(currency, ZERO) + amount
    return out
