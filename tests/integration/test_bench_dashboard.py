"""The dashboard bench stage (bench/dashboard.py) run for real, tiny: a ``tbx run`` on the session's nats-server
with 20 orders (about 200 fills) in its books, the dashboard page (gateway/dashboard, GET /dashboard) loaded in
headless Chromium, then 100 fills over 10 s into the open page. Checked: the books are what was seeded (every
order accepted and completely filled, the fills stored), every load reached the first full render and fetched
pages (its API calls limited, fewer bytes than every fill), the memory table has its rows and samples, the last
fill's row was shown and no fill row twice. No timing is asserted: only that each load has a time."""

from __future__ import annotations

import json
from pathlib import Path

from bench.dashboard import PAIRS, Plan, add_rows, stage, summary
from bench.harness import Table, Tally

PLAN = Plan(orders=20, loads=2, memory_fills=100, memory_seconds=10.0, sample_s=2.0, refs=5)


async def test_the_stage_loads_the_page_over_real_books_and_samples_its_memory(nats_url: str, tmp_path: Path) -> None:
    tally = Tally()
    res = await stage(nats_url, None, tmp_path, PLAN, tally)

    seed = res["seed"]
    assert seed["orders"] == seed["sent"] == PLAN.orders and seed["refused"] == {} and seed["notFilled"] == 0
    assert seed["storedFills"] == seed["fills"] >= PLAN.orders  # every order filled, level by level
    assert tally.failures == 0, tally.line()
    assert res["pairs"] == list(PAIRS)

    assert len(res["loadMs"]) == PLAN.loads and all(ms > 0 for ms in res["loadMs"])
    assert res["load"]["n"] == PLAN.loads and res["empty"]["n"] >= 1
    assert res["refOrders"]["n"] == res["refTrades"]["n"] == PLAN.refs
    assert res["shown"]["n"] == PLAN.shown_orders  # every REST order's row and fill showed on the open page
    rq = res["requests"]
    assert rq["apiRequests"] >= 1 and rq["files"] >= 1, rq
    assert all("/api/" in p for p in rq["api"]), rq
    # it fetches pages: no fill list asked for without a limit, and less than every fill would be
    assert all("limit=" in p for p in rq["api"] if p.startswith(("/api/trades", "/api/orders"))), rq["api"]
    assert res["everyFill"]["fills"] == seed["storedFills"]
    assert res["consoleErrors"] == [], res["consoleErrors"]

    m = res["memory"]
    assert m["notFilled"] == 0 and m["fills"] == PLAN.memory_fills
    assert m["lastFillShown"] and m["doubled"] == 0 and m["errors"] == []
    assert len(res["samples"]) >= 3  # the first, some while the fills went in, the last
    assert res["samples"][-1]["fills"] == PLAN.memory_fills
    for key in ("heapMb", "nodes", "rows", "listeners"):
        r = m[key]
        assert r["start"] is not None and r["end"] is not None and r["max"] >= max(r["start"], r["end"])
        assert r["per1000Fills"] is not None
    assert m["heapMb"]["start"] > 0 and m["nodes"]["start"] > 0 and m["rows"]["end"] >= 1
    assert res["logProblems"] == {}, (tmp_path / "tbx-dashboard.log").read_text()[-3000:]

    t = Table(1.0)
    add_rows(t, res)
    text = "\n".join(t.lines)
    assert "page load -> first full render (data-ready)" in text and "reference: an empty page" in text
    assert "JS heap used (MB)" in text and "DOM nodes" in text and "the last fill's row shown" in text
    assert f"{PLAN.orders:,} orders, {seed['storedFills']:,} fills stored" in text
    names = [f["name"] for f in t.figures]
    assert "dashboard: page load -> first full render (data-ready)" in names
    figures = json.loads(json.dumps(summary(res)))  # what harness.json gets
    assert figures["load"]["n"] == PLAN.loads
