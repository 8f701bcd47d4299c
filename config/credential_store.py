"""Where sealed venue keys are kept: JetStream KV (the default), a file, or Vault KV v2.

One interface (``CredentialStore``): ``put`` (store or replace), ``rotate`` (replace an existing record with
check-and-set: two rotations cannot both win), ``get`` (the keys, or None), ``delete`` (gone, old ciphertext
included) and ``status`` (which venues and environments have keys: never a secret).

Why in config/: the gateway stores and rotates keys, the order-router reads them, and the gateway may import only
``schemas``, ``bus`` and ``config`` (ARCHITECTURE.md, Layout); ``bus`` may import only ``schemas``, so it cannot
hold code that seals records. The KV store therefore takes a nats ``KeyValue`` handle from its caller (``await
bus.kv(bus.subjects.kv_credentials)``) instead of importing bus/.

- ``KvCredentialStore``: bucket ``<PREFIX>_CREDENTIALS``, key ``<venue>.<environment>``, history 1; rotate is
  ``update(last=revision)``; delete is ``purge`` (removes the old ciphertext from the stream too). A passphrase's
  salt is the key ``meta.kdf`` (created once with ``create``, so racing hosts agree on it).
- ``FileCredentialStore``: one JSON file (``CREDENTIAL_FILE``, default ``DATA_DIR/credentials.json``), mode 0600,
  written atomically (a temp file in the same directory, fsync, rename); every read-modify-write holds an
  ``flock`` on ``<file>.lock`` so processes sharing the file cannot lose each other's writes.
- ``VaultCredentialStore``: Vault (or OpenBao) KV v2 through hvac, at ``<VAULT_SECRET_PATH>/<venue>/<environment>``;
  rotate uses KV v2's ``cas``. With CREDENTIAL_ENCRYPTION_KEY the record is sealed as in the other stores; without
  it Vault's own encryption and token are the protection, and the keys are kept as Vault secrets. hvac is
  synchronous: every call runs in ``asyncio.to_thread``.

Without CREDENTIAL_ENCRYPTION_KEY, the KV and file stores refuse to store (``NoEncryptionKey``): keys are never
written in plain text; keys from the environment still work.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from config.credentials import (
    ENVIRONMENTS,
    KEY_SETTING,
    VENUE_RE,
    CredentialConflict,
    CredentialError,
    CredentialNotFound,
    CredentialRecord,
    CredentialStatus,
    EncryptionKey,
    KdfParams,
    NoEncryptionKey,
    TamperedRecord,
    VenueKeys,
    check_environment,
    check_source,
    check_venue,
    decode_record,
    encode_record,
    is_passphrase,
    new_kdf_params,
    open_record,
    seal,
    status_of,
)

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from config.settings import Settings

KDF_KEY = "meta.kdf"
FILE_VERSION = 1

NO_KEY_TO_STORE = (
    f"storing keys is refused: {KEY_SETTING} is not set, and keys are never kept in plain text. Set "
    f"{KEY_SETTING} (64 hex characters or the base64 of 32 bytes: a raw key; anything else: a passphrase) or "
    "use Vault (VAULT_ENABLED=true). Keys from the environment (NAME_API_KEY / NAME_API_SECRET) still work"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def record_key(venue: str, environment: str) -> str:
    return f"{check_venue(venue)}.{check_environment(environment)}"


class CredentialStore(abc.ABC):
    """Sealed venue keys, one record per venue and environment."""

    name: str = ""

    def __init__(self, encryption_key: str) -> None:
        self._setting = encryption_key.strip()
        self._key: EncryptionKey | None = None
        self._key_lock = asyncio.Lock()

    @property
    def can_encrypt(self) -> bool:
        return bool(self._setting)

    async def encryption_key(self) -> EncryptionKey:
        """The deployment's key (a passphrase is stretched once, with the salt kept beside the records)."""
        if not self._setting:
            raise NoEncryptionKey(NO_KEY_TO_STORE)
        if self._key is None:
            async with self._key_lock:
                if self._key is None:
                    kdf = await self._kdf_params() if is_passphrase(self._setting) else None
                    self._key = await asyncio.to_thread(EncryptionKey.from_setting, self._setting, kdf)
        return self._key

    async def _open(self, record: CredentialRecord, venue: str, environment: str) -> VenueKeys:
        if not self._setting:
            raise NoEncryptionKey(
                f"the keys of {venue}/{environment} are stored encrypted, but {KEY_SETTING} is not set: set the key "
                "they were stored with"
            )
        return open_record(await self.encryption_key(), record, venue, environment)

    # -- the interface ---------------------------------------------------------------------------------
    async def put(self, venue: str, environment: str, keys: VenueKeys, *, source: str = "api") -> CredentialStatus:
        """Store (or replace) the keys of ``venue`` / ``environment``."""
        rk = record_key(venue, environment)
        check_source(source)
        record = seal(await self.encryption_key(), venue, environment, keys, stored_at=now_ms(), source=source)
        await self._write(rk, record, None)
        logger.info("credentials of {}/{} stored ({} store, {})", venue, environment, self.name, source)
        return status_of(record, self.name)

    async def rotate(self, venue: str, environment: str, keys: VenueKeys, *, source: str = "api") -> CredentialStatus:
        """Replace the stored keys of ``venue`` / ``environment`` (there must be some), keeping when they were
        first stored. Check-and-set: CredentialConflict when another writer changed them meanwhile."""
        rk = record_key(venue, environment)
        check_source(source)
        key = await self.encryption_key()
        found = await self._read(rk)
        if found is None:
            raise CredentialNotFound(f"no keys are stored for {venue}/{environment}: store them first")
        old, revision = found
        record = seal(key, venue, environment, keys, stored_at=old.stored_at, rotated_at=now_ms(), source=source)
        await self._write(rk, record, revision)
        logger.info("credentials of {}/{} rotated ({} store, {})", venue, environment, self.name, source)
        return status_of(record, self.name)

    async def get(self, venue: str, environment: str) -> VenueKeys | None:
        """The keys of ``venue`` / ``environment``, or None. WrongKey / TamperedRecord when they cannot be read."""
        found = await self._read(record_key(venue, environment))
        return None if found is None else await self._open(found[0], venue, environment)

    async def delete(self, venue: str, environment: str) -> bool:
        """Remove the keys (True if there were some)."""
        gone = await self._remove(record_key(venue, environment))
        if gone:
            logger.info("credentials of {}/{} deleted ({} store)", venue, environment, self.name)
        return gone

    async def status(self) -> list[CredentialStatus]:
        """Every venue and environment with stored keys, sorted: never a secret."""
        out = [status_of(r, self.name) for r in await self._records()]
        return sorted(out, key=lambda s: (s.venue, ENVIRONMENTS.index(s.environment)))

    async def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass

    # -- what each store implements ------------------------------------------------------------------
    @abc.abstractmethod
    async def _read(self, rk: str) -> tuple[CredentialRecord, Any] | None:
        """The record at ``rk`` and its revision (for check-and-set), or None."""

    @abc.abstractmethod
    async def _write(self, rk: str, record: CredentialRecord, revision: Any) -> None:
        """Write ``record``; with a revision only if the stored one still has it (else CredentialConflict)."""

    @abc.abstractmethod
    async def _remove(self, rk: str) -> bool: ...

    @abc.abstractmethod
    async def _records(self) -> list[CredentialRecord]: ...

    @abc.abstractmethod
    async def _kdf_params(self) -> KdfParams:
        """The deployment's key derivation parameters, made (once, race-free) when there are none yet."""


