"""A venue's trade becomes the fill ``<venue>:<pair>:<trade id>``: venues number trades per symbol (Binance's BTCUSDT
trade 1 and ETHUSDT trade 1 are two trades), and the fill id is the FILLS message id and every booker's dedupe key.
Fills stored before the pair was part of the id (``<venue>:<trade id>``) still count as the trades they were."""

from __future__ import annotations

from decimal import Decimal

from actors.fill_tracker import FillTracker
from bus.client import Bus, Envelope
from config.settings import load_settings
from schemas.messages import ExecutionReport, Fill
from schemas.subjects import Subjects
from tests.helpers import eventually

D = Decimal


def trade(order: str, pair: str, trade_id: str, qty: str = "1") -> ExecutionReport:
    return ExecutionReport(
        kind="trade", order_id=order, client_order_id=f"c-{order}", pair=pair, side="buy", order_quantity=D(2),
        venue="binance", ts=1, trade_id=trade_id, quantity=D(qty), price=D(100),
    )  # fmt: skip


async def stored_fills(bus: Bus) -> list[Fill]:
    out: list[Fill] = []

    async def keep(f: Fill, env: Envelope) -> None:
        out.append(f)

    s = bus.subjects
    await bus.replay(stream=s.s_fills, subject=s.fills(), type_=Fill, handler=keep)
    return out


async def _v(value: object) -> object:
    return value


async def test_two_pairs_trades_with_the_same_number_are_two_fills_and_an_old_id_still_dedupes(
    nats_url, prefix, make_bus
) -> None:
    client: Bus = await make_bus("client")
    s = client.subjects
    # stored by a version before the pair was in the id: order A's trade 7 on BTC_USDT, as "binance:7"
    old = Fill(
        fill_id="binance:7", order_id="A", client_order_id="c-A", pair="BTC_USDT", side="buy", quantity=D(1),
        price=D(100), fee=D(0), fee_currency="USDT", liquidity="taker", venue="binance", timestamp=1,
        order_filled_quantity=D(1), order_average_price=D(100), order_fees=D(0), order_complete=False,
    )  # fmt: skip
    await client.js_publish(s.fills("BTC_USDT"), old, msg_id=old.fill_id)

    settings = load_settings({"NATS_URL": nats_url, "BUS_PREFIX": prefix})
    bus = await Bus.connect(nats_url, name="fill-tracker", subjects=Subjects(prefix))
    tracker = FillTracker(settings, bus)
    await tracker.start()
    try:
        await client.js_publish(s.exec_reports("BTC_USDT"), trade("A", "BTC_USDT", "7"))  # redelivered: booked
        await client.js_publish(s.exec_reports("BTC_USDT"), trade("A", "BTC_USDT", "1"))
        await client.js_publish(s.exec_reports("ETH_USDT"), trade("B", "ETH_USDT", "1"))  # the same number

        async def three() -> list[Fill] | None:
            got = await stored_fills(client)
            return got if len(got) == 3 and tracker.duplicates == 1 else None

        fills = await eventually(three, timeout=20, what="one new fill per pair, the old trade dropped")
        assert [f.fill_id for f in fills] == ["binance:7", "binance:BTC_USDT:1", "binance:ETH_USDT:1"]
        assert fills[1].order_filled_quantity == D(2) and fills[1].order_complete  # A: trade 7 counted, then 1
        assert fills[2].order_id == "B" and fills[2].pair == "ETH_USDT"
    finally:
        await tracker.stop()
        await bus.close()
