"""The pure parts of the ccxt venue: client ids, URL rewrite, error classes, market rules, the min/max
amount risk rule, secrets kept out of error text."""

from __future__ import annotations

import re
from decimal import Decimal

import ccxt
import pytest
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE
from hypothesis import given
from hypothesis import strategies as st

from actors.venues.ccxt_errors import classify, safe_message
from actors.venues.ccxt_markets import market_rules, native_types, pair_of, symbol_of
from actors.venues.ccxt_urls import parse_base, rewrite_api_urls
from domain.risk import Approval, Denial, check_order
from domain.venue_ids import ALPACA, BINANCE, DEFAULT, MAPPED_PREFIX, looks_mapped, rule_for, venue_client_id
from schemas.messages import Book, MarketRules, OrderRequest

RULES = [BINANCE, ALPACA, DEFAULT]
ids = st.text(min_size=1, max_size=200)
our_ids = st.from_regex(r"[A-Za-z0-9_.:\-=]{1,64}", fullmatch=True)


# -- client order ids ---------------------------------------------------------------------------------
@given(ids | our_ids, st.sampled_from(RULES))
def test_mapped_id_always_fits_the_venue_rule(ours: str, rule) -> None:
    assert rule.fits(venue_client_id(ours, rule))


@given(ids | our_ids, st.sampled_from(RULES))
def test_mapping_is_deterministic(ours: str, rule) -> None:
    assert venue_client_id(ours, rule) == venue_client_id(str(ours), rule)
    assert venue_client_id(ours, rule) == venue_client_id("".join(ours), rule)


@given(our_ids, st.sampled_from(RULES))
def test_an_id_that_fits_is_sent_unchanged(ours: str, rule) -> None:
    if rule.fits(ours) and not looks_mapped(ours):
        assert venue_client_id(ours, rule) == ours
    else:
        assert venue_client_id(ours, rule).startswith(MAPPED_PREFIX)


@given(st.lists(ids | our_ids, min_size=2, max_size=50, unique=True), st.sampled_from(RULES))
def test_mapping_is_injective_in_practice(many: list[str], rule) -> None:
    out = [venue_client_id(x, rule) for x in many]
    assert len(set(out)) == len(out)


def test_an_id_that_looks_mapped_is_mapped_again_so_it_cannot_collide() -> None:
    mapped = venue_client_id("x" * 40, BINANCE)  # too long for Binance: mapped
    assert mapped.startswith(MAPPED_PREFIX) and len(mapped) == 36
    assert venue_client_id(mapped, BINANCE) != mapped  # someone sending that exact id gets another one


def test_known_values_are_stable_across_releases() -> None:
    # the mapping must never change: ids sent by an earlier run are looked up by it after a restart
    assert venue_client_id("api-" + "a" * 40, BINANCE) == "h-d61b33ee79ce6b0f288161bc06b629b5c5"
    assert venue_client_id("tbx:close=BTC_USDT", BINANCE) == venue_client_id("tbx:close=BTC_USDT", BINANCE)
    assert venue_client_id("tbx:sig-1", BINANCE) == "tbx:sig-1"
    assert venue_client_id("ord=1", ALPACA) == "ord=1"
    assert rule_for("binance") is BINANCE and rule_for("alpaca") is ALPACA and rule_for("kraken") is DEFAULT
    assert BINANCE.pattern.pattern == r"[.A-Z:/a-z0-9_-]{1,36}"


# -- EXCHANGE_API_URL -----------------------------------------------------------------------------------
def test_rewrite_replaces_scheme_and_host_of_every_http_url_and_keeps_paths_and_wss() -> None:
    api = {
        "public": "https://api.binance.com/api/v3",
        "v1": "https://api.binance.com/api/v1",
        "nested": {"trader": "https://api.{hostname}", "list": ["http://x.example:81/a/b?c=1"]},
        "ws": "wss://stream.binance.com:9443/ws",
        "n": 5,
    }
    out = rewrite_api_urls(api, "http://127.0.0.1:8080/")
    assert out == {
        "public": "http://127.0.0.1:8080/api/v3",
        "v1": "http://127.0.0.1:8080/api/v1",
        "nested": {"trader": "http://127.0.0.1:8080", "list": ["http://127.0.0.1:8080/a/b?c=1"]},
        "ws": "wss://stream.binance.com:9443/ws",
        "n": 5,
    }
    assert api["public"] == "https://api.binance.com/api/v3"  # a copy: the input is unchanged


@pytest.mark.parametrize("bad", ["127.0.0.1:80", "http://h/api", "ftp://h", "http://u:p@h", "http://h?x=1"])
def test_rewrite_base_must_be_scheme_and_host_only(bad: str) -> None:
    with pytest.raises(ValueError, match="http"):
        parse_base(bad)


