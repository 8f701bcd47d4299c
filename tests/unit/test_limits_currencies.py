"""The risk limits in BASE_CURRENCY when pairs are quoted in other currencies (ETH_BTC beside BTC_USDT and
ETH_USDT): every amount a limit compares with equity or with MAX_ORDER_NOTIONAL is converted at the books'
rates (domain.valuation.Converter), and an amount that cannot be converted denies (NO_CONVERSION), never
passes as if it were USDT.

The hand-checked marks: BTC_USDT 50000, ETH_BTC 0.04, ETH_USDT 2000 (= 0.04 x 50000); equity 50,000 USDT.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal as D

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from domain.ledger import Ledger
from domain.limits import ACTIVE, Exposure, Intent, Limits, breaches, check_limits, headroom, in_quote
from domain.risk import Denial
from domain.valuation import Converter, quote_rates

BTC, ETH, ETHBTC, SOL = "BTC_USDT", "ETH_USDT", "ETH_BTC", "SOL_USDT"
PAIRS = (BTC, ETH, ETHBTC)
MARKS = {BTC: D(50000), ETHBTC: D("0.04"), ETH: D(2000)}
EQUITY = D(50000)
PLENTY = {"USDT": D(10) ** 12, "BTC": D(10) ** 9, "ETH": D(10) ** 9, "SOL": D(10) ** 9}


def exposure(
    marks: Mapping[str, D] = MARKS,
    pairs: tuple[str, ...] = PAIRS,
    positions: dict[str, D] | None = None,
    working: dict[str, D] | None = None,
    equity: D = EQUITY,
) -> Exposure:
    """What the risk-gate builds: the rates from the books' Converter at these marks."""
    conv = Converter(Ledger("USDT", equity), marks, "USDT")
    return Exposure(
        equity=equity,
        day_start_equity=equity,
        peak_equity=equity,
        available=dict(PLENTY),
        positions=positions or {},
        working=working or {},
        marks=dict(marks),
        rates=quote_rates(conv, pairs),
        base_currency="USDT",
    )


def limits(**kw: object) -> Limits:
    args: dict[str, object] = {"max_position_fraction": D(1000), "max_daily_loss": D("0.5"), "allow_short": True}
    return Limits(**(args | kw))  # type: ignore[arg-type]


def order(pair: str, side: str, qty: str, price: D | str | None = None) -> Intent:
    base, quote = pair.split("_")
    return Intent(pair, side, D(qty), D(price) if price is not None else MARKS[pair], None, quote, base)


def check(i: Intent, x: Exposure, lim: Limits) -> Denial | None:
    return check_limits(i, x, lim, ACTIVE, None)


def code(d: Denial | None) -> str | None:
    return None if d is None else d.code


# -- the verified defect: a 12M USDT short on ETH_BTC passed as a notional of "200" ----------------------------
def test_selling_4000_eth_on_eth_btc_is_valued_in_usdt_like_the_same_sale_on_eth_usdt():
    marks = {BTC: D(60000), ETHBTC: D("0.05"), ETH: D(3000)}
    x = exposure(marks)
    lim = limits(max_order_notional=D(10000))
    # 4000 x 0.05 = 200 BTC; 200 x 60000 = 12,000,000 USDT
    d = check(order(ETHBTC, "sell", "4000", "0.05"), x, lim)
    assert d is not None and (d.code, d.field) == ("MAX_ORDER_NOTIONAL", "quantity")
    assert d.reason == "MAX_ORDER_NOTIONAL: order notional 12000000.0000 USDT (200.00 BTC at 60000) > 10000"
    assert code(check(order(ETH, "sell", "4000", "3000"), x, lim)) == "MAX_ORDER_NOTIONAL"


def test_order_notional_on_eth_btc_passes_at_the_limit_in_usdt_and_denies_one_step_over():
    lim = limits(max_order_notional=D(10000))
    # 5 ETH x 0.04 = 0.2 BTC = 10,000 USDT: at the limit
    assert check(order(ETHBTC, "buy", "5"), exposure(), lim) is None
    d = check(order(ETHBTC, "buy", "5.001"), exposure(), lim)  # 10,002 USDT
    assert code(d) == "MAX_ORDER_NOTIONAL" and d is not None and "10002.0000 USDT" in d.reason


