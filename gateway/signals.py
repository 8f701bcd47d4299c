"""Signal endpoints: execute a signal and wait for its result, list recent results."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from bus.client import MSG_ID_HEADER, Bus
from bus.errors import RequestFailed
from domain.ids import day_key
from gateway.common import BUS, RETRY_AFTER_S, SETTINGS, UNAVAILABLE, choice, int_param, query_param, read_json
from gateway.partitions import ask_every, ask_owner
from gateway.problems import ApiError, json_response
from gateway.spec import MAX_TIME, PAIR, STR, TIME, Endpoint, add, limit, one_of, q
from schemas.messages import RiskParameters, Signal, SignalEvent, SignalsPage, SignalsQuery, now_ms
from schemas.rest import SIGNALS, ExecuteSignal, SignalAccepted

INTAKE = "the signal-intake"
# a try not answered within this long is sent again (the same signalId and Nats-Msg-Id), then every 4 s: one sent
# while the stream had no leader (a cluster electing one) is stored by a later try
RESEND_AFTER_S = (1.0, 2.0, 4.0)
MIN_TRY_S = 0.2  # less left of the wait than this: no further try
STORED_SINCE_MARGIN_MS = 5_000  # the stored copy is looked for from this long before the first try (clocks)
STATUSES = ("executed", "filtered", "rejected")


async def execute_signal(request: web.Request) -> web.Response:
    """Publish the signal on the bus (the same path as any NATS publisher) and answer with its result:
    200 executed or filtered (with the reason), 4xx/503 problem when rejected. No answer: it is sent again under
    the same signalId and Nats-Msg-Id (harmless: the stream stores one copy, a signal id has one result) until the
    wait is over; then 202 if the stream is seen to hold it (its result will be listed by GET /api/signals), else
    503 with Retry-After: not known to be stored, resend with the same signalId."""
    body: ExecuteSignal = await read_json(request, ExecuteSignal)  # type: ignore[assignment]
    settings = request.app[SETTINGS]
    day = now_ms()
    # an id chosen here, so the caller can find the result (and resend harmlessly) if it comes late
    sid = body.signal_id or f"SIG_{day_key(day)}_{uuid.uuid4().hex[:12]}"
    rp = body.risk_parameters
    params = RiskParameters(
        max_risk_percent=rp.max_risk_percent if rp else None,
        position_size_method=rp.position_size_method if rp else None,
    )
    action = choice("signal", body.signal, SIGNALS)
    sig = Signal(
        pair=body.pair, signal=action, confidence=body.confidence, source=body.source, strategy=body.strategy,
        signal_id=sid, price=body.price, stop_loss=body.stop_loss, take_profit=body.take_profit,
        risk_parameters=params if rp else None, quantity=body.quantity, timestamp=day,
    )  # fmt: skip
    timeout = settings.SIGNAL_AGGREGATION_WINDOW / 1000 + 10.0
    bus = request.app[BUS]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    headers = {MSG_ID_HEADER: sid}  # the stream stores one copy of it, however often it is sent
    tries = 0
    ev: SignalEvent | None = None
    while ev is None:
        wait = min(RESEND_AFTER_S[min(tries, len(RESEND_AFTER_S) - 1)], deadline - loop.time())
        tries += 1
        try:
            ev = await bus.request(bus.subjects.signals_submit, sig, SignalEvent, timeout=wait, headers=headers)
        except RequestFailed as e:
            if e.unavailable:  # retrying with the same signalId is harmless
                raise ApiError(
                    503, "Service Unavailable", f"{INTAKE} cannot answer right now ({e.reason}); retry in a moment",
                    code="UPSTREAM_UNAVAILABLE", signal_id=sid, retry_after=RETRY_AFTER_S,
                ) from None  # fmt: skip
            if not e.timeout:
                raise ApiError(502, "Bad Gateway", f"{INTAKE} failed: {e.reason}", code="UPSTREAM_ERROR") from None
            if deadline - loop.time() < MIN_TRY_S:
                return await _not_answered(bus, sid, day, timeout, tries)
    if ev.status == "rejected":
        code = ev.code or "SIGNAL_REJECTED"
        status = 503 if code in UNAVAILABLE else 422
        title = "Service Unavailable" if status == 503 else "Signal rejected"
        field = ev.field or ("pair" if ev.reason and ev.reason.startswith("pair ") else None)
        raise ApiError(status, title, ev.reason or "rejected", code=code, field=field, signal_id=ev.signal_id)
    return json_response(ev)


async def _not_answered(bus: Bus, sid: str, sent_at: int, timeout: float, tries: int) -> web.Response:
    """No result within the wait: 202 only when the stream is seen to hold the signal, else 503 (not known to be
    stored: the caller resends it with the same signalId, which never makes a second order)."""
    try:
        seq = await bus.stored_under(
            bus.subjects.s_signals, bus.subjects.signals_submit, sid, sent_at - STORED_SINCE_MARGIN_MS
        )
    except Exception as e:  # the stream cannot tell now (no leader, NATS away): not known
        seq, why = None, f"the stream {bus.subjects.s_signals} cannot tell whether it holds it ({type(e).__name__})"
    else:
        why = f"the stream {bus.subjects.s_signals} does not hold it"
    if seq is not None:
        detail = (
            f"the signal is stored (stream {bus.subjects.s_signals}, seq {seq}) but {INTAKE} did not answer within "
            f"{timeout:g}s (is it running?); its result will be at GET /api/signals?signalId={sid}"
        )
        return json_response(SignalAccepted(signal_id=sid, status="accepted", detail=detail), status=202)
    raise ApiError(
        503, "Service Unavailable",
        f"the signal is not known to be stored: sent {tries} times in {timeout:g}s without an answer, and {why}. "
        f"Resend it with the same signalId ({sid}): that never makes a second order",
        code="UPSTREAM_UNAVAILABLE", signal_id=sid, retry_after=RETRY_AFTER_S,
    )  # fmt: skip


async def list_signals(request: web.Request) -> web.Response:
    q = SignalsQuery(
        pair=query_param(request, "pair"),
        status=query_param(request, "status", STATUSES),
        source=query_param(request, "source"),
        signal_id=query_param(request, "signalId"),
        since=int_param(request, "since", 0, MAX_TIME),
        limit=int_param(request, "limit", 1, 1000, 50) or 50,
    )
    bus = request.app[BUS]
    if q.pair is not None or request.app[SETTINGS].PARTITIONS <= 1:  # one partition has them all
        page = await ask_owner(request, bus.subjects.query("signals"), q.pair or "", q, SignalsPage, INTAKE)
        return json_response(page)
    # every partition's newest, merged newest first (by when each was handled), at most `limit`
    pages: list[SignalsPage] = await ask_every(request, bus.subjects.query("signals"), q, SignalsPage, INTAKE)
    merged = sorted((ev for p in pages for ev in p.signals), key=lambda ev: ev.ts, reverse=True)
    return json_response(SignalsPage(signals=merged[: q.limit]))


def register(app: web.Application) -> None:
    t = "signals"
    add(
        app,
        Endpoint(
            "POST",
            "/api/signals/execute",
            execute_signal,
            "Execute a trading signal, answer its result",
            t,
            {
                200: (SignalEvent, "executed (with its orders and sizing) or filtered (with the reason)"),
                202: (
                    SignalAccepted,
                    "Seen stored in the stream; the result was late and will be listed by GET /api/signals",
                ),
            },
            body=ExecuteSignal,
            errors=(502, 503),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/signals",
            list_signals,
            "Signal results of the last 24 h, newest first",
            t,
            {200: (SignalsPage, "Results")},
            params=(
                PAIR,
                q("status", one_of(STATUSES)),
                q("source", STR),
                q("signalId", STR),
                q("since", TIME, "handled at or after (epoch ms)"),
                limit(1000, 50),
            ),
            errors=(503, 504),
        ),
    )
