"""The order store over JetStream: the orders, their events, and the only writer of ORDERS.

Every order change is an event on the ORDERS stream (``tbx.events.orders.<pair>``); the store keeps the
working orders and the last KEEP_CLOSED closed ones in memory and reads older ones back from the stream
by their first and last sequence (all that stays of them in memory, a few bytes per order).

Durability rules kept here:
- a change is in memory only once its event is stored on ORDERS (publish, then keep); changes are
  serialised under ``lock``, so two handlers never build on the same version;
- a publish that fails may still have been stored: its version is burned and never reused;
- the ids of a client order id are reserved once in KV, so a create retried after a lost publish reuses
  them and never makes a second order;
- on start the orders are rebuilt from ORDERS (the crash-recovery path).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors

from actors.ids import OrderIds
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure, decode
from domain.orders import WORKING, IllegalTransition, Overfilled
from domain.recent import OrderTable
from domain.risk import RESERVED_CLIENT_PREFIX
from schemas.messages import TERMINAL_STATUSES, Order, OrderEvent, OrdersQuery, OrderStatus, now_ms

if TYPE_CHECKING:
    from loguru import Logger

S = OrderStatus
KEEP_CLOSED = 1_000  # closed orders kept in memory; older ones are read back from ORDERS when asked for
SCAN_BATCH = 64  # orders read back from ORDERS at once when a list query goes beyond memory
MAX_SCAN = 20_000  # ... and at most this many per page (a page cut there is shorter; its cursor goes on)
CLOCK_SLACK_MS = 1_000  # creation times of orders read back may be this much out of id order


def _event_in(msg: object | None) -> OrderEvent | None:
    """The event of a stored ORDERS message (None if missing or unreadable)."""
    if msg is None:
        return None
    try:
        return decode(getattr(msg, "data", None) or b"", OrderEvent)
    except DecodeFailure:
        return None


def _reserved(value: bytes | None) -> tuple[list[str], str | None]:
    """A reservation's order ids and the pair it names (only partitioned deployments write one)."""
    ids, _, pair = (value or b"").decode().partition("@")
    return ids.split(","), pair or None


def _coid_key(client_order_id: str) -> str:
    """The KV key holding the order ids reserved for a client order id."""
    return "coid." + hashlib.sha1(client_order_id.encode()).hexdigest()


