"""risk-gate: every order passes here before it can reach a venue.

It serves ``tbx.orders.submit`` (request/reply, queue group): a denial is answered at once with its
code, field and reason; an approval is persisted on the durable hop to the order-router, which answers
the caller once the order exists.

Two kinds of checks:
- the order itself (``domain.risk.check_order``): pair, quantity, prices, the venue's tick / step /
  minimum notional (from the order-router's ``tbx.query.markets``), stop sides, brackets, reduce-only;
- the portfolio limits (``domain.limits.check_limits``): trading state, order rate, order notional,
  price band, available balance, MAX_POSITION_SIZE, total exposure, MAX_DAILY_LOSS, drawdown.

For the limits it keeps a read model of the books, folded from the same FILLS and ORDERS streams as the
portfolio-ledger (which stays their owner), and it owns what in-flight orders reserve: an approval
holds its funds and exposure until the order's first event is seen, so ten orders racing each other
cannot together pass a limit that each passes alone. The trading state (ACTIVE / REDUCING / HALTED) is
kept in JetStream KV; reaching MAX_DAILY_LOSS (or MAX_DRAWDOWN) halts trading by itself.

Retries come first: a submit whose client order id already names an order (seen on ORDERS, or approved
and on its way to the order-router) is handed to the order-router without any check, which answers it
with that order (409 for other content under the same id); it reserves nothing and does not count
against MAX_ORDERS_PER_SECOND. An id the gate does not remember is looked up at the order-router only
when the answer would otherwise be a denial, so a new order costs no extra round trip.

"Cannot know yet" is never a final denial: while the read model may be behind (NATS reconnecting, the
followed streams not resumed yet, or fills stored that it has not read within a few ms), a denial
that depends on the books is answered ``RETRY_LATER`` (503 with Retry-After at the REST edge), and the
submit handler never waits longer than that for the model to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

import msgspec
import nats.js.errors
from nats.aio.msg import Msg as NatsMsg

from actors.base import Actor
from actors.books import BookCache
from actors.markets import MarketRulesCache
from actors.services import ServiceClient, ServiceDown
from actors.transition import STAGE_CAPITAL_LIMIT, Transition
from bus.client import Bus, Envelope
from bus.codec import DecodeFailure, decode
from bus.errors import RequestFailed
from bus.partitions import cancel_all, order_of_client, partition_named
from config.settings import PARSERS, Settings, parse_correlation_groups, parse_trading_hours
from config.venues import VenueConfig, venue_configs, venue_names
from domain.algo_orders import parent_of_slice
from domain.book import mid_price, vwap, walk_book
from domain.ids import day_key
from domain.ledger import HELD_BY_ROUTER, Ledger, lock_of
from domain.limits import (
    ACTIVE,
    HALTED,
    REDUCING,
    Exposure,
    Intent,
    Limits,
    VenueState,
    breaches,
    candidates,
    check_limits,
    daily_loss,
    headroom,
    in_quote,
    is_reducing,
    no_venue,
    rate_of,
)
from domain.partitions import partition_for
from domain.recent import FILL_DEDUPE_WINDOW, RecentIds
from domain.risk import RESERVED_CLIENT_PREFIX, Approval, Denial, check_order, same_request
from domain.sizing import QTY_STEP, SizingError, fixed_fractional, round_down
from domain.transition import OpenOrder
from domain.transition import state_name as tr_state_name
from domain.triggers import TRIGGERED_TYPES
from domain.valuation import Converter, DayStart, equity, mark_of, quote_rates, roll_day
from domain.venue_ledgers import VenueLedgers
from domain.working import Working, WorkingOrders
from schemas.messages import (
    TERMINAL_STATUSES,
    AlertsPage,
    AlertsQuery,
    ApprovedOrder,
    BalanceAdjusted,
    CancelOrder,
    Empty,
    Fill,
    MarketRules,
    Order,
    OrderEvent,
    OrderReply,
    OrderRequest,
    PairExposure,
    RiskAlert,
    RiskCommand,
    RiskConfigReply,
    RiskLimits,
    RiskMetricsView,
    RiskStateChange,
    RiskValidation,
    now_ms,
)
from schemas.services import TradeCheck, TradeVerdict
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
PENDING_TTL_MS = 300_000
CLIENT_ID_WINDOW = 20_000  # client order ids of the latest orders seen on ORDERS: retries answered at once
CATCH_UP_WAIT_S = 0.02  # the longest the submit handler waits for fills / order events stored but not read
STREAM_INFO_TIMEOUT_S = 0.5
APPROVAL_TRIES = 3  # publishes of one approval (same Nats-Msg-Id) before its outcome is called unknown ...
# ... each tried again only while this young: js_publish itself retries a leaderless stream for up to 3 s, and
# the whole must stay inside the gateway's 5 s wait for the order
APPROVAL_AGAIN_WITHIN_S = 1.0
MAX_LOOKUPS = 16  # lookups of denied ids at the order-router in flight at once (the rest wait, as below)
LOOKUP_TIMEOUT_S = 2.0  # asking the order-router whether a client order id names an order
PENDING_CHECK_MS = 2_000  # a reservation whose order is not seen after this long: does the order exist?
CANCEL_ALL_TIMEOUT_S = 5.0  # the emergency stop's cancel of every working order
PENDING_SETTLE_MS = 2_000  # the emergency stop waits for approvals younger than this to become orders
CLOSE_ANSWER_TIMEOUT_S = 3.0  # the emergency stop waits this long for the order-router to create its closes
RETRY_LATER = "RETRY_LATER"
# denials that depend only on the request itself and the settings: its identical first sending met them
# too, so no order can exist under its id (no need to ask the order-router)
STATIC_CODES = frozenset({
    "INVALID_CLIENT_ORDER_ID", "UNKNOWN_PAIR", "INVALID_QUANTITY", "UNSUPPORTED_ORDER_TYPE", "INVALID_PRICE",
    "MISSING_PRICE", "MISSING_STOP_PRICE", "UNEXPECTED_FIELD", "INVALID_FLAGS", "INVALID_NUMBER",
    "UNKNOWN_EXCHANGE",
})  # fmt: skip
# denials that depend on the read model of the books (and so may be wrong while it is behind)
BOOK_CODES = frozenset({
    "INSUFFICIENT_BALANCE", "MAX_POSITION_SIZE", "MAX_TOTAL_EXPOSURE", "CORRELATION_LIMIT", "REDUCING_ONLY",
    "TRADING_HOURS", "NO_EQUITY", "MAX_DAILY_LOSS", "MAX_DRAWDOWN", "REDUCE_ONLY", "MIN_ACCOUNT_BALANCE",
    STAGE_CAPITAL_LIMIT,
})  # fmt: skip
STATE_KEY = "risk.state"
KEEP_ALERTS = 500
LIMITS_KEY = "risk.limits"
# the fields of PUT /api/risk/config, and the settings they replace
CONFIGURABLE = {
    "max_position_size": "MAX_POSITION_SIZE",
    "max_daily_loss": "MAX_DAILY_LOSS",
    "max_order_notional": "MAX_ORDER_NOTIONAL",
    "max_total_exposure": "MAX_TOTAL_EXPOSURE",
    "max_drawdown": "MAX_DRAWDOWN",
    "price_band_percent": "PRICE_BAND_PERCENT",
    "max_orders_per_second": "MAX_ORDERS_PER_SECOND",
    "allow_short": "ALLOW_SHORT",
    "min_account_balance": "MIN_ACCOUNT_BALANCE",
    # not limits the risk-gate enforces, but set with them (the spec's update-risk-config): the advice and
    # signal-intake read them from the risk-gate's view (RiskMetricsView.limits), so a change applies at once
    "risk_per_trade": "RISK_PER_TRADE",
    "default_stop_loss_percent": "DEFAULT_STOP_LOSS_PERCENT",
    "default_take_profit_percent": "DEFAULT_TAKE_PROFIT_PERCENT",
}


@dataclass(slots=True)
class Pending:
    """An approval whose order the order-router has not announced yet."""

    pair: str
    signed: Decimal
    currency: str
    amount: Decimal
    at: int
    request: OrderRequest | None = None  # what was approved: a retry must carry the same order
    estimated_cost: Decimal | None = None
    checked: bool = False  # asked the order-router once whether its order exists
    unconfirmed: bool = False  # its approval's publish was never acknowledged (stored or not: unknown)
    # the venues whose balance it is reserved against (several venues): the named one, or every candidate of
    # an order naming none (see RiskGate._check); () : the only venue
    venues: tuple[str, ...] = ()


class RiskGate(Actor):
    name = "risk-gate"

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        s = settings
        self.books = BookCache(bus, venue_names(settings))
        self.markets = MarketRulesCache(bus)
        self.trading_state = ACTIVE
        self.config: dict[str, object] = {name: getattr(s, name) for name in CONFIGURABLE.values()}
        self.limits = self._limits()
        self.venues: list[VenueConfig] = venue_configs(s)  # priority order
        self.venue_by_name = {v.name: v for v in self.venues}
        self.only = self.venues[0].name if len(self.venues) == 1 else None  # a one-venue deployment
        # a read model (the portfolio-ledger owns the books): one ledger per venue, so a balance on one venue
        # never pays for an order on another; one venue: every fill, lock and adjustment on its ledger
        self.books_model = VenueLedgers(s.BASE_CURRENCY, s.INITIAL_BALANCE, tuple(self.venue_by_name))
        self.applied = RecentIds(FILL_DEDUPE_WINDOW)  # as the ledger: the same fills booked
        self.fills_seq = 0
        self.working = WorkingOrders()  # order id -> what is left of it, and the sum per pair
        self._watching = asyncio.Lock()  # one ``_watch`` at a time
        # every order not terminal yet, as its last event says (held ones too: a stop not triggered, a bracket leg):
        # the transition's stage capital and a revert's cleanup see the live venues' orders here
        self.open_orders: dict[str, Order] = {}
        self.pending: dict[str, Pending] = {}  # client order id -> reservation
        self.client_ids = RecentIds(CLIENT_ID_WINDOW)  # client order ids that name an order (seen on ORDERS)
        self.orders_seq = 0
        self.retries = 0
        self.early: dict[str, Decimal] = {}  # order id -> filled before its first event was seen
        self.day = DayStart()
        self.peak = s.INITIAL_BALANCE
        self.recent: deque[float] = deque()
        self.alerted_levels: set[str] = set()
        self.alerts: deque[RiskAlert] = deque(maxlen=KEEP_ALERTS)
        self.approved = 0
        self.denied = 0
        self.over: set[str] = set()  # exposure limits the books are over now (alerted once)
        self.risk_service = ServiceClient("risk", s.RISK_SERVICE_URL, s.RISK_SERVICE_TIMEOUT, self.alert)
        self.lookups = asyncio.Semaphore(MAX_LOOKUPS)  # denials' lookups at the order-router in flight
        self.transition = Transition(self)  # paper to live: its one writer (actors/transition.py)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.kv = await self.bus.kv(s.kv_state)
        try:
            entry = await self.kv.get(STATE_KEY)
            if entry.value:
                self.trading_state = entry.value.decode()
        except nats.js.errors.KeyNotFoundError:
            pass
        await self._load_config()
        await self.bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=self._on_fill)
        await self.bus.replay(stream=s.s_orders, subject=s.order_events(), type_=OrderEvent, handler=self._on_order)
        # a live venue's balances adopted by the ledger (adjustments are differences: their order with the
        # fills does not change the balances)
        await self.bus.replay(
            stream=s.s_adjustments, subject=s.balance_adjustments(), type_=BalanceAdjusted,
            handler=self._on_adjustment,
        )  # fmt: skip
        risk_last = (await self.bus.js.stream_info(s.stream_name("RISK"))).state.last_seq or 0
        await self.bus.replay(
            stream=s.stream_name("RISK"), subject=s.risk_events, type_=RiskAlert, handler=self._on_alert,
            start_seq=max(1, risk_last - KEEP_ALERTS + 1),
        )  # fmt: skip
        await self.books.start()
        await self.transition.start()  # before the first order: the mode it is checked in
        # orders side by side, one client order id's one after the other: a check and its reservation are made
        # without a pause between them (``_check``), so an order checked beside another sees what that one reserved
        await self.bus.subscribe(s.orders_submit, OrderRequest, self._on_submit, queue=self.name, lane=_coid)
        await self.bus.subscribe(s.orders_validate, OrderRequest, self._on_validate, queue=self.name)
        await self.bus.subscribe(s.query("alerts"), AlertsQuery, self._on_alerts, queue=self.name)
        await self.bus.subscribe(s.risk_config, RiskLimits, self._on_config, queue=self.name)
        await self.bus.subscribe(s.risk_command, RiskCommand, self._on_command, queue=self.name)
        await self.bus.subscribe(s.query("risk"), Empty, self._on_metrics, queue=self.name)
        self.spawn(self.markets.keep(), "market rules", essential=True)
        self.spawn(self.every(1.0, self._watch, "risk watch"), "watch", essential=True)
        self.spawn(self.every(1.0, self._release_retries, "reservations of retries"), "retries", essential=True)
        self.log.info("trading state {}", self.trading_state)

    async def on_stop(self) -> None:
        await self.risk_service.close()

    def stats(self) -> dict[str, int | float | str]:
        out: dict[str, int | float | str] = {
            "approved": self.approved, "denied": self.denied, "retries": self.retries,
            "tradingState": self.trading_state, "readModel": "in sync" if self.bus.in_sync else "catching up",
            "transition": tr_state_name(self.transition.state),
        }  # fmt: skip
        if self.risk_service.enabled:
            out["riskService"] = self.risk_service.state
        return out

    # -- limits ----------------------------------------------------------------------------------------
    def _limits(self) -> Limits:
        c = self.config
        return Limits(
            max_position_fraction=c["MAX_POSITION_SIZE"],  # type: ignore[arg-type]
            max_daily_loss=c["MAX_DAILY_LOSS"],  # type: ignore[arg-type]
            max_order_notional=c["MAX_ORDER_NOTIONAL"] or None,  # type: ignore[arg-type]
            max_total_exposure=c["MAX_TOTAL_EXPOSURE"],  # type: ignore[arg-type]
            price_band_pct=c["PRICE_BAND_PERCENT"] or None,  # type: ignore[arg-type]
            max_drawdown=c["MAX_DRAWDOWN"] or None,  # type: ignore[arg-type]
            allow_short=bool(c["ALLOW_SHORT"]),
            groups=tuple(
                (name, frozenset(g.pairs), g.max_exposure)
                for name, g in parse_correlation_groups(self.settings.CORRELATION_GROUPS).items()
            ),
            hours=parse_trading_hours(self.settings.TRADING_HOURS),
            timezone=self.settings.TRADING_TIMEZONE,
            min_account_balance=c["MIN_ACCOUNT_BALANCE"] or None,  # type: ignore[arg-type]
        )

    @property
    def max_rate(self) -> int:
        return int(self.config["MAX_ORDERS_PER_SECOND"])  # type: ignore[call-overload]

    async def _load_config(self) -> None:
        try:
            entry = await self.kv.get(LIMITS_KEY)
        except nats.js.errors.KeyNotFoundError:
            return
        saved = msgspec.json.decode(entry.value or b"{}", type=dict[str, str])
        for name, raw in saved.items():
            if name in PARSERS and name in self.config:
                try:
                    self.config[name] = PARSERS[name](raw)
                except ValueError as e:
                    self.log.warning("saved limit {}={!r} ignored: expected {}", name, raw, e)
        self.limits = self._limits()
        self.log.info("limits from {} (set with PUT /api/risk/config): {}", LIMITS_KEY, saved)

    async def _on_config(self, body: RiskLimits, env: Envelope) -> None:
        new = dict(self.config)
        for field, name in CONFIGURABLE.items():
            value = getattr(body, field)
            if value is None:
                continue
            try:
                new[name] = PARSERS[name](value)
            except ValueError as e:
                camel = re.sub(r"_(\w)", lambda m: m.group(1).upper(), field)
                reply = RiskConfigReply(ok=False, field=camel, detail=f"{camel}={value}: expected {e}")
                await self.bus.respond(env, reply)
                return
        await self.kv.put(LIMITS_KEY, msgspec.json.encode({k: str(v) for k, v in new.items()}))
        self.config = new
        self.limits = self._limits()
        await self.alert("warning", "RISK_CONFIG", "limits changed: " + ", ".join(f"{k}={v}" for k, v in new.items()))
        await self.bus.respond(env, RiskConfigReply(ok=True, limits={k: str(v) for k, v in new.items()}))

    # -- the read model --------------------------------------------------------------------------------
    async def _on_fill(self, f: Fill, env: Envelope) -> None:
        self.fills_seq = max(self.fills_seq, env.seq or 0)
        if f.fill_id in self.applied:
            return
        if self.day.day < (day := day_key(f.timestamp)):  # as the ledger
            self.day = roll_day(
                self.books_model.combined(), self.books.mids, self.day, day, self.settings.CONVERSION_BRIDGE
            )
        try:
            self._ledger(f.venue).apply_fill(f)
        except ValueError:
            return  # the ledger dead-letters it
        self.applied.add(f.fill_id)
        # the position has it now: what still waits to fill shrinks at once, not at the order's next event
        # (an algorithm's child holds nothing itself: its fill is its parent's, whose working quantity shrinks)
        oid = parent_of_slice(f.client_order_id) or f.order_id
        if not self.working.add_fill(oid, f.quantity) and (p := self.pending.get(f.client_order_id)) is not None:
            self.early[f.order_id] = self.early.get(f.order_id, ZERO) + f.quantity
            size = abs(p.signed)
            keep = (size - f.quantity) / size if size > ZERO else ZERO
            if keep <= ZERO:
                del self.pending[f.client_order_id]
            else:
                p.signed, p.amount = p.signed * keep, p.amount * keep

    async def _on_adjustment(self, adj: BalanceAdjusted, env: Envelope) -> None:
        if adj.reason != "opening":
            self._ledger(adj.venue).apply_adjustment(adj)
            return
        # a venue's opening balances replace what its books started with: not a gain or a loss of the day - the
        # day start and the peak move with it (else a venue opening late could halt trading on every venue)
        marks, bridge = self.books.mids, self.settings.CONVERSION_BRIDGE
        before = equity(self.books_model.combined(), marks, bridge)
        if not self._ledger(adj.venue).apply_adjustment(adj):
            return
        moved = equity(self.books_model.combined(), marks, bridge) - before
        if moved:
            self.day = dataclasses.replace(self.day, equity=self.day.equity + moved)
            self.peak += moved

    async def _on_order(self, ev: OrderEvent, env: Envelope) -> None:
        self.orders_seq = max(self.orders_seq, env.seq or 0)
        o = ev.order
        if self.only is not None:
            self.books_model.of(self.only).apply_order(o)
        else:
            self.books_model.apply_order(o)  # the lock on the order's venue (it follows an order that moved)
        self.pending.pop(o.client_order_id, None)  # the order is known now: its own lock holds the funds
        if not o.client_order_id.startswith(RESERVED_CLIENT_PREFIX):  # bracket legs are not callers' ids
            self.client_ids.add(o.client_order_id)
        if o.status in TERMINAL_STATUSES:
            self.open_orders.pop(o.order_id, None)
        else:
            self.open_orders[o.order_id] = o
        prev = self.working.pop(o.order_id)
        seen = max(prev.filled_fills if prev else ZERO, self.early.pop(o.order_id, ZERO))
        if lock_of(o) is not None:
            self.working.put(
                o.order_id, Working(o.pair, 1 if o.side == "buy" else -1, o.quantity, o.filled_quantity, seen, o.venue)
            )

    def _ledger(self, venue: str) -> Ledger:
        """The ledger that books what ``venue`` did: its own; the only one in a one-venue deployment."""
        return self.books_model.of(self.only if self.only is not None else venue)

    async def _lagging(self, wait: float = CATCH_UP_WAIT_S) -> bool | None:
        """Is the read model behind the FILLS and ORDERS streams? None: it has every message stored now;
        False: it was behind and caught up within ``wait`` (a sale right after the purchase); True: it
        cannot be known now (NATS reconnecting, the streams not resumed, or still behind after ``wait``)."""
        if not self.bus.in_sync:
            return True
        s = self.subjects
        try:  # the last message of each on the subjects we follow (the streams may hold others)
            f_last, o_last = await asyncio.wait_for(
                asyncio.gather(self._last_seq(s.s_fills, s.fills()), self._last_seq(s.s_orders, s.order_events())),
                STREAM_INFO_TIMEOUT_S,
            )
        except Exception:
            return True

        def behind() -> bool:  # (a message that did not decode was dead-lettered: read all the same)
            f_seen = max(self.fills_seq, self.bus.followed_to(s.s_fills))
            o_seen = max(self.orders_seq, self.bus.followed_to(s.s_orders))
            return f_seen < f_last or o_seen < o_last

        if not behind():
            return None
        deadline = time.monotonic() + wait
        while behind() and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return behind()

    async def _last_seq(self, stream: str, subject: str) -> int:
        try:
            return int((await self.bus.js.get_last_msg(stream, subject)).seq or 0)
        except nats.js.errors.NotFoundError:
            return 0

    def exposure(self, venue: str | None = None) -> Exposure:
        """What the limits see: equity, positions and working orders of every venue together; ``available``:
        ``venue``'s balance (None: the only venue's; several venues: nothing, see ``available``)."""
        marks = self.books.mids
        now = now_ms()
        bridge = self.settings.CONVERSION_BRIDGE
        total = self.books_model.combined()  # every venue together: equity, positions, day start, drawdown
        self.day = roll_day(total, marks, self.day, day_key(now), bridge)
        conv = Converter(total, marks, bridge)  # one rate per currency for this decision
        eq = equity(total, marks, bridge, conv)  # in BASE_CURRENCY, as the ledger's
        self.peak = max(self.peak, eq)
        working = dict(self.working.per_pair)  # (kept in step: no walk over every working order)
        for coid, p in list(self.pending.items()):
            if now - p.at > PENDING_TTL_MS:
                del self.pending[coid]  # its order never showed up: what it reserved is free again
                continue
            working[p.pair] = working.get(p.pair, ZERO) + p.signed
        # positions summed per pair over the venues
        positions = {pair: pos.quantity for pair, pos in total.positions.items() if pos.quantity}
        held_marks = dict(marks)
        for pair in positions:  # a held pair with no book yet is valued at its last fill (as the ledger does)
            if pair not in held_marks and (m := mark_of(total, pair, marks)) is not None:
                held_marks[pair] = m
        pairs = self.settings.PAIRS
        extra = [p for p in (*positions, *working) if p not in pairs]
        return Exposure(
            equity=eq,
            day_start_equity=self.day.equity,
            peak_equity=self.peak,
            available=self.available(venue),
            positions=positions,
            working=working,
            marks=held_marks,
            rates=quote_rates(conv, (*pairs, *extra) if extra else pairs),  # every amount into BASE_CURRENCY
            base_currency=total.base_currency,
            venue_positions=self._positions_at(venue),
        )

    def _positions_at(self, venue: str | None) -> dict[str, Decimal] | None:
        """The positions at ``venue`` (None: one venue, or no venue chosen yet)."""
        if venue is None or self.only is not None:
            return None
        return {pair: pos.quantity for pair, pos in self.books_model.of(venue).positions.items() if pos.quantity}

    def available(self, venue: str | None = None) -> dict[str, Decimal]:
        """What ``venue`` (None: the only venue) has available, after its working orders and what the
        approvals on their way reserve against it."""
        now = now_ms()
        if self.only is not None:
            led = self.books_model.of(self.only)
        elif venue is None:
            return {}
        else:
            led = self.books_model.of(venue)
        available = {c: b.available for c, b in led.balances.items()}
        for p in list(self.pending.values()):
            if now - p.at > PENDING_TTL_MS or (self.only is None and venue not in p.venues):
                continue
            available[p.currency] = available.get(p.currency, ZERO) - p.amount
        return available

    # -- orders ----------------------------------------------------------------------------------------
    def _rate_slot(self) -> float | None:
        """At most MAX_ORDERS_PER_SECOND orders in any second; the excess is denied, never queued. The
        slot taken (its time), or None when there is none left."""
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= 1.0:
            self.recent.popleft()
        if len(self.recent) >= self.max_rate:
            return None
        self.recent.append(now)
        return now

    async def _on_submit(self, req: OrderRequest, env: Envelope) -> None:
        req = self.transition.route(req)  # in paper mode an order naming no venue goes to the paper venue
        coid = req.client_order_id
        # a retry first, before any limit, state or rate check: answered with its order, whatever happened since
        if coid in self.client_ids:
            await self._to_router(req, env)
            return
        if (p := self.pending.get(coid)) is not None and p.request is not None:  # approved, order not seen yet
            if same_request(p.request, req, self.settings.DEFAULT_TIME_IN_FORCE):
                await self._to_router(req, env, p.estimated_cost)
            else:
                await self._deny(req, env, _duplicate(coid))
            return
        # the transition's epoch the check decides under: a revert while it awaits makes the approval older than the
        # stored state, and the order-router refuses it live (never stamped with an epoch it was not checked under)
        epoch = self.transition.state.epoch
        slot = self._rate_slot()
        if slot is None:
            verdict: Denial | Approval = Denial(
                "RATE_LIMIT", None, f"MAX_ORDERS_PER_SECOND: more than {self.max_rate} orders in one second"
            )
        else:
            verdict = await self._check(req, dry_run=False)
        if isinstance(verdict, Denial):
            if verdict.code in ("MAX_DAILY_LOSS", "MAX_DRAWDOWN"):
                await self._watch()  # a daily-loss denial halts at once
            if verdict.code in STATIC_CODES:
                await self._deny(req, env, verdict)  # no order can exist under its id
            else:  # unless its id names an order the gate no longer remembers: looked up beside the handler
                self.spawn(self._deny_unless_known(req, env, verdict, slot), "denial")
            return
        approved = ApprovedOrder(
            request=req,
            risk_validation=verdict.validation,
            estimated_cost=verdict.estimated_cost,
            reply_to=env.reply,
            approved_at=now_ms(),
            venues=verdict.venues,
            transition_epoch=epoch,  # the order-router refuses it live after a revert
            reduces=verdict.reduces,
        )
        if (p := self.pending.get(coid)) is not None:
            p.request, p.estimated_cost = req, verdict.estimated_cost
        if (failure := await self._publish_approval(approved)) is not None:
            # not confirmed: it may be stored (a lost ack) or not. What it reserved stays until its order
            # shows, or until PENDING_CHECK_MS shows none; a retry meanwhile is checked again, never sent on
            # unchecked (its approval, if stored, is the one JetStream keeps: the same Nats-Msg-Id)
            if p is not None:
                p.request, p.unconfirmed = None, True
            self.log.warning("approval of {} not confirmed ({}): outcome unknown", coid, failure)
            why = f"the approval of {coid} was not confirmed ({failure}); retry with the same clientOrderId"
            await self.bus.respond(env, _denied(Denial(RETRY_LATER, None, why)))
            return
        self.approved += 1

    async def _publish_approval(self, approved: ApprovedOrder) -> str | None:
        """Store an approval on the durable hop, once: under the Nats-Msg-Id ``approval:<clientOrderId>:<when>``,
        so a publish repeated after a lost ack is dropped by JetStream if the first was stored (a later
        approval of the same id, a retry of an order past the gate's memory, is another message). Tried again
        while connected; the last failure, or None once stored."""
        req = approved.request
        failure = ""
        t0 = time.monotonic()
        for _ in range(APPROVAL_TRIES):
            try:
                await self.bus.js_publish(
                    self.subjects.approved_orders(req.pair, partition_for(req.pair, self.settings.PARTITIONS)),
                    approved,
                    msg_id=f"approval:{req.client_order_id}:{approved.approved_at}",  # this approval, not a later one
                )
                return None
            except Exception as e:
                failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if not self.bus.nc.is_connected or time.monotonic() - t0 >= APPROVAL_AGAIN_WITHIN_S:
                    break
        return failure

    async def _to_router(self, req: OrderRequest, env: Envelope, estimated_cost: Decimal | None = None) -> None:
        """A retry of an order that exists (or is on its way): the order-router answers it with the order
        (or 409 for other content). Nothing checked, reserved or counted against the rate."""
        if req.pair not in self.settings.PAIRS:  # not the order it names (and no subject to carry it on)
            await self._deny(req, env, _duplicate(req.client_order_id))
            return
        self.retries += 1
        self.log.info("{} names an order already: answered with it by the order-router", req.client_order_id)
        note = "clientOrderId names an existing order: answered with it, not checked again"
        approved = ApprovedOrder(
            request=req, risk_validation=RiskValidation(passed=True, note=note), estimated_cost=estimated_cost,
            reply_to=env.reply, approved_at=now_ms(), transition_epoch=self.transition.state.epoch,
        )  # fmt: skip
        await self.bus.js_publish(
            self.subjects.approved_orders(req.pair, partition_for(req.pair, self.settings.PARTITIONS)), approved
        )

    async def _order_of(self, client_order_id: str) -> Order | None:
        """The order a client order id names, asked of the order-router (its owner). Raises RequestFailed."""
        # (every partition is asked when PARTITIONS > 1: a client order id does not name its pair)
        return await order_of_client(self.bus, client_order_id, self.settings.PARTITIONS, timeout=LOOKUP_TIMEOUT_S)

    async def _release_retries(self) -> None:
        """A reservation whose order is not seen after PENDING_CHECK_MS: if the order-router's order under
        that client order id was created before the approval, the approval was a retry of an order older
        than the gate remembers (answered with it, no new event coming): release what it reserved."""
        now = now_ms()
        due = [(c, p) for c, p in self.pending.items() if not p.checked and now - p.at > PENDING_CHECK_MS][:20]
        for coid, p in due:
            try:
                o = await self._order_of(coid)
            except RequestFailed:
                continue  # asked again next time
            p.checked = True
            if o is not None and o.created_at < p.at and self.pending.get(coid) is p:
                del self.pending[coid]
                self.client_ids.add(coid)
                self.log.info("{} was a retry of order {}: its reservation released", coid, o.order_id)
            elif o is None and p.unconfirmed and self.pending.get(coid) is p:
                del self.pending[coid]  # its approval was not stored after all (or waits for a router away)
                self.log.info("approval of {} not confirmed and no order since: its reservation released", coid)

    async def _deny_unless_known(self, req: OrderRequest, env: Envelope, d: Denial, slot: float | None) -> None:
        """A denial, unless the client order id names an order after all (one the gate does not remember):
        then that order is the answer, and the rate slot is given back."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S), self.lookups:  # a burst of denials: bounded load
                known = await self._order_of(req.client_order_id) is not None
        except (RequestFailed, TimeoutError) as e:
            reason = e.reason if isinstance(e, RequestFailed) else "too many lookups at once"
            why = f"cannot tell now whether clientOrderId {req.client_order_id} names an order ({reason})"
            await self._deny(req, env, Denial(RETRY_LATER, None, f"{why}; retry with the same clientOrderId"))
            return
        if not known:
            await self._deny(req, env, d)
            return
        if slot is not None:
            with contextlib.suppress(ValueError):
                self.recent.remove(slot)
        await self._to_router(req, env)

    async def _on_validate(self, req: OrderRequest, env: Envelope) -> None:
        """Every check an order would meet now, nothing reserved, placed or counted against the rate."""
        req = self.transition.route(req)
        verdict = await self._check(req, dry_run=True)
        if isinstance(verdict, Denial):
            reply = _denied(verdict)
        else:
            reply = OrderReply(ok=True, risk_validation=verdict.validation, estimated_cost=verdict.estimated_cost)
        await self.bus.respond(env, reply)

    async def _check(self, req: OrderRequest, *, dry_run: bool) -> Denial | Approval:
        """The decision on an order: its own checks, the portfolio limits, then the sizing advice (and
        the user's risk service). A real submission (not ``dry_run``) reserves what it needs until its
        order is seen (the rate is counted by ``_on_submit``, before this).

        Venues. An order naming one (``exchange``) must name a configured venue (else ``UNKNOWN_EXCHANGE``)
        that lists its pair; that venue's market rules apply and that venue's own available balance must
        pay for it (a balance on another venue does not count). An order naming none, with several venues,
        is checked against each (``domain.limits.candidates``): the venues that list the pair, whose rules
        accept it and whose balance pays for it are its candidates, in priority order (``Approval.venues``,
        the router routes among these only); none: the first venue's denial, the detail saying why each
        could not. Positions, working orders, equity, daily loss and drawdown are every venue's together.

        Reservations: an approval holds its funds until its order's first event is seen; then the order's
        own lock holds them, in the ledger of the venue the event names. An order naming a venue reserves
        against that venue; one naming none reserves against *every* candidate until then (conservative:
        while it is in flight each candidate looks poorer by its amount, never richer, so no racing order
        can spend funds the router may still take on whichever candidate it picks; the cost is that a burst
        of unnamed orders may be denied a little early, never approved beyond what a venue holds)."""
        known = req.pair in self.settings.PAIRS
        named = req.exchange
        if named is not None and named not in self.venue_by_name:
            return Denial(
                "UNKNOWN_EXCHANGE", "exchange",
                f"exchange {named!r} is not a configured venue (EXCHANGES: {', '.join(self.venue_by_name)})",
            )  # fmt: skip
        if named is not None and known and req.pair not in (pairs := self.venue_by_name[named].pairs):
            return Denial("UNKNOWN_PAIR", "pair", f"{named} does not list {req.pair} (its pairs: {', '.join(pairs)})")
        if (gated := self.transition.gate_denial(req)) is not None:
            return gated  # paper mode: no order for a live venue
        several = self.only is None
        venue = named or self.only  # whose balance decides; None: several venues, none named (candidates below)
        # whose rules: the named venue's; one venue: the only rules there are; several, none named: each's, below
        rules_of = named if several else None
        book = await self.books.get(req.pair) if known else None

        def own_checks() -> Denial | Approval:
            position: Decimal | None = None
            if req.reduce_only and known:
                position = self.books_model.position(req.pair, named if several else None)
            rules = self.markets.get(req.pair, rules_of) if venue is not None else None
            return check_order(
                req, pairs=self.settings.PAIRS, book=book, trading_state=self.trading_state,
                rules=rules, position=position, now=now_ms(),
            )  # fmt: skip

        decision = own_checks()
        if isinstance(decision, Denial) and decision.code in BOOK_CODES and (lag := await self._lagging()) is not None:
            decision = own_checks()  # the position may be in what was not read yet
            if isinstance(decision, Denial) and decision.code in BOOK_CODES and lag:
                return _cannot_know(decision)
        if isinstance(decision, Denial):
            return decision
        # (no source skips the limits: the emergency stop's closes go straight to the order-router)
        intent = self._intent(req, book)
        if intent is not None:  # what it pays the venue, for MIN_ACCOUNT_BALANCE (several unnamed: the dearest)
            intent = dataclasses.replace(intent, fee_rate=self._taker_fee(req.pair, venue))
        mid = mid_price(book.bids, book.asks) if book is not None else None

        def limits() -> tuple[Exposure, Denial | None, list[str] | None]:
            x = self.exposure(venue)  # for the limits and the advice: without this order's own reservation
            if venue is not None:
                if intent is None:
                    return x, None, [venue] if named else None
                d = check_limits(intent, x, self.limits, self.trading_state, mid, now_ms(), named if several else None)
                return x, d, [venue] if named else None
            # (a paper venue beside live venues takes only the orders naming it: the router never routes one there)
            live = any(not v.paper for v in self.venues)
            states = [
                VenueState(v.name, v.pairs, self.markets.get(req.pair, v.name), self.available(v.name))
                for v in self.venues
                if not (live and v.paper)
            ]
            able, unable = candidates(req, intent, states, self.limits.allow_short)
            if intent is None:
                return x, None if able else no_venue(unable), able
            # the limits with the balance of the venue it would go to (the first candidate), else of the first
            # venue the balance alone kept out (so that a limit any venue would meet is the answer)
            short = [n for n, d in unable if d.code == "INSUFFICIENT_BALANCE"]
            pick = able[0] if able else short[0] if short else unable[0][0]
            x.available = dict(next(v.available for v in states if v.name == pick))
            x.venue_positions = self._positions_at(pick)
            d = check_limits(intent, x, self.limits, self.trading_state, mid, now_ms(), pick)
            if not able and (d is None or d.code == "INSUFFICIENT_BALANCE"):
                d = no_venue(unable)
            return x, d, able

        def limits_and_stage() -> tuple[Exposure, Denial | None, list[str] | None]:
            x, d, able = limits()
            if d is None and intent is not None and self.transition.goes_live(req):
                d = self._stage_capital(x, intent)
            return x, d, able

        before, denial, venues = limits_and_stage()
        if denial is not None and denial.code in BOOK_CODES and (lag := await self._lagging()) is not None:
            # what it lacked may be in fills or order events not read yet (a sale right after the purchase)
            before, denial, venues = limits_and_stage()
            if denial is not None and denial.code in BOOK_CODES and lag:
                return _cannot_know(denial)
        if denial is not None:
            return denial
        if intent is not None and not dry_run:
            amount = intent.quantity * intent.price if req.side == "buy" else intent.quantity
            if req.type in HELD_BY_ROUTER:  # its order holds nothing until it triggers (lock_of): nor does its approval
                amount = ZERO
            self.pending[req.client_order_id] = Pending(
                req.pair, intent.quantity if req.side == "buy" else -intent.quantity,
                intent.quote if req.side == "buy" else intent.base, amount, now_ms(),
                venues=tuple(venues or ()) if several else (),
            )  # fmt: skip
        if venues is not None:
            decision = dataclasses.replace(decision, venues=venues)
        if intent is not None and is_reducing(intent, before):  # (an algorithm's parent runs while REDUCING)
            decision = dataclasses.replace(decision, reduces=True)
        rules = self.markets.get(req.pair, venues[0] if several and venues else None)
        verdict = await self._advise(req, decision, intent, before, rules)
        if isinstance(verdict, Denial):
            self.pending.pop(req.client_order_id, None)
            return verdict
        return decision

    def _stage_capital(self, x: Exposure, intent: Intent) -> Denial | None:
        """The transition's stage: the live venues' open exposure (positions, and every open order - working
        orders and approvals on their way - as its worst case per pair, in BASE_CURRENCY: domain/transition.py)
        may not go above the stage's capital; a live pair that cannot be valued is RETRY_LATER."""
        if self.transition.stage_limit() is None:
            return None
        live = set(self.transition.live_venues)
        positions: dict[str, Decimal] = {}
        for v in live:
            for pair, pos in self.books_model.of(v).positions.items():
                if pos.quantity:
                    positions[pair] = positions.get(pair, ZERO) + pos.quantity

        def price_of(pair: str, price: Decimal | None) -> Decimal | None:
            rate = rate_of(x, pair)
            return price * rate if price is not None and rate is not None else None

        orders: list[OpenOrder] = []
        for w in self.working.values():
            if (w.venue in live or (self.only is not None and self.only in live)) and w.left > ZERO:
                orders.append(OpenOrder(w.pair, "buy" if w.sign > 0 else "sell", w.left))
        for p in self.pending.values():
            if p.signed and ((self.only in live) if self.only is not None else any(v in live for v in p.venues)):
                px = p.request.price if p.request is not None else None
                orders.append(OpenOrder(p.pair, "buy" if p.signed > 0 else "sell", abs(p.signed), price_of(p.pair, px)))
        for o in self.transition.held_live_orders():  # held by the router (no lock): they go out when they trigger
            px = o.stop_price if o.stop_price is not None else o.price
            left = o.quantity - o.filled_quantity
            orders.append(OpenOrder(o.pair, o.side, left, price_of(o.pair, px), reduce_only=o.reduce_only))
        prices: dict[str, Decimal] = {}  # the market price in BASE_CURRENCY (none: no mark, or not convertible)
        for pair in {*positions, *(o.pair for o in orders), intent.pair}:
            if (mark := x.marks.get(pair)) is not None and (rate := rate_of(x, pair)) is not None:
                prices[pair] = mark * rate
        new = OpenOrder(intent.pair, intent.side, intent.quantity, price_of(intent.pair, intent.price))
        return self.transition.capital_denial(positions, orders, prices, new)

    async def _advise(
        self, req: OrderRequest, decision: Approval, intent: Intent | None, x: Exposure, rules: MarketRules | None
    ) -> Denial | None:
        """Sizing advice in ``decision.validation`` (and the user's risk service, when set). Skipped with
        ENABLE_RISK_CHECKS=false or ``riskCheck: false``: the hard limits above have already decided."""
        v = decision.validation
        if not (self.settings.ENABLE_RISK_CHECKS and req.risk_check):
            v.recommended_size = v.max_risk = None
            why = "riskCheck: false" if not req.risk_check else "ENABLE_RISK_CHECKS=false"
            v.note = f"sizing advice skipped ({why})"
            return None
        if intent is not None:
            step = rules.amount_step if rules else QTY_STEP
            best = min(req.quantity, round_down(headroom(intent, x, self.limits), step))
            budget = in_quote(x, req.pair, x.equity)  # equity in the pair's quote currency, as the stop distance
            if req.stop_loss is not None and budget is not None:
                try:
                    risk_per_trade: Decimal = self.config["RISK_PER_TRADE"]  # type: ignore[assignment]
                    sized = fixed_fractional(budget, risk_per_trade, intent.price, req.stop_loss, step)
                    best = min(best, sized.quantity)
                except SizingError:
                    pass
            v.recommended_size = best
        if not self.risk_service.enabled:
            return None
        check = TradeCheck(
            client_order_id=req.client_order_id, pair=req.pair, side=req.side, type=req.type, quantity=req.quantity,
            price=intent.price if intent else req.price, stop_loss=req.stop_loss, take_profit=req.take_profit,
            equity=x.equity, source=req.source,
        )  # fmt: skip
        try:
            answer = await self.risk_service.post("/api/risk/validate-trade", check, TradeVerdict)
        except ServiceDown as e:
            v.note = f"risk service unavailable ({e.reason}): the local rules decided"
            return None
        if self.trading_state == HALTED:  # stopped while we waited for the answer
            return Denial("TRADING_HALTED", None, "trading is halted")
        if not answer.approved:
            return Denial("RISK_SERVICE", None, f"risk service: {answer.reason or 'not approved'}")
        v.decided_by = "risk_service"
        if answer.recommended_size is not None and answer.recommended_size.is_finite():
            v.recommended_size = answer.recommended_size
        if answer.max_risk is not None and answer.max_risk.is_finite():
            v.max_risk = answer.max_risk
        return None

    def _taker_fee(self, pair: str, venue: str | None) -> Decimal:
        """The taker fee of ``venue`` for ``pair`` (None: the highest of the venues' that list it); 0 when no
        venue's rules are known yet."""
        names = [venue] if venue is not None else list(self.venue_by_name)
        fees = [r.taker_fee for n in names if (r := self.markets.get(pair, n)) is not None]
        if not fees and venue is not None and (r := self.markets.get(pair)) is not None:
            fees = [r.taker_fee]  # a one-venue deployment: its rules may be filed under no venue name
        return max((f for f in fees if f.is_finite() and f > 0), default=Decimal(0))

    @staticmethod
    def _intent(req: OrderRequest, book: object) -> Intent | None:
        base, quote = pair_currencies(req.pair)
        price = req.price if req.type in ("limit", "stop_limit") else None
        ref = price or req.stop_price
        if ref is None and book is not None:
            levels = book.asks if req.side == "buy" else book.bids  # type: ignore[attr-defined]
            slices, _ = walk_book(levels, req.quantity, is_buy=req.side == "buy")
            ref = vwap(slices) or (levels[0][0] if levels else None)
        if ref is None:
            return None
        trigger = req.stop_price if req.type in TRIGGERED_TYPES else None  # (waits for it: see equity_after)
        return Intent(req.pair, req.side, req.quantity, ref, price, quote, base, trigger=trigger)

    async def _deny(self, req: OrderRequest, env: Envelope, d: Denial) -> None:
        self.denied += 1
        self.log.info(
            "denied {} ({} {} {}): {} {}", req.client_order_id, req.side, req.quantity, req.pair, d.code, d.reason
        )
        await self.bus.respond(env, _denied(d))

    # -- state -----------------------------------------------------------------------------------------
    async def _set_state(self, state: str, reason: str) -> RiskStateChange:
        previous, self.trading_state = self.trading_state, state  # at once: a racing order sees it
        await self.kv.put(STATE_KEY, state.encode())
        change = RiskStateChange(state=state, previous=previous, reason=reason, ts=now_ms())  # type: ignore[arg-type]
        await self.bus.js_publish(
            self.subjects.risk_events,
            RiskAlert(severity="emergency" if state == HALTED else "warning", code="TRADING_STATE",
                      message=f"trading state {previous} -> {state}: {reason}", ts=change.ts, state=state,
                      previous=previous),
        )  # fmt: skip
        self.log.warning("trading state {} -> {}: {}", previous, state, reason)
        return change

    async def _watch(self) -> None:
        """Daily loss at 80% of its limit: a warning; at 100%: halt and an emergency alert. Drawdown too. One watch
        at a time (the timer's and those of orders denied for the loss side by side): one alert, one halt."""
        async with self._watching:
            await self._watch_once()

    async def _watch_once(self) -> None:
        x = self.exposure()
        loss, limit = daily_loss(x), self.limits.max_daily_loss
        if loss >= limit * Decimal("0.8") and "daily80" not in self.alerted_levels:
            self.alerted_levels.add("daily80")
            await self.alert("warning", "DAILY_LOSS_80", f"daily loss {loss:.4f} is 80% of MAX_DAILY_LOSS {limit}")
        if loss >= limit and self.trading_state != HALTED:
            await self.alert("emergency", "DAILY_LOSS_LIMIT", f"daily loss {loss:.4f} reached MAX_DAILY_LOSS {limit}")
            await self._set_state(HALTED, f"MAX_DAILY_LOSS reached: down {loss:.4f} of start-of-day equity")
        dd_limit = self.limits.max_drawdown
        if dd_limit and x.peak_equity > ZERO and self.trading_state != HALTED:
            dd = (x.peak_equity - x.equity) / x.peak_equity
            if dd >= dd_limit:
                await self.alert("emergency", "MAX_DRAWDOWN", f"drawdown {dd:.4f} reached MAX_DRAWDOWN {dd_limit}")
                await self._set_state(HALTED, f"MAX_DRAWDOWN reached: {dd:.4f}")
        if loss < limit * Decimal("0.8"):
            self.alerted_levels.discard("daily80")
        await self.transition.watch()  # the automatic revert to paper
        over = breaches(x, self.limits)
        for key in sorted(set(over) - self.over):
            await self.alert("warning", "EXPOSURE_LIMIT", over[key], pair=key[5:] if key.startswith("pair:") else None)
        self.over = set(over)

    async def _on_command(self, cmd: RiskCommand, env: Envelope) -> None:
        reason = cmd.reason or cmd.action.replace("_", " ")
        if cmd.action == "resume":
            self.alerted_levels.clear()
            await self.bus.respond(env, await self._set_state(ACTIVE, reason))
            return
        if cmd.action == "reduce":
            await self.bus.respond(env, await self._set_state(REDUCING, reason))
            return
        change = await self._set_state(HALTED, f"emergency stop: {reason}")
        await self.alert("emergency", "EMERGENCY_STOP", f"emergency stop: {reason}")
        for _ in range(40):  # let approvals on their way (not stale ones) become orders, so the cancel catches them
            if not any(now_ms() - p.at < PENDING_SETTLE_MS for p in self.pending.values()):
                break
            await asyncio.sleep(0.05)
        # every partition's working orders (PARTITIONS > 1: each partition is asked; one that does not answer is
        # named in the errors, the others' orders are canceled all the same)
        canceled, failures = await cancel_all(
            self.bus, CancelOrder(all=True, reason="emergency stop"), self.settings.PARTITIONS,
            timeout=CANCEL_ALL_TIMEOUT_S,
        )  # fmt: skip
        change.canceled_orders = [o.order_id for o in canceled.orders]
        for e in failures:
            self.log.error("emergency stop could not cancel the working orders: {}", e)
            change.errors.append(
                f"working orders not canceled: the order-router{partition_named(e)} did not answer "
                f"({e.subject}: {e.reason})"
            )
        if cmd.close_positions:
            change.closing_orders, change.closing_pending, failed = await self._close_all()
            change.errors += failed
            if change.closing_pending:
                change.errors.append(
                    f"{len(change.closing_pending)} close(s) sent but not confirmed yet (closingPending): the "
                    "order-router makes them when it takes them"
                )
        await self.bus.respond(env, change)

    async def _close_all(self, venues: set[str] | None = None) -> tuple[list[str], list[str], list[str]]:
        """Close every position at market (reduce-only orders that pass the halt). The order ids of the
        closing orders, as the order-router answers them (GET /api/orders/{id} finds each), and the client
        order ids of the closes sent whose orders were not confirmed in time (made when the router takes them),
        and the closes that could not be sent."""
        inbox = self.bus.nc.new_inbox()
        answers: asyncio.Queue[OrderReply] = asyncio.Queue()

        async def on_answer(msg: NatsMsg) -> None:
            with contextlib.suppress(DecodeFailure):
                answers.put_nowait(decode(msg.data, OrderReply))

        sub = await self.bus.nc.subscribe(inbox, cb=on_answer)
        sent: list[str] = []
        failed: list[str] = []
        try:
            # each venue's position closed on that venue (one venue: every position, as it always was)
            held = (
                [(None, p, q) for p, q in self.books_model.net_positions().items()] if self.only is not None
                else [(v, p, q) for v, p, q in self.books_model.positions()]
            )  # fmt: skip
            for venue, pair, qty in sorted(held, key=lambda h: (h[1], h[0] or "")):
                if not qty or pair not in self.settings.PAIRS:
                    continue
                if venues is not None and (venue or self.only) not in venues:  # (the transition: live venues only)
                    continue
                if venue is not None and venue not in self.venue_by_name:  # booked from a venue not configured
                    failed.append(f"{pair} on {venue} not closed: {venue} is not a configured venue; close it by hand")
                    continue
                on = f"{venue}-" if venue is not None else ""
                req = OrderRequest(
                    client_order_id=f"emergency-{on}{pair}-{now_ms()}", pair=pair,
                    side="sell" if qty > 0 else "buy", quantity=abs(qty),  # type: ignore[arg-type]
                    reduce_only=True, source="emergency", ts=now_ms(), exchange=venue,
                )  # fmt: skip
                approved = ApprovedOrder(
                    request=req, risk_validation=RiskValidation(passed=True, reason="emergency close"),
                    reply_to=inbox, approved_at=now_ms(), venues=[venue] if venue is not None else None,
                )  # fmt: skip
                try:
                    await self.bus.js_publish(
                        self.subjects.approved_orders(pair, partition_for(pair, self.settings.PARTITIONS)), approved
                    )
                except Exception as e:  # the other pairs are still closed; the answer says which one was not
                    self.log.error("emergency close of {} not sent: {}", pair, e)
                    failed.append(f"close of {pair} not sent ({type(e).__name__}): close it by hand")
                    continue
                sent.append(req.client_order_id)
            by_client: dict[str, str] = {}
            deadline = time.monotonic() + CLOSE_ANSWER_TIMEOUT_S
            while len(by_client) < len(sent) and (left := deadline - time.monotonic()) > 0:
                try:
                    reply = await asyncio.wait_for(answers.get(), left)
                except TimeoutError:
                    break
                if reply.order is not None:
                    by_client[reply.order.client_order_id] = reply.order.order_id
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        missing = [c for c in sent if c not in by_client]

        async def look_up(coid: str) -> None:
            with contextlib.suppress(RequestFailed):
                if (o := await self._order_of(coid)) is not None:
                    by_client[coid] = o.order_id

        await asyncio.gather(*(look_up(c) for c in missing))  # at once, not one after the other
        pending = [c for c in sent if c not in by_client]
        for coid in pending:
            self.log.error("emergency close {}: no answer from the order-router yet", coid)
        return [by_client[c] for c in sent if c in by_client], pending, failed

    # -- alerts ----------------------------------------------------------------------------------------
    async def _on_alert(self, a: RiskAlert, env: Envelope) -> None:
        self.alerts.append(a)  # every actor's, as heard on tbx.events.risk

    async def _on_alerts(self, q: AlertsQuery, env: Envelope) -> None:
        found = [a for a in reversed(self.alerts) if q.severity is None or a.severity == q.severity]
        await self.bus.respond(env, AlertsPage(alerts=found[: max(1, min(q.limit, KEEP_ALERTS))]))

    # -- metrics ---------------------------------------------------------------------------------------
    async def _on_metrics(self, q: Empty, env: Envelope) -> None:
        x = self.exposure()
        pairs = []
        unconverted: list[str] = []
        total = ZERO
        for pair in sorted(set(x.positions) | set(x.working)):
            mark = x.marks.get(pair)
            net = x.positions.get(pair, ZERO) + x.working.get(pair, ZERO)
            rate = rate_of(x, pair)
            exp = abs(net) * mark if mark is not None else ZERO  # in the quote currency
            if rate is None:
                if exp:
                    unconverted.append(pair)  # cannot be valued in BASE_CURRENCY now: not in the totals
                exp = ZERO
            elif rate != 1:
                exp *= rate  # in BASE_CURRENCY, as equity
            total += exp
            frac = exp / x.equity if x.equity > ZERO else ZERO
            pairs.append(
                PairExposure(
                    pair=pair,
                    position=x.positions.get(pair, ZERO),
                    working=x.working.get(pair, ZERO),
                    mark=mark,
                    exposure=exp,
                    fraction=frac,
                    rate=rate,
                )
            )
        now = time.monotonic()
        view = RiskMetricsView(
            trading_state=self.trading_state,
            equity=x.equity,
            day_start_equity=x.day_start_equity,
            daily_pnl=x.equity - x.day_start_equity,
            daily_loss_fraction=daily_loss(x),
            max_daily_loss=self.limits.max_daily_loss,
            peak_equity=x.peak_equity,
            drawdown_fraction=(x.peak_equity - x.equity) / x.peak_equity if x.peak_equity > ZERO else ZERO,
            total_exposure_fraction=total / x.equity if x.equity > ZERO else ZERO,
            pairs=pairs,
            pending_approvals=len(self.pending),
            orders_last_second=sum(1 for t in self.recent if now - t < 1.0),
            limits={k: str(v) for k, v in self.config.items()},
            ts=now_ms(),
            base_currency=x.base_currency,
            conversion_rates={
                q: r
                for p, r in (x.rates or {}).items()
                if r is not None and (q := pair_currencies(p)[1]) != x.base_currency
            },
            unconverted=unconverted,
        )
        await self.bus.respond(env, view)


def _cannot_know(d: Denial) -> Denial:
    """A denial that may only be the read model being behind: "retry", not a final no."""
    return Denial(
        RETRY_LATER, None,
        f"cannot decide now: the risk-gate's view of the books is catching up with the event log (it would "
        f"say {d.code}: {d.reason}); retry in a second with the same clientOrderId",
    )  # fmt: skip


def _duplicate(client_order_id: str) -> Denial:
    return Denial(
        "DUPLICATE_CLIENT_ORDER_ID", "clientOrderId",
        f"clientOrderId {client_order_id} already names an order, with other content",
    )  # fmt: skip


def _denied(d: Denial) -> OrderReply:
    by = "risk_service" if d.code == "RISK_SERVICE" else "local"
    validation = RiskValidation(passed=False, code=d.code, reason=d.reason, decided_by=by)
    return OrderReply(ok=False, code=d.code, field=d.field, detail=d.reason, risk_validation=validation)


def _coid(req: OrderRequest) -> str:
    return req.client_order_id