# -- ccxt's error classes ---------------------------------------------------------------------------------
def test_ccxt_error_hierarchy_we_rely_on() -> None:
    """ccxt has moved these classes around between releases: pin what the classification assumes."""
    sub = issubclass
    assert sub(ccxt.DuplicateOrderId, ccxt.InvalidOrder) and sub(ccxt.OrderImmediatelyFillable, ccxt.InvalidOrder)
    assert sub(ccxt.OrderNotFound, ccxt.InvalidOrder) and sub(ccxt.InvalidOrder, ccxt.ExchangeError)
    assert sub(ccxt.InsufficientFunds, ccxt.ExchangeError) and not sub(ccxt.InsufficientFunds, ccxt.InvalidOrder)
    assert sub(ccxt.BadSymbol, ccxt.BadRequest) and sub(ccxt.BadRequest, ccxt.ExchangeError)
    assert sub(ccxt.PermissionDenied, ccxt.AuthenticationError)
    for cls in (ccxt.RateLimitExceeded, ccxt.DDoSProtection, ccxt.RequestTimeout, ccxt.ExchangeNotAvailable):
        assert sub(cls, ccxt.NetworkError)
    assert not sub(ccxt.RateLimitExceeded, ccxt.DDoSProtection) and not sub(ccxt.DDoSProtection, ccxt.RateLimitExceeded)
    assert sub(ccxt.InvalidNonce, ccxt.NetworkError) and sub(ccxt.OnMaintenance, ccxt.ExchangeNotAvailable)
    assert sub(ccxt.NetworkError, ccxt.OperationFailed) and sub(ccxt.BadResponse, ccxt.OperationFailed)
    assert not sub(ccxt.OperationFailed, ccxt.ExchangeError) and not sub(ccxt.NetworkError, ccxt.ExchangeError)


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (ccxt.InsufficientFunds, "rejected", "INSUFFICIENT_FUNDS"),
        (ccxt.OrderImmediatelyFillable, "rejected", "INVALID_ORDER"),
        (ccxt.InvalidOrder, "maybe_duplicate", "INVALID_ORDER"),  # Binance -2010 "Duplicate order sent."
        (ccxt.DuplicateOrderId, "duplicate", None),
        (ccxt.BadSymbol, "rejected", "BAD_SYMBOL"),
        (ccxt.BadRequest, "maybe_duplicate", "BAD_REQUEST"),  # Alpaca's duplicate client_order_id
        (ccxt.AuthenticationError, "rejected", "KEYS_REFUSED"),
        (ccxt.PermissionDenied, "rejected", "KEYS_REFUSED"),
        (ccxt.NotSupported, "rejected", "NOT_SUPPORTED"),
        (ccxt.MarketClosed, "rejected", "VENUE_REJECTED"),
        (ccxt.RateLimitExceeded, "rate_limited", None),
        (ccxt.DDoSProtection, "rate_limited", None),
        (ccxt.InvalidNonce, "not_processed", None),
        (ccxt.RequestTimeout, "unknown", None),  # Binance -1007
        (ccxt.NetworkError, "unknown", None),
        (ccxt.ExchangeNotAvailable, "unknown", None),
        (ccxt.OnMaintenance, "unknown", None),
        (ccxt.OperationFailed, "unknown", None),  # Binance -1006
        (ccxt.BadResponse, "unknown", None),
        (ccxt.NullResponse, "unknown", None),
        (ccxt.ExchangeError, "unknown", None),  # a code ccxt does not map: it may have acted
        (RuntimeError, "unknown", None),
    ],
)
def test_error_classification_table(exc: type[Exception], kind: str, code: str | None) -> None:
    verdict = classify(exc("binance boom"))
    assert (verdict.kind, verdict.code) == (kind, code)


def test_a_connection_never_made_is_not_processed_but_one_dropped_after_sending_is_unknown() -> None:
    """Fallback to another venue hangs on this: only a request that never left (connect refused, no such host)
    is certainly not at the venue; a connection closed after the request was written may have acted."""
    import socket

    import aiohttp

    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("127.0.0.1", 1, False, True, None, None, None),
        ConnectionRefusedError(111, "Connection refused"),
    )
    for cause, kind in (
        (refused, "not_processed"),
        (socket.gaierror(-2, "Name or service not known"), "not_processed"),
        (aiohttp.ServerDisconnectedError(), "unknown"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), "unknown"),
    ):
        try:
            raise ccxt.ExchangeNotAvailable("binance POST https://x/api/v3/order") from cause
        except ccxt.ExchangeNotAvailable as e:
            assert classify(e).kind == kind, cause


def test_safe_message_strips_query_strings_keys_and_secrets() -> None:
    key, secret = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", "s3cr3t-VALUE"
    raw = (
        f"binance GET https://api.binance.com/api/v3/account?timestamp=1&signature=abcdef0123 401 "
        f'{{"code":-2015,"msg":"Invalid API-key"}} apiKey={key} secret: {secret} X-MBX-APIKEY: {key}'
    )
    out = safe_message(raw, (key, secret))
    assert key not in out and secret not in out and "abcdef0123" not in out and "timestamp=1" not in out
    assert "https://api.binance.com/api/v3/account?***" in out and "Invalid API-key" in out
    assert len(safe_message("x" * 1000 + " y" * 1000)) <= 300


