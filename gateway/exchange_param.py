"""The ``?exchange=`` query parameter (books per venue, issue 17): a venue of this service, by name."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from config.venues import venue_names
from gateway.common import SETTINGS, query_param
from gateway.problems import ApiError
from gateway.spec import Param

EXCHANGE = Param(
    "exchange",
    "query",
    {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]{1,39}$", "examples": ["binance", "paper"]},
    "one venue: a name in EXCHANGES (or the one venue: EXCHANGE, paper), in any case; another name is a 422",
)


def exchange_param(request: web.Request, known: Iterable[str] = ()) -> str | None:
    """The venue named by ``?exchange=`` (lower case), None when not given. A name that is neither a venue
    of the deployment (EXCHANGES) nor one of ``known`` (e.g. a venue the books hold) is a 422 naming
    ``exchange`` and listing the venues."""
    raw = query_param(request, "exchange")
    if raw is None:
        return None
    name = raw.strip().lower()
    names = venue_names(request.app[SETTINGS])
    if name in names or name in set(known):
        return name
    raise ApiError(
        422, "Validation failed",
        f"exchange: {raw[:40]!r} is not a venue of this service (EXCHANGES: {', '.join(names)})",
        field="exchange", code="UNKNOWN_EXCHANGE",
    )  # fmt: skip
