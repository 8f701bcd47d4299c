"""Boundary tests of the pure portfolio limits (domain.limits): every check passes exactly at its limit and
denies one smallest step over, with the right code, field and a reason naming the numbers.

The grid: quantities step 0.001, prices tick 0.01, amounts 0.01. Each scenario starts from a generous
default (no limit binds) and tightens only the limit under test, so a denial can only come from that check.
"""

from __future__ import annotations

import re
from decimal import Decimal as D

import msgspec
import pytest

from domain.limits import ACTIVE, HALTED, REDUCING, Exposure, Intent, Limits, check_limits, daily_loss, reduces
from domain.risk import Denial, same_request
from schemas.messages import OrderRequest

PAIR, BASE, QUOTE = "BTC/USDT", "BTC", "USDT"
ETH, SOL = "ETH/USDT", "SOL/USDT"


def limits(**kw: object) -> Limits:
    args: dict[str, object] = {"max_position_fraction": D("1000"), "max_daily_loss": D("0.5")}
    args.update(kw)
    return Limits(**args)  # type: ignore[arg-type]


def exposure(**kw: object) -> Exposure:
    args: dict[str, object] = {
        "equity": D("10000"),
        "day_start_equity": D("10000"),
        "peak_equity": D("10000"),
        "available": {QUOTE: D("1000000"), BASE: D("1000")},
        "positions": {},
        "working": {},
        "marks": {PAIR: D("100")},
    }
    args.update(kw)
    return Exposure(**args)  # type: ignore[arg-type]


def intent(side: str = "buy", quantity: str = "1", price: str = "100", limit_price: str | None = None) -> Intent:
    return Intent(
        PAIR, side, D(quantity), D(price), None if limit_price is None else D(limit_price), quote=QUOTE, base=BASE
    )


def check(
    i: Intent,
    x: Exposure | None = None,
    lim: Limits | None = None,
    state: str = ACTIVE,
    mid: D | None = None,
) -> Denial | None:
    return check_limits(i, x if x is not None else exposure(), lim if lim is not None else limits(), state, mid)


def denied(d: Denial | None, code: str, field: str | None, *numbers: str) -> None:
    assert d is not None, f"expected {code}, the order passed"
    assert (d.code, d.field) == (code, field), d
    for n in numbers:
        assert n in d.reason, f"{n!r} not in {d.reason!r}"


def test_defaults_pass():
    # the baseline every scenario tightens: nothing binds
    assert check(intent("buy")) is None
    assert check(intent("sell")) is None


# -- MAX_ORDER_NOTIONAL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_order_notional_at_the_limit_passes(side):
    assert check(intent(side, "10", "100"), lim=limits(max_order_notional=D("1000"))) is None


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize(
    ("quantity", "price", "notional"),
    [("10.001", "100", "1000.100"), ("10", "100.01", "1000.10")],
    ids=["one-quantity-step", "one-tick"],
)
def test_order_notional_one_step_over_is_denied(side, quantity, price, notional):
    d = check(intent(side, quantity, price), lim=limits(max_order_notional=D("1000")))
    denied(d, "MAX_ORDER_NOTIONAL", "quantity", f"order notional {notional} > 1000")


def test_order_notional_applies_to_reducing_orders_too():
    x = exposure(positions={PAIR: D("20")})
    lim = limits(max_order_notional=D("1000"))
    assert check(intent("sell", "10", "100"), x, lim, state=REDUCING) is None
    denied(check(intent("sell", "10.001", "100"), x, lim, state=REDUCING), "MAX_ORDER_NOTIONAL", "quantity")


# -- PRICE_BAND ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize(
    ("mid", "band", "limit_price"),
    [("100", "1", "101"), ("100", "1", "99"), ("30000", "0.5", "30150"), ("30000", "0.5", "29850")],
)
def test_price_band_at_the_limit_passes(side, mid, band, limit_price):
    i = intent(side, "1", limit_price, limit_price)
    assert check(i, lim=limits(price_band_pct=D(band)), mid=D(mid)) is None


@pytest.mark.parametrize("side", ["buy", "sell"])
@pytest.mark.parametrize(("limit_price", "off"), [("101.01", "1.0100%"), ("98.99", "1.0100%")])
def test_price_band_one_tick_over_is_denied(side, limit_price, off):
    d = check(intent(side, "1", limit_price, limit_price), lim=limits(price_band_pct=D("1")), mid=D("100"))
    denied(d, "PRICE_BAND", "price", f"price {limit_price} is {off} from the mid 100 > 1%")


