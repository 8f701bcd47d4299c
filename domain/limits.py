"""Portfolio limits of the risk-gate: pure checks of one order against the books as they stand, plus
what in-flight orders already reserved. Each denial has a code, the field and a sentence naming the
numbers (``MAX_POSITION_SIZE: resulting position 0.31 of equity > 0.25``).

Exposure of a pair = |position + working orders of the pair + this order| x mark, where a working buy adds
and a working sell subtracts what is left of it (orders not yet booked included). Equity = cash + positions
at marks (domain.valuation.equity). Every limit passes exactly at the limit and denies one step over.

Currencies. Equity is in BASE_CURRENCY; a pair's amounts (its notional, its exposure) are in its quote
currency. Every amount a limit compares with equity or with MAX_ORDER_NOTIONAL is first converted into
BASE_CURRENCY at ``Exposure.rates`` (the books' conversion: domain.valuation.Converter, one rate per
currency per decision). A pair quoted in BASE_CURRENCY has the rate 1 and is computed exactly as without
conversion. An amount that a limit needs but that cannot be converted now (no rate for the quote currency)
is never compared as if it were in BASE_CURRENCY: the order is denied ``NO_CONVERSION``, naming the pair and
the currency.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from domain.risk import Denial, notional_denial, rule_denial
from schemas.messages import MarketRules, OrderRequest
from schemas.subjects import pair_currencies

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)

ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"


@dataclass(frozen=True, slots=True)
class Limits:
    max_position_fraction: Decimal  # MAX_POSITION_SIZE: per pair, of equity
    max_daily_loss: Decimal  # MAX_DAILY_LOSS: of start-of-day equity
    max_order_notional: Decimal | None = None
    max_total_exposure: Decimal | None = None  # of equity, all pairs
    price_band_pct: Decimal | None = None  # limit price at most this % away from the mid
    max_drawdown: Decimal | None = None  # of peak equity
    allow_short: bool = False  # sell base not held (margin); on spot a sell needs the base
    groups: tuple[tuple[str, frozenset[str], Decimal], ...] = ()  # (name, pairs, max exposure of equity)
    hours: tuple[int, int] | None = None  # opening orders only between these minutes of the day ...
    timezone: str = "UTC"  # ... in this time zone
    # MIN_ACCOUNT_BALANCE (the spec's minAccountBalance), in BASE_CURRENCY: no opening order takes the equity
    # below it (see equity_after); None: no floor
    min_account_balance: Decimal | None = None


@dataclass(slots=True)
class Exposure:
    """What the risk-gate knows when it decides."""

    equity: Decimal
    day_start_equity: Decimal
    peak_equity: Decimal
    available: dict[str, Decimal]  # currency -> available, after working orders and in-flight approvals
    positions: dict[str, Decimal] = field(default_factory=dict)  # pair -> signed quantity
    working: dict[str, Decimal] = field(default_factory=dict)  # pair -> signed quantity left in working orders
    marks: dict[str, Decimal] = field(default_factory=dict)
    # pair -> units of BASE_CURRENCY per unit of the pair's quote currency (None or absent: cannot be converted
    # now); the risk-gate always sets it (domain.valuation.quote_rates). None for the whole map: every pair is
    # quoted in BASE_CURRENCY.
    rates: dict[str, Decimal | None] | None = None
    base_currency: str = "USDT"  # BASE_CURRENCY, for the reasons
    # several venues: the positions at the venue the order goes to (an order "reduces" only if it reduces the
    # position there too: a sell on a venue holding nothing opens a short there, whatever the others hold)
    venue_positions: dict[str, Decimal] | None = None


@dataclass(frozen=True, slots=True)
class Intent:
    pair: str
    side: str
    quantity: Decimal
    price: Decimal  # the expected price (limit price, or the book's for a market order)
    limit_price: Decimal | None = None
    quote: str = ""
    base: str = ""
    fee_rate: Decimal = ZERO  # the venue's taker fee, of the notional (an estimate of what the order pays)
    # the trigger of an order that waits for one (stop_loss, stop_limit, take_profit: its stopPrice); None: it
    # trades now (market, limit)
    trigger: Decimal | None = None


def _up(x: Decimal) -> Decimal:
    """Rounded up for a reason's text, so a value over a limit never reads as equal to it."""
    return x.quantize(Decimal("0.0001"), rounding=ROUND_CEILING)


