"""The execution algorithms (TWAP, VWAP, iceberg): a part of the order-router, apart from routing and the emulator.

A parent order (type twap / vwap / iceberg) is stored like any order (id, client id, state, audit trail) and held
here: it is never sent to a venue itself. Its children are normal orders (role ``slice``, ``parent_order_id``, client
order id ``tbx:<parent id>:s<k>``) made here - they never pass the risk gate again, they draw on the parent's
reservation - and sent through the router's normal path to the parent's venue. The schedules are pure
(``domain/algos``, applied to orders in ``domain/algo_orders``); this part only keeps time and state.

Durability rules kept here:
- the parent is updated (event ``slice_sent``: the slice indexes in ``algoState.sent``, the child's id in
  ``children``) BEFORE its child is created, under the store's lock; the child's id is reserved in KV under its
  client order id first, so a restart that finds a child id in ``children`` without its order creates it then,
  under the same ids - never twice;
- a parent's fills, average price and fees are its children's fills, applied by fill id (each once), so a
  change of a child read again (a redelivered fill, a restart) changes nothing twice;
- one scheduler for every parent: a heap of (due time, parent id) and one task sleeping until the earliest; a
  parent's next slice is pushed when the previous one is out. On start the live parents are read from the store
  and armed again: slices that fell due while the router was down are merged into one child sent at once, the
  merge on the trail ("slices i..j merged: overdue by N ms after a restart"); a slice that sends nothing (its
  quantity is already covered, or below the venue's minimum) is in ``sent`` with the reason on the trail.
- children never pass the risk gate: before each one the engine asks ``refusal`` (the trading state HALTED or
  REDUCING, outside TRADING_HOURS: ``domain.algo_orders.trading_refusal``) and, refused, stops the parent (its
  working children canceled, the parent canceled with the reason); when trading halts every parent is stopped;
- the next child's size is the schedule's cumulative quantity through the slices due now less what the parent
  filled and what its working children still have: what an earlier child left unfilled (an IOC at the cap that
  did not fill, a child canceled by request) is carried into the next one; nothing is ever sent beyond the
  parent's quantity.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections import deque
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec

from actors.order_router.store import OrderStore
from domain.algo_orders import (
    capped_quantity,
    catchup_cap,
    child_min_quantity,
    committed_of,
    next_clip,
    next_quantity,
    schedule_of,
    seed_of,
    slice_client_id,
    step_of,
    target_through,
    unfilled_of,
)
from domain.algos import MarketVolume, RecentProfile, Slice, due, recent_profile
from domain.orders import IllegalTransition, Overfilled, apply_fill, revivable, to_pending, transition
from schemas.messages import (
    ALGO_TYPES,
    TERMINAL_STATUSES,
    AlgoState,
    MarketRules,
    Order,
    OrderStatus,
    Trade,
    now_ms,
)

if TYPE_CHECKING:
    from loguru import Logger

S = OrderStatus
ZERO = Decimal(0)
IDLE_S = 3600.0
# a venue's refusals of a child that say nothing about the parent (the paper venue's books not read yet after a
# restart): its quantity is carried to the next slice, the algorithm goes on
TRANSIENT_REJECTIONS = ("no market data",)
SYNC_RETRY_S = 1.0  # a parent's sync with its children that failed is tried again after this
# a parent that no longer runs and still has a child working that is not being canceled (its cancel refused, or a
# crash between the parent's pending_cancel and its children's cancels): the cancel is sent again after this, the
# pause doubling up to the most
CANCEL_RETRY_S, CANCEL_RETRY_MAX_S = 1.0, 30.0
# a child whose create was not confirmed stored (the publish raised: it may be stored all the same) is published
# again under the same version and message id after this, the pause doubling up to the most, until confirmed
CONFIRM_RETRY_S, CONFIRM_RETRY_MAX_S = 0.5, 10.0
# an iceberg's clip rejected as unknown to the venue blocks its next clip (it may be showing there): this many
# VENUE_UNKNOWN_GRACE_MS after its rejection it is looked up once more; still unknown, the parent ends expired
UNKNOWN_CLIP_GRACES = 5
Spawn = Callable[..., "asyncio.Task[object]"]
Cancel = Callable[[str, str], Awaitable[tuple[Order, str | None]]]
Route = Callable[[str], Awaitable[None]]
RulesOf = Callable[[Order], MarketRules | None]
MarkFresh = Callable[[Order], None]
Touch = Callable[[Order], Decimal | None]  # the price a market child of the parent would meet now (None: unknown)
LookUp = Callable[[Order], Awaitable[bool]]  # a child looked up at its venue: does the venue know it?


async def _no_alert(*_: object, **__: object) -> None:
    return None


async def _not_wired(o: Order) -> bool:
    raise RuntimeError(f"no venue lookup wired: {o.order_id} cannot be looked up")


class NoRules(Exception):
    """The venue's rules of a parent's pair are not known yet (and not stored on it): wait for them."""


def running(p: Order) -> bool:
    """Does the parent's algorithm still send children (not stopping, not ended)?"""
    return (
        p.status not in TERMINAL_STATUSES
        and p.status is not S.PENDING_CANCEL
        and p.algo_state is not None
        and p.algo_state.done_reason is None
    )


def cancelable(child: Order) -> bool:
    """Does a parent's cancel still have to reach this live child: open at the venue or on its way there, and not
    being canceled already? A child the venue reported ended (filled, canceled, expired) is only waiting for its
    fills: nothing to cancel (and no refusal to report)."""
    return (
        child.status not in TERMINAL_STATUSES
        and child.status is not S.PENDING_CANCEL
        and child.venue_status in (None, "open")
    )


