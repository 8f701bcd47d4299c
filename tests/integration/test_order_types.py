"""Every order type end to end over the real bus, against books the test publishes.

MARKET_DATA=none: the only books are ours, so every fill is predictable. BTC_USDT trades on a 0.01 tick
and a 0.001 step, maker fee 0.05%, taker fee 0.1%; fees are checked to the last decimal.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal as D

import pytest

from bus.client import Bus
from config.settings import load_settings
from domain.ids import trade_id_of
from schemas.messages import (
    Book,
    CancelOrder,
    CommandReply,
    Empty,
    ExecutionReport,
    ModifyOrder,
    Order,
    OrderEventsPage,
    OrderEventsQuery,
    OrderReply,
    OrderRequest,
    OrdersPage,
    OrdersQuery,
    OrderStatus,
    PortfolioSnapshot,
    VenueBookQuery,
    VenueBookView,
    now_ms,
)
from tests.helpers import eventually

S = OrderStatus
MAKER, TAKER = D("0.0005"), D("0.001")
MARKETS = {
    "BTC_USDT": {
        "tickSize": "0.01",
        "amountStep": "0.001",
        "minNotional": "1",
        "makerFee": str(MAKER),
        "takerFee": str(TAKER),
    }
}


def settings_for(nats_url: str, prefix: str, **extra: str):
    env = {
        "NATS_URL": nats_url,
        "BUS_PREFIX": prefix,
        "MARKET_DATA": "none",
        "PAIRS": "BTC_USDT,ETH_USDT",
        "PAPER_MARKETS": json.dumps(MARKETS),
        "MAX_SLIPPAGE_PERCENT": "0",
        "DEFAULT_ORDER_TIMEOUT": "0",
        # these tests are about orders, not the portfolio limits: shorts allowed, one pair may be all of equity
        "ALLOW_SHORT": "true",
        "MAX_POSITION_SIZE": "1",
        "MAX_DAILY_LOSS": "1",
        "PRICE_BAND_PERCENT": "0",
    }
    return load_settings(env | extra)


def levels(*pairs: tuple[str, str]) -> list[tuple[D, D]]:
    return [(D(p), D(q)) for p, q in pairs]


async def publish_book(
    client: Bus, bids: list[tuple[str, str]], asks: list[tuple[str, str]], pair: str = "BTC_USDT", settle: float = 0.15
) -> None:
    await client.publish(
        client.subjects.book(pair), Book(pair=pair, bids=levels(*bids), asks=levels(*asks), ts=now_ms())
    )
    await client.nc.flush()
    await asyncio.sleep(settle)  # the venue, the triggers and the risk-gate see it


async def submit(client: Bus, coid: str, side: str, qty: str, type_: str = "market", **kw: object) -> OrderReply:
    fields = {
        k: (D(v) if isinstance(v, str) and k in ("price", "stop_price", "stop_loss", "take_profit") else v)
        for k, v in kw.items()
    }
    req = OrderRequest(
        client_order_id=coid,
        pair=str(fields.pop("pair", "BTC_USDT")),
        side=side,  # type: ignore[arg-type]
        quantity=D(qty),
        type=type_,
        ts=now_ms(),
        **fields,
    )  # type: ignore[arg-type]
    return await client.request(client.subjects.orders_submit, req, OrderReply, timeout=5)


async def placed(client: Bus, coid: str, side: str, qty: str, type_: str = "market", **kw: object) -> Order:
    r = await submit(client, coid, side, qty, type_, **kw)
    assert r.ok and r.order is not None, r
    return r.order


async def order(client: Bus, order_id: str) -> Order:
    page = await client.request(client.subjects.query("orders"), OrdersQuery(order_id=order_id), OrdersPage)
    return page.orders[0]


async def until(client: Bus, order_id: str, *statuses: OrderStatus, timeout: float = 10) -> Order:
    async def check():
        o = await order(client, order_id)
        return o if o.status in statuses else None

    return await eventually(check, timeout=timeout, what=f"{order_id} in {[s.value for s in statuses]}")


def fills(o: Order) -> list[tuple[D, D, D, str]]:
    return [(f.quantity, f.price, f.fee, f.liquidity) for f in o.fills]


async def portfolio(client: Bus) -> PortfolioSnapshot:
    return await client.request(client.subjects.query("portfolio"), Empty(), PortfolioSnapshot)


async def position(client: Bus, pair: str = "BTC_USDT") -> D:
    snap = await portfolio(client)
    p = next((p for p in snap.positions if p.pair == pair), None)
    return D(0) if p is None else (p.quantity if p.side == "long" else -p.quantity)


async def events(client: Bus, order_id: str) -> list[str]:
    page = await client.request(
        client.subjects.query("order_events"), OrderEventsQuery(order_id=order_id), OrderEventsPage
    )
    return [e.event for e in page.events]


def trade_report(o: Order, fill_index: int = 0) -> ExecutionReport:
    """The execution report that brought one of the order's fills from the paper venue (to send it again)."""
    f = o.fills[fill_index]
    return ExecutionReport(
        kind="trade",
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        pair=o.pair,
        side=o.side,
        order_quantity=o.quantity,
        venue="paper",
        ts=f.timestamp,
        trade_id=trade_id_of(f.fill_id, "paper", o.pair),
        quantity=f.quantity,
        price=f.price,
        fee=f.fee,
        fee_currency=f.fee_currency,
        liquidity=f.liquidity,
    )


