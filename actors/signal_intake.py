"""signal-intake: trading signals from anyone become orders.

Signals arrive on the SIGNALS stream (``tbx.signals.submit``, plain JSON from any NATS client, or
``POST /api/signals/execute``) and are read by a durable consumer, so a signal published while this
actor is down is handled when it is back. Each signal gets exactly one result on
``tbx.events.signals.<pair>`` (executed, filtered or rejected, with the reason); a publisher that set
a reply subject gets that result as the reply (the stream itself does not answer: ``no_ack``).

The path of a BUY or SELL (rules in ``domain/signals.py``):
id seen before -> the first result again; confidence adjusted by the ML service (ML_SERVICE_URL, with
a timeout; down or slow: unchanged, and the result says so); below the source's minimum confidence ->
filtered; a repeat of an executed (source, pair, signal) within SIGNAL_DEDUPE_WINDOW -> filtered;
with SIGNAL_AGGREGATION_WINDOW, held with the other sources' signals for the pair until the window
closes and decided by weights; then sized (``domain/sizing.py``, or the user's risk service), capped
by MAX_POSITION_SIZE, and sent to the risk-gate as a market order (or a limit at an offset) with a
stop-loss / take-profit bracket from the signal or the defaults (STOP_LOSS_ENABLED).

HOLD does nothing; CLOSE closes the pair's position. An order's client id is derived from the signal
id, so a redelivered or repeated signal never makes a second order. Open aggregation windows are
rebuilt after a restart from the signals stored without a result. One instance per BUS_PREFIX (the
windows are its state).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import msgspec
from nats.aio.msg import Msg as NatsMsg

from actors.base import Actor
from actors.books import BookCache
from actors.markets import MarketRulesCache
from actors.services import ServiceClient, ServiceDown, clamp01
from bus.client import MSG_ID_HEADER, Bus, Envelope
from bus.codec import DecodeFailure, decode, encode
from bus.errors import RequestFailed, Transient
from bus.partitions import order_of_client
from config.settings import Settings, parse_source_numbers
from config.venues import venue_names
from domain import signals as rules
from domain.ids import day_key, signal_id
from domain.partitions import durable, partition_of, suffix
from domain.risk import CLIENT_ID_RE
from domain.sizing import QTY_STEP, Sizing, SizingError, SizingInputs, cap, method_name, round_down, size, volatility
from schemas.messages import (
    AlgoSpec,
    Book,
    Empty,
    OrderReply,
    OrderRequest,
    Performance,
    PortfolioSnapshot,
    PositionSizing,
    RiskMetricsView,
    Signal,
    SignalEvent,
    SignalOrder,
    SignalReply,
    SignalsPage,
    SignalsQuery,
    now_ms,
)
from schemas.services import Prediction, PredictionQuestion, SizeAnswer, SizeQuestion
from schemas.subjects import PAIR_RE, pair_currencies

T = TypeVar("T")
ZERO = Decimal(0)
ONE = Decimal(1)
KEEP_RESULTS_MS = 24 * 3600 * 1000  # signal ids are remembered (and duplicates answered) this long
MAX_RESULTS = 200_000
KEEP_UNMATCHED = 2_000  # publishes / results not matched yet with their other half ...
LATE_MS = 5_000  # ... kept at most this long (beyond MAX_UNMATCHED, not even that)
MAX_UNMATCHED = 100_000
KEYED = ("id:", "msg:")  # keys of publishes paired by id (a digest key is plain hex)
NEVER_STORED_MS = 600_000  # an inbox waiting this long for a result is forgotten (its publish was never stored)
# a publish is stored within moments of being heard, or not at all: a publish without any id is paired with a
# stored copy of the same bytes stored within this long of when it was heard (the closest such), never another
PAIR_WITHIN_MS = 2_000
# a retry under a Nats-Msg-Id is dropped by the stream (and so answered with the first copy's result) only within
# the stream's duplicate window from that first copy, less this margin (clocks, latency); later it is stored anew
DUPLICATE_MARGIN_MS = 2_000
DUPLICATE_WINDOW_MS = 120_000  # TBX_SIGNALS' duplicate window (ensure_layout) until the stream says otherwise
MAX_ANSWERED = 50_000  # replies kept for retries (by key) at most, and at most NEVER_STORED_MS
PRICE_SAMPLE_MS = 1_000  # volatility: one mid per second per pair ...
PRICE_SAMPLES = 120  # ... over the last two minutes


@dataclass(slots=True)
class Held:
    """A BUY or SELL that passed the filters, waiting for its decision."""

    sig: Signal
    sid: str
    at: int  # stored at (epoch ms)
    confidence: Decimal  # after the ML service
    notes: list[str]
    seq: int


@dataclass(slots=True)
class Window:
    pair: str
    closes_at: int
    held: list[Held] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class SignalIntake(Actor):
    name = "signal-intake"
    # PARTITIONS > 1: every partition reads the one public subject (its own durable, ``signal-intake.p<k>``) and
    # handles the signals of its pairs only (a signal's pair is in its body, not in the subject)
    partitioned = True

    def __init__(self, settings: Settings, bus: Bus) -> None:
        super().__init__(settings, bus)
        s = settings
        self.books = BookCache(bus, venue_names(settings))
        self.markets = MarketRulesCache(bus)
        self.counts = {"executed": 0, "filtered": 0, "rejected": 0}
        self.results: OrderedDict[str, SignalEvent] = OrderedDict()  # signal id -> its result
        # partitioned: the results of the other partitions' signals (followed live): a signal id used again for a
        # pair of this partition gets the first signal's result, as with one partition
        self.elsewhere: OrderedDict[str, SignalEvent] = OrderedDict()
        self.recent = rules.RecentSignals(s.SIGNAL_DEDUPE_WINDOW)
        self.windows: dict[str, Window] = {}
        self.held: set[str] = set()  # signal ids waiting in a window
        # Replies. Every publish on the submit subject is heard twice: as it is published (with its reply subject,
        # if any) and as the stream stored it - or not at all, when the stream did not store it (dropped as a
        # duplicate of its Nats-Msg-Id, or sent while the stream had no leader). The halves are paired by the
        # signal's key: ``id:<signalId>``, else ``msg:<Nats-Msg-Id>``. Every inbox waiting on a key gets the result
        # of that key's stored copy, and a publish whose key has a result already gets it at once: a publish heard
        # but never stored takes no later copy's answer, and every retry is answered. Only a signal with neither
        # (each publish a signal of its own) is paired by a digest of its bytes, in arrival order: the k-th
        # publish heard is the k-th stored copy handled (two FIFOs pair them, whichever half comes first), and a
        # publish is paired with the stored copy stored closest to when it was heard, within PAIR_WITHIN_MS: one
        # heard but never stored is left over, never given a later identical publish's result.
        self.waiting: dict[str, deque[tuple[int, str]]] = {}  # key -> (when heard, reply inbox) until its result
        # key -> (when its stored copy was stored, the reply) for retries
        self.answered: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        self.published: dict[str, deque[tuple[int, str | None]]] = {}  # digest -> (when heard, reply subject or None)
        # digest -> (when handled, when stored, the reply) not paired yet
        self.handled: dict[str, deque[tuple[int, int, bytes]]] = {}
        # signal id -> (key or digest, when stored) of its stored copies waiting for its result
        self.digests: dict[str, list[tuple[str, int]]] = {}
        self.duplicate_window_ms = DUPLICATE_WINDOW_MS
        self.prices: dict[str, deque[tuple[int, Decimal]]] = {}
        self.min_confidence = parse_source_numbers(s.SOURCE_MIN_CONFIDENCE)
        self.weights = parse_source_numbers(s.SIGNAL_WEIGHTS)
        self.ml = ServiceClient("ml", s.ML_SERVICE_URL, s.ML_SERVICE_TIMEOUT, self.alert)
        self.risk = ServiceClient("risk", s.RISK_SERVICE_URL, s.RISK_SERVICE_TIMEOUT, self.alert)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        s = self.subjects
        self.stream = s.s_signals
        await self._read_duplicate_window()
        self.books.add_hook(self._sample)
        await self.books.start()
        await self.markets.load()  # the amount steps, before the first signal is sized (if the router is up)
        self.spawn(self.markets.keep(), "market rules", essential=True)
        since = now_ms() - KEEP_RESULTS_MS
        await self.bus.replay(
            stream=s.stream_name("SIGNAL_EVENTS"), subject=s.signal_events(), type_=SignalEvent,
            handler=self._on_result if self.partition is None else self._on_result_mine, start_time=since,
            follow=False,
        )  # fmt: skip
        if self.partition is not None:
            await self.bus.replay(
                stream=s.stream_name("SIGNAL_EVENTS"), subject=s.signal_events(), type_=SignalEvent,
                handler=self._on_result_elsewhere, start_time=since,
            )  # fmt: skip
        if self.settings.SIGNAL_AGGREGATION_WINDOW > 0:
            # signals taken into a window before a crash: stored, acknowledged, but without a result yet
            back = now_ms() - self.settings.SIGNAL_AGGREGATION_WINDOW - 60_000
            await self.bus.replay(
                stream=self.stream, subject=s.signals_submit, type_=Signal, handler=self._on_signal_mine,
                start_time=back, follow=False,
            )  # fmt: skip
        if self.partition is None:
            await self.bus.nc.subscribe(s.signals_submit, cb=self._on_publish)  # reply subjects
        else:  # the publishes of this partition's signals only (their replies are this partition's to send)
            await self.bus.nc.subscribe(s.signals_submit, cb=self._on_publish_mine)
        await self.bus.nc.flush()
        me = self.name + suffix(self.partition)
        await self.bus.subscribe(
            s.addressed(s.query("signals"), self.partition), SignalsQuery, self._on_query, queue=me
        )
        if self.partition is None:
            await self.bus.consume(
                stream=self.stream,
                durable=durable(self.name, self.partition),
                subject=s.signals_submit,
                type_=Signal,
                handler=self._on_signal,
            )
        else:
            await self.bus.consume(
                stream=self.stream,
                durable=durable(self.name, self.partition),
                subject=s.signals_submit,
                type_=msgspec.Raw,
                handler=self._on_stored,
            )

    async def on_stop(self) -> None:
        for w in self.windows.values():
            if w.timer is not None:
                w.timer.cancel()
        await self.ml.close()
        await self.risk.close()

    def stats(self) -> dict[str, int | float | str]:
        out: dict[str, int | float | str] = dict(self.counts)
        out["held"] = len(self.held)
        for svc in (self.ml, self.risk):
            if svc.enabled:
                out[f"{svc.name}Service"] = svc.state
        return out

    async def _sample(self, book: Book) -> None:
        mid = self.books.mids.get(book.pair)
        if mid is None:
            return
        q = self.prices.setdefault(book.pair, deque(maxlen=PRICE_SAMPLES))
        now = now_ms()
        if not q or now - q[-1][0] >= PRICE_SAMPLE_MS:
            q.append((now, mid))

    # -- partitions ------------------------------------------------------------------------------------
    def _mine(self, data: bytes) -> bool:
        """Partitioned: is this signal (raw) this partition's? Its pair's partition; one without a readable pair
        (not a JSON object, no pair, not a string) is partition 0's (which dead-letters or rejects it)."""
        try:
            pair = msgspec.json.decode(data, type=_PairOf).pair
        except (msgspec.DecodeError, msgspec.ValidationError):
            pair = None
        owner = partition_of(pair, self.settings.PARTITIONS) if isinstance(pair, str) else 0
        return owner == self.partition

    async def _on_publish_mine(self, msg: NatsMsg) -> None:
        if self._mine(msg.data):
            await self._on_publish(msg)

    async def _on_stored(self, raw: msgspec.Raw, env: Envelope) -> None:
        """Partitioned: a stored signal, handled by the partition of its pair only (the others acknowledge it)."""
        data = env.raw.data
        if not self._mine(data):
            return
        try:
            sig = decode(data, Signal)
        except DecodeFailure as e:  # what the bus does with a body that does not decode: a dead letter
            if not await self.bus.dead_letter(env.subject, e.reason, data, env.seq):
                raise Transient("the dead letter could not be stored") from None
            return
        await self._on_signal(sig, env)

    async def _on_signal_mine(self, sig: Signal, env: Envelope) -> None:
        if self.owns(sig.pair):
            await self._on_signal(sig, env)

    async def _on_result_elsewhere(self, ev: SignalEvent, env: Envelope) -> None:
        """Partitioned: another partition's result, kept so that its signal id is known here too."""
        if self.owns(ev.pair):
            return
        self.elsewhere[ev.signal_id] = ev
        self.elsewhere.move_to_end(ev.signal_id)
        cutoff = now_ms() - KEEP_RESULTS_MS
        while self.elsewhere and (len(self.elsewhere) > MAX_RESULTS or next(iter(self.elsewhere.values())).ts < cutoff):
            self.elsewhere.popitem(last=False)

    async def _on_result_mine(self, ev: SignalEvent, env: Envelope) -> None:
        if self.owns(ev.pair):  # the results of this partition's signals (GET /api/signals merges the partitions)
            self._remember(ev)

    # -- results and replies ---------------------------------------------------------------------------
    async def _on_result(self, ev: SignalEvent, env: Envelope) -> None:
        self._remember(ev)

    def _remember(self, ev: SignalEvent) -> None:
        self.results[ev.signal_id] = ev
        self.results.move_to_end(ev.signal_id)
        if ev.status == "executed":
            self.recent.remember(ev.source, ev.pair, ev.signal, ev.received_at, ev.signal_id)
        cutoff = now_ms() - KEEP_RESULTS_MS
        while self.results and (len(self.results) > MAX_RESULTS or next(iter(self.results.values())).ts < cutoff):
            self.results.popitem(last=False)
        if len(self.results) % 1000 == 0:
            self.recent.forget_before(now_ms())

    async def _on_request(self, msg: NatsMsg) -> None:
        """Every publish on the submit subject: note who wants the result as the reply."""
        if not msg.reply:
            return
        try:
            decode(msg.data, Signal)
        except DecodeFailure as e:  # the stored copy goes to the dead letters
            sid = _signal_id_of(msg.data)
            if sid is not None and (done := self.results.get(sid)) is not None:
                # a signal whose id already has a result is answered with that result before anything else
                # (where this copy was stored is not known here: it is a dead letter, with the reason)
                await self.bus.nc.publish(
                    msg.reply, encode(SignalReply(**msgspec.structs.asdict(done), stream=self.stream))
                )
                return
            # else a rejected result at once
            result = msgspec.to_builtins(self._malformed(msg.data, e.reason), builtin_types=(Decimal,))
            # with a JetStream-style error too: a JetStream client's publish (which reads the reply as its ack)
            # raises with the reason instead of returning an ack of a signal that will never be handled
            result["error"] = {"code": 400, "err_code": 10_000, "description": e.reason}
            await self.bus.nc.publish(msg.reply, encode(result))
            return
        await self._heard(msg)

    def _malformed(self, data: bytes, reason: str) -> SignalReply:
        """The result of a signal that does not decode (it has no place in the results or on the events
        subject: its stored copy is a dead letter on tbx.deadletter.<submit subject>, with the reason)."""
        try:  # what can still be read of it: each field only if it is a string
            body = msgspec.json.decode(data)
        except msgspec.DecodeError:
            body = None
        seen = {k: v for k, v in body.items() if isinstance(v, str)} if isinstance(body, dict) else {}
        now = now_ms()
        sid = seen.get("signalId") or f"SIG_{day_key(now)}_invalid_{_digest(data)[:12]}"
        letters = self.subjects.deadletter(self.subjects.signals_submit)
        return SignalReply(
            signal_id=sid, status="rejected", pair=seen.get("pair", ""), signal=seen.get("signal", ""),
            confidence=ZERO, source=seen.get("source", ""), strategy=seen.get("strategy", ""), ts=now,
            received_at=now, reason=reason,
            field=_field_of(reason), code="INVALID_SIGNAL", stream=self.stream,
            notes=[f"not handled: stored as a dead letter on {letters} (stream TBX_DEADLETTER) with the reason"],
        )  # fmt: skip

    async def _on_publish(self, msg: NatsMsg) -> None:
        """Every publish on the submit subject, as it happens (with or without a reply subject)."""
        if msg.reply:
            await self._on_request(msg)
        else:
            await self._heard(msg)

    async def _heard(self, msg: NatsMsg) -> None:
        """A publish of a signal that decodes: wait for its result, or have it at once."""
        key = _key(_id_of(msg.data), msg.headers)
        if key is None:  # no id of any kind: paired with its stored copy by content and order
            await self._pair_publish(_digest(msg.data), msg.reply or None)
            return
        if not msg.reply:
            return  # nobody to answer (its result is on tbx.events.signals.<pair>)
        now = now_ms()
        if key.startswith("msg:") and key in self.answered:
            await self._read_duplicate_window()  # (what it is now: an operator may have changed it)
        if (answer := self._answer_of(key, now)) is not None:  # a retry of a signal that has its result
            await self.bus.nc.publish(msg.reply, answer)
            return
        self.waiting.setdefault(key, deque()).append((now, msg.reply))
        _trim(self.waiting, now, NEVER_STORED_MS)

    def _answer_of(self, key: str, now: int) -> bytes | None:
        """The reply already sent for ``key`` (a retry gets the same), or one made from the remembered result.
        Under a Nats-Msg-Id only while the stream still drops a copy under it as a duplicate (its duplicate window
        from the stored copy, less a margin): later the retry is stored anew, a signal of its own, and waits for
        its own result (never told "same signal" while a second order is made)."""
        if (kept := self.answered.get(key)) is not None:
            stored, reply = kept
            if not key.startswith("msg:") or now - stored < self.duplicate_window_ms - DUPLICATE_MARGIN_MS:
                return reply
            return None
        if key.startswith("id:") and (ev := self.results.get(key[3:])) is not None:
            return encode(SignalReply(**msgspec.structs.asdict(ev), stream=self.stream))
        return None

    async def _read_duplicate_window(self) -> None:
        """The stream's duplicate window as it is now (kept as it was when the stream does not answer)."""
        try:
            info = await asyncio.wait_for(self.bus.js.stream_info(self.stream), 2.0)
        except Exception as e:
            self.log.warning("duplicate window of {} not read ({}): taken as {} ms", self.stream, e,
                             self.duplicate_window_ms)  # fmt: skip
            return
        if info.config.duplicate_window is not None:
            self.duplicate_window_ms = int(info.config.duplicate_window * 1000)

    async def _pair_publish(self, digest: str, reply: str | None) -> None:
        now = now_ms()
        done = self.handled.get(digest)
        while done and now - done[0][0] > LATE_MS:
            done.popleft()
        if done and (i := _closest(done, now, lambda e: e[1])) is not None:  # its stored copy was handled first
            answer = done[i][2]
            del done[i]
            if not done:
                del self.handled[digest]
            if reply:
                await self.bus.nc.publish(reply, answer)
            return
        self.published.setdefault(digest, deque()).append((now, reply))
        _trim(self.published, now)

    async def _answer(self, ev: SignalEvent, keys: list[tuple[str, int]], seq: int) -> None:
        """Answer the publishes whose stored copies these were (each with when it was stored): every inbox waiting
        on a key (a signal id, a Nats-Msg-Id); of a digest, the publish heard closest to when the copy was stored,
        within PAIR_WITHIN_MS (one heard clearly before was never stored and gets nothing of this copy)."""
        if not keys:
            return
        reply = encode(SignalReply(**msgspec.structs.asdict(ev), stream=self.stream, seq=seq))
        now = now_ms()
        for d, stored in keys:
            if d.startswith(KEYED):
                kept = self.answered.get(d)
                if kept is None or kept[0] <= stored:  # (a copy stored later is the one a msg id's retry is up to)
                    self.answered[d] = (stored, reply)
                    self.answered.move_to_end(d)
                while self.answered and (
                    len(self.answered) > MAX_ANSWERED or now - next(iter(self.answered.values()))[0] > NEVER_STORED_MS
                ):
                    self.answered.popitem(last=False)
                for _, inbox in self.waiting.pop(d, ()):
                    await self.bus.nc.publish(inbox, reply)
                continue
            heard = self.published.get(d)
            while heard and now - heard[0][0] > NEVER_STORED_MS:  # published long ago and never stored: forget
                heard.popleft()
            if heard and (i := _closest(heard, stored, lambda e: e[0])) is not None:
                subject = heard[i][1]
                del heard[i]
                if not heard:
                    del self.published[d]
                if subject:
                    await self.bus.nc.publish(subject, reply)
            else:  # heard as stored before heard as published (or published while we were away)
                if heard is not None and not heard:
                    del self.published[d]
                self.handled.setdefault(d, deque()).append((now, stored, reply))
                _trim(self.handled, now)

    async def _finish(
        self,
        h: Held | tuple[Signal, str, int, int],
        status: str,
        reason: str | None = None,
        **extra: object,
    ) -> SignalEvent:
        """Publish the one result of a signal, remember it and answer whoever asked."""
        sig, sid, at, seq = (h.sig, h.sid, h.at, h.seq) if isinstance(h, Held) else h
        if isinstance(h, Held):
            extra.setdefault("notes", h.notes)
            if h.confidence != sig.confidence:
                extra.setdefault("adjusted_confidence", h.confidence)
        self.counts[status] = self.counts.get(status, 0) + 1
        ev = SignalEvent(
            signal_id=sid, status=status, pair=sig.pair, signal=sig.signal, confidence=sig.confidence,  # type: ignore[arg-type]
            source=sig.source, strategy=sig.strategy, ts=now_ms(), received_at=at, reason=reason, **extra,  # type: ignore[arg-type]
        )  # fmt: skip
        self.log.info(
            "signal {} {} {} {}: {}{}", sid, sig.signal, sig.pair, sig.source, status, f" ({reason})" if reason else ""
        )
        if PAIR_RE.match(sig.pair):
            await self.bus.js_publish(self.subjects.signal_events(sig.pair), ev, msg_id=f"{sid}:result")
        self._remember(ev)
        self.held.discard(sid)
        await self._answer(ev, self.digests.pop(sid, []), seq)
        return ev

    # -- a signal arrives ------------------------------------------------------------------------------
    async def _on_signal(self, sig: Signal, env: Envelope) -> None:
        at = env.stored_at or sig.timestamp or now_ms()
        seq = env.seq or 0
        # without an id of its own, a signal is named by where the stream stored it: the same on redelivery
        sid = sig.signal_id or signal_id(day_key(at), seq)
        key = (_key(sig.signal_id, env.headers) or _digest(env.raw.data), env.stored_at or now_ms())
        if sid in self.results:  # handled before (a redelivery, or the same id sent again)
            await self._answer(self.results[sid], [key], seq)
            return
        if (first := self.elsewhere.get(sid)) is not None:  # the id was used for another partition's pair first
            await self._answer(first, [key], seq)  # its result, as with one partition (not a result of this one)
            return
        keys = self.digests.setdefault(sid, [])
        if key not in keys:  # (a redelivery of the same stored copy is one copy: it answers one publish)
            keys.append(key)
        if sid in self.held:  # waiting in a window already
            return
        me = (sig, sid, at, seq)
        action = rules.canonical(sig.signal, rules.ACTIONS)
        if action is None:
            allowed = ", ".join(rules.ACTIONS)
            why = f"signal must be one of {allowed} (any case), not {sig.signal[:40]!r}"
            await self._finish(me, "rejected", why, field="signal", code="INVALID_SIGNAL")
            return
        if action != sig.signal:  # buy, Buy: BUY from here on (the result and the order say BUY)
            sig = msgspec.structs.replace(sig, signal=action)
            me = (sig, sid, at, seq)
        if not PAIR_RE.match(sig.pair):  # not even usable in a subject name: no event, a dead letter
            await self.bus.dead_letter(
                env.subject, f"signal {sid}: pair {sig.pair!r} is not written BASE_QUOTE", env.raw.data, env.seq
            )
            await self._finish(me, "rejected", f"pair {sig.pair!r} is not written BASE_QUOTE", field="pair")
            return
        if sig.pair not in self.settings.PAIRS:
            await self._finish(me, "rejected", f"pair {sig.pair} is not traded here", field="pair")
            return
        if not sig.confidence.is_finite() or not (ZERO <= sig.confidence <= 1):
            why = f"confidence must be within 0..1, got {sig.confidence}"
            await self._finish(me, "rejected", why, field="confidence")
            return
        if sig.signal == "HOLD":
            await self._finish(me, "filtered", "HOLD does nothing")
            return
        if sig.signal == "CLOSE":
            await self._close(me)
            return
        h = Held(sig, sid, at, sig.confidence, [], seq)
        await self._score(h)
        floor = rules.min_confidence(sig.source, self.settings.MIN_CONFIDENCE, self.min_confidence)
        if h.confidence < floor:
            await self._finish(
                h, "filtered", f"confidence {h.confidence} is below the minimum {floor} for {sig.source}"
            )
            return
        if (first := self.recent.duplicate_of(sig.source, sig.pair, sig.signal, at)) is not None:
            window = self.settings.SIGNAL_DEDUPE_WINDOW
            why = f"repeats signal {first} (same source, pair and signal within {window} ms)"
            await self._finish(h, "filtered", why)
            return
        if self.settings.SIGNAL_AGGREGATION_WINDOW > 0:
            self._hold(h)
            return
        await self._execute(h, sig.signal, h.confidence, [h])

    async def _score(self, h: Held) -> None:
        """The ML service's view adjusts the confidence (not of its own signals)."""
        sig = h.sig
        if not self.ml.enabled or sig.source == self.settings.ML_SIGNAL_SOURCE:
            return
        question = PredictionQuestion(
            pair=sig.pair, signal=sig.signal, confidence=sig.confidence, source=sig.source, strategy=sig.strategy,
            price=sig.price or self.books.mids.get(sig.pair),
        )  # fmt: skip
        try:
            p = await self.ml.post("/api/predict", question, Prediction)
        except ServiceDown as e:
            h.notes.append(f"ML service unavailable ({e.reason}): confidence not adjusted")
            return
        pc = clamp01(p.confidence)
        if pc is None:
            h.notes.append(f"ML service answered confidence {p.confidence}, not within 0..1: not adjusted")
            return
        h.confidence = rules.ml_adjusted(sig.confidence, sig.signal, p.signal, pc, self.settings.ML_WEIGHT)
        h.notes.append(f"ML service predicts {p.signal} at {pc}: confidence {sig.confidence} -> {h.confidence}")

    # -- aggregation -----------------------------------------------------------------------------------
    def _hold(self, h: Held) -> None:
        pair = h.sig.pair
        w = self.windows.get(pair)
        if w is None:
            w = self.windows[pair] = Window(pair, h.at + self.settings.SIGNAL_AGGREGATION_WINDOW)
            delay = max(0.0, (w.closes_at - now_ms()) / 1000)
            w.timer = asyncio.get_running_loop().call_later(
                delay, lambda: self.spawn(self._close_window(pair), f"window {pair}")
            )
        w.held.append(h)
        self.held.add(h.sid)

    async def _close_window(self, pair: str) -> None:
        """Decide a closed window. It runs outside the consumer, so it retries (NATS or the risk-gate
        away) until every signal in it has its result."""
        w = self.windows.pop(pair, None)
        if w is None:
            return
        for attempt in range(1, 10_000):
            try:
                await self._decide(w)
                return
            except Exception as e:
                self.log.opt(exception=e).warning("aggregation window {} not decided yet: {}; again", pair, e)
                await asyncio.sleep(min(0.25 * attempt, 5.0))

    async def _decide(self, w: Window) -> None:
        votes = [rules.Vote(h.sid, h.sig.source, h.sig.signal, h.confidence, h.at) for h in w.held]
        d = rules.aggregate(votes, self.weights)
        ids = [h.sid for h in w.held]
        counted = set(d.counted)
        open_ = [h for h in w.held if h.sid not in self.results]  # a retry skips what is decided
        for h in open_:
            if h.sid not in counted:
                muted = self.weights.get(h.sig.source, Decimal(1)) <= 0
                why = f"weight 0 for source {h.sig.source}" if muted else "superseded by a later signal of its source"
                await self._finish(h, "filtered", why, aggregated=ids)
        members = [h for h in open_ if h.sid in counted]
        if not members:
            return
        if d.signal is None:
            why = f"the sources cancel out in the aggregation window (net {d.net})"
            for h in members:
                await self._finish(h, "filtered", why, aggregated=ids)
            return
        for h in members:
            if h.sig.signal != d.signal:
                why = f"outvoted in the aggregation window: net {d.signal} at {d.confidence}"
                await self._finish(h, "filtered", why, aggregated=ids)
        agree = [h for h in members if h.sig.signal == d.signal]
        floor = self.settings.MIN_CONFIDENCE
        if d.confidence < floor:
            why = f"aggregate confidence {d.confidence} ({d.signal}) is below MIN_CONFIDENCE {floor}"
            for h in agree:
                await self._finish(h, "filtered", why, aggregated=ids, adjusted_confidence=d.confidence)
            return
        # the strongest agreeing vote leads (its price, exits, risk parameters); the window's first id names the order
        lead = max(agree, key=lambda h: (self.weights.get(h.sig.source, Decimal(1)) * h.confidence, -h.at))
        await self._execute(lead, d.signal, d.confidence, agree, ids)

    # -- execution -------------------------------------------------------------------------------------
    async def _execute(
        self, lead: Held, side_signal: str, confidence: Decimal, members: list[Held], ids: list[str] | None = None
    ) -> None:
        """One decision becomes one order (a bracket when there are exits); every member gets the result."""
        sig = lead.sig
        side = "buy" if side_signal == "BUY" else "sell"
        notes: list[str] = []  # about the decision, added to each member's own
        extra: dict[str, object] = {"aggregated": ids, "adjusted_confidence": confidence} if ids else {}

        async def finish_all(status: str, reason: str | None = None, **more: object) -> None:
            for h in members:
                await self._finish(h, status, reason, **{**extra, **more, "notes": h.notes + notes})

        market = self.books.mids.get(sig.pair) or await self.books.mid(sig.pair)
        price = sig.price or market
        if price is None:
            await finish_all("rejected", f"no price for {sig.pair}: no market data yet")
            return
        rules_ = self.markets.get(sig.pair) or self.markets.coarsest(sig.pair)  # (several venues: every one's)
        tick = rules_.tick_size if rules_ else None
        step = rules_.amount_step if rules_ else QTY_STEP
        entry = price
        limit = None
        if self.settings.SIGNAL_ORDER_TYPE == "limit":
            limit = entry = rules.limit_price(side, market or price, self.settings.SIGNAL_LIMIT_OFFSET_PERCENT, tick)
        # the risk-gate's view: equity and exposure for the size, and the values PUT /api/risk/config may have
        # changed since the start (RISK_PER_TRADE, DEFAULT_STOP_LOSS_PERCENT, DEFAULT_TAKE_PROFIT_PERCENT)
        risk = await self.bus.request(self.subjects.query("risk"), Empty(), RiskMetricsView)
        stop, take = sig.stop_loss, sig.take_profit
        kind = self.settings.SIGNAL_ORDER_TYPE
        algo = None
        if kind in ("twap", "vwap"):  # an execution algorithm: its children trade; a parent carries no bracket
            algo = AlgoSpec(duration_ms=self.settings.SIGNAL_ALGO_DURATION_MS, slices=self.settings.SIGNAL_ALGO_SLICES)
            if stop is not None or take is not None:
                notes.append(f"stopLoss / takeProfit not placed: a {kind} order (SIGNAL_ORDER_TYPE) carries no bracket")
            stop = take = None
        elif self.settings.STOP_LOSS_ENABLED and stop is None:
            stop_pct = self._setting(risk, "DEFAULT_STOP_LOSS_PERCENT")
            take_pct = self._setting(risk, "DEFAULT_TAKE_PROFIT_PERCENT")
            stop, default_take = rules.default_exits(side, entry, stop_pct, take_pct, tick)
            take = take if take is not None else default_take
            notes.append(f"default exits (STOP_LOSS_ENABLED): stopLoss {stop}, takeProfit {take}")
        # an algorithm is sized with the signal's own stop all the same (only its legs are left off)
        sizing_stop = sig.stop_loss if algo is not None else stop
        sizing = await self._size(sig, side, entry, sizing_stop, confidence, step, notes, risk)
        if isinstance(sizing, str):
            code = sizing.partition(":")[0] if sizing.startswith("NO_CONVERSION:") else None
            await finish_all("rejected", sizing, **({"code": code} if code else {}))
            return
        if sizing.recommended_size <= ZERO:
            await finish_all("rejected", "the sized quantity rounds to zero", position_sizing=sizing)
            return
        req = OrderRequest(
            client_order_id=_client_id((ids or [lead.sid])[0]), pair=sig.pair, side=side,  # type: ignore[arg-type]
            quantity=sizing.recommended_size,
            type=kind if algo is not None else "limit" if limit is not None else "market",  # type: ignore[arg-type]
            price=limit, stop_loss=stop, take_profit=take, source=f"signal:{sig.source}", signal_id=lead.sid,
            ts=now_ms(), algo=algo,
        )  # fmt: skip
        status, reason, placed = await self._place(req)
        await finish_all(status, reason, position_sizing=sizing, **placed)

    async def _size(
        self,
        sig: Signal,
        side: str,
        price: Decimal,
        stop: Decimal | None,
        confidence: Decimal,
        step: Decimal,
        notes: list[str],
        risk: RiskMetricsView,
    ) -> PositionSizing | str:
        """How much to trade: the signal's quantity, the risk service's answer, or a local method; never
        more than MAX_POSITION_SIZE allows. A string: why it cannot be sized. ``risk``: the risk-gate's view."""
        rp = sig.risk_parameters
        fraction = (
            rp.max_risk_percent if rp and rp.max_risk_percent is not None else self._setting(risk, "RISK_PER_TRADE")
        )
        if not (ZERO < fraction <= 1):
            return "riskParameters.maxRiskPercent must be in (0, 1]"
        if sig.quantity is not None and (not sig.quantity.is_finite() or sig.quantity <= ZERO):
            return "quantity must be a positive number"
        try:
            method = (
                "fixed_quantity"
                if sig.quantity is not None
                else method_name(
                    rp.position_size_method if rp else None,
                    default=self.settings.POSITION_SIZE_METHOD,
                    has_stop=sig.stop_loss is not None,  # the signal's own stop; a default one is a safety net
                )
            )
        except SizingError as e:
            return str(e)
        # the risk-gate's equity is in BASE_CURRENCY; prices are in the pair's quote currency: size in quote units
        quote = pair_currencies(sig.pair)[1]
        rate = ONE if quote == risk.base_currency else risk.conversion_rates.get(quote)
        if rate is None or not rate.is_finite() or rate <= ZERO:
            return f"NO_CONVERSION: cannot value {sig.pair} in {risk.base_currency}: no rate for {quote}"
        equity = risk.equity if rate == ONE else risk.equity / rate  # in the quote currency
        if rate != ONE:
            notes.append(
                f"sized in {quote}: equity {risk.equity} {risk.base_currency} at {rate} {risk.base_currency}/{quote}"
            )
        held = next((p.position + p.working for p in risk.pairs if p.pair == sig.pair), ZERO)
        max_fraction = Decimal(risk.limits.get("MAX_POSITION_SIZE", str(self.settings.MAX_POSITION_SIZE)))
        mark = self.books.mids.get(sig.pair) or price
        room = max_fraction * equity / mark - (held if side == "buy" else -held)
        decided_by = "local"
        sized = None
        if self.risk.enabled and self.settings.ENABLE_RISK_CHECKS and sig.quantity is None:
            q = SizeQuestion(
                pair=sig.pair, signal=sig.signal, confidence=confidence, price=price, stop_loss=stop, equity=equity,
                max_risk_percent=fraction, method=method,
            )  # fmt: skip
            try:
                a = await self.risk.post("/api/risk/position-size", q, SizeAnswer)
                if a.recommended_size.is_finite() and a.recommended_size >= ZERO:
                    qty = round_down(a.recommended_size, step)
                    risk_amount = a.risk_amount if a.risk_amount is not None else qty * abs(price - (stop or ZERO))
                    sized = Sizing(qty, risk_amount, a.method or method)
                    decided_by = "risk_service"
                else:
                    notes.append(f"risk service sized {a.recommended_size}: ignored, sized locally")
            except ServiceDown as e:
                notes.append(f"risk service unavailable ({e.reason}): sized locally")
        if sized is None:
            win_loss = Decimal(1)
            if method == "kelly_criterion":
                win_loss = await self._win_loss(notes)
            sigma = volatility([p for _, p in self.prices.get(sig.pair, ())])
            try:
                sized = size(
                    method,
                    SizingInputs(
                        equity=equity, price=price, risk_fraction=fraction, step=step, stop=stop,
                        quantity=sig.quantity, confidence=confidence, win_loss_ratio=win_loss, sigma=sigma,
                    ),
                )  # fmt: skip
            except SizingError as e:
                return str(e)
        capped, was = cap(sized, room, step)
        return PositionSizing(
            recommended_size=capped.quantity, risk_amount=capped.risk_amount, method=capped.method,
            capped_by="MAX_POSITION_SIZE" if was else None, decided_by=decided_by,  # type: ignore[arg-type]
            currency=quote,
        )  # fmt: skip

    def _setting(self, risk: RiskMetricsView, name: str) -> Decimal:
        """A value set at run time with PUT /api/risk/config, as the risk-gate holds it now (its view's
        ``limits``); the setting when the risk-gate does not report it (an older one) or reports no number."""
        raw = risk.limits.get(name)
        if raw is not None:
            try:
                value = Decimal(raw)
            except ArithmeticError:
                value = None
            if value is not None and value.is_finite():
                return value
        return getattr(self.settings, name)  # type: ignore[no-any-return]

    async def _win_loss(self, notes: list[str]) -> Decimal:
        """Kelly's b: the observed average win / average loss of closed round trips (1 before any)."""
        try:
            perf = await self.bus.request(self.subjects.query("performance"), Empty(), Performance)
        except RequestFailed as e:
            notes.append(f"no performance figures ({e}): Kelly with a win/loss ratio of 1")
            return Decimal(1)
        t = perf.trades
        if t.average_win and t.average_loss and t.average_win > 0 and t.average_loss != 0:
            return t.average_win / abs(t.average_loss)
        notes.append("no closed round trips with wins and losses yet: Kelly with a win/loss ratio of 1")
        return Decimal(1)

    async def _close(self, me: tuple[Signal, str, int, int]) -> None:
        sig, sid = me[0], me[1]
        snap = await self.bus.request(self.subjects.query("portfolio"), Empty(), PortfolioSnapshot)
        pos = next((p for p in snap.positions if p.pair == sig.pair), None)
        if pos is None or pos.quantity == ZERO:
            await self._finish(me, "filtered", f"no open position in {sig.pair}")
            return
        side, qty = ("sell" if pos.side == "long" else "buy"), pos.quantity
        sizing = PositionSizing(
            recommended_size=qty, risk_amount=pos.market_value.copy_abs(), method="close",
            currency=pair_currencies(sig.pair)[1],
        )  # fmt: skip
        req = OrderRequest(
            # named after the position, not the signal: several CLOSE signals for one position make one order
            client_order_id=f"close-{pos.id}-{qty}", pair=sig.pair, side=side, quantity=qty,  # type: ignore[arg-type]
            reduce_only=True, source=f"signal:{sig.source}", signal_id=sid, ts=now_ms(),
        )  # fmt: skip
        status, reason, placed = await self._place(req)
        await self._finish(me, status, reason, position_sizing=sizing, **placed)

    async def _place(self, req: OrderRequest) -> tuple[str, str | None, dict[str, object]]:
        """A signal's order through the risk-gate: (executed, its orders) or (rejected, the denial)."""
        reply = await self.bus.request(self.subjects.orders_submit, req, OrderReply, timeout=10.0)
        if reply.code == "RETRY_LATER":  # the risk-gate cannot know yet: not a result, ask again (redelivery)
            raise Transient(f"risk-gate: {reply.detail}")
        if reply.code == "DUPLICATE_CLIENT_ORDER_ID":
            # the client order id is this signal's own: an earlier attempt made the order (its answer was lost)
            # and this one sized it anew at today's prices. The order that exists is the signal's result.
            # Asked of every partition (PARTITIONS > 1): the id may be held by an order of another partition's pair
            # (the same signalId sent for such a pair, or a REST clientOrderId such as ``X-1``) - never found by
            # asking the signal's own partition, which would retry for ever. A partition that does not answer
            # (and no other has the order) raises: asked again at the next delivery.
            held = await order_of_client(self.bus, req.client_order_id, self.settings.PARTITIONS, timeout=10.0)
            if held is None:  # approved, not created yet: the next delivery finds it
                raise Transient(f"the order of {req.client_order_id} is on its way")
            if held.pair != req.pair:  # not this signal's order: an order of another pair holds its client id
                detail = (
                    f"clientOrderId {req.client_order_id} (from signalId {req.signal_id}) already names order "
                    f"{held.order_id} of {held.pair}: a signalId is used once, whatever the pair"
                )
                return "rejected", f"DUPLICATE_CLIENT_ORDER_ID: {detail}", {"code": "DUPLICATE_CLIENT_ORDER_ID"}
            reply = OrderReply(ok=True, order=held)
        if not reply.ok or reply.order is None:
            return "rejected", f"{reply.code}: {reply.detail}", {"code": reply.code}
        o = reply.order
        order = SignalOrder(order_id=o.order_id, type=o.type, side=o.side, quantity=o.quantity, status=o.status)
        return "executed", None, {"orders": [order], "linked_orders": o.linked_orders}

    # -- reads -----------------------------------------------------------------------------------------
    async def _on_query(self, q: SignalsQuery, env: Envelope) -> None:
        out: list[SignalEvent] = []
        limit = max(1, min(q.limit, 1000))
        for ev in reversed(self.results.values()):
            if q.since is not None and ev.ts < q.since:
                break
            if (
                (q.pair is None or ev.pair == q.pair)
                and (q.status is None or ev.status == q.status)
                and (q.source is None or ev.source == q.source)
                and (q.signal_id is None or ev.signal_id == q.signal_id)
            ):
                out.append(ev)
                if len(out) >= limit:
                    break
        await self.bus.respond(env, SignalsPage(signals=out))