def test_price_band_skips_orders_without_a_limit_price():
    # a market order priced far from the mid (its expected price comes from the book walk): no band
    d = check(intent("buy", "1", "150"), lim=limits(price_band_pct=D("1")), mid=D("100"))
    assert d is None


@pytest.mark.parametrize("mid", [None, D("0")], ids=["no-mid", "zero-mid"])
def test_price_band_skipped_without_a_mid(mid):
    assert check(intent("buy", "1", "150", "150"), lim=limits(price_band_pct=D("1")), mid=mid) is None


def test_price_band_off_when_not_configured():
    assert check(intent("buy", "1", "150", "150"), mid=D("100")) is None


# -- INSUFFICIENT_BALANCE ------------------------------------------------------------------------------------


def test_buy_spending_exactly_the_available_quote_passes():
    x = exposure(available={QUOTE: D("1000"), BASE: D("0")})
    assert check(intent("buy", "10", "100"), x) is None


@pytest.mark.parametrize(("quantity", "price", "need"), [("10.001", "100", "1000.100"), ("10", "100.01", "1000.10")])
def test_buy_one_step_over_the_available_quote_is_denied(quantity, price, need):
    x = exposure(available={QUOTE: D("1000"), BASE: D("0")})
    d = check(intent("buy", quantity, price), x)
    denied(d, "INSUFFICIENT_BALANCE", "quantity", f"needs {need} USDT, 1000 available")


def test_sell_of_exactly_the_available_base_passes():
    x = exposure(available={QUOTE: D("0"), BASE: D("2")})
    assert check(intent("sell", "2"), x) is None


def test_sell_one_step_over_the_available_base_is_denied():
    x = exposure(available={QUOTE: D("0"), BASE: D("2")})
    denied(check(intent("sell", "2.001"), x), "INSUFFICIENT_BALANCE", "quantity", "needs 2.001 BTC, 2 available")


def test_missing_currency_counts_as_nothing_available():
    denied(check(intent("buy", "0.001"), exposure(available={})), "INSUFFICIENT_BALANCE", "quantity", "0 available")


def test_allow_short_lifts_the_sell_check():
    x = exposure(available={QUOTE: D("0"), BASE: D("2")})
    lim = limits(allow_short=True)
    assert check(intent("sell", "2.001"), x, lim) is None
    assert check(intent("sell", "5"), exposure(available={QUOTE: D("0")}), lim) is None


def test_allow_short_does_not_lift_the_buy_check():
    x = exposure(available={QUOTE: D("1000"), BASE: D("0")})
    d = check(intent("buy", "10.001", "100"), x, limits(allow_short=True))
    denied(d, "INSUFFICIENT_BALANCE", "quantity", "needs 1000.100 USDT, 1000 available")


def test_flipping_a_long_needs_the_base_for_all_of_the_sell():
    # long 2 with 2 BTC available: selling 2.001 flips to short, which is not reducing -> the balance check runs
    x = exposure(positions={PAIR: D("2")}, available={QUOTE: D("0"), BASE: D("2")})
    assert check(intent("sell", "2"), x) is None
    denied(check(intent("sell", "2.001"), x), "INSUFFICIENT_BALANCE", "quantity", "needs 2.001 BTC, 2 available")


def test_sell_against_a_working_buy_still_needs_the_base():
    # flat, a buy of 1 rests (not filled), no BTC: a sell of 1 sells base that is not held
    x = exposure(positions={}, working={PAIR: D("1")}, available={QUOTE: D("1000000"), BASE: D("0")})
    denied(check(intent("sell", "1"), x), "INSUFFICIENT_BALANCE", "quantity", "needs 1 BTC, 0 available")


def test_no_equity_denies_an_opening_order():
    denied(check(intent("buy"), exposure(equity=D("0"))), "NO_EQUITY", None)


# -- MAX_POSITION_SIZE ---------------------------------------------------------------------------------------
# equity 1000, mark 100, 25% -> |position + working + order| may reach 2.5


def size_exposure(position: str, working: str) -> Exposure:
    return exposure(
        equity=D("1000"),
        day_start_equity=D("1000"),
        peak_equity=D("1000"),
        positions={PAIR: D(position)},
        working={PAIR: D(working)},
    )


