"""Venue keys over REST against real parts: the session's nats-server, the order-router trading live on the local
Binance (which checks every signature), the gateway over real HTTP. Store (good keys kept, bad keys refused with
nothing stored), no encryption key, rotation under load with no failed order, delete, the API token, a restart of
the order-router reading its keys from the store, and the secret search over every log line, every stored message
of the test's prefix and every REST answer."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import nats.js.errors
import pytest
from loguru import logger

from bus.client import Bus
from schemas.messages import OrderReply, OrderRequest
from schemas.subjects import ACTORS, Subjects
from tests.exchanges.binance import BinanceTestExchange
from tests.helpers import eventually
from tests.integration.test_actors import System
from tests.integration.test_gateway import start_gateway
from tests.integration.test_live_binance import until
from tests.integration.test_order_types import settings_for

ENC = base64.b64encode(os.urandom(32)).decode()  # CREDENTIAL_ENCRYPTION_KEY
TOKEN = "creds-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV_KEY, ENV_SECRET = "envkey-0123456789-ENVK", "envsecret-abcdef-0123456789"
K1, S1 = "storedkey-A1b2C3d4E5f6-K1K1", "storedsecret-Zz9Yy8Xx7Ww6-S1S1"
K2, S2, P2 = "rotatedkey-Q1w2E3r4T5y6-K2K2", "rotatedsecret-Mm1Nn2Bb3Vv4-S2S2", "rotated-pass-Pp9Oo8"
BAD_KEY, BAD_SECRET = "badkey-0000111122223333-BADK", "badsecret-never-accepted-0000"
D = Decimal


@pytest.fixture
async def exchange() -> AsyncIterator[BinanceTestExchange]:
    ex = BinanceTestExchange(
        api_key=ENV_KEY, secret=ENV_SECRET, symbols=("BTC/USDT", "ETH/USDT"), balances={"USDT": "1000000", "BTC": "1"}
    )
    await ex.start()
    ex.set_book("BTC/USDT", bids=[("59990", "100")], asks=[("60000", "100")])
    ex.set_book("ETH/USDT", bids=[("2999", "100")], asks=[("3001", "100")])
    yield ex
    await ex.stop()


def live_env(exchange: BinanceTestExchange, **extra: str) -> dict[str, str]:
    return {
        "PAPER_TRADING": "false",
        "LIVE_TRADING": "true",
        "EXCHANGE": "binance",
        "EXCHANGE_API_KEY": ENV_KEY,
        "EXCHANGE_API_SECRET": ENV_SECRET,
        "EXCHANGE_API_URL": exchange.base_url,
        "API_TOKEN": TOKEN,
        "MARKET_DATA": "venue",
        "MARKET_DATA_INTERVAL": "50",
        "EXCHANGE_POLL_MS": "100",
        "RECONCILE_INTERVAL_MS": "300",
        "VENUE_UNKNOWN_GRACE_MS": "1000",
        "INITIAL_BALANCE": "1000000",
        "MAX_ORDERS_PER_SECOND": "1000",
        "CREDENTIAL_ENCRYPTION_KEY": ENC,
    } | extra


def paper_env(**extra: str) -> dict[str, str]:
    return {"API_TOKEN": TOKEN, "CREDENTIAL_ENCRYPTION_KEY": ENC} | extra


@pytest.fixture
async def stack(nats_url, prefix) -> AsyncIterator[Callable[..., Awaitable[tuple[System, str]]]]:
    """``await stack(env)``: every actor and a gateway on ``env``; all stopped at the end."""
    running: list[Any] = []

    async def make(env: dict[str, str]) -> tuple[System, str]:
        sut = System(nats_url, settings_for(nats_url, prefix, **env))
        running.append(sut)
        await sut.start()
        gw, base = await start_gateway(nats_url, prefix, **env)
        running.append(gw)
        return sut, base

    yield make
    for part in reversed(running):
        await part.stop()


class Http:
    """The REST calls of a test, every answer kept (the secret search reads them all)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base
        self.answers: list[bytes] = []

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, **kw) as r:
            raw = await r.read()
            self.answers.append(raw + str(dict(r.headers)).encode())
            return r.status, (await r.json(content_type=None)) if raw else None


@pytest.fixture
async def http() -> AsyncIterator[Callable[[str], Http]]:
    sessions: list[aiohttp.ClientSession] = []

    def make(base: str, headers: dict[str, str] | None = AUTH) -> Http:
        s = aiohttp.ClientSession(headers=headers)
        sessions.append(s)
        return Http(s, base)

    yield make  # type: ignore[misc]
    for s in sessions:
        await s.close()