# -- markets ------------------------------------------------------------------------------------------------
BINANCE_MARKET = {
    "symbol": "BTC/USDT",
    "precision": {"amount": 1e-05, "price": 0.01},
    "limits": {"amount": {"min": 1e-05, "max": 9000.0}, "cost": {"min": 5.0, "max": None}},
    "maker": 0.001,
    "taker": 0.001,
    "info": {"orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"]},
}


def test_market_rules_in_tick_size_mode() -> None:
    r = market_rules("BTC_USDT", BINANCE_MARKET, TICK_SIZE)
    assert r == MarketRules(
        pair="BTC_USDT",
        tick_size=Decimal("0.01"),
        amount_step=Decimal("0.00001"),
        min_notional=Decimal(5),
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.001"),
        min_amount=Decimal("0.00001"),
        max_amount=Decimal(9000),
    )


def test_market_rules_in_decimal_places_mode_and_without_limits() -> None:
    market = {"precision": {"amount": 4, "price": 1}, "limits": {}, "taker": 0.0026}
    r = market_rules("ETH_EUR", market, DECIMAL_PLACES, {"maker": 0.0016})
    assert (r.amount_step, r.tick_size) == (Decimal("0.0001"), Decimal("0.1"))
    assert (r.min_notional, r.min_amount, r.max_amount) == (0, None, None)
    assert (r.maker_fee, r.taker_fee) == (Decimal("0.0016"), Decimal("0.0026"))
    assert market_rules("X_Y", {"precision": {"amount": 3, "price": 5}}, SIGNIFICANT_DIGITS).amount_step == 0


def test_pairs_and_symbols() -> None:
    assert symbol_of("BTC_USDT") == "BTC/USDT" and pair_of("BTC/USDT") == "BTC_USDT"
    assert pair_of("BTC/USDT:USDT") == "BTC_USDT"


def test_native_types_from_features_and_binance_order_types() -> None:
    binance = {"spot": {"createOrder": {"triggerPrice": True, "stopLossPrice": True, "takeProfitPrice": True}}}
    full = dict(
        BINANCE_MARKET, info={"orderTypes": ["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]}
    )
    assert native_types("binance", binance, [full]) == {
        "stop_loss",
        "stop_loss_limit",
        "take_profit",
        "take_profit_limit",
    }
    assert native_types("binance", binance, [full, BINANCE_MARKET]) == {"stop_loss_limit", "take_profit_limit"}
    alpaca = {"spot": {"createOrder": {"triggerPrice": True, "stopLossPrice": False, "takeProfitPrice": False}}}
    assert native_types("alpaca", alpaca, []) == {"stop_loss_limit"}
    assert native_types("kraken", binance, []) == {"stop_loss_limit", "take_profit_limit"}
    assert native_types("kraken", {"spot": {"createOrder": {}}}, []) == frozenset()


# -- the risk-gate's min/max amount rule ---------------------------------------------------------------
RULES_BTC = MarketRules(
    pair="BTC_USDT",
    tick_size=Decimal("0.01"),
    amount_step=Decimal("0.00001"),
    min_notional=Decimal(5),
    maker_fee=Decimal(0),
    taker_fee=Decimal(0),
    min_amount=Decimal("0.001"),
    max_amount=Decimal(100),
)
BOOK = Book(pair="BTC_USDT", bids=[(Decimal(60000), Decimal(1000))], asks=[(Decimal("60000.01"), Decimal(1000))], ts=1)


def _check(quantity: str, rules: MarketRules = RULES_BTC) -> Denial | Approval:
    req = OrderRequest(client_order_id="c1", pair="BTC_USDT", side="buy", quantity=Decimal(quantity), type="limit",
                       price=Decimal(60000))  # fmt: skip
    return check_order(req, pairs=("BTC_USDT",), book=BOOK, rules=rules)


def test_below_the_venues_minimum_amount_is_denied_naming_quantity() -> None:
    d = _check("0.0009")
    assert isinstance(d, Denial) and (d.code, d.field) == ("MIN_AMOUNT", "quantity")
    assert "minimum amount 0.001" in d.reason and "0.0009" in d.reason


def test_above_the_venues_maximum_amount_is_denied_naming_quantity() -> None:
    d = _check("100.00001")
    assert isinstance(d, Denial) and (d.code, d.field) == ("MAX_AMOUNT", "quantity")
    assert "maximum amount 100" in d.reason


def test_within_the_venues_amount_limits_passes_and_no_limits_means_none() -> None:
    assert isinstance(_check("0.001"), Approval) and isinstance(_check("100"), Approval)
    no_limits = MarketRules(**{**{f: getattr(RULES_BTC, f) for f in RULES_BTC.__struct_fields__}, "min_amount": None,
                               "max_amount": None})  # fmt: skip
    assert isinstance(_check("0.0009", no_limits), Approval)


def test_market_rules_encode_the_new_fields_in_camel_case() -> None:
    from bus.codec import encode

    raw = encode(RULES_BTC)
    assert re.search(rb'"minAmount":\s*"0.001"', raw) and re.search(rb'"maxAmount":\s*"100"', raw)