SIZE = limits(max_position_fraction=D("0.25"), allow_short=True)

# (position, working, side, quantity at the limit, one step over)
SIZE_CASES = [
    ("0", "0", "buy", "2.5", "2.501"),
    ("1", "0", "buy", "1.5", "1.501"),
    ("0", "1.5", "buy", "1", "1.001"),  # working buys count
    # working 0.5 = a resting buy of 0.3 + a pending (approved, not yet booked) reservation of 0.2
    ("1", "0.5", "buy", "1", "1.001"),
    ("1", "-0.5", "buy", "2", "2.001"),  # a working sell subtracts
    ("-1", "-0.5", "sell", "1", "1.001"),  # short side: the absolute value counts
    ("-1", "0.5", "sell", "2", "2.001"),
]


@pytest.mark.parametrize(("position", "working", "side", "at", "over"), SIZE_CASES)
def test_position_size_at_the_limit_passes(position, working, side, at, over):
    assert check(intent(side, at), size_exposure(position, working), SIZE) is None


@pytest.mark.parametrize(("position", "working", "side", "at", "over"), SIZE_CASES)
def test_position_size_one_step_over_is_denied(position, working, side, at, over):
    d = check(intent(side, over), size_exposure(position, working), SIZE)
    denied(d, "MAX_POSITION_SIZE", "quantity", "resulting position 0.2501 of equity > 0.25")


def test_position_size_counts_the_working_orders():
    # the same order passes without the working buy and is denied with it
    assert check(intent("buy", "1.001"), size_exposure("1", "0"), SIZE) is None
    denied(check(intent("buy", "1.001"), size_exposure("1", "0.5"), SIZE), "MAX_POSITION_SIZE", "quantity")


def test_position_size_uses_the_mark_not_the_order_price():
    # a limit buy at 90: valued at the order's price 2.501 would be 0.2251 of equity, at the mark 100 it is 0.2501
    x = size_exposure("0", "0")
    assert check(intent("buy", "2.5", "90", "90"), x, SIZE) is None
    denied(check(intent("buy", "2.501", "90", "90"), x, SIZE), "MAX_POSITION_SIZE", "quantity", "0.2501")


def test_position_size_falls_back_to_the_order_price_without_a_mark():
    x = size_exposure("0", "0")
    x.marks = {}
    assert check(intent("buy", "2.5"), x, SIZE) is None
    denied(check(intent("buy", "2.501"), x, SIZE), "MAX_POSITION_SIZE", "quantity", "0.2501")


# -- MAX_TOTAL_EXPOSURE --------------------------------------------------------------------------------------
# equity 1000, 50%: other pairs hold 200 at marks, so this pair may reach 300 (3 at 100)


def total_exposure(eth_position: str = "10", eth_working: str = "0") -> Exposure:
    return exposure(
        equity=D("1000"),
        day_start_equity=D("1000"),
        peak_equity=D("1000"),
        positions={ETH: D(eth_position)},
        working={ETH: D(eth_working), SOL: D("5")},  # SOL: 5 x 20 = 100 in working orders only
        marks={PAIR: D("100"), ETH: D("10"), SOL: D("20")},
    )


TOTAL = limits(max_position_fraction=D("1"), max_total_exposure=D("0.5"))


@pytest.mark.parametrize(
    ("eth_position", "eth_working"),
    [("10", "0"), ("-10", "0"), ("6", "4"), ("-12", "2")],
    ids=["long", "short-counts-absolute", "position-plus-working", "netted"],
)
def test_total_exposure_at_the_limit_passes(eth_position, eth_working):
    assert check(intent("buy", "3"), total_exposure(eth_position, eth_working), TOTAL) is None


@pytest.mark.parametrize(
    ("eth_position", "eth_working"),
    [("10", "0"), ("-10", "0"), ("6", "4"), ("-12", "2")],
    ids=["long", "short-counts-absolute", "position-plus-working", "netted"],
)
def test_total_exposure_one_step_over_is_denied(eth_position, eth_working):
    d = check(intent("buy", "3.001"), total_exposure(eth_position, eth_working), TOTAL)
    denied(d, "MAX_TOTAL_EXPOSURE", "quantity", "total exposure 0.5001 of equity > 0.5")