# -- market ----------------------------------------------------------------------------------------------
async def test_market_order_walks_the_book_one_trade_per_level(make_system, client):
    await make_system()
    await publish_book(client, [("99.90", "5")], [("100.00", "1.000"), ("100.50", "2.000"), ("101.00", "9")])
    o = await placed(client, "m-1", "buy", "1.5")
    o = await until(client, o.order_id, S.FILLED)
    assert fills(o) == [(D("1.000"), D("100.00"), D("0.1"), "taker"), (D("0.5"), D("100.50"), D("0.05025"), "taker")]
    assert o.average_price == (D("100.00") + D("50.25")) / D("1.5")
    assert o.total_cost == D("150.25") and o.fees == D("0.15025")
    assert await eventually(lambda: _equals(position(client), D("1.5")), what="the position")


async def _equals(coro, value):
    got = await coro
    return got == value or None


async def test_the_router_answers_the_book_its_venue_matches_a_market_order_on(make_system, client):
    """``query.venue_book``: what ``make chaos`` waits for before a pair's next order (the venue's own book, not a
    book some other subscriber has seen)."""
    await make_system()
    ask = client.subjects.query("venue_book")
    empty = await client.request(ask, VenueBookQuery(pair="ETH_USDT"), VenueBookView, timeout=5)
    assert (empty.pair, empty.venue, empty.book) == ("ETH_USDT", "paper", None)
    await publish_book(client, [("99.90", "5")], [("100.00", "1.000")])
    await publish_book(client, [("99.80", "5")], [("100.20", "1.000"), ("100.30", "2.000")])

    async def second() -> VenueBookView | None:
        v = await client.request(ask, VenueBookQuery(pair="BTC_USDT"), VenueBookView, timeout=5)
        return v if v.book is not None and v.book.asks[0][0] == D("100.20") else None

    view = await eventually(second, what="the second book at the venue")
    assert view.venue == "paper" and view.book is not None and view.book.bids == levels(("99.80", "5"))
    o = await until(client, (await placed(client, "vb-1", "buy", "1")).order_id, S.FILLED)
    assert fills(o) == [(D("1.000"), D("100.20"), D("0.1002"), "taker")]  # the book it answered
    with pytest.raises(Exception, match="not one of this router's venues"):
        await client.request(ask, VenueBookQuery(pair="BTC_USDT", venue="nowhere"), VenueBookView, timeout=5)


async def test_market_ioc_fills_what_depth_allows_and_cancels_the_rest(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "1")], [("100.00", "1.000"), ("100.10", "2.000")])
    o = await placed(client, "m-ioc", "buy", "5", time_in_force="IOC")
    o = await until(client, o.order_id, S.CANCELED)
    assert fills(o) == [(D("1.000"), D("100.00"), D("0.1"), "taker"), (D("2.000"), D("100.10"), D("0.2002"), "taker")]
    assert o.filled_quantity == D(3) and "IOC" in (o.reason or "")