class ExecAlgos:
    def __init__(self, store: OrderStore, log: Logger, spawn: Spawn) -> None:
        self.store = store
        self.log = log
        self.spawn = spawn
        self.heap: list[tuple[int, str]] = []  # (due epoch ms, parent id); stale entries are skipped
        self.next_at: dict[str, int] = {}  # parent id -> its armed due time
        self.wake = asyncio.Event()
        self.schedules: dict[str, list[Slice]] = {}
        self.guards: dict[str, asyncio.Lock] = {}  # one step of a parent at a time
        self.syncing: set[str] = set()
        self.catchup: set[str] = set()  # parents whose overdue slices came due while the router was down
        # VWAP's recent volume: per (venue named on the trades, pair), volume sums per time cell (bounded); every
        # trade seen since ``watching_since`` (``watch``: once subscribed to the trades; None: not yet), moved to
        # the moment a reconnect of the bus is noticed (core NATS: what was published meanwhile is lost)
        self.volume: dict[tuple[str | None, str], MarketVolume] = {}
        self.watching_since: int | None = None
        self.reconnects: Callable[[], int] = lambda: 0  # how many times the bus reconnected
        self.watch_reconnects = 0
        self.trades_of: Callable[[str], str | None] = lambda venue: venue  # whose trades are a venue's volume
        self.tag: str | None = None  # partitioned: the pair a child's id reservation names (set per call)
        self.partitioned = False
        self.sends = 0  # children made (stats)
        self.sent_at: deque[tuple[int, int]] = deque(maxlen=100_000)  # (due ms, made ms) of each child, for the bench
        # why no child may go now (the trading state, hours); its argument: does the parent reduce a position?
        self.refusal: Callable[..., str | None] = lambda reduces=False: None
        self.halted: Callable[[], bool] = lambda: False  # is trading HALTED now?
        self.halted_since: float | None = None  # (loop time) since when trading is HALTED, as followed here
        self.halt_grace_s = 0.0  # HALTED: the algorithms are stopped this long after the halt
        self.touch: Touch = lambda p: None  # (set by the router: the book's touch at the parent's venue)
        # each live parent's children as last stored (kept from the rebuild on): what they took is never read back
        # from ORDERS (committed_of), and a parent's sync folds in only the children that changed since the last
        self.kids: dict[str, dict[str, Order]] = {}
        self.dirty: dict[str, set[str]] = {}  # parent id -> its children changed since its last sync
        # parent id -> its children whose create is not confirmed stored (the publish raised): counted as sent at
        # their whole quantity, published again under the same version until confirmed
        self.unsure: dict[str, dict[str, Order]] = {}
        self.cancel_at: dict[str, tuple[float, float]] = {}  # parent id -> (loop time of the next resend, pause)
        self.end_note: dict[str, str] = {}  # parent id -> why its last slice sent nothing (said when it ends)
        self.alert: Callable[..., Awaitable[None]] = _no_alert  # the router's alert (tbx.events.risk)
        self.closed = False  # the router is stopping: no child is made from now on (the next run resumes)
        self.unknown_grace_ms = 60_000  # (set by the router: VENUE_UNKNOWN_GRACE_MS)
        self.look_up: LookUp = _not_wired  # (set by the router: a child looked up at its venue, what it says applied)

    def connect(self, rules_of: RulesOf, route: Route, cancel: Cancel, mark_fresh: MarkFresh) -> None:
        """The venue rules of an order's venue, the router's route of a new child, its cancel, and its session's
        ``mark_fresh`` (a child never sent may go without a lookup first)."""
        self.rules_of = rules_of
        self.route = route
        self.cancel = cancel
        self.mark_fresh = mark_fresh

    # -- acceptance ------------------------------------------------------------------------------------
    def _sizing(self, p: Order) -> tuple[Decimal, Decimal]:
        """The amount step and smallest child the parent's schedule is built with: those stored on it when it was
        accepted, else (an older record) the venue's rules now. NoRules when neither is known (its venue not
        started yet): nothing is decided without them (the step is tried again shortly)."""
        st = p.algo_state
        if st is not None and st.step is not None:
            return st.step, st.min_quantity or ZERO
        rules = self.rules_of(p)
        if rules is None or rules.amount_step <= ZERO:
            raise NoRules(f"no market rules of {p.pair} at {p.venue} yet")
        return rules.amount_step, child_min_quantity(rules, p.price or p.reference_price)

    def prepare(self, p: Order, reduces: bool = False) -> Order:
        """The parent as accepted: its seed filled in, its start, and a VWAP's weights fixed now (its profile, else
        the recent traded volume of the pair over ``lookbackMs``); ``reduces``: the risk gate found it reducing a
        position (it runs while trading is REDUCING). AlgoParamError when the venue's rules cannot take its
        schedule."""
        spec = p.algo
        assert spec is not None
        if spec.seed is None and p.type == "twap":
            spec = msgspec.structs.replace(spec, seed=seed_of(p.order_id))
        state = AlgoState(start_ms=p.created_at)
        if p.type == "vwap":
            assert spec.duration_ms is not None
            if spec.profile:
                state = msgspec.structs.replace(state, weights=list(spec.profile), profile_source="request")
            else:
                recent = self._recent_profile(p, spec.lookback_ms or spec.duration_ms, spec.slices or 1)
                state = msgspec.structs.replace(
                    state, weights=recent.weights, profile_source=recent.source, covered_from_ms=recent.covered_from
                )
                if recent.note is not None:  # on the trail (its submitted event) and in the log
                    p = msgspec.structs.replace(p, reason=recent.note)
                    self.log.info("algorithm {}: {}", p.order_id, recent.note)
        p = msgspec.structs.replace(p, algo=spec, algo_state=state)
        try:
            step, least = self._sizing(p)
            state = msgspec.structs.replace(p.algo_state, step=step, min_quantity=least)  # (its schedule for good)
            p = msgspec.structs.replace(p, algo_state=state)
        except NoRules:  # checked with the quantity's own step; the rules are waited for before its first child
            step, least = step_of(p.quantity), ZERO
        if p.type == "iceberg":
            next_clip(p, ZERO, step, least)
        else:
            schedule_of(p, step, least)
        if reduces and p.algo_state is not None:
            p = msgspec.structs.replace(p, algo_state=msgspec.structs.replace(p.algo_state, reduces=True))
        return p

    def _recent_profile(self, p: Order, lookback_ms: int, buckets: int) -> RecentProfile:
        """A VWAP's weights from the recent volume of its venue's trades of its pair (coverage rule:
        ``domain.algos.vwap``): the venue's own trades, the paper venue's those of the market it trades on."""
        source = self.trades_of(p.venue)
        what = f"{p.pair} trades" + (f" at {source}" if source is not None else " (unnamed: synthetic, replay)")
        market = self.volume.get((source, p.pair))
        return recent_profile(market, p.created_at, lookback_ms, buckets, self.watched_from(), now_ms(), what)

    def watch(self) -> None:
        """Subscribed to the public trades (and the server knows it): every trade from now on comes here."""
        self.watching_since, self.watch_reconnects = now_ms(), self.reconnects()

    def watched_from(self) -> int | None:
        """Since when every public trade came here: the subscription, or the last reconnect (noticed now: later
        than it happened, never earlier). None: not subscribed yet."""
        if self.watching_since is not None and (n := self.reconnects()) != self.watch_reconnects:
            self.watching_since, self.watch_reconnects = now_ms(), n
        return self.watching_since

    def on_trade(self, t: Trade) -> None:
        """A public trade: its venue's volume of its pair (sums per time cell, bounded)."""
        self.watched_from()  # (a reconnect before this trade: the trades before it may be missing)
        market = self.volume.get((t.venue, t.pair))
        if market is None:
            market = self.volume[(t.venue, t.pair)] = MarketVolume()
        try:
            market.add(t.ts, t.quantity, now_ms())
        except ValueError as e:  # (market data that cannot be a volume: not counted)
            self.log.warning("public trade of {} at {} not counted: {}", t.pair, t.venue, e)

    # -- the scheduler ---------------------------------------------------------------------------------
    def arm(self, parent_id: str, at_ms: int) -> None:
        if self.next_at.get(parent_id) == at_ms:
            return
        self.next_at[parent_id] = at_ms
        heapq.heappush(self.heap, (at_ms, parent_id))
        if self.heap[0] == (at_ms, parent_id):
            self.wake.set()

    async def close(self, timeout_s: float = 1.0) -> None:
        """The router is stopping (before its venues stop): the scheduler ends and no child is made from now on -
        a child made now could not reach its venue, and the next run would take it for one whose answer was lost.
        Waits (at most ``timeout_s``) for the steps under way, so none is left half done."""
        self.closed = True
        self.wake.set()
        guards = list(self.guards.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                for guard in guards:
                    async with guard:
                        pass

    async def run(self) -> None:
        """One task for every parent: the earliest due parent first."""
        while not self.closed:
            now = now_ms()
            while self.heap and self.heap[0][0] <= now:
                at, pid = heapq.heappop(self.heap)
                if self.next_at.get(pid) != at:
                    continue  # re-armed or dropped meanwhile
                del self.next_at[pid]
                self.spawn(self._step_logged(pid), "algo-step")
            self.wake.clear()
            delay = (self.heap[0][0] - now) / 1000 if self.heap else IDLE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(delay, 0.0))

    def schedule(self, p: Order) -> list[Slice]:
        s = self.schedules.get(p.order_id)
        if s is None:
            step, least = self._sizing(p)
            s = self.schedules[p.order_id] = schedule_of(p, step, least)
        return s

    def _arm_next(self, p: Order) -> None:
        """The parent's next due slice (timed algorithms; an iceberg's next clip follows its fills)."""
        if not running(p) or p.type == "iceberg" or p.algo_state is None:
            return
        sent = set(p.algo_state.sent)
        nxt = next((s for s in self.schedule(p) if s.index not in sent), None)
        if nxt is not None:
            self.arm(p.order_id, nxt.at_ms)

    # -- start, resume ---------------------------------------------------------------------------------
    async def start(self, parent_id: str) -> None:
        """A parent just created: accepted (held here), its first slice armed."""
        store = self.store
        async with store.lock:
            p = store.orders[parent_id]
            if p.status is S.SUBMITTED:
                ts = now_ms()
                p = await store.emit(transition(p, S.ACCEPTED, ts), "accepted")
        self.log.info("algorithm {} {} {} {} started", p.order_id, p.type, p.side, p.quantity)
        try:
            await self._after(p.order_id)
        except NoRules as e:  # its venue not started yet: its first step waits for the rules
            self.log.warning("algorithm {}: waits ({}); tried again in 1 s", p.order_id, e)
            self.arm(p.order_id, now_ms() + 1000)

    async def resume(self) -> None:
        """At start: every live parent armed again, a child the last run recorded but did not create made now, the
        children's fills (some may have come while it was down) on their parent."""
        self.restarted_at = now_ms()
        self.active = True  # (the rebuild from ORDERS is over: children's changes are followed from now on)
        parents = [oid for oid in list(self.store.live) if self.store.orders[oid].type in ALGO_TYPES]
        for pid in list(self.kids):  # (the children of parents that ended are not kept)
            if pid not in parents:
                del self.kids[pid]
        for pid in parents:
            try:
                await self._resume_one(pid)
            except Exception as e:  # one parent never stops the router: its step tries again shortly
                self.log.warning("algorithm {}: not resumed now ({}); tried again in 1 s", pid, e)
                self.arm(pid, now_ms() + 1000)
        if parents:
            self.log.info("resumed {} algorithm order(s)", len(parents))

    async def _resume_one(self, pid: str) -> None:
        p = self.store.orders[pid]
        if running(p) and (why := self._refusal_of(p)) is not None:
            await self.cancel_parent(pid, why)
            return
        await self._restore_child(pid)
        if self.store.orders[pid].status is S.SUBMITTED:
            await self.start(pid)
        else:
            await self.sync(pid, everything=True)
            await self._after(pid)

    async def _restore_child(self, pid: str) -> None:
        p = self.store.orders[pid]
        if not p.children or p.algo_state is None or not p.algo_state.sent:
            return
        cid = p.children[-1]  # (only the last child can be missing: each is made right after its parent's update)
        await self._known(p)
        if cid in self.kids.get(pid, {}):
            return
        k = p.algo_state.sent[-1]
        async with self.store.lock:
            p = self.store.orders[pid]
            if not running(p):  # (canceled, halted, ended: its child is never made, never sent)
                why = (p.algo_state.done_reason if p.algo_state else None) or p.reason or p.status.value
                note = f"slice {k}: its child was not made before a restart and the parent no longer runs ({why})"
                await self.store.emit(msgspec.structs.replace(p, children=p.children[:-1], reason=note), "slice_sent")
                self.log.warning("algorithm {}: {}: not made", pid, note)
                return
            step, least = self._sizing(p)  # (NoRules: tried again, the lock let go)
            if p.type == "iceberg":
                q, target = next_clip(p, self._working(p), step, least), p.quantity
            else:
                target = target_through(self.schedule(p), k)
                q = next_quantity(p, target, self._working(p), step)
            q = capped_quantity(q, target, p.quantity, self._committed(p), step)
            if q <= ZERO or (least and q < least):
                note = f"slice {k}: its child was not made before a restart and nothing is left to send for it"
                await self.store.emit(msgspec.structs.replace(p, children=p.children[:-1], reason=note), "slice_sent")
                return
            try:
                child = await self._make_child(p, k, cid, q)
            except Exception as e:
                if cid not in self.store.burned:
                    raise
                await self._unconfirmed(p, k, cid, q, e)  # (it may be stored: never made a second time)
                return
        self.log.warning("algorithm {}: child {} of slice {} made after a restart", pid, cid, k)
        if child is not None:
            self.spawn(self._route_logged(cid), "route")

    async def _known(self, p: Order) -> bool:
        """Every stored child of the parent in ``kids`` (read back from ORDERS, outside the store's lock, only a
        child that is missing there: the rebuild keeps them all, so normally none). True when the parent's
        children are kept here (it is live)."""
        kids = self.kids.get(p.order_id)
        if kids is None:
            if p.status in TERMINAL_STATUSES or p.order_id not in self.store.live:
                return False
            kids = self.kids[p.order_id] = {}
        unsure = self.unsure.get(p.order_id, {})
        for c in p.children:
            if c not in kids and c not in unsure and self.store.last_seq.get(c):
                o = await self.store.recall(c)
                if o is not None:
                    self.log.warning("algorithm {}: child {} was not kept: read back", p.order_id, c)
                    kids.setdefault(c, o)
        return True

    def _committed(self, p: Order) -> Decimal:
        """What the parent's children took of its quantity (``committed_of``), from the children kept here: never
        read back from ORDERS (the store's lock may be held). A child whose create is not confirmed stored counts
        at its whole quantity."""
        kids, unsure = self.kids.get(p.order_id, {}), self.unsure.get(p.order_id, {})
        return committed_of([kids.get(c) or unsure.get(c) for c in p.children])

    def _refusal_of(self, p: Order) -> str | None:
        """Why the parent may send no child now (the trading state, TRADING_HOURS; a reducing parent runs while
        trading is REDUCING)."""
        return self.refusal(bool(p.algo_state is not None and p.algo_state.reduces))

    def unsendable(self, child: Order) -> str | None:
        """Why a child must not go to its venue now - its parent no longer runs (canceled, stopping, halted, ended),
        trading refuses its children, or the router is stopping - as the reason its cancel carries (it starts with
        ``parent <id>``: an iceberg goes on after it); None: it may go (any order that is not a child)."""
        pid = child.parent_order_id
        if child.role != "slice" or pid is None:
            return None
        p = self.store.orders.get(pid)
        if p is None or p.order_id not in self.store.live:
            return f"parent {pid} ended: its child was never sent"
        if not running(p):
            why = (p.algo_state.done_reason if p.algo_state else None) or p.reason or p.status.value
            return f"parent {pid}: {why}: its child was never sent"
        if (refused := self._refusal_of(p)) is not None:
            return f"parent {pid}: {refused}: its child was never sent"
        if self.closed:
            return f"parent {pid}: the order-router is stopping: its child was never sent (its quantity is carried)"
        return None

    # -- a step: the slices due now --------------------------------------------------------------------
    async def _step_logged(self, pid: str) -> None:
        try:
            await self.step(pid)
        except NoRules as e:
            self.log.warning("algorithm {}: waits ({}); tried again in 1 s", pid, e)
            self.arm(pid, now_ms() + 1000)
        except Exception as e:  # never the scheduler's death: tried again shortly
            self.log.exception("algorithm {}: step failed ({}); tried again in 1 s", pid, e)
            self.arm(pid, now_ms() + 1000)

    async def step(self, pid: str) -> None:
        guard = self.guards.setdefault(pid, asyncio.Lock())
        async with guard:
            p = self.store.orders.get(pid)
            if p is None or self.closed:
                return
            if running(p) and (why := self._refusal_of(p)) is not None:
                if self.halted() and not self._grace_over():
                    self.arm(pid, now_ms() + 1000)  # no child now; stopped once the grace is over (``halt_all``)
                    return
                self.log.warning("algorithm {}: {}", pid, why)
                await self.cancel_parent(pid, why)
                return
            if running(p):
                if p.type == "iceberg":
                    await self._step_iceberg(p)
                else:
                    await self._step_timed(p)
        await self._after(pid)  # (a parent that no longer runs: its children's cancels sent again when due)

    def _grace_over(self) -> bool:
        """HALTED long enough (``halt_grace_s``, the emergency stop's own cancel first) for the algorithms to be
        stopped here; halted before this router followed the state: at once."""
        since = self.halted_since
        return since is None or asyncio.get_running_loop().time() - since >= self.halt_grace_s

    def _working(self, p: Order) -> Decimal:
        """What the parent's children may still fill: a live child what it has left, one whose create is not
        confirmed stored or one rejected as unknown to the venue (it may still show up there) its whole quantity."""
        orders, live = self.store.orders, self.store.live
        kids, unsure = self.kids.get(p.order_id, {}), self.unsure.get(p.order_id, {})
        total = ZERO
        for c in p.children:
            if c in live and c in orders:
                total += unfilled_of(orders[c])
            elif c in unsure:
                total += unsure[c].quantity
            elif (kid := kids.get(c)) is not None and revivable(kid):
                total += unfilled_of(kid)
        return total

    def _live_children(self, p: Order) -> list[str]:
        """The children working (at the venue or on their way): those a cancel of the parent must reach."""
        return [c for c in p.children if c in self.store.live]

    def _busy(self, p: Order) -> bool:
        """Does a child of the parent still work, or may it (its create not confirmed stored; an iceberg's clip
        rejected as unknown to the venue: it may be showing there)? The parent neither ends nor shows a next clip."""
        if self._live_children(p) or self.unsure.get(p.order_id):
            return True
        if p.type == "iceberg" and running(p):  # (a stopped parent ends: should the clip show up, it is canceled)
            kids = self.kids.get(p.order_id, {})
            return any((kid := kids.get(c)) is not None and revivable(kid) for c in p.children)
        return False

    async def _step_timed(self, p: Order) -> None:
        assert p.algo_state is not None
        schedule = self.schedule(p)
        now = now_ms()
        slices = due(schedule, now, set(p.algo_state.sent))
        if not slices:
            return
        k = slices[-1].index
        step, least = self._sizing(p)
        notes = []
        if len(slices) > 1:
            late = now - slices[0].at_ms
            restarted = bool(self.restarted_at and slices[0].at_ms < self.restarted_at)
            if restarted:
                self.catchup.add(p.order_id)
            after = " after a restart" if restarted else ""
            notes.append(f"slices {slices[0].index}..{k} merged: overdue by {late} ms{after}")
        q = next_quantity(p, target_through(schedule, k), self._working(p), step)
        sent = set(p.algo_state.sent)
        later = sum(1 for s in schedule if s.index > k and s.index not in sent)
        if p.order_id in self.catchup and q > ZERO:  # the backlog spread over what remains, never sent at once
            left = p.quantity - p.filled_quantity - self._working(p)
            cap = catchup_cap(slices, left, later, step)
            if q > cap:
                what = f"the rest spread over the {later} slice(s) to come" if later else (
                    "the schedule's last slice is past: the rest is left unfilled"
                )  # fmt: skip
                notes.append(f"slice {k}: catching up after a restart: {cap} of {q} ({what})")
                q = cap
        if q > ZERO and q < least:
            notes.append(f"slice {k}: {q} is below the venue's smallest order {least}: carried to the next slice")
            q = ZERO
        elif q <= ZERO:
            notes.append(f"slice {k}: nothing to send (the earlier children cover the schedule so far)")
        elif p.price is None and (small := self._below_min_notional(p, q)) is not None:
            if later:
                notes.append(f"slice {k}: {small}: carried to the next slice")
            else:  # the last slice: what is left cannot be sent as one order either; the parent ends with the reason
                why = f"slice {k}, the last: the rest {small}: not sent"
                notes.append(why)
                self.end_note[p.order_id] = why
            q = ZERO
        target = target_through(schedule, k)
        await self._send(p.order_id, [s.index for s in slices], q, "; ".join(notes) or None, slices[-1].at_ms, target)

    def _below_min_notional(self, p: Order, q: Decimal) -> str | None:
        """A market child of ``q`` at the touch now (its price when it trades, not the parent's reference price at
        acceptance) is below the venue's minimum notional: why (None: the venue takes it, or cannot be told)."""
        rules, touch = self.rules_of(p), self.touch(p)
        if rules is None or touch is None or touch <= ZERO or rules.min_notional <= ZERO:
            return None
        if q >= child_min_quantity(rules, touch):
            return None
        return f"{q} x {touch} (the touch now) is below the venue's minimum notional {rules.min_notional}"

    async def _step_iceberg(self, p: Order) -> None:
        assert p.algo_state is not None
        if self._busy(p):
            if (kid := self._unknown_clip(p)) is not None:
                await self._give_up_unknown(p, kid)
            return  # one clip at a time (one that may be showing counts): the next when this one is done
        step, least = self._sizing(p)
        q = next_clip(p, ZERO, step, least)
        if q <= ZERO or (least and q < least):
            return  # nothing showable left: the end is decided in _after
        await self._send(p.order_id, [len(p.algo_state.sent)], q, None, now_ms(), p.quantity)

    def _unknown_clip(self, p: Order) -> Order | None:
        """A running iceberg's clip rejected as unknown to the venue, when it alone holds back the next clip (no
        other child working, none whose create is unsure)."""
        if p.type != "iceberg" or not running(p) or self._live_children(p) or self.unsure.get(p.order_id):
            return None
        kids = self.kids.get(p.order_id, {})
        return next((kid for c in p.children if (kid := kids.get(c)) is not None and revivable(kid)), None)

    def _unknown_until(self, kid: Order) -> int:
        """Until when an iceberg waits for its clip rejected as unknown to the venue to show up."""
        return (kid.closed_at or kid.updated_at) + UNKNOWN_CLIP_GRACES * self.unknown_grace_ms

    async def _give_up_unknown(self, p: Order, kid: Order) -> None:
        """An iceberg's clip rejected as unknown to the venue: once UNKNOWN_CLIP_GRACES x VENUE_UNKNOWN_GRACE_MS
        passed since, looked up at the venue once more. Shown there: what the venue says is applied (it works
        again). Still unknown: it most likely never reached the venue - the parent ends expired, the reason on its
        trail, a warning alert (its reservation is released); should the clip show up later, it is canceled."""
        pid, until = p.order_id, self._unknown_until(kid)
        if now_ms() < until:
            self.arm(pid, until)
            return
        try:
            known = await self.look_up(kid)
        except Exception as e:  # (the venue down): looked up again after a grace
            self.log.warning("algorithm {}: clip {} not looked up ({}); again shortly", pid, kid.order_id, e)
            self.arm(pid, now_ms() + self.unknown_grace_ms)
            return
        if known:
            self.log.warning("algorithm {}: clip {} rejected as unknown is at the venue after all", pid, kid.order_id)
            return
        waited = (now_ms() - (kid.closed_at or kid.updated_at)) / 1000
        async with self.store.lock:
            cur = self.store.orders.get(pid)
            now_kid = self.kids.get(pid, {}).get(kid.order_id)
            if cur is None or not running(cur) or now_kid is None or not revivable(now_kid):
                return  # (stopped, or the clip showed up, meanwhile)
            left = cur.quantity - cur.filled_quantity
            why = (
                f"clip {kid.order_id} unknown to {kid.venue}: still not there when looked up again {waited:.0f} s "
                f"after it was rejected as unknown to the venue: {left} left unfilled"
            )
            assert cur.algo_state is not None
            state = msgspec.structs.replace(cur.algo_state, done_reason=why)
            final = transition(msgspec.structs.replace(cur, algo_state=state), S.EXPIRED, now_ms(), why)
            await self.store.emit(final, S.EXPIRED.value)
        self.log.warning("algorithm {} ended expired: {}", pid, why)
        self._forget(pid)
        self.spawn(self.alert("warning", "ALGO_CLIP_UNKNOWN", f"algorithm {pid} expired: {why}"), "alert")

    async def _send(
        self, pid: str, indexes: list[int], q: Decimal, note: str | None, due_ms: int, target: Decimal
    ) -> None:
        """The parent updated first (the indexes sent, the child's id), then its child made and routed. ``q`` is
        capped here, under the lock, by what the children themselves took (``committed_of``: a child's fill may be
        stored before the parent follows it): never more than ``target`` (the schedule so far) in all."""
        store = self.store
        k = indexes[-1]
        cid: str | None = None
        if q > ZERO:
            ids, _ = await store.reserve_ids(slice_client_id(pid, k), 1, self.tag_of(store.orders[pid]))
            cid = ids[0]
            await self._known(store.orders[pid])  # (outside the lock: nothing is read back under it)
        async with store.lock:
            p = store.orders[pid]
            if not running(p) or p.algo_state is None or k in p.algo_state.sent or self.closed:
                return
            if self._refusal_of(p) is not None:
                self.arm(pid, now_ms())  # (the step stops the parent)
                return
            if p.type == "iceberg" and self._busy(p):
                return  # (a clip made meanwhile)
            if q > ZERO:
                committed = self._committed(p)
                step, least = self._sizing(p)
                capped = capped_quantity(q, target, p.quantity, committed, step)
                if capped < q:
                    self.log.info(
                        "algorithm {}: slice {} {} -> {} (its children took {})", pid, k, q, capped, committed
                    )
                    if capped <= ZERO or (least and capped < least):
                        why = f"slice {k}: nothing to send (the earlier children cover the schedule so far)"
                        note = f"{note}; {why}" if note else why
                        cid, capped = None, ZERO
                q = capped
            state = msgspec.structs.replace(p.algo_state, sent=[*p.algo_state.sent, *indexes], carried=ZERO)
            children = [*p.children, cid] if cid is not None else p.children
            new = msgspec.structs.replace(
                p, algo_state=state, children=children, reason=note or p.reason, updated_at=now_ms()
            )
            new = await store.emit(new, "slice_sent")
            try:
                child = await self._make_child(new, k, cid, q) if cid is not None else None
            except Exception as e:
                if cid is None or cid not in store.burned:  # it was never published: the slice has no child
                    why = f"slice {k}: its child {cid} could not be stored ({type(e).__name__}: {e}): carried on"
                    with contextlib.suppress(Exception):
                        cur = store.orders.get(pid, new)
                        await store.emit(msgspec.structs.replace(cur, reason=why, updated_at=now_ms()), "slice_carried")
                    raise
                await self._unconfirmed(new, k, cid, q, e)
                child = None
        if note:
            self.log.info("algorithm {}: {}", pid, note)
        if child is not None:
            self.sends += 1
            self.sent_at.append((due_ms, child.created_at))
            self.spawn(self._route_logged(child.order_id), "route")

    def tag_of(self, p: Order) -> str | None:
        return p.pair if self.partitioned else None

    async def _make_child(self, p: Order, k: int, cid: str, q: Decimal) -> Order | None:
        """The child of slice (clip) ``k``, stored (lock held); None when it exists already."""
        store = self.store
        if cid in store.orders or store.by_client.get(slice_client_id(p.order_id, k)) is not None:
            return None
        child = await store.emit(self._child_of(p, k, cid, q), "submitted")
        self.mark_fresh(child)
        self.log.info(
            "algorithm {}: child {} ({}) {} {} {}", p.order_id, cid, child.client_order_id, child.type, q, p.pair
        )
        return child

    async def _unconfirmed(self, p: Order, k: int, cid: str, q: Decimal, e: Exception) -> None:
        """A child whose create's publish raised (lock held): it may be stored all the same (a lost ack). Never
        carried into the next slice (that would send its quantity twice): counted as sent at its whole quantity
        (``unsure``) and published again under the same version and message id until confirmed (JetStream keeps
        one copy), then routed (``_confirm``)."""
        pid = p.order_id
        self.unsure.setdefault(pid, {})[cid] = self._child_of(p, k, cid, q)
        why = (
            f"slice {k}: its child {cid} was not confirmed stored ({type(e).__name__}: {e}): stored again "
            "under the same id until confirmed, counted as sent meanwhile"
        )
        self.log.warning("algorithm {}: {}", pid, why)
        with contextlib.suppress(Exception):
            cur = self.store.orders.get(pid, p)
            await self.store.emit(msgspec.structs.replace(cur, reason=why, updated_at=now_ms()), "slice_carried")
        self.spawn(self._confirm(pid, cid), "algo-confirm")

    async def _confirm(self, pid: str, cid: str) -> None:
        """A child whose create's publish raised, published again (same version, same message id) until the store
        confirms it: it exists once, whether or not the first publish was stored; then it is routed as any child
        (a parent stopped meanwhile cancels it: ``_after``)."""
        store = self.store
        pause = CONFIRM_RETRY_S
        while True:
            await asyncio.sleep(pause)
            child = self.unsure.get(pid, {}).get(cid)
            if child is None:
                return
            try:
                async with store.lock:
                    if cid in store.orders:  # (kept meanwhile)
                        stored: Order | None = None
                    else:
                        stored = await store.emit_again(child, "submitted")
                    self.unsure.get(pid, {}).pop(cid, None)
                    if stored is not None:
                        self.mark_fresh(stored)  # (never sent: a cancel or a send needs no lookup first)
                        if (why := self.unsendable(stored)) is not None:  # the parent stopped meanwhile
                            stored = await self._drop_unsent(stored, why)
            except Exception as e:
                pause = min(pause * 2, CONFIRM_RETRY_MAX_S)
                self.log.warning(
                    "algorithm {}: child {} not confirmed stored yet ({}); again in {} s", pid, cid, e, pause
                )
                continue
            if not self.unsure.get(pid, True):
                self.unsure.pop(pid, None)
            break
        if stored is not None:
            self.log.warning("algorithm {}: child {} confirmed stored: routed", pid, cid)
            self.sends += 1
            self.spawn(self._route_logged(cid), "route")
        await self._after(pid)

    async def _drop_unsent(self, child: Order, why: str) -> Order | None:
        """A child just confirmed stored that must not go (``unsendable``; lock held): canceled here - this run made
        it and never sent it, so it never reached the venue. None when canceled; the child itself (to be routed: the
        route's own guard cancels it) when that could not be stored."""
        try:
            await self.store.emit(transition(child, S.CANCELED, now_ms(), why), S.CANCELED.value)
        except Exception as e:
            self.log.warning(
                "algorithm {}: child {} not canceled here ({}): its route cancels it",
                child.parent_order_id,
                child.order_id,
                e,
            )
            return child
        self.log.warning(
            "algorithm {}: child {} confirmed stored and canceled, never sent: {}",
            child.parent_order_id,
            child.order_id,
            why,
        )
        return None

    def _child_of(self, p: Order, k: int, cid: str, q: Decimal) -> Order:
        """The child of slice (clip) ``k`` of ``q``, as made (not stored)."""
        coid = slice_client_id(p.order_id, k)
        ts = now_ms()
        if p.type == "iceberg":
            kind, price, tif = "limit", p.price, "GTC"
        elif p.price is not None:
            kind, price, tif = "limit", p.price, "IOC"  # at the cap: what does not fill now is carried
        else:
            kind, price, tif = "market", None, "IOC"
        child = Order(
            order_id=cid, client_order_id=coid, pair=p.pair, side=p.side, type=kind,  # type: ignore[arg-type]
            quantity=q, price=price, time_in_force=tif,  # type: ignore[arg-type]
            role="slice", parent_order_id=p.order_id, reference_price=p.price or p.reference_price,
            status=S.SUBMITTED, venue=p.venue, paper_trade=p.paper_trade, source=p.source, signal_id=p.signal_id,
            created_at=ts, updated_at=ts,
        )  # fmt: skip
        return child

    async def _route_logged(self, cid: str) -> None:
        try:
            await self.route(cid)
        except Exception as e:  # the reconcile sends it (or settles it) on its next pass
            self.log.warning("child {} not routed now ({}); the reconcile will try again", cid, e)

    # -- children's changes ----------------------------------------------------------------------------
    def on_stored(self, o: Order) -> None:
        """Any order stored (from the rebuild on): a child's change kept for its parent (``kids``) and, once the
        algorithms run, folded into it (after we let go of the lock)."""
        if o.type in ALGO_TYPES:
            if o.status in TERMINAL_STATUSES:  # (a late change of one of its children is read back: ``sync``)
                self.kids.pop(o.order_id, None)
            return
        pid = o.parent_order_id
        if o.role != "slice" or pid is None:
            return
        kids = self.kids.get(pid)
        parent = self.store.orders.get(pid) if kids is None else None
        if parent is not None and parent.status not in TERMINAL_STATUSES:
            kids = self.kids[pid] = {}
        if kids is not None:
            kids[o.order_id] = o
        if not self.active:
            return
        self.dirty.setdefault(pid, set()).add(o.order_id)
        if pid not in self.syncing:
            self.syncing.add(pid)
            self.spawn(self._sync_logged(pid), "algo-sync")

    async def _sync_logged(self, pid: str) -> None:
        self.syncing.discard(pid)
        try:
            await self.sync(pid)
            await self._after(pid)
        except Exception as e:  # tried again shortly: the parent must follow its children's fills and ends
            self.log.exception("algorithm {}: sync failed ({}); tried again in {} s", pid, e, SYNC_RETRY_S)
            if pid not in self.syncing:
                self.syncing.add(pid)
                self.spawn(self._sync_later(pid), "algo-sync")

    async def _sync_later(self, pid: str) -> None:
        await asyncio.sleep(SYNC_RETRY_S)
        await self._sync_logged(pid)

    async def sync(self, pid: str, everything: bool = False) -> None:
        """The parent's fills are its children's (each fill once); a child that ended is carried or, rejected by
        the venue (or an iceberg clip the venue canceled), stops the parent. Only the children changed since the
        last sync are looked at (``everything``: all of them, at resume); none is read back from ORDERS under the
        store's lock, and a live parent's children are never read back at all (``kids``)."""
        store = self.store
        p = store.orders.get(pid) or await store.recall(pid)
        if p is None or p.type not in ALGO_TYPES:
            return
        changed = self.dirty.pop(pid, set())
        try:
            await self._sync(p, changed, everything)
        except BaseException:
            self.dirty.setdefault(pid, set()).update(changed)  # (looked at again by the next sync)
            raise

    async def _sync(self, p: Order, changed: set[str], everything: bool) -> None:
        store, pid = self.store, p.order_id
        if await self._known(p):
            kept = self.kids[pid]
            ids = list(p.children) if everything else [c for c in p.children if c in changed]
            kids = [kept[c] for c in ids if c in kept]
        else:  # a parent that ended (a child's late change): its children read back, outside the lock
            kids = [k for c in p.children if (k := await store.recall(c)) is not None]
        async with store.lock:
            cur = store.orders.get(pid) or p
            new = cur
            over: str | None = None
            kids = [store.orders.get(k.order_id, k) for k in kids]
            for kid in kids:
                for ref in kid.fills:
                    try:
                        new = self._with_fill(new, ref)
                    except Overfilled as e:
                        over = (
                            over or f"overfilled: child {kid.order_id}'s fill {ref.fill_id} is past the quantity ({e})"
                        )
            if new is not cur:
                new = await store.emit(new, new.status.value)
            stop = over or self._stop_reason(new, kids)
            if stop is not None and running(new):
                assert new.algo_state is not None
                state = msgspec.structs.replace(new.algo_state, done_reason=stop)
                new = await store.emit(msgspec.structs.replace(new, algo_state=state, reason=stop), "stopping")
                self.log.warning("algorithm {} stops: {}", pid, stop)
                if over is not None:
                    self.spawn(self.alert("emergency", "ALGO_OVERFILLED", f"algorithm {pid} stopped: {over}"), "alert")
            elif running(new) and new.type != "iceberg" and new.algo_state is not None:
                carried = self._carried(new)
                if carried > ZERO and carried != new.algo_state.carried:
                    state = msgspec.structs.replace(new.algo_state, carried=carried)
                    why = f"{carried} left unfilled by earlier slices: carried to the next slice"
                    await store.emit(msgspec.structs.replace(new, algo_state=state, reason=why), "slice_carried")
            unknown = [k for k in kids if revivable(k)]
            if unknown and (now := store.orders.get(pid)) is not None and now.status not in TERMINAL_STATUSES:
                for kid in unknown:  # said once on the trail (its reason is its own: the child's rejection)
                    why = (
                        f"child {kid.order_id} rejected as unknown to the venue: it may still show up there and fill, "
                        "so it counts as sent at its whole quantity"
                        + (" (no next clip while it may be showing)" if now.type == "iceberg" else "")
                    )
                    if now.reason != why:
                        now = await store.emit(msgspec.structs.replace(now, reason=why), "child_unknown")

    def _with_fill(self, p: Order, ref: object) -> Order:
        """A child's fill on the parent (once, by fill id); a parent that is stopping keeps its state until its
        children are done (then it ends)."""
        try:
            new = apply_fill(p, ref)  # type: ignore[arg-type]
        except IllegalTransition as e:
            self.log.error("algorithm {}: child fill not applied: {}", p.order_id, e)
            return p
        except Overfilled as e:  # never dropped quietly: the algorithm stops (sync)
            self.log.error("algorithm {}: child fill overfills the parent: {}", p.order_id, e)
            raise
        if new is p:
            return p
        if new.status is not S.FILLED and p.status in (S.PENDING_CANCEL, *TERMINAL_STATUSES):
            new = msgspec.structs.replace(new, status=p.status, closed_at=p.closed_at)
        return new

    def _carried(self, p: Order) -> Decimal:
        """What the slices sent so far asked for and neither a fill nor a working child covers."""
        assert p.algo_state is not None
        if not p.algo_state.sent:
            return ZERO
        left = target_through(self.schedule(p), max(p.algo_state.sent)) - p.filled_quantity - self._working(p)
        return left if left > ZERO else ZERO

    def _stop_reason(self, p: Order, kids: list[Order]) -> str | None:
        for kid in kids:
            if kid.order_id in self.store.live:
                continue
            transient = (kid.reason or "").startswith(TRANSIENT_REJECTIONS)
            if kid.status is S.REJECTED and transient and p.type != "iceberg":
                continue  # (a child sent before the books were read, after a restart): carried to the next slice
                # (an iceberg's next clip would follow at once: it stops, as before)
            if kid.status is S.REJECTED and kid.venue_status == "rejected":
                return f"child {kid.order_id} rejected by {kid.venue}: {kid.reason or 'no reason given'}"
            if (
                p.type == "iceberg"
                and kid.status in (S.CANCELED, S.EXPIRED)
                and not (kid.reason or "").startswith(("canceled by request", "cancel-all"))
                and not (kid.reason or "").startswith(f"parent {p.order_id}")
            ):
                return f"clip {kid.order_id} ended {kid.status.value} at {kid.venue}: {kid.reason or 'no reason given'}"
        return None

    async def _after(self, pid: str) -> None:
        """After a step or a child's change: the parent ends when it is done, else its next slice is armed. A parent
        that no longer runs has its working children's cancels sent again when one was refused (or never sent)."""
        store = self.store
        p = store.orders.get(pid)
        if p is None or p.type not in ALGO_TYPES or p.algo_state is None:
            return
        if p.status in TERMINAL_STATUSES:
            self._forget(pid)
            await self._recancel(p)  # (a child that showed up at the venue after its parent ended)
            return
        if not running(p):
            await self._recancel(p)
        if self._busy(p):
            self._arm_next(p)
            if (kid := self._unknown_clip(p)) is not None:  # looked up once more when its wait is over
                self.arm(pid, self._unknown_until(kid))
            return
        end: tuple[OrderStatus, str] | None = None
        left = p.quantity - p.filled_quantity
        if not running(p):
            end = (S.CANCELED, p.algo_state.done_reason or p.reason or "canceled")
        elif p.type == "iceberg":
            step, least = self._sizing(p)
            if left > ZERO and (q := next_clip(p, ZERO, step, least)) > ZERO and not (least and q < least):
                self.spawn(self._step_logged(pid), "algo-step")
                return
            if left > ZERO:
                end = (S.EXPIRED, f"unfilled at the end of the schedule: {left} left (below the venue's minimum)")
        elif len(set(p.algo_state.sent)) >= len(self.schedule(p)) and left > ZERO:
            note = self.end_note.get(pid)
            end = (S.EXPIRED, f"unfilled at the end of the schedule: {left} left" + (f" ({note})" if note else ""))
        if end is None:
            self._arm_next(p)
            return
        status, why = end
        async with store.lock:
            cur = store.orders[pid]
            if cur.status in TERMINAL_STATUSES or self._busy(cur):
                return
            state = msgspec.structs.replace(cur.algo_state, done_reason=why) if cur.algo_state else None
            final = transition(msgspec.structs.replace(cur, algo_state=state), status, now_ms(), why)
            await store.emit(final, status.value)
        self.log.info("algorithm {} ended {}: {}", pid, status.value, why)
        self._forget(pid)

    async def _recancel(self, p: Order, now: bool = False) -> str | None:
        """A parent that no longer runs: its working children that are not being canceled (their cancel refused,
        or never sent: a crash between the parent's pending_cancel and their cancels) are canceled (again), at
        most every CANCEL_RETRY_S, the pause doubling up to CANCEL_RETRY_MAX_S (``now``: at once), the parent armed
        for the next try. The first refusal (None: none)."""
        store, pid = self.store, p.order_id
        todo = [c for c in self._live_children(p) if cancelable(store.orders[c])]
        if not todo:
            self.cancel_at.pop(pid, None)
            return None
        clock = asyncio.get_running_loop().time()
        at, pause = self.cancel_at.get(pid, (0.0, CANCEL_RETRY_S / 2))
        if not now and clock < at:
            self.arm(pid, now_ms() + int((at - clock) * 1000) + 1)
            return None
        pause = min(pause * 2, CANCEL_RETRY_MAX_S)
        self.cancel_at[pid] = (clock + pause, pause)
        reason = (p.algo_state.done_reason if p.algo_state else None) or p.reason or "canceled"
        first: str | None = None
        for cid in todo:
            try:
                _, refusal = await self.cancel(cid, f"parent {pid}: {reason}")
            except KeyError:
                continue
            except Exception as e:  # (the venue down, the store not answering): tried again after the pause
                refusal = f"{type(e).__name__}: {e}"
            kid = store.orders.get(cid)
            if refusal is not None and kid is not None and cid in store.live and cancelable(kid):
                first = first or f"child {cid}: {refusal}"
        if first is not None:
            self.log.warning("algorithm {}: a child's cancel refused ({}); sent again in {} s", pid, first, pause)
        self.arm(pid, now_ms() + int(pause * 1000))
        return first

    def _forget(self, pid: str) -> None:
        self.catchup.discard(pid)
        self.end_note.pop(pid, None)
        self.next_at.pop(pid, None)
        self.schedules.pop(pid, None)
        self.guards.pop(pid, None)

    # -- cancel ----------------------------------------------------------------------------------------
    async def cancel_parent(self, pid: str, reason: str) -> tuple[Order, str | None]:
        """Stop the schedule, cancel the working children, then the parent ends canceled (at once when none works).
        The first child's cancel that was refused is the answer's refusal (the parent stays pending_cancel and its
        children's cancels are sent again, with a back-off, until they are gone); None when every one went out."""
        store = self.store
        known = store.orders.get(pid) or await store.recall(pid)  # (read back outside the lock)
        if known is None:
            raise KeyError(pid)
        async with store.lock:
            p = store.orders.get(pid, known)
            if p.status in TERMINAL_STATUSES:
                return p, f"order {pid} is already {p.status.value}"
            if running(p):
                assert p.algo_state is not None
                state = msgspec.structs.replace(p.algo_state, done_reason=reason)
                stopping = to_pending(p, S.PENDING_CANCEL, now_ms(), reason)
                p = await store.emit(
                    msgspec.structs.replace(stopping, algo_state=state, reason=reason), "pending_cancel"
                )
        self.next_at.pop(pid, None)
        refused = await self._recancel(p, now=True)
        await self.sync(pid)
        await self._after(pid)
        if refused is not None:
            refused += (
                f"; the parent is {store.orders.get(pid, p).status.value}: the cancel is sent again until it goes"
            )
        return store.orders.get(pid, p), refused

    def trading_changed(self, state: str, why: str | None, grace_s: float) -> None:
        """The trading state changed: HALTED is remembered (since when: its grace), and a refusal (``why``: HALTED
        or REDUCING) stops the running algorithms it applies to (``halt_all``)."""
        halted = state == "HALTED"
        if not halted:
            self.halted_since = None
        elif self.halted_since is None:
            self.halted_since = asyncio.get_running_loop().time()
        self.halt_grace_s = grace_s if halted else self.halt_grace_s
        if why is not None:
            self.halt_all(why, grace_s if halted else 0.0)

    def halt_all(self, why: str, grace_s: float = 0.0) -> None:
        """Trading halted (or REDUCING): every running algorithm it applies to stopped, its working children
        canceled. No child goes out from now on (``refusal``); the stop itself after ``grace_s`` (HALTED: the
        emergency stop's cancel of every working order comes first and names the parents it canceled), once the
        state is read again: trading resumed within the grace, the algorithms go on."""
        self.spawn(self._halt_all(why, grace_s), "algo-halt")

    async def _halt_all(self, why: str, grace_s: float) -> None:
        if grace_s > 0:
            await asyncio.sleep(grace_s)
        for pid in list(self.store.live):
            p = self.store.orders.get(pid)
            if p is not None and p.type in ALGO_TYPES and running(p):
                if (now := self._refusal_of(p)) is None:  # (resumed within the grace; a reducing one in REDUCING)
                    continue
                self.spawn(self._stop_logged(pid, now), "algo-stop")

    async def _stop_logged(self, pid: str, why: str) -> None:
        try:
            await self.cancel_parent(pid, why)
        except Exception as e:  # the next step stops it (it asks the trading state first)
            self.log.exception("algorithm {}: not stopped now ({}); its next step stops it", pid, e)
            self.arm(pid, now_ms() + 1000)

    def stats(self) -> dict[str, int]:
        return {"algoParents": sum(1 for o in self.store.live if self.store.orders[o].type in ALGO_TYPES)}

    restarted_at: int = 0
    active = False
