"""The spec's ``symbol`` (BTCUSDT, BTC/USDT, BTC_USDT) matched against PAIRS (domain.symbols)."""

from __future__ import annotations

import pytest

from domain.symbols import SymbolError, match_symbol, spec_venue

PAIRS = ("BTC_USDT", "ETH_USDT", "ETH_BTC")


@pytest.mark.parametrize(
    ("symbol", "pair"),
    [
        ("BTCUSDT", "BTC_USDT"),
        ("btcusdt", "BTC_USDT"),
        ("BTC/USDT", "BTC_USDT"),
        ("BTC_USDT", "BTC_USDT"),
        ("btc-usdt", "BTC_USDT"),
        (" ETHBTC ", "ETH_BTC"),
        ("ETH/BTC", "ETH_BTC"),
    ],
)
def test_the_spellings_of_a_pair(symbol, pair):
    assert match_symbol(symbol, PAIRS) == pair


@pytest.mark.parametrize("symbol", ["", "XMRUSDT", "BTC/EUR", "USDT/BTC", "BTC//USDT", "BTC/USDT/X", "/", "BTCUSD"])
def test_anything_else_is_refused_with_the_pairs_listed(symbol):
    with pytest.raises(SymbolError) as e:
        match_symbol(symbol, PAIRS)
    assert "BTC_USDT" in str(e.value)


def test_a_run_together_symbol_naming_two_pairs_is_refused():
    with pytest.raises(SymbolError, match="several pairs"):
        match_symbol("ABCD", ("AB_CD", "ABC_D"))
    assert match_symbol("AB/CD", ("AB_CD", "ABC_D")) == "AB_CD"


# -- the spec's venue names (the facade's ``exchange``) ------------------------------------------------------

PAPER_ONLY = [("paper", True)]


@pytest.mark.parametrize(
    ("name", "venues", "venue"),
    [
        ("binance", PAPER_ONLY, "paper"),  # the default setup: the spec's examples trade on paper
        ("Alpaca", PAPER_ONLY, "paper"),
        ("binance", [("sim", True)], "sim"),  # the one paper venue, whatever its name
        ("paper", PAPER_ONLY, "paper"),
        ("kraken", PAPER_ONLY, "kraken"),  # a name the spec does not use: the endpoint refuses it
        ("binance", [("binance", True)], "binance"),  # configured: itself
        ("binance", [("alpha", True), ("beta", True)], "binance"),  # two paper venues: which? refused
        ("binance", [("paper", True), ("bybit", False)], "binance"),  # a live venue configured: never paper
        ("binance", [("bybit", False)], "binance"),
        ("alpaca", [("binance", False)], "alpaca"),
    ],
)
def test_a_spec_venue_is_the_paper_venue_only_when_that_is_the_only_venue(name, venues, venue):
    assert spec_venue(name, venues) == venue