def test_position_size_on_eth_btc_is_a_fraction_of_equity_in_usdt():
    lim = limits(max_position_fraction=D("0.25"))  # 12,500 USDT = 6.25 ETH at 2000
    assert check(order(ETHBTC, "buy", "6.25"), exposure(), lim) is None
    d = check(order(ETHBTC, "buy", "6.251"), exposure(), lim)  # 12,502 / 50,000 = 0.25004
    assert d is not None and d.code == "MAX_POSITION_SIZE" and "resulting position 0.2501 of equity" in d.reason
    # a short the same size: the same verdict
    assert code(check(order(ETHBTC, "sell", "6.251"), exposure(), lim)) == "MAX_POSITION_SIZE"
    # what is held counts, in ETH: 6 held, 0.25 more is the limit
    held = exposure(positions={ETHBTC: D(6)})
    assert check(order(ETHBTC, "buy", "0.25"), held, lim) is None
    assert code(check(order(ETHBTC, "buy", "0.251"), held, lim)) == "MAX_POSITION_SIZE"


def test_total_exposure_adds_eth_btc_in_usdt_to_the_other_pairs():
    lim = limits(max_total_exposure=D("0.6"))  # 30,000 USDT
    # 0.5 BTC held = 25,000 USDT: 2.5 ETH (5,000 USDT) more on ETH_BTC fit
    x = exposure(positions={BTC: D("0.5")})
    assert check(order(ETHBTC, "buy", "2.5"), x, lim) is None
    d = check(order(ETHBTC, "buy", "2.501"), x, lim)
    assert d is not None and d.code == "MAX_TOTAL_EXPOSURE" and "total exposure 0.6001 of equity" in d.reason
    # the other way round: 10 ETH held on ETH_BTC (20,000 USDT) leave 0.2 BTC (10,000 USDT) for BTC_USDT
    x = exposure(positions={ETHBTC: D(10)})
    assert check(order(BTC, "buy", "0.2"), x, lim) is None
    assert code(check(order(BTC, "buy", "0.2001"), x, lim)) == "MAX_TOTAL_EXPOSURE"
    # a working ETH_BTC order counts as well
    x = exposure(working={ETHBTC: D(-10)})
    assert code(check(order(BTC, "buy", "0.2001"), x, lim)) == "MAX_TOTAL_EXPOSURE"


def test_a_correlation_group_values_eth_btc_in_usdt():
    lim = limits(groups=(("eth", frozenset({ETH, ETHBTC}), D("0.5")),))  # 25,000 USDT = 12.5 ETH
    x = exposure(positions={ETH: D(10)})  # 20,000 USDT
    assert check(order(ETHBTC, "buy", "2.5"), x, lim) is None
    d = check(order(ETHBTC, "buy", "2.501"), x, lim)
    assert d is not None and d.code == "CORRELATION_LIMIT" and "group eth exposure 0.5001 of equity" in d.reason


def test_breaches_and_headroom_value_eth_btc_in_usdt():
    lim = limits(max_position_fraction=D("0.25"), max_total_exposure=D("0.5"))
    x = exposure(positions={ETHBTC: D(10), BTC: D("0.2")})  # 20,000 + 10,000 USDT
    over = breaches(x, lim)
    assert set(over) == {"pair:ETH_BTC", "total"}
    assert "ETH_BTC exposure 0.4000 of equity" in over["pair:ETH_BTC"]
    assert "total exposure 0.6000 of equity" in over["total"]
    # MAX_POSITION_SIZE 0.25 of 50,000 USDT = 12,500 USDT = 6.25 ETH; 1 held
    assert headroom(order(ETHBTC, "buy", "100"), exposure(positions={ETHBTC: D(1)}), lim) == D("5.25")
    assert headroom(order(ETHBTC, "sell", "100"), exposure(positions={ETHBTC: D(1)}), lim) == D("7.25")


def test_equity_in_the_quote_currency():
    x = exposure()
    assert in_quote(x, ETHBTC, EQUITY) == 1  # 50,000 USDT = 1 BTC
    assert in_quote(x, BTC, EQUITY) == EQUITY
    assert in_quote(exposure({ETHBTC: D("0.04")}), ETHBTC, EQUITY) is None


