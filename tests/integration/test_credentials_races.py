"""Regressions of the credentials review, against real parts (the session's nats-server, the local Binance that
checks every signature, the gateway over real HTTP): two stores of one venue at once each answered for its own
keys; a swap failing after a passed check (not in use, tried again); a key in a venue's error never shown; a
credential store that cannot be read at the router's start (fail closed, 503s); a check at one environment never
waiting for another's."""

from __future__ import annotations

import asyncio
from pathlib import Path

from loguru import logger

from tests.helpers import eventually
from tests.integration.test_credentials_rest import (  # noqa: F401 - fixtures
    ENV_KEY,
    K1,
    K2,
    S1,
    S2,
    exchange,
    http,
    live_env,
    paper_env,
    stack,
    store_body,
    submit,
)
from tests.integration.test_live_binance import until

GOOD_K, GOOD_S = "goodkey-0123456789abcdef-GOOD", "goodsecret-0123456789abcdef"
BAD_K, BAD_S = "badkey-0123456789abcdef-BADD", "badsecret-0123456789abcdef"


async def test_two_stores_at_once_each_answered_for_its_keys(stack, http, client, exchange, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("BINANCE_API_URL", exchange.base_url)
    exchange.add_key(GOOD_K, GOOD_S)
    _, base = await stack(paper_env())
    api = http(base)
    for first_bad in (True, False):  # either order of arrival
        bad = api.call("POST", "/api/credentials", json=store_body(BAD_K, BAD_S, "testnet"))
        good = api.call("POST", "/api/credentials", json=store_body(GOOD_K, GOOD_S, "testnet"))
        if first_bad:
            (sb, bb), (sg, bg) = await asyncio.gather(bad, good)
        else:
            (sg, bg), (sb, bb) = await asyncio.gather(good, bad)
        assert (sb, bb["code"], bb["field"]) == (422, "CREDENTIALS_REJECTED", "apiKey"), bb
        assert sg == 201 and bg["keyLast4"] == "GOOD", bg
        status, body = await api.call("GET", "/api/credentials/status")
        assert [(e["exchange"], e["environment"], e["keyLast4"]) for e in body["credentials"]] == [
            ("binance", "testnet", "GOOD")
        ]
        assert body["credentials"][0]["readable"] is True
        # each request's keys were checked with those keys: the bad ones refused, the good ones taken
        signed = {r.api_key for r in exchange.requests_for("GET", "/api/v3/account")}
        assert {BAD_K, GOOD_K} <= signed
        status, _ = await api.call("DELETE", "/api/credentials/binance?environment=testnet")
        assert status == 200


async def test_a_swap_failing_after_the_check_is_not_in_use_and_is_tried_again(stack, http, client, exchange) -> None:  # noqa: F811
    _, base = await stack(live_env(exchange))
    api = http(base)
    exchange.add_key(K1, S1)
    status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1))
    assert status == 201 and body["swapped"] is True and body["inUse"] is True
    exchange.add_key(K2, S2)
    # the check's markets pass; the swap's (the new client's markets) fail: the venue flaps between the two
    exchange.inject_fault("http_503", "GET", "/api/v3/exchangeInfo", times=10_000, after=1)
    status, body = await api.call("POST", "/api/credentials/binance/rotate", json={"apiKey": K2, "apiSecret": S2})
    assert status == 200, body
    assert (body["swapped"], body["inUse"], body["keyLast4"]) == (False, False, "K2K2"), body
    assert "keeps its current keys" in body["detail"]
    status, body = await api.call("GET", "/api/credentials/status")
    [stored] = [e for e in body["credentials"] if e["store"] == "kv"]
    assert (stored["keyLast4"], stored["inUse"]) == ("K2K2", False)  # the truth: K1 still signs
    assert (await submit(client, "during-1")).ok
    await until(client, "during-1", "filled")
    assert exchange.requests_for("POST", "/api/v3/order", newClientOrderId="during-1")[-1].api_key == K1

    exchange.clear_faults()  # the venue is back: the swap is tried again in the background and succeeds

    async def in_use() -> bool:
        _, body = await api.call("GET", "/api/credentials/status")
        return any(e["store"] == "kv" and e["inUse"] for e in body["credentials"])

    await eventually(in_use, timeout=20, what="the new keys in use")
    exchange.revoke_key(K1)
    assert (await submit(client, "after-1")).ok
    await until(client, "after-1", "filled")
    assert exchange.requests_for("POST", "/api/v3/order", newClientOrderId="after-1")[-1].api_key == K2


