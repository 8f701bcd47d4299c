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
import time
from collections import deque
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors

from bus.client import Envelope
from bus.errors import RequestFailed
from bus.partitions import cancel_all, partition_named
from config.venues import PAPER
from domain import transition as tr
from domain.ledger import lock_of
from domain.risk import Denial
from domain.transition_guard import revert_cleanup
from domain.valuation import Converter, books_equity
from domain.venue_ledgers import VenueLedgers
from schemas.messages import (
    TERMINAL_STATUSES,
    CancelOrder,
    Empty,
    Heartbeat,
    Milestone,
    Order,
    OrderRequest,
    OrderStatus,
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
from schemas.subjects import pair_currencies

if TYPE_CHECKING:
    from actors.risk_gate import RiskGate

STATE_KEY = "state"
KEEP_HISTORY = 50
SHOWN_HISTORY = 20
PERFORMANCE_TIMEOUT_S = 5.0
CANCEL_TIMEOUT_S = 10.0  # the order-router's cancel of every live order (it cancels 16 at once)
PENDING_WAIT_S = 3.0  # a revert's cleanup waits this long at most for approvals on their way to become orders
PENDING_SETTLE_MS = 2_000  # (those younger than this: older ones are refused by the order-router's epoch check)
CLEANUP_RETRY_S = 5.0  # an incomplete cleanup's cancels are sent again this often
CLEANUP_ALERT_S = 300.0  # and a critical alert repeated this often while it stays incomplete
REVERT_TRIES = 50  # a revert is never refused: saved again on a check-and-set conflict
WATCH_START_S = 5.0  # the watch of the stored state must catch up within this at start
RETRY_LATER = "RETRY_LATER"
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
        self.lock = asyncio.Lock()  # one step at a time
        self.current = asyncio.Event()  # the watch of the stored state has caught up (set: live orders decided)
        self.cleanup_task: asyncio.Task[None] | None = None
        self.cleanup_tried = 0.0  # monotonic: the last pass of a revert's cleanup
        self.cleanup_alerted = 0.0
        self.cleanup_canceled: list[str] = []  # this epoch's cleanup so far
        self.cleanup_closing: list[str] = []
        self.cleanup_errors: list[str] = []
        self.flattened_epoch = -1  # TRANSITION_REVERT_POSITIONS=flatten: the epoch whose closes were sent
        # the order-router's heartbeats, per partition (each partition's sessions are its own): the last one of each
        # (the grace runs from the start) and since when each says a live venue fails (monotonic ms)
        self.router = tr.RouterWatch.start(s.PARTITIONS, _mono_ms())
        self.keys_refused: dict[str, int] = {}  # live venue -> since when the order-router says its keys are refused
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
                                    ts=st.updated_at, stage=st.stage, reason=self._start_reason(st)),
                    str(self.rev),
                )  # fmt: skip
            if self.rev == 0:
                await self._load()  # created meanwhile by another instance
        # every later write (another risk-gate instance's revert, say) applied as it is stored
        self.watcher = await self.kv.watch(STATE_KEY)
        g.spawn(self._follow(), "transition state", essential=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.current.wait(), WATCH_START_S)
        last = (await g.bus.js.stream_info(sub.s_transition)).state.last_seq or 0
        await g.bus.replay(
            stream=sub.s_transition, subject=sub.transition_events, type_=TransitionEvent, handler=self._on_event,
            start_seq=max(1, last - KEEP_HISTORY + 1),
        )  # fmt: skip
        await g.bus.subscribe(sub.transition_command, TransitionCommand, self._on_command, queue=g.name)
        await g.bus.subscribe(sub.query("transition"), Empty, self._on_query, queue=g.name)
        if self.live_venues:
            await g.bus.subscribe(sub.health("order-router"), Heartbeat, self._on_router_heartbeat)
        await self._republish_revert()  # a crash between a revert's save and its event
        if self.state.cleanup_pending:  # a revert's cleanup cut short (a crash, a restart): finished now
            self._start_cleanup()
        g.log.info("transition: {} (stage {})", tr.state_name(self.state), self.state.stage)

    async def _follow(self) -> None:
        """Apply every write of the stored state (this instance's own, another instance's, a revert made there)."""
        async for entry in self.watcher:
            if entry is None:  # the stored state read: current
                self.current.set()
                continue
            if entry.operation is not None or not entry.value:  # deleted or purged: nothing to apply
                continue
            rev = entry.revision or 0
            if rev <= self.rev:
                continue
            self._apply(entry.value, rev)
            self.log.info("transition state {} applied (revision {})", tr.state_name(self.state), rev)

    def _apply(self, value: bytes, rev: int) -> None:
        try:
            self.state = msgspec.json.decode(value, type=TransitionState)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:  # never guessed live: paper
            self.log.error("transition state unreadable ({}): paper until it is set again", e)
            self.state = TransitionState(mode="paper", epoch=self.state.epoch + 1)
        self.rev = rev

    @property
    def in_step(self) -> bool:
        """Is this instance's view of the stored state current (watch caught up, connected, streams followed)?"""
        return self.current.is_set() and self.gate.bus.in_sync

    def _start_reason(self, st: TransitionState) -> str:
        req = self.settings.TRANSITION_REQUIRED
        if st.mode == "live":
            return f"TRANSITION_REQUIRED={req}" + (" and live venues only" if req == "auto" else "") + ": live at 100 %"
        if not self.live_venues:
            return "paper venues only"
        return f"TRANSITION_REQUIRED={req}: a deployment with live venues starts in paper (live orders wait)"

    async def _load(self) -> tuple[TransitionState, int]:
        """The stored state and its revision, read now (also applied here when newer than what is known)."""
        try:
            entry = await self.kv.get(STATE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return self.state, self.rev
        rev = entry.revision or 0
        if entry.value and rev >= self.rev:
            self._apply(entry.value, rev)
        return self.state, self.rev

    async def _on_event(self, ev: TransitionEvent, env: Envelope) -> None:
        if ev not in self.history:  # (this instance's own steps are in it already)
            self.history.append(ev)

    async def _save(self, st: TransitionState, last: int) -> int:
        """Check-and-set on the revision ``last`` the step was decided on: raises KeyWrongLastSequenceError when
        another writer moved it. The new revision."""
        rev = await self.kv.update(STATE_KEY, msgspec.json.encode(st), last=last)
        if rev > self.rev:
            self.state, self.rev = st, rev
        return rev

    async def _publish(self, ev: TransitionEvent, msg_id: str) -> None:
        """On the audit trail once: ``msg_id`` (the revision the step was stored at; a revert's: its epoch) makes a
        publish repeated after a crash or a lost ack harmless."""
        if ev not in self.history:
            self.history.append(ev)
        await self.gate.bus.js_publish(self.gate.subjects.transition_events, ev, msg_id=f"transition:{msg_id}")

    async def _republish_revert(self) -> None:
        ev = self.state.revert_event
        if ev is None or any(h.action == ev.action and h.epoch == ev.epoch for h in self.history):
            return
        self.log.warning("transition: the revert of epoch {} was stored but not published: published now", ev.epoch)
        await self._publish(ev, f"revert-{ev.epoch}")

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
        """LIVE_NOT_APPROVED: an order for a live venue while in paper - unless it only reduces a position there
        (reduce-only: a close, an exit of a position a revert kept). RETRY_LATER while this instance's view of the
        stored state may be behind (its watch not caught up: another instance may have reverted)."""
        if not (self.live_venues and self.goes_live(req)) or req.reduce_only:
            return None
        if not self.in_step:
            return Denial(
                RETRY_LATER, None,
                "cannot decide a live order now: the risk-gate is re-reading the transition's state (NATS "
                "reconnecting); retry in a second with the same clientOrderId",
            )  # fmt: skip
        if not self.paper_mode:
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

    def live_orders(self) -> list[Order]:
        """Every order on a live venue not terminal yet, as the risk-gate's read model has it (held ones too)."""
        g = self.gate
        live = set(self.live_venues)
        if g.only is not None:
            return list(g.open_orders.values()) if g.only in live else []
        return [o for o in g.open_orders.values() if o.venue in live]

    def held_live_orders(self) -> list[Order]:
        """The live venues' orders that hold nothing yet (a stop or take-profit not triggered, a bracket leg waiting
        for its entry): not in the working orders, but they go out when they trigger. An algorithm's child is not one:
        its parent's working quantity covers it."""
        return [
            o for o in self.live_orders() if lock_of(o) is None and o.role != "slice" and o.quantity > o.filled_quantity
        ]

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
        """What the live venues hold that their trading here does not explain (every currency but the base, all
        venues together: a balance less the base quantity of the positions the fills made, never below 0 - coins
        held from before, not what an earlier stage bought) and each one's rate to the base currency; None while
        one cannot be valued."""
        marks, bridge = self.gate.books.mids, self.settings.CONVERSION_BRIDGE
        holdings: dict[str, Decimal] = {}
        rates: dict[str, Decimal] = {}
        for _, led in self._live_books():
            conv = Converter(led, marks, bridge)
            traded: dict[str, Decimal] = {}
            for pair, pos in led.positions.items():
                base = pair_currencies(pair)[0]
                traded[base] = traded.get(base, Decimal(0)) + pos.quantity
            for cur, bal in led.balances.items():
                held = tr.held_from_before(bal.total, traded.get(cur, Decimal(0)))
                if cur == led.base_currency or not held:
                    continue
                if (rate := conv.rate(cur)) is None:
                    return None
                holdings[cur] = holdings.get(cur, Decimal(0)) + held
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
            updated_at=st.updated_at, note=note, epoch=st.epoch, cleanup_pending=st.cleanup_pending,
            cleanup_orders=self.cleanup_left() if st.cleanup_pending else [],
        )  # fmt: skip

    # -- commands ------------------------------------------------------------------------------------------
    async def _on_query(self, q: Empty, env: Envelope) -> None:
        await self.gate.bus.respond(env, await self.view())

    async def _on_command(self, cmd: TransitionCommand, env: Envelope) -> None:
        reply = await self.command(cmd.action, cmd.by, cmd.reason)
        await self.gate.bus.respond(env, reply)

    async def command(self, action: str, by: str | None, reason: str | None) -> TransitionReply:
        revert = action in ("revert", "auto_revert")
        async with self.lock:
            for _ in range(REVERT_TRIES if revert else 1):
                st, rev = await self._load()  # the stored state is the truth (check-and-set below)
                # initiate, and approve (measured again: a record that got worse since the initiate is refused)
                measures = action == "initiate" or (action == "approve" and st.pending is not None)
                measured = await self.measure() if measures else ([], None, None)
                ms, _, note = measured
                if measures and note is not None and self.live_venues:
                    return TransitionReply(ok=False, status=503, code="MILESTONES_UNKNOWN", detail=note)
                if action == "approve" and st.pending is not None and (ms_unmet := tr.unmet(ms)):
                    return TransitionReply(
                        ok=False, status=409, code="MILESTONES_NOT_MET", unmet=ms_unmet, milestones=ms,
                        detail=f"no longer met since the initiate: {', '.join(ms_unmet)} (initiate again once met)",
                    )  # fmt: skip
                live_capital = self.capital_known() if action in ("initiate", "approve") else None
                held = self.live_holdings() if live_capital is not None else None
                ctx = tr.Context(
                    approval=self.settings.TRANSITION_APPROVAL, stages=self.stages, has_live=bool(self.live_venues),
                    now=now_ms(), milestones=tuple(ms) if action == "initiate" else (), live_capital=live_capital,
                    live_equity=self.live_equity_known() if held is not None else None,
                    live_holdings=held[0] if held else None, live_rates=held[1] if held else None,
                )  # fmt: skip
                out = tr.step(st, action, ctx, by, reason)
                if isinstance(out, tr.Refusal):
                    return TransitionReply(
                        ok=False, status=out.status, code=out.code, field=out.field, detail=out.detail,
                        unmet=list(out.unmet), milestones=ms,
                    )  # fmt: skip
                if live_capital is None and action in ("initiate", "approve") and (why := self.books_not_known()):
                    # never a stage's capital (nor a peak to revert from) out of books that are not the venues' own
                    return TransitionReply(ok=False, status=503, code="LIVE_CAPITAL_UNKNOWN", detail=why)
                new = out.state
                if revert:  # stored with the state: published (again) after a crash between the two
                    new = msgspec.structs.replace(new, revert_event=out.event)
                try:
                    rev = await self._save(new, rev)
                except nats.js.errors.KeyWrongLastSequenceError:
                    if revert:
                        continue  # a revert is never refused: decided again on what is stored now
                    return TransitionReply(
                        ok=False, status=409, code="CONFLICT", detail="the transition moved meanwhile: retry"
                    )
                break
            else:
                return TransitionReply(
                    ok=False, status=503, code="CONFLICT", detail="the transition kept moving: retry"
                )
            ev = out.event
            await self._publish(ev, f"revert-{ev.epoch}" if revert else str(rev))
            self.log.warning(
                "transition {}: {} -> {} (stage {}) by {}: {}", action, ev.from_state, ev.to_state, ev.stage, by or "-",
                reason or "-",
            )  # fmt: skip
            if revert:
                self.cleanup_canceled, self.cleanup_closing, self.cleanup_errors = [], [], []
                self._start_cleanup()  # the answer does not wait for it: the view says what is pending
        return TransitionReply(ok=True, view=await self.view(None if action != "initiate" else measured))  # type: ignore[arg-type]

    # -- a revert's cleanup --------------------------------------------------------------------------------
    def _start_cleanup(self) -> None:
        if self.cleanup_task is None or self.cleanup_task.done():
            self.cleanup_tried = time.monotonic()
            self.cleanup_task = self.gate.spawn(self._cleanup_pass(), "transition cleanup")

    def cleanup_left(self) -> list[str]:
        """The live venues' orders a revert's cleanup still has to cancel (the read model's view)."""
        keep = self.settings.TRANSITION_REVERT_POSITIONS == "keep" or self.flattened_epoch == self.state.epoch
        return revert_cleanup(self.live_orders(), self.live_venues or [self.gate.only or ""], keep).cancel

    async def _cleanup_pass(self) -> None:
        """Back in paper: every order on a live venue canceled (working there or held by the order-router: a stop
        not triggered, a bracket leg) - except, when positions are kept (TRANSITION_REVERT_POSITIONS=keep), their
        reduce-only exits - and the positions closed when TRANSITION_REVERT_POSITIONS=flatten. Sent again by the
        watch until no such order is left; finished at start after a restart."""
        g = self.gate
        st = self.state
        if not st.cleanup_pending or st.mode != "paper" or not self.live_venues:
            return
        flatten = self.settings.TRANSITION_REVERT_POSITIONS == "flatten"
        first_flatten = flatten and self.flattened_epoch != st.epoch
        errors = await self._cancel_live(keep_reduce_only=not first_flatten)  # at once: a held stop may trigger
        deadline = time.monotonic() + PENDING_WAIT_S  # approvals on their way become orders (or are refused)
        waited = False
        while time.monotonic() < deadline and any(
            now_ms() - p.at < PENDING_SETTLE_MS and (g.only is not None or any(v in self.live_venues for v in p.venues))
            for p in g.pending.values()
        ):  # fmt: skip
            waited = True
            await asyncio.sleep(0.05)
        if waited:  # what they became canceled too
            errors = await self._cancel_live(keep_reduce_only=not first_flatten)
        if first_flatten and not errors:
            closing, pending, failed = await g._close_all(venues=set(self.live_venues))
            self.flattened_epoch = st.epoch
            self.cleanup_closing += closing
            errors += failed + [f"close {c} sent, not confirmed yet" for c in pending]
        self.cleanup_errors = errors
        self.cleanup_tried = time.monotonic()

    async def _cancel_live(self, *, keep_reduce_only: bool) -> list[str]:
        """Every open order on the live venues canceled through the order-router (its cancel-all, restricted to
        them). What could not be done."""
        g = self.gate
        errors: list[str] = []
        # every partition's (PARTITIONS > 1): one that does not answer is named, the others' are canceled
        r, failures = await cancel_all(
            g.bus,
            CancelOrder(all=True, venues=list(self.live_venues), keep_reduce_only=keep_reduce_only,
                        reason="reverted to paper"),
            g.settings.PARTITIONS, timeout=CANCEL_TIMEOUT_S,
        )  # fmt: skip
        errors += [
            f"the live orders not canceled: the order-router{partition_named(e)} did not answer ({e.reason})"
            for e in failures
        ]
        for o in r.orders:
            if o.status is OrderStatus.CANCELED:
                if o.order_id not in self.cleanup_canceled:
                    self.cleanup_canceled.append(o.order_id)
            elif o.status is not OrderStatus.PENDING_CANCEL and o.status not in TERMINAL_STATUSES:
                errors.append(f"{o.order_id} not canceled ({o.status.value})")  # (one filled meanwhile: done)
        return errors

    async def _follow_cleanup(self) -> None:
        """Every second while a revert's cleanup is pending: done once no order is left to cancel (the state saved,
        a ``revert_cleanup`` event); else its cancels sent again every CLEANUP_RETRY_S and a critical alert."""
        st = self.state
        if not st.cleanup_pending or st.mode != "paper" or self.lock.locked():
            return
        if self.cleanup_task is not None and not self.cleanup_task.done():
            return
        flatten_due = self.settings.TRANSITION_REVERT_POSITIONS == "flatten" and self.flattened_epoch != st.epoch
        left = self.cleanup_left()
        if not left and not flatten_due and not self.cleanup_errors:
            await self._finish_cleanup(st)
            return
        now = time.monotonic()
        if now - self.cleanup_tried >= CLEANUP_RETRY_S:
            if now - self.cleanup_alerted >= CLEANUP_ALERT_S:
                self.cleanup_alerted = now
                why = "; ".join(self.cleanup_errors) or f"{len(left)} live order(s) not canceled yet: {', '.join(left)}"
                await self.gate.alert(
                    "critical", "TRANSITION_CLEANUP_PENDING",
                    f"back in paper, but the live venues are not cleaned up yet ({why}): tried again every "
                    f"{CLEANUP_RETRY_S:g} s; GET /api/transition (cleanupPending), GET /api/orders?exchange=...",
                )  # fmt: skip
            self._start_cleanup()

    async def _finish_cleanup(self, st: TransitionState) -> None:
        async with self.lock:
            cur, rev = await self._load()
            if not cur.cleanup_pending or cur.epoch != st.epoch:
                return
            done = msgspec.structs.replace(cur, cleanup_pending=False, revert_event=None)
            try:
                rev = await self._save(done, rev)
            except nats.js.errors.KeyWrongLastSequenceError:
                return  # next second
            ev = TransitionEvent(
                action="revert_cleanup", from_state=tr.state_name(cur), to_state=tr.state_name(cur), mode=cur.mode,
                ts=now_ms(), epoch=cur.epoch, canceled_orders=list(self.cleanup_canceled),
                closing_orders=list(self.cleanup_closing),
                kept_orders=[o.order_id for o in self.live_orders() if o.reduce_only],
                reason=f"the live venues cleaned up after the revert (epoch {cur.epoch})",
            )  # fmt: skip
            await self._publish(ev, str(rev))
        if self.cleanup_alerted:
            await self.gate.alert("warning", "TRANSITION_CLEANUP_DONE", ev.reason or "")
            self.cleanup_alerted = 0.0

    # -- the automatic revert ------------------------------------------------------------------------------
    async def _on_router_heartbeat(self, hb: Heartbeat, env: Envelope) -> None:
        if hb.role == "standby":  # a standby's beat says nothing of the venues, nor that an active one lives
            return
        failing = {
            v.name: v.connected is False or v.keys_refused for v in hb.venues or () if v.name in self.live_venues
        }
        # partitioned: tracked per (partition, venue), so one partition's beats never clear (or cover for) another's
        self.router.beat(hb.partition if self.settings.PARTITIONS > 1 else None, failing, _mono_ms())

    def venue_failing(self) -> str | None:
        """A live venue failing its checks (not connected, its keys refused) for longer than the grace in any
        partition, or the order-router (any partition of it) silent (no heartbeat) for longer than it: why to
        revert."""
        return self.router.failing(_mono_ms(), self.settings.TRANSITION_REVERT_VENUE_GRACE_MS)

    async def watch(self) -> None:
        """Every second (the risk-gate's watch): a revert's cleanup followed; the live venues' checks and the live
        equity followed, a revert when a threshold is crossed."""
        await self._follow_cleanup()
        st = self.state
        if st.mode != "live" or not self.live_venues or self.lock.locked():
            return
        why = self.venue_failing()  # (before the equity: a venue failing needs no price to be judged)
        live = self.live_equity_known()
        new = st
        if why is None and live is not None:
            cur = st
            if cur.stage_capital is None and (capital := self.capital_known()) is not None:
                cur = msgspec.structs.replace(cur, stage_capital=capital)  # (started live: known once the books are)
            if cur.stage_holdings is None and (held := self.live_holdings()) is not None:
                # (a stage begun before its holdings were recorded: from now; the live equity and the stage's equity
                # are the same at this moment, so the peak and day start followed so far stay right)
                cur = msgspec.structs.replace(cur, stage_holdings=held[0], stage_rates=held[1])
            followed = tr.stage_equity(live, cur, self.rates_now(cur.stage_holdings or {}))
            if followed is not None:  # (None: a holding of the stage's start has no price now: nothing to judge)
                new, why = tr.follow_live(cur, followed, now_ms(), self.limits, tr.stage_amount(cur, self.stages))
        if why is None:
            if new != st:
                async with self.lock:
                    if self.state == st:
                        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                            await self._save(new, self.rev)
            return
        await self.gate.alert("critical", "TRANSITION_REVERTED", f"back to paper trading: {why}")
        reply = await self.command("auto_revert", "risk-gate", why)
        if not reply.ok:
            self.log.error("automatic revert not made: {} {}", reply.code, reply.detail)


def _mono_ms() -> int:
    return int(time.monotonic() * 1000)
