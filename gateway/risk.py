"""Risk endpoints: metrics, the emergency stop and resuming."""

from __future__ import annotations

import msgspec
from aiohttp import web

from gateway.common import BUS, ask, int_param, query_param, read_json
from gateway.problems import ApiError, json_response
from gateway.spec import Endpoint, add, limit, q
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

GATE = "the risk-gate"


class EmergencyStopBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    close_positions: bool = False
    reason: str | None = None


class ResumeBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    reason: str | None = None


async def get_risk_metrics(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("risk"), Empty(), RiskMetricsView, GATE))


async def emergency_stop(request: web.Request) -> web.Response:
    """Halt, cancel every working order and, with ``closePositions``, close every position at market.
    Latched until ``POST /api/risk/resume``."""
    body = EmergencyStopBody()
    if request.can_read_body:
        body = await read_json(request, EmergencyStopBody)  # type: ignore[assignment]
    cmd = RiskCommand(action="emergency_stop", close_positions=body.close_positions, reason=body.reason)
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.risk_command, cmd, RiskStateChange, GATE))


async def resume(request: web.Request) -> web.Response:
    body = ResumeBody()
    if request.can_read_body:
        body = await read_json(request, ResumeBody)  # type: ignore[assignment]
    bus = request.app[BUS]
    cmd = RiskCommand(action="resume", reason=body.reason)
    return json_response(await ask(request, bus.subjects.risk_command, cmd, RiskStateChange, GATE))


class ConfigBody(RiskLimits, forbid_unknown_fields=True):
    """The body of PUT /api/risk/config: unknown fields refused."""


async def put_config(request: web.Request) -> web.Response:
    body: ConfigBody = await read_json(request, ConfigBody)  # type: ignore[assignment]
    limits = RiskLimits(**{f: getattr(body, f) for f in RiskLimits.__struct_fields__})
    bus = request.app[BUS]
    reply: RiskConfigReply = await ask(request, bus.subjects.risk_config, limits, RiskConfigReply, GATE)  # type: ignore[assignment]
    if not reply.ok:
        raise ApiError(
            422, "Validation failed", reply.detail or "invalid limits", field=reply.field, code="INVALID_FIELD"
        )
    return json_response(reply)


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
            {200: (RiskMetricsView, "The risk-gate's view now")},
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
            params=(q("severity", {"enum": ["warning", "critical", "emergency"]}), limit(500, 100)),
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
            {200: (RiskConfigReply, "The limits now in force")},
            body=ConfigBody,
            errors=(503, 504),
        ),
    )
