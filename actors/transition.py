"""The paper-to-live transition, a module of the risk-gate (its one writer; the rules: domain/transition.py).

The risk-gate owns it because it enforces it: the mode and stage it decides orders with are the very state it
writes, so no order is ever checked against a state another actor has moved on from. The state is in JetStream
KV ``<PREFIX>_TRANSITION`` (key ``state``, written with check-and-set on its revision: a second risk-gate
instance cannot overwrite a step it has not seen), every step an event on ``tbx.events.transition`` (stream
TRANSITION: the audit trail, replayed at start for ``history``). Commands come on ``tbx.transition.command``,
the view on ``tbx.query.transition``.

The milestones are measured on the portfolio-ledger's figures (``tbx.query.performance`` with ``mode`` and
``since``): the paper venues' books over TRANSITION_EVALUATION_DAYS for going live, the live venues' books since
the stage began for the next stage.

Automatic revert (checked every second by the risk-gate's watch): the live venues' equity down
TRANSITION_REVERT_DRAWDOWN from its peak since the stage began, or TRANSITION_REVERT_DAILY_LOSS of the day's
start, or a live venue reported not connected by the order-router's heartbeats for longer than
TRANSITION_REVERT_VENUE_GRACE_MS: back to paper, the live venues' working orders canceled, their positions kept
or closed (TRANSITION_REVERT_POSITIONS), a critical alert.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors

from bus.client import Envelope
from bus.errors import RequestFailed
from config.venues import PAPER
from domain import transition as tr
from domain.risk import Denial
from domain.valuation import Converter, books_equity
from domain.venue_ledgers import VenueLedgers
from schemas.messages import (
    CancelOrder,
    CommandReply,
    Empty,
    Heartbeat,
    Milestone,
    OrderRequest,
    Performance,
    PerformanceQuery,
    TransitionCommand,
    TransitionEvent,
    TransitionReply,
    TransitionStageView,
    TransitionState,
    TransitionView,
    TransitionWindow,
    now_ms,
)

if TYPE_CHECKING:
    from actors.risk_gate import RiskGate

STATE_KEY = "state"
KEEP_HISTORY = 50
SHOWN_HISTORY = 20
PERFORMANCE_TIMEOUT_S = 5.0
CANCEL_TIMEOUT_S = 5.0
LIVE_NOT_APPROVED = "LIVE_NOT_APPROVED"
STAGE_CAPITAL_LIMIT = "STAGE_CAPITAL_LIMIT"


class Transition:
    def __init__(self, gate: RiskGate) -> None:
        self.gate = gate
        s = gate.settings
        self.settings = s
        self.paper_venues = [v.name for v in gate.venues if v.paper]
        self.live_venues = [v.name for v in gate.venues if not v.paper]
        self.stages: tuple[Decimal, ...] = tuple(s.TRANSITION_STAGES)
        self.state = TransitionState(mode="paper")
        self.rev = 0
        self.history: deque[TransitionEvent] = deque(maxlen=KEEP_HISTORY)
        self.down_since: dict[str, int] = {}  # live venue -> first heartbeat saying it is not connected
        self.lock = asyncio.Lock()  # one step at a time
        self.limits = tr.RevertLimits(s.TRANSITION_REVERT_DRAWDOWN, s.TRANSITION_REVERT_DAILY_LOSS)

    @property
    def log(self) -> Any:
        return self.gate.log

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        g = self.gate
        sub = g.subjects
        self.kv = await g.bus.kv(sub.kv_transition)
        await self._load()
        if self.rev == 0:  # never stored: where this deployment starts
            st = tr.initial(
                has_paper=bool(self.paper_venues), has_live=bool(self.live_venues),
                required=self.settings.TRANSITION_REQUIRED, stages=self.stages, now=now_ms(),
            )  # fmt: skip
            if st.mode == "live":  # (the capital once the live venues' books are known: ``watch``)
                st = msgspec.structs.replace(st, stage_capital=self.capital_known())
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                self.rev = await self.kv.create(STATE_KEY, msgspec.json.encode(st))
                self.state = st
                await self._publish(
                    TransitionEvent(action="start", from_state="-", to_state=tr.state_name(st), mode=st.mode,
                                    ts=st.updated_at, stage=st.stage, reason=self._start_reason(st))
                )  # fmt: skip
            if self.rev == 0:
                await self._load()  # created meanwhile by another instance
        last = (await g.bus.js.stream_info(sub.s_transition)).state.last_seq or 0
        await g.bus.replay(
            stream=sub.s_transition, subject=sub.transition_events, type_=TransitionEvent, handler=self._on_event,
            start_seq=max(1, last - KEEP_HISTORY + 1),
        )  # fmt: skip
        await g.bus.subscribe(sub.transition_command, TransitionCommand, self._on_command, queue=g.name)
        await g.bus.subscribe(sub.query("transition"), Empty, self._on_query, queue=g.name)
        if self.live_venues:
            await g.bus.subscribe(sub.health("order-router"), Heartbeat, self._on_router_heartbeat)
        g.log.info("transition: {} (stage {})", tr.state_name(self.state), self.state.stage)

    def _start_reason(self, st: TransitionState) -> str:
        req = self.settings.TRANSITION_REQUIRED
        if st.mode == "live":
            return f"TRANSITION_REQUIRED={req}" + (" and live venues only" if req == "auto" else "") + ": live at 100 %"
        if not self.live_venues:
            return "paper venues only"
        return f"TRANSITION_REQUIRED={req}: a deployment with live venues starts in paper (live orders wait)"

    async def _load(self) -> None:
        try:
            entry = await self.kv.get(STATE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return
        if entry.value:
            try:
                self.state = msgspec.json.decode(entry.value, type=TransitionState)
            except (msgspec.ValidationError, msgspec.DecodeError) as e:  # never guessed live: paper
                self.log.error("transition state unreadable ({}): paper until it is set again", e)
                self.state = TransitionState(mode="paper")
        self.rev = entry.revision or 0

    async def _on_event(self, ev: TransitionEvent, env: Envelope) -> None:
        if ev not in self.history:  # (this instance's own steps are in it already)
            self.history.append(ev)

    async def _save(self, st: TransitionState) -> None:
        """Check-and-set on the revision read: raises KeyWrongLastSequenceError when another writer moved it."""
        self.rev = await self.kv.update(STATE_KEY, msgspec.json.encode(st), last=self.rev)
        self.state = st

    async def _publish(self, ev: TransitionEvent) -> None:
        self.history.append(ev)
        await self.gate.bus.js_publish(self.gate.subjects.transition_events, ev)

    # -- orders --------------------------------------------------------------------------------------------
    @property
    def paper_mode(self) -> bool:
        return self.state.mode == "paper"

    def route(self, req: OrderRequest) -> OrderRequest:
        """In paper mode, an order naming no venue goes to the paper venue (several venues, live ones among
        them: else the router would send it to a live venue)."""
        if (
            req.exchange is None and self.paper_mode and self.live_venues and self.paper_venues
            and len(self.gate.venues) > 1
        ):  # fmt: skip
            return msgspec.structs.replace(req, exchange=PAPER if PAPER in self.paper_venues else self.paper_venues[0])
        return req

    def is_live(self, venue: str | None) -> bool:
        return venue is not None and venue in self.live_venues

    def goes_live(self, req: OrderRequest) -> bool:
        if req.exchange is not None:
            return self.is_live(req.exchange)
        return bool(self.live_venues)  # unnamed: several venues -> live ones (paper excluded); one -> that one

    def gate_denial(self, req: OrderRequest) -> Denial | None:
        """LIVE_NOT_APPROVED: an order for a live venue while in paper."""
        if not (self.paper_mode and self.live_venues and self.goes_live(req)):
            return None
        where = req.exchange or ", ".join(self.live_venues)
        pending = (
            " (a transition waits for approval: POST /api/transition/approve)" if self.state.pending is not None else ""
        )
        return Denial(
            LIVE_NOT_APPROVED, "exchange" if req.exchange else None,
            f"live trading on {where} is not approved: the service is in paper mode{pending}; go live through the "
            "paper-to-live transition (GET /api/transition, POST /api/transition/initiate)",
        )  # fmt: skip

    def stage_limit(self) -> Decimal | None:
        return tr.stage_limit(self.state, self.stages)

    def capital_denial(
        self,
        positions: dict[str, Decimal],
        orders: list[tr.OpenOrder],
        prices: dict[str, Decimal],
        new: tr.OpenOrder,
    ) -> Denial | None:
        limit = self.stage_limit()
        if limit is None or self.state.stage is None:
            return None
        pct = self.stages[self.state.stage]
        why = tr.check_stage_capital(limit, positions, orders, prices, new, pct)
        if why is None:
            return None
        return Denial(why.code, why.field, f"stage {self.state.stage + 1} of the transition: {why.detail}")

    # -- the live record -----------------------------------------------------------------------------------
    def _live_books(self) -> VenueLedgers:
        g = self.gate
        sub = VenueLedgers(g.books_model.base_currency, g.books_model.initial_balance, ())
        sub.ledgers = {v: g.books_model.of(v) for v in self.live_venues}
        return sub

    def live_equity(self) -> Decimal:
        return books_equity(self._live_books(), self.gate.books.mids, self.settings.CONVERSION_BRIDGE)

    def live_equity_known(self) -> Decimal | None:
        """The live equity, or None while a currency the live venues hold has no price to value it at (right
        after a start, before the first books): an undervalued equity would make a false peak or a false fall."""
        books = self._live_books()
        marks, bridge = self.gate.books.mids, self.settings.CONVERSION_BRIDGE
        for _, led in books:
            conv = Converter(led, marks, bridge)
            for cur, bal in led.balances.items():
                if bal.total and cur != led.base_currency and conv.rate(cur) is None:
                    return None
        return books_equity(books, marks, bridge)

    def live_holdings(self) -> tuple[dict[str, Decimal], dict[str, Decimal]] | None:
        """What the live venues hold now (every currency but the base, all venues together) and each one's rate to
        the base currency; None while one cannot be valued."""
        marks, bridge = self.gate.books.mids, self.settings.CONVERSION_BRIDGE
        holdings: dict[str, Decimal] = {}
        rates: dict[str, Decimal] = {}
        for _, led in self._live_books():
            conv = Converter(led, marks, bridge)
            for cur, bal in led.balances.items():
                if cur == led.base_currency or not bal.total:
                    continue
                if (rate := conv.rate(cur)) is None:
                    return None
                holdings[cur] = holdings.get(cur, Decimal(0)) + bal.total
                rates[cur] = rate
        return holdings, rates

    def rates_now(self, currencies: Iterable[str]) -> dict[str, Decimal]:
        """Each currency's rate to the base currency now (those that have one)."""
        marks, bridge = self.gate.books.mids, self.settings.CONVERSION_BRIDGE
        out: dict[str, Decimal] = {}
        for _, led in self._live_books():
            conv = Converter(led, marks, bridge)
            for cur in currencies:
                if cur not in out and (rate := conv.rate(cur)) is not None:
                    out[cur] = rate
            break  # (one converter: the marks are the same for every venue's books)
        return out

    def books_not_known(self) -> str | None:
        """Why the live venues' books are not the venues' own yet (None: they are): a live venue whose opening
        balances have not been adopted still holds INITIAL_BALANCE - a fictional equity, never a capital."""
        waiting = [
            v for v in self.live_venues
            if (led := self.gate.books_model.of(v)).opened_at_venue is None and not led.fills_applied
        ]  # fmt: skip
        if waiting:
            return (f"the opening balances of {', '.join(waiting)} are not adopted yet (the first balance reading): "
                    "the live capital is not known; retry in a few seconds")  # fmt: skip
        if self.live_equity_known() is None:
            return "the live equity cannot be valued yet (a currency held live has no price): retry in a few seconds"
        return None

    def capital_known(self) -> Decimal | None:
        """The live capital the stages' percents apply to: TRANSITION_LIVE_CAPITAL, else the live venues' equity
        - None while that is not known (``books_not_known``)."""
        if self.books_not_known() is not None:
            return None
        return self.settings.TRANSITION_LIVE_CAPITAL or self.live_equity_known()

    async def measure(self) -> tuple[list[Milestone], TransitionWindow, str | None]:
        """The milestones of the record an initiate would be decided on now, its window, and why it could not be
        measured (None: measured)."""
        s = self.settings
        now = now_ms()
        if self.state.mode == "paper":  # the rates over the evaluation window, the days over the whole paper record
            days, min_days, trades, record, venues = (
                s.TRANSITION_EVALUATION_DAYS,
                s.TRANSITION_MIN_DAYS,
                s.TRANSITION_MIN_TRADES,
                "paper",
                self.paper_venues,
            )
            since = now - days * tr.DAY_MS if days else None
        else:  # the live record since the stage began: its window and its days alike
            days = min_days = s.TRANSITION_STAGE_DAYS
            trades, record, venues = s.TRANSITION_STAGE_MIN_TRADES, "live", self.live_venues
            since = self.state.stage_started_at
        window = TransitionWindow(record=record, venues=list(venues), since=since, days=days)  # type: ignore[arg-type]
        thresholds = tr.Thresholds(
            s.TRANSITION_MIN_WIN_RATE, s.TRANSITION_MIN_PROFIT_FACTOR, s.TRANSITION_MIN_SHARPE, trades,
            s.TRANSITION_MAX_DRAWDOWN, min_days,
        )  # fmt: skip
        if not venues:
            return [], window, f"no {record} venue in EXCHANGES: no {record} record to measure"
        try:
            perf = await self.gate.bus.request(
                self.gate.subjects.query("performance"), PerformanceQuery(mode=record, since=since), Performance,  # type: ignore[arg-type]
                timeout=PERFORMANCE_TIMEOUT_S,
            )  # fmt: skip
            history = perf
            if record == "paper" and since is not None:  # TRANSITION_MIN_DAYS: the whole paper record's days
                history = await self.gate.bus.request(
                    self.gate.subjects.query("performance"), PerformanceQuery(mode=record), Performance,
                    timeout=PERFORMANCE_TIMEOUT_S,
                )  # fmt: skip
        except RequestFailed as e:
            return [], window, f"the portfolio-ledger did not answer ({e.reason}): the milestones cannot be measured"
        window.first_trade_at, window.last_trade_at = perf.first_trade_at, perf.last_trade_at
        return tr.milestones(tr.figures_of(perf, history), thresholds), window, None

    def _stage_view(
        self, index: int | None, started: int | None = None, capital: Decimal | None = None
    ) -> TransitionStageView:
        if index is None:
            return TransitionStageView(index=None, capital_percent=Decimal(0))
        pct = self.stages[index]
        return TransitionStageView(
            index=index, capital_percent=pct, started_at=started,
            capital=capital * pct / 100 if capital is not None else None, live_capital=capital,
        )  # fmt: skip

    async def view(
        self, measured: tuple[list[Milestone], TransitionWindow, str | None] | None = None
    ) -> TransitionView:
        st = self.state
        ms, window, note = measured or await self.measure()
        nxt = 0 if st.mode == "paper" else (st.stage or 0) + 1
        return TransitionView(
            mode=st.mode, state=tr.state_name(st),  # type: ignore[arg-type]
            stage=self._stage_view(st.stage, st.stage_started_at, st.stage_capital),
            gated=tr.gated(st, bool(self.live_venues)), milestones=ms, unmet=tr.unmet(ms),
            ready=bool(ms) and not tr.unmet(ms), window=window,
            approval=self.settings.TRANSITION_APPROVAL,  # type: ignore[arg-type]
            stages=list(self.stages), paper_venues=self.paper_venues, live_venues=self.live_venues,
            history=list(self.history)[-SHOWN_HISTORY:][::-1],
            pending_stage=self._stage_view(st.pending) if st.pending is not None else None,
            next_stage=self._stage_view(nxt) if nxt < len(self.stages) and self.live_venues else None,
            updated_at=st.updated_at, note=note,
        )  # fmt: skip

    # -- commands ------------------------------------------------------------------------------------------
    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.gate.bus.respond(env, await self.view())

    async def _on_command(self, cmd: TransitionCommand, env: Envelope) -> None:
        reply = await self.command(cmd.action, cmd.by, cmd.reason)
        await self.gate.bus.respond(env, reply)

    async def command(self, action: str, by: str | None, reason: str | None) -> TransitionReply:
        async with self.lock:
            await self._load()  # the stored state is the truth (check-and-set below)
            measured = await self.measure() if action == "initiate" else ([], None, None)
            ms, _, note = measured
            if action == "initiate" and note is not None and self.live_venues:
                return TransitionReply(ok=False, status=503, code="MILESTONES_UNKNOWN", detail=note)
            live_capital = self.capital_known() if action in ("initiate", "approve") else None
            held = self.live_holdings() if live_capital is not None else None
            ctx = tr.Context(
                approval=self.settings.TRANSITION_APPROVAL, stages=self.stages, has_live=bool(self.live_venues),
                now=now_ms(), milestones=tuple(ms), live_capital=live_capital,
                live_equity=self.live_equity_known() if held is not None else None,
                live_holdings=held[0] if held else None, live_rates=held[1] if held else None,
            )  # fmt: skip
            out = tr.step(self.state, action, ctx, by, reason)
            if isinstance(out, tr.Refusal):
                return TransitionReply(
                    ok=False, status=out.status, code=out.code, field=out.field, detail=out.detail,
                    unmet=list(out.unmet), milestones=ms,
                )  # fmt: skip
            if live_capital is None and action in ("initiate", "approve") and (why := self.books_not_known()):
                # never a stage's capital (nor a peak to revert from) out of books that are not the venues' own
                return TransitionReply(ok=False, status=503, code="LIVE_CAPITAL_UNKNOWN", detail=why)
            try:
                await self._save(out.state)
            except nats.js.errors.KeyWrongLastSequenceError:
                await self._load()
                return TransitionReply(
                    ok=False, status=409, code="CONFLICT", detail="the transition moved meanwhile: retry"
                )
            ev = out.event
            if action in ("revert", "auto_revert"):
                ev = await self._after_revert(ev)
            await self._publish(ev)
            self.log.warning(
                "transition {}: {} -> {} (stage {}) by {}: {}", action, ev.from_state, ev.to_state, ev.stage, by or "-",
                reason or "-",
            )  # fmt: skip
        return TransitionReply(ok=True, view=await self.view(None if action != "initiate" else measured))  # type: ignore[arg-type]

    async def _after_revert(self, ev: TransitionEvent) -> TransitionEvent:
        """Back in paper: the live venues' working orders canceled; their positions closed when
        TRANSITION_REVERT_POSITIONS=flatten."""
        g = self.gate
        if not self.live_venues:
            return ev
        canceled: list[str] = []
        errors: list[str] = []
        for _ in range(2):  # again once the approvals on their way have become orders
            for oid, w in list(g.working.items()):
                if w.venue not in self.live_venues or oid in canceled:
                    continue
                try:
                    r = await g.bus.request(
                        g.subjects.orders_cancel, CancelOrder(order_id=oid, reason="reverted to paper"), CommandReply,
                        timeout=CANCEL_TIMEOUT_S,
                    )  # fmt: skip
                    if r.ok:
                        canceled.append(oid)
                    else:
                        errors.append(f"{oid} not canceled: {r.detail or r.code}")
                except RequestFailed as e:
                    errors.append(f"{oid} not canceled: the order-router did not answer ({e.reason})")
            if not g.pending:
                break
            await asyncio.sleep(0.5)
        closing: list[str] = []
        if self.settings.TRANSITION_REVERT_POSITIONS == "flatten":
            closing, pending, failed = await g._close_all(venues=set(self.live_venues))
            errors += failed + [f"close {c} sent, not confirmed yet" for c in pending]
        return msgspec.structs.replace(ev, canceled_orders=canceled, closing_orders=closing, errors=errors)

    # -- the automatic revert ------------------------------------------------------------------------------
    async def _on_router_heartbeat(self, hb: Heartbeat, env: Envelope) -> None:
        now = now_ms()
        for v in hb.venues or ():
            if v.name not in self.live_venues:
                continue
            if v.connected is False:
                self.down_since.setdefault(v.name, now)
            else:
                self.down_since.pop(v.name, None)

    async def watch(self) -> None:
        """Every second (the risk-gate's watch): follow the live equity; revert when a threshold is crossed."""
        st = self.state
        if st.mode != "live" or not self.live_venues or self.lock.locked():
            return
        live = self.live_equity_known()
        if live is None:
            return  # a currency held live cannot be valued yet (no price): neither a peak nor a fall to judge
        cur = st
        if cur.stage_capital is None and (capital := self.capital_known()) is not None:
            cur = msgspec.structs.replace(cur, stage_capital=capital)  # (started live: known once the books are)
        if cur.stage_holdings is None and (held := self.live_holdings()) is not None:
            # (a stage begun before its holdings were recorded: from now; the live equity and the stage's equity
            # are the same at this moment, so the peak and day start followed so far stay right)
            cur = msgspec.structs.replace(cur, stage_holdings=held[0], stage_rates=held[1])
        followed = tr.stage_equity(live, cur, self.rates_now(cur.stage_holdings or {}))
        if followed is None:
            return  # a holding of the stage's start has no price now: nothing to judge
        new, why = tr.follow_live(cur, followed, now_ms(), self.limits, tr.stage_amount(cur, self.stages))
        if why is None:
            why = tr.venue_failing(self.down_since, now_ms(), self.settings.TRANSITION_REVERT_VENUE_GRACE_MS)
        if why is None:
            if new != st:
                async with self.lock:
                    if self.state == st:
                        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                            await self._save(new)
            return
        await self.gate.alert("critical", "TRANSITION_REVERTED", f"back to paper trading: {why}")
        reply = await self.command("auto_revert", "risk-gate", why)
        if not reply.ok:
            self.log.error("automatic revert not made: {} {}", reply.code, reply.detail)
