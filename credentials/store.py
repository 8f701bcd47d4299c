"""The credential store's interface: sealed venue keys, one record per venue and environment.

``CredentialStore``: ``put`` (store or replace), ``rotate`` (replace an existing record with check-and-set: two
rotations cannot both win), ``get`` (the keys, or None), ``delete`` (gone, old ciphertext included) and
``status`` (which venues and environments have keys: never a secret). A *candidate* is a record kept under a
second name (``<venue>.<environment>.candidate``) until the order-router has checked it against the venue: the
gateway writes it, the router checks it and promotes it (``promote``) or it is dropped.

The backends: credentials/kv_store.py (JetStream KV, the default), credentials/file_store.py (a file),
credentials/vault_store.py (Vault / OpenBao KV v2). ``credential_store(settings, kv)`` picks one.

Without CREDENTIAL_ENCRYPTION_KEY, the KV and file stores refuse to store (``NoEncryptionKey``): keys are never
written in plain text; keys from the environment still work.
"""

from __future__ import annotations

import abc
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from credentials.sealing import (
    ENVIRONMENTS,
    KEY_SETTING,
    VENUE_RE,
    CredentialNotFound,
    CredentialRecord,
    CredentialStatus,
    EncryptionKey,
    KdfParams,
    NoEncryptionKey,
    VenueKeys,
    check_environment,
    check_source,
    check_venue,
    is_passphrase,
    open_record,
    seal,
    status_of,
)

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from config.settings import Settings

KDF_KEY = "meta.kdf"

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


def split_key(rk: str) -> tuple[str, str] | None:
    venue, _, environment = rk.partition(".")
    return (venue, environment) if VENUE_RE.match(venue) and environment in ENVIRONMENTS else None


def placed(record: CredentialRecord, rk: str) -> CredentialRecord:
    """The record as found at ``rk``: its venue and environment are those of the place it sits (a record copied
    elsewhere does not open there, and is listed where it is)."""
    venue, environment = rk.split(".", 1)
    if (record.venue, record.environment) == (venue, environment):
        return record
    return msgspec.structs.replace(record, venue=venue, environment=environment)


# ------------------------------------------------------------------------------------------------------
def credential_file(settings: Settings) -> Path:
    return Path(settings.CREDENTIAL_FILE) if settings.CREDENTIAL_FILE else Path(settings.DATA_DIR) / "credentials.json"


def credential_store(settings: Settings, kv: KeyValue | None = None) -> CredentialStore:
    """The store the settings name: Vault when VAULT_ENABLED, else CREDENTIAL_STORE (kv needs ``kv``: the
    handle of the bucket ``bus.subjects.kv_credentials``)."""
    key = settings.CREDENTIAL_ENCRYPTION_KEY
    from credentials.file_store import FileCredentialStore
    from credentials.kv_store import KvCredentialStore
    from credentials.vault_store import VaultCredentialStore

    if settings.VAULT_ENABLED:
        return VaultCredentialStore(settings.VAULT_ENDPOINT, settings.VAULT_TOKEN, settings.VAULT_SECRET_PATH, key)
    if settings.CREDENTIAL_STORE == "file":
        return FileCredentialStore(credential_file(settings), key)
    if kv is None:
        raise ValueError("the kv credential store needs the KeyValue of the credentials bucket")
    return KvCredentialStore(kv, key)
