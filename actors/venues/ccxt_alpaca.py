"""What Alpaca needs beyond ccxt 4.5.64's unified calls (see the shared ccxt notes, section 5).

- an order by client id: the raw ``GET v2/orders:by_client_order_id`` (ccxt has no unified call); an
  unknown id answers 404, which ccxt raises as InvalidOrder (not OrderNotFound);
- time in force: crypto takes ``gtc`` and ``ioc`` only, lower-case (ccxt sends what it is given);
- coin holdings: ``fetch_balance`` shows USD only; the coins are positions (``v2/positions``);
- statuses ccxt passes through unmapped (``pending_cancel``, ``replaced``, ...).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt

from actors.venues.ccxt_markets import _dec

TIME_IN_FORCE = {"GTC": "gtc", "IOC": "ioc"}
# Alpaca statuses ccxt does not map: still working at the venue, or ended (a replaced order is gone)
STATUS = {"replaced": "canceled", "done_for_day": "open", "pending_cancel": "open", "pending_replace": "open",
          "stopped": "open", "suspended": "open", "calculated": "open", "held": "open", "pending_new": "open",
          "accepted": "open", "accepted_for_bidding": "open", "new": "open", "partially_filled": "open"}  # fmt: skip


async def order_by_client_id(ex: Any, client_id: str) -> dict[str, Any] | None:
    """The ccxt order with this client order id, or None when Alpaca does not know it."""
    try:
        raw = await ex.request(
            "v2/orders:by_client_order_id", ["trader", "private"], "GET", {"client_order_id": client_id}
        )
    except (ccxt.OrderNotFound, ccxt.InvalidOrder):
        return None
    return ex.parse_order(raw)


async def coin_balances(ex: Any) -> dict[str, tuple[Decimal, Decimal]]:
    """Coin holdings as (free, total) by currency code, from ``v2/positions``."""
    raw = await ex.request("v2/positions", ["trader", "private"], "GET", {})
    by_id = {str(m.get("id", "")).replace("/", ""): m for m in ex.markets.values()}
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for p in raw or []:
        symbol = str(p.get("symbol", "")).replace("/", "")
        m = by_id.get(symbol)
        # a coin with no market loaded (USDT held to buy BTC/USDT): its position symbol is <COIN>USD
        code = m["base"] if m else symbol[:-3] if symbol.endswith("USD") and len(symbol) > 3 else symbol
        total = _dec(p.get("qty")) or Decimal(0)
        free = _dec(p.get("qty_available"))
        out[code] = (total if free is None else free, total)
    return out


def _stamp(activity_id: str) -> str:
    return activity_id.split("::", 1)[0]


async def attach_fees(ex: Any, trades: list[Any], quote_by_base: dict[str, str]) -> list[Any]:
    """Alpaca's crypto fee is not on the fill: it is a CFEE activity posted with it, in the asset received
    (a buy pays in the coin, a sell in USD: ``net_amount`` is then the fee in USD). A CFEE belongs to the
    fill with the same activity time stamp (the part of the id before ``::``), symbol and price."""
    from dataclasses import replace

    if not trades:
        return trades
    first = min(t.ts for t in trades)
    params: dict[str, Any] = {"activity_type": "CFEE", "direction": "asc"}
    if first:
        params["after"] = ex.iso8601(first - 1000)
    fees = await ex.traderPrivateGetV2AccountActivitiesActivityType(params)
    by_key: dict[tuple[str, str, Decimal | None], dict[str, Any]] = {}
    for f in fees or []:
        by_key.setdefault((_stamp(str(f.get("id", ""))), str(f.get("symbol", "")), _dec(f.get("price"))), f)
    out = []
    for t in trades:
        base = (t.pair or "").split("_")[0]
        quote = quote_by_base.get(t.pair or "", "USD")
        f = by_key.get((_stamp(t.trade_id), f"{base}{quote}", t.price)) or by_key.get(
            (_stamp(t.trade_id), f"{base}USD", t.price)
        )
        if f is None:
            out.append(t)
            continue
        in_quote = (_dec(f.get("net_amount")) or Decimal(0)) != 0
        cost = abs(_dec(f.get("net_amount")) or Decimal(0)) if in_quote else abs(_dec(f.get("qty")) or Decimal(0))
        out.append(replace(t, fee=cost, fee_currency=quote if in_quote else base))
    return out