async def test_a_venue_error_echoing_the_new_key_shows_it_nowhere(stack, http, client, exchange) -> None:  # noqa: F811
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level=0, serialize=True)
    try:
        _, base = await stack(live_env(exchange))
        api = http(base)
        exchange.add_key(K1, S1)
        status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1))
        assert status == 201 and body["swapped"] is True
        exchange.add_key(K2, S2)
        # the swap's markets call (after the check's) is refused with an error quoting the new key
        exchange.inject_fault("echo_key", "GET", "/api/v3/exchangeInfo", after=1, echo=K2)
        status, body = await api.call("POST", "/api/credentials/binance/rotate", json={"apiKey": K2, "apiSecret": S2})
        assert status == 200 and body["swapped"] is False, body
        assert "Invalid API-key ***" in body["detail"]  # the venue's error is there, without the key
        status, exchanges = await api.call("GET", "/api/exchanges")
        assert status == 200
    finally:
        logger.remove(sink)
    texts = {"answer": str(body), "exchanges": str(exchanges)} | {f"log {i}": line for i, line in enumerate(lines)}
    assert any("Invalid API-key" in t for t in texts.values()), "the echoing error was not seen at all"
    assert [where for where, text in texts.items() if K2[:-4] in text] == []


async def test_unreadable_store_at_start_fails_closed(stack, http, client, exchange, tmp_path: Path) -> None:  # noqa: F811
    blocker = tmp_path / "notadir"
    blocker.write_text("")  # CREDENTIAL_FILE under a plain file: every read fails (NotADirectoryError)
    env = live_env(exchange, CREDENTIAL_STORE="file", CREDENTIAL_FILE=str(blocker / "credentials.json"))
    _, base = await stack(env)  # the router starts: the venue is down, not started on the environment's keys
    api = http(base)

    async def alerted() -> list[dict] | None:
        _, page = await api.call("GET", "/api/alerts?severity=critical")
        codes = {a["code"] for a in page["alerts"]}
        return page["alerts"] if {"CREDENTIAL_STORE_UNAVAILABLE", "VENUE_DOWN"} <= codes else None

    alerts = await eventually(alerted, what="the critical alerts")
    assert any("notadir" in a["message"] for a in alerts if a["code"] == "CREDENTIAL_STORE_UNAVAILABLE")
    assert exchange.requests_for("GET", "/api/v3/account") == []  # nothing signed with the environment's keys
    status, body = await api.call("GET", "/api/credentials/status")
    assert (status, body["code"]) == (503, "CREDENTIAL_STORE_ERROR") and "CREDENTIAL_FILE" in body["detail"], body
    status, body = await api.call("DELETE", "/api/credentials/binance?environment=live")
    assert (status, body["code"]) == (503, "CREDENTIAL_STORE_ERROR"), body

    blocker.unlink()  # the store can be read again: the venue starts on its next try (the environment's keys:
    blocker.mkdir()  # none stored)
    assert (await submit(client, "back-1")).ok
    await until(client, "back-1", "filled", timeout=30)
    assert exchange.requests_for("POST", "/api/v3/order", newClientOrderId="back-1")[-1].api_key == ENV_KEY
    status, body = await api.call("GET", "/api/credentials/status")
    assert status == 200 and [e["inUse"] for e in body["credentials"]] == [True]


async def test_a_slow_check_holds_up_no_other(stack, http, client, exchange, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("BINANCE_API_URL", exchange.base_url)
    exchange.add_key(K1, S1)
    exchange.add_key(K2, S2)
    _, base = await stack(paper_env())
    api = http(base)
    exchange.inject_fault("slow", "GET", "/api/v3/account", seconds=8)  # the first check's balance: 8 s
    slow = asyncio.create_task(api.call("POST", "/api/credentials", json=store_body(K1, S1, "testnet")))
    await eventually(
        lambda: asyncio.sleep(0, exchange.requests_for("GET", "/api/v3/account")), what="the testnet check at the venue"
    )
    status, body = await api.call("POST", "/api/credentials", json=store_body(K2, S2, "live"))
    assert status == 201 and body["keyLast4"] == "K2K2", body
    assert not slow.done()  # answered while the testnet check still waits for the venue
    status, body = await slow
    assert status == 201 and body["keyLast4"] == "K1K1", body
