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

Live venues: the balances the order-router reads at the venue (``tbx.events.balances.<venue>``, stream
BALANCES) are taken one at a time on a durable consumer and compared with the books as of the reading's
FILLS position (domain/reconcile.py: the rule, and how adjustments coexist with the locks). A difference
beyond BALANCE_DUST is one BALANCE_MISMATCH alert per breach, and the venue wins: a ``BalanceAdjusted``
event on ``tbx.events.adjustments.<venue>`` (stream ADJUSTMENTS), stored before the reading is
acknowledged and made between two fills (``books_lock``), at the FILLS sequence it records. The books
are a fold over FILLS, ORDERS and ADJUSTMENTS: every instance follows ADJUSTMENTS and applies each
adjustment once (by id), after the fills it was made after, live, from a snapshot or from zero alike.
An ``opening`` reading (no fills yet) replaces the INITIAL_BALANCE-based books and starts the
performance figures again from what the opening balances are worth.

Books per venue (issue 17): a ``VenueLedgers``, one ``Ledger`` per venue (``config.venues``: EXCHANGES, or
the one venue). A fill is booked on its venue's ledger (``Fill.venue``; a venue not configured gets a ledger
of its own, starting empty: never lost), an order's lock on its venue's (``Order.venue``; the lock follows an
order moved to another venue), a reading and its adjustments on that venue's. What is per venue and what
is a total:
- per venue: positions (one per venue and pair, naming its ``exchange``), balances and what is available,
  the reconciliation with a live venue's readings, the NEGATIVE_BALANCE breaches (a balance below what the
  settings allow on one venue is a breach even when another venue holds the currency; the alert names the
  venue), the day start of each venue's figures;
- totals over the venues: equity, the equity curve and every performance figure, the portfolio's
  top-level summary / positions / balances (``byExchange`` has each venue's), day P&L (the venues' summed),
  the history of closed cycles (each naming its venue).