def _split(rk: str) -> tuple[str, str] | None:
    venue, _, environment = rk.partition(".")
    return (venue, environment) if VENUE_RE.match(venue) and environment in ENVIRONMENTS else None


def _placed(record: CredentialRecord, rk: str) -> CredentialRecord:
    """The record as found at ``rk``: its venue and environment are those of the place it sits (a record copied
    elsewhere does not open there, and is listed where it is)."""
    venue, environment = rk.split(".", 1)
    if (record.venue, record.environment) == (venue, environment):
        return record
    return msgspec.structs.replace(record, venue=venue, environment=environment)


# ------------------------------------------------------------------------------------------------------
# JetStream KV
# ------------------------------------------------------------------------------------------------------
class KvCredentialStore(CredentialStore):
    name = "kv"

    def __init__(self, kv: KeyValue, encryption_key: str) -> None:
        super().__init__(encryption_key)
        self.kv = kv

    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        import nats.js.errors

        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        venue, environment = rk.split(".", 1)
        return _placed(decode_record(entry.value, venue, environment), rk), int(entry.revision or 0)

    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> None:
        import nats.js.errors

        data = encode_record(record)
        if revision is None:
            await self.kv.put(rk, data)
            return
        try:
            await self.kv.update(rk, data, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            raise CredentialConflict(
                f"the keys of {record.venue}/{record.environment} were changed by someone else meanwhile: "
                "read the status and try again"
            ) from None

    async def _remove(self, rk: str) -> bool:
        existed = await self._read_raw_exists(rk)
        await self.kv.purge(rk)
        return existed

    async def _read_raw_exists(self, rk: str) -> bool:
        import nats.js.errors

        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return False
        return entry.value is not None

    async def _records(self) -> list[CredentialRecord]:
        import nats.js.errors

        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out = []
        for rk in keys:
            if _split(rk) is None:
                continue
            found = await self._read(rk)
            if found is not None:
                out.append(found[0])
        return out

    async def _kdf_params(self) -> KdfParams:
        import nats.js.errors

        fresh = new_kdf_params()
        try:
            await self.kv.create(KDF_KEY, msgspec.json.encode(fresh))
            return fresh
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # made before (by this host or another): use that one
        entry = await self.kv.get(KDF_KEY)
        try:
            return msgspec.json.decode(entry.value or b"", type=KdfParams)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise TamperedRecord(f"the key derivation parameters ({KDF_KEY}) beside the records are damaged") from None


# ------------------------------------------------------------------------------------------------------
# A file
# ------------------------------------------------------------------------------------------------------
class _FileContent(msgspec.Struct, kw_only=True):
    version: int = FILE_VERSION
    kdf: KdfParams | None = None
    records: dict[str, CredentialRecord] = msgspec.field(default_factory=dict)
    revisions: dict[str, int] = msgspec.field(default_factory=dict)


class FileCredentialStore(CredentialStore):
    name = "file"

    def __init__(self, path: str | Path, encryption_key: str) -> None:
        super().__init__(encryption_key)
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _load(self) -> _FileContent:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return _FileContent()
        try:
            content = msgspec.json.decode(data, type=_FileContent)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise TamperedRecord(f"the credential file {str(self.path)!r} is not a credential file") from None
        if content.version != FILE_VERSION:
            raise TamperedRecord(
                f"the credential file {str(self.path)!r} has version {content.version}; expected {FILE_VERSION}"
            )
        return content

    def _save(self, content: _FileContent) -> None:
        """Atomically: a 0600 temp file in the same directory, fsync, rename over the file, fsync the directory."""
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(msgspec.json.encode(content))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read_sync(self, rk: str) -> tuple[CredentialRecord, int] | None:
        with self._locked():
            content = self._load()
        record = content.records.get(rk)
        return None if record is None else (_placed(record, rk), content.revisions.get(rk, 0))

    def _write_sync(self, rk: str, record: CredentialRecord, revision: int | None) -> None:
        with self._locked():
            content = self._load()
            current = content.revisions.get(rk, 0) if rk in content.records else None
            if revision is not None and current != revision:
                raise CredentialConflict(
                    f"the keys of {record.venue}/{record.environment} were changed by someone else meanwhile: "
                    "read the status and try again"
                )
            content.records[rk] = record
            content.revisions[rk] = (current or 0) + 1
            self._save(content)

    def _remove_sync(self, rk: str) -> bool:
        with self._locked():
            content = self._load()
            if rk not in content.records:
                return False
            del content.records[rk]
            content.revisions.pop(rk, None)
            self._save(content)
            return True

    def _records_sync(self) -> list[CredentialRecord]:
        with self._locked():
            content = self._load()
        return [_placed(r, rk) for rk, r in content.records.items() if _split(rk) is not None]

    def _kdf_sync(self) -> KdfParams:
        with self._locked():
            content = self._load()
            if content.kdf is None:
                content.kdf = new_kdf_params()
                self._save(content)
            return content.kdf

    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        return await asyncio.to_thread(self._read_sync, rk)

    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> None:
        await asyncio.to_thread(self._write_sync, rk, record, revision)

    async def _remove(self, rk: str) -> bool:
        return await asyncio.to_thread(self._remove_sync, rk)

    async def _records(self) -> list[CredentialRecord]:
        return await asyncio.to_thread(self._records_sync)

    async def _kdf_params(self) -> KdfParams:
        return await asyncio.to_thread(self._kdf_sync)


# ------------------------------------------------------------------------------------------------------
# Vault (or OpenBao) KV v2
# ------------------------------------------------------------------------------------------------------
def split_secret_path(path: str) -> tuple[str, str]:
    """VAULT_SECRET_PATH -> (mount point, path under it): ``secret/data/trading-bot`` and ``secret/trading-bot``
    are both mount ``secret``, path ``trading-bot`` (hvac adds the ``data/`` of KV v2 itself)."""
    parts = [p for p in path.strip().strip("/").split("/") if p]
    if not parts:
        raise ValueError("a path such as secret/data/trading-bot")
    mount, rest = parts[0], parts[1:]
    if rest and rest[0] == "data":
        rest = rest[1:]
    return mount, "/".join(rest)


_PLAIN_FIELDS = ("apiKey", "apiSecret", "password")


class VaultCredentialStore(CredentialStore):
    name = "vault"

    def __init__(
        self, endpoint: str, token: str, secret_path: str, encryption_key: str, *, timeout: float = 10
    ) -> None:
        super().__init__(encryption_key)
        import hvac

        self.endpoint = endpoint
        self.mount, self.base = split_secret_path(secret_path)
        self._client = hvac.Client(url=endpoint, token=token, timeout=timeout)

    def _path(self, rk: str) -> str:
        venue, environment = rk.split(".", 1)
        return "/".join(p for p in (self.base, venue, environment) if p)

    def _kdf_path(self) -> str:
        return "/".join(p for p in (self.base, "kdf-params") if p)

    async def _call(self, what: str, fn: Any, /, **kwargs: Any) -> Any:
        """One hvac call in a thread, its failures turned into CredentialErrors that name no token (hvac's
        InvalidPath and InvalidRequest are left to the caller: not found, and check-and-set refused)."""
        import hvac.exceptions
        import requests

        from config.settings import hide_credentials

        try:
            return await asyncio.to_thread(fn, **kwargs)
        except (hvac.exceptions.InvalidPath, hvac.exceptions.InvalidRequest):
            raise
        except hvac.exceptions.Forbidden:
            raise CredentialError(
                f"Vault at {hide_credentials(self.endpoint)} refused to {what}: permission denied (check VAULT_TOKEN "
                "and its policy)"
            ) from None
        except hvac.exceptions.Unauthorized:
            raise CredentialError(
                f"Vault at {hide_credentials(self.endpoint)} refused to {what}: the token is not valid (VAULT_TOKEN)"
            ) from None
        except hvac.exceptions.VaultDown:
            raise CredentialError(
                f"Vault at {hide_credentials(self.endpoint)} is sealed or down: cannot {what}"
            ) from None
        except requests.exceptions.RequestException as e:
            raise CredentialError(
                f"cannot reach Vault at {hide_credentials(self.endpoint)} to {what} ({type(e).__name__})"
            ) from None
        except hvac.exceptions.VaultError as e:
            raise CredentialError(
                f"Vault at {hide_credentials(self.endpoint)} failed to {what} ({type(e).__name__})"
            ) from None

    async def _read_data(self, path: str) -> tuple[dict[str, Any], int] | None:
        import hvac.exceptions

        kv2 = self._client.secrets.kv.v2
        try:
            r = await self._call(
                "read a credential",
                kv2.read_secret_version,
                path=path,
                mount_point=self.mount,
                raise_on_deleted_version=True,
            )
        except hvac.exceptions.InvalidPath:
            return None
        return r["data"]["data"] or {}, int(r["data"]["metadata"]["version"])

    def _record_of(self, data: dict[str, Any], rk: str) -> CredentialRecord:
        try:
            return _placed(msgspec.convert(data, CredentialRecord), rk)
        except msgspec.ValidationError:
            venue, environment = rk.split(".", 1)
            raise TamperedRecord(f"the Vault secret of {venue}/{environment} is not a credential record") from None

    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        found = await self._read_data(self._path(rk))
        if found is None:
            return None
        data, version = found
        if "ciphertext" not in data:  # kept by Vault alone: a record without a ciphertext stands for it
            return self._plain_record(data, rk), version
        return self._record_of(data, rk), version

    @staticmethod
    def _plain_record(data: dict[str, Any], rk: str) -> CredentialRecord:
        venue, environment = rk.split(".", 1)
        return CredentialRecord(
            version=1,
            venue=venue,
            environment=environment,
            algorithm="vault",
            nonce="",
            ciphertext="",
            key_id="",
            stored_at=int(data.get("storedAt") or 0),
            rotated_at=data.get("rotatedAt"),
            key_last4=str(data.get("keyLast4") or ""),
            source=str(data.get("source") or "api"),
        )

    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> None:
        await self._write_data(rk, msgspec.to_builtins(record), revision)

    async def _write_data(self, rk: str, data: dict[str, Any], revision: int | None) -> None:
        import hvac.exceptions

        kv2 = self._client.secrets.kv.v2
        venue, environment = rk.split(".", 1)
        try:
            await self._call(
                "store a credential",
                kv2.create_or_update_secret,
                path=self._path(rk),
                secret=data,
                mount_point=self.mount,
                **({} if revision is None else {"cas": revision}),
            )
        except hvac.exceptions.InvalidPath:
            raise CredentialError(f"Vault has no KV v2 engine at {self.mount!r} (VAULT_SECRET_PATH)") from None
        except hvac.exceptions.InvalidRequest:
            if revision is not None:  # KV v2: "check-and-set parameter did not match the current version"
                raise CredentialConflict(
                    f"the keys of {venue}/{environment} were changed by someone else meanwhile: read the status "
                    "and try again"
                ) from None
            raise CredentialError(f"Vault refused to store the keys of {venue}/{environment}") from None

    # Vault without CREDENTIAL_ENCRYPTION_KEY: Vault's own encryption keeps the keys.
    async def put(self, venue: str, environment: str, keys: VenueKeys, *, source: str = "api") -> CredentialStatus:
        if self.can_encrypt:
            return await super().put(venue, environment, keys, source=source)
        rk = record_key(venue, environment)
        check_source(source)
        status = self._plain_status(venue, environment, keys, source, now_ms(), None)
        await self._write_data(rk, self._plain_data(keys, status), None)
        logger.info("credentials of {}/{} stored (vault store, {})", venue, environment, source)
        return status

    async def rotate(self, venue: str, environment: str, keys: VenueKeys, *, source: str = "api") -> CredentialStatus:
        if self.can_encrypt:
            return await super().rotate(venue, environment, keys, source=source)
        rk = record_key(venue, environment)
        check_source(source)
        found = await self._read(rk)
        if found is None:
            raise CredentialNotFound(f"no keys are stored for {venue}/{environment}: store them first")
        old, version = found
        status = self._plain_status(venue, environment, keys, source, old.stored_at, now_ms())
        await self._write_data(rk, self._plain_data(keys, status), version)
        logger.info("credentials of {}/{} rotated (vault store, {})", venue, environment, source)
        return status

    async def get(self, venue: str, environment: str) -> VenueKeys | None:
        found = await self._read_data(self._path(record_key(venue, environment)))
        if found is None:
            return None
        data = found[0]
        if "ciphertext" in data:
            return await self._open(self._record_of(data, record_key(venue, environment)), venue, environment)
        try:
            return VenueKeys(str(data["apiKey"]), str(data["apiSecret"]), str(data.get("password") or ""))
        except (KeyError, CredentialError):
            raise TamperedRecord(f"the Vault secret of {venue}/{environment} holds no keys") from None

    @staticmethod
    def _plain_status(
        venue: str, environment: str, keys: VenueKeys, source: str, stored_at: int, rotated_at: int | None
    ) -> CredentialStatus:
        return CredentialStatus(
            venue=venue,
            environment=environment,
            store="vault",
            source=source,
            stored_at=stored_at,
            rotated_at=rotated_at,
            key_last4=keys.last4,
            encrypted=False,
        )

    @staticmethod
    def _plain_data(keys: VenueKeys, status: CredentialStatus) -> dict[str, Any]:
        return {
            "apiKey": keys.api_key,
            "apiSecret": keys.api_secret,
            "password": keys.password,
            "storedAt": status.stored_at,
            "rotatedAt": status.rotated_at,
            "keyLast4": status.key_last4,
            "source": status.source,
        }

    async def status(self) -> list[CredentialStatus]:
        out = []
        for rk in await self._keys():
            found = await self._read_data(self._path(rk))
            if found is None:
                continue
            data = found[0]
            venue, environment = rk.split(".", 1)
            if "ciphertext" in data:
                out.append(status_of(self._record_of(data, rk), self.name))
            else:
                r = self._plain_record(data, rk)
                out.append(
                    CredentialStatus(
                        venue=venue,
                        environment=environment,
                        store=self.name,
                        source=r.source,
                        stored_at=r.stored_at,
                        rotated_at=r.rotated_at,
                        key_last4=r.key_last4,
                        encrypted=False,
                    )
                )
        return sorted(out, key=lambda s: (s.venue, ENVIRONMENTS.index(s.environment)))

    async def _list(self, path: str) -> list[str]:
        import hvac.exceptions

        try:
            r = await self._call(
                "list credentials", self._client.secrets.kv.v2.list_secrets, path=path, mount_point=self.mount
            )
        except hvac.exceptions.InvalidPath:
            return []
        return list(r["data"]["keys"])

    async def _keys(self) -> list[str]:
        out = []
        for venue_dir in await self._list(self.base):
            venue = venue_dir.rstrip("/")
            if not venue_dir.endswith("/") or not VENUE_RE.match(venue):
                continue
            for environment in await self._list("/".join(p for p in (self.base, venue) if p)):
                if environment in ENVIRONMENTS:
                    out.append(f"{venue}.{environment}")
        return out

    async def _remove(self, rk: str) -> bool:
        if await self._read_data(self._path(rk)) is None:
            return False
        await self._call(
            "delete a credential",
            self._client.secrets.kv.v2.delete_metadata_and_all_versions,
            path=self._path(rk),
            mount_point=self.mount,
        )
        return True

    async def _records(self) -> list[CredentialRecord]:  # status() is overridden: plain secrets too
        raise NotImplementedError

    async def _kdf_params(self) -> KdfParams:
        import hvac.exceptions

        kv2 = self._client.secrets.kv.v2
        fresh = new_kdf_params()
        try:
            # cas=0: written only if there is none yet, so two hosts cannot make two salts
            await self._call(
                "store the key derivation parameters",
                kv2.create_or_update_secret,
                path=self._kdf_path(),
                secret=msgspec.to_builtins(fresh),
                mount_point=self.mount,
                cas=0,
            )
            return fresh
        except hvac.exceptions.InvalidRequest:
            pass  # there is one already (cas=0 refused): use it
        found = await self._read_data(self._kdf_path())
        if found is None:
            raise CredentialError("cannot store the key derivation parameters in Vault")
        try:
            return msgspec.convert(found[0], KdfParams)
        except msgspec.ValidationError:
            raise TamperedRecord("the key derivation parameters beside the records in Vault are damaged") from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.adapter.close()


# ------------------------------------------------------------------------------------------------------
def credential_file(settings: Settings) -> Path:
    return Path(settings.CREDENTIAL_FILE) if settings.CREDENTIAL_FILE else Path(settings.DATA_DIR) / "credentials.json"


def credential_store(settings: Settings, kv: KeyValue | None = None) -> CredentialStore:
    """The store the settings name: Vault when VAULT_ENABLED, else CREDENTIAL_STORE (kv needs ``kv``: the
    handle of the bucket ``bus.subjects.kv_credentials``)."""
    key = settings.CREDENTIAL_ENCRYPTION_KEY
    if settings.VAULT_ENABLED:
        return VaultCredentialStore(settings.VAULT_ENDPOINT, settings.VAULT_TOKEN, settings.VAULT_SECRET_PATH, key)
    if settings.CREDENTIAL_STORE == "file":
        return FileCredentialStore(credential_file(settings), key)
    if kv is None:
        raise ValueError("the kv credential store needs the KeyValue of the credentials bucket")
    return KvCredentialStore(kv, key)


__all__ = [
    "NO_KEY_TO_STORE",
    "CredentialStore",
    "FileCredentialStore",
    "KvCredentialStore",
    "VaultCredentialStore",
    "credential_file",
    "credential_store",
    "split_secret_path",
]
