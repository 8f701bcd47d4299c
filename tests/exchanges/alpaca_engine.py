"""The state of the local Alpaca test exchange: assets, books, orders, matching, balances, activities.

Pure and synchronous (no I/O): the HTTP layer in ``tests/exchanges/alpaca.py`` turns requests into calls
here and answers with the JSON this module builds, shaped as Alpaca's trading API v2 answers (decimals
as strings, RFC3339 times, ``BTC/USD`` symbols, ``BTCUSD`` position symbols).

Matching rules (what a test can rely on):
- A new order is created ``pending_new`` with nothing filled (that is the HTTP answer); ``activate`` then
  makes it ``new`` and matches it against the book of its symbol (``set_book``).
- Market orders walk the book level by level (one FILL per level, taker); what the book cannot fill
  stays working (``partially_filled`` / ``new``) and fills when a later book has liquidity (an ``ioc``
  order's rest is canceled instead).
- Limit orders take the levels at or better than their price (taker, at the level's price); the rest
  rests and fills (maker, at its own limit price) when a later ``set_book`` crosses it, consuming the
  crossing levels.
- stop_limit orders are held until the book reaches the stop (a buy when the best ask >= stop, a sell
  when the best bid <= stop), then act as a limit order (taker for what crosses at once).
- Fees are charged in the asset received (a BTC/USD buy pays in BTC, a sell in USD), taker or maker
  rate, exact Decimal, posted at once as a separate CFEE activity (Alpaca posts them later); FILL
  activities carry no fee. A coin fee is ``qty`` (negative) of ``symbol`` ``<COIN>USD`` with
  ``net_amount`` "0", as in Alpaca's published sample; a USD fee is ``net_amount`` (negative) with ``qty``
  "0" and the traded pair as ``symbol`` (Alpaca publishes no sample of it). A CFEE names no order.
- A buy quoted in USD below ``min_order_cost`` is refused (403, code 40310000: "cost basis must be >=
  minimal amount of order 10", as Alpaca answers; ccxt raises InsufficientFunds). Alpaca applies that
  floor to USD-quoted buys only (ccxt PR #30101 probed the paper API).
- Buying power: open buy orders reserve quote (remaining qty x limit price, or the book's estimate for a
  market order); open sell orders reserve the coin (``qty_available``). More than is available -> 403
  40310000 "insufficient balance for USD (requested: X, available: Y)".
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tests.exchanges.alpaca_model import (
    CRYPTO_TIME_IN_FORCE,
    D0,
    MAX_CLIENT_ORDER_ID,
    ORDER_TYPES,
    AlpacaError,
    AssetSpec,
    Book,
    Order,
    bad_request,
    default_assets,
    dstr,
    is_multiple,
    levels_of,
    not_found,
    parse_time,
    rfc3339,
    to_decimal,
    unprocessable,
)

__all__ = ["D0", "AlpacaEngine", "AlpacaError", "AssetSpec", "Order"]


class AlpacaEngine:
    """The account and the market of the test exchange. All amounts are Decimal."""

    def __init__(
        self,
        *,
        assets: Iterable[AssetSpec] | None = None,
        cash: Decimal | str | int = Decimal("100000"),
        positions: Mapping[str, Decimal | str | int] | None = None,
        taker_fee: Decimal | str = Decimal("0.0025"),
        maker_fee: Decimal | str = Decimal("0.0015"),
        min_order_cost: Decimal | str = Decimal("10"),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.assets: dict[str, AssetSpec] = {a.symbol: a for a in (assets if assets is not None else default_assets())}
        self.cash = Decimal(str(cash))
        self.positions: dict[str, Decimal] = {k: Decimal(str(v)) for k, v in (positions or {}).items()}
        self.cost_basis: dict[str, Decimal] = {}  # USD paid for the coin held (for avg_entry_price)
        self.taker_fee = Decimal(str(taker_fee))
        self.maker_fee = Decimal(str(maker_fee))
        self.min_order_cost = Decimal(str(min_order_cost))
        self.now = now
        self.books: dict[str, Book] = {}
        self.last_price: dict[str, Decimal] = {}
        self.public_trades: dict[str, list[dict[str, Any]]] = {}
        self.orders: dict[str, Order] = {}
        self.by_client_id: dict[str, Order] = {}
        self.activities: list[dict[str, Any]] = []
        self.account_id = str(uuid.uuid4())
        self.created_at = self.now()
        self._trade_seq = 0

    # ---- balances -------------------------------------------------------------------------------

    def balance(self, asset: str) -> Decimal:
        return self.cash if asset == "USD" else self.positions.get(asset, D0)

    def _credit(self, asset: str, amount: Decimal) -> None:
        if asset == "USD":
            self.cash += amount
        else:
            self.positions[asset] = self.positions.get(asset, D0) + amount

    def available(self, asset: str) -> Decimal:
        """What a new order may use: the balance minus what open orders hold back."""
        held = D0
        for o in self.orders.values():
            if not o.is_open:
                continue
            if o.side == "buy" and o.asset.quote == asset:
                held += o.reserved_quote()
            elif o.side == "sell" and o.asset.base == asset:
                held += o.reserved_base()
        return self.balance(asset) - held

    def reference_price(self, symbol: str) -> Decimal | None:
        book = self.books.get(symbol)
        if book and book.best_bid is not None and book.best_ask is not None:
            return (book.best_bid + book.best_ask) / 2
        if book and (book.best_bid or book.best_ask):
            return book.best_bid or book.best_ask
        return self.last_price.get(symbol)

    def usd_price(self, coin: str) -> Decimal | None:
        return self.reference_price(f"{coin}/USD")

    # ---- orders ---------------------------------------------------------------------------------

    def asset(self, symbol: object) -> AssetSpec:
        if not isinstance(symbol, str) or not symbol:
            raise bad_request("symbol is required")
        key = symbol.upper()
        if "/" not in key:  # legacy BTCUSD
            for a in self.assets.values():
                if a.symbol.replace("/", "") == key:
                    return a
        found = self.assets.get(key)
        if found is None:
            raise unprocessable(f'asset "{symbol}" not found')
        if found.status != "active" or not found.tradable:
            raise unprocessable(f"asset {found.symbol} is not tradable")
        return found

    def _estimate_cost(self, asset: AssetSpec, side: str, qty: Decimal) -> Decimal | None:
        """What a market order of ``qty`` would cost now, walking the book (then the last price)."""
        book = self.books.get(asset.symbol, Book())
        levels = book.asks if side == "buy" else book.bids
        left, cost = qty, D0
        for lvl in levels:
            take = min(left, lvl.size)
            cost += take * lvl.price
            left -= take
            if left <= 0:
                return cost
        ref = (levels[-1].price if levels else None) or self.last_price.get(asset.symbol)
        if ref is None:
            return None
        return cost + left * ref

    def place(self, params: Mapping[str, Any], *, source: str = "api") -> Order:
        """Validate and create an order, as ``POST /v2/orders`` does. It is ``pending_new``, unmatched."""
        asset = self.asset(params.get("symbol"))
        side = params.get("side")
        if side not in ("buy", "sell"):
            raise bad_request(f"invalid side: {side!r} (buy or sell)")
        otype = params.get("type", params.get("order_type"))
        if otype not in ORDER_TYPES:
            raise bad_request(f"invalid order type for crypto order: {otype!r} (market, limit or stop_limit)")
        tif = params.get("time_in_force")
        if tif not in CRYPTO_TIME_IN_FORCE:
            raise bad_request(f"invalid crypto time_in_force: {tif!r} (gtc or ioc)")
        qty = notional = limit_price = stop_price = None
        if params.get("qty") is not None and params.get("notional") is not None:
            raise bad_request("qty and notional are mutually exclusive")
        if params.get("qty") is not None:
            qty = to_decimal(params["qty"], "qty")
            if qty <= 0:
                raise bad_request("qty must be > 0")
            if qty < asset.min_order_size:
                raise bad_request(f"qty must be >= {dstr(asset.min_order_size)} (min_order_size of {asset.symbol})")
            if not is_multiple(qty, asset.min_trade_increment):
                raise bad_request(
                    f"qty {dstr(qty)} is not a multiple of min_trade_increment {dstr(asset.min_trade_increment)}"
                )
        elif params.get("notional") is not None:
            if otype != "market":
                raise bad_request("notional is only allowed for market orders")
            notional = to_decimal(params["notional"], "notional")
            if notional <= 0:
                raise bad_request("notional must be > 0")
        else:
            raise bad_request("qty or notional is required")
        if otype in ("limit", "stop_limit"):
            if params.get("limit_price") is None:
                raise bad_request(f"limit_price is required for {otype} orders")
            limit_price = to_decimal(params["limit_price"], "limit_price")
            if limit_price <= 0:
                raise bad_request("limit_price must be > 0")
            if not is_multiple(limit_price, asset.price_increment):
                raise bad_request(
                    f"limit_price {dstr(limit_price)} is not a multiple of price_increment "
                    f"{dstr(asset.price_increment)}"
                )
        elif params.get("limit_price") is not None:
            raise bad_request("limit_price must not be set for market orders")
        if otype == "stop_limit":
            if params.get("stop_price") is None:
                raise bad_request("stop_price is required for stop_limit orders")
            stop_price = to_decimal(params["stop_price"], "stop_price")
            if stop_price <= 0:
                raise bad_request("stop_price must be > 0")
            if not is_multiple(stop_price, asset.price_increment):
                raise bad_request(
                    f"stop_price {dstr(stop_price)} is not a multiple of price_increment {dstr(asset.price_increment)}"
                )
        elif params.get("stop_price") is not None:
            raise bad_request(f"stop_price must not be set for {otype} orders")
        cid = params.get("client_order_id")
        if cid is None or cid == "":
            cid = str(uuid.uuid4())
        if not isinstance(cid, str):
            raise bad_request("client_order_id must be a string")
        if len(cid) > MAX_CLIENT_ORDER_ID:
            raise bad_request(f"client_order_id must be at most {MAX_CLIENT_ORDER_ID} characters")
        if cid in self.by_client_id:
            raise bad_request("client_order_id must be unique")

        # cost and balance (403, 40310000)
        if notional is not None:
            est_cost: Decimal | None = notional
        elif limit_price is not None:
            assert qty is not None
            est_cost = qty * limit_price
        else:
            assert qty is not None
            est_cost = self._estimate_cost(asset, side, qty)
            if est_cost is None:
                raise unprocessable(f"no market price for {asset.symbol}: cannot accept a market order")
        if side == "buy" and asset.quote == "USD" and est_cost < self.min_order_cost:
            raise AlpacaError(
                403, 40310000, f"cost basis must be >= minimal amount of order {dstr(self.min_order_cost)}"
            )
        unit = est_cost / qty if qty else (self.reference_price(asset.symbol) or D0)
        if side == "buy":
            have = self.available(asset.quote)
            if est_cost > have:
                raise self._insufficient(asset.quote, est_cost, have)
        else:
            want = qty if qty is not None else (est_cost / unit if unit else D0)
            have = self.available(asset.base)
            if want > have:
                raise self._insufficient(asset.base, want, have)

        now = self.now()
        order = Order(
            id=str(uuid.uuid4()),
            client_order_id=cid,
            asset=asset,
            side=side,
            type=otype,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            stop_price=stop_price,
            created_at=now,
            source=source,
            reserve_price=limit_price if limit_price is not None else unit,
        )
        self.orders[order.id] = order
        self.by_client_id[cid] = order
        return order

    def _insufficient(self, asset: str, requested: Decimal, available: Decimal) -> AlpacaError:
        return AlpacaError(
            403,
            40310000,
            f"insufficient balance for {asset} (requested: {dstr(requested)}, available: {dstr(max(available, D0))})",
            available=dstr(max(available, D0)),
            balance=dstr(self.balance(asset)),
            symbol=asset,
        )

    def activate(self, order_id: str) -> None:
        """The venue accepts the order (``pending_new`` -> ``new``) and matches it."""
        order = self.orders.get(order_id)
        if order is None or order.status != "pending_new":
            return
        order.status = "new"
        order.updated_at = self.now()
        self._match(order)

    def get(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise not_found()
        return order

    def get_by_client_id(self, client_order_id: str) -> Order:
        order = self.by_client_id.get(client_order_id)
        if order is None:
            raise not_found()
        return order

    def cancel(self, order_id: str) -> Order:
        order = self.get(order_id)
        if not order.is_open:
            raise unprocessable(f'order is already in "{order.status}" state')
        order.status = "canceled"
        order.canceled_at = order.updated_at = self.now()
        return order

    def cancel_all(self) -> list[Order]:
        return [self.cancel(o.id) for o in list(self.orders.values()) if o.is_open]

    def replace(self, order_id: str, params: Mapping[str, Any]) -> Order:
        """``PATCH /v2/orders/{id}``: a new order (new id) takes the old one's place, which is ``replaced``."""
        old = self.get(order_id)
        if not old.is_open or old.status == "pending_new":
            raise unprocessable(f'order is already in "{old.status}" state')
        if old.type == "market":
            raise unprocessable("market orders cannot be replaced")
        new_params = {
            "symbol": old.symbol,
            "side": old.side,
            "type": old.type,
            "time_in_force": params.get("time_in_force") or old.time_in_force,
            "qty": params.get("qty") if params.get("qty") is not None else dstr(old.qty),
            "limit_price": params.get("limit_price") if params.get("limit_price") is not None else old.limit_price,
            "client_order_id": params.get("client_order_id"),
        }
        if old.type == "stop_limit":
            new_params["stop_price"] = params.get("stop_price") or old.stop_price
        elif params.get("stop_price") is not None:
            new_params["stop_price"] = params["stop_price"]
        old.status = "replaced"  # for the checks of the new order, the old one holds nothing back
        try:
            new = self.place(new_params, source=old.source)
        except AlpacaError:
            old.status = "new" if old.filled_qty == 0 else "partially_filled"
            raise
        now = self.now()
        old.status = "replaced"
        old.replaced_at = old.updated_at = now
        old.replaced_by = new.id
        new.replaces = old.id
        return new

    def list_orders(
        self,
        *,
        status: str = "open",
        limit: int = 50,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: str = "desc",
        symbols: list[str] | None = None,
        side: str | None = None,
    ) -> list[Order]:
        wanted = {s.replace("/", "").upper() for s in symbols} if symbols else None
        out = []
        for o in self.orders.values():
            if (status == "open" and not o.is_open) or (status == "closed" and o.is_open):
                continue
            if after is not None and o.created_at <= after:
                continue
            if until is not None and o.created_at >= until:
                continue
            if wanted is not None and o.symbol.replace("/", "") not in wanted:
                continue
            if side is not None and o.side != side:
                continue
            out.append(o)
        out.sort(key=lambda o: o.created_at, reverse=(direction == "desc"))
        return out[:limit]

    # ---- market ---------------------------------------------------------------------------------

    def set_book(self, symbol: str, bids: Iterable[Iterable[object]], asks: Iterable[Iterable[object]]) -> None:
        """Replace the book of ``symbol`` and match every open order of it against the new book."""
        asset = self.asset(symbol)
        book = Book(
            bids=sorted(levels_of(bids, "bids"), key=lambda lv: lv.price, reverse=True),
            asks=sorted(levels_of(asks, "asks"), key=lambda lv: lv.price),
            ts=self.now(),
        )
        self.books[asset.symbol] = book
        ref = self.reference_price(asset.symbol)
        if ref is not None and asset.symbol not in self.last_price:
            self.last_price[asset.symbol] = ref
        for order in sorted(self.orders.values(), key=lambda o: o.created_at):
            if order.symbol == asset.symbol and order.is_open and order.status != "pending_new":
                self._match(order)

    def _match(self, order: Order) -> None:
        book = self.books.get(order.symbol)
        if book is None:
            book = self.books[order.symbol] = Book(ts=self.now())
        if order.type == "stop_limit" and not order.triggered:
            assert order.stop_price is not None
            if order.side == "buy":
                hit = book.best_ask is not None and book.best_ask >= order.stop_price
            else:
                hit = book.best_bid is not None and book.best_bid <= order.stop_price
            if not hit:
                order.resting = True
                return
            order.triggered = True
            order.resting = False  # a triggered stop acts as a new limit order: taker for what crosses
        maker = order.resting and order.type != "market"
        levels = book.asks if order.side == "buy" else book.bids
        inc = order.asset.min_trade_increment
        while levels and order.is_open:
            lvl = levels[0]
            if order.limit_price is not None and (
                (order.side == "buy" and lvl.price > order.limit_price)
                or (order.side == "sell" and lvl.price < order.limit_price)
            ):
                break
            price = order.limit_price if maker and order.limit_price is not None else lvl.price
            if order.notional is not None:
                q = min(lvl.size, ((order.notional - order.filled_cost) / price).quantize(inc, rounding=ROUND_DOWN))
            else:
                q = min(lvl.size, order.remaining_qty or D0)
            if q <= 0:
                if order.notional is not None and order.filled_qty > 0:  # less than one increment's worth left
                    self._finish(order)
                elif order.notional is not None:
                    self._cancel_rest(order)
                break
            self._fill(order, q, price, maker)
            lvl.size -= q
            if lvl.size <= 0:
                levels.pop(0)
        if order.is_open and order.time_in_force == "ioc":
            self._cancel_rest(order)
        elif order.is_open:
            order.resting = True

    def _cancel_rest(self, order: Order) -> None:
        order.status = "canceled"
        order.canceled_at = order.updated_at = self.now()

    def _finish(self, order: Order) -> None:
        order.status = "filled"
        order.filled_at = order.updated_at = self.now()

    def _fill(self, order: Order, qty: Decimal, price: Decimal, maker: bool) -> None:
        now = self.now()
        asset = order.asset
        cost = qty * price
        rate = self.maker_fee if maker else self.taker_fee
        order.filled_qty += qty
        order.filled_cost += cost
        order.updated_at = now
        if order.qty is not None:
            done = order.filled_qty >= order.qty
        else:  # notional: done when less than one increment's worth is left
            assert order.notional is not None
            done = order.notional - order.filled_cost < price * asset.min_trade_increment
        if done:
            self._finish(order)
        else:
            order.status = "partially_filled"
        if order.side == "buy":
            fee_asset, fee = asset.base, qty * rate
            self._credit(asset.quote, -cost)
            self._credit(asset.base, qty - fee)
            if asset.quote == "USD":
                self.cost_basis[asset.base] = self.cost_basis.get(asset.base, D0) + cost
        else:
            fee_asset, fee = asset.quote, cost * rate
            held_before = self.positions.get(asset.base, D0)
            basis = self.cost_basis.get(asset.base, D0)
            if held_before > 0:
                self.cost_basis[asset.base] = basis - basis * min(qty, held_before) / held_before
            self._credit(asset.base, -qty)
            self._credit(asset.quote, cost - fee)
        self.last_price[asset.symbol] = price
        stamp = now.strftime("%Y%m%d%H%M%S") + f"{now.microsecond // 1000:03d}"
        remaining = order.remaining_qty if order.remaining_qty is not None else D0
        self.activities.append(
            {
                "id": f"{stamp}::{uuid.uuid4()}",
                "activity_type": "FILL",
                "transaction_time": rfc3339(now),
                "type": "fill" if order.status == "filled" else "partial_fill",
                "price": dstr(price),
                "qty": dstr(qty),
                "side": order.side,
                "symbol": asset.symbol,
                "leaves_qty": dstr(remaining if order.status != "filled" else D0),
                "order_id": order.id,
                "cum_qty": dstr(order.filled_qty),
                "order_status": order.status,
                "swap_rate": "1",
            }
        )
        self.activities.append(
            {
                "id": f"{stamp}::{uuid.uuid4()}",
                "activity_type": "CFEE",
                "date": now.strftime("%Y-%m-%d"),
                "net_amount": dstr(-fee) if fee_asset == "USD" else "0",
                "description": "Coin Pair Transaction Fee (USD)"
                if fee_asset == "USD"
                else "Coin Pair Transaction Fee (Non USD)",
                "symbol": f"{fee_asset}USD" if fee_asset != "USD" else asset.symbol.replace("/", ""),
                "qty": dstr(-fee) if fee_asset != "USD" else "0",
                "price": dstr(price),
                "status": "executed",
                # not in Alpaca's published sample: when the fee was charged, for ordering after/until
                "transaction_time": rfc3339(now),
            }
        )
        self._trade_seq += 1
        self.public_trades.setdefault(asset.symbol, []).append(
            {"t": rfc3339(now), "p": price, "s": qty, "tks": "B" if order.side == "buy" else "S", "i": self._trade_seq}
        )

    # ---- account views --------------------------------------------------------------------------

    def position_json(self, coin: str) -> dict[str, Any]:
        qty = self.positions.get(coin, D0)
        price = self.usd_price(coin) or D0
        basis = self.cost_basis.get(coin, D0)
        avg = ((basis / qty) if qty > 0 and basis > 0 else price).quantize(Decimal("1e-9"))
        market_value = qty * price
        held_back = qty - self.available(coin)
        return {
            "asset_id": next(
                (a.id for a in self.assets.values() if a.base == coin), str(uuid.uuid5(uuid.NAMESPACE_DNS, coin))
            ),
            "symbol": f"{coin}USD",
            "exchange": "CRYPTO",
            "asset_class": "crypto",
            "asset_marginable": False,
            "qty": dstr(qty),
            "avg_entry_price": dstr(avg),
            "side": "long",
            "market_value": dstr(market_value),
            "cost_basis": dstr(qty * avg),
            "unrealized_pl": dstr(market_value - qty * avg),
            "unrealized_plpc": dstr(((price - avg) / avg).quantize(Decimal("1e-12"))) if avg else "0",
            "unrealized_intraday_pl": dstr(market_value - qty * avg),
            "unrealized_intraday_plpc": dstr(((price - avg) / avg).quantize(Decimal("1e-12"))) if avg else "0",
            "current_price": dstr(price),
            "lastday_price": dstr(price),
            "change_today": "0",
            "qty_available": dstr(qty - held_back),
        }

    def positions_json(self) -> list[dict[str, Any]]:
        return [self.position_json(c) for c, q in sorted(self.positions.items()) if q != 0]

    def account_json(self) -> dict[str, Any]:
        long_value = sum(((self.usd_price(c) or D0) * q for c, q in self.positions.items() if q > 0), D0)
        equity = self.cash + long_value
        buying_power = self.available("USD")
        return {
            "id": self.account_id,
            "admin_configurations": {},
            "user_configurations": None,
            "account_number": "PA" + self.account_id.replace("-", "")[:10].upper(),
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": dstr(buying_power),
            "regt_buying_power": dstr(buying_power),
            "daytrading_buying_power": "0",
            "effective_buying_power": dstr(buying_power),
            "non_marginable_buying_power": dstr(buying_power),
            "options_buying_power": "0",
            "bod_dtbp": "0",
            "cash": dstr(self.cash),
            "accrued_fees": "0",
            "portfolio_value": dstr(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": rfc3339(self.created_at),
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": dstr(equity),
            "last_equity": dstr(equity),
            "long_market_value": dstr(long_value),
            "short_market_value": "0",
            "position_market_value": dstr(long_value),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "crypto_tier": 1,
        }

    def list_activities(
        self,
        *,
        types: set[str] | None = None,
        after: datetime | None = None,
        until: datetime | None = None,
        direction: str = "desc",
        page_size: int = 100,
        page_token: str | None = None,
    ) -> list[dict[str, Any]]:
        rows = []
        for a in self.activities:
            if types is not None and a["activity_type"] not in types:
                continue
            ts = parse_time(a["transaction_time"], "transaction_time")
            if after is not None and ts <= after:
                continue
            if until is not None and ts > until:
                continue
            rows.append(a)
        if direction == "desc":
            rows.reverse()
        if page_token:
            ids = [a["id"] for a in rows]
            if page_token in ids:
                rows = rows[ids.index(page_token) + 1 :]
        return rows[:page_size]