Execution quality (issue 20; domain/quality_book.py): a row per completed order, folded from the ORDERS stream
with the books (an algorithm's children counted in their parent), the last QUALITY_ORDERS_KEPT (10,000), in the
snapshot (a snapshot without them - an older version's - has them rebuilt from ORDERS at start). Served on
``tbx.query.execution_quality`` and in the performance figures. An order whose slippage against its arrival mid is
above MAX_SLIPPAGE_ALERT_BPS raises one SLIPPAGE warning on ``tbx.events.risk``: decided for the order events
after the snapshot the ledger started from (a rebuild from nothing does not alert the history again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec
import nats.js.errors

from actors.base import Actor
from actors.books import BookCache
from actors.snapshots import SnapshotStore
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure
from bus.errors import RequestFailed, Transient
from config.settings import PARSERS, Settings, parse_balance_dust, parse_currency_precision
from config.venues import venue_configs, venue_names
from domain.ids import day_key
from domain.ledger import Ledger, LedgerError
from domain.performance import EquityTracker, report
from domain.quality_book import QualityBook, QualityRow, order_view
from domain.quality_book import report as quality_report
from domain.recent import FILL_DEDUPE_WINDOW, RecentIds
from domain.reconcile import Journal, as_of, changes, dust_of, reading_problem, venue_figures
from domain.valuation import (
    ZERO,
    Converter,
    DayStart,
    Rounding,
    ViewCache,
    books_equity,
    books_snapshot,
    combined_marks,
    cycle_view,
    roll_days,
    venue_position_view,
)
from domain.venue_ledgers import VenueLedgers
from schemas.messages import (
    BalanceAdjusted,
    BalanceMismatch,
    Empty,
    ExecutionQuality,
    ExecutionQualityQuery,
    Fill,
    HistoryQuery,
    OrderEvent,
    Performance,
    PerformanceQuery,
    PortfolioSnapshot,
    PositionsHistory,
    PositionView,
    RiskAlert,
    RiskMetricsView,
    VenueBalances,
    now_ms,
)
from schemas.subjects import pair_currencies

MAX_HISTORY_PAGE = 1000
LIMITS_EVERY_S = 5.0  # how often the ledger asks the risk-gate for ALLOW_SHORT
LIMITS_GRACE_S = 10.0  # without an answer by then, the setting decides the NEGATIVE_BALANCE alerts
FOLD_VERSION = 4  # bump when domain/ledger.py books a fill differently (3: locks know their side; 4: parents reserve)
READING_WAIT_S = 10.0  # a reading waits this long for its fills (and order changes) before it is retried


class LedgerState(msgspec.Struct):
    """What a snapshot holds: the books and where in the streams they stand.

    ``books`` and ``days``: the books and day starts per venue. A snapshot written before books were kept
    per venue has ``ledger`` and ``day`` instead (one Ledger): it is restored as the books of the venue its
    fills name (``_legacy_venue``). The journals' currencies are ``<venue>:<currency>``."""

    tracker: EquityTracker
    applied: list[str]  # the latest fill ids booked, oldest first (at most FILL_DEDUPE_WINDOW)
    fills_seq: int
    orders_seq: int
    fold: int = 0  # the version of the books' maths that made it: another one rebuilds from the streams
    adjustments_seq: int = 0  # ADJUSTMENTS stream: every adjustment up to here is in the books
    fill_journal: Journal | None = None  # what the recent fills changed (a reading looks back with it)
    order_journal: Journal | None = None  # what the recent order changes changed in what is locked
    readings: dict[str, int] = msgspec.field(default_factory=dict)  # venue -> ts of the last reading compared
    books: VenueLedgers | None = None
    days: dict[str, DayStart] = msgspec.field(default_factory=dict)  # venue -> its day start
    ledger: Ledger | None = None  # before books per venue
    day: DayStart | None = None  # before books per venue
    # the equity curves of groups of venues (issue 18): "paper", "live" and "venue:<name>" (several venues)
    groups: dict[str, EquityTracker] = msgspec.field(default_factory=dict)
    quality: QualityBook | None = None  # execution quality (issue 20); None: a snapshot from before it


class PortfolioLedger(Actor):
    name = "portfolio-ledger"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        self.venues = tuple(venue_names(settings))  # the configured venues, in priority order
        self.ledgers = VenueLedgers(settings.BASE_CURRENCY, settings.INITIAL_BALANCE, self.venues)
        self.books = BookCache(bus, venue_names(settings))
        self.marks: dict[str, Decimal] = self.books.mids  # marks are the mids of the latest books
        self.days: dict[str, DayStart] = {}  # venue -> its day start
        self.tracker = EquityTracker(self.ledgers.initial_total)
        # equity curves per group of venues (GET /api/performance?mode= / ?exchange=): the paper venues', the
        # live venues', and each venue's when there are several
        configs = venue_configs(settings)
        self.group_venues: dict[str, tuple[str, ...]] = {}
        for mode, paper in (("paper", True), ("live", False)):
            if names := tuple(v.name for v in configs if v.paper == paper):
                self.group_venues[mode] = names
        if len(configs) > 1:
            self.group_venues |= {f"venue:{v.name}": (v.name,) for v in configs}
        self.groups = {g: EquityTracker(self._subset(vs).initial_total) for g, vs in self.group_venues.items()}
        self.applied = RecentIds(FILL_DEDUPE_WINDOW)
        self.last_seq = 0
        self.orders_seq = 0
        self.saved_at = (-1, -1, -1)
        self.live = False
        self.rejected = 0
        self.alerted: set[tuple[str, str]] = set()  # (venue, currency) below what the settings allow
        self.dirty: set[tuple[str, str]] = set()  # (venue, pair) changed while catching up
        self.rounding = Rounding(parse_currency_precision(settings.CURRENCY_PRECISION))
        self.bridge = settings.CONVERSION_BRIDGE
        self.view_cache = ViewCache()  # the portfolio's figures kept between valuations (issue 22): same output
        self.allow_short = settings.ALLOW_SHORT  # as the risk-gate's limits say (_follow_limits)
        # until the risk-gate answered once (it may start after us), no NEGATIVE_BALANCE alert is decided on
        # the setting alone, which PUT /api/risk/config may have changed; after LIMITS_GRACE_S it is used
        self.limits_known = False
        self.started_mono = time.monotonic()
        # balances reconciled with a live venue (domain/reconcile.py)
        self.fill_journal = Journal()  # what the recent fills changed, by FILLS seq
        self.order_journal = Journal()  # what the recent order changes locked, by when they were stored (ms)
        self.adjustments_followed = 0  # ADJUSTMENTS stream: handed on up to here
        self.pending_adjustments: list[tuple[int, BalanceAdjusted]] = []  # (seq, adjustment) waiting for fills
        self.readings: dict[str, int] = {}  # venue -> ts of the last reading compared
        self.mismatched: set[tuple[str, str]] = set()  # (venue, currency) alerted, until a reading agrees
        self.books_lock = asyncio.Lock()  # a reading's adjustments are made between two fills, never during one
        self.balance_dust = parse_balance_dust(settings.BALANCE_DUST)
        self.mismatches = 0
        # execution quality (domain/quality_book.py): rows of completed orders, folded from ORDERS
        self.quality = QualityBook()
        self.quality_rebuild_to = 0  # a snapshot without them: ORDERS up to here folded into the rows only, at start
        self.alert_after_seq: int | None = None  # SLIPPAGE alerts for the order events after this ORDERS seq
        self.slippage_alerts = 0

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.kv = await self.bus.kv(s.kv_state)
        self.snapshots = SnapshotStore(self.kv, "ledger")
        await self._follow_limits(timeout=0.3)
        await self._restore()
        if self.alert_after_seq is None:  # no snapshot: what ORDERS holds already is history, never alerted
            self.alert_after_seq = (await self.bus.js.stream_info(s.s_orders)).state.last_seq or 0
        if self.quality_rebuild_to:  # a snapshot from before execution quality: its rows from ORDERS
            await self.bus.replay(
                stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._quality_only,
                start_seq=1, follow=False,
            )  # fmt: skip
            self.log.info("execution quality rebuilt from ORDERS up to seq {}: {} orders", self.quality_rebuild_to,
                          len(self.quality.rows))  # fmt: skip
        # the adjustments first: each waits (pending) for the fills it was made after, so a replay makes it
        # at the same point relative to the fills as when it was made
        await self.bus.replay(
            stream=s.s_adjustments, subject=s.balance_adjustments(), type_=BalanceAdjusted,
            handler=self._on_adjustment, start_seq=self.adjustments_seq() + 1,
        )  # fmt: skip
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
        total = books_equity(self.ledgers, self.marks, self.bridge)
        for venue, pair in sorted(self.dirty):  # what changed while we were away, announced once we are back
            await self.bus.js_publish(self.subjects.position_events(pair), self._position(venue, pair, total))
        self.dirty.clear()
        self.log.info(
            "books rebuilt: {} fills (stream seq {}) on {} venue(s), {} working orders locking funds",
            self.ledgers.fills_applied, self.last_seq, len(self.ledgers.ledgers), self.ledgers.locks,
        )  # fmt: skip
        for what, type_, handler in (
            ("portfolio", Empty, self._on_query),
            ("portfolio_refresh", Empty, self._on_refresh),
            ("positions_history", HistoryQuery, self._on_history),
            ("performance", PerformanceQuery, self._on_performance),
            ("execution_quality", ExecutionQualityQuery, self._on_quality),
        ):
            await self.bus.subscribe(s.query(what), type_, handler, queue=self.name)  # type: ignore[arg-type]
        # a live venue's balances (the order-router publishes them; paper mode never does), one at a time
        await self.bus.consume(
            stream=s.s_balances, durable="portfolio-ledger-balances", subject=s.balances(), type_=VenueBalances,
            handler=self._on_balances, max_ack_pending=1,
        )  # fmt: skip
        interval = self.settings.POSITION_UPDATE_INTERVAL / 1000
        self.spawn(self.every(interval, self.revalue, "portfolio revaluation"), "revalue", essential=True)
        self.spawn(self.every(LIMITS_EVERY_S, self._follow_limits, "reading the risk limits"), "limits", essential=True)
        self.spawn(
            self.every(self.settings.SNAPSHOT_INTERVAL / 1000, self.save_snapshot, "snapshot"),
            "snapshot",
            essential=True,
        )

    async def on_stop(self) -> None:
        await self.save_snapshot(force=True)  # the equity samples and the day start too

    def stats(self) -> dict[str, int | float | str]:
        return {
            "fills": self.ledgers.fills_applied,
            "lastFillSeq": self.last_seq,
            "rejectedFills": self.rejected,
            "balanceMismatches": self.mismatches,
            "qualityOrders": len(self.quality.rows),
            "slippageAlerts": self.slippage_alerts,
            "equity": str(books_equity(self.ledgers, self.marks, self.bridge)),
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
        kept = st.books if st.books is not None else st.ledger
        if kept is None:
            self.log.warning("snapshot holds no books: rebuilding from the streams")
            return
        if (kept.base_currency, kept.initial_balance) != (
            self.settings.BASE_CURRENCY, self.settings.INITIAL_BALANCE,
        ):  # fmt: skip
            self.log.warning("snapshot taken with another BASE_CURRENCY / INITIAL_BALANCE: rebuilding from the streams")
            return
        if st.fold != FOLD_VERSION:
            # the books are folded again from the streams; the equity curve is not in them: it is kept
            self.alert_after_seq = st.orders_seq  # (the rows too: only the order events after it may alert)
            self.log.warning("snapshot made by another version of the books (fold {}): rebuilding", st.fold)
            self.tracker = st.tracker
            self.groups |= {g: t for g, t in st.groups.items() if g in self.group_venues}
            return
        fills_last = (await self.bus.js.stream_info(self.subjects.s_fills)).state.last_seq or 0
        orders_last = (await self.bus.js.stream_info(self.subjects.s_orders)).state.last_seq or 0
        adjustments_last = (await self.bus.js.stream_info(self.subjects.s_adjustments)).state.last_seq or 0
        if st.fills_seq > fills_last or st.orders_seq > orders_last or st.adjustments_seq > adjustments_last:
            self.log.warning("snapshot is ahead of the streams (were they recreated?): rebuilding from the streams")
            return
        fill_journal, order_journal = st.fill_journal, st.order_journal
        self.alert_after_seq = st.orders_seq  # the order events after the snapshot may alert (not those before)
        if st.books is not None:
            self.ledgers, self.days = st.books, dict(st.days)
        elif st.ledger is not None:  # a snapshot of one Ledger: the books of the venue its fills name
            venue = await self._legacy_venue(st.ledger, st.fills_seq)
            self.ledgers = VenueLedgers(self.settings.BASE_CURRENCY, self.settings.INITIAL_BALANCE, ())
            self.ledgers.ledgers[venue] = st.ledger
            orders = st.ledger.locks.keys() | st.ledger.filled_by_fills.keys()
            self.ledgers.lock_venue = dict.fromkeys(orders, venue)
            self.days = {venue: st.day} if st.day is not None else {}
            fill_journal = _journal_of(fill_journal, venue)
            order_journal = _journal_of(order_journal, venue)
            self.log.info("snapshot of one ledger (before books per venue): restored as the books of {}", venue)
        self.ledgers.configure(self.venues)  # a venue configured since gets its (initial) books
        self.tracker = st.tracker
        self.groups |= {g: t for g, t in st.groups.items() if g in self.group_venues}
        self.applied = RecentIds(FILL_DEDUPE_WINDOW, st.applied)
        self.last_seq, self.orders_seq = st.fills_seq, st.orders_seq
        self.adjustments_followed = st.adjustments_seq
        self.fill_journal = fill_journal or Journal(floor=st.fills_seq)
        self.order_journal = order_journal or Journal(floor=now_ms())
        self.readings = dict(st.readings)
        if st.quality is not None:
            self.quality = st.quality
        else:
            self.quality_rebuild_to = st.orders_seq
        self.saved_at = (self.last_seq, self.orders_seq, self.adjustments_seq())
        self.log.info("snapshot loaded: fills up to seq {}, orders up to seq {}", self.last_seq, self.orders_seq)

    async def _legacy_venue(self, ledger: Ledger, fills_seq: int) -> str:
        """The venue whose books a snapshot of one Ledger holds: the venue its fills name (the last one it
        booked, read from the FILLS stream), else the venue of its adjustments, else the first configured
        venue. A one-venue deployment: the only venue (it books every fill there, whatever the fill names)."""
        if len(self.venues) == 1:
            return self.venues[0]
        stream = self.subjects.s_fills
        for seq in range(fills_seq, max(0, fills_seq - 50), -1):  # the last fill booked (or one shortly before)
            try:
                msg = await self.bus.js.get_msg(stream, seq)
                return msgspec.json.decode(msg.data or b"", type=Fill).venue
            except (nats.js.errors.NotFoundError, msgspec.ValidationError, msgspec.DecodeError):
                continue  # gone (the stream's limits), or not a fill: look further back
        if ledger.opened_at_venue:
            return ledger.opened_at_venue
        if ledger.adjustments:
            return ledger.adjustments[-1].venue
        return self.venues[0] if self.venues else "paper"

    def adjustments_seq(self) -> int:
        """The ADJUSTMENTS position the books stand at: every adjustment up to it is in them."""
        if self.pending_adjustments:
            return min(seq for seq, _ in self.pending_adjustments) - 1
        return self.adjustments_followed

    async def save_snapshot(self, force: bool = False) -> None:
        at = (self.last_seq, self.orders_seq, self.adjustments_seq())
        if not self.live or (not force and self.saved_at == at):
            return
        state = LedgerState(
            self.tracker, list(self.applied), self.last_seq, self.orders_seq,
            fold=FOLD_VERSION, adjustments_seq=at[2], fill_journal=self.fill_journal,
            order_journal=self.order_journal, readings=dict(self.readings), books=self.ledgers, days=self.days,
            groups=self.groups, quality=self.quality,
        )  # fmt: skip
        await self.snapshots.save(msgspec.json.encode(state))
        self.saved_at = at

    # -- events ----------------------------------------------------------------------------------------
    async def _on_fill(self, fill: Fill, env: Envelope) -> None:
        async with self.books_lock:  # (free but while a reading adjusts the books: then after it)
            booked = self._book_fill(fill, env)
            self._apply_pending()
        if isinstance(booked, LedgerError):
            if self.live:
                reason = f"ledger cannot book fill {fill.fill_id}: {booked}"
                await self.bus.dead_letter(env.subject, reason, env.raw.data, env.seq)
            return
        if booked and self.live:
            await self._after_fill(fill)

    def _book_fill(self, fill: Fill, env: Envelope) -> bool | LedgerError:
        """Book a fill (False: booked already); the fill journal records what it changed."""
        seq = env.seq or 0
        if fill.fill_id in self.applied:
            self.last_seq = max(self.last_seq, seq)
            return False
        # a fill belongs to the day it happened, live or replayed (days only move forward)
        self.days = roll_days(self.ledgers, self.marks, self.days, day_key(fill.timestamp), self.bridge)
        currencies = pair_currencies(fill.pair)
        venue = self.ledgers.venue_of(fill.venue)  # (a one-venue deployment books every fill on its venue)
        before = self._figures([venue], currencies)
        try:
            self.ledgers.apply_fill(fill)
        except LedgerError as e:
            self.rejected += 1
            self.last_seq = max(self.last_seq, seq)
            return e
        if venue not in self.days:  # a venue first seen now (not configured): its day starts now
            self.days = roll_days(self.ledgers, self.marks, self.days, day_key(fill.timestamp), self.bridge)
        self.fill_journal.record(seq, before, self._figures([venue], currencies))
        self.applied.add(fill.fill_id)
        self.last_seq = max(self.last_seq, seq)
        if not self.live:
            self.dirty.add((venue, fill.pair))
        return True

    def _figures(self, venues: list[str], currencies: tuple[str, str]) -> dict[str, tuple[Decimal, Decimal]]:
        """(total, locked) of the venues' currencies, keyed ``<venue>:<currency>`` (the journals' keys)."""
        out = {}
        for v in venues:
            for c, figures in self.ledgers.of(v).figures(currencies).items():
                out[f"{v}:{c}"] = figures
        return out

    def _position(self, venue: str, pair: str, total: Decimal) -> PositionView:
        day = self.days.get(venue, DayStart())
        return venue_position_view(self.ledgers, venue, pair, self.marks, day, total, self.rounding, self.bridge)

    async def _after_fill(self, fill: Fill) -> None:
        await self._check_negative()
        venue = self.ledgers.venue_of(fill.venue)
        view = self._position(venue, fill.pair, books_equity(self.ledgers, self.marks, self.bridge))
        await self.bus.js_publish(self.subjects.position_events(fill.pair), view, msg_id=f"pos:{fill.fill_id}")

    async def _on_order(self, ev: OrderEvent, env: Envelope) -> None:
        currencies = pair_currencies(ev.order.pair)
        venues = self.ledgers.lock_venues(ev.order)  # where its lock was, and where it is now
        before = self._figures(venues, currencies)
        self.ledgers.apply_order(ev.order)
        self.order_journal.record(env.stored_at or now_ms(), before, self._figures(venues, currencies))
        self.orders_seq = max(self.orders_seq, env.seq or 0)
        hit = self.quality.fold(ev.order, self.settings.MAX_SLIPPAGE_ALERT_BPS)
        if hit is not None and (env.seq or 0) > (self.alert_after_seq or 0):
            await self._slippage_alert(hit)
        if self.live:
            await self._check_negative()

    async def _quality_only(self, ev: OrderEvent, env: Envelope) -> None:
        """ORDERS read again at start for the execution quality only (a snapshot without it): history, no alerts."""
        if (env.seq or 0) <= self.quality_rebuild_to:
            self.quality.fold(ev.order, self.settings.MAX_SLIPPAGE_ALERT_BPS)

    async def _slippage_alert(self, row: QualityRow) -> None:
        """One warning per order whose slippage against arrival is above MAX_SLIPPAGE_ALERT_BPS (the book remembers it;
        a crash before the next snapshot may repeat it: the same message id, dropped within the duplicate window)."""
        q = row.quality
        msg = (
            f"order {row.order_id} ({row.side} {q.filled_quantity} {row.pair} {row.type} on {row.exchange}): slippage "
            f"{q.slippage_bps:.2f} bps against its arrival mid {row.arrival_mid} (average price {q.average_price}), "
            f"above MAX_SLIPPAGE_ALERT_BPS={self.settings.MAX_SLIPPAGE_ALERT_BPS}"
        )
        self.log.warning(msg)
        self.slippage_alerts += 1
        alert = RiskAlert(severity="warning", code="SLIPPAGE", message=msg, ts=now_ms(), pair=row.pair,
                          order_id=row.order_id)  # fmt: skip
        await self.bus.js_publish(self.subjects.risk_events, alert, msg_id=f"slippage:{row.order_id}")

    # -- balances reconciled with a live venue (domain/reconcile.py) -----------------------------------
    async def _on_adjustment(self, adj: BalanceAdjusted, env: Envelope) -> None:
        """An adjustment on the ADJUSTMENTS stream (made by this ledger or another instance): into the
        books once, after the fills it was made after (it waits for them when they are not booked yet)."""
        self.adjustments_followed = max(self.adjustments_followed, env.seq or 0)
        if adj.fills_seq <= self.last_seq:
            self._apply_adjustment(adj)
        else:
            self.pending_adjustments.append((env.seq or 0, adj))

    def _apply_pending(self) -> None:
        if not self.pending_adjustments:
            return
        ready = [(seq, a) for seq, a in self.pending_adjustments if a.fills_seq <= self.last_seq]
        if ready:
            self.pending_adjustments = [p for p in self.pending_adjustments if p[1].fills_seq > self.last_seq]
            for _, a in sorted(ready, key=lambda p: p[0]):
                self._apply_adjustment(a)

    def _apply_adjustment(self, adj: BalanceAdjusted) -> None:
        if not self.ledgers.apply_adjustment(adj):
            return  # in the books already
        # an opening: the performance figures (and the venue's day) start again from the opening balances
        key = f"{adj.venue}:{adj.reading_seq}"
        if adj.reason == "opening" and self.tracker.open_at(key, books_equity(self.ledgers, self.marks, self.bridge)):
            self.days.pop(adj.venue, None)  # taken again at the next valuation, from the opening balances
        if adj.reason == "opening":
            for g, vs in self.group_venues.items():
                if adj.venue in vs:
                    self.groups[g].open_at(key, books_equity(self._subset(vs), self.marks, self.bridge))
        if self.live:
            self.log.info(
                "{} {} {}: total {} -> {}, available {} -> {} (adjustment {})", adj.reason, adj.venue, adj.currency,
                adj.from_total, adj.to_total, adj.from_available, adj.to_available, adj.adjustment_id,
            )  # fmt: skip

    async def _on_balances(self, r: VenueBalances, env: Envelope) -> None:
        """A venue's balances: compared with the books as of the reading's FILLS position; a difference
        beyond dust is a BALANCE_MISMATCH alert (once per breach) and the venue's figures win, recorded
        as BalanceAdjusted events. Safe to receive twice: the second finds no difference."""
        problem = reading_problem(r, env.subject.rsplit(".", 1)[-1])
        if problem is not None:
            field, why = problem
            reason = f"balances not compared: {field}: {why}"
            await self.bus.dead_letter(env.subject, reason, env.raw.data, env.seq)
            return
        last = self.readings.get(r.venue)
        if last is not None and r.ts < last:
            self.log.warning(
                "balances of {} read at {}: older than the last compared ({}), skipped", r.venue, r.ts, last
            )
            return
        s = self.subjects
        if not await self._wait_until(lambda: max(self.last_seq, self.bus.followed_to(s.s_fills)) >= r.fills_seq):
            fills_last = (await self.bus.js.stream_info(s.s_fills)).state.last_seq or 0
            if fills_last < r.fills_seq:
                reason = (
                    f"balances not compared: fillsSeq: {r.fills_seq} is beyond the FILLS stream (last {fills_last})"
                )
                await self.bus.dead_letter(env.subject, reason, env.raw.data, env.seq)
                return
            raise Transient(f"the ledger has not booked the fills up to {r.fills_seq} yet")
        # what was stored before the reading (order changes, adjustments) is in the books before we compare
        for stream in (s.s_orders, s.s_adjustments):
            stored = (await self.bus.js.stream_info(stream)).state.last_seq or 0
            if not await self._wait_until(lambda st=stream, n=stored: self.bus.followed_to(st) >= n):
                raise Transient(f"the ledger has not read {stream} up to {stored} yet")
        async with self.books_lock:  # no fill is booked until the adjustments are stored and in the books
            await self._reconcile(r, env)
        await self._check_negative()

    async def _wait_until(self, ready: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + READING_WAIT_S
        while not ready():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _reconcile(self, r: VenueBalances, env: Envelope) -> None:
        at, cut, seq = r.fills_seq, env.stored_at or now_ms(), env.seq or 0
        if not (self.fill_journal.covers(at) and self.order_journal.covers(cut)):
            self.log.warning(
                "balances of {} at fills seq {}: too far back to compare (the changes since are no longer all "
                "remembered); the next reading will be compared", r.venue, at,
            )  # fmt: skip
            return
        ledger = self.ledgers.of(r.venue)  # the reading is compared with that venue's books only
        now = {c: (b.total, b.locked, b.correction) for c, b in ledger.balances.items()}
        books = as_of(
            now, _of_venue(self.fill_journal.since(at), r.venue), _of_venue(self.order_journal.since(cut), r.venue)
        )
        opening = r.opening and ledger.fills_applied == 0
        if r.opening and not opening:
            self.log.warning("opening balances of {} with {} fills booked: compared as any reading", r.venue,
                             ledger.fills_applied)  # fmt: skip
        if opening:
            found = changes(books, venue_figures(r), lambda c: ZERO)
        else:
            default = self.rounding.default
            found = changes(
                books, venue_figures(r), lambda c: dust_of(c, self.balance_dust, self.rounding.decimals, default)
            )
        self.readings[r.venue] = r.ts
        ts = now_ms()
        adjustments = [
            BalanceAdjusted(
                adjustment_id=f"{r.venue}:{seq}:{ch.currency}", venue=r.venue, currency=ch.currency,
                from_total=ch.ledger_total, from_available=ch.ledger_available, to_total=ch.venue_total,
                to_available=ch.venue_free, locked_delta=ch.locked_delta,
                reason="opening" if opening else "mismatch", fills_seq=self.last_seq, reading_fills_seq=at,
                reading_seq=seq, reading_ts=r.ts, ts=ts,
            )
            for ch in found
        ]  # fmt: skip
        if not opening:
            breached = {(r.venue, ch.currency) for ch in found}
            for ch in found:
                if (r.venue, ch.currency) in self.mismatched:
                    continue  # alerted already: one alert per breach
                self.mismatches += 1
                msg = (
                    f"{r.venue} {ch.currency} balance differs from the ledger's: ledger total {ch.ledger_total}, "
                    f"available {ch.ledger_available}; venue total {ch.venue_total}, free {ch.venue_free}; "
                    "the venue's figures are adopted"
                )
                self.log.error(msg)
                figures = BalanceMismatch(
                    venue=r.venue, currency=ch.currency, ledger_total=ch.ledger_total,
                    ledger_available=ch.ledger_available, venue_total=ch.venue_total, venue_free=ch.venue_free,
                )  # fmt: skip
                alert = RiskAlert(severity="critical", code="BALANCE_MISMATCH", message=msg, ts=ts, balance=figures)
                # stored before the adjustment: a crash between the two repeats the alert (the same id within
                # the duplicate window), never loses it
                await self.bus.js_publish(
                    self.subjects.risk_events, alert, msg_id=f"balance-mismatch:{r.venue}:{seq}:{ch.currency}"
                )
            self.mismatched = {k for k in self.mismatched if k[0] != r.venue} | breached
        elif adjustments:
            self.log.info("opening balances of {} adopted: {}", r.venue, ", ".join(
                f"{a.currency} {a.to_total} (free {a.to_available})" for a in adjustments))  # fmt: skip
        for adj in adjustments:
            await self.bus.js_publish(
                self.subjects.balance_adjustments(r.venue), adj, msg_id=f"adjusted:{adj.adjustment_id}"
            )
            self._apply_adjustment(adj)

    async def _check_negative(self) -> None:
        """One alert when a currency's balance goes below what the settings allow (a short position is
        not a negative balance with ALLOW_SHORT=true); none while it stays there; another only after it
        came back and breaches again."""
        if not self.limits_known and time.monotonic() - self.started_mono < LIMITS_GRACE_S:
            return  # decided once the risk-gate says what ALLOW_SHORT is (or the grace is over)
        allow_short = self.allow_short
        breached = set(self.ledgers.breaches(allow_short))  # (venue, currency): per venue
        new, self.alerted = breached - self.alerted, breached  # decided before any await: no double alerts
        for venue, currency in sorted(new):
            b = self.ledgers.of(venue).balance(currency)
            what = "below its short positions" if allow_short else "below zero"
            msg = (
                f"{currency} balance on {venue} {what}: total {b.total}, available {b.available} "
                f"(locked {b.unavailable})"
            )
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
        self.days = roll_days(self.ledgers, self.marks, self.days, day_key(now), self.bridge)
        return books_snapshot(
            self.ledgers, self.marks, self.days, now, self.last_seq, self.rounding, self.bridge, None
        )  # (without ``self.view_cache`` for now: an opening's start equity was once not settled with it - to check)

    async def revalue(self) -> PortfolioSnapshot:
        snap = self.current()
        total = books_equity(self.ledgers, self.marks, self.bridge)
        self.tracker.settle(total, complete=not snap.summary.unconverted)  # an opening still valued provisionally
        self.tracker.sample(snap.ts, total)
        for g, vs in self.group_venues.items():
            part = books_equity(self._subset(vs), self.marks, self.bridge)
            self.groups[g].settle(part, complete=not snap.summary.unconverted)
            self.groups[g].sample(snap.ts, part)
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
            (v, c)
            for v, c in reversed(self.ledgers.history())
            if (q.pair is None or c.pair == q.pair) and (q.since is None or c.closed_at >= q.since)
        ][:limit]
        views = [cycle_view(c, self.rounding, v) for v, c in found]
        await self.bus.respond(env, PositionsHistory(positions=views))

    def _subset(self, venues: tuple[str, ...]) -> VenueLedgers:
        """The books of these venues only (the same ledgers, not copies)."""
        sub = VenueLedgers(self.ledgers.base_currency, self.ledgers.initial_balance, ())
        sub.ledgers = {v: self.ledgers.of(v) for v in venues}
        sub.venues = venues
        return sub

    async def _on_performance(self, q: PerformanceQuery, env: Envelope) -> None:
        """The figures of every venue's books, or of the paper / live venues' (``mode``), or of one venue's
        (``exchange``); over the window from ``since`` when given."""
        books, tracker, venues = self.ledgers, self.tracker, None
        group = f"venue:{q.exchange}" if q.exchange is not None else q.mode
        if q.exchange is not None and len(self.venues) == 1:
            group = None  # a one-venue deployment: every fill is booked on its venue
        if group is not None:
            venues = list(self.group_venues.get(group, ()))
            books = self._subset(tuple(venues))
            tracker = self.groups.get(group) or EquityTracker(Decimal(0))
        perf: Performance = report(books, tracker, self.marks, now_ms(), self.rounding, self.bridge, since=q.since)
        quality = self.execution_quality(since=q.since, exchanges=venues) if q.quality else None
        await self.bus.respond(
            env, msgspec.structs.replace(perf, mode=q.mode, venues=venues, execution_quality=quality)
        )

    def execution_quality(
        self, since: int | None = None, until: int | None = None, pair: str | None = None,
        exchanges: list[str] | None = None, order_id: str | None = None,
    ) -> ExecutionQuality:  # fmt: skip
        """The execution quality of the completed orders kept (domain/quality_book.py); fees summed across pairs in
        BASE_CURRENCY at the current marks (as every total of the books)."""
        ledgers = [led for _, led in self.ledgers]
        base = self.ledgers.base_currency
        rate = None
        if ledgers:
            rate = Converter(ledgers[0], combined_marks(ledgers, self.marks), self.bridge).rate
        rows = self.quality.select(since, until, pair, exchanges, order_id)
        return quality_report(rows, base, rate or (lambda c: None), self.rounding.money)

    async def _on_quality(self, q: ExecutionQualityQuery, env: Envelope) -> None:
        exchanges = [q.exchange] if q.exchange is not None and len(self.venues) > 1 else None
        answer = self.execution_quality(q.since, q.until, q.pair, exchanges, q.order_id)
        row = self.quality.rows.get(q.order_id) if q.order_id is not None else None
        if row is not None and answer.overall.orders:  # (and within the other filters)
            answer = msgspec.structs.replace(answer, order=order_view(row, self.rounding.money))
        await self.bus.respond(env, answer)


def _of_venue(changes: dict[str, tuple[Decimal, Decimal]], venue: str) -> dict[str, tuple[Decimal, Decimal]]:
    """A journal's changes (keyed ``<venue>:<currency>``) of one venue, keyed by currency."""
    prefix = f"{venue}:"
    return {k[len(prefix) :]: v for k, v in changes.items() if k.startswith(prefix)}


def _journal_of(journal: Journal | None, venue: str) -> Journal | None:
    """A journal of a snapshot of one Ledger (keyed by currency) as the journal of that venue's books."""
    if journal is None:
        return None
    entries = [(k, {f"{venue}:{c}": d for c, d in delta.items()}) for k, delta in journal.entries]
    return Journal(size=journal.size, floor=journal.floor, entries=entries)