async def submit(client: Bus, coid: str, qty: str = "0.001") -> OrderReply:
    req = OrderRequest(client_order_id=coid, pair="BTC_USDT", side="buy", quantity=D(qty))  # type: ignore[arg-type]
    reply = await client.request(client.subjects.orders_submit, req, OrderReply, timeout=15)
    assert isinstance(reply, OrderReply)
    return reply


def store_body(key: str, secret: str, environment: str = "live", **extra: str) -> dict[str, str]:
    return {"exchange": "binance", "apiKey": key, "apiSecret": secret, "environment": environment} | extra


async def candidates_and_records(client: Bus) -> list[str]:
    kv = await client.kv(client.subjects.kv_credentials)
    try:
        return sorted(k for k in await kv.keys() if not k.startswith("meta."))
    except nats.js.errors.NoKeysError:
        return []


# ------------------------------------------------------------------------------------------------------
# Paper mode: keys prepared before going live, checked at the venue's URL override
# ------------------------------------------------------------------------------------------------------
async def test_in_paper_mode_good_keys_are_stored_bad_keys_refused_and_deleted_with_the_token(
    stack, http, client, exchange, monkeypatch
) -> None:
    monkeypatch.setenv("BINANCE_API_URL", exchange.base_url)  # the venue not traded on: its own URL override
    exchange.add_key(K1, S1)
    _, base = await stack(paper_env())
    api = http(base)

    status, body = await api.call("POST", "/api/credentials", json=store_body(BAD_KEY, BAD_SECRET, "testnet"))
    assert status == 422, body
    assert (body["code"], body["field"]) == ("CREDENTIALS_REJECTED", "apiKey")
    assert await candidates_and_records(client) == []  # nothing stored, not even the candidate
    status, body = await api.call("GET", "/api/credentials/status")
    assert status == 200 and body["credentials"] == [] and body["encryptionKeySet"] is True and body["store"] == "kv"

    status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1, "testnet"))
    assert status == 201, body
    assert (body["exchange"], body["environment"], body["store"], body["source"]) == ("binance", "testnet", "kv", "api")
    assert body["keyLast4"] == "K1K1" and body["encrypted"] is True and body["rotatedAt"] is None
    assert body["storedAt"] > 0 and body["inUse"] is False and body["swapped"] is False
    assert body["check"]["keysAccepted"] is True
    assert await candidates_and_records(client) == ["binance.testnet"]
    assert exchange.requests_for("GET", "/api/v3/account")[-1].api_key == K1  # checked at the override, with them

    status, body = await api.call("GET", "/api/credentials/status")
    [entry] = body["credentials"]
    assert entry["keyLast4"] == "K1K1" and entry["store"] == "kv" and entry["inUse"] is False

    status, body = await http(base, headers={}).call("GET", "/api/credentials/status")
    assert status == 401
    status, _ = await http(base, headers={}).call("DELETE", "/api/credentials/binance?environment=testnet")
    assert status == 401

    status, body = await api.call("POST", "/api/credentials/binance/rotate", json={"apiKey": K1, "apiSecret": S1})
    assert status == 404 and body["code"] == "NOT_FOUND"  # (paper: the default environment is live: none there)
    status, body = await api.call("DELETE", "/api/credentials/binance?environment=testnet")
    assert status == 200 and body == {"deleted": True, "exchange": "binance", "environment": "testnet"}
    status, body = await api.call("DELETE", "/api/credentials/binance?environment=testnet")
    assert status == 404
    assert await candidates_and_records(client) == []

    for bad, field in (
        ({"exchange": "paper", "apiKey": K1, "apiSecret": S1}, "exchange"),
        ({"exchange": "binance", "apiKey": K1, "apiSecret": S1, "environment": "prod"}, "environment"),
        ({"exchange": "binance", "apiKey": " ", "apiSecret": S1}, "apiKey"),
        ({"exchange": "binance", "apiKey": K1}, "apiSecret"),
    ):
        status, body = await api.call("POST", "/api/credentials", json=bad)
        assert status == 422 and body.get("field") == field, (bad, body)


