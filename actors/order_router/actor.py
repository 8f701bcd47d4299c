"""order-router: takes approved orders, answers commands and queries, and wires its parts together.

Path: approved order (durable hop from risk-gate) -> order created and persisted as an event ->
reply to the caller -> venue -> execution reports (durable hop to fill-tracker). Canonical fills come
back on the FILLS stream and move the order to PARTIALLY_FILLED / FILLED. Cancel, modify and cancel-all
are request/reply commands on ``tbx.orders.cancel`` / ``tbx.orders.modify``.

Its parts, each with one job (the durability rules each keeps are in its docstring):
- ``store.OrderStore``: the orders and their events over JetStream, the only writer of ORDERS; it owns
  the lock that serialises every change;
- ``emulator.Emulator``: what the venue cannot hold (stops, take-profits, brackets / OCO, reduce-only
  exits kept true as the position moves, expiry and timeouts);
- ``session.VenueSession``: what is said to one venue and heard from it (send, answers, cancel and edit
  there, reconcile, VENUE_DOWN / VENUE_UP); one per venue (EXCHANGES);
- ``routing.Router``: which venue an order goes to (named by the order, or ROUTING's policy over the venues'
  books) and where it goes next when its venue certainly did not take it (fallback).

One order-router per bus prefix: its state is not shared between instances (see README).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from hashlib import sha256

import msgspec

from actors.base import Actor
from actors.books import BookCache
from actors.order_router.emulator import CLOCK_EVERY_S, Emulator
from actors.order_router.exec_algos import ExecAlgos
from actors.order_router.keys import RouterKeys
from actors.order_router.live_check import LiveCheck
from actors.order_router.routing import Router
from actors.order_router.session import NotTaken, VenueSession
from actors.order_router.store import OrderStore
from actors.order_router.trading_state import TradingState
from actors.venues.base import KeysUnavailable, Venue, VenueOrder, VenueStartError
from actors.venues.factory import make_venues
from bus.client import Bus, Envelope
from bus.errors import Transient
from config.settings import Settings, parse_trading_hours
from config.venues import venue_names
from domain.algo_orders import trading_refusal
from domain.algos import AlgoParamError
from domain.orders import (
    WORKING,
    apply_fill,
    at_venue,
    held_here,
    revivable,
    revive,
    same_order,
    to_pending,
    transition,
)
from domain.partitions import durable, suffix
from domain.quality_book import arrival
from domain.recent import OrderTable
from domain.risk import is_multiple
from domain.triggers import TRIGGERED_TYPES, native_kind, venue_leg, wrong_side
from schemas.messages import (
    ALGO_TYPES,
    TERMINAL_STATUSES,
    ApprovedOrder,
    BalanceQuiet,
    BalanceQuietReply,
    CancelOrder,
    CommandReply,
    Empty,
    Fill,
    FillRef,
    MarketRules,
    MarketsPage,
    ModifyOrder,
    Order,
    OrderEvent,
    OrderEventsPage,
    OrderEventsQuery,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    Trade,
    VenueBookQuery,
    VenueBookView,
    VenueChecks,
    VenueState,
    now_ms,
)

S = OrderStatus
HALT_GRACE_S = 5.0  # trading HALTED: the algorithms send nothing at once, and are stopped after this (an emergency
# stop's cancel of every working order comes first: its answer names the parents it canceled)
ZERO = Decimal(0)
MAX_PAGE = 500
# approvals handled side by side at most (lanes: one client order id's one at a time): more would crowd the store lock,
# where each fill waits its turn behind every approval queued before it (fills of one pair go one at a time)
APPROVALS_SIDE_BY_SIDE = 8
ACK_WAIT_S = 3.0  # a live order's caller waits this long for the venue's first answer
RISK_CHECK_S = 2.0  # a fallback asks the risk gate whether the next venue can take the order, this long at most


class OrderRouter(Actor):
    name = "order-router"
    partitioned = True

    def __init__(
        self, settings: Settings, bus: Bus, venue: Venue | None = None, venues: list[Venue] | None = None
    ) -> None:
        super().__init__(settings, bus)
        self.books = BookCache(bus, venue_names(settings))
        self.store = OrderStore(bus, self.log)
        self.approving = asyncio.Semaphore(APPROVALS_SIDE_BY_SIDE)
        self.store.owns = self.owns  # partitioned: only this partition's pairs' orders
        chosen = venues or ([venue] if venue is not None else make_venues(settings, bus, self.books))
        self.sessions: dict[str, VenueSession] = {
            v.name: VenueSession(v, self.store, bus, self.log, self.spawn, self.alert, settings) for v in chosen
        }  # in priority order
        self.emulator = Emulator(settings, self.store, self.books, self.log, self.spawn)
        self.router = Router(settings, self.sessions, self.books, self.emulator.position_at)
        self.emulator.connect(self.session_of, self._cancel, self.router.book_of)  # stops fire on their venue's book
        self.emulator.only = next(iter(self.sessions)) if len(self.sessions) == 1 else None
        for session in self.sessions.values():
            session.connect(self.emulator, self._route, self._reroute)
        self.algos = ExecAlgos(self.store, self.log, self.spawn)  # the execution algorithms' parents and children
        self.algos.connect(self._rules_of, self._route, self._cancel, self._mark_fresh)
        self.algos.alert = self.alert
        self.algos.look_up = self._look_up
        self.algos.unknown_grace_ms = settings.VENUE_UNKNOWN_GRACE_MS
        self.algos.trades_of = self._trades_of
        self.algos.reconnects = lambda: int(self.bus.nc.stats["reconnects"])  # (a gap in the public trades)

        def stored(o: Order) -> None:
            self.emulator.track(o)
            self.algos.on_stored(o)

        self.store.on_stored = stored
        self.keys = RouterKeys(settings, bus, self.sessions, self.log)  # each live venue's keys: store, else env
        self.keys.follower = not self.venue_wide  # partitioned: partition 0 checks and promotes, the others follow
        self.live_check = LiveCheck(settings, bus)  # the transition: no live order approved before a revert
        self.trading = TradingState(bus, self._on_trading_state)  # the algorithms' children never pass the gate
        hours = parse_trading_hours(settings.TRADING_HOURS)
        self.algos.refusal = lambda reduces=False: trading_refusal(
            self.trading.state, hours, settings.TRADING_TIMEZONE, now_ms(), reduces
        )
        self.algos.halted = lambda: self.trading.state == "HALTED"
        self.algos.touch = self._touch

    def _on_trading_state(self, state: str) -> None:
        self.algos.trading_changed(state, trading_refusal(state, None, "UTC", 0), HALT_GRACE_S)

    def _touch(self, o: Order) -> Decimal | None:
        """The price a market order of ``o``'s side meets now at its venue: the best ask of a buy, bid of a sell."""
        book = self.router.book_of(o.venue, o.pair)
        levels = (book.asks if o.side == "buy" else book.bids) if book is not None else None
        return levels[0][0] if levels else None

    def _rules_of(self, o: Order) -> MarketRules | None:
        session = self.sessions.get(o.venue)
        return session.rules.get(o.pair) if session is not None else None

    def _trades_of(self, venue: str) -> str | None:
        """Whose public trades are a venue's traded volume (VWAP): a live venue's own (its md-feed names them), the
        paper venue's those of the books it trades on (PAPER_BOOKS; None: the unnamed ones)."""
        session = self.sessions.get(venue)
        return getattr(session.venue, "source", venue) if session is not None else venue

    def _mark_fresh(self, o: Order) -> None:
        if (session := self.sessions.get(o.venue)) is not None:
            session.mark_fresh(o.order_id)

    async def _look_up(self, o: Order) -> bool:
        """An order looked up at its venue by its client order id: does the venue know it? What it says is applied
        (an order rejected as unknown to the venue works again)."""
        session = self.session_of(o)
        found = await session.venue.fetch_order(o.client_order_id, o.pair)
        if found is None:
            return False
        await session.on_venue_result(o.order_id, found, found.trades)
        return True

    def session_of(self, o: Order) -> VenueSession:
        """The session of the order's venue. An order of a venue no longer configured has none (KeyError)."""
        return self.sessions[o.venue]

    # what tests and tools read of the router (each owned by its part)
    @property
    def session(self) -> VenueSession:
        """The first venue's session (the only one of a one-venue deployment)."""
        return next(iter(self.sessions.values()))

    @property
    def venue(self) -> Venue:
        return self.session.venue

    @property
    def orders(self) -> dict[str, Order]:
        return self.store.orders

    @property
    def by_client(self) -> dict[str, str]:
        return self.store.by_client

    @property
    def events(self) -> dict[str, list[OrderEvent]]:
        return self.store.events

    @property
    def live(self) -> set[str]:
        return self.store.live

    @property
    def first_seq(self) -> OrderTable:
        return self.store.first_seq

    @property
    def last_seq(self) -> OrderTable:
        return self.store.last_seq

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        await self.store.load()
        await self.live_check.open()
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._fold_fill, follow=False)
        async with self.store.lock:  # a crash between an entry's reroute and its legs': the legs follow now
            for oid in list(self.store.live):
                if (o := self.store.orders[oid]).linked_orders and o.role == "entry":
                    await self._legs_follow(o)
        strays = {o.venue for o in self.store.orders.values() if o.order_id in self.store.live} - set(self.sessions)
        for name in sorted(strays):  # left as they are: never sent to another venue than their own
            self.log.error("live orders of venue {} which is not configured (EXCHANGES): left alone", name)
        # the venues only after the rebuild: what they push is about orders we know
        await self.keys.open()
        await self.keys.before_start()
        await self._start_venues()
        await self._each(lambda session: session.reconcile(min_age_ms=0))
        await self.emulator.resume()
        self.algos.partitioned = self.partition is not None
        await self.trading.open()
        self.spawn(self.trading.follow(), "trading state", essential=True)
        await self.algos.resume()
        self.spawn(self.algos.run(), "algo scheduler", essential=True)
        await self.bus.subscribe(s.trades(), Trade, self._on_trade)  # VWAP: the recent traded volume of each pair
        self.algos.watch()  # (subscribed and flushed: every trade from now on comes here)
        await self._each(lambda session: session.publish_balances())
        self.books.add_hook(self.emulator.on_book)
        await self.books.start()
        # partitioned: the commands and queries about orders on this partition's own subjects (``.p<k>``; the
        # gateway asks every partition where the order's pair is not known), venue-wide ones on partition 0 only
        k, me = self.partition, self.name + suffix(self.partition)
        await self.bus.subscribe(s.addressed(s.query("orders"), k), OrdersQuery, self._on_query, queue=me)
        await self.bus.subscribe(
            s.addressed(s.query("order_events"), k), OrderEventsQuery, self._on_events_query, queue=me
        )
        # the venue rules: any partition answers (one queue group for all: each partition's venues know every
        # pair's rules), so a signal-intake or risk-gate starting while partition 0 is down still gets them
        await self.bus.subscribe(s.query("markets"), Empty, self._on_markets_query, queue=self.name)
        if self.venue_wide:
            await self.bus.subscribe(s.query("venues_test"), Empty, self._on_venues_test, queue=self.name)
            await self.keys.subscribe(queue=self.name)
        if k is not None:  # the keys each partition signs with; a follower swaps in partition 0's promotions
            await self.keys.subscribe_partition(k, queue=me)
        if k:  # partition 0's live balance readings ask every other partition whether it is quiet at the venue
            await self.bus.subscribe(
                s.addressed(s.query("balance_quiet"), k), BalanceQuiet, self._on_balance_quiet, queue=me
            )
        await self.bus.subscribe(s.addressed(s.query("venue_book"), k), VenueBookQuery, self._on_venue_book, queue=me)
        await self.bus.subscribe(s.addressed(s.orders_cancel, k), CancelOrder, self._on_cancel, queue=me)
        await self.bus.subscribe(s.addressed(s.orders_modify, k), ModifyOrder, self._on_modify, queue=me)
        await self.bus.consume(
            stream=s.s_hops, durable=durable(self.name, k), subject=s.approved_orders(partition=k), type_=ApprovedOrder,
            handler=self._on_approved, lane=_client_order_id,
        )  # fmt: skip
        # fills side by side across pairs, one pair's in FILLS order: the position each refit of the reduce-only exits
        # reads is a running sum per pair (a pair's fills out of order could show a dip that is not there, and cut an
        # exit at the venue). The FILLS sequence a fill marks seen (``_fills_seen``) only says it was published
        await self.bus.consume(
            stream=s.s_fills, durable=durable(self.name, k), subject=s.fills(), type_=Fill, handler=self._on_fill,
            lane=_fill_order,
        )  # fmt: skip
        every = self.settings.RECONCILE_INTERVAL_MS / 1000
        self.spawn(
            self.every(every, lambda: self._each(lambda session: session.reconcile()), "reconcile"),
            "reconcile",
            essential=True,
        )
        self.spawn(self.every(CLOCK_EVERY_S, self.emulator.on_clock, "expiry and timeouts"), "clock", essential=True)
        self.spawn(self.every(every, self.keys.retry_swaps, "key swaps"), "key swaps", essential=True)

    @property
    def venue_wide(self) -> bool:
        """Does this instance do the venue-wide duties (unpartitioned, or partition 0): the venue rules and venue
        checks asked for, credential checks, promotions and deletes."""
        return self.partition in (None, 0)

    async def _start_venues(self) -> None:
        """Every venue at once. One venue: it must start. Several: one that does not answer at start is down (the
        others trade; it is tried again); wrong settings (keys refused, a pair not listed, the clock) stop the
        start whatever the number of venues."""
        sessions = list(self.sessions.values())
        results = await asyncio.gather(*(session.start() for session in sessions), return_exceptions=True)
        for session, r in zip(sessions, results, strict=True):
            if r is None:
                continue
            # keys not known (the credential store cannot be read): down and tried again, even alone - never
            # started on possibly stale keys, and never a failed start of the whole router
            down = isinstance(r, KeysUnavailable) or (len(sessions) > 1 and isinstance(r, VenueStartError))
            if not (down and r.retryable):  # type: ignore[union-attr]
                raise r  # type: ignore[misc]
            await session.down_at_start(str(r))

    async def on_stop(self) -> None:
        await self.algos.close()  # no algorithm child is made once the venues stop (the next run resumes them)
        await asyncio.gather(*(session.stop() for session in self.sessions.values()), return_exceptions=True)
        await self.keys.close()

    async def _each(self, job: Callable[[VenueSession], Awaitable[None]]) -> None:
        """The job on every venue at once: one slow venue never holds up the others."""
        results = await asyncio.gather(*(job(session) for session in self.sessions.values()), return_exceptions=True)
        for session, r in zip(self.sessions.values(), results, strict=True):
            if isinstance(r, BaseException):
                self.log.warning("{}: {}", session.name, session.venue.describe(r))

    def stats(self) -> dict[str, int | float | str]:
        return {**self.store.stats(), **self.algos.stats()}

    async def _on_trade(self, t: Trade, env: Envelope) -> None:
        if self.owns(t.pair):
            self.algos.on_trade(t)

    def venue_states(self) -> list[VenueState] | None:
        return [session.venue_state() for session in self.sessions.values()]

    # -- new orders ------------------------------------------------------------------------------------
    async def _on_approved(self, a: ApprovedOrder, env: Envelope) -> None:
        async with self.approving:
            await self._approved(a)

    async def _approved(self, a: ApprovedOrder) -> None:
        req = a.request
        store = self.store
        n_legs = (req.stop_loss is not None) + (req.take_profit is not None)
        tag = req.pair if self.partition is not None else None
        reservation = None
        if store.by_client.get(req.client_order_id) is None:
            # new, or one that left memory (its ids were reserved when it was created): reserved beside the lock,
            # one KV write that other approvals need not wait for (the consumer's lanes keep one client order id's
            # approvals one after the other)
            reservation = await store.reserve(req.client_order_id, 1 + n_legs, tag)
        async with store.lock:
            known = store.by_client.get(req.client_order_id)
            ids: list[str] = []
            if known is None:
                if reservation is None:  # (left memory in between)
                    reservation = await store.reserve(req.client_order_id, 1 + n_legs, tag)
                ids, existed, reserved_pair = reservation
                if existed and await store.recall(ids[0]) is not None:
                    known = ids[0]
                elif existed and reserved_pair is not None and not self.owns(reserved_pair):
                    await self._refuse_elsewhere(a, ids[0], reserved_pair)  # never a second order, same id
                    return
            if known is None:
                ref = a.estimated_cost / req.quantity if a.estimated_cost and req.quantity else None
                choice = self.router.choose(req, a.venues)
                if choice.venue is None:  # kept, rejected: the approval's reservation ends with its order
                    order = await self._create(req, ids[:1], ref, self._venue_of_record(req, a), choice.reason,
                                               rejected=choice.reason or "no venue can take it")  # fmt: skip
                    await self._refuse_unroutable(a, order)
                    return
                if (refusal := await self.live_check.refusal(a, choice.venue)) is not None:
                    # (read under the lock: a revert's cancel of the live orders lists them under it too)
                    order = await self._create(req, ids[:1], ref, choice.venue, choice.reason, rejected=refusal)
                    await self._refuse_live(a, order)
                    return
                order = await self._create(
                    req, ids, ref, choice.venue, choice.reason, choice.fallback, reduces=a.reduces
                )
            else:
                order = store.orders[known]
                first = store.events[known][0].order if store.events.get(known) else order
                if not same_order(first, req):
                    await self._refuse_duplicate(a, order)
                    return
                await self.emulator.ensure_legs(order, req)  # a crash between the entry and its legs
        routed = order.venue_status is None and order.status in (S.SUBMITTED, S.PENDING_CANCEL)
        if not routed or not self._answer_after_venue(order):
            await self._reply(a, order)
        if routed:
            # routed beside the consumer, so one slow venue call never holds up the next order;
            # a crash here leaves it SUBMITTED and the reconcile at start routes it
            answer = self.session_of(order).await_answer(order.order_id) if self._answer_after_venue(order) else None
            route = self.spawn(self._route_logged(order.order_id), "route")
            if answer is not None:
                self.spawn(self._reply_after_venue(a, order.order_id, route, answer), "reply")

    async def _create(
        self,
        req: OrderRequest,
        ids: list[str],
        reference_price: Decimal | None,
        venue: str,
        routing: str | None = None,
        fallback: list[str] | None = None,
        rejected: str | None = None,
        reduces: bool = False,
    ) -> Order:
        """Create the order (and the legs of a bracket) under its reserved ids and persist them, for ``venue``
        (chosen by ``routing``; ``fallback``: where it goes next should that venue certainly not take it). Call
        with the lock held."""
        ts = now_ms()
        book = self.router.book_of(venue, req.pair)  # the arrival: the venue's book as the order is accepted
        mid, bid, ask = arrival(book.bids, book.asks) if book is not None else (None, None, None)
        order = Order(
            order_id=ids[0],
            client_order_id=req.client_order_id,
            pair=req.pair,
            side=req.side,
            type=req.type,
            quantity=req.quantity,
            price=req.price if req.type != "market" else None,
            algo=req.algo if req.type in ALGO_TYPES else None,
            stop_price=req.stop_price,
            time_in_force=req.time_in_force or self.settings.DEFAULT_TIME_IN_FORCE,  # type: ignore[arg-type]
            expire_at=req.expire_at,
            post_only=req.post_only,
            reduce_only=req.reduce_only,
            role="entry" if len(ids) > 1 else None,
            reference_price=reference_price,
            status=S.SUBMITTED,
            venue=venue,
            routing=routing,
            fallback=fallback or [],
            paper_trade=self.sessions[venue].venue.authoritative_lookup,  # the paper venue (its lookups decide)
            source=req.source,
            signal_id=req.signal_id,
            created_at=ts,
            updated_at=ts,
            arrival_mid=mid,
            arrival_bid=bid,
            arrival_ask=ask,
        )
        if order.algo is not None and rejected is None:  # its seed, start and (VWAP) weights fixed now
            try:
                order = self.algos.prepare(order, reduces)
            except AlgoParamError as e:  # the venue it goes to cannot take its schedule
                rejected = f"{e} (the rules of {venue})"
        if rejected is not None:  # no venue could take it: kept as a rejected order (no legs, never sent)
            order = msgspec.structs.replace(order, status=S.REJECTED, reason=rejected, closed_at=ts, fallback=[])
            return await self.store.emit(order, "rejected")
        legs = self.emulator.legs(order, req, ids[1:], ts)
        if legs:
            names = {"stop_loss": "stopLoss", "take_profit": "takeProfit"}
            order = msgspec.structs.replace(order, linked_orders={names[str(leg.role)]: leg.order_id for leg in legs})
        order = await self.store.emit(order, "submitted")  # the entry first: then a retry finds it and adds the legs
        self.sessions[venue].mark_fresh(order.order_id)  # never sent yet: the one order sent without a lookup
        for leg in legs:
            await self.store.emit(leg, "initialized")
        self.log.info(
            "order {} ({}) submitted: {} {} {} {}{} to {}{}", order.order_id, order.client_order_id, order.side,
            order.quantity, order.pair, order.type, f" with legs {order.linked_orders}" if legs else "", venue,
            f" ({routing})" if routing else "",
        )  # fmt: skip
        return order

    def _venue_of_record(self, req: OrderRequest, a: ApprovedOrder) -> str:
        """The venue an order no venue could take is recorded under: the one it named, else its first candidate."""
        for name in (req.exchange, *(a.venues or ())):
            if name in self.sessions:
                return name
        return next(iter(self.sessions))

    async def _refuse_unroutable(self, a: ApprovedOrder, order: Order) -> None:
        self.log.warning("order {} ({}) not routed: {}", order.order_id, order.client_order_id, order.reason)
        if a.reply_to:
            field = "exchange" if a.request.exchange else None
            reply = OrderReply(ok=False, order=order, code="NO_VENUE", field=field, detail=order.reason)
            await self.bus.respond_to(a.reply_to, reply)

    async def _refuse_live(self, a: ApprovedOrder, order: Order) -> None:
        self.log.warning("order {} ({}) not sent live: {}", order.order_id, order.client_order_id, order.reason)
        if a.reply_to:
            field = "exchange" if a.request.exchange else None
            reply = OrderReply(ok=False, order=order, code="LIVE_NOT_APPROVED", field=field, detail=order.reason)
            await self.bus.respond_to(a.reply_to, reply)

    async def _refuse_elsewhere(self, a: ApprovedOrder, order_id: str, pair: str) -> None:
        """Partitioned: the client order id names an order of another partition's pair (so not this order)."""
        coid = a.request.client_order_id
        self.log.warning("client order id {} names order {} of {} (another partition): refused", coid, order_id, pair)
        if a.reply_to:
            detail = f"clientOrderId {coid} already names order {order_id} ({pair}) with other content"
            reply = OrderReply(ok=False, code="DUPLICATE_CLIENT_ORDER_ID", field="clientOrderId", detail=detail)
            await self.bus.respond_to(a.reply_to, reply)

    async def _refuse_duplicate(self, a: ApprovedOrder, order: Order) -> None:
        self.log.warning("client order id {} reused for a different order: refused", order.client_order_id)
        if a.reply_to:
            detail = (
                f"clientOrderId {order.client_order_id} already names order {order.order_id} "
                f"({order.side} {order.quantity} {order.pair} {order.type}) with other content"
            )
            reply = OrderReply(ok=False, code="DUPLICATE_CLIENT_ORDER_ID", field="clientOrderId", detail=detail)
            await self.bus.respond_to(a.reply_to, reply)

    async def _reply(self, a: ApprovedOrder, order: Order) -> None:
        if a.reply_to:
            reply = OrderReply(ok=True, order=order, risk_validation=a.risk_validation, estimated_cost=a.estimated_cost)
            await self.bus.respond_to(a.reply_to, reply)

    def _answer_after_venue(self, order: Order) -> bool:
        """On a live venue the caller hears the venue's first answer (a rejection is a refusal with the venue's
        reason and code), when the order goes to the venue now (not a stop waiting here)."""
        session = self.session_of(order)
        return (
            not session.venue.authoritative_lookup
            and order.type not in ALGO_TYPES  # a parent is held here: the caller hears it accepted at once
            and order.status is S.SUBMITTED
            and (order.type not in TRIGGERED_TYPES or session.holds_natively(order))
        )

    async def _reply_after_venue(
        self, a: ApprovedOrder, order_id: str, route: asyncio.Task[None], answer: asyncio.Future[VenueOrder]
    ) -> None:
        """Reply as soon as the venue answered (the order as that answer makes it, while it is being stored), or
        once the route ended without an answer, or after ACK_WAIT_S: the order as it is (still in flight)."""
        try:
            await asyncio.wait({route, answer}, timeout=ACK_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for session in self.sessions.values():  # (a fallback moves it to the next venue's session)
                session.forget_answer(order_id, answer)
        order = self.store.orders.get(order_id) or await self.store.recall(order_id)
        if order is None or not a.reply_to:
            return
        session = self.session_of(order)
        if answer.done() and not answer.cancelled():
            order = session.answered(order, answer.result())
        if order.status is S.REJECTED and order.venue_status == "rejected":
            code = session.reject_codes.pop(order_id, None) or (
                answer.result().code if answer.done() and not answer.cancelled() else None
            )
            detail = f"order {order_id} rejected by {order.venue}: {order.reason or 'no reason given'}"
            reply = OrderReply(ok=False, order=order, code=code or "VENUE_REJECTED", detail=detail)
            await self.bus.respond_to(a.reply_to, reply)
            return
        await self._reply(a, order)

    async def _route_logged(self, order_id: str) -> None:
        try:
            await self._route(order_id)
        except Transient as e:
            self.log.warning("{}; the reconcile will try again", e)

    async def _route(self, order_id: str) -> None:
        """Take a SUBMITTED order where it goes: its venue (the next one, should that one certainly not take it),
        or our trigger book (stops, take-profits)."""
        try:
            await self._route_once(order_id)
        except NotTaken as e:
            if not await self._reroute(order_id, str(e)):
                raise

    async def _reroute(self, order_id: str, why: str) -> bool:
        """Fallback: the order's venue certainly does not have it (it refused the connection, or it still did not
        know the order VENUE_UNKNOWN_GRACE_MS after the send); it goes to the next venue of its ``fallback`` that
        is up, lists the pair and - the risk gate says, now - can pay for it, its bracket legs with it, the move
        on its audit trail. False: it stays (named venue, no venue left, the risk gate not answering, or it was
        answered / is being sent meanwhile)."""
        o = self.store.orders.get(order_id)
        if o is None or not self._reroutable(o):
            return False
        skipped: list[str] = []
        chosen: tuple[str, list[str]] | None = None
        for candidate in self.router.fallbacks(o):
            refusal = await self._venue_refusal(o, candidate[0])
            if refusal is None:
                chosen = candidate
                break
            skipped.append(f"{candidate[0]}: {refusal}")
        if chosen is None:
            if skipped:
                self.log.warning("order {} not rerouted: {}", order_id, "; ".join(skipped))
            return False
        nxt, rest = chosen
        store = self.store
        ts = now_ms()
        note = f"{o.venue} did not take it ({why}) -> {nxt}"
        if skipped:
            note += f" (skipped {'; '.join(skipped)})"
        async with store.lock:
            cur = store.orders.get(order_id)
            if cur is None or cur.venue != o.venue or not self._reroutable(cur):
                return False  # answered, canceled or moved meanwhile
            old, new = self.session_of(cur), self.sessions[nxt]

            def move(c: Order) -> Order:
                if c.venue != o.venue or c.venue_status is not None or c.status not in (S.SUBMITTED, S.TRIGGERED):
                    return c
                return msgspec.structs.replace(
                    c, venue=nxt, fallback=rest, native_trigger=False, routing=f"{c.routing or ''}; {note}",
                    paper_trade=new.venue.authoritative_lookup, updated_at=ts,
                )  # fmt: skip

            moved = await store.update_locked(order_id, move, "rerouted")
            if moved is None or moved.venue != nxt:
                return False
            await self._legs_follow(moved)
            old.fresh.discard(order_id)
            new.mark_fresh(order_id)  # certainly not at the old venue: the new one may have it without a lookup
            if (fut := old.answers.pop(order_id, None)) is not None:
                new.answers[order_id] = fut  # the caller waiting for the first answer hears the new venue's
        self.log.warning("order {} rerouted: {}", order_id, note)
        if moved.status is S.TRIGGERED:
            kind, price = venue_leg(moved)
            self.spawn(new.send_triggered(order_id, kind, price), "send-triggered")
        else:
            self.spawn(self._route_logged(order_id), "route")
        return True

    def _reroutable(self, o: Order) -> bool:
        return (
            bool(o.fallback) and o.venue_status is None and o.status in (S.SUBMITTED, S.TRIGGERED)
            and o.venue in self.sessions and not self.session_of(o).in_flight(o.order_id)
        )  # fmt: skip

    async def _venue_refusal(self, o: Order, venue: str) -> str | None:
        """Would the risk gate take what is left of ``o`` on ``venue`` now (its balance there, its rules)? Its
        refusal, or None. Asked with a client id of its own (nothing is reserved: a dry run)."""
        kind, price = venue_leg(o) if o.type in TRIGGERED_TYPES else (o.type, o.price)
        left = o.quantity - o.filled_quantity
        probe = f"reroute-{sha256(f'{o.client_order_id}|{venue}'.encode()).hexdigest()[:32]}"
        req = OrderRequest(
            client_order_id=probe, pair=o.pair, side=o.side, quantity=left,
            type=kind,  # type: ignore[arg-type]
            price=price, time_in_force=o.time_in_force, post_only=o.post_only, reduce_only=o.reduce_only,
            source=o.source, exchange=venue, ts=now_ms(),
        )  # fmt: skip
        try:
            reply = await self.bus.request(self.subjects.orders_validate, req, OrderReply, timeout=RISK_CHECK_S)
        except Exception as e:
            return f"the risk gate did not answer ({type(e).__name__})"
        if not isinstance(reply, OrderReply) or not reply.ok:
            return f"{reply.code}: {reply.detail}" if isinstance(reply, OrderReply) else "no answer"
        return None

    async def _legs_follow(self, entry: Order) -> None:
        """The bracket legs still held here go where their entry goes (lock held)."""
        for leg_id in (entry.linked_orders or {}).values():
            leg = self.store.orders.get(leg_id)
            if leg is None or leg.venue == entry.venue or not held_here(leg):
                continue
            await self.store.update_locked(leg_id, partial(_follow, entry), "rerouted")

    async def _route_once(self, order_id: str) -> None:
        o = self.store.orders[order_id]
        if o.type in ALGO_TYPES:  # a parent: never sent itself, its algorithm starts
            if o.status is S.SUBMITTED:
                await self.algos.start(order_id)
            return
        session = self.session_of(o)
        if o.status is S.PENDING_CANCEL and o.venue_status is None:
            await session.cancel_unsent(order_id)  # (unless its create is on its way)
            return
        if o.status is not S.SUBMITTED or o.venue_status is not None:
            return
        if (why := self.algos.unsendable(o)) is not None and not session.in_flight(order_id):
            # an algorithm's child whose parent no longer runs (or trading refuses it, or the router is stopping):
            # never sent - marked pending cancel, then canceled here once the venue is sure not to have it
            ts = now_ms()
            new = await self.store.update(
                order_id, lambda cur: to_pending(cur, S.PENDING_CANCEL, ts, why)
                if cur.status is S.SUBMITTED and cur.venue_status is None else cur, "pending_cancel",
            )  # fmt: skip
            if new is not None and new.status is S.PENDING_CANCEL:
                self.log.warning("order {} not sent: {}", order_id, why)
                await session.cancel_unsent(order_id)
            return
        if o.type in TRIGGERED_TYPES and not o.native_trigger:
            if session.holds_natively(o):  # the venue holds it: marked (durably) first, then sent
                o = await self.store.update(
                    order_id, lambda cur: msgspec.structs.replace(cur, native_trigger=True, updated_at=now_ms())
                    if cur.status is S.SUBMITTED and cur.venue_status is None else cur, "native_trigger",
                ) or self.store.orders[order_id]  # fmt: skip
            else:
                ts = now_ms()
                await self.store.update(
                    order_id, lambda cur: transition(cur, S.ACCEPTED, ts) if cur.status is S.SUBMITTED else cur
                )
                await self.emulator.check_triggers(o.pair, only=order_id)
                return
        if o.native_trigger:
            await session.send(order_id, native_kind(o), o.price, o.stop_price)
            return
        await session.send(order_id, o.type, o.price)

    # -- fills -----------------------------------------------------------------------------------------
    async def _fold_fill(self, f: Fill, env: Envelope) -> None:
        """A fill read back at start: the position it made. A fill of a known order that its order does not
        list yet is left for the FILLS consumer, which folds it together with the order (never twice)."""
        self._fills_seen(f, env)
        if not self.owns(f.pair):  # another partition's pair: its position is that partition's
            return
        o = self.store.orders.get(f.order_id)
        if o is not None and all(ref.fill_id != f.fill_id for ref in o.fills):
            return
        self.emulator.fold_position(f)

    async def _on_fill(self, f: Fill, env: Envelope) -> None:
        store, emulator = self.store, self.emulator
        self._fills_seen(f, env)
        if not self.owns(f.pair):  # another partition's pair (each partition reads every fill, keeps its own)
            return
        if f.order_id not in store.orders:
            # a fill of an order that is not ours (an outside writer): the ledger books it, the position moves
            async with store.lock:
                if (key := emulator.fold_position(f)) is not None:
                    await emulator.refit(key)
            return
        ref = FillRef(
            fill_id=f.fill_id, quantity=f.quantity, price=f.price, fee=f.fee, fee_currency=f.fee_currency,
            liquidity=f.liquidity, timestamp=f.timestamp,
        )  # fmt: skip

        def change(cur: Order) -> Order:
            if revivable(cur):  # rejected as unknown to the venue, and here is its fill: it was there after all
                self.log.warning("order {} rejected as unknown has a fill: working again", cur.order_id)
                cur = revive(cur, f.timestamp)
            new = apply_fill(cur, ref)
            if (
                new is not cur
                and new.status is S.PARTIALLY_FILLED
                and new.venue_status in ("canceled", "expired")
                and new.venue_filled is not None
                and new.filled_quantity >= new.venue_filled
            ):
                final = S.EXPIRED if new.venue_status == "expired" or cur.reason == "expired" else S.CANCELED
                new = transition(new, final, f.timestamp, cur.reason)
            return new

        async with store.lock:  # the position and the order's fills move together: an exit is never counted twice
            moved = emulator.fold_position(f)
            await store.update_locked(f.order_id, change)
            # also on a redelivered fill that changed nothing: finish what a crash may have cut short
            await emulator.after_change(store.orders[f.order_id])
            if moved is not None:
                await emulator.refit(moved)

    def _fills_seen(self, f: Fill, env: Envelope) -> None:
        """The last FILLS sequence of a fill of each venue seen: that venue's balance readings vouch up to it (a
        fill at another venue neither vetoes a reading nor makes it a later one)."""
        session = self.sessions.get(self.emulator.only or f.venue)
        if session is not None:
            session.fills_seq = max(session.fills_seq, env.seq or 0)

    # -- cancel and modify -----------------------------------------------------------------------------
    async def _cancel(self, order_id: str, reason: str) -> tuple[Order, str | None]:
        """Cancel one order. Returns the order after the attempt and why it was refused, if it was.
        Decided under the lock, on the order as it is now (a trigger may have just sent it out)."""
        ts = now_ms()
        final = S.EXPIRED if reason == "expired" else S.CANCELED
        store = self.store
        if (
            known := store.orders.get(order_id) or await store.recall(order_id)
        ) is not None and known.type in ALGO_TYPES:
            return await self.algos.cancel_parent(order_id, reason)  # its schedule stops, its working children go
        async with store.lock:
            o = store.orders.get(order_id) or await store.recall(order_id)
            if o is None:
                raise KeyError(order_id)
            if o.status in TERMINAL_STATUSES:
                return o, f"order {order_id} is already {o.status.value}"
            if o.status is S.PENDING_CANCEL:
                return o, None
            if held_here(o):  # never sent anywhere: canceled here
                new = await store.emit(transition(o, final, ts, reason), final.value)
                await self.emulator.after_change(new)
                return new, None
            if o.venue_status is None:  # on its way to the venue: marked now, canceled there once it has it
                new = await store.emit(to_pending(o, S.PENDING_CANCEL, ts, reason), "pending_cancel")
                return new, None
            if not at_venue(o):
                return o, f"order {order_id} cannot be canceled now ({o.status.value}, venue: {o.venue_status})"
            if o.venue not in self.sessions:
                return o, f"order {order_id} is at {o.venue}, which is not configured (EXCHANGES)"
        return await self.session_of(o).cancel_at_venue(order_id, reason)

    async def _on_cancel(self, cmd: CancelOrder, env: Envelope) -> None:
        reason = cmd.reason or "canceled by request"
        if cmd.all:
            async with self.store.lock:  # (an approval being created now is listed: it is made under the lock)
                ids = [
                    o.order_id
                    for o in sorted(  # the algorithms' parents first: their schedules stop before their children go
                        (self.store.orders[oid] for oid in self.store.live),
                        key=lambda o: (o.type not in ALGO_TYPES, o.created_at),
                    )
                    if (o.status in WORKING or o.status is S.INITIALIZED)
                    and (cmd.pair is None or o.pair == cmd.pair)
                    and (cmd.venues is None or o.venue in cmd.venues)
                    and not (cmd.keep_reduce_only and o.reduce_only)
                ]
            gate = asyncio.Semaphore(16)

            async def one(oid: str) -> Order:
                async with gate:
                    return (await self._cancel(oid, reason))[0]

            results = await asyncio.gather(*(one(oid) for oid in ids))
            await self.bus.respond(env, CommandReply(ok=True, orders=list(results)))
            return
        oid = cmd.order_id or await self.store.order_of_client(cmd.client_order_id or "")
        if oid is None or await self.store.recall(oid) is None:
            await self.bus.respond(
                env,
                CommandReply(
                    ok=False,
                    code="ORDER_NOT_FOUND",
                    field="orderId",
                    detail=f"no order {cmd.order_id or cmd.client_order_id}",
                ),
            )
            return
        order, refusal = await self._cancel(oid, reason)
        if refusal is not None:
            reply = CommandReply(ok=False, orders=[order], code="CANCEL_REFUSED", detail=refusal)
        else:
            reply = CommandReply(ok=True, orders=[order])
        await self.bus.respond(env, reply)

    async def _on_modify(self, cmd: ModifyOrder, env: Envelope) -> None:
        o = await self.store.recall(cmd.order_id)
        if o is None:
            await self.bus.respond(
                env, CommandReply(ok=False, code="ORDER_NOT_FOUND", field="orderId", detail=f"no order {cmd.order_id}")
            )
            return
        refusal, field = self._modify_refusal(o, cmd)
        if refusal is not None:
            await self.bus.respond(
                env, CommandReply(ok=False, orders=[o], code="MODIFY_REFUSED", field=field, detail=refusal)
            )
            return
        ts = now_ms()
        changes: dict[str, object] = {"updated_at": ts}
        if cmd.quantity is not None:
            changes["quantity"] = cmd.quantity
        if cmd.price is not None:
            changes["price"] = cmd.price
        if cmd.stop_price is not None:
            changes["stop_price"] = cmd.stop_price
        orders = self.store.orders
        if held_here(o):
            await self.store.update(o.order_id, lambda cur: msgspec.structs.replace(cur, **changes), "modified")
            await self.bus.respond(env, CommandReply(ok=True, orders=[orders.get(o.order_id, o)]))
            return
        refusal = await self.session_of(o).edit_at_venue(o, cmd.quantity, cmd.price)
        if refusal is not None:
            await self.bus.respond(
                env,
                CommandReply(ok=False, orders=[orders.get(o.order_id, o)], code="MODIFY_REFUSED", detail=refusal),
            )
            return
        await self.bus.respond(env, CommandReply(ok=True, orders=[orders.get(o.order_id, o)]))

    def _modify_refusal(self, o: Order, cmd: ModifyOrder) -> tuple[str | None, str | None]:
        if o.status in TERMINAL_STATUSES:
            return f"order {o.order_id} is already {o.status.value}", "orderId"
        if o.type in ALGO_TYPES:
            return (
                f"modify is not supported for algorithm orders ({o.type}): cancel {o.order_id} and place a new one"
            ), "orderId"
        if o.role == "slice":  # drawn from its parent's reservation, never checked by the risk gate: never changed
            return (
                f"modify is not supported for an algorithm's child: {o.order_id} is a slice of "
                f"{o.parent_order_id} (cancel it: its unfilled quantity is carried to the next slice)"
            ), "orderId"
        if o.status in (S.PENDING_CANCEL, S.PENDING_UPDATE):
            return f"order {o.order_id} is {o.status.value}: wait for the venue's answer", "orderId"
        if cmd.quantity is None and cmd.price is None and cmd.stop_price is None:
            return "nothing to change: give quantity, price or stopPrice", None
        if cmd.quantity is not None:
            if o.role in ("stop_loss", "take_profit"):
                return "a bracket leg's quantity follows its entry's fills", "quantity"
            if not cmd.quantity.is_finite() or cmd.quantity <= o.filled_quantity:
                return f"quantity {cmd.quantity} must be above the filled {o.filled_quantity}", "quantity"
            if o.reduce_only and cmd.quantity > o.quantity and o.order_id in self.store.live:
                wanted = cmd.quantity - o.filled_quantity
                room = self.emulator.room_to_grow(o, wanted)
                if room < wanted:
                    most = o.filled_quantity + room
                    return f"reduceOnly: quantity {cmd.quantity} is above what the position leaves ({most})", "quantity"
        if cmd.price is not None:
            if o.type in ("market", "stop_loss") or (o.type == "take_profit" and o.price is None):
                return f"a {o.type} order trades at market: it has no price to change", "price"
            if not cmd.price.is_finite() or cmd.price <= ZERO:
                return "price must be a positive number", "price"
        if cmd.stop_price is not None and (not cmd.stop_price.is_finite() or cmd.stop_price <= ZERO):
            return "stopPrice must be a positive number", "stopPrice"
        if o.venue not in self.sessions:
            return f"order {o.order_id} is at {o.venue}, which is not configured (EXCHANGES)", "orderId"
        rules = self.session_of(o).rules.get(o.pair)
        if rules is not None:
            for field, value, step in (
                ("quantity", cmd.quantity, rules.amount_step),
                ("price", cmd.price, rules.tick_size),
                ("stopPrice", cmd.stop_price, rules.tick_size),
            ):
                if value is not None and not is_multiple(value, step):
                    unit = "amount step" if field == "quantity" else "tick"
                    return f"{field} {value} is not a multiple of the {unit} {step} for {o.pair}", field
        if cmd.stop_price is not None:
            if o.type not in TRIGGERED_TYPES or o.triggered_at is not None:
                return "only a stop or take-profit that has not triggered has a stopPrice to change", "stopPrice"
            if o.native_trigger:
                return f"the stop is held by {o.venue}: cancel it and place a new one to move it", "stopPrice"
            book = self.router.book_of(o.venue, o.pair)
            bid = book.bids[0][0] if book and book.bids else None
            ask = book.asks[0][0] if book and book.asks else None
            if (why := wrong_side(o.type, o.side, cmd.stop_price, bid, ask)) is not None:
                return why, "stopPrice"
        if not held_here(o) and not at_venue(o):
            return f"order {o.order_id} cannot be modified now ({o.status.value})", "orderId"
        return None, None

    # -- queries ---------------------------------------------------------------------------------------
    async def _on_query(self, q: OrdersQuery, env: Envelope) -> None:
        if q.order_id or q.client_order_id:
            oid = q.order_id or await self.store.order_of_client(q.client_order_id or "")
            o = await self.store.recall(oid) if oid else None
            await self.bus.respond(env, OrdersPage(orders=[o] if o is not None else []))
            return
        after: tuple[int, str] | None = None
        if q.cursor:
            created, _, oid = q.cursor.partition(":")
            after = (int(created), oid) if created.isdigit() else None
        limit = max(1, min(q.limit, MAX_PAGE))
        page, cursor = await self.store.page(q, after, limit)
        await self.bus.respond(env, OrdersPage(orders=page, next_cursor=cursor))

    async def _on_events_query(self, q: OrderEventsQuery, env: Envelope) -> None:
        await self.store.recall(q.order_id)
        await self.bus.respond(env, OrderEventsPage(events=self.store.events.get(q.order_id, [])))

    async def _on_venues_test(self, q: Empty, env: Envelope) -> None:
        checks = await asyncio.gather(*(session.venue.check() for session in self.sessions.values()))
        await self.bus.respond(env, VenueChecks(exchanges=list(checks)))

    async def _on_balance_quiet(self, q: BalanceQuiet, env: Envelope) -> None:
        session = self.sessions.get(q.venue)
        reply = session.quiet_state(q) if session is not None else BalanceQuietReply(quiet=False)
        await self.bus.respond(env, reply)

    async def _on_venue_book(self, q: VenueBookQuery, env: Envelope) -> None:
        """The book the venue would match a market order of the pair on now (``make chaos`` sends a pair's next
        order once this is the book it expects)."""
        session = self.sessions.get(q.venue) if q.venue is not None else self.session
        if session is None:
            await self.bus.respond_error(env, f"venue: {q.venue!r} is not one of this router's venues")
            return
        book = await session.venue.fetch_order_book(q.pair)
        await self.bus.respond(env, VenueBookView(pair=q.pair, venue=session.name, book=book))

    async def _on_markets_query(self, q: Empty, env: Envelope) -> None:
        """Every venue's rules, each naming its venue (a venue that has not started yet: none)."""
        markets = [
            msgspec.structs.replace(m, venue=name)
            for name, session in self.sessions.items()
            if session.started
            for m in await session.venue.markets()
        ]
        await self.bus.respond(env, MarketsPage(venue=self.venue.name, markets=markets))


def _follow(entry: Order, leg: Order) -> Order:
    """A bracket leg still held here, moved to its entry's venue."""
    if not held_here(leg) or leg.venue == entry.venue:
        return leg
    return msgspec.structs.replace(leg, venue=entry.venue, paper_trade=entry.paper_trade, updated_at=now_ms())


def _client_order_id(a: ApprovedOrder) -> str:
    """The lane of an approval (``Bus.consume``): one client order id's approvals one after the other."""
    return a.request.client_order_id


def _fill_order(f: Fill) -> str:
    """The lane of a fill: its pair's (a one-venue deployment counts one position per pair, whatever the venue)."""
    return f.pair
