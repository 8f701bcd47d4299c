"""Portfolio endpoints: the books (seed shape), a refresh, closed positions, performance."""

from __future__ import annotations

from aiohttp import web

from gateway.common import BUS, ask, int_param, query_param
from gateway.exchange_param import EXCHANGE, exchange_param
from gateway.problems import json_response
from gateway.spec import MAX_TIME, PAIR, TIME, Endpoint, Param, add, limit, one_of, q
from schemas.messages import Empty, HistoryQuery, Performance, PerformanceQuery, PortfolioSnapshot, PositionsHistory

LEDGER = "the portfolio-ledger"


async def get_portfolio(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("portfolio"), Empty(), PortfolioSnapshot, LEDGER))


async def refresh_portfolio(request: web.Request) -> web.Response:
    """Re-mark at the latest books, publish the snapshot on tbx.events.portfolio, answer it."""
    bus = request.app[BUS]
    snap = await ask(request, bus.subjects.query("portfolio_refresh"), Empty(), PortfolioSnapshot, LEDGER)
    return json_response(snap)


async def get_positions_history(request: web.Request) -> web.Response:
    pair = query_param(request, "pair")
    q = HistoryQuery(
        pair=pair.upper() if pair else None,
        since=int_param(request, "since", 0, MAX_TIME),
        limit=int_param(request, "limit", 1, 1000, 100) or 100,
    )
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("positions_history"), q, PositionsHistory, LEDGER))


MODES = ("paper", "live")
MODE = Param(
    "mode", "query", one_of(MODES),
    "paper: the paper venues' books only; live: the live venues' books only (absent: every venue)",
)  # fmt: skip


async def get_performance(request: web.Request) -> web.Response:
    """Every venue's figures, or the paper / live venues' (``?mode=``), or one venue's (``?exchange=``)."""
    mode = query_param(request, "mode", MODES)
    q = PerformanceQuery(mode=mode, exchange=exchange_param(request), quality=True)  # type: ignore[arg-type]
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("performance"), q, Performance, LEDGER))


def register(app: web.Application) -> None:
    t = "portfolio"
    add(
        app,
        Endpoint(
            "GET",
            "/api/portfolio",
            get_portfolio,
            "The books: summary, positions, balances (seed shape)",
            t,
            {200: (PortfolioSnapshot, "The portfolio, marked at the latest books")},
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "POST",
            "/api/portfolio/refresh",
            refresh_portfolio,
            "Re-mark now and publish the snapshot",
            t,
            {200: (PortfolioSnapshot, "The fresh snapshot")},
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/positions/history",
            get_positions_history,
            "Closed position cycles",
            t,
            {200: (PositionsHistory, "Round trips, newest first")},
            params=(PAIR, q("since", TIME, "closed at or after (epoch ms)"), limit(1000, 100)),
            errors=(503, 504),
        ),
    )
    add(
        app,
        Endpoint(
            "GET",
            "/api/performance",
            get_performance,
            "Returns, drawdowns, ratios, round-trip stats",
            t,
            {200: (Performance, "Every figure is defined in the README")},
            params=(MODE, EXCHANGE),
            errors=(422, 503, 504),
        ),
    )