async def test_fok_fills_entirely_or_not_at_all(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "1")], [("100.00", "1.000"), ("100.10", "1.000")])
    no = await placed(client, "fok-no", "buy", "2.5", time_in_force="FOK")
    no = await until(client, no.order_id, S.CANCELED)
    assert no.fills == [] and "FOK" in (no.reason or "")
    yes = await placed(client, "fok-yes", "buy", "2", time_in_force="FOK")
    yes = await until(client, yes.order_id, S.FILLED)
    assert fills(yes) == [(D("1.000"), D("100.00"), D("0.1"), "taker"), (D("1.000"), D("100.10"), D("0.1001"), "taker")]


async def test_market_order_never_fills_beyond_the_slippage_band(make_system, client):
    await make_system(MAX_SLIPPAGE_PERCENT="0.5")
    await publish_book(client, [("99.00", "1")], [("100.00", "1.000"), ("100.40", "1.000"), ("100.60", "5")])
    o = await placed(client, "slip", "buy", "3", time_in_force="IOC")
    o = await until(client, o.order_id, S.CANCELED)  # 100.60 > 100.00 * 1.005: not taken
    assert [(q, p) for q, p, _, _ in fills(o)] == [(D("1.000"), D("100.00")), (D("1.000"), D("100.40"))]


# -- limit -----------------------------------------------------------------------------------------------
async def test_resting_limit_fills_at_its_price_as_maker_partially_then_fully(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "lim-1", "buy", "1", "limit", price="99.00")
    o = await until(client, o.order_id, S.ACCEPTED)
    await publish_book(client, [("98.00", "5")], [("98.90", "0.400"), ("99.00", "0.300"), ("99.10", "5")])
    o = await until(client, o.order_id, S.PARTIALLY_FILLED)
    assert fills(o) == [(D("0.700"), D("99.00"), D("0.034650"), "maker")]  # 0.7 * 99 * 0.0005
    await publish_book(client, [("98.00", "5")], [("98.95", "1.000")])
    o = await until(client, o.order_id, S.FILLED)
    assert fills(o)[1] == (D("0.300"), D("99.00"), D("0.014850"), "maker")
    assert o.average_price == D("99.00") and o.fees == D("0.049500")


async def test_marketable_limit_takes_then_rests_the_rest(make_system, client):
    await make_system()
    await publish_book(client, [("100.00", "0.600"), ("99.60", "0.300"), ("99.40", "5")], [("100.50", "5")])
    o = await placed(client, "lim-take", "sell", "1", "limit", price="99.50")
    o = await until(client, o.order_id, S.PARTIALLY_FILLED)
    assert fills(o) == [
        (D("0.600"), D("100.00"), D("0.0600"), "taker"),
        (D("0.300"), D("99.60"), D("0.02988"), "taker"),
    ]
    assert o.venue_status == "open"  # 0.1 rests at 99.50


async def test_liquidity_taken_from_a_book_is_not_taken_twice(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "5")], [("100.00", "1.000"), ("101.00", "5")])
    a = await until(client, (await placed(client, "liq-a", "buy", "0.8")).order_id, S.FILLED)
    b = await until(client, (await placed(client, "liq-b", "buy", "0.5")).order_id, S.FILLED)
    assert fills(a) == [(D("0.800"), D("100.00"), D("0.0800"), "taker")]
    assert [(q, p) for q, p, _, _ in fills(b)] == [(D("0.200"), D("100.00")), (D("0.300"), D("101.00"))]


async def test_rules_break_is_refused_with_the_reason_not_rounded(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "5")], [("100.00", "5")])
    r = await submit(client, "bad-tick", "buy", "1", "limit", price="99.005")
    assert not r.ok and r.field == "price" and "tick 0.01" in (r.detail or "")
    r = await submit(client, "bad-step", "buy", "1.0005", "limit", price="99.00")
    assert not r.ok and r.field == "quantity" and "step 0.001" in (r.detail or "")
    r = await submit(client, "no-price", "buy", "1", "limit")
    assert not r.ok and r.field == "price"
    r = await submit(client, "post-only-takes", "buy", "1", "limit", price="100.00", post_only=True)
    assert r.ok and r.order is not None  # the venue refuses it: it would take liquidity
    o = await until(client, r.order.order_id, S.REJECTED)
    assert "post-only" in (o.reason or "")


