"""The risk-gate with several venues over a real NATS: each venue's balance pays for its own orders only,
an order naming no venue is approved for the venues that can take it, limits count every venue together.

Two paper venues (``EXCHANGES=alpha=paper,beta=paper``, 1000 USDT each to start); the books are written
straight onto the FILLS and ADJUSTMENTS streams, named by venue, as the portfolio-ledger's tests do.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal as D

import msgspec
import pytest

from actors.risk_gate import RiskGate
from bus.client import Bus, Envelope
from bus.codec import encode
from schemas.messages import (
    ApprovedOrder,
    BalanceAdjusted,
    Fill,
    MarketRules,
    MarketsPage,
    OrderReply,
    OrderRequest,
    RiskCommand,
    RiskStateChange,
    now_ms,
)
from tests.helpers import eventually
from tests.integration.test_bus import dead_letters
from tests.integration.test_order_types import settings_for

VENUES = {"EXCHANGES": "alpha=paper,beta=paper", "INITIAL_BALANCE": "1000"}


def vfill(fid: str, venue: str, side: str, qty: str, price: str, pair: str = "BTC_USDT") -> Fill:
    return Fill(
        fill_id=fid, order_id=f"O-{fid}", client_order_id=f"C-{fid}", pair=pair, side=side,  # type: ignore[arg-type]
        quantity=D(qty), price=D(price), fee=D(0), fee_currency="USDT", liquidity="taker", venue=venue,
        timestamp=now_ms(),
    )  # fmt: skip


def adjustment(venue: str, currency: str, before: str, after: str) -> BalanceAdjusted:
    t = now_ms()
    return BalanceAdjusted(
        adjustment_id=f"{venue}:1:{currency}", venue=venue, currency=currency, from_total=D(before),
        from_available=D(before), to_total=D(after), to_available=D(after), locked_delta=D(0), reason="opening",
        fills_seq=0, reading_fills_seq=0, reading_seq=1, reading_ts=t, ts=t,
    )  # fmt: skip


def request(coid: str, qty: str, price: str = "100", exchange: str | None = None, pair: str = "BTC_USDT"):
    return OrderRequest(
        client_order_id=coid, pair=pair, side="buy", quantity=D(qty), type="limit", price=D(price),
        exchange=exchange, ts=now_ms(),
    )  # fmt: skip


Gate = Callable[..., Awaitable[RiskGate]]


@pytest.fixture
async def gate(nats_url, prefix, make_bus) -> AsyncIterator[Gate]:
    """``await gate(**settings)``: a risk-gate alone on the test's bus prefix, two venues; stopped at the end."""
    started: list[RiskGate] = []

    async def make(**extra: str) -> RiskGate:
        g = RiskGate(settings_for(nats_url, prefix, **(VENUES | extra)), await make_bus("risk-gate"))
        await g.start()
        started.append(g)
        return g

    yield make
    for g in started:
        await g.stop()


async def validate(client: Bus, req: OrderRequest) -> OrderReply:
    return await client.request(client.subjects.orders_validate, req, OrderReply, timeout=5)


async def approvals(client: Bus) -> list[ApprovedOrder]:
    out: list[ApprovedOrder] = []

    async def on(a: ApprovedOrder, env: Envelope) -> None:
        out.append(a)

    s = client.subjects
    await client.replay(stream=s.s_hops, subject=s.approved_orders(), type_=ApprovedOrder, handler=on, follow=False)
    return out


async def submit_no_wait(client: Bus, req: OrderRequest) -> asyncio.Future[OrderReply]:
    """Submit; a denial is answered by the gate, an approval by the order-router (not running here): the
    answer, if any, resolves the future."""
    answer: asyncio.Future[OrderReply] = asyncio.get_running_loop().create_future()
    inbox = client.nc.new_inbox()

    async def on(msg) -> None:  # type: ignore[no-untyped-def]
        from bus.codec import decode

        if not answer.done():
            answer.set_result(decode(msg.data, OrderReply))

    await client.nc.subscribe(inbox, cb=on, max_msgs=1)
    await client.nc.publish(client.subjects.orders_submit, encode(req), reply=inbox)
    return answer