def test_total_exposure_includes_the_pair_s_own_position():
    x = total_exposure()
    x.positions[PAIR] = D("1")
    assert check(intent("buy", "2"), x, TOTAL) is None
    denied(check(intent("buy", "2.001"), x, TOTAL), "MAX_TOTAL_EXPOSURE", "quantity", "0.5001")


def test_total_exposure_off_when_not_configured():
    assert check(intent("buy", "3.001"), total_exposure(), limits(max_position_fraction=D("1"))) is None


# -- MAX_DAILY_LOSS ------------------------------------------------------------------------------------------


def loss_exposure(equity: str) -> Exposure:
    return exposure(equity=D(equity), day_start_equity=D("10000"), peak_equity=D("10000"))


def test_daily_loss_just_under_the_limit_passes():
    # down 499.99 of 10000 = 0.049999 < 0.05
    assert check(intent("buy"), loss_exposure("9500.01"), limits(max_daily_loss=D("0.05"))) is None


@pytest.mark.parametrize("equity", ["9500", "9499.99", "9000"], ids=["reached", "one-step-past", "far-past"])
def test_daily_loss_reaching_the_limit_is_denied(equity):
    # Unlike the other limits, reaching MAX_DAILY_LOSS already denies (>=): the risk-gate halts trading when
    # the daily loss is reached, so an order exactly at the limit must not pass either.
    d = check(intent("buy"), loss_exposure(equity), limits(max_daily_loss=D("0.05")))
    denied(d, "MAX_DAILY_LOSS", None, "of start-of-day equity >= 0.05")


def test_daily_loss_reason_names_the_loss():
    d = check(intent("buy"), loss_exposure("9500"), limits(max_daily_loss=D("0.05")))
    denied(d, "MAX_DAILY_LOSS", None, "MAX_DAILY_LOSS: down 0.0500 of start-of-day equity >= 0.05")


@pytest.mark.parametrize(
    ("equity", "day_start", "loss"),
    [
        ("10500", "10000", "0"),  # in profit: 0, never negative
        ("10000", "10000", "0"),
        ("9500", "10000", "0.05"),
        ("9500.01", "10000", "0.049999"),
        ("0", "10000", "1"),
        ("500", "0", "0"),  # no start-of-day equity: no loss to speak of
    ],
)
def test_daily_loss(equity, day_start, loss):
    assert daily_loss(exposure(equity=D(equity), day_start_equity=D(day_start))) == D(loss)


# -- MAX_DRAWDOWN --------------------------------------------------------------------------------------------
# peak 20000, 20%: drawdown reached at equity 16000 (no daily loss: the day started at the current equity)


def dd_exposure(equity: str) -> Exposure:
    return exposure(equity=D(equity), day_start_equity=D(equity), peak_equity=D("20000"))


def test_drawdown_just_under_the_limit_passes():
    assert check(intent("buy"), dd_exposure("16000.01"), limits(max_drawdown=D("0.2"))) is None


@pytest.mark.parametrize("equity", ["16000", "15999.99"], ids=["reached", "one-step-past"])
def test_drawdown_reaching_the_limit_is_denied(equity):
    # reaching MAX_DRAWDOWN denies (>=), like the daily loss: the risk-gate halts when it is reached
    d = check(intent("buy"), dd_exposure(equity), limits(max_drawdown=D("0.2")))
    denied(d, "MAX_DRAWDOWN", None, "MAX_DRAWDOWN: drawdown 0.2000 >= 0.2")


def test_drawdown_off_when_not_configured_or_no_peak():
    assert check(intent("buy"), dd_exposure("1000")) is None
    x = exposure(equity=D("1000"), day_start_equity=D("1000"), peak_equity=D("0"))
    assert check(intent("buy"), x, limits(max_drawdown=D("0.2"))) is None


# -- trading states ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "quantity", "position"),
    [("buy", "1", "0"), ("sell", "1", "0"), ("sell", "1", "2"), ("buy", "2", "-2")],
    ids=["opening-buy", "opening-sell", "reducing-sell", "closing-buy"],
)
def test_halted_denies_everything(side, quantity, position):
    x = exposure(positions={PAIR: D(position)})
    assert check(intent(side, quantity), x, state=ACTIVE) is None
    d = check(intent(side, quantity), x, state=HALTED)
    denied(d, "TRADING_HALTED", None, "halted")