# -- stops and take-profits ------------------------------------------------------------------------------
async def test_stop_loss_waits_then_triggers_on_the_bid_and_fills_at_market(make_system, client):
    await make_system()
    await publish_book(client, [("100.00", "5")], [("100.10", "5")])
    await until(client, (await placed(client, "own", "buy", "1")).order_id, S.FILLED)
    r = await submit(client, "sl-wrong", "sell", "1", "stop_loss", stop_price="100.50")
    assert not r.ok and r.code == "STOP_WRONG_SIDE" and r.field == "stopPrice"
    sl = await placed(client, "sl-1", "sell", "1", "stop_loss", stop_price="95.00")
    await until(client, sl.order_id, S.ACCEPTED)
    await publish_book(client, [("95.50", "5")], [("95.60", "5")])
    assert (await order(client, sl.order_id)).status is S.ACCEPTED
    await publish_book(client, [("94.90", "0.400"), ("94.80", "5")], [("95.00", "5")])
    o = await until(client, sl.order_id, S.FILLED)
    assert o.order_id == sl.order_id and o.triggered_at is not None  # a triggered order keeps its id
    assert fills(o) == [
        (D("0.400"), D("94.90"), D("0.037960"), "taker"),
        (D("0.600"), D("94.80"), D("0.056880"), "taker"),
    ]
    assert "triggered" in await events(client, sl.order_id)


async def test_stop_limit_and_take_profits(make_system, client):
    await make_system()
    await publish_book(client, [("100.00", "5")], [("100.10", "5")])
    stop_limit = await placed(client, "stl", "buy", "1", "stop_limit", stop_price="101.00", price="101.20")
    tp_market = await placed(client, "tpm", "sell", "1", "take_profit", stop_price="102.00")
    tp_limit = await placed(client, "tpl", "sell", "1", "take_profit", stop_price="103.00", price="102.90")
    await publish_book(client, [("100.90", "5")], [("101.00", "0.500"), ("101.30", "5")])  # buy stop: ask >= 101
    o = await until(client, stop_limit.order_id, S.PARTIALLY_FILLED)
    assert fills(o) == [(D("0.500"), D("101.00"), D("0.0505000"), "taker")]  # 101.30 is above the limit 101.20
    await publish_book(client, [("102.00", "2.000")], [("102.10", "5")])  # sell take-profit: bid >= 102
    o = await until(client, tp_market.order_id, S.FILLED)
    assert fills(o) == [(D("1.000"), D("102.00"), D("0.10200"), "taker")]
    await publish_book(client, [("103.00", "0.300"), ("102.80", "5")], [("103.10", "5")])
    o = await until(client, tp_limit.order_id, S.PARTIALLY_FILLED)
    assert fills(o) == [(D("0.300"), D("103.00"), D("0.030900"), "taker")]  # rests the rest at 102.90


async def test_a_working_stop_still_triggers_after_the_router_restarts(make_system, client):
    sut = await make_system()
    await publish_book(client, [("100.00", "5")], [("100.10", "5")])
    sl = await placed(client, "sl-restart", "sell", "0.5", "stop_loss", stop_price="99.00")
    await until(client, sl.order_id, S.ACCEPTED)
    await sut.stop("order-router")
    await sut.start("order-router")
    await publish_book(client, [("98.90", "5")], [("99.10", "5")])
    o = await until(client, sl.order_id, S.FILLED)
    assert fills(o) == [(D("0.500"), D("98.90"), D("0.0494500"), "taker")]


# -- time in force ---------------------------------------------------------------------------------------
async def test_gtd_expires_and_timeout_cancels(make_system, client):
    await make_system(DEFAULT_ORDER_TIMEOUT="1500")
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    r = await submit(client, "gtd-past", "buy", "1", "limit", price="99.00", time_in_force="GTD", expire_at=1)
    assert not r.ok and r.field == "expireAt"
    gtd = await placed(client, "gtd", "buy", "1", "limit", price="99.00", time_in_force="GTD", expire_at=now_ms() + 600)
    gtc = await placed(client, "gtc", "buy", "1", "limit", price="98.50")
    o = await until(client, gtd.order_id, S.EXPIRED, timeout=5)
    assert o.reason == "expired"
    o = await until(client, gtc.order_id, S.CANCELED, timeout=5)
    assert "DEFAULT_ORDER_TIMEOUT=1500" in (o.reason or "")