async def test_without_an_encryption_key_storing_is_refused_and_the_environments_keys_still_trade(
    stack, http, client, exchange
) -> None:
    _, base = await stack(live_env(exchange, CREDENTIAL_ENCRYPTION_KEY=""))
    api = http(base)
    exchange.add_key(K1, S1)
    status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1))
    assert status == 409, body
    assert body["code"] == "CREDENTIAL_ENCRYPTION_KEY_MISSING" and "CREDENTIAL_ENCRYPTION_KEY" in body["detail"]
    assert await candidates_and_records(client) == []
    reply = await submit(client, "nokey-1")
    assert reply.ok, reply
    await until(client, "nokey-1", "filled")
    status, body = await api.call("GET", "/api/credentials/status")
    [entry] = body["credentials"]
    assert (entry["store"], entry["source"], entry["inUse"], entry["keyLast4"]) == ("env", "env", True, "ENVK")
    assert body["encryptionKeySet"] is False


# ------------------------------------------------------------------------------------------------------
# Live: store, rotate under load, restart, delete - and the secret search over all of it
# ------------------------------------------------------------------------------------------------------
def forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(), raw.hex().upper().encode()]


def secrets_to_find() -> list[str]:
    keys = [k[:-4] for k in (ENV_KEY, K1, K2, BAD_KEY)]  # an api key but its last 4 (keyLast4 may show those)
    return [*keys, ENV_SECRET, S1, S2, P2, BAD_SECRET, ENC, base64.b64decode(ENC).hex()]


def leaks(data: bytes) -> list[str]:
    return [s[:6] + "..." for s in secrets_to_find() for f in forms(s) if f in data]


async def every_stored_message(client: Bus, prefix: str) -> list[bytes]:
    """Every message of every stream of the test's prefix, KV buckets included (their streams KV_<BUCKET>)."""
    # by name, not by listing the server's streams: a listing is one page (256) of every test's streams, and this
    # prefix's may not be on it once enough tests ran before this one (it failed so in a full run)
    subjects = Subjects(prefix)
    buckets = [b for a in dir(Subjects) if a.startswith("kv_") and isinstance(b := getattr(subjects, a), str)]
    buckets += [subjects.kv_lease(actor) for actor in ACTORS]  # (a lease bucket per role)
    names = [spec.name for spec in subjects.streams()] + [f"KV_{b}" for b in buckets]
    out: list[bytes] = []
    for name in names:
        try:
            state = (await client.js.stream_info(name)).state
        except nats.js.errors.NotFoundError:
            continue
        if not state.messages:
            continue
        for seq in range(max(1, state.first_seq), state.last_seq + 1):
            try:
                msg = await client.js.get_msg(name, seq)
            except nats.js.errors.NotFoundError:
                continue
            out.append((msg.data or b"") + str(msg.headers or {}).encode() + (msg.subject or "").encode())
    assert out, "no stored message found: the search would prove nothing"
    return out


