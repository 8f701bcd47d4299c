"""A key swap (``CcxtVenue.swap_keys``) against the local exchanges: calls already on the old client - one
waiting in its rate limiter (not signed yet), an Alpaca lookup through a module helper - end there before the
swap answers, so the old key may be revoked once it has; the new keys are hidden before the new client's first
call; a check's temporary client spends CHECK_SHARE of the venue's request budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import ccxt
import pytest

from actors.order_router.keys import CHECK_SHARE
from actors.venues.base import VenueOrderRequest
from actors.venues.ccxt_venue import CcxtVenue
from tests.exchanges.alpaca import AlpacaTestExchange
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually

KEY, SECRET = "oldkey-0123456789-OLDK", "oldsecret-0123456789"
NEW_KEY, NEW_SECRET = "NewKey-Ab12Cd34", "NewSecret-Zz98"  # short: the long-token rule would not hide them


@pytest.fixture
async def binance() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(api_key=KEY, secret=SECRET, symbols=("BTC/USDT",), balances={"USDT": "100000"})
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59990", "1")], asks=[("60000", "1")])
    yield ex
    await ex.stop()


@pytest.fixture
async def alpaca() -> AsyncIterator[AlpacaTestExchange]:
    ex = AlpacaTestExchange(api_key=KEY, secret=SECRET, cash="100000")
    await ex.start()
    ex.set_book("BTC/USD", bids=[("49990", "1")], asks=[("50010", "1")])
    yield ex
    await ex.stop()


def venue_of(exchange_id: str, url: str, **kw: object) -> CcxtVenue:
    args: dict = {"api_key": KEY, "secret": SECRET, "api_url": url, "poll_ms": 60_000, "stream": "off"}
    args.update(lookup_delay_s=0.05, backoff_s=0.05, ccxt_config={"rateLimit": 5})
    args.update(kw)
    return CcxtVenue(exchange_id, **args)  # type: ignore[arg-type]


async def test_a_call_queued_in_the_old_clients_limiter_is_sent_before_the_swap_answers(binance) -> None:
    binance.add_key(NEW_KEY, NEW_SECRET)
    v = venue_of("binance", binance.base_url, pairs=("BTC_USDT",))
    await v.start()
    try:
        limiter = v.ex.throttler
        # the old client's budget spent: its next call waits in its limiter (about a window), not signed yet
        limiter.timestamps.append({"timestamp": time.time() * 1000, "cost": limiter.config["maxWeight"]})
        sent = len(binance.requests_for("GET", "/api/v3/account"))
        queued = asyncio.create_task(v.fetch_balance())
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(binance.requests_for("GET", "/api/v3/account")) == sent and not queued.done()
        await v.swap_keys(NEW_KEY, NEW_SECRET)
        assert queued.done()  # sent (with the old key) and answered before the swap answered
        binance.revoke_key(KEY)  # so revoking the old key once the rotation answered breaks nothing
        assert (await queued)["USDT"].total == Decimal("100000")
        assert [r.api_key for r in binance.requests_for("GET", "/api/v3/account")][sent:] == [KEY]
        await v.fetch_balance()
        assert binance.requests_for("GET", "/api/v3/account")[-1].api_key == NEW_KEY
    finally:
        await v.stop()


async def test_an_alpaca_lookup_on_its_way_ends_on_its_client_before_the_swap_answers(alpaca) -> None:
    v = venue_of("alpaca", alpaca.base_url, pairs=("BTC_USD",))
    await v.start()
    try:
        req = VenueOrderRequest(
            client_order_id="swap-1", pair="BTC_USD", side="buy", type="market", quantity=Decimal("0.01")
        )
        assert (await v.create_order(req)).status != "rejected"
        alpaca.inject("slow", "GET", "/v2/orders:by_client_order_id", seconds=1.5)
        lookup = asyncio.create_task(v.fetch_order("swap-1", "BTC_USD"))

        def slow_seen() -> bool:
            return any(r.get("fault") == "slow" for r in alpaca.requests)

        await eventually(lambda: asyncio.sleep(0, slow_seen()), what="the lookup at the venue")
        await v.swap_keys(KEY, SECRET)  # a new client (same keys: this venue takes one): the old one is closed
        assert lookup.done()
        found = await lookup  # not failed by its client closed under it ("Session is closed")
        assert found is not None and found.client_order_id == "swap-1"
        assert await v.fetch_order("swap-1", "BTC_USD") is not None  # and the new client works
    finally:
        await v.stop()


async def test_an_error_of_the_new_client_echoing_its_key_is_described_without_it(binance) -> None:
    v = venue_of("binance", binance.base_url, pairs=("BTC_USDT",))
    await v.start()
    try:
        binance.inject_fault("echo_key", "GET", "/api/v3/exchangeInfo", echo=NEW_KEY)
        with pytest.raises(ccxt.AuthenticationError) as info:
            await v.swap_keys(NEW_KEY, NEW_SECRET)
        assert NEW_KEY in str(info.value)  # the venue did echo it
        described = v.describe(info.value)
        assert "Invalid API-key ***" in described and NEW_KEY not in described
        last_error = v.health().last_error or ""
        assert "Invalid API-key" in last_error and NEW_KEY not in last_error
    finally:
        await v.stop()


async def test_a_checks_temporary_client_spends_check_share_of_the_budget() -> None:
    v = venue_of("binance", "http://127.0.0.1:1", pairs=("BTC_USDT",), rate_share=0.75)
    temp = v.with_keys(NEW_KEY, NEW_SECRET, share=CHECK_SHARE)
    same = v.with_keys(NEW_KEY, NEW_SECRET)
    try:
        assert temp.ex.rateLimit == pytest.approx(v.ex.rateLimit * 0.75 / CHECK_SHARE)
        assert same.ex.rateLimit == pytest.approx(v.ex.rateLimit)
    finally:
        for venue in (v, temp, same):
            await venue.ex.close()
