"""Public market data and the account of the local Binance spot test exchange, in Binance's shapes."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.exchanges.binance_engine import Engine
from tests.exchanges.binance_model import DAY_MS, ZERO, BinanceError, fmt, illegal_param


def depth_json(eng: Engine, sid: str, limit: int) -> dict[str, Any]:
    book = eng.books[sid]
    return {
        "lastUpdateId": book.update_id,
        "bids": [[fmt(p), fmt(q)] for p, q in book.bids[:limit]],
        "asks": [[fmt(p), fmt(q)] for p, q in book.asks[:limit]],
    }


def _last(eng: Engine, sid: str) -> Decimal:
    if sid in eng.last_price:
        return eng.last_price[sid]
    bid, ask = eng.books[sid].best("bid"), eng.books[sid].best("ask")
    if bid is not None and ask is not None:
        return ((bid + ask) / 2).quantize(eng.specs[sid].tick_size, ROUND_HALF_UP)
    return bid or ask or ZERO


def book_ticker_json(eng: Engine, sid: str) -> dict[str, Any]:
    book = eng.books[sid]
    bid, ask = (book.bids or [[ZERO, ZERO]])[0], (book.asks or [[ZERO, ZERO]])[0]
    return {
        "symbol": sid,
        "bidPrice": fmt(bid[0]),
        "bidQty": fmt(bid[1]),
        "askPrice": fmt(ask[0]),
        "askQty": fmt(ask[1]),
    }


def price_ticker_json(eng: Engine, sid: str) -> dict[str, Any]:
    return {"symbol": sid, "price": fmt(_last(eng, sid))}


def ticker_24hr_json(eng: Engine, sid: str) -> dict[str, Any]:
    now = eng.clock()
    trades = [t for t in eng.trades if t.symbol == sid and t.time >= now - DAY_MS]
    last = _last(eng, sid)
    first = trades[0].price if trades else last
    prices = [t.price for t in trades] or [last]
    volume = sum((t.qty for t in trades), ZERO)
    quote_volume = sum((t.quote_qty for t in trades), ZERO)
    change = last - first
    return {
        "symbol": sid,
        "priceChange": fmt(change),
        "priceChangePercent": format((change / first * 100 if first else ZERO).quantize(Decimal("0.001")), "f"),
        "weightedAvgPrice": fmt(quote_volume / volume if volume else last),
        "prevClosePrice": fmt(first),
        "lastPrice": fmt(last),
        "lastQty": fmt(trades[-1].qty if trades else ZERO),
        **{k: v for k, v in book_ticker_json(eng, sid).items() if k != "symbol"},
        "openPrice": fmt(first),
        "highPrice": fmt(max(prices)),
        "lowPrice": fmt(min(prices)),
        "volume": fmt(volume),
        "quoteVolume": fmt(quote_volume),
        "openTime": now - DAY_MS,
        "closeTime": now,
        "firstId": trades[0].trade_id if trades else -1,
        "lastId": trades[-1].trade_id if trades else -1,
        "count": len(trades),
    }


def symbols_param(eng: Engine, params: Mapping[str, str]) -> list[str] | None:
    """``symbol=X`` or ``symbols=["X","Y"]`` (validated), or None for all."""
    if "symbol" in params:
        return [eng.spec(params).symbol]
    if "symbols" in params:
        try:
            wanted = json.loads(params["symbols"])
        except ValueError:
            raise illegal_param("symbols", '["SYMBOL",...]') from None
        if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
            raise illegal_param("symbols", '["SYMBOL",...]')
        for s in wanted:
            if s not in eng.specs:
                raise BinanceError(-1121, "Invalid symbol.")
        return wanted
    return None


def account_json(eng: Engine, omit_zero: bool) -> dict[str, Any]:
    bps = (eng.maker_fee * 10000).to_integral_value()
    tbps = (eng.taker_fee * 10000).to_integral_value()
    balances = [
        {"asset": asset, "free": fmt(free), "locked": fmt(locked)}
        for asset, (free, locked) in sorted(eng.balances.items())
        if not (omit_zero and free == 0 and locked == 0)
    ]
    return {
        "makerCommission": int(bps),
        "takerCommission": int(tbps),
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": fmt(eng.maker_fee),
            "taker": fmt(eng.taker_fee),
            "buyer": fmt(ZERO),
            "seller": fmt(ZERO),
        },
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": eng.update_time,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 354937868,
    }