@pytest.mark.parametrize(
    ("side", "quantity", "position", "working"),
    [
        ("buy", "0.001", "0", "0"),  # opening
        ("buy", "1", "2", "0"),  # adds to a long
        ("sell", "2.001", "2", "0"),  # flips a long one step past flat
        ("sell", "4", "2", "0"),  # flips to a short as large as the long
        ("buy", "2.001", "-2", "0"),  # flips a short
        ("sell", "0.001", "2", "-2"),  # the working sell already flattens: this one opens a short
    ],
)
def test_reducing_state_denies_orders_that_do_not_reduce(side, quantity, position, working):
    x = exposure(positions={PAIR: D(position)}, working={PAIR: D(working)})
    assert check(intent(side, quantity), x, limits(allow_short=True), state=ACTIVE) is None
    d = check(intent(side, quantity), x, limits(allow_short=True), state=REDUCING)
    denied(d, "REDUCING_ONLY", None, "REDUCING")


@pytest.mark.parametrize(
    ("side", "quantity", "position", "working"),
    [
        ("sell", "1", "2", "0"),
        ("sell", "2", "2", "0"),  # to flat
        ("buy", "2", "-2", "0"),
        ("sell", "1", "2", "-1"),  # with a working sell: flat after both
    ],
)
def test_reducing_state_lets_reducing_orders_pass(side, quantity, position, working):
    # a daily loss past its limit: a reducing order still passes (it is still paid for: balances are there)
    x = exposure(
        positions={PAIR: D(position)},
        working={PAIR: D(working)},
        available={QUOTE: D("1000000"), BASE: D("10")},
        equity=D("9000"),
        day_start_equity=D("10000"),
    )
    lim = limits(max_daily_loss=D("0.05"))
    assert check(intent(side, quantity), x, lim, state=REDUCING) is None


# -- reducing orders skip the size, exposure and loss checks (never the balance: every order is paid for) ------
# Each scenario violates exactly one of those limits: an order that would leave the pair flat from a long of 2
# passes; a flip (not reducing) and an opening buy are denied by that limit.

SKIP_CASES = [
    pytest.param(
        exposure(positions={PAIR: D("2")}, equity=D("100"), day_start_equity=D("100"), peak_equity=D("100")),
        limits(max_position_fraction=D("0.25")),
        "MAX_POSITION_SIZE",
        id="position-size",
    ),
    pytest.param(
        exposure(
            positions={PAIR: D("2"), ETH: D("100")},
            marks={PAIR: D("100"), ETH: D("10")},
            equity=D("1000"),
            day_start_equity=D("1000"),
            peak_equity=D("1000"),
        ),
        limits(max_total_exposure=D("1")),
        "MAX_TOTAL_EXPOSURE",
        id="total-exposure",
    ),
    pytest.param(
        exposure(positions={PAIR: D("2")}, equity=D("9000"), day_start_equity=D("10000"), peak_equity=D("10000")),
        limits(max_daily_loss=D("0.05")),
        "MAX_DAILY_LOSS",
        id="daily-loss",
    ),
    pytest.param(
        exposure(positions={PAIR: D("2")}, equity=D("5000"), day_start_equity=D("5000"), peak_equity=D("10000")),
        limits(max_drawdown=D("0.2")),
        "MAX_DRAWDOWN",
        id="drawdown",
    ),
]


@pytest.mark.parametrize(("x", "lim", "code"), SKIP_CASES)
def test_reducing_orders_skip_the_balance_size_and_loss_checks(x, lim, code):
    assert check(intent("sell", "1"), x, lim) is None
    assert check(intent("sell", "2"), x, lim) is None  # to flat
    d = check(intent("buy", "0.001"), x, lim)
    assert d is not None and d.code == code, d


@pytest.mark.parametrize(("x", "lim", "code"), SKIP_CASES)
def test_a_flip_is_not_reducing_and_is_checked(x, lim, code):
    # long 2, sell 3: closer to zero (|-1| < 2) but across it, so every check runs
    d = check(intent("sell", "3"), x, lim)
    assert d is not None and d.code == code, d


