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
    CredentialConflict,
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


CANDIDATE = ".candidate"


def candidate_key(rk: str) -> str:
    """Where the candidate of a record key is kept (keys not checked against the venue yet)."""
    return rk + CANDIDATE


class CredentialStore(abc.ABC):
    """Sealed venue keys, one record per venue and environment."""

    name: str = ""
    plain_ok = False  # may keep keys without CREDENTIAL_ENCRYPTION_KEY (Vault: its own encryption)

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
        status, _ = await self._write_keys(rk, venue, environment, keys, now_ms(), None, source, None)
        logger.info("credentials of {}/{} stored ({} store, {})", venue, environment, self.name, source)
        return status

    async def rotate(self, venue: str, environment: str, keys: VenueKeys, *, source: str = "api") -> CredentialStatus:
        """Replace the stored keys of ``venue`` / ``environment`` (there must be some), keeping when they were
        first stored. Check-and-set: CredentialConflict when another writer changed them meanwhile."""
        rk = record_key(venue, environment)
        check_source(source)
        if not self.plain_ok:
            await self.encryption_key()  # refused before anything is read
        found = await self._read(rk)
        if found is None:
            raise CredentialNotFound(f"no keys are stored for {venue}/{environment}: store them first")
        old, revision = found
        status, _ = await self._write_keys(rk, venue, environment, keys, old.stored_at, now_ms(), source, revision)
        logger.info("credentials of {}/{} rotated ({} store, {})", venue, environment, self.name, source)
        return status

    async def get(self, venue: str, environment: str) -> VenueKeys | None:
        """The keys of ``venue`` / ``environment``, or None. WrongKey / TamperedRecord when they cannot be read."""
        found = await self._get_at(record_key(venue, environment), venue, environment)
        return None if found is None else found[0]

    async def exists(self, venue: str, environment: str) -> bool:
        """Are keys stored for ``venue`` / ``environment`` (without opening them)?"""
        return await self._read(record_key(venue, environment)) is not None

    # -- candidates: keys not checked against the venue yet ------------------------------------------
    async def put_candidate(
        self, venue: str, environment: str, keys: VenueKeys, *, rotation: bool, source: str = "api"
    ) -> tuple[CredentialStatus, int]:
        """Keep ``keys`` as the candidate of ``venue`` / ``environment`` (``<venue>.<environment>.candidate``),
        sealed like a record, with the times it will have once promoted: a rotation keeps when the keys were
        first stored (CredentialNotFound when none are). Returns its status and revision (the check names it)."""
        rk = record_key(venue, environment)
        check_source(source)
        if not self.plain_ok:
            await self.encryption_key()  # NoEncryptionKey before anything is read or written
        stored_at, rotated_at = now_ms(), None
        if rotation:
            found = await self._read(rk)
            if found is None:
                raise CredentialNotFound(f"no keys are stored for {venue}/{environment}: store them first")
            stored_at, rotated_at = found[0].stored_at, now_ms()
        return await self._write_keys(candidate_key(rk), venue, environment, keys, stored_at, rotated_at, source, None)

    async def get_candidate(self, venue: str, environment: str, revision: int) -> tuple[VenueKeys, CredentialRecord]:
        """The candidate's keys and record, if it still has ``revision`` (else CredentialConflict: another one was
        written since; CredentialNotFound: none)."""
        found = await self._get_at(candidate_key(record_key(venue, environment)), venue, environment)
        if found is None:
            raise CredentialNotFound(f"no candidate keys for {venue}/{environment}")
        keys, record, rev = found
        if rev != revision:
            raise CredentialConflict(
                f"the candidate keys of {venue}/{environment} were replaced meanwhile (revision {rev}, not {revision})"
            )
        return keys, record

    async def promote(self, venue: str, environment: str, revision: int) -> CredentialStatus:
        """The candidate (at ``revision``) becomes the record of ``venue`` / ``environment``, the candidate is
        removed. A rotation's candidate replaces the record with check-and-set (it must still be there)."""
        rk = record_key(venue, environment)
        keys, cand = await self.get_candidate(venue, environment, revision)
        current = await self._read(rk)
        if cand.rotated_at is not None and current is None:
            raise CredentialNotFound(f"the keys of {venue}/{environment} were deleted meanwhile: store them again")
        status, _ = await self._write_keys(
            rk, venue, environment, keys, cand.stored_at, cand.rotated_at, cand.source,
            None if current is None else current[1],
        )  # fmt: skip
        await self._remove(candidate_key(rk))
        what = "rotated" if cand.rotated_at is not None else "stored"
        logger.info("credentials of {}/{} {} ({} store, {})", venue, environment, what, self.name, cand.source)
        return status

    async def drop_candidate(self, venue: str, environment: str) -> None:
        await self._remove(candidate_key(record_key(venue, environment)))

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

    async def _write_keys(
        self,
        rk: str,
        venue: str,
        environment: str,
        keys: VenueKeys,
        stored_at: int,
        rotated_at: int | None,
        source: str,
        revision: Any,
    ) -> tuple[CredentialStatus, int]:
        """Seal ``keys`` and write them at ``rk`` (check-and-set with a revision); the status and new revision."""
        record = seal(
            await self.encryption_key(), venue, environment, keys, stored_at=stored_at, rotated_at=rotated_at,
            source=source,
        )  # fmt: skip
        await self._write(rk, record, revision)
        found = await self._read(rk)
        return status_of(record, self.name), 0 if found is None else int(found[1])

    async def _get_at(self, rk: str, venue: str, environment: str) -> tuple[VenueKeys, CredentialRecord, int] | None:
        """The keys kept at ``rk`` (a record or a candidate of ``venue`` / ``environment``), its record, revision."""
        found = await self._read(rk)
        if found is None:
            return None
        return await self._open(found[0], venue, environment), found[0], int(found[1])

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
    venue, environment = rk.removesuffix(CANDIDATE).split(".", 1)
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
