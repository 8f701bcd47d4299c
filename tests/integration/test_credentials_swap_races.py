"""The order-router's keys against the races a second review found: a DELETE while promoted keys wait for their
swap, and a venue's start (retried after it was down) reading the store while a rotation is promoted and swapped.
Real parts: the file store, a real CcxtVenue (nothing is sent: the venue is not started)."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from actors.order_router import keys as keys_module
from actors.order_router.keys import RouterKeys
from actors.venues.ccxt_venue import CcxtVenue
from credentials.file_store import FileCredentialStore
from credentials.sealing import VenueKeys
from schemas.messages import KeysInUse

KA = VenueKeys("keyA-0123456789-AAAA", "secretA-0123456789")
KB = VenueKeys("keyB-0123456789-BBBB", "secretB-0123456789")


def router_keys(tmp: Path) -> tuple[RouterKeys, Any, CcxtVenue]:
    venue = CcxtVenue(
        "binance", pairs=("BTC_USDT",), api_key="envkey-0123456789-ENVK", secret="envsecret-0123",
        api_url="http://127.0.0.1:1", stream="off",
    )  # fmt: skip

    async def alert(*_: Any) -> None:
        return None

    session = types.SimpleNamespace(name="binance", venue=venue, started=False, alert=alert)
    rk = RouterKeys(None, None, {"binance": session}, logger)  # type: ignore[arg-type]
    rk.store = FileCredentialStore(tmp / "c.json", "a passphrase for the test")
    return rk, session, venue


async def promote(rk: RouterKeys, keys: VenueKeys, rotation: bool) -> Any:
    assert rk.store is not None
    _, cid, rev = await rk.store.put_candidate("binance", "live", keys, rotation=rotation)
    return await rk.store.promote("binance", "live", cid, rev)


async def test_delete_is_refused_while_promoted_keys_wait_for_their_swap(tmp_path: Path) -> None:
    rk, session, venue = router_keys(tmp_path)
    session.started = True
    rk.in_use["binance"] = KeysInUse(venue="binance", environment="live", source="env", key_last4="ENVK")
    stored = await promote(rk, KA, False)

    async def failing(*_: Any, **__: Any) -> None:
        raise RuntimeError("markets not loaded")

    venue.swap_keys = failing  # type: ignore[method-assign]
    assert (await rk._swap(session, KA, stored.record_id, "binance/live"))[0] is False
    refused = await rk.delete("binance", "live")
    assert not refused.deleted and refused.code == "CREDENTIALS_IN_USE", refused
    assert await rk.store.read("binance", "live") is not None  # type: ignore[union-attr]

    async def ok(*_: Any, **__: Any) -> None:
        return None

    venue.swap_keys = ok  # type: ignore[method-assign]
    await rk.retry_swaps()
    assert rk.in_use["binance"].record_id == stored.record_id and not rk.pending


async def test_a_start_reading_the_store_during_a_rotation_ends_on_the_new_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rk, session, venue = router_keys(tmp_path)
    await promote(rk, KA, False)
    monkeypatch.setattr(keys_module, "environment_of", lambda cfg: "live")
    cfg = types.SimpleNamespace(name="binance", sandbox=False, api_key="envkey", api_secret="x")
    rk.in_use["binance"] = KeysInUse(venue="binance", environment="live", source="none")
    assert rk.store is not None
    real_read, gate, read_done = rk.store.read, asyncio.Event(), asyncio.Event()

    async def slow_read(*a: Any) -> Any:
        r = await real_read(*a)
        read_done.set()
        await gate.wait()
        return r

    rk.store.read = slow_read  # type: ignore[method-assign]
    start = asyncio.create_task(rk._prepare(session, cfg))  # type: ignore[arg-type]  # a start retried: prepare
    await read_done.wait()

    async def rotation() -> tuple[bool, str | None]:  # the check's path: under the venue's lock
        b = await promote(rk, KB, True)
        async with rk.lock("binance", "live"):
            return await rk._swap(session, KB, b.record_id, "binance/live")

    rotated = asyncio.create_task(rotation())
    await asyncio.sleep(0.05)
    gate.set()
    await start
    swapped, _detail = await rotated
    assert swapped is False  # not started yet: never a client swapped under a start
    session.started = True  # the start done: the next reconcile's retry swaps the new keys in

    async def no_markets(api_key: str, secret: str, password: str = "") -> None:
        await venue.set_keys(api_key, secret, password)

    venue.swap_keys = no_markets  # type: ignore[method-assign]
    await rk.retry_swaps()
    assert (await real_read("binance", "live")).keys.last4 == "BBBB"
    assert venue.ex.apiKey.endswith("BBBB") and rk.in_use["binance"].key_last4 == "BBBB" and not rk.pending
    await venue.ex.close()