def test_reducing_orders_are_still_paid_for():
    # covering a short needs quote, selling a long needs the base: no exception for reducing orders
    short = exposure(positions={PAIR: D("-2")}, available={QUOTE: D("0"), BASE: D("0")})
    denied(check(intent("buy", "2"), short), "INSUFFICIENT_BALANCE", "quantity", "needs 200 USDT, 0 available")
    long_ = exposure(positions={PAIR: D("2")}, available={QUOTE: D("0"), BASE: D("0")})
    denied(check(intent("sell", "1"), long_), "INSUFFICIENT_BALANCE", "quantity", "needs 1 BTC, 0 available")


# -- reduces -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "working", "side", "quantity", "expected"),
    [
        ("0", "0", "buy", "0.001", False),  # opening from flat
        ("0", "0", "sell", "0.001", False),
        ("2", "0", "buy", "0.001", False),  # adds to a long
        ("-2", "0", "sell", "0.001", False),  # adds to a short
        ("2", "0", "sell", "0.001", True),
        ("2", "0", "sell", "1.999", True),
        ("2", "0", "sell", "2", True),  # exactly to flat
        ("2", "0", "sell", "2.001", False),  # flip by one step
        ("2", "0", "sell", "4", False),  # flip to the same size: not closer to zero either
        ("2", "0", "sell", "3", False),  # flip to a smaller size: closer to zero, still a flip
        ("-2", "0", "buy", "2", True),
        ("-2", "0", "buy", "1.999", True),
        ("-2", "0", "buy", "2.001", False),
        ("-2", "0", "buy", "3", False),
        ("2", "-1", "sell", "1", True),  # working orders count: 2 - 1 - 1 = 0
        ("2", "-1", "sell", "1.001", False),
        ("2", "-2", "sell", "0.001", False),  # already flat after the working sell
        ("0", "-2", "buy", "1", True),
        ("-1", "3", "sell", "2", True),  # net long 2 (position short, working buys)
        ("-1", "3", "sell", "2.001", False),
    ],
)
def test_reduces(position, working, side, quantity, expected):
    assert reduces(D(position), D(working), side, D(quantity)) is expected


# -- reasons name the true numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("i", "x", "lim", "mid", "pattern"),
    [
        pytest.param(
            intent("buy", "25.001"),  # 2500.1 / 10000 = 0.25001
            exposure(),
            limits(max_position_fraction=D("0.25")),
            None,
            r"resulting position (\S+) of equity > (\S+)$",
            id="position-size",
        ),
        pytest.param(
            intent("buy", "1", "30150.01", "30150.01"),  # 0.500033...% from 30000
            exposure(),
            limits(price_band_pct=D("0.5")),
            D("30000"),
            r"is (\S+)% from the mid \S+ > (\S+)%$",
            id="price-band",
        ),
        pytest.param(
            intent("buy", "50.001"),  # 5000.1 / 10000 = 0.50001
            exposure(),
            limits(max_total_exposure=D("0.5")),
            None,
            r"total exposure (\S+) of equity > (\S+)$",
            id="total-exposure",
        ),
    ],
)
def test_the_reason_names_a_number_above_the_limit(i, x, lim, mid, pattern):
    d = check(i, x, lim, mid=mid)
    assert d is not None
    m = re.search(pattern, d.reason)
    assert m is not None, d.reason
    assert D(m.group(1)) > D(m.group(2)), d.reason


# -- a retry carries the same order (issue 15, 1b) -------------------------------------------------------
def test_same_request_compares_what_the_router_compares_and_the_exits():
    base = OrderRequest(
        client_order_id="c", pair="BTC_USDT", side="buy", quantity=D("1"), type="limit", price=D("95"), ts=1
    )
    assert same_request(base, msgspec.structs.replace(base, ts=2, source="other", signal_id="s"), "GTC")
    assert same_request(base, msgspec.structs.replace(base, time_in_force="GTC"), "GTC")  # the default
    assert not same_request(base, msgspec.structs.replace(base, time_in_force="IOC"), "GTC")
    market = msgspec.structs.replace(base, type="market", price=None)
    assert same_request(market, msgspec.structs.replace(market, price=D("100")), "GTC")  # only a reference
    for change in (
        {"quantity": D("2")}, {"side": "sell"}, {"price": D("96")}, {"pair": "ETH_USDT"}, {"reduce_only": True},
        {"post_only": True}, {"stop_loss": D("90")}, {"take_profit": D("99")}, {"type": "stop_limit"},
    ):  # fmt: skip
        assert not same_request(base, msgspec.structs.replace(base, **change), "GTC"), change
