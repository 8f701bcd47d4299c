"""The execution-algorithm bench stage (bench/algos.py) run for real, short: a ``tbx run`` on the session's
nats-server, a few TWAPs of a few slices placed at once over POST /api/orders. Every slice was sent (counts, from the
router's own records and from what the bench followed on the bus), each once, every parent filled, and the table has
its rows. No timing is asserted: only that each slice has a drift figure."""

from __future__ import annotations

import json
from pathlib import Path

from bench.algos import add_rows, stage, summary
from bench.harness import Table, Tally

PARENTS, SLICES = 4, 5


async def test_the_stage_follows_every_slice_of_every_parent(nats_url: str, tmp_path: Path) -> None:
    tally = Tally()
    res = await stage(nats_url, None, tmp_path, tally, PARENTS, SLICES, 300)

    planned = PARENTS * SLICES
    assert tally.sent == tally.accepted == PARENTS and tally.failures == 0, tally.line()
    assert res["placed"] == PARENTS and res["ends"] == {"filled": PARENTS}
    assert res["planned"] == planned == res["sent"] == res["children"] + res["merged"]
    assert res["skipped"] == 0 and res["problems"] == {}, res["problems"]
    for key in ("made", "decided", "done"):
        assert len(res[key]) == planned
    assert len(res["reference"]) == planned and len(res["rawMs"]) == len(res["storedMs"]) > 0
    assert sorted(res["byIndex"]) == list(range(SLICES))
    assert all(x >= 0 for x in res["made"])  # never before its time (the engine's rule, checked per child too)
    assert res["logProblems"] == {}, (tmp_path / "tbx-algos.log").read_text()[-3000:]

    t = Table(1.0)
    add_rows(t, res)
    text = "\n".join(t.lines)
    assert f"{PARENTS} TWAPs x {SLICES} slices, 300 ms apart" in text
    assert "drift: due -> child made (createdAt, the router)" in text
    assert f"{PARENTS} x {SLICES} plain asyncio timers" in text
    assert f"{planned} of {planned} planned" in text
    assert "no slice sent twice, no child made twice, none before its time, every child filled" in text
    made = next(f for f in t.figures if f["name"] == "algos: drift: due -> child made (createdAt, the router)")
    assert made["n"] == planned
    figures = json.loads(json.dumps(summary(res), default=str))  # what harness.json gets
    assert figures["made"]["n"] == planned and figures["sent"] == planned
