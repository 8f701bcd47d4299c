"""The crypto market data API of the local Alpaca test exchange (``/v1beta3/crypto/{loc}/...``).

What ccxt's fetch_order_book, fetch_ticker, fetch_trades and fetch_ohlcv read: latest orderbooks, quotes,
trades and bars, trades, bars and snapshots, keyed by symbol (``BTC/USD``), numbers as JSON numbers as
Alpaca sends them. Books are the engine's (``set_book``); trades are the fills of the account's orders.
Errors carry a message and no code (``Invalid symbol(s): ...`` -> ccxt BadSymbol). Also the query and
answer helpers the trading routes share.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from tests.exchanges.alpaca_engine import AlpacaEngine
from tests.exchanges.alpaca_model import SYMBOL_RE, AlpacaError, parse_time, rfc3339

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _num(value: Decimal) -> float | int:
    """Market data numbers are JSON numbers at Alpaca."""
    return int(value) if value == value.to_integral_value() else float(value)


def int_param(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise AlpacaError(422, 40010001, f"Invalid format for parameter {name}: {raw!r} is not an integer") from e
    if not lo <= value <= hi:
        raise AlpacaError(422, 40010001, f"{name} must be between {lo} and {hi}, got {value}")
    return value


def choice(query: Mapping[str, str], name: str, default: str, allowed: Iterable[str]) -> str:
    value = query.get(name) or default
    allowed = tuple(allowed)
    if value not in allowed:
        raise AlpacaError(422, 40010001, f"invalid {name}: {value!r} (one of {', '.join(allowed)})")
    return value


def time_param(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    return parse_time(raw, name) if raw else None


def _data_error(message: str) -> AlpacaError:
    """The market data API answers errors with a message and no code."""
    error = AlpacaError(400, 0, message)
    error.body = {"message": message}
    return error


_TIMEFRAME = re.compile(r"^(\d+)(Min|min|T|Hour|H|Day|D|Week|W|Month|M)$")
_UNIT_SECONDS = {"min": 60, "t": 60, "hour": 3600, "h": 3600, "day": 86400, "d": 86400, "week": 604800, "w": 604800}


def _timeframe_seconds(raw: str) -> int:
    m = _TIMEFRAME.match(raw)
    if not m:
        raise _data_error(f"Invalid format for parameter timeframe: {raw!r}")
    unit = m.group(2)
    seconds = 30 * 86400 if unit in ("M", "Month") else _UNIT_SECONDS[unit.lower()]
    return int(m.group(1)) * seconds


class AlpacaMarketData:
    """The market data routes over an engine's books and trades (no keys needed, as at Alpaca)."""

    def __init__(self, engine: AlpacaEngine) -> None:
        self.engine = engine

    def add_routes(self, r: web.UrlDispatcher) -> None:
        for name in ("orderbooks", "trades", "quotes", "bars"):
            r.add_get(f"/v1beta3/crypto/{{loc}}/latest/{name}", self._latest(name))
        r.add_get("/v1beta3/crypto/{loc}/trades", self._trades)
        r.add_get("/v1beta3/crypto/{loc}/bars", self._bars)
        r.add_get("/v1beta3/crypto/{loc}/snapshots", self._snapshots)

    def _symbols(self, request: web.Request) -> list[str]:
        raw = request.query.get("symbols", "")
        symbols = [s for s in raw.split(",") if s]
        if not symbols:
            raise _data_error("Invalid symbol(s): symbols is required")
        for s in symbols:
            if not SYMBOL_RE.match(s):
                raise _data_error(f"Invalid symbol(s): {s} does not match ^[A-Z]+/[A-Z]+$")
        return [s for s in symbols if s in self.engine.assets]

    def _quote(self, symbol: str) -> dict[str, Any]:
        book = self.engine.books.get(symbol)
        bid = book.bids[0] if book and book.bids else None
        ask = book.asks[0] if book and book.asks else None
        ts = book.ts if book and book.ts else datetime.now(UTC)
        return {
            "ap": _num(ask.price) if ask else 0,
            "as": _num(ask.size) if ask else 0,
            "bp": _num(bid.price) if bid else 0,
            "bs": _num(bid.size) if bid else 0,
            "t": rfc3339(ts),
        }

    def _orderbook(self, symbol: str) -> dict[str, Any]:
        book = self.engine.books.get(symbol)
        ts = book.ts if book and book.ts else datetime.now(UTC)
        return {
            "a": [{"p": _num(lv.price), "s": _num(lv.size)} for lv in (book.asks if book else [])],
            "b": [{"p": _num(lv.price), "s": _num(lv.size)} for lv in (book.bids if book else [])],
            "t": rfc3339(ts),
        }

    @staticmethod
    def _trade_json(t: dict[str, Any]) -> dict[str, Any]:
        return {"i": t["i"], "p": _num(t["p"]), "s": _num(t["s"]), "t": t["t"], "tks": t["tks"]}

    def _bars_of(self, symbol: str, seconds: int, start: datetime | None = None) -> list[dict[str, Any]]:
        buckets: dict[int, list[dict[str, Any]]] = {}
        for t in self.engine.public_trades.get(symbol, []):
            ts = parse_time(t["t"], "t")
            if start is not None and ts < start:
                continue
            buckets.setdefault(int(ts.timestamp()) // seconds * seconds, []).append(t)
        bars = []
        for key in sorted(buckets):
            trades = buckets[key]
            volume = sum((t["s"] for t in trades), Decimal(0))
            vwap = sum((t["p"] * t["s"] for t in trades), Decimal(0)) / volume
            bars.append(
                {
                    "t": rfc3339(datetime.fromtimestamp(key, UTC)).replace(".000000Z", "Z"),
                    "o": _num(trades[0]["p"]),
                    "h": _num(max(t["p"] for t in trades)),
                    "l": _num(min(t["p"] for t in trades)),
                    "c": _num(trades[-1]["p"]),
                    "v": _num(volume),
                    "n": len(trades),
                    "vw": _num(vwap),
                }
            )
        return bars

    def _latest(self, name: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            out: dict[str, Any] = {}
            for s in self._symbols(request):
                if name == "orderbooks":
                    out[s] = self._orderbook(s)
                elif name == "quotes":
                    out[s] = self._quote(s)
                elif name == "trades":
                    trades = self.engine.public_trades.get(s)
                    if trades:
                        out[s] = self._trade_json(trades[-1])
                else:
                    bars = self._bars_of(s, 60)
                    if bars:
                        out[s] = bars[-1]
            return json_response({name: out})

        return handler

    async def _trades(self, request: web.Request) -> web.Response:
        q = request.query
        limit = int_param(q, "limit", 1000, 1, 10000)
        start = time_param(q, "start")
        out = {}
        for s in self._symbols(request):
            trades = [
                t for t in self.engine.public_trades.get(s, []) if start is None or parse_time(t["t"], "t") >= start
            ]
            out[s] = [self._trade_json(t) for t in trades[:limit]]
        return json_response({"trades": out, "next_page_token": None})

    async def _bars(self, request: web.Request) -> web.Response:
        q = request.query
        seconds = _timeframe_seconds(q.get("timeframe", "1Min"))
        limit = int_param(q, "limit", 1000, 1, 10000)
        start = time_param(q, "start")
        return json_response(
            {
                "bars": {s: self._bars_of(s, seconds, start)[:limit] for s in self._symbols(request)},
                "next_page_token": None,
            }
        )

    async def _snapshots(self, request: web.Request) -> web.Response:
        out: dict[str, Any] = {}
        for s in self._symbols(request):
            entry: dict[str, Any] = {"latestQuote": self._quote(s)}
            trades = self.engine.public_trades.get(s)
            if trades:
                entry["latestTrade"] = self._trade_json(trades[-1])
            minute, daily = self._bars_of(s, 60), self._bars_of(s, 86400)
            if minute:
                entry["minuteBar"] = minute[-1]
            if daily:
                entry["dailyBar"] = daily[-1]
                if len(daily) > 1:
                    entry["prevDailyBar"] = daily[-2]
            out[s] = entry
        return json_response({"snapshots": out})