def _down(x: Decimal) -> Decimal:
    """Rounded down for a reason's text, so a value under a limit never reads as equal to it."""
    return x.quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)


def reduces(position: Decimal, working: Decimal, side: str, quantity: Decimal) -> bool:
    """Does the order only bring the pair's exposure closer to zero?"""
    after = position + working + (quantity if side == "buy" else -quantity)
    before = position + working
    return abs(after) <= abs(before) and (after == 0 or (after > 0) == (before > 0))


def daily_loss(x: Exposure) -> Decimal:
    """Loss since the day began, as a fraction of start-of-day equity (0 when in profit)."""
    if x.day_start_equity <= ZERO:
        return ZERO
    return max(ZERO, (x.day_start_equity - x.equity) / x.day_start_equity)


def rate_of(x: Exposure, pair: str) -> Decimal | None:
    """Units of BASE_CURRENCY per unit of ``pair``'s quote currency; None when it cannot be converted now."""
    return ONE if x.rates is None else x.rates.get(pair)


def in_quote(x: Exposure, pair: str, amount: Decimal) -> Decimal | None:
    """``amount`` (in BASE_CURRENCY, e.g. equity) in ``pair``'s quote currency; None when it cannot be converted."""
    rate = rate_of(x, pair)
    if rate is None or rate <= ZERO:
        return None
    return amount if rate == ONE else amount / rate


def no_conversion(x: Exposure, pair: str, needed_by: str, field: str | None = None) -> Denial:
    quote = pair_currencies(pair)[1] or pair
    return Denial(
        "NO_CONVERSION",
        field,
        f"NO_CONVERSION: cannot value {pair} in {x.base_currency}: no rate for {quote} (needed by {needed_by})",
    )


def _exposure(x: Exposure, pairs: set[str] | frozenset[str], besides: str) -> tuple[Decimal, str | None]:
    """|position + working| x mark, in BASE_CURRENCY, summed over ``pairs`` but for ``besides`` (the order's own
    pair); and the first pair with something open whose quote currency cannot be converted (left out of the sum)."""
    rates = x.rates
    total = ZERO
    missing: str | None = None
    for p in pairs:
        if p == besides:
            continue
        value = abs(x.positions.get(p, ZERO) + x.working.get(p, ZERO)) * x.marks.get(p, ZERO)
        if rates is not None:
            rate = rates.get(p)
            if rate is None:
                if value and missing is None:
                    missing = p
                continue
            if rate != ONE:
                value *= rate
        total += value
    return total, missing


def equity_after(i: Intent, x: Exposure, mark: Decimal, rate: Decimal) -> Decimal:
    """The equity (BASE_CURRENCY) right after the order fills at its expected price, valued as the books value it:
    a buy pays ``i.price`` for what is worth ``mark``, a sell gets ``i.price`` for what was worth ``mark``; the
    difference when it is a loss (crossing the spread, walking the book), and the fee estimate, come off the
    equity. A price better than the mark is never counted as a gain (a limit far from the market does not make
    the account richer). ``rate``: BASE_CURRENCY per unit of the pair's quote currency.

    An order with a trigger (``i.trigger``: a stop, a take-profit) fills when the market reaches the trigger,
    so the distance from the mark to the trigger is not lost when it fills: it costs its fee, and a stop-limit
    also what its limit lets it pay beyond the trigger (a buy: limit - trigger; a sell: trigger - limit)."""
    if i.trigger is not None:
        if i.limit_price is None:
            edge = ZERO
        else:
            edge = i.limit_price - i.trigger if i.side == "buy" else i.trigger - i.limit_price
    else:
        edge = i.price - mark if i.side == "buy" else mark - i.price
    cost = i.quantity * max(edge, ZERO) + i.quantity * i.price * i.fee_rate  # in the quote currency
    return x.equity - (cost if rate == ONE else cost * rate)