# -- brackets --------------------------------------------------------------------------------------------
async def test_bracket_legs_follow_the_entry_and_cancel_each_other(make_system, client):
    await make_system()
    await publish_book(client, [("99.90", "5")], [("100.00", "5")])
    r = await submit(client, "br-bad", "buy", "1", stop_loss="100.50", take_profit="110.00")
    assert not r.ok and r.code == "INVALID_BRACKET" and r.field == "stopLoss"
    entry = await placed(client, "br", "buy", "1", stop_loss="95.00", take_profit="110.00")
    assert entry.linked_orders is not None and set(entry.linked_orders) == {"stopLoss", "takeProfit"}
    sl_id, tp_id = entry.linked_orders["stopLoss"], entry.linked_orders["takeProfit"]
    await until(client, entry.order_id, S.FILLED)
    sl = await until(client, sl_id, S.ACCEPTED)
    tp = await until(client, tp_id, S.ACCEPTED)
    assert (sl.quantity, sl.side, sl.stop_price, sl.parent_order_id) == (D("1"), "sell", D("95.00"), entry.order_id)
    assert (tp.quantity, tp.type, tp.stop_price) == (D("1"), "take_profit", D("110.00"))
    await publish_book(client, [("110.50", "5")], [("110.60", "5")])
    tp = await until(client, tp_id, S.FILLED)
    assert fills(tp) == [(D("1"), D("110.50"), D("0.11050"), "taker")]
    sl = await until(client, sl_id, S.CANCELED)
    assert "OCO" in (sl.reason or "")
    assert await eventually(lambda: _equals(position(client), D(0)), what="flat")


async def test_a_partial_entry_fill_sizes_the_legs(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    entry = await placed(client, "br-part", "buy", "2", "limit", price="99.00", stop_loss="95.00", take_profit="105.00")
    assert entry.linked_orders is not None
    legs = list(entry.linked_orders.values())
    assert {(await order(client, leg)).status for leg in legs} == {S.INITIALIZED}
    await publish_book(client, [("98.00", "5")], [("99.00", "0.500"), ("99.50", "5")])
    await until(client, entry.order_id, S.PARTIALLY_FILLED)
    for leg in legs:
        o = await until(client, leg, S.ACCEPTED)
        assert o.quantity == D("0.500")
    reply = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=entry.order_id), CommandReply)
    assert reply.ok
    await until(client, entry.order_id, S.CANCELED)
    for leg in legs:  # the filled half stays protected
        assert (await order(client, leg)).status is S.ACCEPTED


async def test_an_unfilled_entry_canceled_takes_its_legs_with_it(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    entry = await placed(client, "br-none", "buy", "1", "limit", price="99.00", stop_loss="95.00")
    assert entry.linked_orders is not None
    await client.request(client.subjects.orders_cancel, CancelOrder(order_id=entry.order_id), CommandReply)
    leg = await until(client, entry.linked_orders["stopLoss"], S.CANCELED)
    assert "unfilled" in (leg.reason or "")


# -- cancel and modify -----------------------------------------------------------------------------------
async def test_modify_price_and_quantity_and_refusals(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "mod", "buy", "1", "limit", price="97.00")
    await until(client, o.order_id, S.ACCEPTED)
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, price=D("97.50"), quantity=D("2")), CommandReply
    )
    assert r.ok and (r.orders[0].price, r.orders[0].quantity, r.orders[0].status) == (D("97.50"), D("2"), S.ACCEPTED)
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, price=D("97.505")), CommandReply
    )
    assert not r.ok and r.field == "price" and "tick" in (r.detail or "") and r.orders[0].price == D("97.50")
    assert r.orders[0].status is S.ACCEPTED  # refused before it went anywhere
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, quantity=D("0.0001")), CommandReply
    )
    assert not r.ok and r.field == "quantity"
    ev = await events(client, o.order_id)
    assert ev == ["submitted", "accepted", "pending_update", "accepted"]
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, price=D("100.00")), CommandReply
    )  # now marketable: takes as taker
    assert r.ok
    o = await until(client, o.order_id, S.FILLED)
    assert fills(o) == [(D("2.000"), D("100.00"), D("0.20000"), "taker")]


