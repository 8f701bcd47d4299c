"""The dashboard (issue 21) in a real headless Chromium against the real service.

Deadlines are functional, not performance figures: the issue asks for an order's row and fill "within a
second"; on this shared 2-core machine the tests allow ``SHOWN_S`` (5 s) and poll, so a slow moment never
fails them, while a page that does not update live (or doubles a row) still does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from playwright.async_api import expect

from schemas.messages import OrderReply, OrderRequest, OrdersPage, OrdersQuery, OrderStatus
from tests.browser.conftest import ARTIFACTS, Service, Tab
from tests.helpers import eventually

PANELS = (
    *("#summary", "#positions", "#orders", "#fills", "#alerts", "#signals", "#venues", "#trading-state"),
    *("#emergency-stop", "#resume", "#equity-chart", "#price-chart", "#pair-select"),
)
SHOWN_S = 5.0  # "within a second" in the issue; generous here (a noisy shared machine)


async def until(fn: Callable[[], Awaitable[Any]], timeout: float = SHOWN_S, what: str = "condition") -> Any:
    return await eventually(fn, timeout=timeout, every=0.05, what=what)


async def open_page(svc: Service, tab: Callable[..., Awaitable[Tab]], path: str = "/", **size: int) -> Tab:
    t = await tab(**size)
    await t.page.goto(svc.base + path)
    await t.ready()
    return t


async def order_state(svc: Service, order_id: str) -> dict[str, Any]:
    status, o = await svc.call("GET", f"/api/orders/{order_id}")
    assert status == 200, o
    return o


async def test_the_page_loads_every_panel_with_no_console_error(make_service, tab):
    svc = await make_service()
    placed = await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.01)
    await until(lambda: _filled(svc, placed["orderId"]), what="the first order filled")
    for path in ("/", "/dashboard"):
        t = await open_page(svc, tab, path)
        page = t.page
        for sel in PANELS:
            await expect(page.locator(sel)).to_have_count(1)
        await expect(page.locator("#conn-banner")).to_be_hidden()
        await expect(page.locator("#trading-state")).to_have_text("ACTIVE")
        await expect(page.locator("#venues tbody tr[data-venue='paper']")).to_have_count(1)
        await expect(page.locator("#positions tbody tr[data-pair='BTC_USDT'][data-exchange='paper']")).to_have_count(1)
        await expect(page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")).to_have_count(1)
        total = await page.locator("#summary [data-field=totalValue]").inner_text()
        assert total not in ("", "–") and "," in total, total  # a formatted figure (50,000-ish)
        assert await page.locator("#equity-chart canvas").count() > 0  # the vendored chart library drew
        assert await page.locator("#price-chart canvas").count() > 0
        await page.wait_for_timeout(300)  # late errors (a chart, a poll) show up too
        assert t.errors == [], t.errors


async def _filled(svc: Service, order_id: str) -> dict[str, Any] | None:
    o = await order_state(svc, order_id)
    return o if o["status"] == "filled" else None


async def test_an_order_placed_over_rest_shows_its_row_and_its_fill(make_service, tab):
    svc = await make_service()
    t = await open_page(svc, tab)
    placed = await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.01)
    t0 = time.monotonic()
    row = t.page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")
    await expect(row.locator("td[data-field=status]")).to_have_text("filled", timeout=SHOWN_S * 1000)
    o = await _filled(svc, placed["orderId"])
    assert o is not None
    fill_id = o["fills"][0]["fillId"]
    await expect(t.page.locator(f"#fills tbody tr[data-fill-id='{fill_id}']")).to_have_count(1, timeout=SHOWN_S * 1000)
    shown_after = time.monotonic() - t0
    await expect(t.page.locator("#positions tbody tr[data-pair='BTC_USDT']")).to_have_count(1)
    assert t.errors == [], t.errors
    # the artifact: the page with data on it, on a laptop and on a phone (kept after the run, gitignored)
    ARTIFACTS.mkdir(exist_ok=True)
    await t.page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    await t.page.set_viewport_size({"width": 390, "height": 844})
    await expect(t.page.locator("#emergency-stop")).to_be_in_viewport()
    # readable on a phone: one column, nothing wider than the screen (wide tables scroll inside their panel)
    assert await t.page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    await t.page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"))
    print(f"order row and fill shown {shown_after:.2f} s after the REST answer")


async def test_cancel_from_the_page_cancels_a_resting_limit_order(make_service, tab):
    svc = await make_service()
    t = await open_page(svc, tab)
    price = round(await svc.mid() * 0.95)  # rests: 5 % under the market (10 % band; BTC_USDT tick 1)
    placed = await svc.order(pair="BTC_USDT", side="buy", type="limit", price=price, quantity=0.01)
    row = t.page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")
    await expect(row.locator("td[data-field=status]")).to_have_text("accepted", timeout=SHOWN_S * 1000)
    await row.locator("button[data-action=cancel]").click()

    async def canceled() -> bool:
        return (await order_state(svc, placed["orderId"]))["status"] == "canceled"

    await until(canceled, what="the order canceled over REST")
    await expect(row.locator("td[data-field=status]")).to_have_text("canceled", timeout=SHOWN_S * 1000)
    await expect(row.locator("button[data-action=cancel]")).to_be_hidden()
    assert t.errors == [], t.errors


async def test_modify_from_the_page_patches_the_order(make_service, tab):
    svc = await make_service()
    t = await open_page(svc, tab)
    price = round(await svc.mid() * 0.95)
    placed = await svc.order(pair="BTC_USDT", side="buy", type="limit", price=price, quantity=0.01)
    row = t.page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")
    await expect(row.locator("td[data-field=status]")).to_have_text("accepted", timeout=SHOWN_S * 1000)
    await row.locator("button[data-action=modify]").click()
    await expect(t.page.locator("#modify-dialog")).to_be_visible()
    new_price = price - 100
    await t.page.fill("#modify-price", str(new_price))
    await t.page.click("#modify-submit")

    async def moved() -> bool:
        o = await order_state(svc, placed["orderId"])
        return float(o["price"]) == new_price and o["status"] == "accepted"

    await until(moved, what="the price changed over REST")
    await expect(row.locator("td[data-field=price]")).to_have_text(f"{new_price:,.2f}", timeout=SHOWN_S * 1000)
    assert t.errors == [], t.errors


async def test_emergency_stop_from_the_page_asks_first_then_halts_trading(make_service, tab):
    svc = await make_service()
    t = await open_page(svc, tab)
    page = t.page
    await page.click("#emergency-stop")
    await expect(page.locator("#confirm-dialog")).to_be_visible()
    await page.click("#confirm-no")  # changed one's mind: nothing happens
    await expect(page.locator("#confirm-dialog")).to_be_hidden()
    await page.focus("#emergency-stop")  # by keyboard: Enter opens it, the focus goes to "Cancel", Esc leaves
    await page.keyboard.press("Enter")
    await expect(page.locator("#confirm-dialog")).to_be_visible()
    await expect(page.locator("#confirm-no")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#confirm-dialog")).to_be_hidden()
    await asyncio.sleep(0.3)
    assert (await svc.call("GET", "/api/status"))[1]["tradingState"] == "ACTIVE"

    await page.click("#emergency-stop")
    await page.click("#confirm-yes")

    async def halted() -> bool:
        return (await svc.call("GET", "/api/status"))[1]["tradingState"] == "HALTED"

    await until(halted, timeout=15, what="trading HALTED over REST")
    await expect(page.locator("#trading-state")).to_have_text("HALTED", timeout=SHOWN_S * 1000)
    status, _ = await svc.call("POST", "/api/orders", {"pair": "BTC_USDT", "side": "buy", "quantity": 0.01})
    assert status == 503  # halted: no new order

    await page.click("#resume")
    await expect(page.locator("#trading-state")).to_have_text("ACTIVE", timeout=SHOWN_S * 1000)
    assert (await svc.call("GET", "/api/status"))[1]["tradingState"] == "ACTIVE"
    assert t.errors == [], t.errors


async def _fill_ids_of(svc: Service) -> list[str]:
    status, page = await svc.call("GET", "/api/trades?limit=100")
    assert status == 200
    return [f["fillId"] for f in page["trades"]]


async def test_the_stream_dropped_and_restored_shows_every_fill_once(make_service, tab):
    """The gateway really goes away (its process part: the REST site and its bus connection), fills happen
    meanwhile (orders straight on the bus), it comes back on the same port: the page shows the banner, then
    resumes with Last-Event-ID (no reload of the snapshots: those fills can only come from the resume)."""
    svc = await make_service()
    t = await open_page(svc, tab)
    page = t.page
    for _ in range(3):
        await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.001)
    await until(lambda: _rows(t, 3), what="3 fill rows")

    await svc.stop_gateway()
    await expect(page.locator("#conn-banner")).to_be_visible(timeout=SHOWN_S * 1000)
    for i in range(3):  # fills while the page cannot hear of them
        reply = await svc.client.request(
            svc.client.subjects.orders_submit,
            OrderRequest(client_order_id=f"down-{i}", pair="ETH_USDT", side="buy", quantity=0.01),  # type: ignore[arg-type]
            OrderReply,
        )
        assert reply.ok, reply

    async def all_filled() -> bool:
        q = OrdersQuery(pair="ETH_USDT", status=OrderStatus.FILLED)
        got = await svc.client.request(svc.client.subjects.query("orders"), q, OrdersPage)
        return len(got.orders) == 3

    await until(all_filled, timeout=15, what="the 3 orders sent while the gateway was down filled")
    assert len(await t.fill_ids()) == 3  # nothing could reach the page

    await svc.start_gateway()
    await expect(page.locator("#conn-banner")).to_be_hidden(timeout=15_000)  # back-off at most 2 s
    for _ in range(2):
        await svc.order(pair="BTC_USDT", side="sell", type="market", quantity=0.001)
    await until(lambda: _rows(t, 8), timeout=15, what="8 fill rows")
    await page.wait_for_timeout(500)  # a doubled row would show up by now
    shown = await t.fill_ids()
    assert len(shown) == len(set(shown)) == 8, shown
    assert set(shown) == set(await _fill_ids_of(svc))
    stats = await t.stats()
    assert stats["reconnects"] >= 1 and stats["connected"], stats
    assert t.errors == [] or all("Failed to load resource" in e or "ERR_" in e for e in t.errors), t.errors


async def _rows(t: Tab, n: int) -> bool:
    return len(await t.fill_ids()) >= n


@pytest.mark.parametrize("where", ["/"])
async def test_with_api_token_the_page_asks_for_it_refuses_a_wrong_one_and_keeps_the_right_one(
    make_service, tab, where
):
    svc = await make_service(API_TOKEN="s3cret-token")
    # the page and its files need no token; the API does
    async with svc.http.get(svc.base + where) as r:
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
    async with svc.http.get(svc.base + "/dashboard/static/app.js") as r:
        assert r.status == 200
    async with svc.http.get(svc.base + "/api/status") as r:
        assert r.status == 401

    t = await tab()
    page = t.page
    await page.goto(svc.base + where)
    await expect(page.locator("#token-dialog")).to_be_visible(timeout=SHOWN_S * 1000)
    await expect(page.locator("#token-error")).to_be_hidden()
    await page.fill("#token-input", "wrong")
    await page.click("#token-submit")
    await expect(page.locator("#token-error")).to_be_visible(timeout=SHOWN_S * 1000)
    await expect(page.locator("#token-dialog")).to_be_visible()
    assert await page.get_attribute("body", "data-ready") is None

    await page.fill("#token-input", "s3cret-token")
    await page.press("#token-input", "Enter")  # the keyboard submits it
    await expect(page.locator("#token-dialog")).to_be_hidden(timeout=SHOWN_S * 1000)
    await t.ready()
    await expect(page.locator("#conn-banner")).to_be_hidden(timeout=SHOWN_S * 1000)
    await expect(page.locator("#trading-state")).to_have_text("ACTIVE")
    assert "s3cret" not in page.url
    assert await page.evaluate("() => sessionStorage.getItem('tbx.apiToken')") == "s3cret-token"
    assert await page.evaluate("() => localStorage.length") == 0

    # live with the token: an order shows up
    placed = await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.001)
    row = page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")
    await expect(row.locator("td[data-field=status]")).to_have_text("filled", timeout=SHOWN_S * 1000)

    # kept for the session: a reload does not ask again
    await page.reload()
    await t.ready()
    await expect(page.locator("#token-dialog")).to_be_hidden()
    # the only console errors: the browser's own lines for the 401 answers that asked for the token
    assert all("401" in e for e in t.errors), t.errors


async def test_fills_made_while_the_page_loads_show_once_each(make_service, tab):
    """Orders fill while the page opens: some fills are in its snapshots, some only in the stream, some in both
    (the stream opens first, the snapshots follow): each one is shown, once."""
    svc = await make_service()
    n = 12

    async def trade() -> None:
        for _ in range(n):
            await svc.order(pair="ETH_USDT", side="buy", type="market", quantity=0.01)
            await asyncio.sleep(0.08)

    trading = asyncio.create_task(trade())
    t = await tab()
    await t.page.goto(svc.base + "/")
    await t.ready()
    await trading

    async def every_fill_shown() -> list[str] | None:
        made = await _fill_ids_of(svc)
        shown = await t.fill_ids()
        return shown if len(made) == n and set(shown) == set(made) else None

    shown = await until(every_fill_shown, timeout=15, what=f"the {n} fills on the page")
    await t.page.wait_for_timeout(500)
    shown = await t.fill_ids()
    assert len(shown) == len(set(shown)) == n, shown
    assert t.errors == [], t.errors


async def _rest_limits(svc: Service, n: int) -> list[str]:
    """``n`` buy limits 5 % under the market (they rest), placed over REST ten at a time; their ids."""
    price = round(await svc.mid() * 0.95)
    ids: list[str] = []
    for start in range(0, n, 10):
        batch = await asyncio.gather(
            *(
                svc.order(pair="BTC_USDT", side="buy", type="limit", price=price, quantity=0.001)
                for _ in range(min(10, n - start))
            )
        )
        ids += [o["orderId"] for o in batch]
    return ids


async def test_with_more_than_100_working_orders_a_finished_one_still_shows(make_service, tab):
    """Review F1: the working orders are all kept, and the finished ones are bounded on their own, so a market
    order among 105 resting limits still shows its row as filled (it used to be trimmed away at once)."""
    svc = await make_service(MAX_ORDERS_PER_SECOND="1000")  # 105 resting orders quickly
    await _rest_limits(svc, 105)
    t = await open_page(svc, tab)
    placed = await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.001)
    row = t.page.locator(f"#orders tbody tr[data-order-id='{placed['orderId']}']")
    await expect(row.locator("td[data-field=status]")).to_have_text("filled", timeout=SHOWN_S * 1000)
    await t.page.wait_for_timeout(500)  # a later render must not trim it either
    await expect(row).to_have_count(1)
    assert t.errors == [], t.errors


def _drawdown_text(fraction: str) -> str:
    """How the page shows a drawdown fraction of /api/performance: a negative percentage, 2 decimals."""
    shown = (-Decimal(fraction) * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{shown if shown else Decimal('0.00'):,.2f} %"


async def test_the_summary_shows_the_services_drawdown(make_service, tab):
    """Review F3: the drawdown figures are /api/performance's currentDrawdownPct / maxDrawdownPct (exact, from
    the all-time peak), not one worked out in floats from the points the page keeps."""
    svc = await make_service()
    placed = await svc.order(pair="BTC_USDT", side="buy", type="market", quantity=0.01)  # its fee: a drawdown
    await until(lambda: _filled(svc, placed["orderId"]), what="the order filled")
    t = await open_page(svc, tab)
    status, perf = await svc.call("GET", "/api/performance")
    assert status == 200, perf
    summary = t.page.locator("#summary")
    for field, key in (("drawdown", "currentDrawdownPct"), ("maxDrawdown", "maxDrawdownPct")):
        # polled every 10 s: the figure may move with the market meanwhile, so read the API as it is shown
        async def same(field: str = field, key: str = key) -> bool:
            shown = await summary.locator(f"[data-field={field}]").inner_text()
            return shown == _drawdown_text(str((await svc.call("GET", "/api/performance"))[1][key]))

        await until(same, timeout=25, what=f"{field} as /api/performance's {key}")
    assert t.errors == [], t.errors


async def test_money_keeps_its_currencys_decimals(make_service, tab):
    """Review F4: sums are shown with the decimals the API gives them (at least 2), so a summary in BTC is not
    rounded to cents ("0.00" for 0.00041 BTC)."""
    svc = await make_service(BASE_CURRENCY="BTC", PAIRS="BTC_USDT,ETH_BTC")
    placed = await svc.order(pair="ETH_BTC", side="buy", type="market", quantity=25)  # min notional 1 BTC
    await until(lambda: _filled(svc, placed["orderId"]), what="the order filled")
    t = await open_page(svc, tab)
    fees = t.page.locator("#summary [data-field=fees]")

    async def as_the_api() -> str | None:
        status, pf = await svc.call("GET", "/api/portfolio")
        assert status == 200, pf
        want = str(pf["summary"]["feesPaid"])
        places = max(2, -int(Decimal(want).as_tuple().exponent))
        return want if await fees.inner_text() == f"{Decimal(want):,.{places}f}" else None

    want = await until(as_the_api, what="the fees in BTC with the API's decimals")
    assert Decimal(want) and -int(Decimal(want).as_tuple().exponent) > 2, want  # a BTC fee: more than 2 decimals
    assert t.errors == [], t.errors


async def test_working_orders_past_the_first_page_are_all_shown(make_service, tab):
    """Review F5: the page follows nextCursor of /api/orders?status=open, so 105 resting orders (more than one
    page of 100) all show, each with its Cancel button; no "more working orders" note (none is missing)."""
    svc = await make_service(MAX_ORDERS_PER_SECOND="1000")
    ids = await _rest_limits(svc, 105)
    t = await open_page(svc, tab)
    rows = t.page.locator("#orders tbody tr")
    await expect(rows).to_have_count(105, timeout=SHOWN_S * 1000)
    shown = set(await rows.evaluate_all("rs => rs.map(r => r.dataset.orderId)"))
    assert shown == set(ids)
    await expect(
        t.page.locator(f"#orders tbody tr[data-order-id='{ids[0]}'] button[data-action=cancel]")
    ).to_be_visible()
    await expect(t.page.locator("#orders-more")).to_be_hidden()
    assert t.errors == [], t.errors
