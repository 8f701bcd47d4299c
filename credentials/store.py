"""The credential store's interface: sealed venue keys, one record per venue and environment.

``CredentialStore``: ``put`` (store or replace), ``rotate`` (replace an existing record with check-and-set: two
rotations cannot both win), ``get`` (the keys, or None), ``delete`` (gone, old ciphertext included) and
``status`` (which venues and environments have keys, each record checked when the key is there: never a
secret). A *candidate* is a record kept under a name of its own, one per request
(``<venue>.<environment>.candidate.<id>``, the id: its creation time and 16 random hex digits), until the
order-router has checked it against the venue: the gateway writes it, the router checks it and promotes it
(``promote``: check-and-set on the record, created when there is none) or it is dropped. Two requests for one
venue at once never see each other's candidate; one left behind by a crash is removed at the router's start
(``drop_stale_candidates``).

Every error of a backend (a file that cannot be read, NATS not answering, Vault refusing) is a
``StoreUnavailable`` (a CredentialError) naming the store: never a raw exception.

The backends: credentials/kv_store.py (JetStream KV, the default), credentials/file_store.py (a file),
credentials/vault_store.py (Vault / OpenBao KV v2). ``credential_store(settings, kv)`` picks one.

Without CREDENTIAL_ENCRYPTION_KEY, the KV and file stores refuse to store (``NoEncryptionKey``): keys are never
written in plain text; keys from the environment still work.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import msgspec
from loguru import logger

from credentials.sealing import (
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
    StoreUnavailable,
    TamperedRecord,
    VenueKeys,
    WrongKey,
    check_environment,
    check_source,
    check_venue,
    is_passphrase,
    open_record,
    record_id_of,
    seal,
    status_of,
)

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from config.settings import Settings

KDF_KEY = "meta.kdf"

NO_KEY_TO_STORE = (
    f"storing keys is refused: {KEY_SETTING} is not set, and keys are never kept in plain text. Set "
    f"{KEY_SETTING} (64 hex characters, or hex:/base64: and 32 bytes: a raw key; anything else: a passphrase) or "
    "use Vault (VAULT_ENABLED=true). Keys from the environment (NAME_API_KEY / NAME_API_SECRET) still work"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def record_key(venue: str, environment: str) -> str:
    return f"{check_venue(venue)}.{check_environment(environment)}"


CANDIDATE = ".candidate."
CANDIDATE_ID_RE = re.compile(r"^[0-9]{1,16}-[0-9a-f]{16}$")
# a candidate older than this is left over from a crash (the gateway waits 40 s for the check, then drops it)
CANDIDATE_MAX_AGE_MS = 300_000

P = ParamSpec("P")
R = TypeVar("R")


def new_candidate_id() -> str:
    """A candidate's own name: its creation time (ms) and 16 random hex digits (JetStream KV key characters)."""
    return f"{now_ms()}-{secrets.token_hex(8)}"


def check_candidate_id(cid: str) -> str:
    if not isinstance(cid, str) or not CANDIDATE_ID_RE.match(cid):
        raise CredentialNotFound("not a candidate id")
    return cid


def candidate_key(rk: str, cid: str) -> str:
    """Where one request's candidate of a record key is kept (keys not checked against the venue yet)."""
    return f"{rk}{CANDIDATE}{check_candidate_id(cid)}"


def candidate_of(key: str) -> tuple[str, str] | None:
    """(record key, candidate id) of a candidate's key, else None."""
    rk, sep, cid = key.partition(CANDIDATE)
    if not sep or split_key(rk) is None or not CANDIDATE_ID_RE.match(cid):
        return None
    return rk, cid


def rk_parts(rk: str) -> tuple[str, str]:
    """(venue, environment) of a record's or a candidate's key."""
    venue, environment = rk.split(".")[:2]
    return venue, environment


@dataclass(frozen=True)
class StoredKeys:
    """Keys read from the store and which record they came from (``recordId``: never a secret)."""

    keys: VenueKeys
    record_id: str


