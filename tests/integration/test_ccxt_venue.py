"""The ccxt venue (real ccxt) against the local Binance spot test exchange, pointed at it with
EXCHANGE_API_URL: every order type it sends, lookups by client id, fees, faults, polling, health."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from actors.venues.base import (
    OutcomeUnknown,
    VenueOrder,
    VenueOrderRequest,
    VenueRefused,
    VenueStartError,
    VenueTrade,
    VenueUnavailable,
)
from actors.venues.ccxt_venue import CcxtVenue
from config.settings import load_settings
from domain.venue_ids import BINANCE, venue_client_id
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually

KEY, SECRET = "binance-test-key-0123456789", "binance-test-secret-abcdef"
D = Decimal


@pytest.fixture
async def exchange() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(
        api_key=KEY, secret=SECRET, symbols=("BTC/USDT", "ETH/USDT"), balances={"USDT": "100000", "BTC": "1"}
    )
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59990", "1")], asks=[("60000", "0.004"), ("60010", "1")])
    ex.set_book("ETH/USDT", bids=[("2999", "10")], asks=[("3001", "10")])
    yield ex
    await ex.stop()


def make(exchange: BinanceTestExchange, **kw: object) -> CcxtVenue:
    args: dict = {"pairs": ("BTC_USDT", "ETH_USDT"), "api_key": KEY, "secret": SECRET, "api_url": exchange.base_url}
    args.update(poll_ms=50, lookup_delay_s=0.05, backoff_s=0.05, stream="off", ccxt_config={"rateLimit": 5})
    args.update(kw)
    return CcxtVenue("binance", **args)  # type: ignore[arg-type]


@pytest.fixture
async def venue(exchange: BinanceTestExchange) -> AsyncIterator[CcxtVenue]:
    v = make(exchange)
    await v.start()
    yield v
    await v.stop()


def req(cid: str, **kw: object) -> VenueOrderRequest:
    base: dict = {"client_order_id": cid, "pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": D("0.01")}
    base.update(kw)
    return VenueOrderRequest(**base)


def posts(exchange: BinanceTestExchange, vcid: str) -> int:
    return len(exchange.requests_for("POST", "/api/v3/order", newClientOrderId=vcid))


async def test_start_check_markets_native_types_and_health(venue: CcxtVenue) -> None:
    assert venue.native_types == {"stop_loss", "stop_loss_limit", "take_profit", "take_profit_limit"}
    rules = {r.pair: r for r in await venue.markets()}
    btc = rules["BTC_USDT"]
    assert (btc.tick_size, btc.amount_step, btc.min_notional) == (D("0.01"), D("0.00001"), D(5))
    assert (btc.min_amount, btc.max_amount) == (D("0.00001"), D(9000))
    await venue.fetch_balance()
    h = venue.health()
    assert h.name == "binance" and h.connected is True and h.update_mode == "polling"
    assert h.last_latency_ms is not None and h.rate_limit_used is not None and 0 <= h.rate_limit_used <= 1


async def test_wrong_keys_unknown_pair_and_clock_skew_stop_the_start(exchange: BinanceTestExchange) -> None:
    bad = make(exchange, secret="not-the-secret")
    with pytest.raises(VenueStartError, match=r"^keys refused by binance: ") as e:
        await bad.start()
    assert "not-the-secret" not in str(e.value) and KEY not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VenueStartError, match="XMR_USDT not listed by binance"):
        await make(exchange, pairs=("BTC_USDT", "XMR_USDT")).start()
    exchange.clock_offset_ms = 60_000
    with pytest.raises(VenueStartError):
        await make(exchange).start()


async def test_market_buy_pays_the_commission_in_btc(venue: CcxtVenue, exchange) -> None:
    o = await venue.create_order(req("mkt-1", price=D(60010)))  # a price on a market order is not sent
    assert (o.status, o.filled, o.client_order_id) == ("closed", D("0.01"), "mkt-1")
    assert [(t.quantity, t.price) for t in o.trades] == [(D("0.004"), D(60000)), (D("0.006"), D(60010))]
    assert [(t.fee, t.fee_currency) for t in o.trades] == [(D("0.000004"), "BTC"), (D("0.000006"), "BTC")]
    venue_ids = {str(t.trade_id) for t in exchange.trades("BTC/USDT")}
    assert {t.trade_id for t in o.trades} == venue_ids
    [sent] = exchange.requests_for("POST", "/api/v3/order", newClientOrderId="mkt-1")
    assert sent.params["type"] == "MARKET" and "price" not in sent.params and "quoteOrderQty" not in sent.params
    assert "timeInForce" not in sent.params and "reduceOnly" not in sent.params
    fetched = await venue.fetch_order("mkt-1", "BTC_USDT")
    assert fetched is not None

    def key(t: VenueTrade) -> tuple:
        return t.trade_id, t.quantity, t.price, t.fee, t.fee_currency, t.venue_order_id

    assert [key(t) for t in fetched.trades] == [key(t) for t in o.trades]


async def test_limit_post_only_ioc_and_native_stops(venue: CcxtVenue, exchange) -> None:
    rest = await venue.create_order(req("lim-1", type="limit", price=D(59000)))
    assert rest.status == "open" and rest.filled == 0
    po = await venue.create_order(req("po-1", type="limit", price=D(59500), post_only=True))
    assert po.status == "open"
    [sent] = exchange.requests_for("POST", "/api/v3/order", newClientOrderId="po-1")
    assert sent.params["type"] == "LIMIT_MAKER" and "timeInForce" not in sent.params
    taking = await venue.create_order(req("po-2", type="limit", price=D(60000), post_only=True))
    assert (taking.status, taking.code) == ("rejected", "INVALID_ORDER") and taking.reason
    ioc = await venue.create_order(req("ioc-1", type="limit", price=D(60000), time_in_force="IOC"))
    assert ioc.status in ("expired", "canceled", "closed") and ioc.filled == D("0.004")
    kinds = {
        "stop_loss": dict(side="sell", stop_price=D(58000)),
        "stop_loss_limit": dict(side="sell", stop_price=D(58000), price=D(57900)),
        "take_profit": dict(side="sell", stop_price=D(62000)),
        "take_profit_limit": dict(side="sell", stop_price=D(62000), price=D(62100)),
    }
    for kind, extra in kinds.items():
        o = await venue.create_order(req(f"{kind}-1", type=kind, **extra))
        assert o.status == "open", (kind, o.reason)
        [sent] = exchange.requests_for("POST", "/api/v3/order", newClientOrderId=f"{kind}-1")
        assert sent.params["type"] == kind.upper() and D(sent.params["stopPrice"]) == extra["stop_price"]


async def test_a_value_off_the_step_is_rejected_not_rounded(venue: CcxtVenue, exchange) -> None:
    o = await venue.create_order(req("step-1", quantity=D("0.012345")))
    assert (o.status, o.code) == ("rejected", "INVALID_ORDER")
    assert "0.012345" in (o.reason or "") and "0.00001" in (o.reason or "")
    assert not exchange.requests_for("POST", "/api/v3/order", newClientOrderId="step-1")


async def test_a_long_client_id_is_mapped_and_found_again(venue: CcxtVenue, exchange) -> None:
    cid = "api-" + "x" * 50
    o = await venue.create_order(req(cid, type="limit", price=D(59000)))
    vcid = venue_client_id(cid, BINANCE)
    assert o.client_order_id == cid and exchange.orders(client_order_id=vcid)
    fresh = make(exchange)  # another run: the same mapping finds it
    await fresh.start()
    try:
        fresh.track([cid])
        found = await fresh.fetch_order(cid, "BTC_USDT")
        assert found is not None and found.client_order_id == cid and not found.external
    finally:
        await fresh.stop()


async def test_cancel_and_edit(venue: CcxtVenue) -> None:
    await venue.create_order(req("c-1", type="limit", price=D(59000)))
    done = await venue.cancel_order("c-1", "BTC_USDT")
    assert done.status == "canceled"
    with pytest.raises(VenueRefused, match="canceled"):
        await venue.cancel_order("c-1", "BTC_USDT")
    with pytest.raises(VenueRefused, match="unknown"):
        await venue.cancel_order("never", "BTC_USDT")
    with pytest.raises(VenueRefused, match=r"^binance cannot change an order in place"):
        await venue.edit_order("c-1", "BTC_USDT", quantity=D("0.005"))
    assert await venue.fetch_order("never", "BTC_USDT") is None


async def test_lost_answer_returns_the_one_order_found_by_client_id(venue: CcxtVenue, exchange) -> None:
    exchange.inject_fault("lost_after_place")
    o = await venue.create_order(req("lost-1"))
    assert o.client_order_id == "lost-1" and o.status == "closed" and o.filled == D("0.01")
    assert posts(exchange, "lost-1") == 1 and len(exchange.orders(client_order_id="lost-1")) == 1


@pytest.mark.parametrize("fault", ["unknown_status", "drop_connection"])
async def test_unknown_outcome_that_never_placed_raises_and_is_not_sent_again(
    venue: CcxtVenue, exchange, fault: str
) -> None:
    exchange.inject_fault(fault, placed=False)
    with pytest.raises(OutcomeUnknown, match="unk-1"):
        await venue.create_order(req("unk-1"))
    assert posts(exchange, "unk-1") == 1 and not exchange.orders(client_order_id="unk-1")


async def test_unknown_status_that_placed_returns_the_order(venue: CcxtVenue, exchange) -> None:
    exchange.inject_fault("unknown_status", placed=True)
    o = await venue.create_order(req("unk-2"))
    assert o.status == "closed" and posts(exchange, "unk-2") == 1


async def test_rate_limit_is_backed_off_then_unavailable_after_the_budget(venue: CcxtVenue, exchange) -> None:
    exchange.inject_fault("http_429", times=2, retry_after=0)
    o = await venue.create_order(req("rl-1"))
    assert o.status == "closed" and posts(exchange, "rl-1") == 3
    exchange.inject_fault("http_418", times=10, retry_after=0)
    with pytest.raises(VenueUnavailable, match="rate limit"):
        await venue.create_order(req("rl-2"))
    assert not exchange.orders(client_order_id="rl-2")


async def test_insufficient_funds_is_rejected_with_its_code(venue: CcxtVenue) -> None:
    o = await venue.create_order(req("poor-1", type="limit", price=D(59000), quantity=D(50)))
    assert (o.status, o.code) == ("rejected", "INSUFFICIENT_FUNDS") and "insufficient" in (o.reason or "").lower()


async def test_duplicate_client_id_of_an_open_order_is_that_order(venue: CcxtVenue, exchange) -> None:
    first = await venue.create_order(req("dup-1", type="limit", price=D(59000)))
    again = await venue.create_order(req("dup-1", type="limit", price=D(59000)))  # -2010 Duplicate order sent.
    assert again.venue_order_id == first.venue_order_id and len(exchange.orders(client_order_id="dup-1")) == 1


async def test_polling_passes_a_resting_fill_once_and_external_orders(venue: CcxtVenue, exchange) -> None:
    got: list[tuple[VenueOrder, list[VenueTrade]]] = []

    async def listener(o: VenueOrder, new: list[VenueTrade]) -> None:
        got.append((o, new))

    venue.set_listener(listener)
    await venue.create_order(req("rest-1", type="limit", price=D(59000), quantity=D("0.002")))
    exchange.inject_fault("trade_reported_twice", "GET", "/api/v3/myTrades", times=1000)
    exchange.set_book("BTC/USDT", bids=[("58000", "1")], asks=[("58990", "1")])  # crosses the resting buy

    def mine() -> list[tuple[VenueOrder, list[VenueTrade]]]:
        return [g for g in got if g[0].client_order_id == "rest-1"]

    await eventually(lambda: asyncio.sleep(0, [t for _, new in mine() for t in new]), what="the fill")
    await asyncio.sleep(0.3)  # more polls, the trade still listed twice
    trades = [t for _, new in mine() for t in new]
    assert len(trades) == 1 and trades[0].quantity == D("0.002") and trades[0].liquidity == "maker"
    assert mine()[-1][0].status == "closed" and mine()[-1][0].trades == trades
    exchange.place_external_order("BTC/USDT", "buy", "limit", "0.001", "50000", client_order_id="web_abc")
    ext = await eventually(lambda: asyncio.sleep(0, [g for g in got if g[0].client_order_id == "web_abc"]))
    assert ext[0][0].external is True


def test_factory_builds_the_ccxt_venue_from_settings() -> None:
    from actors.venues.factory import make_ccxt_venue_of
    from config.venues import venue_configs

    live = {"LIVE_TRADING": "true", "PAPER_TRADING": "false", "API_TOKEN": "t", "EXCHANGE": "binance"}
    keys = {"EXCHANGE_API_KEY": "k", "EXCHANGE_API_SECRET": "s"}
    s = load_settings(live | keys | {"EXCHANGE_API_URL": "http://127.0.0.1:9", "EXCHANGE_TIMEOUT_MS": "1500"})
    v = make_ccxt_venue_of(venue_configs(s)[0])
    assert (
        v.ex.timeout == 1500 and v.ex.enableRateLimit and v.ex.urls["api"]["public"].startswith("http://127.0.0.1:9/")
    )
    assert v.name == "binance" and v.exchange_id == "binance"
    asyncio.run(v.ex.close())
    s = load_settings(
        live | {"EXCHANGES": "binance,bn2=binance", "BINANCE_API_KEY": "k1", "BINANCE_API_SECRET": "s1"}
        | {"BN2_API_KEY": "k2", "BN2_API_SECRET": "s2", "BN2_API_URL": "http://127.0.0.1:9"}
    )  # fmt: skip
    v = make_ccxt_venue_of(venue_configs(s)[1])  # a second account: its own name, binance's behaviour
    assert (v.name, v.exchange_id, v.ex.apiKey) == ("bn2", "binance", "k2")
    assert v.ex.options["fetchMarkets"]["types"] == ["spot"] and v.ex.options["fetchCurrencies"] is False
    asyncio.run(v.ex.close())


async def test_the_trades_poll_starts_from_the_newest_trade_listed_even_one_of_ours_already_seen(
    venue: CcxtVenue, exchange
) -> None:
    """Our orders' trades are seen with their answers; the poll's start must still move past them, or the venue's
    bounded answer from a start that stands still would one day leave new trades out."""
    start = venue.since["BTC_USDT"]
    done = await venue.create_order(req("since-1"))
    assert done.status == "closed" and done.trades
    await venue.poll_once(["BTC_USDT"])
    assert venue.since["BTC_USDT"] >= max(t.ts for t in done.trades) >= start
    asked = exchange.requests_for("GET", "/api/v3/myTrades")
    await venue.poll_once(["BTC_USDT"])
    assert (
        int(exchange.requests_for("GET", "/api/v3/myTrades")[len(asked)].params["startTime"]) == venue.since["BTC_USDT"]
    )


async def test_an_order_goes_ahead_of_a_poll_waiting_for_room_in_the_request_budget(
    exchange: BinanceTestExchange,
) -> None:
    """Regression (bench/README.md, "Live venue"): ccxt's limiter serves its queue in order, so an order queued behind
    a trades poll waited until the poll's cost fitted in a full window (about 350 ms in the bench, a whole window
    here). The adapter's other calls wait for room outside ccxt's queue: the order goes first."""
    v = make(exchange, poll_ms=3_600_000)  # no poll of its own
    await v.start()
    trades: asyncio.Task[list[VenueTrade]] | None = None
    try:
        # ccxt's rolling window as the service configures it, with a small budget: 7 cost units a minute
        v.ex.rateLimit, v.ex.rollingWindowSize, v.ex.tokenBucket = 60_000 / 7, 60_000, None
        v.ex.init_rest_rate_limiter()
        assert v.ex.throttler.config["maxWeight"] == pytest.approx(7)
        await v.fetch_balance()  # Binance's account read: 4 of the 7
        trades = asyncio.create_task(v.fetch_my_trades("BTC_USDT"))  # 4 more: no room before the account's leaves

        async def waiting() -> bool:  # in ccxt's queue, or waiting for room before it
            return bool(v.ex.throttler.queue) or v.room_waiters > 0

        await eventually(waiting, what="the trades read waiting for the budget")
        o = await asyncio.wait_for(v.create_order(req("first-1", quantity=D("0.001"))), 10)  # 0.2: room for it
        assert (o.status, o.filled) == ("closed", D("0.001"))
        assert not trades.done()  # still waiting for room (the order took only its own 0.2)
    finally:
        if trades is not None:
            trades.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await trades
        await v.stop()


async def test_a_call_waiting_for_room_goes_once_the_window_has_room(exchange: BinanceTestExchange) -> None:
    v = make(exchange, poll_ms=3_600_000)
    await v.start()
    try:
        # 7 cost units per 1 s window: the account read (4) leaves room for the trades read (4) a second later
        v.ex.rateLimit, v.ex.rollingWindowSize, v.ex.tokenBucket = 1000 / 7, 1000, None
        v.ex.init_rest_rate_limiter()
        await v.fetch_balance()
        before = len(exchange.requests_for("GET", "/api/v3/myTrades"))
        assert await asyncio.wait_for(v.fetch_my_trades("BTC_USDT"), 10) == []
        assert len(exchange.requests_for("GET", "/api/v3/myTrades")) == before + 1
        assert v.room_waiters == 0 and not v.ex.throttler.queue
    finally:
        await v.stop()


async def test_a_partitions_client_follows_only_its_own_pairs() -> None:
    """PARTITIONS > 1: each partition's order-router has a client of its own; it polls the trades and open orders of
    its partition's pairs only (the others poll theirs), and an open order of another partition's pair never makes
    a pair busy here. Every pair stays known to it (the start check, the venue rules)."""

    exchange = BinanceTestExchange(
        api_key=KEY, secret=SECRET, symbols=("BTC/USDT", "SOL/USDT"), balances={"USDT": "100000", "BTC": "1"}
    )
    await exchange.start()
    exchange.set_book("BTC/USDT", bids=[("59990", "1")], asks=[("60000", "1")])
    exchange.set_book("SOL/USDT", bids=[("99", "100")], asks=[("101", "100")])
    try:
        await _follows_own_pairs(exchange)
    finally:
        await exchange.stop()


async def _follows_own_pairs(exchange: BinanceTestExchange) -> None:
    from actors.venues.factory import make_venue_of
    from config.venues import venue_configs
    from domain.partitions import partition_of

    live = {"LIVE_TRADING": "true", "PAPER_TRADING": "false", "API_TOKEN": "t", "EXCHANGE": "binance"}
    env = live | {"EXCHANGE_API_KEY": KEY, "EXCHANGE_API_SECRET": SECRET, "EXCHANGE_API_URL": exchange.base_url}
    env |= {"PAIRS": "BTC_USDT,SOL_USDT", "PARTITIONS": "2"}
    own = {k: tuple(p for p in ("BTC_USDT", "SOL_USDT") if partition_of(p, 2) == k) for k in (0, 1)}
    assert own[0] and own[1]  # one pair each
    for k in (0, 1):
        s = load_settings(env | {"PARTITION": str(k)})
        v = make_venue_of(venue_configs(s)[0], s, None)  # type: ignore[arg-type]
        assert isinstance(v, CcxtVenue) and v.own_pairs == own[k] and v.pairs == ("BTC_USDT", "SOL_USDT")
        assert v.with_keys("k", "s").own_pairs == own[k]  # a key rotation keeps it
        await v.ex.close()
    one = load_settings(env | {"PARTITIONS": "1"})
    v = make_venue_of(venue_configs(one)[0], one, None)  # type: ignore[arg-type]
    assert isinstance(v, CcxtVenue) and v.own_pairs == v.pairs  # unpartitioned: every pair, as before
    await v.ex.close()

    other, mine = own[0][0], own[1][0]
    v = make(exchange, pairs=("BTC_USDT", "SOL_USDT"), poll_ms=3_600_000, own_pairs=(mine,))
    await v.start()
    try:
        # an order of the other partition's pair rests at the venue
        await v.create_order(
            req("other-1", pair=other, type="limit", price=D("50") if other == "SOL_USDT" else D("50000"))
        )
        v.sent_at.clear()
        exchange.requests.clear()
        await v.poll_once()
        symbols = {
            r.params.get("symbol") for r in exchange.requests if r.path in ("/api/v3/myTrades", "/api/v3/openOrders")
        }
        assert symbols == {mine.replace("_", "")}, symbols
        assert all(o.pair == mine for o in v.open_seen.values()) and other not in v._busy_pairs()
        assert {r.pair for r in await v.markets()} == {"BTC_USDT", "SOL_USDT"}
    finally:
        await v.stop()


async def test_a_poll_loop_whose_cancel_was_lost_ends_once_the_session_is_stopped(exchange) -> None:
    """Python 3.11's wait_for can swallow a cancel that meets the call's answer (a CI run saw the poll loop go on
    every 50 ms after stop, holding the stop for ever): the loop ends by itself once the session is stopped, and
    stop does not wait on it for ever."""
    v = make(exchange)
    await v.start()
    poll = next(t for t in v.tasks if t.get_name().endswith("-poll"))
    v.tasks.remove(poll)  # as if its cancel was lost: stop cannot end it by cancelling
    await asyncio.wait_for(v.stop(), 10)
    await asyncio.wait_for(asyncio.shield(poll), 5)  # ends by itself at its next turn
    assert poll.done() and not poll.cancelled()