# -- no rate: denied, naming the pair and the currency ---------------------------------------------------------
def test_an_order_whose_quote_cannot_be_converted_is_denied_not_passed():
    x = exposure({ETHBTC: D("0.04"), SOL: D(100)}, pairs=(ETHBTC, SOL))  # no BTC_USDT, no USDT_BTC: no rate for BTC
    d = check(order(ETHBTC, "buy", "0.001", "0.04"), x, limits())
    assert d is not None and (d.code, d.field) == ("NO_CONVERSION", "pair")
    assert "cannot value ETH_BTC in USDT: no rate for BTC" in d.reason and "MAX_POSITION_SIZE" in d.reason
    d = check(order(ETHBTC, "sell", "0.001", "0.04"), x, limits(max_order_notional=D(10**9)))
    assert d is not None and d.code == "NO_CONVERSION" and "MAX_ORDER_NOTIONAL" in d.reason
    # a reducing order meets no limit that needs its value, MAX_ORDER_NOTIONAL included: an exit (a CLOSE
    # signal, a stop-loss) is never blocked for want of a rate
    held = exposure({ETHBTC: D("0.04"), SOL: D(100)}, pairs=(ETHBTC, SOL), positions={ETHBTC: D(1)})
    assert check(order(ETHBTC, "sell", "1", "0.04"), held, limits()) is None
    assert check(order(ETHBTC, "sell", "1", "0.04"), held, limits(max_order_notional=D(10))) is None
    # what is held there cannot be valued: the total exposure cannot be known, an opening order elsewhere waits
    d = check(order(SOL, "buy", "1", "100"), held, limits(max_total_exposure=D(1)))
    assert d is not None and d.code == "NO_CONVERSION" and "cannot value ETH_BTC in USDT" in d.reason
    assert breaches(held, limits(max_position_fraction=D("0.001"), max_total_exposure=D("0.001"))) == {}
    assert headroom(order(ETHBTC, "buy", "1", "0.04"), held, limits()) == 0


def test_rates_through_the_bridge_and_the_inverse_pair():
    # BASE_CURRENCY EUR: USDT through EUR_USDT (inverse), BTC through the bridge USDT
    marks = {ETHBTC: D("0.04"), BTC: D(50000), "EUR_USDT": D("1.25")}
    conv = Converter(Ledger("EUR", D(1000)), marks, "USDT")
    assert quote_rates(conv, [ETHBTC, BTC, "EUR_USDT", "ETH_XYZ"]) == {
        ETHBTC: D(40000),  # 50000 USDT / 1.25
        BTC: D("0.8"),
        "EUR_USDT": D("0.8"),
        "ETH_XYZ": None,
    }


# -- the property: ETH_BTC and the economically equal order on ETH_USDT get the same verdict ----------------
def dec(lo: str, hi: str, places: int) -> st.SearchStrategy[D]:
    return st.decimals(D(lo), D(hi), places=places, allow_nan=False, allow_infinity=False)


@hsettings(max_examples=400, deadline=None, database=None)
@given(
    btc=dec("1000", "200000", 2),
    eth_btc=dec("0.001", "0.5", 5),
    price_off=dec("0.9", "1.1", 3),
    side=st.sampled_from(["buy", "sell"]),
    qty=dec("0.001", "5000", 3),
    held_eth=dec("-500", "500", 3),
    working_eth=dec("-50", "50", 3),
    held_btc=dec("-5", "5", 4),
    equity=dec("1000", "10000000", 2),
    notional=dec("100", "1000000", 2),
    fraction=dec("0.01", "1", 2),
    total=dec("0.1", "3", 2),
    group=dec("0.1", "2", 2),
)
def test_eth_btc_and_the_equal_order_on_eth_usdt_get_the_same_verdict(
    btc, eth_btc, price_off, side, qty, held_eth, working_eth, held_btc, equity, notional, fraction, total, group
):
    eth_usdt = eth_btc * btc  # consistent marks
    price_btc = eth_btc * price_off  # the order's expected price, in BTC on ETH_BTC ...
    price_usdt = price_btc * btc  # ... and the same in USDT on ETH_USDT

    def verdicts(pair: str, mark: D, price: D) -> tuple[str | None, frozenset[str], D]:
        majors = frozenset({BTC, pair})
        lim = limits(
            max_order_notional=notional, max_position_fraction=fraction, max_total_exposure=total,
            groups=(("majors", majors, group),),
        )  # fmt: skip
        x = exposure(
            {BTC: btc, pair: mark}, pairs=(BTC, pair), equity=equity,
            positions={pair: held_eth, BTC: held_btc}, working={pair: working_eth},
        )  # fmt: skip
        i = Intent(pair, side, qty, price, None, pair.split("_")[1], "ETH")
        over = frozenset(k.replace(pair, "ETH") for k in breaches(x, lim))
        return code(check(i, x, lim)), over, headroom(i, x, lim)

    on_btc = verdicts(ETHBTC, eth_btc, price_btc)
    on_usdt = verdicts(ETH, eth_usdt, price_usdt)
    assert on_btc[:2] == on_usdt[:2]
    # the room left in ETH: the same, up to the last of 28 digits (equity / rate / mark against equity / mark)
    assert abs(on_btc[2] - on_usdt[2]) <= D("1e-20") * max(on_usdt[2], D(1))
