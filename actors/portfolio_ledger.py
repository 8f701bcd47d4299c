"""portfolio-ledger: the book of record. Positions, balances, P&L, position history, performance.

It books every fill on the FILLS stream, whoever wrote it, exactly once (by fill id, in stream
order), and follows the ORDERS stream for what working orders lock. Its state is a pure fold of
``domain.ledger`` over those two streams, so a restart - even after a kill -9 in the middle of a
stream of fills - rebuilds the very same books: from the latest snapshot in JetStream KV (written
every SNAPSHOT_INTERVAL ms and at stop), then the events after it.

Marks come from the mid of the latest ``tbx.md.book.<pair>``; the portfolio is revalued every
POSITION_UPDATE_INTERVAL ms: an equity sample for the performance figures and a snapshot on
``tbx.events.portfolio``; each change of a position goes on ``tbx.events.positions.<pair>``.
Totals are in BASE_CURRENCY, every currency converted at the marks (CONVERSION_BRIDGE: see
domain/valuation.py). A balance that goes below what the settings allow (below zero; with
ALLOW_SHORT, below the short positions) raises one critical alert on ``tbx.events.risk`` per breach.
"""

from __future__ import annotations

import time
from decimal import Decimal

import msgspec

from actors.base import Actor
from actors.books import BookCache
from actors.snapshots import SnapshotStore
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure
from bus.errors import RequestFailed
from config.settings import PARSERS, Settings, parse_currency_precision
from domain.ids import day_key
from domain.ledger import Ledger, LedgerError
from domain.performance import EquityTracker, report
from domain.recent import FILL_DEDUPE_WINDOW, RecentIds
from domain.valuation import DayStart, Rounding, cycle_view, equity, position_view, roll_day, snapshot
from schemas.messages import (
    Empty,
    Fill,
    HistoryQuery,
    OrderEvent,
    Performance,
    PortfolioSnapshot,
    PositionsHistory,
    RiskAlert,
    RiskMetricsView,
    now_ms,
)

MAX_HISTORY_PAGE = 1000
LIMITS_EVERY_S = 5.0  # how often the ledger asks the risk-gate for ALLOW_SHORT
LIMITS_GRACE_S = 10.0  # without an answer by then, the setting decides the NEGATIVE_BALANCE alerts
FOLD_VERSION = 3  # bump when domain/ledger.py books a fill differently (3: locks know their side)


class LedgerState(msgspec.Struct):
    """What a snapshot holds: the books and where in the streams they stand."""

    ledger: Ledger
    day: DayStart
    tracker: EquityTracker
    applied: list[str]  # the latest fill ids booked, oldest first (at most FILL_DEDUPE_WINDOW)
    fills_seq: int
    orders_seq: int
    fold: int = 0  # the version of the books' maths that made it: another one rebuilds from the streams


