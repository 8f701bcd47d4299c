"""Risk endpoints: metrics, the emergency stop and resuming."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import msgspec
from aiohttp import web

from config.settings import PARSERS
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
    """The body of PUT /api/risk/config: unknown fields refused; each limit bounded as its setting is. The
    enhanced-execution spec's names are taken too (its update-risk-config): ``maxLeverage`` (= maxTotalExposure),
    ``maxOrderSize`` (= maxOrderNotional), ``minAccountBalance``, ``stopLossPercentage``,
    ``takeProfitPercentage`` and ``riskPerTrade`` (a percent: 1 = 1 %)."""

    max_position_size: _dec(0, 1, lo_open=True, what="MAX_POSITION_SIZE, of equity (0.25 = 25 %; not an amount)") = None  # type: ignore[valid-type]
    max_daily_loss: _dec(0, 1, lo_open=True, what="MAX_DAILY_LOSS, of start-of-day equity (0.05 = 5 %)") = None  # type: ignore[valid-type]
    max_order_notional: _dec(0, None, what="MAX_ORDER_NOTIONAL, in BASE_CURRENCY (0: no limit)") = None  # type: ignore[valid-type]
    max_total_exposure: _dec(0, 100, lo_open=True, what="MAX_TOTAL_EXPOSURE, of equity: the leverage") = None  # type: ignore[valid-type]
    max_drawdown: _dec(0, 1, what="MAX_DRAWDOWN, of peak equity (0: none)") = None  # type: ignore[valid-type]
    price_band_percent: _dec(0, 1000, what="PRICE_BAND_PERCENT (0: none)") = None  # type: ignore[valid-type]
    max_orders_per_second: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    allow_short: bool | None = None
    # the enhanced-execution spec's names
    max_leverage: _dec(0, 100, lo_open=True, what="the spec's MAX_TOTAL_EXPOSURE: gross exposure / equity") = None  # type: ignore[valid-type]
    max_order_size: _dec(0, None, what="the spec's name of MAX_ORDER_NOTIONAL, in BASE_CURRENCY (0: no limit)") = None  # type: ignore[valid-type]
    min_account_balance: _dec(0, None, what="MIN_ACCOUNT_BALANCE, in BASE_CURRENCY (0: none)") = None  # type: ignore[valid-type]
    stop_loss_percentage: _dec(0, 99, lo_open=True, what="DEFAULT_STOP_LOSS_PERCENT, percent") = None  # type: ignore[valid-type]
    take_profit_percentage: _dec(0, 1000, what="DEFAULT_TAKE_PROFIT_PERCENT, percent (0: no take-profit leg)") = None  # type: ignore[valid-type]
    risk_per_trade: _dec(0, 100, lo_open=True, what="% of equity a trade risks (1 = 1 %): RISK_PER_TRADE x 100") = None  # type: ignore[valid-type]
    max_correlated_positions: Annotated[
        Any,
        msgspec.Meta(
            description=(
                "the spec's correlated exposure in USD: not taken (422). Correlated pairs share the limits of "
                "CORRELATION_GROUPS, fractions of equity, set in the environment"
            )
        ),
    ] = None


HUNDRED = Decimal(100)
# the spec's name -> our own name of the same limit (both may be sent when they agree)
ALIASES = {"max_leverage": "max_total_exposure", "max_order_size": "max_order_notional"}
# the spec's names and the settings they set (riskPerTrade apart: a percent)
SPEC_SETTINGS = {
    "max_leverage": "MAX_TOTAL_EXPOSURE",
    "max_order_size": "MAX_ORDER_NOTIONAL",
    "min_account_balance": "MIN_ACCOUNT_BALANCE",
    "stop_loss_percentage": "DEFAULT_STOP_LOSS_PERCENT",
    "take_profit_percentage": "DEFAULT_TAKE_PROFIT_PERCENT",
}
FRACTIONS = {
    "max_position_size": "MAX_POSITION_SIZE is a fraction of equity here (0.25 = 25 %)",
    "max_daily_loss": "MAX_DAILY_LOSS is a fraction of start-of-day equity here (0.05 = 5 %)",
}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def risk_limits(body: ConfigBody) -> RiskLimits:
    """The body of PUT /api/risk/config (our names and the enhanced-execution spec's) as the risk-gate's
    RiskLimits, in the settings' units: ``riskPerTrade`` percent -> RISK_PER_TRADE fraction. A value out of its
    bounds, two names of one limit disagreeing, or the spec's USD amounts where fractions are meant: a 422
    naming the field."""
    for name, why in FRACTIONS.items():
        value = getattr(body, name)
        if value is not None and value > 1:
            field = _camel(name)
            raise ApiError(
                422, "Validation failed",
                f"{field}={value}: expected a number > 0 and <= 1: {why}, not an amount (the enhanced-execution "
                f"spec's {field} is in USD; this service's is not)",
                field=field, code="INVALID_FIELD",
            )  # fmt: skip
    if body.max_correlated_positions is not None:
        raise ApiError(
            422, "Validation failed",
            "maxCorrelatedPositions (a USD amount) is not taken: pairs that move together share the limits of "
            "CORRELATION_GROUPS (fractions of equity, set in the environment)",
            field="maxCorrelatedPositions", code="UNSUPPORTED_FIELD",
        )  # fmt: skip
    for name, setting in SPEC_SETTINGS.items():  # checked here, so that a problem names the field as it was sent
        value = getattr(body, name)
        if value is not None:
            try:
                PARSERS[setting](value)
            except ValueError as e:
                raise ApiError(
                    422, "Validation failed", f"{_camel(name)}={value}: expected {e} ({setting})",
                    field=_camel(name), code="INVALID_FIELD",
                ) from None  # fmt: skip
    if body.risk_per_trade is not None and not (0 < body.risk_per_trade <= HUNDRED):
        raise ApiError(
            422, "Validation failed",
            f"riskPerTrade={body.risk_per_trade}: expected a percent of equity > 0 and <= 100 (1 = 1 %)",
            field="riskPerTrade", code="INVALID_FIELD",
        )  # fmt: skip
    values: dict[str, Any] = {f: getattr(body, f) for f in RiskLimits.__struct_fields__ if hasattr(body, f)}
    for spec_name, own in ALIASES.items():
        spec_value = getattr(body, spec_name)
        if spec_value is None:
            continue
        if values[own] is not None and values[own] != spec_value:
            raise ApiError(
                422, "Validation failed",
                f"{_camel(spec_name)} {spec_value} and {_camel(own)} {values[own]} name the same limit: send one",
                field=_camel(spec_name), code="INVALID_FIELD",
            )  # fmt: skip
        values[own] = spec_value
    values["min_account_balance"] = body.min_account_balance
    values["default_stop_loss_percent"] = body.stop_loss_percentage
    values["default_take_profit_percent"] = body.take_profit_percentage
    values["risk_per_trade"] = None if body.risk_per_trade is None else body.risk_per_trade / HUNDRED
    return RiskLimits(**values)


async def put_config(request: web.Request) -> web.Response:
    body: ConfigBody = await read_json(request, ConfigBody)  # type: ignore[assignment]
    limits = risk_limits(body)
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