async def test_a_fill_racing_a_cancel_is_applied(make_system, client):
    await make_system(PAPER_LATENCY_MS="300")
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "race", "buy", "1", "limit", price="99.00")
    await until(client, o.order_id, S.ACCEPTED)
    cancel = asyncio.create_task(
        client.request(client.subjects.orders_cancel, CancelOrder(order_id=o.order_id), CommandReply, timeout=5)
    )
    await until(client, o.order_id, S.PENDING_CANCEL)
    await publish_book(client, [("98.00", "5")], [("99.00", "5")], settle=0)  # fills while the cancel travels
    reply = await cancel
    assert not reply.ok and reply.code == "CANCEL_REFUSED"
    o = await until(client, o.order_id, S.FILLED)
    assert fills(o) == [(D("1.000"), D("99.00"), D("0.049500"), "maker")]
    ev = await events(client, o.order_id)
    assert "pending_cancel" in ev and ev[-1] == "filled"


async def test_cancel_all_of_one_pair(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    await publish_book(client, [("9.00", "5")], [("10.00", "5")], pair="ETH_USDT")
    btc = [await placed(client, f"ca-{i}", "buy", "1", "limit", price="90.00") for i in range(3)]
    eth = await placed(client, "ca-eth", "buy", "1", "limit", price="9.00", pair="ETH_USDT")
    for o in [*btc, eth]:
        await until(client, o.order_id, S.ACCEPTED)
    r = await client.request(client.subjects.orders_cancel, CancelOrder(all=True, pair="BTC_USDT"), CommandReply)
    assert r.ok and sorted(o.order_id for o in r.orders) == sorted(o.order_id for o in btc)
    assert all(o.status is S.CANCELED for o in r.orders)
    assert (await order(client, eth.order_id)).status is S.ACCEPTED


# -- fills -----------------------------------------------------------------------------------------------
async def test_a_duplicated_execution_report_never_counts_twice(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "5")], [("100.00", "5")])
    o = await until(client, (await placed(client, "dup-rep", "buy", "1")).order_id, S.FILLED)
    again = trade_report(o)
    before = await portfolio(client)
    await client.js_publish(client.subjects.exec_reports(o.pair), again, msg_id="replayed-by-the-test")
    await asyncio.sleep(0.5)
    assert (await order(client, o.order_id)).fills == o.fills
    after = await portfolio(client)
    assert after.fills_applied == before.fills_applied and after.positions == before.positions