class OrderStore:
    def __init__(self, bus: Bus, log: Logger) -> None:
        self.bus = bus
        self.subjects = bus.subjects
        self.log = log
        self.orders: dict[str, Order] = {}
        self.by_client: dict[str, str] = {}
        self.events: dict[str, list[OrderEvent]] = {}
        self.live: set[str] = set()  # orders that may still change: working, or waiting for fills
        self.burned: dict[str, int] = {}  # order id -> a version whose publish may or may not be stored
        # closed orders leave memory for the ORDERS stream (oldest first, KEEP_CLOSED kept): where each
        # order's events are stored there is all that stays, a few bytes per order
        self.closed: deque[str] = deque()
        # an algorithm's closed children stay in memory while their parent is live (its every step and sync reads
        # all of them): parent id -> those children, queued for ``closed`` when the parent closes
        self.held: dict[str, list[str]] = {}
        self.first_seq = OrderTable("Q")
        self.last_seq = OrderTable("Q")
        self.evicted_created = 0  # the newest creation time among the orders that left memory
        self.lock = asyncio.Lock()
        # the pairs this store keeps (its partition's, PARTITIONS > 1): other partitions' orders are not read in
        self.owns: Callable[[str], bool] = lambda pair: True
        self.reserved_pair: str | None = None  # the pair named by the last reservation read (partitioned)
        self.processed = 0
        self.filled = 0
        self.rejected = 0
        # told of every order kept (after ``live`` has it): the emulator follows the live reduce-only ones
        self.on_stored: Callable[[Order], None] = lambda o: None
        self.changes = 0  # changes stored by this run (a reader can tell whether any came in between)
        self.changes_of: dict[str, int] = {}  # ... of each venue's orders

    async def load(self) -> None:
        """Open the KV bucket of reserved ids and rebuild the orders from the ORDERS stream."""
        s = self.subjects
        self.kv = await self.bus.kv(s.kv_state)
        self.ids = OrderIds(self.kv)
        await self.bus.replay(
            stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._rebuild, follow=False
        )
        self.log.info(
            "rebuilt {} orders ({} working) from the ORDERS stream",
            len(self.orders),
            sum(1 for o in self.orders.values() if o.status in WORKING or o.status is S.INITIALIZED),
        )

    def stats(self) -> dict[str, int | float | str]:
        done = self.filled + self.rejected
        return {
            "ordersProcessed": self.processed,
            "ordersFilled": self.filled,
            "ordersRejected": self.rejected,
            "workingOrders": len(self.live),
            "successRate": round(100.0 * self.filled / done, 2) if done else 100.0,
        }

    # -- state -----------------------------------------------------------------------------------------
    async def _rebuild(self, ev: OrderEvent, env: Envelope) -> None:
        if not self.owns(ev.order.pair):  # another partition's order
            return
        oid = ev.order.order_id
        self._stored_at(oid, env.seq or 0)
        known = self.orders.get(oid)
        if known is None or ev.order.version > known.version:
            self.events.setdefault(oid, []).append(ev)
            self._store(ev.order)

    def _stored_at(self, order_id: str, seq: int) -> None:
        if not self.first_seq.get(order_id):
            self.first_seq.set(order_id, seq)
        self.last_seq.set(order_id, max(seq, self.last_seq.get(order_id)))

    def _store(self, o: Order) -> None:
        prev = self.orders.get(o.order_id)
        self.orders[o.order_id] = o
        self.by_client[o.client_order_id] = o.order_id
        was_live = o.order_id in self.live
        if o.status in TERMINAL_STATUSES and (o.venue_filled is None or o.filled_quantity >= o.venue_filled):
            self.live.discard(o.order_id)
            if was_live or prev is None:
                self._retire(o.order_id)
        else:
            self.live.add(o.order_id)
        self.on_stored(o)
        if prev is None:
            self.processed += 1
        if o.status is S.FILLED and (prev is None or prev.status is not S.FILLED):
            self.filled += 1
        if o.status is S.REJECTED and (prev is None or prev.status is not S.REJECTED):
            self.rejected += 1

    def _retire(self, order_id: str) -> None:
        """An order is closed (all its fills in): it leaves memory once KEEP_CLOSED newer ones closed, and
        not while an order of its bracket still works (the bracket logic reads them together), nor while its
        algorithm's parent is live (the parent's steps and syncs read every child: read back from ORDERS each
        time, many parents' children would thrash in and out of memory)."""
        o = self.orders.get(order_id)
        if o is not None and o.role == "slice" and o.parent_order_id in self.live:
            self.held.setdefault(o.parent_order_id, []).append(order_id)
            return
        self.closed.append(order_id)
        self.closed.extend(self.held.pop(order_id, ()))  # a parent closed: its children may leave memory now
        for _ in range(len(self.closed) - KEEP_CLOSED):
            oid = self.closed.popleft()
            o = self.orders.get(oid)
            if o is None or oid in self.live:
                continue
            if any(linked in self.live for linked in (o.linked_orders or {}).values()):
                self.closed.append(oid)  # looked at again later
                continue
            del self.orders[oid]
            self.events.pop(oid, None)
            self.burned.pop(oid, None)
            if self.by_client.get(o.client_order_id) == oid:
                del self.by_client[o.client_order_id]
            self.evicted_created = max(self.evicted_created, o.created_at)

    async def recall(self, order_id: str) -> Order | None:
        """The order, from memory or - once it left memory - from its events on ORDERS (kept in memory
        again for a while). None if no such order was ever stored."""
        if (o := self.orders.get(order_id)) is not None:
            return o
        last = self.last_seq.get(order_id)
        if not last:
            return None
        events = await self._read_events(order_id, self.first_seq.get(order_id) or last, last)
        if (o := self.orders.get(order_id)) is not None:  # recalled by someone else meanwhile
            return o
        if not events:
            return None
        o = events[-1].order
        self.orders[order_id] = o
        self.events[order_id] = events
        self.by_client.setdefault(o.client_order_id, order_id)
        self._retire(order_id)
        return o

    async def _read_events(self, order_id: str, first: int, last: int) -> list[OrderEvent]:
        """An order's events, stored between ``first`` and ``last`` (its pair's events in between skipped)."""
        out: list[OrderEvent] = []
        seq, subject = first, None
        while seq <= last:
            msg = await self._stored(seq, subject)
            if msg is None or msg.seq is None or msg.seq > last:
                break
            seq = msg.seq + 1
            if (ev := _event_in(msg)) is None:
                continue
            subject = subject or self.subjects.order_events(ev.order.pair)
            if ev.order.order_id == order_id:
                out.append(ev)
        return out

    async def order_of_client(self, client_order_id: str) -> str | None:
        """The order id a client order id names: memory, else its reservation in KV."""
        if (oid := self.by_client.get(client_order_id)) is not None:
            return oid
        if client_order_id.startswith(RESERVED_CLIENT_PREFIX):  # a bracket leg: tbx:<order id>:<role>
            oid = client_order_id.removeprefix(RESERVED_CLIENT_PREFIX).partition(":")[0]
            return oid if self.last_seq.get(oid) else None
        try:
            entry = await self.kv.get(_coid_key(client_order_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        ids = _reserved(entry.value)[0]
        return ids[0] if ids and ids[0] and self.last_seq.get(ids[0]) else None

    async def emit(self, order: Order, event: str) -> Order:
        """Persist a change as an event on ORDERS, then keep it. Call with ``self.lock`` held.

        A publish that fails may still have been stored: its version is burned, so the next change
        never reuses it (JetStream would drop it as a duplicate of the stored one)."""
        version = max(order.version, self.burned.get(order.order_id, 0)) + 1
        order = msgspec.structs.replace(order, version=version)
        ev = OrderEvent(event=event, order=order, ts=now_ms())  # when we recorded it (fills carry the venue's time)
        try:
            seq = await self.bus.js_publish(
                self.subjects.order_events(order.pair), ev, msg_id=f"{order.order_id}:{version}"
            )
        except Exception:
            self.burned[order.order_id] = version
            raise
        return self._kept(order, ev, seq)

    async def emit_again(self, order: Order, event: str) -> Order:
        """Publish again a change whose ``emit`` raised (its version burned: it may be stored, or not), under the
        same version and message id: JetStream's duplicate window keeps one copy whichever it was, so the change
        is stored exactly once; then it is kept. Call with ``self.lock`` held; raises as ``emit`` does (try
        again). ValueError when no publish of that order failed."""
        version = self.burned.get(order.order_id)
        if version is None:
            raise ValueError(f"no failed publish of {order.order_id} to try again")
        order = msgspec.structs.replace(order, version=version)
        ev = OrderEvent(event=event, order=order, ts=now_ms())
        seq = await self.bus.js_publish(
            self.subjects.order_events(order.pair), ev, msg_id=f"{order.order_id}:{version}"
        )
        return self._kept(order, ev, seq)

    def _kept(self, order: Order, ev: OrderEvent, seq: int) -> Order:
        self._stored_at(order.order_id, seq)
        self.events.setdefault(order.order_id, []).append(ev)
        self._store(order)
        self.changes += 1
        self.changes_of[order.venue] = self.changes_of.get(order.venue, 0) + 1
        return order

    async def update(self, order_id: str, change: Callable[[Order], Order], event: str | None = None) -> Order | None:
        """Apply ``change`` to the current order and persist the result (event named after its new
        status unless given). An illegal change is logged and ignored, never a crash."""
        async with self.lock:
            return await self.update_locked(order_id, change, event)

    async def update_locked(
        self, order_id: str, change: Callable[[Order], Order], event: str | None = None
    ) -> Order | None:
        current = self.orders[order_id]
        try:
            new = change(current)
        except (IllegalTransition, Overfilled) as e:
            self.log.warning("ignored on {}: {}", order_id, e)
            return None
        if new is current:
            return None
        return await self.emit(new, event or new.status.value)

    async def reserve_ids(self, client_order_id: str, n: int, pair: str | None = None) -> tuple[list[str], bool]:
        """The order ids of this client order id, and whether they were reserved before: reserved once
        in KV, so a create retried after a lost publish (even one that was stored) reuses them and never
        makes a second order. Partitioned (``pair`` given), the reservation names its pair (``ids@pair``):
        ``reserved_pair`` then says whose the ids are (another partition's order must not be made again here)."""
        ids, existed, self.reserved_pair = await self.reserve(client_order_id, n, pair)
        return ids, existed

    async def reserve(
        self, client_order_id: str, n: int, pair: str | None = None
    ) -> tuple[list[str], bool, str | None]:
        """``reserve_ids`` without the shared ``reserved_pair``: the ids, whether they were reserved before, and the
        pair the reservation names - safe to call beside other reservations (not under ``lock``)."""
        key = _coid_key(client_order_id)
        ids = [await self.ids.next() for _ in range(n)]
        try:
            await self.kv.create(key, (",".join(ids) + (f"@{pair}" if pair else "")).encode())
            return ids, False, pair
        except nats.js.errors.KeyWrongLastSequenceError:
            entry = await self.kv.get(key)
            ids, named = _reserved(entry.value)
            return ids, True, named

    # -- the list query --------------------------------------------------------------------------------
    async def page(self, q: OrdersQuery, after: tuple[int, str] | None, limit: int) -> tuple[list[Order], str | None]:
        """A page of the orders that match, newest first (by creation), and the cursor of the next one.

        Memory has the latest word on the orders it holds. Those that left it are read back from ORDERS
        by their last event's sequence, newest id first: order ids count up as orders are created, so
        once ``limit + 1`` of them matched, no older one can rank higher. At most MAX_SCAN are read per
        page; a page cut there is shorter and its cursor goes on from the last order read.
        """

        def wanted(o: Order) -> bool:
            return (
                (q.status is None or o.status is q.status)
                and (not q.open or o.status not in TERMINAL_STATUSES)
                and (q.pair is None or o.pair == q.pair)
                and (q.side is None or o.side == q.side)
                and (q.since is None or o.created_at >= q.since)
                and (q.until is None or o.created_at < q.until)
                and (after is None or (o.created_at, o.order_id) < after)
            )

        def rank(o: Order) -> tuple[int, str]:
            return o.created_at, o.order_id

        def cursor_of(o: Order) -> str:
            return f"{o.created_at}:{o.order_id}"

        mine = heapq.nlargest(limit + 1, (o for o in self.orders.values() if wanted(o)), key=rank)
        # only terminal orders ever leave memory (_retire): a query for working orders only is answered from it
        working_only = q.open or (q.status is not None and q.status not in TERMINAL_STATUSES)
        if (
            working_only
            or not self.evicted_created
            or (len(mine) > limit and mine[-1].created_at > self.evicted_created)
        ):
            return mine[:limit], cursor_of(mine[limit - 1]) if len(mine) > limit else None  # memory alone
        theirs: list[Order] = []
        ids = self.last_seq.ids_descending(after[1] if after else None)
        examined, last, done = 0, None, False
        while len(theirs) <= limit and not done and examined < MAX_SCAN:
            batch = list(itertools.islice(ids, SCAN_BATCH))
            if not batch:
                done = True
                break
            stored = await asyncio.gather(
                *(self._stored(self.last_seq.get(oid)) for oid in batch if oid not in self.orders)
            )
            for msg in stored:
                if (ev := _event_in(msg)) is None:
                    continue
                o = ev.order
                examined, last = examined + 1, o
                if wanted(o):
                    theirs.append(o)
                if q.since is not None and o.created_at < q.since - CLOCK_SLACK_MS:
                    done = True  # created before the window, and so was every order read after it
                    break
        merged = heapq.nlargest(limit + 1, mine + theirs, key=rank)
        if len(theirs) <= limit and not done and last is not None:  # cut at MAX_SCAN: go on from `last`
            page = [o for o in merged if rank(o) >= rank(last)][:limit]
            self.log.info("orders query read {} orders back from ORDERS: a shorter page", examined)
            return page, cursor_of(page[-1] if len(page) == limit else last)
        return merged[:limit], cursor_of(merged[limit - 1]) if len(merged) > limit else None

    async def _stored(self, seq: int, subject: str | None = None) -> Any:
        """The ORDERS message at ``seq`` (with ``subject``: the first one of that subject from ``seq`` on),
        or None."""
        if not seq:
            return None
        try:
            if subject is None:
                return await self.bus.js.get_msg(self.subjects.s_orders, seq)
            return await self.bus.js.get_msg(self.subjects.s_orders, seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return None