class _PairOf(msgspec.Struct):
    pair: object = None


def _client_id(sid: str) -> str:
    """The client order id of a signal's order: ``<signal id>-1``, or a hash of the id when it does not
    make a valid client id (too long, odd characters)."""
    cid = f"{sid}-1"
    if CLIENT_ID_RE.match(cid):
        return cid
    return "sig-" + hashlib.blake2b(sid.encode(), digest_size=12).hexdigest() + "-1"


def _closest(entries: deque[T], at: int, when: Callable[[T], int]) -> int | None:
    """The index of the entry whose time is closest to ``at``, within PAIR_WITHIN_MS (the oldest of equals): a
    publish heard clearly before or after the copy was stored is another publish (one never stored, say)."""
    best, gap = None, PAIR_WITHIN_MS + 1
    for i, e in enumerate(entries):
        g = abs(when(e) - at)
        if g < gap:
            best, gap = i, g
    return best


def _trim(fifos: dict[str, deque], now: int, late_ms: int = LATE_MS) -> None:  # type: ignore[type-arg]
    """Bound the unpaired halves, oldest first (amortised: a burst never rescans them all). Past
    KEEP_UNMATCHED keys, those older than ``late_ms`` go; past MAX_UNMATCHED, the oldest go whatever their age."""
    if len(fifos) <= KEEP_UNMATCHED:
        return
    for d in list(itertools.islice(fifos, 64)):
        q = fifos[d]
        if q and now - q[-1][0] <= late_ms and len(fifos) <= MAX_UNMATCHED:
            break
        del fifos[d]


