"""One error shape everywhere: application/problem+json, never a stack trace to the caller."""

from __future__ import annotations

import enum
import functools
import hmac
import re
import types
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from aiohttp import web
from loguru import logger

from domain.decimals import shortest, shortest_literal
from schemas.rest import Problem

_ENCODER = msgspec.json.Encoder(decimal_format="number")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
PROBLEM_TYPE = "https://github.com/trading-bot-execution/problems/"
_FIELD_RE = re.compile(r"at `\$\.([A-Za-z0-9_.\[\]]+)`")
_UNKNOWN_RE = re.compile(r"unknown field `([^`]+)`")
_MISSING_RE = re.compile(r"missing required field `([^`]+)`")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        code: str | None = None,
        client_order_id: str | None = None,
        signal_id: str | None = None,
        headers: dict[str, str] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.field, self.code = status, title, detail, field, code
        self.client_order_id = client_order_id
        self.signal_id = signal_id
        self.headers = headers or {}
        self.retry_after = retry_after  # seconds: sent as the Retry-After header


def _number(text: str) -> msgspec.Raw:
    """A non-integer number literal of an answer, in the shortest exact form; the usual short ones cached."""
    return _short_number(text) if len(text) <= 40 else _shortest_number(text)


@functools.lru_cache(maxsize=8192)  # answers repeat their literals (0E-8, prices): most are a cache hit
def _short_number(text: str) -> msgspec.Raw:
    return _shortest_number(text)


def _shortest_number(text: str) -> msgspec.Raw:
    """A non-integer number literal of an answer, in the shortest exact form (never through float). Without
    an exponent that is plain text work (trailing zeros off, ``-0`` is ``0``); with one, through Decimal."""
    if "e" in text or "E" in text:
        if not text.upper().partition("E")[0].strip("-+0."):  # a zero (0E-8, the ledger's rounding of zero)
            return msgspec.Raw(b"0")
        return msgspec.Raw(shortest_literal(text).encode())
    if "." in text:
        text = text.rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
    return msgspec.Raw(text.encode())


# answers are read back as JSON, their non-integer number literals taken exactly as text (float_hook)
_READ_BACK = msgspec.json.Decoder(float_hook=_number)


def rest_json(body: object) -> bytes:
    """Every REST answer's JSON, in one place: decimals are JSON numbers in the shortest exact form
    (``0``, ``0.1``, ``60162``: no exponent, no trailing zeros, no negative zero)."""
    data = _ENCODER.encode(body)
    try:
        return _ENCODER.encode(_READ_BACK.decode(data))
    except msgspec.DecodeError:  # a non-finite decimal (NaN) is no JSON number: it leaves as null
        return _ENCODER.encode(_finite(msgspec.to_builtins(body, builtin_types=(Decimal,))))


def _finite(node: object) -> object:
    if isinstance(node, Decimal):
        return msgspec.Raw(shortest(node).encode()) if node.is_finite() else None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_finite(v) for v in node]
    return node


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=rest_json(body), status=status, content_type="application/json", headers=headers)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    field: str | None = None,
    code: str | None = None,
    request_id: str | None = None,
    client_order_id: str | None = None,
    signal_id: str | None = None,
) -> web.Response:
    slug = (code or title).lower().replace(" ", "-").replace("_", "-")
    body = Problem(
        type=PROBLEM_TYPE + slug,
        title=title,
        status=status,
        detail=detail,
        field=field,
        code=code,
        request_id=request_id,
        client_order_id=client_order_id,
        signal_id=signal_id,
    )
    return web.Response(body=rest_json(body), status=status, content_type="application/problem+json")