async def test_a_balance_on_one_venue_never_pays_for_another(gate: Gate, client: Bus) -> None:
    s = client.subjects
    # alpha: its USDT read as 5 (the live venue's opening reading); beta: a purchase leaves it 700 USDT
    await client.js_publish(s.balance_adjustments("alpha"), adjustment("alpha", "USDT", "1000", "5"))
    await client.js_publish(s.fills("BTC_USDT"), vfill("b-1", "beta", "buy", "3", "100"))
    await gate()
    letters_before = len(await dead_letters(client))

    # named to the poor venue: denied, naming it (beta's 700 USDT does not count)
    r = await validate(client, request("named-alpha", "1", exchange="alpha"))
    assert not r.ok and (r.code, r.field) == ("INSUFFICIENT_BALANCE", "quantity")
    assert "needs 100 USDT, 5 available on alpha" in (r.detail or "")
    # named to the rich one: fine
    assert (await validate(client, request("named-beta", "1", exchange="beta"))).ok

    # naming none: approved for the venues that can pay, here beta only
    await submit_no_wait(client, request("unnamed-1", "1"))
    found = await eventually(
        lambda: _approved(client, "unnamed-1"), what="the approval of unnamed-1 on the durable hop"
    )
    assert found.venues == ["beta"] and found.request.exchange is None
    # a named approval carries its venue
    await submit_no_wait(client, request("named-beta-2", "2", exchange="beta"))
    found = await eventually(lambda: _approved(client, "named-beta-2"), what="the approval of named-beta-2")
    assert found.venues == ["beta"]

    # reservations: beta's 700 less the two approvals in flight (100 + 200) leaves 400; 4.01 is too much
    # anywhere: the first venue's reason, and why each could not
    r = await validate(client, request("too-big", "4.01"))
    assert not r.ok and r.code == "INSUFFICIENT_BALANCE"
    assert (r.detail or "").startswith("no venue could take it (alpha: INSUFFICIENT_BALANCE: needs 401")
    assert "beta: INSUFFICIENT_BALANCE: needs 401.00 USDT, 400 available on beta" in (r.detail or "")
    assert (await validate(client, request("fits", "4"))).ok

    # a venue not configured: denied by the gate for bus callers, no dead letter
    answer = await submit_no_wait(client, request("nowhere", "1", exchange="gamma"))
    r = await asyncio.wait_for(answer, 10)
    assert not r.ok and (r.code, r.field) == ("UNKNOWN_EXCHANGE", "exchange")
    assert "alpha, beta" in (r.detail or "")
    assert len(await dead_letters(client)) == letters_before


async def _approved(client: Bus, coid: str) -> ApprovedOrder | None:
    return next((a for a in await approvals(client) if a.request.client_order_id == coid), None)


async def test_market_rules_of_each_venue_filter_the_candidates(gate: Gate, client: Bus) -> None:
    def rules(venue: str, step: str) -> MarketRules:
        return MarketRules(
            pair="BTC_USDT", tick_size=D("0.01"), amount_step=D(step), min_notional=D(1), maker_fee=D(0),
            taker_fee=D(0), venue=venue,
        )  # fmt: skip

    g = await gate()
    # what the order-router's tbx.query.markets answers with several venues: every venue's rules, each naming
    # its venue (loaded into the gate's cache as its refresh would)
    g.markets.put(MarketsPage(venue="alpha", markets=[rules("alpha", "1"), rules("beta", "0.001")]))
    # 1.5 is not a multiple of alpha's step 1: named there, denied with its rule; naming none, beta only
    r = await validate(client, request("step-alpha", "1.5", exchange="alpha"))
    assert not r.ok and r.code == "INVALID_QUANTITY" and "for BTC_USDT on alpha" in (r.detail or "")
    await submit_no_wait(client, request("step-any", "1.5"))
    found = await eventually(lambda: _approved(client, "step-any"), what="the approval of step-any")
    assert found.venues == ["beta"]
    # 2 suits both: priority order
    await submit_no_wait(client, request("step-both", "2"))
    found = await eventually(lambda: _approved(client, "step-both"), what="the approval of step-both")
    assert found.venues == ["alpha", "beta"]