def min_balance_denial(i: Intent, x: Exposure, floor: Decimal, mark: Decimal, rate: Decimal) -> Denial | None:
    """MIN_ACCOUNT_BALANCE: an opening order is refused when the equity right after it would be below ``floor``
    (exactly at it passes). Already below: nothing opens (no field at fault); else the order's size is."""
    after = equity_after(i, x, mark, rate)
    if after >= floor:
        return None
    cur = x.base_currency
    if x.equity < floor:
        return Denial(
            "MIN_ACCOUNT_BALANCE", None,
            f"MIN_ACCOUNT_BALANCE: equity {_down(x.equity)} {cur} is below the minimum {floor} {cur}: only orders "
            "that reduce a position pass",
        )  # fmt: skip
    return Denial(
        "MIN_ACCOUNT_BALANCE", "quantity",
        f"MIN_ACCOUNT_BALANCE: equity would be {_down(after)} {cur} after this order (its cost against the mark and "
        f"its fee) < the minimum {floor} {cur}",
    )  # fmt: skip


def within_hours(now_ms: int, hours: tuple[int, int], timezone: str) -> bool:
    """Is ``now_ms`` inside the trading hours (minutes of the day in ``timezone``; may span midnight)?"""
    local = dt.datetime.fromtimestamp(now_ms / 1000, zoneinfo.ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    start, end = hours
    return start <= minute < end if start < end else (minute >= start or minute < end)


def pays(i: Intent, available: Mapping[str, Decimal], allow_short: bool, venue: str | None = None) -> Denial | None:
    """Every order must be paid for: a buy with quote, a sell with base it holds (unless shorting is allowed),
    out of ``available`` (one venue's, after its working orders and the reservations held against it: a
    balance on another venue never pays). ``venue``: named in the reason (None: the only venue)."""
    if i.side == "buy":
        need, have, cur = i.quantity * i.price, available.get(i.quote, ZERO), i.quote
    else:
        need, have, cur = i.quantity, available.get(i.base, ZERO), i.base
    if need > have and (i.side == "buy" or not allow_short):
        where = f" on {venue}" if venue else ""
        return Denial(
            "INSUFFICIENT_BALANCE",
            "quantity",
            f"INSUFFICIENT_BALANCE: needs {need} {cur}, {have} available{where} after working orders",
        )
    return None


def is_reducing(i: Intent, x: Exposure) -> bool:
    """Does the order bring its pair's exposure closer to zero (the position and the working orders, every venue's;
    several venues: also the position at the venue it goes to, ``x.venue_positions``)? Such an order passes
    REDUCING and TRADING_HOURS."""
    reducing = reduces(x.positions.get(i.pair, ZERO), x.working.get(i.pair, ZERO), i.side, i.quantity)
    if reducing and x.venue_positions is not None:
        reducing = reduces(x.venue_positions.get(i.pair, ZERO), ZERO, i.side, i.quantity)
    return reducing


def check_limits(
    i: Intent,
    x: Exposure,
    lim: Limits,
    state: str,
    mid: Decimal | None,
    now_ms: int | None = None,
    venue: str | None = None,
) -> Denial | None:
    """The portfolio limits. ``x.available`` is the balance of the venue the order goes to (``venue``, named
    in a balance denial; None: the only venue); positions, working orders, equity, daily loss and drawdown
    are every venue's together."""
    pos = x.positions.get(i.pair, ZERO)
    work = x.working.get(i.pair, ZERO)
    reducing = is_reducing(i, x)
    if state == HALTED:
        return Denial("TRADING_HALTED", None, "trading is halted (emergency stop or daily loss): resume to trade")
    if state == REDUCING and not reducing:
        return Denial("REDUCING_ONLY", None, "trading state is REDUCING: only orders that reduce exposure pass")
    notional = i.quantity * i.price  # in the quote currency (what a buy spends)
    rate = rate_of(x, i.pair)
    if lim.max_order_notional is not None and (rate is not None or not reducing):
        if rate is None:  # (an order that reduces the position passes without a rate: exits are never blocked)
            return no_conversion(x, i.pair, "MAX_ORDER_NOTIONAL", "pair")
        value = notional if rate == ONE else notional * rate  # in BASE_CURRENCY, as the limit
        if value > lim.max_order_notional:
            shown = f"{notional}" if rate == ONE else f"{_up(value)} {x.base_currency} ({notional} {i.quote} at {rate})"
            return Denial(
                "MAX_ORDER_NOTIONAL",
                "quantity",
                f"MAX_ORDER_NOTIONAL: order notional {shown} > {lim.max_order_notional}",
            )
    if lim.price_band_pct is not None and i.limit_price is not None and mid is not None and mid > ZERO:
        off = abs(i.limit_price - mid) / mid * HUNDRED
        if off > lim.price_band_pct:
            return Denial(
                "PRICE_BAND",
                "price",
                f"PRICE_BAND: price {i.limit_price} is {_up(off)}% from the mid {mid} > {lim.price_band_pct}%",
            )
    if (short := pays(i, x.available, lim.allow_short, venue)) is not None:
        return short
    if not reducing:
        if lim.hours is not None and now_ms is not None and not within_hours(now_ms, lim.hours, lim.timezone):
            h = lim.hours
            span = f"{h[0] // 60:02d}:{h[0] % 60:02d}-{h[1] // 60:02d}:{h[1] % 60:02d} {lim.timezone}"
            return Denial("TRADING_HOURS", None, f"TRADING_HOURS: outside {span}; only reducing orders pass")
        if x.equity <= ZERO:
            return Denial("NO_EQUITY", None, "equity is not positive")
        if rate is None:
            return no_conversion(x, i.pair, "MAX_POSITION_SIZE", "pair")
        mark = x.marks.get(i.pair, i.price)
        if lim.min_account_balance is not None:
            low = min_balance_denial(i, x, lim.min_account_balance, mark, rate)
            if low is not None:
                return low
        after = pos + work + (i.quantity if i.side == "buy" else -i.quantity)
        value = abs(after) * mark  # the pair's exposure after the order, in BASE_CURRENCY
        if rate != ONE:
            value *= rate
        frac = value / x.equity
        if frac > lim.max_position_fraction:
            return Denial(
                "MAX_POSITION_SIZE",
                "quantity",
                f"MAX_POSITION_SIZE: resulting position {_up(frac)} of equity > {lim.max_position_fraction}",
            )
        if lim.max_total_exposure is not None:
            others, missing = _exposure(x, set(x.positions) | set(x.working), i.pair)
            if missing is not None:
                return no_conversion(x, missing, "MAX_TOTAL_EXPOSURE")
            total = others + value
            if total / x.equity > lim.max_total_exposure:
                return Denial(
                    "MAX_TOTAL_EXPOSURE",
                    "quantity",
                    f"MAX_TOTAL_EXPOSURE: total exposure {_up(total / x.equity)} of equity > {lim.max_total_exposure}",
                )
        for name, pairs, cap in lim.groups:
            if i.pair not in pairs:
                continue
            others, missing = _exposure(x, pairs, i.pair)
            if missing is not None:
                return no_conversion(x, missing, f"CORRELATION_LIMIT {name}")
            group = others + value
            if group / x.equity > cap:
                return Denial(
                    "CORRELATION_LIMIT",
                    "quantity",
                    f"CORRELATION_LIMIT: group {name} exposure {_up(group / x.equity)} of equity > {cap}",
                )
        loss = daily_loss(x)
        if loss >= lim.max_daily_loss:
            return Denial(
                "MAX_DAILY_LOSS",
                None,
                f"MAX_DAILY_LOSS: down {loss:.4f} of start-of-day equity >= {lim.max_daily_loss}",
            )
        if lim.max_drawdown is not None and x.peak_equity > ZERO:
            dd = (x.peak_equity - x.equity) / x.peak_equity
            if dd >= lim.max_drawdown:
                return Denial("MAX_DRAWDOWN", None, f"MAX_DRAWDOWN: drawdown {dd:.4f} >= {lim.max_drawdown}")
    return None


def breaches(x: Exposure, lim: Limits) -> dict[str, str]:
    """Exposure limits the books are over now (prices move after an order passed): key -> sentence.
    Keys: ``total``, ``pair:<PAIR>``, ``group:<name>``. A pair whose quote currency cannot be converted now
    is left out (it cannot be valued; GET /api/risk/metrics lists it)."""
    out: dict[str, str] = {}
    if x.equity <= ZERO:
        return out
    pairs = set(x.positions) | set(x.working)
    for p in sorted(pairs):
        frac = _exposure(x, {p}, "")[0] / x.equity
        if frac > lim.max_position_fraction:
            limit = lim.max_position_fraction
            out[f"pair:{p}"] = f"{p} exposure {_up(frac)} of equity is over MAX_POSITION_SIZE {limit}"
    if lim.max_total_exposure is not None:
        frac = _exposure(x, pairs, "")[0] / x.equity
        if frac > lim.max_total_exposure:
            out["total"] = f"total exposure {_up(frac)} of equity is over MAX_TOTAL_EXPOSURE {lim.max_total_exposure}"
    for name, members, cap in lim.groups:
        frac = _exposure(x, members, "")[0] / x.equity
        if frac > cap:
            out[f"group:{name}"] = f"group {name} exposure {_up(frac)} of equity is over its limit {cap}"
    return out


def headroom(i: Intent, x: Exposure, lim: Limits) -> Decimal:
    """The largest quantity in the intent's direction that MAX_POSITION_SIZE still allows (never < 0; 0 when
    the pair's quote currency cannot be converted into BASE_CURRENCY now)."""
    if x.equity <= ZERO or i.price <= ZERO:
        return ZERO
    room_in_quote = in_quote(x, i.pair, x.equity)
    if room_in_quote is None:
        return ZERO
    mark = x.marks.get(i.pair) or i.price
    now = x.positions.get(i.pair, ZERO) + x.working.get(i.pair, ZERO)
    cap = lim.max_position_fraction * room_in_quote / mark
    room = cap - now if i.side == "buy" else cap + now
    return max(room, ZERO)


# -- several venues: which can take an order ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VenueState:
    """One configured venue as the balance check of an order sees it."""

    name: str
    pairs: tuple[str, ...]  # what it lists (VenueConfig.pairs)
    rules: MarketRules | None  # its rules for the order's pair (None: not known, the venue checks them)
    available: Mapping[str, Decimal]  # after its working orders and the reservations held against it


def venue_denial(req: OrderRequest, i: Intent | None, v: VenueState, allow_short: bool) -> Denial | None:
    """Why ``v`` cannot take the order (None: it can): it does not list the pair, its market rules refuse the
    order (step, minimum / maximum amount, tick, minimum notional), or its own balance does not pay for it
    (not checked without an ``i``: no price to value it)."""
    if req.pair not in v.pairs:
        return Denial("UNKNOWN_PAIR", "pair", f"{v.name} does not list {req.pair} (its pairs: {', '.join(v.pairs)})")
    if v.rules is not None:
        denial = rule_denial(req, v.rules)
        if denial is None and i is not None:
            denial = notional_denial(req, v.rules, i.quantity * i.price)
        if denial is not None:
            return denial
    return None if i is None else pays(i, v.available, allow_short, v.name)


def candidates(
    req: OrderRequest, i: Intent | None, venues: Sequence[VenueState], allow_short: bool
) -> tuple[list[str], list[tuple[str, Denial]]]:
    """The venues (in the order given: priority) that can take an order naming none, and why each other
    one cannot."""
    able: list[str] = []
    unable: list[tuple[str, Denial]] = []
    for v in venues:
        denial = venue_denial(req, i, v, allow_short)
        if denial is None:
            able.append(v.name)
        else:
            unable.append((v.name, denial))
    return able, unable


def no_venue(unable: Sequence[tuple[str, Denial]]) -> Denial:
    """The denial of an order no venue could take: the first venue's (priority order) code and field, and a
    detail saying why each could not."""
    first = unable[0][1]
    why = "; ".join(f"{name}: {d.reason}" for name, d in unable)
    return Denial(first.code, first.field, f"no venue could take it ({why})")
