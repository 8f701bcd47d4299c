"""The endpoint table: every route with what the OpenAPI document says about it.

Handlers are registered only through ``add``, so the document and the router cannot disagree.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from schemas.rest import any_case_pattern

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    where: str  # query | path | header
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    responses: dict[int, tuple[Any, str]]  # status -> (msgspec type or None, description)
    body: Any = None  # a msgspec Struct type
    body_required: bool = True
    params: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # problem+json answers besides the common ones
    description: str = ""
    media: str = "application/json"  # of the success answers (SSE: text/event-stream)
    open: bool = False  # no token needed (health, docs)
    events: tuple[Any, ...] = ()  # msgspec types of what it streams besides its answers (schema components)


ENDPOINTS: web.AppKey[list[Endpoint]] = web.AppKey("endpoints", list)


def add(app: web.Application, ep: Endpoint) -> None:
    app.router.add_route(ep.method, ep.path, ep.handler)
    app[ENDPOINTS].append(ep)


def q(name: str, schema: dict[str, Any], description: str = "") -> Param:
    return Param(name, "query", schema, description)


def path(name: str, description: str = "") -> Param:
    return Param(name, "path", {"type": "string"}, description, required=True)


STR = {"type": "string"}
MAX_TIME = 10**15  # epoch ms query parameters (since, until) go up to this
TIME = {"type": "integer", "minimum": 0, "maximum": MAX_TIME}
PAIR = Param("pair", "query", {"type": "string", "pattern": "^[A-Za-z0-9]+_[A-Za-z0-9]+$"}, "BASE_QUOTE, e.g. BTC_USDT")


def one_of(values: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A query enum: any case is taken (``?side=BUY``), so the document states a pattern, with the values."""
    return {"type": "string", "pattern": any_case_pattern(tuple(values)), "examples": list(values)}


def limit(hi: int, default: int) -> Param:
    return Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": hi, "default": default}, "page size")
