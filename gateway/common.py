"""What every REST handler shares: app keys, JSON bodies, bus requests turned into problems."""

from __future__ import annotations

import msgspec
from aiohttp import web

from bus.client import Bus
from bus.errors import RequestFailed
from config.settings import Settings
from gateway.health import HealthBook
from gateway.problems import ApiError, validation_error

REQUEST_TIMEOUT = 5.0
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
        return msgspec.json.decode(raw, type=type_)
    except msgspec.ValidationError as e:
        raise validation_error(e) from None
    except msgspec.DecodeError as e:
        raise ApiError(400, "Malformed JSON", f"the body is not valid JSON: {e}", code="MALFORMED_JSON") from None


async def ask(
    request: web.Request, subject: str, msg: object, reply_type: type, what: str, client_order_id: str | None = None
) -> object:
    """A bus request on behalf of a REST call; failures become problems. For an order, the problem
    carries its clientOrderId: when the outcome is unknown (504, 502) the caller retries with it."""
    try:
        return await request.app[BUS].request(subject, msg, reply_type, timeout=REQUEST_TIMEOUT)
    except RequestFailed as e:
        unknown = " The order may still be placed: retry with the same clientOrderId." if client_order_id else ""
        if e.timeout:
            detail = f"{what} did not answer within {REQUEST_TIMEOUT:g}s.{unknown}"
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
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if allowed is not None and value not in allowed:
        raise ApiError(
            422, "Validation failed", f"{name} must be one of {', '.join(allowed)}", field=name, code="INVALID_FIELD"
        )
    return value


def int_param(request: web.Request, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    raw = query_param(request, name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise ApiError(
            422, "Validation failed", f"{name} must be an integer from {lo} to {hi}", field=name, code="INVALID_FIELD"
        )
    return int(raw)