def validation_error(e: msgspec.ValidationError, type_: Any = None) -> ApiError:
    """Name the offending field of a msgspec validation error (and, for an enum, its allowed values)."""
    msg = str(e)
    field = None
    if m := _FIELD_RE.search(msg):
        field = m.group(1)
    unknown = _UNKNOWN_RE.search(msg)
    missing = _MISSING_RE.search(msg)
    if unknown:
        field = ".".join(filter(None, [field, unknown.group(1)]))
        return ApiError(
            422, "Unknown field", f"field {field!r} is not part of this request", field=field, code="UNKNOWN_FIELD"
        )
    if missing:
        field = ".".join(filter(None, [field, missing.group(1)]))
        return ApiError(422, "Validation failed", f"field {field!r} is required", field=field, code="MISSING_FIELD")
    detail = msg.split(" - at ")[0]
    if field and detail.startswith("Invalid enum value") and (allowed := allowed_values(type_, field)):
        detail = f"{detail}: must be one of {', '.join(allowed)}"
    return ApiError(
        422, "Validation failed", f"{field}: {detail}" if field else detail, field=field, code="INVALID_FIELD"
    )


def allowed_values(type_: Any, path: str) -> list[str]:
    """The values a Literal (or enum) field allows, found by its wire path (``type``, ``riskParameters.x``)."""
    node = type_
    for name in path.split("."):
        node = _unwrap(node)
        if not (isinstance(node, type) and issubclass(node, msgspec.Struct)):
            return []
        by_wire = {f.encode_name: f.type for f in msgspec.structs.fields(node)}
        if name not in by_wire:
            return []
        node = by_wire[name]
    node = _unwrap(node)
    if get_origin(node) is Literal:
        return [str(a) for a in get_args(node)]
    if isinstance(node, type) and issubclass(node, enum.Enum):
        return [str(m.value) for m in node]
    return []


def _unwrap(t: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> X."""
    while True:
        origin = get_origin(t)
        if origin is Annotated:
            t = get_args(t)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(t) if a is not type(None)]
            if len(rest) != 1:
                return t
            t = rest[0]
        else:
            return t


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex[:16]
    request[REQUEST_ID] = rid
    try:
        with logger.contextualize(request_id=rid):
            resp = await handler(request)
    except ApiError as e:
        resp = problem(
            e.status, e.title, e.detail, field=e.field, code=e.code, request_id=rid,
            client_order_id=e.client_order_id, signal_id=e.signal_id,
        )  # fmt: skip
        resp.headers.update(e.headers)
        if e.retry_after is not None:
            resp.headers["Retry-After"] = str(e.retry_after)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        detail = e.text if e.text and not e.text.startswith(f"{e.status}:") else e.reason
        if e.status == 405:
            detail = f"{request.method} is not allowed on {request.path}"
        elif e.status == 404:
            detail = f"no such endpoint: {request.method} {request.path}"
        elif e.status == 413:
            detail = "request body too large (the limit is MAX_BODY_BYTES)"
        resp = problem(e.status, e.reason, detail, request_id=rid)
        if e.status == 405 and "Allow" in e.headers:
            resp.headers["Allow"] = e.headers["Allow"]
    except Exception as e:
        logger.bind(actor="gateway").opt(exception=e).error(
            "request {} {} failed [{}]", request.method, request.path, rid
        )
        resp = problem(
            500, "Internal Server Error", "the request failed inside the service; see the logs", request_id=rid
        )
    resp.headers["X-Request-Id"] = rid
    return resp


OPEN_PATHS = frozenset({"/api/health", "/", "/dashboard"})  # the dashboard page (gateway/dashboard): no data
OPEN_PREFIXES = ("/dashboard/static/",)  # the page's files; the page's API calls carry the token


def is_open(path: str) -> bool:
    """Served without the token: /api/health, the dashboard page and its static files (never another /api path)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def auth_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """With API_TOKEN set, every endpoint but /api/health (and the dashboard's page and files) needs
    ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_open(request.path) and request.method != "OPTIONS":
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                resp = problem(
                    401,
                    "Unauthorized",
                    "send Authorization: Bearer <API_TOKEN>",
                    code="UNAUTHORIZED",
                    request_id=request.get(REQUEST_ID),
                )
                resp.headers["WWW-Authenticate"] = 'Bearer realm="trading-bot-execution"'
                return resp
        return await handler(request)

    return check