class _IdOnly(msgspec.Struct):
    signalId: str | None = None  # (the wire name)


_ID_ONLY = msgspec.json.Decoder(_IdOnly)


def _id_of(data: bytes) -> str | None:
    """The ``signalId`` of a published signal (only that field is read), if it has one."""
    try:
        sid = _ID_ONLY.decode(data).signalId
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return sid or None


def _key(sid: str | None, headers: dict[str, str] | None) -> str | None:
    """What pairs a publish with its stored copy: the signal id, else the publish's Nats-Msg-Id (the stream
    stores one copy per msg id), else None (paired by a digest of the bytes, in order)."""
    if sid:
        return "id:" + sid
    mid = headers.get(MSG_ID_HEADER) if headers else None
    return "msg:" + mid if mid else None


_FIELD = re.compile(r"at `\$\.([A-Za-z0-9_.\[\]]+)`|missing required field `([^`]+)`")


def _field_of(reason: str) -> str | None:
    """The field a decoding error names (``... - at `$.confidence```), if any."""
    m = _FIELD.search(reason)
    return (m.group(1) or m.group(2)) if m else None


def _signal_id_of(data: bytes) -> str | None:
    """The ``signalId`` of a signal that does not decode, when it can still be read (a string)."""
    try:
        body = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    sid = body.get("signalId") if isinstance(body, dict) else None
    return sid if isinstance(sid, str) and sid else None


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