async def test_cursor_pages_through_orders_newest_first(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    ids = [(await placed(client, f"page-{i}", "buy", "1", "limit", price="90.00")).order_id for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await client.request(client.subjects.query("orders"), OrdersQuery(limit=2, cursor=cursor), OrdersPage)
        seen += [o.order_id for o in page.orders]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(reversed(ids))


async def test_a_fill_beyond_the_order_quantity_is_refused_and_alerted(make_system, client):
    from bus.client import Envelope
    from schemas.messages import DeadLetter, RiskAlert

    await make_system()
    alerts: list[RiskAlert] = []
    letters: list[DeadLetter] = []

    async def on_alert(a: RiskAlert, env: Envelope) -> None:
        alerts.append(a)

    async def on_letter(d: DeadLetter, env: Envelope) -> None:
        letters.append(d)

    await client.subscribe(client.subjects.risk_events, RiskAlert, on_alert)
    await client.subscribe(client.subjects.deadletter(">"), DeadLetter, on_letter)
    await publish_book(client, [("99.00", "5")], [("100.00", "5")])
    o = await until(client, (await placed(client, "over", "buy", "1")).order_id, S.FILLED)
    extra = ExecutionReport(
        kind="trade",
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        pair=o.pair,
        side=o.side,
        order_quantity=o.quantity,
        venue="paper",
        ts=now_ms(),
        trade_id="ghost-1",
        quantity=D("0.5"),
        price=D("100.00"),
        fee=D("0.05"),
        fee_currency="USDT",
    )
    await client.js_publish(client.subjects.exec_reports(o.pair), extra)
    await eventually(lambda: asyncio.sleep(0, bool(alerts) and bool(letters)), what="the alert and the dead letter")
    assert alerts[0].severity == "critical" and alerts[0].code == "OVERFILL" and alerts[0].order_id == o.order_id
    assert "overfill" in letters[0].reason
    assert (await order(client, o.order_id)).filled_quantity == D(1)
    assert await position(client) == D(1)


async def test_reduce_only_passes_only_when_it_reduces(make_system, client):
    await make_system()
    await publish_book(client, [("99.00", "5")], [("100.00", "5")])
    r = await submit(client, "ro-flat", "sell", "1", reduce_only=True)
    assert not r.ok and r.code == "REDUCE_ONLY" and r.field == "reduceOnly"
    await until(client, (await placed(client, "ro-open", "buy", "1")).order_id, S.FILLED)
    await eventually(lambda: _equals(position(client), D(1)), what="the long")
    r = await submit(client, "ro-same-side", "buy", "0.5", reduce_only=True)
    assert not r.ok and r.field == "reduceOnly"
    r = await submit(client, "ro-too-big", "sell", "2", reduce_only=True)
    assert not r.ok and r.field == "quantity"
    o = await placed(client, "ro-ok", "sell", "1", reduce_only=True)
    assert (await until(client, o.order_id, S.FILLED)).reduce_only


async def test_order_ids_stay_unique_across_several_routers(client):
    from actors.ids import OrderIds

    kv = await client.kv(client.subjects.kv_state)
    routers = [OrderIds(kv, block=7) for _ in range(4)]

    async def take(ids: OrderIds) -> list[str]:
        return [await ids.next() for _ in range(60)]

    got = await asyncio.gather(*(take(r) for r in routers))
    every = [i for ids in got for i in ids]
    assert len(every) == len(set(every)) == 240
    assert all(i.startswith("ORD_") and len(i) == len("ORD_20260101_000001") for i in every)
    again = OrderIds(kv, block=7)  # a restart: never one of the ids handed out before
    assert await again.next() not in set(every)


async def test_paper_venue_answers_like_a_ccxt_exchange(nats_url, prefix, make_bus):
    from actors.venues.base import VenueOrderRequest, VenueRefused
    from actors.venues.paper import PaperVenue

    bus = await make_bus("venue")
    client = await make_bus("md")
    venue = PaperVenue(settings_for(nats_url, prefix), bus)
    await venue.start()
    await publish_book(client, [("99.00", "5")], [("100.00", "1.000"), ("101.00", "5")])
    rules = {m.pair: m for m in await venue.markets()}
    assert (rules["BTC_USDT"].tick_size, rules["BTC_USDT"].amount_step, rules["BTC_USDT"].taker_fee) == (
        D("0.01"),
        D("0.001"),
        TAKER,
    )
    done = await venue.create_order(VenueOrderRequest("v-1", "BTC_USDT", "buy", "market", D("1.5")))
    assert done.status == "closed" and done.filled == D("1.5") and len(done.trades) == 2
    assert await venue.create_order(VenueOrderRequest("v-1", "BTC_USDT", "buy", "market", D("1.5"))) == done
    rest = await venue.create_order(VenueOrderRequest("v-2", "BTC_USDT", "buy", "limit", D("1"), D("98.00")))
    assert rest.status == "open" and [o.client_order_id for o in await venue.fetch_open_orders()] == ["v-2"]
    edited = await venue.edit_order("v-2", "BTC_USDT", price=D("97.50"))
    assert edited.price == D("97.50") and edited.status == "open"
    assert (await venue.cancel_order("v-2", "BTC_USDT")).status == "canceled"
    with pytest.raises(VenueRefused):
        await venue.cancel_order("v-2", "BTC_USDT")
    trades = await venue.fetch_my_trades("BTC_USDT", since=0)
    assert [(t.quantity, t.price) for t in trades] == [(D("1.000"), D("100.00")), (D("0.500"), D("101.00"))]
    balance = await venue.fetch_balance()
    assert balance["BTC"].total == D("1.5")
    assert balance["USDT"].total == D(50000) - D("150.50") - D("0.1505")  # notional and taker fee
    assert (await venue.fetch_order("v-2", "BTC_USDT")).status == "canceled"  # type: ignore[union-attr]
    assert await venue.fetch_order("never", "BTC_USDT") is None
    book = await venue.fetch_order_book("BTC_USDT")
    assert book is not None and book.asks[0] == (D("100.00"), D("1.000"))


async def test_a_modify_the_venue_refuses_returns_the_order_to_where_it_was(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "po", "buy", "1", "limit", price="99.00", post_only=True)
    await until(client, o.order_id, S.ACCEPTED)
    r = await client.request(
        client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, price=D("100.00")), CommandReply
    )  # post-only at a price that would take: the venue says no
    assert not r.ok and r.code == "MODIFY_REFUSED" and "post-only" in (r.detail or "")
    o = await order(client, o.order_id)
    assert (o.status, o.price) == (S.ACCEPTED, D("99.00"))
    assert (await events(client, o.order_id))[-2:] == ["pending_update", "accepted"]


# -- regressions of the order-lifecycle review -----------------------------------------------------------
async def test_a_resting_limit_survives_a_router_restart_and_still_fills(make_system, client):
    sut = await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "rest-restart", "buy", "1", "limit", price="99.00")
    await until(client, o.order_id, S.ACCEPTED)
    await sut.stop("order-router")
    await sut.start("order-router")
    await publish_book(client, [("98.00", "5")], [("99.00", "5")])
    o = await until(client, o.order_id, S.FILLED)
    assert fills(o) == [(D("1.000"), D("99.00"), D("0.049500"), "maker")]


