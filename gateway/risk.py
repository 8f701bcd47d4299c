"""Risk endpoints: metrics, the emergency stop and resuming."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
from aiohttp import web

from gateway.common import BUS, ask, int_param, query_param, read_json, typed_limits
from gateway.problems import ApiError, json_response
from gateway.spec import Endpoint, add, limit, one_of, q
from schemas.messages import (
    AlertsPage,
    AlertsQuery,
    Empty,
    RiskCommand,
    RiskConfigReply,
    RiskLimits,
    RiskMetricsView,
    RiskStateChange,
)
from schemas.rest import RiskConfig, RiskMetrics

GATE = "the risk-gate"


class EmergencyStopBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    close_positions: bool = False
    reason: str | None = None


class ResumeBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    reason: str | None = None


async def get_risk_metrics(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    view: RiskMetricsView = await ask(request, bus.subjects.query("risk"), Empty(), RiskMetricsView, GATE)  # type: ignore[assignment]
    fields = msgspec.structs.asdict(view)
    return json_response(RiskMetrics(**{**fields, "limits": typed_limits(view.limits)}))


EMERGENCY_TIMEOUT_S = 15.0  # above the risk-gate's budget for the whole stop


async def emergency_stop(request: web.Request) -> web.Response:
    """Halt, cancel every working order and, with ``closePositions``, close every position at market.
    Latched until ``POST /api/risk/resume``."""
    body = EmergencyStopBody()
    if request.can_read_body:
        body = await read_json(request, EmergencyStopBody)  # type: ignore[assignment]
    cmd = RiskCommand(action="emergency_stop", close_positions=body.close_positions, reason=body.reason)
    bus = request.app[BUS]
    # it halts at once, then cancels and closes: the risk-gate bounds that (EMERGENCY_STOP_BUDGET_S)
    answer = await ask(request, bus.subjects.risk_command, cmd, RiskStateChange, GATE, timeout=EMERGENCY_TIMEOUT_S)
    return json_response(answer)


async def resume(request: web.Request) -> web.Response:
    body = ResumeBody()
    if request.can_read_body:
        body = await read_json(request, ResumeBody)  # type: ignore[assignment]
    bus = request.app[BUS]
    cmd = RiskCommand(action="resume", reason=body.reason)
    return json_response(await ask(request, bus.subjects.risk_command, cmd, RiskStateChange, GATE))


def _dec(lo: int, hi: int | None, *, lo_open: bool = False, what: str = "") -> Any:
    """A decimal limit with the bounds of its setting, stated in the document (the risk-gate checks them)."""
    bounds: dict[str, Any] = {"exclusiveMinimum" if lo_open else "minimum": lo}
    if hi is not None:
        bounds["maximum"] = hi
    return Annotated[Decimal, msgspec.Meta(description=what, extra_json_schema=bounds)] | None


class ConfigBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """The body of PUT /api/risk/config: unknown fields refused; each limit bounded as its setting is."""

    max_position_size: _dec(0, 1, lo_open=True, what="MAX_POSITION_SIZE, of equity") = None  # type: ignore[valid-type]
    max_daily_loss: _dec(0, 1, lo_open=True, what="MAX_DAILY_LOSS, of start-of-day equity") = None  # type: ignore[valid-type]
    max_order_notional: _dec(0, None, what="MAX_ORDER_NOTIONAL (0: no limit)") = None  # type: ignore[valid-type]
    max_total_exposure: _dec(0, 100, lo_open=True, what="MAX_TOTAL_EXPOSURE, of equity") = None  # type: ignore[valid-type]
    max_drawdown: _dec(0, 1, what="MAX_DRAWDOWN, of peak equity (0: none)") = None  # type: ignore[valid-type]
    price_band_percent: _dec(0, 1000, what="PRICE_BAND_PERCENT (0: none)") = None  # type: ignore[valid-type]
    max_orders_per_second: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    allow_short: bool | None = None


async def put_config(request: web.Request) -> web.Response:
    body: ConfigBody = await read_json(request, ConfigBody)  # type: ignore[assignment]
    limits = RiskLimits(**{f: getattr(body, f) for f in RiskLimits.__struct_fields__})
    bus = request.app[BUS]
    reply: RiskConfigReply = await ask(request, bus.subjects.risk_config, limits, RiskConfigReply, GATE)  # type: ignore[assignment]
    if not reply.ok:
        raise ApiError(
            422, "Validation failed", reply.detail or "invalid limits", field=reply.field, code="INVALID_FIELD"
        )
    return json_response(RiskConfig(ok=True, limits=typed_limits(reply.limits)))


async def get_alerts(request: web.Request) -> web.Response:
    severity = query_param(request, "severity", ("warning", "critical", "emergency"))
    q = AlertsQuery(severity=severity, limit=int_param(request, "limit", 1, 500, 100) or 100)  # type: ignore[arg-type]
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("alerts"), q, AlertsPage, GATE))


def register(app: web.Application) -> None:
    t = "risk"
    add(
        app,
        Endpoint(
            "GET",
            "/api/risk/metrics",
            get_risk_metrics,
            "Trading state, equity, losses, exposure, limits",
            t,
            {200: (RiskMetrics, "The risk-gate's view now")},
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/risk/emergency-stop",
            emergency_stop,
            "Halt, cancel all, optionally close all",
            t,
            {200: (RiskStateChange, "Halted (latched until resume), with what was canceled / closed")},
            body=EmergencyStopBody,
            body_required=False,
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/risk/resume",
            resume,
            "Back to ACTIVE",
            t,
            {200: (RiskStateChange, "The new state")},
            body=ResumeBody,
            body_required=False,
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/alerts",
            get_alerts,
            "Recent alerts of every actor, newest first",
            t,
            {200: (AlertsPage, "Alerts")},
            params=(q("severity", one_of(["warning", "critical", "emergency"])), limit(500, 100)),
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "PUT",
            "/api/risk/config",
            put_config,
            "Change the limits (validated, persisted, applied)",
            t,
            {200: (RiskConfig, "The limits now in force")},
            body=ConfigBody,
            errors=(503, 504),
        ),
    )