async def test_store_rotate_under_load_restart_delete_and_no_secret_anywhere(
    stack, http, client, exchange, prefix
) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level=0, serialize=True)  # every level, every field
    try:
        sut, base = await stack(live_env(exchange))
        api = http(base)
        assert (await submit(client, "env-1")).ok
        await until(client, "env-1", "filled")

        # store: the venue trades on its environment's keys (live) from now on, swapped in at once
        exchange.add_key(K1, S1)
        status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1))
        assert status == 201 and body["swapped"] is True and body["inUse"] is True, body
        exchange.revoke_key(ENV_KEY)  # from now on only K1 (then K2) work
        assert (await submit(client, "k1-1")).ok
        await until(client, "k1-1", "filled")

        # a venue call failed on purpose: bad keys refused (nothing stored), the balance read failing (502)
        status, body = await api.call("POST", "/api/credentials", json=store_body(BAD_KEY, BAD_SECRET, "testnet"))
        assert status == 422 and body["code"] == "CREDENTIALS_REJECTED"
        exchange.inject_fault("http_503", "GET", "/api/v3/account", times=20)
        status, body = await api.call("POST", "/api/credentials/binance/rotate", json={"apiKey": K2, "apiSecret": S2})
        assert status in (502, 503) and body["code"] == "VENUE_UNREACHABLE", body
        exchange.clear_faults()

        # rotation under load: orders keep flowing while the keys change; not one fails
        exchange.add_key(K2, S2)
        stop = asyncio.Event()
        sent: list[str] = []

        async def load(lane: int) -> None:
            n = 0
            while not stop.is_set():
                coid = f"rot-{lane}-{n}"
                reply = await submit(client, coid)
                assert reply.ok, (coid, reply)
                sent.append(coid)
                n += 1

        loaders = [asyncio.create_task(load(i)) for i in range(2)]
        await eventually(lambda: asyncio.sleep(0, len(sent) >= 6), what="orders flowing before the rotation")
        status, body = await api.call(
            "POST", "/api/credentials/binance/rotate", json={"apiKey": K2, "apiSecret": S2, "password": P2}
        )
        assert status == 200 and body["swapped"] is True and body["keyLast4"] == "K2K2", body
        assert body["rotatedAt"] >= body["storedAt"]
        at_rotation = len(sent)
        await eventually(lambda: asyncio.sleep(0, len(sent) >= at_rotation + 6), what="orders after the rotation")
        stop.set()
        await asyncio.gather(*loaders)
        for coid in sent:
            await until(client, coid, "filled", timeout=20)
        exchange.revoke_key(K1)  # the old key refused from now on: the new one is in use
        assert (await submit(client, "k2-1")).ok
        await until(client, "k2-1", "filled")
        assert exchange.requests_for("POST", "/api/v3/order", newClientOrderId="k2-1")[-1].api_key == K2

        status, body = await api.call("DELETE", "/api/credentials/binance?environment=live")
        assert status == 409 and body["code"] == "CREDENTIALS_IN_USE", body

        # a restart of the order-router reads its keys from the store (the environment's are revoked)
        await sut.stop("order-router")
        await sut.start("order-router")
        assert (await submit(client, "restart-1")).ok
        await until(client, "restart-1", "filled")
        status, body = await api.call("GET", "/api/credentials/status")
        by_store = {e["store"]: e for e in body["credentials"]}
        assert by_store["kv"]["inUse"] is True and by_store["kv"]["keyLast4"] == "K2K2"
        assert by_store["env"]["inUse"] is False and by_store["kv"]["rotatedAt"] is not None
    finally:
        logger.remove(sink)

    # THE SECRET SEARCH: every log line, every stored message of this prefix, every REST answer
    assert lines, "no log line captured"
    found = {f"log: {line[:200]}": leaks(line.encode()) for line in lines}
    found |= {f"stored: {m[:120]!r}": leaks(m) for m in await every_stored_message(client, prefix)}
    found |= {f"answer: {a[:120]!r}": leaks(a) for a in api.answers}
    assert {k: v for k, v in found.items() if v} == {}
    # (and the search can find: the sealed record is there, but a secret would show)
    assert leaks(f"x{S2}y".encode()) and leaks(base64.b64encode(S1.encode()))


async def test_an_order_backing_off_during_a_rotation_is_sent_again_with_the_new_keys(
    stack, http, client, exchange
) -> None:
    """A send refused by a rate limit is sent again after its back-off: when the keys were rotated meanwhile (and
    the old one revoked), the retry goes out on the new client, not on the old one."""
    _, base = await stack(live_env(exchange))
    api = http(base)
    exchange.add_key(K1, S1)
    status, body = await api.call("POST", "/api/credentials", json=store_body(K1, S1))
    assert status == 201 and body["swapped"] is True
    exchange.revoke_key(ENV_KEY)
    exchange.add_key(K2, S2)
    # refused (429) until the rotation answered: the order backs off and is sent again meanwhile
    exchange.inject_fault("http_429", "POST", "/api/v3/order", retry_after=3, times=1000)
    sending = asyncio.create_task(submit(client, "backoff-1"))
    await eventually(
        lambda: asyncio.sleep(0, exchange.requests_for("POST", "/api/v3/order", newClientOrderId="backoff-1")),
        what="the first send refused",
    )
    status, body = await api.call("POST", "/api/credentials/binance/rotate", json={"apiKey": K2, "apiSecret": S2})
    assert status == 200 and body["swapped"] is True
    exchange.clear_faults()
    exchange.revoke_key(K1)
    refused = len(exchange.requests_for("POST", "/api/v3/order", newClientOrderId="backoff-1"))
    reply = await sending
    assert reply.ok, reply
    await until(client, "backoff-1", "filled")
    sends = exchange.requests_for("POST", "/api/v3/order", newClientOrderId="backoff-1")
    assert sends[0].api_key == K1 and len(sends) == refused + 1
    assert sends[-1].api_key == K2 and sends[-1].status == 200  # sent again after the rotation: on the new keys
