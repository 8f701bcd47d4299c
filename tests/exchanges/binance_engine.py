"""The matching engine of the local Binance spot test exchange (see ``tests/exchanges/binance.py``).

Pure state, no I/O: symbols with Binance's filters, one book per symbol that the test sets, orders,
trades and balances, all in Decimal. Requests come in as Binance's own parameters (``dict[str, str]``)
and are validated as Binance does, failing with :class:`BinanceError` (Binance's code, message and
HTTP status). Answers are built in Binance's JSON shapes by ``binance_model`` and ``binance_market``.

Rules kept from Binance spot:
- order ids and trade ids count per symbol; a client order id is unique only among the symbol's open
  orders (a closed order's id can be used again);
- a buy pays its commission in the base asset, a sell in the quote asset; ``locked`` holds what open
  orders reserve (price x quantity of the quote for a buy, the quantity of the base for a sell);
- a market order walks the book, one trade per level; a limit order takes what crosses and rests
  (GTC) or expires (IOC, FOK); a resting order fills as maker, at its own price, when a later book
  crosses it; a stop order waits (``isWorking`` false) until the book's bid (sell) or ask (buy)
  reaches its stop price, then works as a market or limit order.
Simplifications: the book is the market's and never holds this account's orders; a stop-market buy
reserves nothing and expires if the quote balance does not cover it when it triggers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tests.exchanges.binance_model import (
    CLIENT_ID_PATTERN,
    CLIENT_ID_RE,
    DAY_MS,
    EIGHT,
    LIMIT_TYPES,
    ORDER_TYPES,
    STOP_TYPES,
    STP_MODES,
    ZERO,
    BinanceError,
    Book,
    NewOrder,
    Order,
    SymbolSpec,
    Trade,
    dec,
    floor_to,
    illegal_param,
    insufficient_balance,
    mandatory_param,
    param_decimal,
    param_int,
    param_not_required,
    random_client_id,
)


class Engine:
    def __init__(
        self,
        symbols: Iterable[SymbolSpec | str | Mapping[str, Any]],
        balances: Mapping[str, Decimal | str | int | float] | None,
        maker_fee: Decimal,
        taker_fee: Decimal,
        clock: Callable[[], int],
    ) -> None:
        self.specs: dict[str, SymbolSpec] = {}
        for s in symbols:
            spec = SymbolSpec.of(s)
            self.specs[spec.symbol] = spec
        if not self.specs:
            raise ValueError("symbols: at least one symbol is needed")
        self.maker_fee = dec(maker_fee)
        self.taker_fee = dec(taker_fee)
        self.clock = clock
        self.books: dict[str, Book] = {s: Book() for s in self.specs}
        self.balances: dict[str, list[Decimal]] = {}  # asset -> [free, locked]
        for asset, amount in (balances or {}).items():
            self.balances[asset.upper()] = [dec(amount), ZERO]
        self.orders: list[Order] = []
        self.trades: list[Trade] = []
        self.last_price: dict[str, Decimal] = {}
        self._by_id: dict[tuple[str, int], Order] = {}
        self._by_client: dict[tuple[str, str], list[Order]] = {}
        self._open: dict[str, dict[int, Order]] = {s: {} for s in self.specs}  # may hold closed ones: prune
        self._next_order_id: dict[str, int] = dict.fromkeys(self.specs, 1)
        self._next_trade_id: dict[str, int] = dict.fromkeys(self.specs, 1)
        self.update_time = clock()

    # --- lookups -------------------------------------------------------------------------------

    def symbol_id(self, symbol: str) -> str:
        return symbol.replace("/", "").upper()

    def spec(self, params: Mapping[str, str]) -> SymbolSpec:
        raw = params.get("symbol")
        if not raw:
            raise mandatory_param("symbol")
        spec = self.specs.get(raw)
        if spec is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return spec

    def balance(self, asset: str) -> list[Decimal]:
        return self.balances.setdefault(asset, [ZERO, ZERO])

    def _find(self, spec: SymbolSpec, order_id: int | None, client_id: str | None) -> Order | None:
        if order_id is not None:
            order = self._by_id.get((spec.symbol, order_id))
            if order is not None and client_id is not None and order.client_order_id != client_id:
                return None
            return order
        matches = self._by_client.get((spec.symbol, client_id or ""), [])
        open_ = [o for o in matches if o.is_open]
        return (open_ or matches or [None])[-1]

    def _open_of(self, sid: str) -> list[Order]:
        """The symbol's open orders, oldest first."""
        held = self._open[sid]
        for order_id in [i for i, o in held.items() if not o.is_open]:
            del held[order_id]
        return list(held.values())

    # --- books ---------------------------------------------------------------------------------

    def set_book(self, symbol: str, bids: Iterable[Iterable[Any]], asks: Iterable[Iterable[Any]]) -> list[Trade]:
        """Replace the symbol's book, then fill resting orders and trigger stops that it crosses."""
        sid = self.symbol_id(symbol)
        if sid not in self.specs:
            raise KeyError(f"unknown symbol {symbol!r}; known: {sorted(self.specs)}")
        book = self.books[sid]

        def levels(raw: Iterable[Iterable[Any]]) -> list[list[Decimal]]:
            out = []
            for level in raw:
                price, qty = (dec(x) for x in level)
                if price <= 0 or qty < 0:
                    raise ValueError(f"book level {level!r}: price must be > 0 and quantity >= 0")
                if qty > 0:
                    out.append([price, qty])
            return out

        book.bids = sorted(levels(bids), key=lambda lv: -lv[0])
        book.asks = sorted(levels(asks), key=lambda lv: lv[0])
        book.update_id += 1
        return self._evaluate(sid)

    def _evaluate(self, sid: str) -> list[Trade]:
        book = self.books[sid]
        trades: list[Trade] = []
        changed = True
        while changed:
            changed = False
            for order in self._open_of(sid):
                if not order.is_working:
                    if self._stop_reached(order, book):
                        trades += self._trigger(order)
                        changed = True
                elif order.type in LIMIT_TYPES:
                    fills = self._rest_fill(order, book)
                    if fills:
                        trades += fills
                        changed = True
        return trades

    @staticmethod
    def _stop_reached(order: Order, book: Book) -> bool:
        ref = book.best("bid" if order.side == "SELL" else "ask")
        if ref is None:
            return False
        falling = (order.side == "SELL") == order.type.startswith("STOP_LOSS")
        return ref <= order.stop_price if falling else ref >= order.stop_price

    def _trigger(self, order: Order) -> list[Trade]:
        now = self.clock()
        order.working_time = now
        order.update_time = now
        if order.type in ("STOP_LOSS", "TAKE_PROFIT"):
            spec = self.specs[order.symbol]
            if order.side == "BUY":
                cost = sum((p * q for p, q in self._walk(order.symbol, "BUY", None, order.orig_qty, None)), ZERO)
                if cost > self.balance(spec.quote)[0]:
                    self._close(order, "EXPIRED")
                    return []
            fills = self._take(order, None, order.orig_qty, None)
            self._close(order, "FILLED" if order.remaining == 0 else "EXPIRED")
            return fills
        return self._execute_limit(order)

    def _rest_fill(self, order: Order, book: Book) -> list[Trade]:
        levels = book.asks if order.side == "BUY" else book.bids
        fills = []
        while levels and order.remaining > 0:
            price, qty = levels[0]
            crosses = price <= order.price if order.side == "BUY" else price >= order.price
            if not crosses:
                break
            take = min(qty, order.remaining)
            fills.append(self._fill(order, order.price, take, maker=True))
            self._consume(levels, take)
        if fills and order.remaining == 0:
            self._close(order, "FILLED")
        return fills

    @staticmethod
    def _consume(levels: list[list[Decimal]], qty: Decimal) -> None:
        levels[0][1] -= qty
        if levels[0][1] <= 0:
            levels.pop(0)

    def _walk(
        self, sid: str, side: str, limit: Decimal | None, max_qty: Decimal | None, max_quote: Decimal | None
    ) -> list[tuple[Decimal, Decimal]]:
        """The (price, qty) a taker order would get, without changing the book."""
        spec = self.specs[sid]
        levels = self.books[sid].asks if side == "BUY" else self.books[sid].bids
        out: list[tuple[Decimal, Decimal]] = []
        qty_left, quote_left = max_qty, max_quote
        for price, avail in levels:
            if limit is not None and (price > limit if side == "BUY" else price < limit):
                break
            take = avail
            if qty_left is not None:
                take = min(take, qty_left)
            if quote_left is not None:
                take = min(take, floor_to(quote_left / price, spec.step_size))
            if take <= 0:
                break
            out.append((price, take))
            if qty_left is not None:
                qty_left -= take
            if quote_left is not None:
                quote_left -= take * price
        return out

    def _take(
        self, order: Order, limit: Decimal | None, max_qty: Decimal | None, max_quote: Decimal | None
    ) -> list[Trade]:
        fills = []
        levels = self.books[order.symbol].asks if order.side == "BUY" else self.books[order.symbol].bids
        for price, qty in self._walk(order.symbol, order.side, limit, max_qty, max_quote):
            fills.append(self._fill(order, price, qty, maker=False))
            self._consume(levels, qty)
        return fills

    def _fill(self, order: Order, price: Decimal, qty: Decimal, *, maker: bool) -> Trade:
        spec = self.specs[order.symbol]
        rate = self.maker_fee if maker else self.taker_fee
        quote_qty = price * qty
        base, quote = self.balance(spec.base), self.balance(spec.quote)
        if order.side == "BUY":
            release = min(order.reserved, order.price * qty) if order.reserved else ZERO
            commission, asset = (qty * rate).quantize(EIGHT, ROUND_HALF_UP), spec.base
            quote[1] -= release
            quote[0] += release - quote_qty
            base[0] += qty - commission
        else:
            release = min(order.reserved, qty) if order.reserved else ZERO
            commission, asset = (quote_qty * rate).quantize(EIGHT, ROUND_HALF_UP), spec.quote
            base[1] -= release
            base[0] += release - qty
            quote[0] += quote_qty - commission
        order.reserved -= release
        now = self.clock()
        order.executed_qty += qty
        order.cum_quote += quote_qty
        order.update_time = now
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        trade = Trade(
            symbol=order.symbol,
            trade_id=self._next_trade_id[order.symbol],
            order_id=order.order_id,
            price=price,
            qty=qty,
            quote_qty=quote_qty,
            commission=commission,
            commission_asset=asset,
            time=now,
            is_buyer=order.side == "BUY",
            is_maker=maker,
        )
        self._next_trade_id[order.symbol] += 1
        self.trades.append(trade)
        self.last_price[order.symbol] = price
        self.update_time = now
        return trade

    def _close(self, order: Order, status: str) -> None:
        """End an order (FILLED, CANCELED, EXPIRED) and give back what it still reserves."""
        if order.reserved:
            spec = self.specs[order.symbol]
            bal = self.balance(order.reserve_asset or (spec.quote if order.side == "BUY" else spec.base))
            bal[1] -= order.reserved
            bal[0] += order.reserved
            order.reserved = ZERO
        order.status = status
        order.update_time = self.clock()
        self.update_time = order.update_time

    def _execute_limit(self, order: Order) -> list[Trade]:
        """A working limit order: take what crosses, then rest (GTC) or expire (IOC, FOK)."""
        if order.time_in_force == "FOK":
            can = sum((q for _, q in self._walk(order.symbol, order.side, order.price, order.remaining, None)), ZERO)
            if can < order.remaining:
                self._close(order, "EXPIRED")
                return []
        fills = self._take(order, order.price, order.remaining, None)
        if order.remaining == 0:
            self._close(order, "FILLED")
        elif order.time_in_force in ("IOC", "FOK"):
            self._close(order, "EXPIRED")
        return fills

    # --- requests ------------------------------------------------------------------------------

    def parse_new_order(self, params: Mapping[str, str]) -> NewOrder:
        spec = self.spec(params)
        side = params.get("side") or ""
        if not side:
            raise mandatory_param("side")
        if side not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        otype = params.get("type") or ""
        if not otype:
            raise mandatory_param("type")
        if otype not in ORDER_TYPES:
            raise BinanceError(-1116, "Invalid orderType.")
        for unsupported in ("trailingDelta", "icebergQty", "pegPriceType", "pegOffsetValue", "pegOffsetType"):
            if unsupported in params:
                raise BinanceError(-1014, "Unsupported order combination.")
        qty = param_decimal(params, "quantity")
        quote_qty = param_decimal(params, "quoteOrderQty")
        price = param_decimal(params, "price")
        stop = param_decimal(params, "stopPrice")
        tif = params.get("timeInForce")
        needs_price = otype in LIMIT_TYPES
        needs_tif = otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
        needs_stop = otype in STOP_TYPES
        if otype == "MARKET":
            if qty is None and quote_qty is None:
                raise BinanceError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
            if qty is not None and quote_qty is not None:
                raise param_not_required("quoteOrderQty")
        else:
            if quote_qty is not None:
                raise param_not_required("quoteOrderQty")
            if qty is None:
                raise mandatory_param("quantity")
        for name, value, needed in (("price", price, needs_price), ("stopPrice", stop, needs_stop)):
            if needed and value is None:
                raise mandatory_param(name)
            if not needed and value is not None:
                raise param_not_required(name)
        if needs_tif and not tif:
            raise mandatory_param("timeInForce")
        if not needs_tif and tif is not None:
            raise param_not_required("timeInForce")
        if tif is not None and tif not in ("GTC", "IOC", "FOK"):
            raise BinanceError(-1115, "Invalid timeInForce.")
        client_id = params.get("newClientOrderId")
        if client_id is None:
            client_id = random_client_id()
        elif not CLIENT_ID_RE.match(client_id):
            raise illegal_param("newClientOrderId", CLIENT_ID_PATTERN)
        resp_type = params.get("newOrderRespType") or ("FULL" if otype in ("MARKET", "LIMIT") else "ACK")
        if resp_type not in ("ACK", "RESULT", "FULL"):
            raise illegal_param("newOrderRespType", "ACK, RESULT, FULL")
        stp = params.get("selfTradePreventionMode") or "EXPIRE_MAKER"
        if stp not in STP_MODES:
            raise illegal_param("selfTradePreventionMode", ", ".join(STP_MODES))
        req = NewOrder(
            spec=spec,
            side=side,
            type=otype,
            time_in_force=tif or "GTC",
            quantity=qty,
            quote_qty=quote_qty,
            price=price,
            stop_price=stop,
            client_order_id=client_id,
            resp_type=resp_type,
            stp_mode=stp,
            strategy_id=param_int(params, "strategyId"),
            strategy_type=param_int(params, "strategyType"),
        )
        self._check_filters(req)
        return req

    def _check_filters(self, req: NewOrder) -> None:
        spec = req.spec
        for value in (req.price, req.stop_price):
            if value is None:
                continue
            if value <= 0:
                raise BinanceError(-1013, "Invalid price.")
            if value < spec.min_price or value > spec.max_price or (value - spec.min_price) % spec.tick_size:
                raise BinanceError(-1013, "Filter failure: PRICE_FILTER")
        if req.quantity is not None:
            q = req.quantity
            if q <= 0:
                raise BinanceError(-1013, "Invalid quantity.")
            if q < spec.min_qty or q > spec.max_qty or (q - spec.min_qty) % spec.step_size:
                raise BinanceError(-1013, "Filter failure: LOT_SIZE")
        if req.quote_qty is not None and req.quote_qty <= 0:
            raise BinanceError(-1013, "Invalid quoteOrderQty.")
        notional: Decimal | None = None
        if req.quote_qty is not None:
            notional = req.quote_qty
        elif req.price is not None and req.quantity is not None:
            notional = req.price * req.quantity
        elif req.stop_price is not None and req.quantity is not None:
            notional = req.stop_price * req.quantity
        elif req.quantity is not None:  # market by quantity: the price it would get now
            ref = self.books[spec.symbol].best("ask" if req.side == "BUY" else "bid")
            notional = ref * req.quantity if ref is not None else None
        if notional is not None and notional < spec.min_notional:
            raise BinanceError(-1013, "Filter failure: NOTIONAL")
        if notional is not None and req.type != "MARKET" and notional > spec.max_notional:
            raise BinanceError(-1013, "Filter failure: NOTIONAL")

    def new_order(self, params: Mapping[str, str], *, external: bool = False) -> tuple[Order, list[Trade], str]:
        """POST /api/v3/order: validate, reserve, match. Returns the order, its fills, the answer type."""
        return self.place(self.parse_new_order(params), external=external)

    def place(self, req: NewOrder, *, external: bool = False) -> tuple[Order, list[Trade], str]:
        spec, sid = req.spec, req.spec.symbol
        book = self.books[sid]
        if any(o.is_open for o in self._by_client.get((sid, req.client_order_id), [])):
            raise BinanceError(-2010, "Duplicate order sent.")
        if req.type == "LIMIT_MAKER":
            best = book.best("ask" if req.side == "BUY" else "bid")
            assert req.price is not None
            if best is not None and (req.price >= best if req.side == "BUY" else req.price <= best):
                raise BinanceError(-2010, "Order would immediately match and take.")
        now = self.clock()
        order = Order(
            symbol=sid,
            order_id=self._next_order_id[sid],
            client_order_id=req.client_order_id,
            side=req.side,
            type=req.type,
            time_in_force=req.time_in_force,
            price=req.price or ZERO,
            orig_qty=req.quantity or ZERO,
            orig_quote_qty=req.quote_qty or ZERO,
            stop_price=req.stop_price or ZERO,
            time=now,
            update_time=now,
            working_time=now,
            stp_mode=req.stp_mode,
            strategy_id=req.strategy_id,
            strategy_type=req.strategy_type,
            external=external,
        )
        if req.type in STOP_TYPES:
            order.working_time = -1
            if self._stop_reached(order, book):
                raise BinanceError(-2010, "Stop price would trigger immediately.")
        base, quote = self.balance(spec.base), self.balance(spec.quote)
        # what the order reserves (locked) or, for a market order, what it needs now
        if req.type == "MARKET":
            walk = self._walk(sid, req.side, None, req.quantity, req.quote_qty)
            if req.side == "BUY" and (req.quote_qty or sum((p * q for p, q in walk), ZERO)) > quote[0]:
                raise insufficient_balance()
            if req.side == "SELL" and (req.quantity or sum((q for _, q in walk), ZERO)) > base[0]:
                raise insufficient_balance()
        elif req.side == "SELL":
            assert req.quantity is not None
            if req.quantity > base[0]:
                raise insufficient_balance()
            order.reserved, order.reserve_asset = req.quantity, spec.base
        elif req.type not in ("STOP_LOSS", "TAKE_PROFIT"):
            assert req.quantity is not None and req.price is not None
            cost = req.quantity * req.price
            if cost > quote[0]:
                raise insufficient_balance()
            order.reserved, order.reserve_asset = cost, spec.quote
        if order.reserved:
            bal = self.balance(order.reserve_asset)
            bal[0] -= order.reserved
            bal[1] += order.reserved
        self._next_order_id[sid] += 1
        self.orders.append(order)
        self._by_id[(sid, order.order_id)] = order
        self._by_client.setdefault((sid, order.client_order_id), []).append(order)
        self._open[sid][order.order_id] = order
        self.update_time = now
        fills: list[Trade] = []
        if req.type == "MARKET":
            for price, qty in self._walk(sid, req.side, None, req.quantity, req.quote_qty):
                fills.append(self._fill_market(order, price, qty))
            if req.quote_qty is not None:  # filled when the quote is spent or the book still had more
                order.orig_qty = order.executed_qty
                levels = self.books[sid].asks if req.side == "BUY" else self.books[sid].bids
                done = bool(fills) and (order.cum_quote == req.quote_qty or bool(levels))
            else:
                done = order.executed_qty == order.orig_qty
            self._close(order, "FILLED" if done else "EXPIRED")
        elif req.type in STOP_TYPES:
            pass  # waits for the book to reach its stop price
        else:
            fills = self._execute_limit(order)
        return order, fills, req.resp_type

    def _fill_market(self, order: Order, price: Decimal, qty: Decimal) -> Trade:
        levels = self.books[order.symbol].asks if order.side == "BUY" else self.books[order.symbol].bids
        trade = self._fill(order, price, qty, maker=False)
        self._consume(levels, qty)
        return trade

    def query_order(self, params: Mapping[str, str]) -> Order:
        spec = self.spec(params)
        order_id, client_id = param_int(params, "orderId"), params.get("origClientOrderId")
        if order_id is None and client_id is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        order = self._find(spec, order_id, client_id)
        if order is None:
            raise BinanceError(-2013, "Order does not exist.")
        return order

    def cancel_order(
        self,
        spec: SymbolSpec,
        order_id: int | None,
        client_id: str | None,
        restrictions: str | None = None,
    ) -> Order:
        if order_id is None and client_id is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        order = self._find(spec, order_id, client_id)
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        if restrictions is not None:
            if restrictions not in ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
                raise illegal_param("cancelRestrictions", "ONLY_NEW, ONLY_PARTIALLY_FILLED")
            if order.status != restrictions.removeprefix("ONLY_"):
                raise BinanceError(-2011, "Order was not canceled due to cancel restrictions.")
        self._close(order, "CANCELED")
        return order

    def cancel_replace(self, params: Mapping[str, str]) -> tuple[Order, Order, list[Trade], str, str]:
        """POST /api/v3/order/cancelReplace: cancel, then place. Failures carry Binance's ``data``."""
        mode = params.get("cancelReplaceMode")
        if not mode:
            raise mandatory_param("cancelReplaceMode")
        if mode not in ("STOP_ON_FAILURE", "ALLOW_FAILURE"):
            raise illegal_param("cancelReplaceMode", "STOP_ON_FAILURE, ALLOW_FAILURE")
        cancel_id = param_int(params, "cancelOrderId")
        cancel_client = params.get("cancelOrigClientOrderId")
        if cancel_id is None and cancel_client is None:
            raise BinanceError(
                -1102, "Param 'cancelOrigClientOrderId' or 'cancelOrderId' must be sent, but both were empty/null!"
            )
        cancel_new_id = params.get("cancelNewClientOrderId") or random_client_id()
        req = self.parse_new_order(params)  # filters are checked before anything happens
        now = self.clock()
        try:
            cancelled = self.cancel_order(req.spec, cancel_id, cancel_client, params.get("cancelRestrictions"))
        except BinanceError as e:
            if mode == "STOP_ON_FAILURE":
                raise BinanceError(
                    -2022,
                    "Order cancel-replace failed.",
                    data={
                        "cancelResult": "FAILURE",
                        "newOrderResult": "NOT_ATTEMPTED",
                        "cancelResponse": e.body(),
                        "newOrderResponse": None,
                    },
                ) from None
            try:
                order, fills, resp = self.place(req)
            except BinanceError as e2:
                raise BinanceError(
                    -2022,
                    "Order cancel-replace failed.",
                    data={
                        "cancelResult": "FAILURE",
                        "newOrderResult": "FAILURE",
                        "cancelResponse": e.body(),
                        "newOrderResponse": e2.body(),
                    },
                ) from None
            raise BinanceError(
                -2021,
                "Order cancel-replace partially failed.",
                status=409,
                data={
                    "cancelResult": "FAILURE",
                    "newOrderResult": "SUCCESS",
                    "cancelResponse": e.body(),
                    "newOrderResponse": order.result_json(now, resp, fills),
                },
            ) from None
        try:
            order, fills, resp = self.place(req)
        except BinanceError as e:
            raise BinanceError(
                -2021,
                "Order cancel-replace partially failed.",
                status=409,
                data={
                    "cancelResult": "SUCCESS",
                    "newOrderResult": "FAILURE",
                    "cancelResponse": cancelled.cancel_json(now, cancel_new_id),
                    "newOrderResponse": e.body(),
                },
            ) from None
        return cancelled, order, fills, resp, cancel_new_id

    def cancel_all(self, spec: SymbolSpec) -> list[Order]:
        open_ = self._open_of(spec.symbol)
        if not open_:
            raise BinanceError(-2011, "Unknown order sent.")
        for order in open_:
            self._close(order, "CANCELED")
        return open_

    def open_orders(self, symbol: str | None) -> list[Order]:
        return [o for sid in ([symbol] if symbol else self.specs) for o in self._open_of(sid)]

    @staticmethod
    def _window(params: Mapping[str, str]) -> tuple[int | None, int | None]:
        start, end = param_int(params, "startTime"), param_int(params, "endTime")
        if start is not None and end is not None and end - start > DAY_MS:
            raise BinanceError(-1127, "More than 24 hours between startTime and endTime.")
        if start is not None and end is None:
            end = start + DAY_MS
        elif end is not None and start is None:
            start = end - DAY_MS
        return start, end

    @staticmethod
    def _limit(params: Mapping[str, str]) -> int:
        limit = param_int(params, "limit")
        if limit is None:
            return 500
        if limit < 1 or limit > 1000:
            raise BinanceError(-1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'.")
        return limit

    def all_orders(self, params: Mapping[str, str]) -> list[Order]:
        spec = self.spec(params)
        order_id = param_int(params, "orderId")
        start, end = self._window(params)
        limit = self._limit(params)
        rows = [o for o in self.orders if o.symbol == spec.symbol]
        if start is not None and end is not None:
            rows = [o for o in rows if start <= o.time <= end]
        if order_id is not None:
            return [o for o in rows if o.order_id >= order_id][:limit]
        return rows[:limit] if param_int(params, "startTime") is not None else rows[-limit:]

    def my_trades(self, params: Mapping[str, str]) -> list[Trade]:
        spec = self.spec(params)
        order_id, from_id = param_int(params, "orderId"), param_int(params, "fromId")
        timed = "startTime" in params or "endTime" in params
        if timed and (order_id is not None or from_id is not None):
            raise BinanceError(-1128, "Combination of optional parameters invalid.")
        start, end = self._window(params)
        limit = self._limit(params)
        rows = [t for t in self.trades if t.symbol == spec.symbol]
        if order_id is not None:
            rows = [t for t in rows if t.order_id == order_id]
        if from_id is not None:
            return [t for t in rows if t.trade_id >= from_id][:limit]
        if start is not None and end is not None:
            rows = [t for t in rows if start <= t.time <= end]
        return rows[:limit] if "startTime" in params else rows[-limit:]