async def test_exposure_limits_count_the_positions_of_every_venue(gate: Gate, client: Bus) -> None:
    s = client.subjects
    # 3 BTC on each venue at 100: 600 of the 2000 equity (each venue 700 USDT + 300 of BTC)
    await client.js_publish(s.fills("BTC_USDT"), vfill("a-1", "alpha", "buy", "3", "100"))
    await client.js_publish(s.fills("BTC_USDT"), vfill("b-1", "beta", "buy", "3", "100"))
    await gate(MAX_POSITION_SIZE="0.35", MAX_TOTAL_EXPOSURE="0.4")
    # MAX_POSITION_SIZE per pair over both venues: 600 + 100 = 0.35 of 2000 passes, 600 + 120 = 0.36 does not
    # (beta alone holds only 300: counted alone, 420 would pass)
    assert (await validate(client, request("pos-at", "1", exchange="beta"))).ok
    r = await validate(client, request("pos-over", "1.2", exchange="beta"))
    assert not r.ok and r.code == "MAX_POSITION_SIZE" and "0.36" in (r.detail or "")
    # MAX_TOTAL_EXPOSURE over both venues: ETH 200 + BTC 600 = 0.4 passes, 201 + 600 is over (alpha's BTC alone
    # would leave room)
    assert (await validate(client, request("tot-at", "2", exchange="alpha", pair="ETH_USDT"))).ok
    r = await validate(client, request("tot-over", "2.01", exchange="alpha", pair="ETH_USDT"))
    assert not r.ok and r.code == "MAX_TOTAL_EXPOSURE"
    r = await validate(client, request("tot-over-any", "2.01", pair="ETH_USDT"))
    assert not r.ok and r.code == "MAX_TOTAL_EXPOSURE"


async def test_a_venue_that_does_not_list_the_pair_is_no_candidate(gate: Gate, client: Bus) -> None:
    await gate(ALPHA_PAIRS="ETH_USDT")
    r = await validate(client, request("eth-only", "1", exchange="alpha"))
    assert not r.ok and (r.code, r.field) == ("UNKNOWN_PAIR", "pair") and "alpha does not list BTC_USDT" in r.detail
    await submit_no_wait(client, request("btc-any", "1"))
    found = await eventually(lambda: _approved(client, "btc-any"), what="the approval of btc-any")
    assert found.venues == ["beta"]


async def test_the_emergency_stop_closes_each_venues_position_on_that_venue(gate: Gate, client: Bus) -> None:
    s = client.subjects
    await client.js_publish(s.fills("BTC_USDT"), vfill("a-1", "alpha", "buy", "2", "100"))
    await client.js_publish(s.fills("BTC_USDT"), vfill("b-1", "beta", "buy", "3", "100"))
    await gate()
    change = await client.request(
        s.risk_command, RiskCommand(action="emergency_stop", close_positions=True), RiskStateChange, timeout=20
    )
    assert change.state == "HALTED"
    closes = [a for a in await approvals(client) if a.request.source == "emergency"]
    got = sorted((a.request.exchange, a.request.side, a.request.quantity, a.venues) for a in closes)
    assert got == [("alpha", "sell", D(2), ["alpha"]), ("beta", "sell", D(3), ["beta"])]
    assert all(a.request.reduce_only for a in closes)


async def test_a_venues_late_opening_moves_the_day_start_not_a_loss(gate: Gate, client: Bus) -> None:
    """beta's opening reading comes late (it was down at start): its books held INITIAL_BALANCE meanwhile. Its
    real balance replaces that - not a loss of the day: the gate stays ACTIVE (the day start and peak move)."""
    s = client.subjects
    await client.js_publish(s.balance_adjustments(), adjustment("alpha", "USDT", "1000", "1000"))
    g = await gate(MAX_DAILY_LOSS="0.05", MAX_DRAWDOWN="0.05")
    await asyncio.sleep(1.5)  # the watch takes the day start (every second)
    await client.js_publish(s.balance_adjustments(), adjustment("beta", "USDT", "1000", "100"))
    await asyncio.sleep(1.5)  # the watch again, with beta's opening in the books
    r = await validate(client, request("after-open", "0.1", exchange="alpha"))
    assert g.trading_state == "ACTIVE" and r.ok, (g.trading_state, r.code, r.detail)


async def test_reducing_means_reducing_at_the_venue_the_order_goes_to(gate: Gate, client: Bus) -> None:
    """alpha is long 3 BTC, the state REDUCING: a sell of 3 on alpha reduces; the same sell on beta (which holds
    none) would open a short there - refused, although the net of both venues would shrink."""
    from schemas.messages import RiskCommand, RiskStateChange

    s = client.subjects
    await client.js_publish(s.fills("BTC_USDT"), vfill("a-1", "alpha", "buy", "3", "100"))
    await gate()  # (ALLOW_SHORT=true in these settings)
    await client.request(s.risk_command, RiskCommand(action="reduce"), RiskStateChange, timeout=5)

    def sell(coid: str, venue: str) -> OrderRequest:
        return msgspec.structs.replace(request(coid, "3", exchange=venue), side="sell")

    assert (await validate(client, sell("red-alpha", "alpha"))).ok
    r = await validate(client, sell("red-beta", "beta"))
    assert not r.ok and r.code == "REDUCING_ONLY", (r.code, r.detail)