def guarded(what: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """A backend call whose every failure that is not a CredentialError becomes a StoreUnavailable naming the
    store and what it could not do (the exception's type and, for an OSError, its reason: never a secret)."""

    def deco(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await fn(*args, **kwargs)
            except (CredentialError, asyncio.CancelledError):
                raise
            except Exception as e:
                store = args[0]
                why = type(e).__name__
                if isinstance(e, OSError) and e.strerror:
                    why += f": {e.strerror}"
                raise StoreUnavailable(
                    f"the credential store ({getattr(store, 'name', '?')}: {store.where()}) cannot {what} "  # type: ignore[attr-defined]
                    f"({why})"
                ) from None

        return wrapper

    return deco


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
        found = await self.read(venue, environment)
        return None if found is None else found.keys

    async def read(self, venue: str, environment: str) -> StoredKeys | None:
        """The keys of ``venue`` / ``environment`` and the id of their record, or None."""
        found = await self._get_at(record_key(venue, environment), venue, environment)
        return None if found is None else StoredKeys(found[0], record_id_of(found[1]))

    async def exists(self, venue: str, environment: str) -> bool:
        """Are keys stored for ``venue`` / ``environment`` (without opening them)?"""
        return await self._read(record_key(venue, environment)) is not None

    # -- candidates: keys not checked against the venue yet ------------------------------------------
    async def put_candidate(
        self, venue: str, environment: str, keys: VenueKeys, *, rotation: bool, source: str = "api"
    ) -> tuple[CredentialStatus, str, int]:
        """Keep ``keys`` as a new candidate of ``venue`` / ``environment`` (``<venue>.<environment>.candidate.<id>``,
        this request's own), sealed like a record, with the times it will have once promoted: a rotation keeps
        when the keys were first stored (CredentialNotFound when none are). Returns its status, its id and the
        revision its write got (the check names both)."""
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
        cid = new_candidate_id()
        status, revision = await self._write_keys(
            candidate_key(rk, cid), venue, environment, keys, stored_at, rotated_at, source, 0
        )
        return status, cid, revision

    async def get_candidate(
        self, venue: str, environment: str, cid: str, revision: int
    ) -> tuple[VenueKeys, CredentialRecord]:
        """Candidate ``cid``'s keys and record, if it still has ``revision`` (else CredentialConflict: it was
        written again since; CredentialNotFound: none)."""
        found = await self._get_at(candidate_key(record_key(venue, environment), cid), venue, environment)
        if found is None:
            raise CredentialNotFound(f"no candidate keys {cid} for {venue}/{environment}")
        keys, record, rev = found
        if rev != revision:
            raise CredentialConflict(
                f"the candidate keys of {venue}/{environment} were replaced meanwhile (revision {rev}, not {revision})"
            )
        return keys, record

    async def promote(self, venue: str, environment: str, cid: str, revision: int) -> CredentialStatus:
        """Candidate ``cid`` (at ``revision``) becomes the record of ``venue`` / ``environment`` - the same sealed
        record, so its ``recordId`` stays - and is removed. Check-and-set on the record: it replaces the record
        read just before (created when there is none; a rotation's needs one); CredentialConflict when another
        writer came in between."""
        rk = record_key(venue, environment)
        ck = candidate_key(rk, cid)
        _, cand = await self.get_candidate(venue, environment, cid, revision)
        current = await self._read(rk)
        if cand.rotated_at is not None and current is None:
            await self._remove(ck)
            raise CredentialNotFound(f"the keys of {venue}/{environment} were deleted meanwhile: store them again")
        try:
            await self._promote_write(ck, rk, cand, 0 if current is None else int(current[1]))
        finally:
            await self._remove(ck)
        what = "rotated" if cand.rotated_at is not None else "stored"
        logger.info("credentials of {}/{} {} ({} store, {})", venue, environment, what, self.name, cand.source)
        return msgspec.structs.replace(status_of(cand, self.name), readable=True)

    async def drop_candidate(self, venue: str, environment: str, cid: str) -> None:
        await self._remove(candidate_key(record_key(venue, environment), cid))

    async def drop_stale_candidates(self, max_age_ms: int = CANDIDATE_MAX_AGE_MS) -> int:
        """Remove the candidates older than ``max_age_ms`` (left by a crash between a store and its check)."""
        oldest = now_ms() - max_age_ms
        dropped = 0
        for key in await self._candidate_keys():
            found = candidate_of(key)
            if found is not None and int(found[1].split("-")[0]) < oldest:
                dropped += bool(await self._remove(key))
        if dropped:
            logger.info("{} candidate keys left over from an earlier run removed ({} store)", dropped, self.name)
        return dropped

    async def delete(self, venue: str, environment: str) -> bool:
        """Remove the keys (True if there were some)."""
        gone = await self._remove(record_key(venue, environment))
        if gone:
            logger.info("credentials of {}/{} deleted ({} store)", venue, environment, self.name)
        return gone

    async def status(self) -> list[CredentialStatus]:
        """Every venue and environment with stored keys, sorted: never a secret. With the encryption key, each
        record is opened too: ``readable`` false and ``error`` "tampered" / "wrong key" when it cannot be."""
        out = [await self._verified(r, status_of(r, self.name)) for r in await self._records()]
        return sorted(out, key=lambda s: (s.venue, ENVIRONMENTS.index(s.environment)))

    async def _verified(self, record: CredentialRecord, status: CredentialStatus) -> CredentialStatus:
        """``status`` with ``readable`` / ``error`` from opening ``record`` (unchanged without the key)."""
        if not self.can_encrypt:
            return status
        try:
            open_record(await self.encryption_key(), record, record.venue, record.environment)
        except WrongKey:
            return msgspec.structs.replace(status, readable=False, error="wrong key")
        except TamperedRecord:
            return msgspec.structs.replace(status, readable=False, error="tampered")
        return msgspec.structs.replace(status, readable=True)

    def where(self) -> str:
        """Where this store keeps its records (for an error message; never a credential)."""
        return self.name

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
        """Seal ``keys`` and write them at ``rk`` (check-and-set with a revision: 0 = only if there is none); the
        status and the revision this write got (its own, not read back: another writer may follow at once)."""
        record = seal(
            await self.encryption_key(), venue, environment, keys, stored_at=stored_at, rotated_at=rotated_at,
            source=source,
        )  # fmt: skip
        revision_got = await self._write(rk, record, revision)
        return msgspec.structs.replace(status_of(record, self.name), readable=True), revision_got

    async def _promote_write(self, ck: str, rk: str, record: CredentialRecord, revision: int) -> None:
        """Write candidate ``ck``'s ``record`` at ``rk`` with check-and-set (``revision`` 0: only if none)."""
        await self._write(rk, record, revision)

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
    async def _write(self, rk: str, record: CredentialRecord, revision: Any) -> int:
        """Write ``record`` and return the revision the write got; with a revision only if the stored one still
        has it, 0 only if there is none (else CredentialConflict); None: unconditionally."""

    @abc.abstractmethod
    async def _remove(self, rk: str) -> bool: ...

    @abc.abstractmethod
    async def _records(self) -> list[CredentialRecord]: ...

    @abc.abstractmethod
    async def _candidate_keys(self) -> list[str]:
        """The keys of every candidate kept (``<venue>.<environment>.candidate.<id>``)."""

    @abc.abstractmethod
    async def _kdf_params(self) -> KdfParams:
        """The deployment's key derivation parameters, made (once, race-free) when there are none yet."""


def split_key(rk: str) -> tuple[str, str] | None:
    venue, _, environment = rk.partition(".")
    return (venue, environment) if VENUE_RE.match(venue) and environment in ENVIRONMENTS else None


def placed(record: CredentialRecord, rk: str) -> CredentialRecord:
    """The record as found at ``rk``: its venue and environment are those of the place it sits (a record copied
    elsewhere does not open there, and is listed where it is)."""
    venue, environment = rk_parts(rk)
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
