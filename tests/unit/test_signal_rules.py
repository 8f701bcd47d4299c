"""Pure rules between a signal and an order: the ML adjustment, minimum confidence, the duplicate window,
aggregation by weights, limit and exit prices (domain.signals); choosing and running a sizing method and
capping it (domain.sizing); the exposure limits the books breach now and the headroom left (domain.limits).

Every expected number is computed by hand in the comment next to it.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.limits import Exposure, Intent, Limits, breaches, headroom
from domain.signals import (
    RecentSignals,
    Vote,
    aggregate,
    default_exits,
    limit_price,
    min_confidence,
    ml_adjusted,
)
from domain.sizing import SIZING_METHODS, Sizing, SizingError, SizingInputs, cap, method_name, size

BTC, ETH, SOL = "BTC/USDT", "ETH/USDT", "SOL/USDT"


# -- ml_adjusted: c' = (1 - w) x c + w x s, s = p when the ML agrees, else 1 - p ------------------------------


def test_ml_adjusted_agreeing_prediction_uses_its_confidence():
    # 0.75 x 0.6 + 0.25 x 0.8 = 0.45 + 0.20
    assert ml_adjusted(D("0.6"), "BUY", "BUY", D("0.8"), D("0.25")) == D("0.65")


def test_ml_adjusted_opposite_prediction_uses_one_minus_its_confidence():
    # s = 1 - 0.8 = 0.2: 0.75 x 0.6 + 0.25 x 0.2 = 0.45 + 0.05
    assert ml_adjusted(D("0.6"), "BUY", "SELL", D("0.8"), D("0.25")) == D("0.50")
    assert ml_adjusted(D("0.6"), "SELL", "BUY", D("0.8"), D("0.25")) == D("0.50")


def test_ml_adjusted_hold_prediction_counts_as_not_agreeing():
    # s = 1 - 0.7 = 0.3: 0.75 x 0.6 + 0.25 x 0.3 = 0.45 + 0.075
    assert ml_adjusted(D("0.6"), "BUY", "HOLD", D("0.7"), D("0.25")) == D("0.525")


def test_ml_adjusted_weight_zero_leaves_the_confidence_unchanged():
    assert ml_adjusted(D("0.6"), "BUY", "SELL", D("0.9"), D("0")) == D("0.6")
    assert ml_adjusted(D("0.6"), "BUY", "BUY", D("0.9"), D("0")) == D("0.6")


def test_ml_adjusted_weight_one_replaces_the_confidence_by_s():
    assert ml_adjusted(D("0.6"), "BUY", "BUY", D("0.8"), D("1")) == D("0.8")
    assert ml_adjusted(D("0.6"), "BUY", "SELL", D("0.8"), D("1")) == D("0.2")
    assert ml_adjusted(D("0.6"), "BUY", "HOLD", D("0.8"), D("1")) == D("0.2")


# -- min_confidence -------------------------------------------------------------------------------------------


def test_min_confidence_per_source_override_wins():
    assert min_confidence("ml", D("0.5"), {"ml": D("0.8"), "core": D("0.3")}) == D("0.8")
    assert min_confidence("core", D("0.5"), {"ml": D("0.8"), "core": D("0.3")}) == D("0.3")


def test_min_confidence_unnamed_source_gets_the_default():
    assert min_confidence("manual", D("0.5"), {"ml": D("0.8")}) == D("0.5")
    assert min_confidence("manual", D("0.5"), {}) == D("0.5")


# -- RecentSignals --------------------------------------------------------------------------------------------


def remembered(window: int = 1000) -> RecentSignals:
    r = RecentSignals(window)
    r.remember("core", BTC, "BUY", 10_000, "sig-1")
    return r


def test_repeat_within_the_window_is_a_duplicate_of_the_first_id():
    r = remembered()
    assert r.duplicate_of("core", BTC, "BUY", 10_000) == "sig-1"
    assert r.duplicate_of("core", BTC, "BUY", 10_999) == "sig-1"


def test_repeat_exactly_at_the_window_boundary_is_not_a_duplicate():
    r = remembered()
    assert r.duplicate_of("core", BTC, "BUY", 11_000) is None  # at - first == window
    assert r.duplicate_of("core", BTC, "BUY", 11_001) is None


def test_different_source_pair_or_signal_is_not_a_duplicate():
    r = remembered()
    assert r.duplicate_of("ml", BTC, "BUY", 10_500) is None
    assert r.duplicate_of("core", ETH, "BUY", 10_500) is None
    assert r.duplicate_of("core", BTC, "SELL", 10_500) is None


def test_window_zero_disables_the_duplicate_filter():
    r = remembered(window=0)
    assert r.duplicate_of("core", BTC, "BUY", 10_000) is None


def test_remember_keeps_the_later_signal():
    r = remembered()
    r.remember("core", BTC, "BUY", 10_500, "sig-2")
    assert r.duplicate_of("core", BTC, "BUY", 11_200) == "sig-2"  # 700 ms after sig-2
    r.remember("core", BTC, "BUY", 10_100, "sig-older")  # arrives late: the later one stays
    assert r.duplicate_of("core", BTC, "BUY", 11_200) == "sig-2"


def test_forget_before_drops_entries_older_than_the_window():
    r = remembered()
    r.remember("core", ETH, "SELL", 10_600, "sig-eth")
    r.forget_before(11_000)  # sig-1 is 1000 ms old (== window): dropped; sig-eth is 400 ms old: kept
    assert ("core", BTC, "BUY") not in r.last
    assert r.last[("core", ETH, "SELL")] == (10_600, "sig-eth")
    r.forget_before(11_600)
    assert r.last == {}


# -- aggregate: net = sum(w x d x c) / sum(w) over each source's latest vote ----------------------------------


def vote(signal_id: str, source: str, signal: str, confidence: str, at: int = 0) -> Vote:
    return Vote(signal_id, source, signal, D(confidence), at)


def test_aggregate_single_vote_is_the_decision():
    d = aggregate([vote("s1", "core", "SELL", "0.7")], {})
    assert (d.signal, d.confidence, d.net, d.counted) == ("SELL", D("0.7"), D("-0.7"), ("s1",))


def test_aggregate_opposite_votes_of_equal_weight_and_confidence_cancel():
    d = aggregate([vote("s1", "core", "BUY", "0.8"), vote("s2", "ml", "SELL", "0.8")], {})
    assert d.signal is None
    assert d.net == D(0)
    assert d.confidence == D(0)
    assert set(d.counted) == {"s1", "s2"}


def test_aggregate_weights_tip_the_balance():
    # (2 x 0.6 - 1 x 0.9) / (2 + 1) = 0.3 / 3 = 0.1
    votes = [vote("s1", "core", "BUY", "0.6"), vote("s2", "ml", "SELL", "0.9")]
    d = aggregate(votes, {"core": D(2), "ml": D(1)})
    assert (d.signal, d.net, d.confidence) == ("BUY", D("0.1"), D("0.1"))


def test_aggregate_counts_only_a_sources_latest_vote():
    # listed out of order: the later vote (at 200) replaces the earlier one whatever the list order
    votes = [vote("late", "core", "SELL", "0.4", at=200), vote("early", "core", "BUY", "0.9", at=100)]
    d = aggregate(votes, {})
    assert (d.signal, d.net, d.counted) == ("SELL", D("-0.4"), ("late",))


def test_aggregate_weight_zero_mutes_a_source():
    votes = [vote("s1", "core", "BUY", "0.6"), vote("s2", "ml", "SELL", "0.9")]
    d = aggregate(votes, {"ml": D(0)})
    assert (d.signal, d.net, d.counted) == ("BUY", D("0.6"), ("s1",))


def test_aggregate_all_sources_muted_is_no_decision():
    votes = [vote("s1", "core", "BUY", "0.6"), vote("s2", "ml", "SELL", "0.9")]
    d = aggregate(votes, {"core": D(0), "ml": D(0)})
    assert (d.signal, d.confidence, d.net, d.counted) == (None, D(0), D(0), ())


def test_aggregate_unnamed_sources_weigh_one():
    # core weight 3 BUY 0.5, manual unnamed (1) SELL 0.9: (1.5 - 0.9) / 4 = 0.15
    votes = [vote("s1", "core", "BUY", "0.5"), vote("s2", "manual", "SELL", "0.9")]
    d = aggregate(votes, {"core": D(3)})
    assert (d.signal, d.net) == ("BUY", D("0.15"))


# Decimals with few places keep every product and sum exact, so the properties hold exactly.
confidences = st.decimals(min_value=0, max_value=1, places=2)
weights = st.decimals(min_value=0, max_value=10, places=2)
directions = st.sampled_from(["BUY", "SELL"])


@st.composite
def votes_and_weights(draw: st.DrawFn, distinct_sources: bool) -> tuple[list[Vote], dict[str, D]]:
    n = draw(st.integers(min_value=1, max_value=8))
    votes = []
    for k in range(n):
        source = f"src{k}" if distinct_sources else draw(st.sampled_from(["a", "b", "c", "d"]))
        at = draw(st.integers(min_value=0, max_value=1000))
        votes.append(Vote(f"id{k}", source, draw(directions), draw(confidences), at))
    sources = sorted({v.source for v in votes})
    named = draw(st.lists(st.sampled_from(sources), unique=True))  # the rest weigh 1
    return votes, {s: draw(weights) for s in named}


@settings(max_examples=200, deadline=None)
@given(votes_and_weights(distinct_sources=False))
def test_aggregate_net_is_within_minus_one_and_one(case):
    votes, w = case
    d = aggregate(votes, w)
    assert abs(d.net) <= 1
    assert d.confidence == abs(d.net)


@settings(max_examples=200, deadline=None)
@given(votes_and_weights(distinct_sources=False))
def test_aggregate_flipping_every_vote_negates_net(case):
    votes, w = case
    flipped = [Vote(v.signal_id, v.source, "SELL" if v.signal == "BUY" else "BUY", v.confidence, v.at) for v in votes]
    assert aggregate(flipped, w).net == -aggregate(votes, w).net


@settings(max_examples=200, deadline=None)
@given(votes_and_weights(distinct_sources=True))
def test_aggregate_mirrored_votes_from_new_sources_cancel_out(case):
    votes, w = case
    mirrors = [
        Vote(f"{v.signal_id}-mirror", f"{v.source}-mirror", "SELL" if v.signal == "BUY" else "BUY", v.confidence, v.at)
        for v in votes
    ]
    mirror_weights = {f"{v.source}-mirror": w.get(v.source, D(1)) for v in votes}
    d = aggregate(votes + mirrors, w | mirror_weights)
    assert d.net == 0
    assert d.signal is None


# -- limit_price ----------------------------------------------------------------------------------------------


def test_limit_price_buy_is_below_the_reference_rounded_down_to_the_tick():
    # 101.37 x 0.999 = 101.26863 -> 101.26
    assert limit_price("buy", D("101.37"), D("0.1"), D("0.01")) == D("101.26")
    # 100 x 0.997 = 99.7 -> tick 0.5 -> 99.5
    assert limit_price("buy", D("100"), D("0.3"), D("0.5")) == D("99.5")


def test_limit_price_sell_is_above_the_reference_rounded_up_to_the_tick():
    # 101.37 x 1.001 = 101.47137 -> 101.48
    assert limit_price("sell", D("101.37"), D("0.1"), D("0.01")) == D("101.48")
    # 100 x 1.003 = 100.3 -> tick 0.5 -> 100.5
    assert limit_price("sell", D("100"), D("0.3"), D("0.5")) == D("100.5")


def test_limit_price_without_tick_is_exact():
    assert limit_price("buy", D("101.37"), D("0.1"), None) == D("101.26863")
    assert limit_price("sell", D("101.37"), D("0.1"), None) == D("101.47137")


def test_limit_price_offset_zero_returns_the_reference_on_a_tick():
    assert limit_price("buy", D("101.37"), D("0"), D("0.01")) == D("101.37")
    assert limit_price("sell", D("101.37"), D("0"), D("0.01")) == D("101.37")


# -- default_exits: both rounded to the tick towards the entry ------------------------------------------------


def test_default_exits_buy_round_entry():
    assert default_exits("buy", D("100.00"), D("2"), D("4"), D("0.01")) == (D("98.00"), D("104.00"))


def test_default_exits_sell_round_entry_is_mirrored():
    assert default_exits("sell", D("100.00"), D("2"), D("4"), D("0.01")) == (D("102.00"), D("96.00"))


def test_default_exits_buy_stop_rounds_up_and_take_rounds_down_towards_the_entry():
    # stop 9.995 x 0.98 = 9.7951 -> up 9.80; take 9.995 x 1.04 = 10.3948 -> down 10.39
    assert default_exits("buy", D("9.995"), D("2"), D("4"), D("0.01")) == (D("9.80"), D("10.39"))


def test_default_exits_sell_stop_rounds_down_and_take_rounds_up_towards_the_entry():
    # stop 9.995 x 1.02 = 10.1949 -> down 10.19; take 9.995 x 0.96 = 9.5952 -> up 9.60
    assert default_exits("sell", D("9.995"), D("2"), D("4"), D("0.01")) == (D("10.19"), D("9.60"))


def test_default_exits_without_tick_are_exact():
    assert default_exits("buy", D("9.995"), D("2"), D("4"), None) == (D("9.7951"), D("10.3948"))


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_default_exits_never_cross_an_off_tick_entry(side):
    # entry 0.0995 = mid of 0.099 / 0.100; 0.0995 x 0.995 = 0.0990025, 0.0995 x 1.005 = 0.0999975
    entry = D("0.0995")
    stop, take = default_exits(side, entry, D("0.5"), D("0.5"), D("0.001"))
    assert take is not None
    if side == "buy":
        assert (stop, take) == (D("0.099"), D("0.100"))  # a tick below / above the entry
    else:
        assert (stop, take) == (D("0.100"), D("0.099"))


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_default_exits_on_a_tick_entry_with_a_tiny_percent_stay_a_tick_away(side):
    # 10.00 x 0.05% = 0.005 < the tick: rounding towards the entry would land on it
    stop, take = default_exits(side, D("10.00"), D("0.05"), D("0.05"), D("0.01"))
    assert (stop, take) == ((D("9.99"), D("10.01")) if side == "buy" else (D("10.01"), D("9.99")))


def test_default_exits_take_profit_zero_percent_is_none():
    assert default_exits("buy", D("100.00"), D("2"), D("0"), D("0.01")) == (D("98.00"), None)
    assert default_exits("sell", D("100.00"), D("2"), D("0"), D("0.01")) == (D("102.00"), None)


# -- method_name ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("kelly", "kelly_criterion"),
        ("volatility", "volatility_scaled"),
        ("fixed", "fixed_quantity"),
        ("quantity", "fixed_quantity"),
        ("notional", "fixed_notional"),
        ("fractional", "fixed_fractional"),
    ],
)
def test_method_name_resolves_aliases(raw, canonical):
    assert method_name(raw) == canonical


@pytest.mark.parametrize("canonical", SIZING_METHODS)
def test_method_name_accepts_canonical_names(canonical):
    assert method_name(canonical) == canonical


def test_method_name_is_case_insensitive():
    assert method_name("KELLY") == "kelly_criterion"
    assert method_name(" Fixed_Notional ") == "fixed_notional"
    assert method_name("Volatility_Scaled") == "volatility_scaled"


def test_method_name_auto_uses_fixed_fractional_with_a_stop_else_fixed_notional():
    assert method_name("auto", has_stop=True) == "fixed_fractional"
    assert method_name("auto", has_stop=False) == "fixed_notional"
    assert method_name("AUTO", has_stop=True) == "fixed_fractional"


def test_method_name_falls_back_to_the_default_when_raw_is_none():
    assert method_name(None) == "fixed_notional"  # default auto, no stop
    assert method_name(None, has_stop=True) == "fixed_fractional"
    assert method_name(None, default="kelly") == "kelly_criterion"


def test_method_name_unknown_raises_listing_the_allowed_methods():
    with pytest.raises(SizingError) as e:
        method_name("martingale")
    message = str(e.value)
    assert "'martingale'" in message
    assert "auto" in message
    for m in SIZING_METHODS:
        assert m in message


# -- size() through SizingInputs ------------------------------------------------------------------------------


def test_size_fixed_quantity_rounds_the_quantity_down_to_the_step():
    s = size("fixed_quantity", SizingInputs(D(10000), D(100), D("0.02"), D("0.001"), quantity=D("0.1234")))
    assert (s.quantity, s.risk_amount, s.method) == (D("0.123"), D("12.3"), "fixed_quantity")  # 0.123 x 100


def test_size_fixed_notional_spends_the_risk_fraction_of_equity():
    # 2% of 10,000 = 200 at 60 -> 3.3333... -> 3.333 on a 0.001 step; 3.333 x 60 = 199.98
    s = size("fixed_notional", SizingInputs(D(10000), D(60), D("0.02"), D("0.001")))
    assert (s.quantity, s.risk_amount, s.method) == (D("3.333"), D("199.98"), "fixed_notional")


def test_size_fixed_fractional_risks_the_fraction_over_the_stop():
    # 1% of 50,000 = 500 over 100 -> 95 (distance 5): 100 units, 500 at risk
    s = size("fixed_fractional", SizingInputs(D(50000), D(100), D("0.01"), stop=D(95)))
    assert (s.quantity, s.risk_amount, s.method) == (D(100), D(500), "fixed_fractional")


def test_size_kelly_criterion():
    # p 0.6, b 2: f* = 0.6 - 0.4 / 2 = 0.4, half 0.2 -> 2,000 / 50 = 40 units; at risk 40 x 50
    s = size("kelly_criterion", SizingInputs(D(10000), D(50), D("0.02"), confidence=D("0.6"), win_loss_ratio=D(2)))
    assert (s.quantity, s.risk_amount, s.method) == (D(40), D(2000), "kelly_criterion")
    # with a stop at 48: at risk 40 x 2
    s = size(
        "kelly_criterion",
        SizingInputs(D(10000), D(50), D("0.02"), stop=D(48), confidence=D("0.6"), win_loss_ratio=D(2)),
    )
    assert (s.quantity, s.risk_amount) == (D(40), D(80))


def test_size_kelly_criterion_defaults_to_even_odds():
    # b = 1: f* = 0.6 - 0.4 = 0.2, half 0.1 -> 1,000 / 50 = 20 units
    s = size("kelly_criterion", SizingInputs(D(10000), D(50), D("0.02"), confidence=D("0.6")))
    assert (s.quantity, s.risk_amount) == (D(20), D(1000))
    # confidence defaults to 0: f* = -1, no edge, nothing
    assert size("kelly_criterion", SizingInputs(D(10000), D(50), D("0.02"))).quantity == D(0)


def test_size_volatility_scaled():
    # 2% of 10,000 = 200 over 2 x 0.01 x 100 = 2: 100 units, 200 at risk
    s = size("volatility_scaled", SizingInputs(D(10000), D(100), D("0.02"), sigma=D("0.01")))
    assert (s.quantity, s.risk_amount, s.method) == (D(100), D(200), "volatility_scaled")


def test_size_fixed_quantity_without_quantity_is_refused():
    with pytest.raises(SizingError, match="fixed_quantity needs a quantity"):
        size("fixed_quantity", SizingInputs(D(10000), D(100), D("0.02")))


def test_size_fixed_fractional_without_stop_is_refused():
    with pytest.raises(SizingError, match="fixed_fractional needs a stop-loss price"):
        size("fixed_fractional", SizingInputs(D(10000), D(100), D("0.02")))


def test_size_volatility_scaled_without_sigma_is_refused():
    with pytest.raises(SizingError, match="volatility_scaled needs recent market data"):
        size("volatility_scaled", SizingInputs(D(10000), D(100), D("0.02"), sigma=None))


def test_size_unknown_method_is_refused():
    with pytest.raises(SizingError, match="unknown sizing method 'kelly'"):
        size("kelly", SizingInputs(D(10000), D(100), D("0.02")))


# -- cap() ----------------------------------------------------------------------------------------------------

SIZED = Sizing(D(100), D(500), "fixed_fractional")


def test_cap_under_or_at_the_cap_is_unchanged():
    assert cap(SIZED, D(150)) == (SIZED, False)
    assert cap(SIZED, D(100)) == (SIZED, False)


def test_cap_over_the_cap_rounds_down_and_scales_the_risk():
    # 40.0567 -> 40.05 on a 0.01 step; risk 500 x 40.05 / 100 = 200.25
    assert cap(SIZED, D("40.0567"), D("0.01")) == (Sizing(D("40.05"), D("200.25"), "fixed_fractional"), True)
    # default step 1e-8: 33.333333333333 -> 33.33333333; risk 500 x 33.33333333 / 100 = 166.66666665
    assert cap(SIZED, D("33.333333333333")) == (Sizing(D("33.33333333"), D("166.66666665"), "fixed_fractional"), True)


def test_cap_negative_max_gives_zero_quantity():
    capped, flag = cap(SIZED, D(-1))
    assert flag is True
    assert (capped.quantity, capped.risk_amount, capped.method) == (D(0), D(0), "fixed_fractional")


# -- breaches(): exposure = |position + working| x mark, as a fraction of equity ------------------------------


def limits(**kw: object) -> Limits:
    args: dict[str, object] = {"max_position_fraction": D("0.25"), "max_daily_loss": D("0.5")}
    args.update(kw)
    return Limits(**args)  # type: ignore[arg-type]


def exposure(**kw: object) -> Exposure:
    args: dict[str, object] = {
        "equity": D(10000),
        "day_start_equity": D(10000),
        "peak_equity": D(10000),
        "available": {},
        "positions": {},
        "working": {},
        "marks": {BTC: D(100), ETH: D(150), SOL: D(20)},
    }
    args.update(kw)
    return Exposure(**args)  # type: ignore[arg-type]


def test_breaches_none_within_limits():
    # BTC 20 x 100 = 0.20, ETH 10 x 150 = 0.15: total 0.35 of equity
    x = exposure(positions={BTC: D(20), ETH: D(10)})
    groups = (("majors", frozenset({BTC, ETH}), D("0.4")),)
    assert breaches(x, limits(max_total_exposure=D("0.4"), groups=groups)) == {}


def test_breaches_exactly_at_the_limit_is_not_a_breach():
    assert breaches(exposure(positions={BTC: D(25)}), limits()) == {}  # 25 x 100 = 0.25


def test_breaches_pair_over_max_position_size():
    # 20 held + 10 working = 30 x 100 = 3,000 = 0.30 of equity > 0.25
    out = breaches(exposure(positions={BTC: D(20)}, working={BTC: D(10)}), limits())
    assert set(out) == {f"pair:{BTC}"}
    assert out[f"pair:{BTC}"] == f"{BTC} exposure 0.3000 of equity is over MAX_POSITION_SIZE 0.25"


def test_breaches_counts_the_net_of_position_and_working():
    # |30 - 10| x 100 = 0.20: a working sell brings the pair under the limit
    assert breaches(exposure(positions={BTC: D(30)}, working={BTC: D(-10)}), limits()) == {}
    # a short counts by its size: |-30| x 100 = 0.30
    assert set(breaches(exposure(positions={BTC: D(-30)}), limits())) == {f"pair:{BTC}"}


def test_breaches_total_over_max_total_exposure():
    # 0.20 + 0.15 = 0.35 > 0.3, no pair over 0.25
    out = breaches(exposure(positions={BTC: D(20), ETH: D(10)}), limits(max_total_exposure=D("0.3")))
    assert set(out) == {"total"}
    assert "MAX_TOTAL_EXPOSURE" in out["total"]
    assert "0.3500" in out["total"]


def test_breaches_group_over_its_cap():
    # majors: 0.20 + 0.15 = 0.35 > 0.3; SOL 50 x 20 = 0.10 is outside the group
    groups = (("majors", frozenset({BTC, ETH}), D("0.3")), ("alts", frozenset({SOL}), D("0.2")))
    out = breaches(exposure(positions={BTC: D(20), ETH: D(10), SOL: D(50)}), limits(groups=groups))
    assert set(out) == {"group:majors"}
    assert out["group:majors"] == "group majors exposure 0.3500 of equity is over its limit 0.3"


def test_breaches_no_equity_reports_nothing():
    held = {BTC: D(1000), ETH: D(1000)}
    assert breaches(exposure(equity=D(0), positions=held), limits(max_total_exposure=D("0.1"))) == {}
    assert breaches(exposure(equity=D(-5), positions=held), limits(max_total_exposure=D("0.1"))) == {}


# -- headroom(): largest quantity MAX_POSITION_SIZE still allows in the intent's direction --------------------


def intent(side: str, pair: str = BTC, price: str = "100") -> Intent:
    return Intent(pair, side, D(1), D(price))


def test_headroom_buy_without_position_is_fraction_of_equity_over_mark():
    assert headroom(intent("buy"), exposure(), limits()) == D(25)  # 0.25 x 10,000 / 100


def test_headroom_buy_shrinks_with_an_existing_long():
    assert headroom(intent("buy"), exposure(positions={BTC: D(10)}), limits()) == D(15)  # 25 - 10
    assert headroom(intent("buy"), exposure(positions={BTC: D(10)}, working={BTC: D(5)}), limits()) == D(10)


def test_headroom_sell_with_a_long_is_cap_plus_position():
    assert headroom(intent("sell"), exposure(positions={BTC: D(10)}), limits()) == D(35)  # 25 + 10


def test_headroom_uses_the_mark_then_the_intent_price():
    assert headroom(intent("buy", price="100"), exposure(marks={BTC: D(200)}), limits()) == D("12.5")
    assert headroom(intent("buy", price="50"), exposure(marks={}), limits()) == D(50)  # 2,500 / 50


def test_headroom_is_never_negative():
    assert headroom(intent("buy"), exposure(positions={BTC: D(40)}), limits()) == D(0)  # 25 - 40
    assert headroom(intent("sell"), exposure(positions={BTC: D(-40)}), limits()) == D(0)  # 25 - 40
    assert headroom(intent("buy"), exposure(equity=D(0)), limits()) == D(0)
