"""The routing-path bench stage (bench/routing_path.py) run for real with very few orders: a ``tbx run`` with three
paper venues on the session's nats-server, orders routed by best_price and orders naming alpha, interleaved. Its
figures are produced and every order was checked (answered ok, on alpha, completely filled there; the routed
ones' decision a three-venue tie going to alpha). No timing is asserted: only that each timed order has a time."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import Table, Tally
from bench.routing_path import NAMED, VENUES, WARMUP, add_rows, stage, summary


async def test_the_stage_times_and_checks_every_order_routed_and_named(nats_url: str, tmp_path: Path) -> None:
    n = 4
    tally = Tally()
    res = await stage(nats_url, None, tmp_path, n, tally)

    sent = 1 + 2 * WARMUP + 2 * n  # the seed, the warm-up and the timed orders of both kinds
    assert res["sent"] == res["checked"] == sent
    assert tally.sent == tally.accepted == sent and tally.failures == 0, tally.line()
    assert all(not f for f in res["failures"].values()), res["failures"]
    for key in ("onReply", "onFill", "offReply", "offFill"):
        assert len(res[key]) == n and all(ms > 0 for ms in res[key])
    assert res["pairedReplyMs"] is not None and res["pairedFillMs"] is not None
    example = res["example"]
    assert example.startswith("best_price ") and example.endswith(f"-> {NAMED}")
    assert all(f"{v} " in example for v in VENUES)
    assert res["decision"]["n"] > 0 and res["decision"]["levels"] == 10
    assert res["logProblems"] == {}, (tmp_path / "tbx-routing.log").read_text()[-3000:]

    t = Table(1.0)
    add_rows(t, res)
    text = "\n".join(t.lines)
    assert "routing on (no venue named, best_price)" in text and f"routing off (exchange={NAMED})" in text
    assert "difference on - off" in text
    assert f"every one of {sent:,} orders answered ok, on {NAMED} and completely filled there" in text
    names = [f["name"] for f in t.figures]
    assert "routing path: difference on - off" in names
    on = next(f for f in t.figures if f["name"] == "routing path: routing on (no venue named, best_price)")
    assert on["n"] == n and on["fillP50Ms"] > 0
    figures = json.loads(json.dumps(summary(res)))  # what harness.json gets
    assert figures["onFill"]["n"] == figures["offFill"]["n"] == n
    assert figures["checked"] == sent
