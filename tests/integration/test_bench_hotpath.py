"""The hot-path bench stage (bench/hotpath.py) run for real, tiny: a ``tbx run`` on the session's nats-server, the bus
limits, the trace of a signal -> fill with a wildcard spy, the floor and every service phase with small counts. Every
order is accepted and completely filled, the trace finds each signal's publish and its fill event on the live service
(so a change of subjects or of the path that the trace can no longer follow fails here), and the table has its rows.
No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import Table, Tally
from bench.hotpath import Plan, add_rows, report, stage, summary

TINY = Plan(
    raw=50, writes=50, pipelined=1000, in_flight=100, batch=100, floor=10, traces=2, warmup=40, signal=10,
    bus_count=40, orders=100, steps=(50,), step_s=1.0, snapshot_calls=2, drain_s=30.0,
)  # fmt: skip


async def test_the_stage_measures_every_row_of_filled_orders(nats_url: str, tmp_path: Path) -> None:
    tally = Tally()
    res = await stage(nats_url, None, tmp_path, tally, TINY)

    # every order asked for: the seed, the warm-up, the traced signals, the signals, the counted orders, the flow, POST
    assert tally.failures == 0, tally.line()
    assert tally.sent == tally.accepted == 1 + 40 + 2 + 10 + 40 + 100 + 50, tally.phases
    assert [t["found"] for t in res["traces"]] == [True, True]
    assert res["k"] >= 1 and res["k"] == len(next(t for t in res["traces"] if t["k"] == res["k"])["writes"])
    assert any(step.startswith("W ") and ".events.fills." in step for step in res["traces"][0]["steps"])
    assert len(res["floorMs"]) == 10
    lim = res["limits"]
    assert len(lim["rawMs"]) == len(lim["writeMs"]) == 50
    assert lim["pipelinedRate"] > 0 and lim["readRate"] > 0
    (run,) = res["runs"]
    assert run["flow"]["accepted"] == 100 and run["flow"]["notFilled"] == 0
    assert run["busCount"]["n"] == 40 and len(run["signalMs"]) == 10 and len(run["snapshotMs"]) == 2
    assert run["flow"]["cpuMsPerOrder"]["total"] is not None
    assert res["logProblems"] == {}, (tmp_path / "tbx-hotpath0.log").read_text()[-3000:]

    t = Table(1.0)
    add_rows(t, res)
    text = "\n".join(t.lines)
    for row in (
        "bus: raw request/reply round trip",
        "bus: durable writes pipelined, 100 in flight",
        f"bus: the path's NATS floor, {res['k']} writes + {res['r']} requests",
        "2 of 2 seen publish -> fill",
        "orders through all actors, 64 in flight",
        "durable writes on the critical path (traced K)",
        "signal -> fill, one at a time",
        "POST /api/orders sustained (rate search)",
        "full portfolio snapshot, 10,000 positions",
        "resident memory, tbx run and its children",
    ):
        assert row in text, row
    assert "FAILED ORDERS" not in report(res, True, tally)
    figures = json.loads(json.dumps(summary(res), default=str))  # what hotpath.json and harness.json get
    assert figures["runs"][0]["figures"]["orderRate"] > 0 and figures["k"] == res["k"]