async def test_a_modify_that_trades_at_once_counts_its_fills(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "mod-trade", "buy", "1", "limit", price="97.00")
    await until(client, o.order_id, S.ACCEPTED)
    r = await client.request(
        client.subjects.orders_modify,
        ModifyOrder(order_id=o.order_id, quantity=D("2"), price=D("100.00")),
        CommandReply,
    )
    assert r.ok
    o = await until(client, o.order_id, S.FILLED)
    assert (o.quantity, o.filled_quantity) == (D("2"), D("2.000"))
    assert await eventually(lambda: _equals(position(client), D("2.000")), what="both booked")


async def test_a_modify_racing_a_fill_keeps_both(make_system, client):
    await make_system(PAPER_LATENCY_MS="300")
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "mod-race", "buy", "1", "limit", price="99.00")
    await until(client, o.order_id, S.ACCEPTED)
    modify = asyncio.create_task(
        client.request(
            client.subjects.orders_modify, ModifyOrder(order_id=o.order_id, quantity=D("2")), CommandReply, timeout=5
        )
    )
    await until(client, o.order_id, S.PENDING_UPDATE)
    await publish_book(client, [("98.00", "5")], [("99.00", "0.400"), ("99.50", "5")], settle=0)  # fills 0.4 meanwhile
    r = await modify
    assert r.ok
    o = await until(client, o.order_id, S.PARTIALLY_FILLED)
    assert (o.quantity, o.filled_quantity) == (D("2"), D("0.400"))
    await publish_book(client, [("98.00", "5")], [("99.00", "5")])
    o = await until(client, o.order_id, S.FILLED)
    assert o.filled_quantity == D("2.000") and [f[0] for f in fills(o)] == [D("0.400"), D("1.600")]


async def test_a_cancel_of_an_order_the_venue_then_rejects_ends_rejected(make_system, client):
    await make_system(PAPER_LATENCY_MS="300")
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    o = await placed(client, "po-cancel", "buy", "1", "limit", price="100.00", post_only=True)
    r = await client.request(client.subjects.orders_cancel, CancelOrder(order_id=o.order_id), CommandReply)
    assert r.ok and r.orders[0].status is S.PENDING_CANCEL  # on its way to the venue: marked
    o = await until(client, o.order_id, S.REJECTED)
    assert "post-only" in (o.reason or "")


async def test_an_exit_filling_cancels_the_rest_of_the_entry(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    entry = await placed(client, "br-exit", "buy", "2", "limit", price="99.00", take_profit="105.00")
    assert entry.linked_orders is not None
    tp_id = entry.linked_orders["takeProfit"]
    await publish_book(client, [("98.00", "5")], [("99.00", "0.500"), ("99.50", "5")])
    await until(client, tp_id, S.ACCEPTED)
    await publish_book(client, [("105.50", "5")], [("106.00", "5")])  # the take-profit fills the 0.5
    tp = await until(client, tp_id, S.FILLED)
    assert tp.filled_quantity == D("0.500")
    entry = await until(client, entry.order_id, S.CANCELED)  # no more entering once the exit is done
    assert entry.filled_quantity == D("0.500") and "exit" in (entry.reason or "")
    assert await eventually(lambda: _equals(position(client), D(0)), what="flat")


async def test_our_own_client_id_namespace_is_refused(make_system, client):
    await make_system()
    await publish_book(client, [("98.00", "5")], [("100.00", "5")])
    r = await submit(client, "tbx:ORD_1:stop_loss", "buy", "1")
    assert not r.ok and r.field == "clientOrderId"
