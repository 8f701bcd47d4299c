"""The paper exchange: fills against the latest L2 book of ``tbx.md.book.<pair>``.

It behaves like an outside venue: it keeps its own record of every order in the JetStream KV bucket
PAPER (so it survives a restart of the router, like a real exchange would), answers by our client
order id, and never double-fills a retried order. A market order walks the book level by level, one
trade per level, as a taker (fee PAPER_TAKER_FEE, 0.1% by default, charged in the quote currency);
depth that runs out leaves the rest unfilled and canceled (market orders are immediate-or-cancel).
The book is not depleted by our own fills: the next snapshot replaces it. An order for a pair
with no book yet (the router just started, say) waits up to BOOK_WAIT_S for one before it is
rejected with "no market data" (see actors/books.py).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import msgspec
import nats.js.errors

from actors.books import BookCache
from actors.venues.base import VenueOrder, VenueOrderRequest, VenueTrade
from bus.client import Bus
from config.settings import Settings
from domain.book import walk_book
from schemas.messages import Book, now_ms
from schemas.subjects import pair_currencies

ZERO = Decimal(0)

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(VenueOrder)


class PaperVenue:
    name = "paper"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.bus = bus
        self.taker_fee = settings.PAPER_TAKER_FEE
        self.books = BookCache(bus)

    async def start(self) -> None:
        self.kv = await self.bus.kv(self.bus.subjects.kv_paper)
        await self.books.start()

    async def stop(self) -> None:
        return None

    @staticmethod
    def _key(client_order_id: str) -> str:
        return "o." + hashlib.sha1(client_order_id.encode()).hexdigest()

    async def fetch_order(self, client_order_id: str, pair: str) -> VenueOrder | None:
        try:
            entry = await self.kv.get(self._key(client_order_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _dec.decode(entry.value) if entry.value else None

    async def fetch_order_book(self, pair: str) -> Book | None:
        return await self.books.get(pair, wait=0)

    async def create_order(self, req: VenueOrderRequest) -> VenueOrder:
        known = await self.fetch_order(req.client_order_id, req.pair)
        if known is not None:
            return known
        result = self._match(req, await self.books.get(req.pair))
        try:
            await self.kv.create(self._key(req.client_order_id), _enc.encode(result))
        except nats.js.errors.KeyWrongLastSequenceError:
            # the same client order id raced us: the first outcome stands
            first = await self.fetch_order(req.client_order_id, req.pair)
            if first is not None:
                return first
        return result

    def _match(self, req: VenueOrderRequest, book: Book | None) -> VenueOrder:
        venue_id = "P" + hashlib.sha1(req.client_order_id.encode()).hexdigest()[:16]
        if req.type != "market":
            return VenueOrder(
                req.client_order_id,
                venue_id,
                req.pair,
                "rejected",
                ZERO,
                reason=f"order type {req.type} is not supported by the paper venue yet",
            )
        if book is None:
            return VenueOrder(
                req.client_order_id, venue_id, req.pair, "rejected", ZERO, reason=f"no market data for {req.pair}"
            )
        is_buy = req.side == "buy"
        slices, left = walk_book(book.asks if is_buy else book.bids, req.quantity, is_buy=is_buy)
        quote = pair_currencies(req.pair)[1]
        ts = now_ms()
        trades = [
            VenueTrade(
                trade_id=f"{venue_id}-{i}",
                quantity=qty,
                price=price,
                fee=qty * price * self.taker_fee,
                fee_currency=quote,
                liquidity="taker",
                ts=ts,
            )
            for i, (price, qty) in enumerate(slices, 1)
        ]
        filled = req.quantity - left
        if left == ZERO:
            return VenueOrder(req.client_order_id, venue_id, req.pair, "closed", filled, trades)
        reason = f"book depth ran out: {left} of {req.quantity} unfilled"
        return VenueOrder(req.client_order_id, venue_id, req.pair, "canceled", filled, trades, reason=reason)
