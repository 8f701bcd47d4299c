"""The venue session: everything the order-router says to the venue and hears from it.

It sends orders, records the venue's answers and pushed updates, cancels and edits orders the venue
holds, reconciles the orders whose outcome is not fully known, and raises VENUE_DOWN / VENUE_UP. It is
the home of what a live venue adds (following updates by stream or polling, trades since the last one
seen, external orders, balances); one session per venue.

Durability rules kept here:
- the venue's trades are published as execution reports *before* the venue's answer is recorded on
  the order, so a crash in between leaves the answer unrecorded and the reconcile sends the trades
  again (duplicates are dropped by trade id downstream);
- on start, and every RECONCILE_INTERVAL_MS, orders whose outcome is not fully known are reconciled with
  the venue by client order id; an order whose outcome is unknown stays in flight, never guessed.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from actors.order_router.emulator import slot
from actors.order_router.store import OrderStore
from actors.venues.base import Venue, VenueOrder, VenueOrderRequest, VenueRefused, VenueTrade, VenueUnavailable
from bus.client import Bus
from bus.errors import LeaseLost, RequestFailed, Transient
from config.settings import Settings
from domain.ids import fill_id
from domain.orders import (
    UNKNOWN_TO_VENUE,
    IllegalTransition,
    back_from_pending,
    held_here,
    revivable,
    to_pending,
    transition,
    with_venue_answer,
)
from domain.partitions import partition_for
from domain.triggers import native_kind, venue_leg
from domain.venue_ids import venue_client_id
from schemas.messages import (
    TERMINAL_STATUSES,
    BalanceQuiet,
    BalanceQuietReply,
    ExecutionReport,
    MarketRules,
    Order,
    OrderStatus,
    Severity,
    VenueBalanceFigures,
    VenueBalances,
    VenueState,
    now_ms,
)
from schemas.subjects import pair_currencies

if TYPE_CHECKING:
    from loguru import Logger

    from actors.order_router.emulator import Emulator, Spawn

S = OrderStatus
ZERO = Decimal(0)
MAX_REJECT_CODES = 1_000
START_BACKOFF_MAX_S = 60.0
QUIET_TIMEOUT_S = 2.0  # partitioned balance readings: another partition's answer (quiet or not)
# a venue's order type -> (our type, held by the venue): how an external order is kept
_ADOPTED_TYPES = {
    "market": ("market", False),
    "limit": ("limit", False),
    "stop_loss": ("stop_loss", True),
    "stop_loss_limit": ("stop_limit", True),
    "take_profit": ("take_profit", True),
    "take_profit_limit": ("take_profit", True),
}

Alert = Callable[[Severity, str, str], Awaitable[None]]  # the actor's alert on tbx.events.risk
Route = Callable[[str], Awaitable[None]]  # the router's routing of a SUBMITTED order
# the router's fallback: the order (certainly not taken by this venue) goes to its next venue; False: it has none
Reroute = Callable[[str, str], Awaitable[bool]]


class NotTaken(Transient):
    """The venue certainly did not take the order (``VenueUnavailable``): it may go again, here or elsewhere."""


class VenueSession:
    def __init__(
        self, venue: Venue, store: OrderStore, bus: Bus, log: Logger, spawn: Spawn, alert: Alert, settings: Settings
    ) -> None:
        self.venue = venue
        if hasattr(venue, "fence"):  # a live venue: its creates and cancels ask the lease once more as they go out
            venue.fence = bus.check_fence  # type: ignore[attr-defined]
        self.name = venue.name
        self.pairs: tuple[str, ...] = tuple(getattr(venue, "pairs", None) or settings.PAIRS)
        self.settings = settings
        self.store = store
        self.bus = bus
        self.subjects = bus.subjects
        self.log = log
        self.spawn = spawn
        self.alert = alert
        self.rules: dict[str, MarketRules] = {}
        self.cancelling: set[str] = set()  # cancels on their way to the venue
        self.sending: set[str] = set()  # creates on their way to the venue
        # orders created by this run and not sent yet: on a live venue (``authoritative_lookup`` false) only
        # these are sent without asking first; any other unanswered order is looked up by its client order id
        # and, if the venue still does not know it VENUE_UNKNOWN_GRACE_MS after it was sent, rejected - never
        # sent twice. Orders the venue certainly did not take (``VenueUnavailable``) go back in here.
        self.fresh: set[str] = set()
        # when this run last sent each order (the grace of an unknown outcome runs from the last send; for
        # orders sent by a run before this one, from this run's start)
        self.sent_at: dict[str, int] = {}
        self.started_at = now_ms()
        self.answers: dict[str, asyncio.Future[VenueOrder]] = {}  # first answers a caller waits for
        self.reject_codes: OrderedDict[str, str] = OrderedDict()  # the venue's code of a rejection, for the reply
        # external orders ignored (logged once each), by pair and venue order id (Binance numbers orders per symbol)
        self.ignored: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.venue_up: bool | None = None  # unknown until the venue is first asked
        self.fills_seq = 0  # the last FILLS sequence this router has seen (its balance readings vouch up to it)
        self.balances_published = 0
        self.unread_since: int | None = None  # partitioned: since when a partition has not answered (no readings)
        self.reconciling = False
        self.again = False
        self.started = False  # several venues: one that could not start is down, its start tried again (back-off)
        self.start_retry_at = 0.0
        self.start_backoff_s = 0.0
        # run before every start (and every try again): the venue's keys (actors/order_router/keys.py)
        self.prepare: Callable[[], Awaitable[None]] | None = None

    def connect(self, emulator: Emulator, route: Route, reroute: Reroute | None = None) -> None:
        """The emulator (brackets and exits follow the venue's answers), the router's routing and fallback."""
        self.emulator = emulator
        self.route = route
        self.reroute = reroute

    def mine(self, o: Order) -> bool:
        """Is the order this venue's (several venues: each session minds its own)?"""
        return o.venue == self.name

    def up(self) -> bool:
        """Not known to be down: started, answering (or not asked yet), and its health check not failing."""
        return self.started and self.venue_up is not False and self.venue.health().connected is not False

    async def start(self) -> None:
        """Start the venue and read its markets. Only after the orders are rebuilt: what it pushes is about
        orders we know."""
        self.venue.set_listener(self._on_venue_update)
        # ours: the live orders, and those given up on that the venue may still show (rejected as unknown to it,
        # canceled before it had them)
        # (every venue's: an order routed on from this venue may still show up here - see _ghost - and must be
        # known as ours, not taken for an external order)
        given_up = (
            o for o in self.store.orders.values() if revivable(o) or (o.status is S.CANCELED and o.venue_status is None)
        )
        live = (self.store.orders[oid] for oid in self.store.live)
        self.venue.track([*(o.client_order_id for o in live), *(o.client_order_id for o in given_up)])
        self.started_at = now_ms()
        if self.prepare is not None:
            await self.prepare()
        await self.venue.start()
        self.rules = {m.pair: m for m in await self.venue.markets()}
        self.started = True

    async def down_at_start(self, why: str) -> None:
        """Several venues: this one could not start (it did not answer): down - VENUE_DOWN, skipped by routing, its
        orders waiting - and its start tried again by the reconcile, with a back-off up to a minute."""
        self.log.error("venue {} could not start: {}; the others trade, it is tried again", self.name, why)
        self.start_backoff_s = max(1.0, self.settings.RECONCILE_INTERVAL_MS / 1000)
        self.start_retry_at = asyncio.get_running_loop().time() + self.start_backoff_s
        await self._venue_answers(False, why)

    async def _start_again(self) -> bool:
        loop = asyncio.get_running_loop()
        if loop.time() < self.start_retry_at:
            return False
        try:
            await self.start()
        except Exception as e:
            self.start_backoff_s = min(self.start_backoff_s * 2, START_BACKOFF_MAX_S)
            self.start_retry_at = loop.time() + self.start_backoff_s
            self.log.info("venue {} still cannot start: {}", self.name, self.venue.describe(e))
            return False
        self.log.warning("venue {} started", self.name)
        return True

    async def stop(self) -> None:
        await self.venue.stop()

    def holds_natively(self, o: Order) -> bool:
        """Does the venue hold this stop / take-profit itself? Not a bracket leg nor a reduce-only order: those
        follow the position here (a spot venue has no reduce-only)."""
        return o.role is None and not o.reduce_only and native_kind(o) in self.venue.native_types

    def venue_state(self) -> VenueState:
        h = self.venue.health()
        return VenueState(
            name=h.name, connected=h.connected, last_latency_ms=h.last_latency_ms, rate_limit_used=h.rate_limit_used,
            update_mode=h.update_mode, last_error=h.last_error, last_error_at=h.last_error_at,
            keys_refused=h.keys_refused,
        )  # fmt: skip

    def await_answer(self, order_id: str) -> asyncio.Future[VenueOrder]:
        """A future set with the venue's answer to the order's send, as soon as it comes (before it is stored)."""
        fut: asyncio.Future[VenueOrder] = asyncio.get_running_loop().create_future()
        self.answers[order_id] = fut
        return fut

    def forget_answer(self, order_id: str, fut: asyncio.Future[VenueOrder]) -> None:
        if self.answers.get(order_id) is fut:
            del self.answers[order_id]

    def answered(self, cur: Order, r: VenueOrder) -> Order:
        """The order as the venue's first answer makes it, for the caller (the stored order follows, by the same
        rules); the stored order when it has the answer already."""
        if cur.venue_status is not None or cur.status is not S.SUBMITTED:
            return cur
        try:
            return _applied(cur, r, False)
        except IllegalTransition:
            return cur

    def mark_fresh(self, order_id: str) -> None:
        """The order may be sent without a lookup first (never sent, or certainly not taken): live venues only."""
        if not self.venue.authoritative_lookup:
            self.fresh.add(order_id)

    def in_flight(self, order_id: str) -> bool:
        """Is a create or a cancel of the order on its way to the venue?"""
        return order_id in self.sending or order_id in self.cancelling

    # -- sending ---------------------------------------------------------------------------------------
    async def send(
        self, order_id: str, venue_type: str, price: Decimal | None, stop_price: Decimal | None = None
    ) -> None:
        orders = self.store.orders
        if order_id in self.sending:
            return  # one create at a time per order
        if not self.started:
            raise NotTaken(f"venue {self.name} did not take {order_id}: it has not started (it did not answer)")
        if not self.venue.authoritative_lookup and order_id not in self.fresh:
            # sent before (or by a run before this one): the venue may have it; the reconcile asks first
            self.log.info("order {} may be at {} already: looked up, not sent again", order_id, self.venue.name)
            return
        self.sending.add(order_id)  # before any await: a second send of this order stops above
        try:
            if orders[order_id].reduce_only:  # cut to the position under the lock (others may be sending)
                async with self.store.lock:
                    if not await self.emulator.fit_to_position(orders[order_id]):
                        return  # nothing left to reduce: canceled here, never sent
            o = orders[order_id]  # (the hot path takes no lock)
            request = VenueOrderRequest(
                o.client_order_id, o.pair, o.side, venue_type, o.quantity, price,  # type: ignore[arg-type]
                "GTC" if o.time_in_force == "GTD" else o.time_in_force, o.post_only, o.reduce_only, stop_price,
            )  # fmt: skip
            self.bus.check_fence()  # a deposed instance sends nothing (LeaseLost: the order stays where it is)
            if not self.venue.authoritative_lookup:  # (what only a live venue needs stays off the paper path)
                self.fresh.discard(order_id)
                self.sent_at[order_id] = now_ms()
            try:
                result = await self.venue.create_order(request)
                if (fut := self.answers.pop(order_id, None)) is not None and not fut.done():
                    fut.set_result(result)  # the caller hears it now; the answer is stored below
            except LeaseLost:
                # the fence refused it on its way (in the venue's rate limiter, before a re-send after a back-off):
                # not sent by this call, no outcome to record, no venue down. It stays in flight as it is, for the
                # holder of the lease (or this instance, should its lease be renewed) to send or look up
                self.mark_fresh(order_id)
                raise
            except VenueUnavailable as e:  # not taken: it may go again (the reconcile sends it)
                self.mark_fresh(order_id)
                await self._venue_answers(False, self.venue.describe(e))
                raise NotTaken(f"venue {self.venue.name} did not take {order_id}: {self.venue.describe(e)}") from e
            except Exception as e:  # the outcome is unknown: in flight until the venue says
                await self._venue_answers(False, self.venue.describe(e))
                why = self.venue.describe(e)
                raise Transient(f"venue {self.venue.name}: the outcome of {order_id} is unknown: {why}") from e
        finally:
            self.sending.discard(order_id)
        await self._venue_answers(True)
        await self.on_venue_result(order_id, result, result.trades)

    async def send_triggered(self, order_id: str, venue_type: str, price: Decimal | None) -> None:
        """``send`` in the background of an order that just triggered here (its first send: it was held here
        until now); a venue that does not answer is left to the reconcile."""
        self.mark_fresh(order_id)
        try:
            await self.send(order_id, venue_type, price)
        except NotTaken as e:
            if self.reroute is None or not await self.reroute(order_id, str(e)):
                self.log.warning("{}; the reconcile will try again", e)
        except Transient as e:
            self.log.warning("{}; the reconcile will try again", e)

    async def cancel_unsent(self, order_id: str) -> None:
        """An order canceled before we heard from the venue: ask it before calling it canceled."""
        if order_id in self.sending:
            return
        o = self.store.orders[order_id]
        found = await self.venue.fetch_order(o.client_order_id, o.pair)
        if found is not None:
            await self.on_venue_result(order_id, found, found.trades)  # then the pending cancel goes out
            return
        if not self.venue.authoritative_lookup and order_id not in self.fresh:
            return  # it may still show up at the venue: the reconcile waits VENUE_UNKNOWN_GRACE_MS for it
        ts = now_ms()
        async with self.store.lock:
            new = await self.store.update_locked(
                order_id, lambda cur: transition(cur, S.CANCELED, ts, cur.reason)
                if cur.status is S.PENDING_CANCEL and cur.venue_status is None else cur,
            )  # fmt: skip
            if new is not None:
                await self.emulator.after_change(new)

    async def _venue_answers(self, up: bool, why: str = "") -> None:
        """A critical VENUE_DOWN alert when the venue stops answering, VENUE_UP when it is back: once per change."""
        was, self.venue_up = self.venue_up, up
        if not up and was is not False:
            await self.alert("critical", "VENUE_DOWN", f"venue {self.venue.name} unavailable: {why}")
        elif up and was is False:
            await self.alert("warning", "VENUE_UP", f"venue {self.venue.name} answers again")
            self.spawn(self.reconcile(min_age_ms=0), "reconcile")  # back after a break: what happened meanwhile

    # -- what the venue says ---------------------------------------------------------------------------
    async def _on_venue_update(self, r: VenueOrder, new_trades: list[VenueTrade]) -> None:
        if r.pair and not self.store.owns(r.pair):  # another partition's pair: its own session minds it
            return
        oid = self.store.by_client.get(r.client_order_id) or await self.store.order_of_client(r.client_order_id)
        if oid is not None and (o := await self.store.recall(oid)) is not None:
            if not self.mine(o):
                await self._ghost(o, r, new_trades)
                return
            await self.on_venue_result(oid, r, new_trades)
            return
        if self.settings.EXTERNAL_ORDERS == "ignore" or self.venue.authoritative_lookup:
            if (r.pair, r.venue_order_id) not in self.ignored:
                self.ignored[(r.pair, r.venue_order_id)] = None
                while len(self.ignored) > MAX_REJECT_CODES:
                    self.ignored.popitem(last=False)
                self.log.warning(
                    "order {} ({}) at {} was not placed by this service: ignored (EXTERNAL_ORDERS=ignore)",
                    r.venue_order_id, r.client_order_id, self.venue.name,
                )  # fmt: skip
            return
        oid = await self._adopt(r)
        if oid is not None:
            await self.on_venue_result(oid, r, r.trades)  # all its trades: those seen before are dropped by id

    async def _ghost(self, o: Order, r: VenueOrder, trades: list[VenueTrade]) -> None:
        """Our order shows up here although it went to another venue (this one did not know it when it was looked
        up, VENUE_UNKNOWN_GRACE_MS after the send, and it was routed on): canceled here at once, its trades here
        reported (they are real: booked on this venue, as fills of ``<order id>@<venue>`` so they never count
        towards the order's fills at its own venue), and a critical alert - it was live on two venues."""
        for t in trades:
            report = ExecutionReport(
                kind="trade", order_id=f"{o.order_id}@{self.name}", client_order_id=o.client_order_id, pair=o.pair,
                side=o.side,
                order_quantity=o.quantity, venue=self.name, ts=t.ts, trade_id=t.trade_id, quantity=t.quantity,
                price=t.price, fee=t.fee, fee_currency=t.fee_currency, liquidity=t.liquidity,
            )  # fmt: skip
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair, partition_for(o.pair, self.settings.PARTITIONS)),
                report,
                msg_id=fill_id(self.name, o.pair, t.trade_id),
            )
        if (r.pair, r.venue_order_id) in self.ignored:
            return  # seen and handled before
        self.ignored[(r.pair, r.venue_order_id)] = None
        while len(self.ignored) > MAX_REJECT_CODES:
            self.ignored.popitem(last=False)
        what = f"order {o.order_id} ({o.client_order_id}) went to {o.venue}, but {self.name} has it too ({r.status}, "
        what += f"filled {r.filled})"
        self.log.error("{}: canceled at {}", what, self.name)
        await self.alert("critical", "ORDER_ON_TWO_VENUES", f"{what}: canceled at {self.name}; check both venues")
        if r.status == "open":
            try:
                self.bus.check_fence()
                await self.venue.cancel_order(o.client_order_id, o.pair, "on another venue already")
            except LeaseLost as e:
                self.ignored.pop(r.venue_order_id, None)  # the holder of the lease cancels it when it sees it
                self.log.warning("cancel of {} at {} not sent: {}", o.order_id, self.name, e)
            except Exception as e:
                self.ignored.pop(r.venue_order_id, None)  # the next sight of it tries again
                self.log.error("cancel of {} at {} failed: {}", o.order_id, self.name, self.venue.describe(e))

    async def _adopt(self, r: VenueOrder) -> str | None:
        """An order placed at the venue outside this service (its website, another program): kept as an order
        of ours with ``source: "external"``, so its fills are booked and it is listed, cancelable, reconciled.
        Its id is reserved under its client order id, so it is adopted once however often it is seen."""
        if r.side is None or r.pair not in self.rules:
            self.log.warning("external order {} at {}: no side or unknown pair: not adopted", r.venue_order_id, r.pair)
            return None
        coid = r.client_order_id or f"ext-{r.venue_order_id}"
        kind, native = _ADOPTED_TYPES.get(r.type or "", ("limit" if r.price is not None else "market", False))
        ts = now_ms()
        async with self.store.lock:
            ids, existed = await self.store.reserve_ids(coid, 1)
            if existed and await self.store.recall(ids[0]) is not None:
                return ids[0]
            order = Order(
                order_id=ids[0], client_order_id=coid, pair=r.pair, side=r.side, type=kind,  # type: ignore[arg-type]
                quantity=r.quantity if r.quantity is not None else r.filled,
                price=r.price if kind not in ("market", "stop_loss") else None,
                stop_price=r.stop_price, status=S.SUBMITTED, venue=self.venue.name, paper_trade=False,
                native_trigger=native, source="external", created_at=r.created_at or ts, updated_at=ts,
            )  # fmt: skip
            await self.store.emit(order, "adopted")
        self.log.warning(
            "order {} ({} {} {} {}) placed at {} outside this service: adopted as {}",
            r.venue_order_id, r.side, order.quantity, r.pair, r.type, self.venue.name, order.order_id,
        )  # fmt: skip
        await self.alert(
            "warning", "EXTERNAL_ORDER",
            f"order {r.venue_order_id} ({r.side} {order.quantity} {r.pair}) was placed at {self.venue.name} outside "
            f"this service: adopted as {order.order_id} (EXTERNAL_ORDERS=adopt)",
        )  # fmt: skip
        return order.order_id

    async def on_venue_result(
        self, order_id: str, r: VenueOrder, trades: list[VenueTrade], *, edit_answer: bool = False
    ) -> None:
        """Publish the venue's trades, then record its answer on the order."""
        store = self.store
        o = store.orders[order_id]
        quantity = r.quantity if r.quantity is not None else o.quantity  # the venue's, after a modify too
        if trades and quantity > o.quantity:
            # a modify that enlarged the order and traded at once: the order must have its new size before
            # those trades come back as fills, or they would read as an overfill
            async with store.lock:
                grown = await store.update_locked(
                    order_id,
                    lambda cur: msgspec.structs.replace(cur, quantity=quantity, updated_at=now_ms())
                    if quantity > cur.quantity else cur,
                    "quantity_changed",
                )  # fmt: skip
                if grown is not None:
                    await self.emulator.after_change(grown)
        for t in trades:
            report = ExecutionReport(
                kind="trade", order_id=o.order_id, client_order_id=o.client_order_id, pair=o.pair,
                side=o.side, order_quantity=quantity, venue=self.venue.name, ts=t.ts,
                trade_id=t.trade_id, quantity=t.quantity, price=t.price, fee=t.fee,
                fee_currency=t.fee_currency, liquidity=t.liquidity,
            )  # fmt: skip
            await self.bus.js_publish(
                self.subjects.exec_reports(o.pair, partition_for(o.pair, self.settings.PARTITIONS)),
                report,
                msg_id=fill_id(self.venue.name, o.pair, t.trade_id),
            )
        async with store.lock:
            new = await store.update_locked(order_id, lambda cur: self._with_venue_answer(cur, r, edit_answer))
            if new is not None:
                await self.emulator.after_change(new)
                if new.reduce_only:  # an exit's answer moves what the others may take
                    await self.emulator.refit(slot(new.venue, new.pair))
        o = store.orders[order_id]
        if o.status is S.PENDING_CANCEL and o.venue_status == "open" and order_id not in self.cancelling:
            self.spawn(self.cancel_at_venue(order_id, o.reason or "canceled"), "cancel")  # asked while in flight
        elif o.status is S.CANCELED and o.venue_status == "open" and order_id not in self.cancelling:
            # canceled here while its send had no answer, and the venue has it open after all: canceled there
            self.spawn(self._cancel_orphan(order_id), "cancel")

    def _with_venue_answer(self, cur: Order, r: VenueOrder, edit_answer: bool) -> Order:
        """The order after the venue's answer (domain.orders.with_venue_answer), said in the log."""
        new = _applied(cur, r, edit_answer)
        if new is not cur and revivable(cur):
            self.log.warning("order {} rejected as unknown is at {} after all: working again", cur.order_id,
                             self.venue.name)  # fmt: skip
        if new is not cur and new.status is S.REJECTED and cur.status is not S.REJECTED:
            self.log.warning("order {} rejected by {}: {}", cur.order_id, self.venue.name, r.reason)
            if r.code:
                self.reject_codes[cur.order_id] = r.code
                while len(self.reject_codes) > MAX_REJECT_CODES:
                    self.reject_codes.popitem(last=False)
        return new

    # -- cancel and edit at the venue ------------------------------------------------------------------
    async def edit_at_venue(self, o: Order, quantity: Decimal | None, price: Decimal | None) -> str | None:
        """Change an order the venue holds (through PENDING_UPDATE). The venue's refusal, or None."""
        ts = now_ms()
        pending = await self.store.update(
            o.order_id, lambda cur: to_pending(cur, S.PENDING_UPDATE, ts) if cur.status is o.status else cur
        )
        if pending is None:  # it changed meanwhile (filled, canceled)
            return "the order changed meanwhile; look at it and try again"
        self.bus.check_fence()  # after the store's write (an await): the lease held now, right before the venue call
        try:
            result = await self.venue.edit_order(o.client_order_id, o.pair, quantity, price)
        except VenueRefused as e:
            ts = now_ms()
            await self.store.update(o.order_id, lambda cur: back_from_pending(cur, ts))
            return str(e)
        await self.on_venue_result(o.order_id, result, result.trades, edit_answer=True)
        return None

    async def _lookup(self, o: Order) -> VenueOrder | None:
        """The order as the venue has it now, or None (unknown there, or the venue did not answer)."""
        try:
            return await self.venue.fetch_order(o.client_order_id, o.pair)
        except Exception as e:
            self.log.warning("lookup of {} at {} failed: {}", o.order_id, self.venue.name, self.venue.describe(e))
            return None

    async def _cancel_orphan(self, order_id: str) -> None:
        o = self.store.orders[order_id]
        self.bus.check_fence()
        self.cancelling.add(order_id)
        try:
            result = await self.venue.cancel_order(o.client_order_id, o.pair, o.reason or "canceled")
        except LeaseLost as e:  # not sent: the holder of the lease cancels it when it sees it open there
            self.log.warning("cancel of {} at {} not sent: {}", order_id, self.venue.name, e)
            return
        except Exception as e:  # refused (filled meanwhile) or not answered: the reconcile looks again
            self.log.warning(
                "order {} open at {} after its cancel: {}", order_id, self.venue.name, self.venue.describe(e)
            )
            return
        finally:
            self.cancelling.discard(order_id)
        await self.on_venue_result(order_id, result, result.trades)

    async def cancel_at_venue(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        self.cancelling.add(order_id)
        try:
            return await self._cancel_at_venue_once(order_id, reason)
        finally:
            self.cancelling.discard(order_id)

    async def _cancel_at_venue_once(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        orders = self.store.orders
        o = orders[order_id]
        if o.status in TERMINAL_STATUSES:
            return o, f"order {order_id} is already {o.status.value}"
        if o.status is not S.PENDING_CANCEL:
            ts = now_ms()
            await self.store.update(order_id, lambda cur: to_pending(cur, S.PENDING_CANCEL, ts, reason))
        self.bus.check_fence()
        try:
            result = await self.venue.cancel_order(o.client_order_id, o.pair, reason)
        except LeaseLost:
            raise  # not sent (the fence, on its way): PENDING_CANCEL stays, for the holder of the lease to finish
        except VenueRefused as e:
            # the venue no longer has it open. Canceled there already (this cancel acted, its answer was lost and
            # the request went again, say): the cancel is done. Else (filled meanwhile, say): back to where it
            # was; fills finish it
            found = await self._lookup(o)
            if found is not None and found.status in ("canceled", "expired"):
                await self.on_venue_result(order_id, found, found.trades)
                return orders[order_id], None
            ts = now_ms()
            await self.store.update(order_id, lambda cur: back_from_pending(cur, ts))
            return orders[order_id], str(e)
        except Exception as e:
            self.log.warning(
                "cancel of {} at {} failed ({}); the reconcile will try again",
                order_id,
                self.venue.name,
                self.venue.describe(e),
            )
            return orders[order_id], None
        await self.on_venue_result(order_id, result, result.trades)  # trades seen with the answer come too
        return orders[order_id], None

    # -- reconcile -------------------------------------------------------------------------------------
    async def reconcile(self, min_age_ms: int | None = None) -> None:
        if self.reconciling:  # one pass at a time: the one running goes round again, with every order
            self.again = True
            return
        self.reconciling = True
        try:
            await self._reconcile_pass(min_age_ms)
            while self.again:  # the venue came back during that pass
                self.again = False
                await self._reconcile_pass(0)
        finally:
            self.reconciling = False

    async def _reconcile_pass(self, min_age_ms: int | None) -> None:
        """Ask the venue about every order it may hold whose state we cannot be sure of: unanswered, open
        there (a lost push), pending a command, or missing fills. One failure never stops the pass."""
        if not self.started:  # could not start: tried again (back-off); up once it starts
            if not await self._start_again():
                return
            await self._venue_answers(True)
        elif self.venue_up is False:  # down since a call failed: asked (cheaply) whether it is back, even with no order
            try:
                await self.venue.fetch_balance()
            except Exception as e:
                self.log.info("{} still unavailable: {}", self.name, self.venue.describe(e))
                return  # its orders cannot be looked up now; the next pass asks again
            await self._venue_answers(True)
        now = now_ms()
        if min_age_ms is None:  # orders younger than half the interval: their answer may be on its way
            min_age_ms = self.settings.RECONCILE_INTERVAL_MS // 2
        for oid in list(self.store.live):
            o = self.store.orders.get(oid)  # ended and gone from memory while an earlier one was looked up: done
            if o is None or oid not in self.store.live:
                continue
            if not self.mine(o) or now - o.updated_at < min_age_ms or held_here(o) or self.in_flight(oid):
                continue
            try:
                await self._reconcile_one(o)
            except LeaseLost:
                raise  # this instance may not act now: the pass ends (the venue is not down)
            except Exception as e:
                self.log.warning("reconcile of {} failed ({}); next pass", oid, self.venue.describe(e))
                await self._venue_answers(False, self.venue.describe(e))
            else:
                await self._venue_answers(True)
        async with self.store.lock:  # a backstop: exits the position no longer covers are cut
            await self.emulator.refit_all()
        live = self.store.live  # what this run remembers of orders that ended goes
        self.fresh.intersection_update(live)
        for oid in [oid for oid in self.sent_at if oid not in live]:
            del self.sent_at[oid]
        await self.publish_balances()

    # -- balances (live venues) ------------------------------------------------------------------------
    def _quiet(self) -> bool:
        """No create on its way, no order unanswered, every trade the venue reported for our orders back as a
        fill: our fills account for everything the venue did with our orders."""
        if any(self.mine(self.store.orders[oid]) for oid in self.sending if oid in self.store.orders):
            return False
        for oid in self.store.live:
            o = self.store.orders[oid]
            if held_here(o) or not self.mine(o):
                continue
            if o.venue_status is None or (o.venue_filled is not None and o.filled_quantity < o.venue_filled):
                return False
        return True

    async def publish_balances(self) -> None:
        """A live venue's balances for the ledger to reconcile (tbx.events.balances.<venue>), read only when
        quiet, and dropped when an order of ours traded while they were read (a fill in flight is no mismatch).
        The figures cover the currencies of PAIRS; the first reading, before any fill, is the opening one."""
        if self.venue.authoritative_lookup or not self.started or not self._quiet():
            return
        partitioned = self.settings.PARTITIONS > 1
        if partitioned and self.settings.PARTITION != 0:
            return  # partitioned: partition 0 reads the venue's balances, once every partition is quiet there
        # partitioned: no partition alone knows that the venue is quiet for every partition's orders, so partition
        # 0 asks each other partition before and after the reading; any not quiet, moved or traded: no reading
        before = await self._partitions_quiet(None) if partitioned else []
        if before is None:
            return
        seq, changes = self.fills_seq, self.store.changes_of.get(self.name, 0)  # (this venue's: others' never veto)
        try:
            raw = await self.venue.fetch_balance()
            open_now = await self.venue.fetch_open_orders()
        except Exception as e:
            self.log.warning("balances of {} not read: {}", self.venue.name, self.venue.describe(e))
            return
        # an order of ours that traded while the balances were read: its fill is not in yet. It still rests
        # there with more filled than we know, or it left the open orders (filled or canceled there)
        there = {r.client_order_id: r.filled for r in open_now}
        if self.traded_meanwhile(there):
            return
        if not self._quiet() or self.fills_seq != seq or self.store.changes_of.get(self.name, 0) != changes:
            return  # an order came and went (or changed) while the balances were read: they may not show it
        if partitioned:
            after = await self._partitions_quiet(there)
            if after is None or [(a.fills_seq, a.changes) for a in after] != [(b.fills_seq, b.changes) for b in before]:
                return  # another partition's order traded, came or changed while the balances were read
            # every partition's trades have fills up to its own last seen FILLS sequence: the reading vouches for
            # the furthest of them (a fill up to there was published before the reading began)
            seq = max([seq, *(b.fills_seq for b in before)])
        wanted = {c for p in self.pairs for c in pair_currencies(p)}
        figures = {c: VenueBalanceFigures(free=b.free, total=b.total) for c, b in raw.items() if c in wanted}
        opening = seq == 0 and not self.balances_published  # the first reading, before any fill: the opening books
        reading = VenueBalances(venue=self.venue.name, balances=figures, ts=now_ms(), fills_seq=seq, opening=opening)
        await self.bus.js_publish(self.subjects.balances(self.venue.name), reading)
        self.balances_published += 1

    def traded_meanwhile(self, there: dict[str, Decimal]) -> bool:
        """Did an order of ours open at the venue trade while its open orders (``there``: client order id -> filled,
        as read with the balances) were read: gone from them, or more filled than we know."""
        rule = getattr(self.venue, "rule", None)  # (a ccxt venue: ours as the venue knows it, when mapped)
        for oid in self.store.live:
            o = self.store.orders[oid]
            if not self.mine(o) or o.venue_status != "open":
                continue
            cid = o.client_order_id
            filled = there.get(cid, there.get(venue_client_id(cid, rule))) if rule is not None else there.get(cid)
            if filled != (o.venue_filled or ZERO):
                return True
        return False

    def quiet_state(self, q: BalanceQuiet) -> BalanceQuietReply:
        """Partitioned: this partition's part of a balance reading partition 0 takes (``BalanceQuiet``)."""
        traded = q.open_orders is not None and self.traded_meanwhile(q.open_orders)
        return BalanceQuietReply(
            quiet=self.started and self._quiet(), fills_seq=self.fills_seq,
            changes=self.store.changes_of.get(self.name, 0), traded=traded,
        )  # fmt: skip

    async def _partitions_quiet(self, there: dict[str, Decimal] | None) -> list[BalanceQuietReply] | None:
        """Partition 0: every other partition's state at this venue; None when one is not quiet, traded, or does
        not answer (no reading then: one is taken again at the next reconcile)."""
        s = self.subjects
        q = BalanceQuiet(venue=self.name, open_orders=there)
        answers = await asyncio.gather(
            *(
                self.bus.request(
                    s.addressed(s.query("balance_quiet"), k), q, BalanceQuietReply, timeout=QUIET_TIMEOUT_S
                )
                for k in range(1, self.settings.PARTITIONS)
            ),
            return_exceptions=True,
        )
        out: list[BalanceQuietReply] = []
        for k, a in enumerate(answers, start=1):
            if isinstance(a, RequestFailed):
                if self.unread_since is None:  # (once, not at every reconcile while it lasts)
                    self.unread_since = now_ms()
                    why = f"the order-router partition {k} did not answer ({a.reason})"
                    self.log.warning("balances of {} not read until every partition answers: {}", self.name, why)
                return None
            if isinstance(a, BaseException):
                raise a
            if not a.quiet or a.traded:
                return None
            out.append(a)
        if self.unread_since is not None:
            self.log.info("balances of {}: every partition answers again", self.name)
            self.unread_since = None
        return out

    async def _reconcile_one(self, o: Order) -> None:
        unanswered = o.venue_status is None and o.status in (S.SUBMITTED, S.TRIGGERED, S.PENDING_CANCEL)
        found = await self.venue.fetch_order(o.client_order_id, o.pair)
        if found is not None:
            if (found.status, found.filled) != (o.venue_status, o.venue_filled) or o.status in (
                S.PENDING_UPDATE, S.SUBMITTED, S.TRIGGERED,
            ) or (o.venue_filled is not None and o.filled_quantity < o.venue_filled):  # fmt: skip
                self.log.info("reconciled {} with the venue: {}, filled {}", o.order_id, found.status, found.filled)
                await self.on_venue_result(o.order_id, found, found.trades, edit_answer=True)
            cur = self.store.orders[o.order_id]
            if cur.status is S.PENDING_CANCEL and found.status == "open" and o.order_id not in self.cancelling:
                await self.cancel_at_venue(o.order_id, cur.reason or "canceled")
        elif unanswered:
            if not self.venue.authoritative_lookup and o.order_id not in self.fresh:
                await self._unknown_to_venue(o)
                return
            self.log.info("order {} never reached the venue: routing it now", o.order_id)
            if o.status is S.TRIGGERED:
                kind, price = venue_leg(o)
                await self.send(o.order_id, kind, price)
            else:
                await self.route(o.order_id)  # a pending cancel of an order never sent: canceled here

    async def _unknown_to_venue(self, o: Order) -> None:
        """A live venue does not know an order whose send had no answer: it may still show up (the venue lags);
        once VENUE_UNKNOWN_GRACE_MS passed since it was sent, it is rejected with that reason - never sent twice."""
        grace = self.settings.VENUE_UNKNOWN_GRACE_MS
        if now_ms() - max(o.updated_at, self.sent_at.get(o.order_id, 0), self.started_at) < grace:
            self.log.info("order {} not known to {} yet: looked up again next pass", o.order_id, self.venue.name)
            return
        if o.fallback and o.status in (S.SUBMITTED, S.TRIGGERED) and self.reroute is not None:
            lacks = f"{self.name} has no order {o.client_order_id} {grace / 1000:g} s after it was sent"
            if await self.reroute(o.order_id, lacks):
                return  # routed on (should it show up here after all: canceled here, see _ghost)
        why = (
            f"{UNKNOWN_TO_VENUE} {self.venue.name} has no order with client order id {o.client_order_id} "
            f"{grace / 1000:g} s after it was sent (the answer to the send was lost): rejected, never sent twice"
        )
        ts = now_ms()

        def settle(cur: Order) -> Order:
            if cur.venue_status is not None:
                return cur  # the venue answered meanwhile
            if cur.status is S.PENDING_CANCEL:
                return transition(cur, S.CANCELED, ts, cur.reason)  # canceled before the venue had it
            return transition(cur, S.REJECTED, ts, why) if cur.status in (S.SUBMITTED, S.TRIGGERED) else cur

        async with self.store.lock:
            new = await self.store.update_locked(o.order_id, settle)
            if new is not None:
                self.log.warning("order {} rejected: {}", o.order_id, why)
                await self.emulator.after_change(new)


def _applied(cur: Order, r: VenueOrder, edit_answer: bool) -> Order:
    """``cur`` after the venue's answer ``r`` (domain.orders.with_venue_answer)."""
    return with_venue_answer(
        cur, r.status, r.filled, r.venue_order_id, r.quantity, r.price, r.reason, now_ms(), edit_answer
    )
