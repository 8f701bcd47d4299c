"""What every REST handler shares: app keys, JSON bodies, bus requests turned into problems."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from aiohttp import web

from bus.client import Bus
from bus.errors import RequestFailed
from config.settings import Settings
from domain import signals as rules
from gateway.health import HealthBook
from gateway.problems import ApiError, validation_error

REQUEST_TIMEOUT = 5.0
RETRY_AFTER_S = 1  # Retry-After of a 503 that a retry in a moment is likely to get past
SHUTDOWN_GRACE_S = 1.5

BUS: web.AppKey[Bus] = web.AppKey("bus", Bus)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
HEALTH: web.AppKey[HealthBook] = web.AppKey("health", HealthBook)


async def read_json(request: web.Request, type_: type) -> object:
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(415, "Unsupported Media Type", f"send the body as application/json, not {ctype or 'nothing'}")
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as e:
        raise validation_error(e, type_) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {e}", code="MALFORMED_JSON") from None
    _finite(body, "")
    return body


MAX_ADJUSTED = 30  # no price, quantity or ratio a client sends is beyond 1e30 or below 1e-30


def _finite(node: object, at: str) -> None:
    """A decimal in a body is a finite number: "NaN" and "Infinity" are refused, naming the field."""
    if not isinstance(node, msgspec.Struct):
        return
    for f in msgspec.structs.fields(node):
        value = getattr(node, f.name)
        where = f"{at}{f.encode_name}"
        if isinstance(value, Decimal) and not value.is_finite():
            raise ApiError(
                422, "Validation failed", f"{where}: expected a finite decimal, not {value}", field=where,
                code="INVALID_FIELD",
            )  # fmt: skip
        if isinstance(value, Decimal) and value and not (-MAX_ADJUSTED <= value.adjusted() <= MAX_ADJUSTED):
            raise ApiError(
                422, "Validation failed",
                f"{where}: {value} is out of range (a magnitude between 1e-{MAX_ADJUSTED} and 1e{MAX_ADJUSTED})",
                field=where, code="INVALID_FIELD",
            )  # fmt: skip
        _finite(value, where + ".")


async def ask(
    request: web.Request,
    subject: str,
    msg: object,
    reply_type: type,
    what: str,
    client_order_id: str | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> object:
    """A bus request on behalf of a REST call; failures become problems. For an order, the problem
    carries its clientOrderId: when the outcome is unknown (504, 502) the caller retries with it."""
    try:
        return await request.app[BUS].request(subject, msg, reply_type, timeout=timeout)
    except RequestFailed as e:
        unknown = " The order may still be placed: retry with the same clientOrderId." if client_order_id else ""
        if e.timeout:
            detail = f"{what} did not answer within {timeout:g}s.{unknown}"
            raise ApiError(
                504, "Gateway Timeout", detail, code="UPSTREAM_TIMEOUT", client_order_id=client_order_id
            ) from None
        if e.no_responders:
            raise ApiError(
                503,
                "Service Unavailable",
                f"{what} is not running",
                code="UPSTREAM_DOWN",
                client_order_id=client_order_id,
            ) from None
        if e.unavailable:  # it failed on something briefly away (a stream leader election) after its own retries
            raise ApiError(
                503,
                "Service Unavailable",
                f"{what} cannot answer right now ({e.reason}); retry in a moment.{unknown}",
                code="UPSTREAM_UNAVAILABLE",
                client_order_id=client_order_id,
                retry_after=RETRY_AFTER_S,
            ) from None
        raise ApiError(
            502,
            "Bad Gateway",
            f"{what} failed: {e.reason}.{unknown}",
            code="UPSTREAM_ERROR",
            client_order_id=client_order_id,
        ) from None


# codes of order denials that are not the caller's mistake
UNAVAILABLE = frozenset({"NO_MARKET_DATA", "TRADING_HALTED"})


def query_param(request: web.Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """A query parameter; empty (``?pair=``) is the same as not given. With ``allowed``, matched without
    regard to case and answered in its canonical spelling (``?side=BUY`` is ``buy``)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    return choice(name, value, allowed) if allowed is not None else value


def choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """A body field that takes one of ``allowed`` in any case, in its canonical spelling (``BUY`` -> ``buy``);
    anything else is a 422 naming the field and listing the allowed values."""
    canonical = rules.canonical(value, allowed)
    if canonical is None:
        raise ApiError(
            422, "Validation failed", f"{name} must be one of {', '.join(allowed)} (any case), not {value[:40]!r}",
            field=name, code="INVALID_FIELD",
        )  # fmt: skip
    return canonical


ASCII_INT = re.compile(r"[0-9]{1,20}")
MAX_SEQ = 2**63 - 1  # the largest stream sequence JetStream takes


def int_param(request: web.Request, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    """An integer query parameter: ASCII digits only (not ``²`` or ``١٢``), from ``lo`` to ``hi``; empty or
    left out: ``default``. Anything else is a 422 naming the parameter."""
    raw = query_param(request, name)
    if raw is None:
        return default
    if not ASCII_INT.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise ApiError(
            422, "Validation failed", f"{name} must be an integer from {lo} to {hi} (ASCII digits), not {raw[:40]!r}",
            field=name, code="INVALID_FIELD",
        )  # fmt: skip
    return int(raw)


_SETTING_TYPES: dict[str, Any] = {f.name: f.type for f in msgspec.structs.fields(Settings)}


def typed_limits(limits: dict[str, str]) -> dict[str, Any]:
    """Limits as the risk-gate reports them (strings on the bus) as REST shows them: a boolean setting as a
    JSON boolean, a number as a JSON number (by the setting's type; an unknown name stays as it is)."""
    out: dict[str, Any] = {}
    for name, raw in limits.items():
        kind = _SETTING_TYPES.get(name)
        value: Any = raw
        if kind is bool and raw.strip().lower() in ("true", "false"):
            value = raw.strip().lower() == "true"
        elif kind in (int, Decimal):
            try:
                number = Decimal(raw)
            except InvalidOperation:
                number = None
            if number is not None and number.is_finite():
                value = int(number) if kind is int and number == number.to_integral_value() else number
        out[name] = value
    return out
