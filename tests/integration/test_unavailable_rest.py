"""REST callers when JetStream stays without a stream leader beyond the bus's own retries (issue 19): 503
UPSTREAM_UNAVAILABLE with Retry-After and the id to retry with, never a 502 or a lost order."""

from __future__ import annotations

from typing import Any

from tests.integration.test_gateway_orders import JSON_CT, api  # noqa: F401  (fixture)


async def test_post_orders_answers_503_upstream_unavailable_with_retry_after_and_the_client_order_id(
    api,  # noqa: F811
) -> None:
    """The risk-gate's publish of an approval finds no stream leader for longer than js_publish retries it (3 s):
    503 UPSTREAM_UNAVAILABLE, Retry-After: 1, the clientOrderId; the retry after the election is the same order."""
    await api.book([("100", "10")], [("101", "10")])
    body: dict[str, Any] = {
        "pair": "BTC_USDT", "side": "buy", "type": "market", "quantity": 0.05, "clientOrderId": "NOLEADER-1",
    }  # fmt: skip
    placed = await api.place(**body)
    hops = api.bus.subjects.stream_name("HOPS")
    cfg = (await api.bus.js.stream_info(hops)).config
    real = list(cfg.subjects)
    cfg.subjects = [f"{api.bus.subjects.prefix}.nothing.here"]
    await api.bus.js.update_stream(cfg)  # the approvals' stream takes nothing (no leader, an election)
    try:
        async with api.http.post(api.base + "/api/orders", json=body) as r:
            status, ctype, retry_after = r.status, r.content_type, r.headers.get("Retry-After")
            problem = await r.json(content_type=None)
    finally:
        cfg.subjects = real
        await api.bus.js.update_stream(cfg)
    assert (status, ctype) == (503, "application/problem+json"), problem
    assert (problem["code"], problem["clientOrderId"], retry_after) == ("UPSTREAM_UNAVAILABLE", "NOLEADER-1", "1")
    assert "NoStreamResponseError" in problem["detail"] and "same clientOrderId" in problem["detail"]
    status, ctype, again = await api.call("POST", "/api/orders", body)  # the retry: the same order
    assert (status, ctype) == (201, JSON_CT) and again["orderId"] == placed["orderId"], again
