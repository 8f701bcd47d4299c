"""The algorithm bench's own bookkeeping (bench/algos.py), as plain functions: how it reads a parent's steps off
the order events, and that its checks can fail (a slice marked sent twice, a skipped slice without a reason)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal as D

import msgspec

from bench.algos import Child, Group, Parent, Watch, analyse
from schemas.messages import AlgoSpec, AlgoState, Order, OrderEvent, OrderStatus

S = OrderStatus
STEP = D("0.000001")


@dataclass
class FakeMsg:  # (only what Watch.on_msg reads of a nats Msg: the payload)
    data: bytes


def parent(sent: list[int], children: list[str], reason: str | None = None, status: S = S.ACCEPTED) -> Order:
    return Order(
        order_id="P1", client_order_id="p1", pair="BTC_USDT", side="buy", type="twap", quantity=D("0.004"),
        status=status, algo=AlgoSpec(duration_ms=4000, slices=4, seed=1), reason=reason, children=children,
        algo_state=AlgoState(start_ms=10_000, sent=sent, step=STEP, min_quantity=STEP), updated_at=10_000,
    )  # fmt: skip


def child(cid: str, k: int, created_at: int, status: S = S.SUBMITTED) -> Order:
    return Order(
        order_id=cid, client_order_id=f"tbx:P1:s{k}", pair="BTC_USDT", side="buy", type="market", quantity=D("0.001"),
        status=status, role="slice", parent_order_id="P1", created_at=created_at,
        closed_at=created_at + 2 if status is S.FILLED else None,
    )  # fmt: skip


async def feed(w: Watch, event: str, o: Order) -> None:
    await w.on_msg(FakeMsg(msgspec.json.encode(OrderEvent(event=event, order=o, ts=0))))  # type: ignore[arg-type]


async def test_a_parents_steps_are_read_off_its_slice_sent_events() -> None:
    """One child per slice, a merge (two indexes, one child) and a slice that sent nothing (its note on the trail)."""
    w = Watch()
    merged = "slices 1..2 merged: overdue by 1500 ms"
    nothing = "slice 3: nothing to send (the earlier children cover the schedule so far)"
    await feed(w, "accepted", parent([], []))
    await feed(w, "slice_sent", parent([0], ["C0"]))
    await feed(w, "submitted", child("C0", 0, 10_003))
    await feed(w, "filled", child("C0", 0, 10_003, S.FILLED))
    await feed(w, "slice_sent", parent([0, 1, 2], ["C0", "C2"], merged))
    await feed(w, "submitted", child("C2", 2, 12_004))
    await feed(w, "filled", child("C2", 2, 12_004, S.FILLED))
    await feed(w, "slice_sent", parent([0, 1, 2, 3], ["C0", "C2"], nothing))
    await feed(w, "filled", parent([0, 1, 2, 3], ["C0", "C2"], nothing, S.FILLED))

    p = w.parents["P1"]
    assert [(g.indexes, g.child, g.note) for g in p.groups] == [
        ([0], "C0", None),
        ([1, 2], "C2", merged),
        ([3], None, nothing),
    ]
    assert w.children["C2"].created_at == 12_004 and w.children["C2"].status == "filled" and w.twice == []

    res = analyse({"P1": parent([0, 1, 2, 3], ["C0", "C2"], nothing, S.FILLED)}, w, {}, 4)
    assert res["problems"] == {}
    assert (res["planned"], res["sent"], res["children"], res["merged"], res["skipped"]) == (4, 3, 2, 1, 1)
    assert res["skippedWhy"] == {"nothing to send": 1}
    assert sorted(res["made"]) == [3.0, 4.0, 1004.0]  # slice 0 made at 10,003; 1 and 2 (due 11,000, 12,000) at 12,004


async def test_the_checks_can_fail() -> None:
    """A slice index marked sent twice, a second child of one slice and a skip without a reason are reported."""
    w = Watch()
    await feed(w, "slice_sent", parent([0], ["C0"]))
    await feed(w, "submitted", child("C0", 0, 10_001, S.FILLED))
    await feed(w, "slice_sent", parent([0, 1], ["C0", "C1"]))
    await feed(w, "submitted", child("C1", 1, 11_001, S.FILLED))
    await feed(w, "slice_sent", parent([0, 1, 1], ["C0", "C1", "C1b"]))  # slice 1 again, with another child
    await feed(w, "submitted", child("C1b", 1, 11_002, S.FILLED))
    await feed(w, "slice_sent", parent([0, 1, 1, 2], ["C0", "C1", "C1b"]))  # nothing sent, no note
    final = parent([0, 1, 1, 2], ["C0", "C1", "C1b"], status=S.FILLED)

    res = analyse({"P1": final}, w, {}, 4)
    problems = res["problems"]
    assert problems["a slice index marked sent twice"] == 1
    assert problems["a child made twice"] == 1  # two children of client order id tbx:P1:s1
    assert problems["slices never sent nor skipped"] == 1  # slice 3
    assert "P1 slice 1 marked sent again" in problems
    assert res["skippedWhy"] == {"no reason on the trail": 1}


def test_a_view_that_differs_from_the_routers_record_is_reported() -> None:
    """What the bench followed on the bus must be what the router recorded (events it missed are not hidden)."""
    w = Watch()
    w.parents["P1"] = Parent("P1", "p1", "filled", [0], ["C0"], [Group([0], "C0", None, 10_000)])
    w.children["C0"] = Child("C0", "tbx:P1:s0", "P1", D("0.001"), 10_001, 10_001.5, "submitted", "filled")
    res = analyse({"P1": parent([0, 1], ["C0", "C1"], status=S.FILLED)}, w, {}, 4)
    assert res["problems"]["the bench's view of a parent's steps differs from the router's record (events missed?)"]