class PortfolioLedger(Actor):
    name = "portfolio-ledger"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.ledger = Ledger(settings.BASE_CURRENCY, settings.INITIAL_BALANCE)
        self.books = BookCache(bus)
        self.marks: dict[str, Decimal] = self.books.mids  # marks are the mids of the latest books
        self.day = DayStart()
        self.tracker = EquityTracker(settings.INITIAL_BALANCE)
        self.applied = RecentIds(FILL_DEDUPE_WINDOW)
        self.last_seq = 0
        self.orders_seq = 0
        self.saved_at = (-1, -1)
        self.live = False
        self.rejected = 0
        self.alerted: set[str] = set()
        self.dirty: set[str] = set()  # pairs changed while catching up
        self.rounding = Rounding(parse_currency_precision(settings.CURRENCY_PRECISION))
        self.bridge = settings.CONVERSION_BRIDGE
        self.allow_short = settings.ALLOW_SHORT  # as the risk-gate's limits say (_follow_limits)
        # until the risk-gate answered once (it may start after us), no NEGATIVE_BALANCE alert is decided on
        # the setting alone, which PUT /api/risk/config may have changed; after LIMITS_GRACE_S it is used
        self.limits_known = False
        self.started_mono = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.kv = await self.bus.kv(s.kv_state)
        self.snapshots = SnapshotStore(self.kv, "ledger")
        await self._follow_limits(timeout=0.3)
        await self._restore()
        await self.bus.replay(
            stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._on_fill, start_seq=self.last_seq + 1
        )
        await self.bus.replay(
            stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._on_order,
            start_seq=self.orders_seq + 1,
        )  # fmt: skip
        self.live = True
        await self.books.start()  # marks from now on (a replay values at the fills' own prices)
        await self._check_negative()
        total = equity(self.ledger, self.marks, self.bridge)
        for pair in sorted(self.dirty):  # what changed while we were away, announced once we are back
            view = position_view(self.ledger, pair, self.marks, self.day, total, self.rounding, self.bridge)
            await self.bus.js_publish(self.subjects.position_events(pair), view)
        self.dirty.clear()
        self.log.info(
            "books rebuilt: {} fills (stream seq {}), {} working orders locking funds",
            self.ledger.fills_applied, self.last_seq, len(self.ledger.locks),
        )  # fmt: skip
        for what, type_, handler in (
            ("portfolio", Empty, self._on_query),
            ("portfolio_refresh", Empty, self._on_refresh),
            ("positions_history", HistoryQuery, self._on_history),
            ("performance", Empty, self._on_performance),
        ):
            await self.bus.subscribe(s.query(what), type_, handler, queue=self.name)  # type: ignore[arg-type]
        interval = self.settings.POSITION_UPDATE_INTERVAL / 1000
        self.spawn(self.every(interval, self.revalue, "portfolio revaluation"), "revalue")
        self.spawn(self.every(LIMITS_EVERY_S, self._follow_limits, "reading the risk limits"), "limits")
        self.spawn(self.every(self.settings.SNAPSHOT_INTERVAL / 1000, self.save_snapshot, "snapshot"), "snapshot")

    async def on_stop(self) -> None:
        await self.save_snapshot(force=True)  # the equity samples and the day start too

    def stats(self) -> dict[str, int | float | str]:
        return {
            "fills": self.ledger.fills_applied,
            "lastFillSeq": self.last_seq,
            "rejectedFills": self.rejected,
            "equity": str(equity(self.ledger, self.marks, self.bridge)),
        }

    # -- snapshots -------------------------------------------------------------------------------------
    async def _restore(self) -> None:
        data = await self.snapshots.load()
        if data is None:
            return
        try:
            st = msgspec.json.decode(data, type=LedgerState)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            self.log.warning("snapshot unreadable ({}): rebuilding from the streams", e)
            return
        if (st.ledger.base_currency, st.ledger.initial_balance) != (
            self.settings.BASE_CURRENCY, self.settings.INITIAL_BALANCE,
        ):  # fmt: skip
            self.log.warning("snapshot taken with another BASE_CURRENCY / INITIAL_BALANCE: rebuilding from the streams")
            return
        if st.fold != FOLD_VERSION:
            # the books are folded again from the streams; the equity curve is not in them: it is kept
            self.log.warning("snapshot made by another version of the books (fold {}): rebuilding", st.fold)
            self.tracker = st.tracker
            return
        fills_last = (await self.bus.js.stream_info(self.subjects.s_fills)).state.last_seq or 0
        orders_last = (await self.bus.js.stream_info(self.subjects.s_orders)).state.last_seq or 0
        if st.fills_seq > fills_last or st.orders_seq > orders_last:
            self.log.warning("snapshot is ahead of the streams (were they recreated?): rebuilding from the streams")
            return
        self.ledger, self.day, self.tracker = st.ledger, st.day, st.tracker
        self.applied = RecentIds(FILL_DEDUPE_WINDOW, st.applied)
        self.last_seq, self.orders_seq = st.fills_seq, st.orders_seq
        self.saved_at = (self.last_seq, self.orders_seq)
        self.log.info("snapshot loaded: fills up to seq {}, orders up to seq {}", self.last_seq, self.orders_seq)

    async def save_snapshot(self, force: bool = False) -> None:
        if not self.live or (not force and self.saved_at == (self.last_seq, self.orders_seq)):
            return
        at = (self.last_seq, self.orders_seq)
        state = LedgerState(self.ledger, self.day, self.tracker, list(self.applied), *at, fold=FOLD_VERSION)
        await self.snapshots.save(msgspec.json.encode(state))
        self.saved_at = at

    # -- events ----------------------------------------------------------------------------------------
    async def _on_fill(self, fill: Fill, env: Envelope) -> None:
        if fill.fill_id in self.applied:
            self.last_seq = max(self.last_seq, env.seq or 0)
            return
        # a fill belongs to the day it happened, live or replayed (days only move forward)
        self.day = roll_day(self.ledger, self.marks, self.day, day_key(fill.timestamp), self.bridge)
        try:
            self.ledger.apply_fill(fill)
        except LedgerError as e:
            self.rejected += 1
            if self.live:
                reason = f"ledger cannot book fill {fill.fill_id}: {e}"
                await self.bus.dead_letter(env.subject, reason, env.raw.data, env.seq)
            self.last_seq = max(self.last_seq, env.seq or 0)
            return
        self.applied.add(fill.fill_id)
        self.last_seq = max(self.last_seq, env.seq or 0)
        if not self.live:
            self.dirty.add(fill.pair)
            return
        await self._check_negative()
        total = equity(self.ledger, self.marks, self.bridge)
        view = position_view(self.ledger, fill.pair, self.marks, self.day, total, self.rounding, self.bridge)
        await self.bus.js_publish(self.subjects.position_events(fill.pair), view, msg_id=f"pos:{fill.fill_id}")

    async def _on_order(self, ev: OrderEvent, env: Envelope) -> None:
        self.ledger.apply_order(ev.order)
        self.orders_seq = max(self.orders_seq, env.seq or 0)
        if self.live:
            await self._check_negative()

    async def _check_negative(self) -> None:
        """One alert when a currency's balance goes below what the settings allow (a short position is
        not a negative balance with ALLOW_SHORT=true); none while it stays there; another only after it
        came back and breaches again."""
        if not self.limits_known and time.monotonic() - self.started_mono < LIMITS_GRACE_S:
            return  # decided once the risk-gate says what ALLOW_SHORT is (or the grace is over)
        allow_short = self.allow_short
        breached = set(self.ledger.breaches(allow_short))
        new, self.alerted = breached - self.alerted, breached  # decided before any await: no double alerts
        for currency in sorted(new):
            b = self.ledger.balance(currency)
            what = "below its short positions" if allow_short else "below zero"
            msg = f"{currency} balance {what}: total {b.total}, available {b.available} (locked {b.locked})"
            self.log.error(msg)
            await self.bus.js_publish(
                self.subjects.risk_events,
                RiskAlert(severity="critical", code="NEGATIVE_BALANCE", message=msg, ts=now_ms()),
            )

    async def _follow_limits(self, timeout: float = 1.0) -> None:
        """ALLOW_SHORT as the risk-gate (its owner) has it now: the setting, or what PUT /api/risk/config
        set since. Asked of the risk-gate; while it does not answer, the last known value stays."""
        try:
            view = await self.bus.request(self.subjects.query("risk"), Empty(), RiskMetricsView, timeout=timeout)
        except (RequestFailed, DecodeFailure):
            return
        first = not self.limits_known
        self.limits_known = True
        raw = view.limits.get("ALLOW_SHORT")
        try:
            allow = PARSERS["ALLOW_SHORT"](raw) if raw is not None else self.settings.ALLOW_SHORT
        except ValueError as e:
            self.log.warning("the risk-gate's ALLOW_SHORT={!r} unreadable ({}): stays {}", raw, e, self.allow_short)
            return
        changed = allow != self.allow_short
        if changed:
            self.log.info("ALLOW_SHORT is now {} (as the risk-gate has it)", allow)
            self.allow_short = bool(allow)
        if self.live and (first or changed):
            await self._check_negative()

    # -- valuation -------------------------------------------------------------------------------------
    def current(self) -> PortfolioSnapshot:
        now = now_ms()
        self.day = roll_day(self.ledger, self.marks, self.day, day_key(now), self.bridge)
        return snapshot(self.ledger, self.marks, self.day, now, self.last_seq, self.rounding, self.bridge)

    async def revalue(self) -> PortfolioSnapshot:
        snap = self.current()
        self.tracker.sample(snap.ts, equity(self.ledger, self.marks, self.bridge))
        await self.bus.js_publish(self.subjects.portfolio_events, snap)
        return snap

    # -- queries ---------------------------------------------------------------------------------------
    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, self.current())

    async def _on_refresh(self, q: Empty, env: Envelope) -> None:
        await self.bus.respond(env, await self.revalue())

    async def _on_history(self, q: HistoryQuery, env: Envelope) -> None:
        limit = max(1, min(q.limit, MAX_HISTORY_PAGE))
        found = [
            c
            for c in reversed(self.ledger.history)
            if (q.pair is None or c.pair == q.pair) and (q.since is None or c.closed_at >= q.since)
        ][:limit]
        await self.bus.respond(env, PositionsHistory(positions=[cycle_view(c, self.rounding) for c in found]))

    async def _on_performance(self, q: Empty, env: Envelope) -> None:
        perf: Performance = report(self.ledger, self.tracker, self.marks, now_ms(), self.rounding, self.bridge)
        await self.bus.respond(env, perf)
