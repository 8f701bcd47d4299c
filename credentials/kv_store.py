"""Sealed venue keys in a JetStream KV bucket: ``<PREFIX>_CREDENTIALS``, key ``<venue>.<environment>``, history 1.

Rotate is ``update(last=revision)`` (check-and-set), a first store ``create`` (only if there is none); every
write answers with its own revision; delete is ``purge`` (removes the old ciphertext from the
stream too). A passphrase's salt is the key ``meta.kdf`` (created once with ``create``, so racing hosts agree on
it). The caller passes the bucket's handle (``await bus.kv(bus.subjects.kv_credentials)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import nats.js.errors

from credentials.sealing import (
    CredentialConflict,
    CredentialRecord,
    KdfParams,
    TamperedRecord,
    decode_record,
    encode_record,
    new_kdf_params,
)
from credentials.store import CANDIDATE, KDF_KEY, CredentialStore, guarded, placed, rk_parts, split_key

if TYPE_CHECKING:
    from nats.js.kv import KeyValue


# ------------------------------------------------------------------------------------------------------
# JetStream KV
# ------------------------------------------------------------------------------------------------------
class KvCredentialStore(CredentialStore):
    name = "kv"

    def __init__(self, kv: KeyValue, encryption_key: str) -> None:
        super().__init__(encryption_key)
        self.kv = kv

    def where(self) -> str:
        return f"JetStream KV bucket {self.kv._name}"

    @guarded("read a credential")
    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        venue, environment = rk_parts(rk)
        return placed(decode_record(entry.value, venue, environment), rk), int(entry.revision or 0)

    @guarded("store a credential")
    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> int:
        data = encode_record(record)
        if revision is None:
            return int(await self.kv.put(rk, data))
        try:
            if revision == 0:
                return int(await self.kv.create(rk, data))
            return int(await self.kv.update(rk, data, last=revision))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise CredentialConflict(
                f"the keys of {record.venue}/{record.environment} were changed by someone else meanwhile: "
                "read the status and try again"
            ) from None

    @guarded("remove a credential")
    async def _remove(self, rk: str) -> bool:
        existed = await self._read_raw_exists(rk)
        await self.kv.purge(rk)
        return existed

    async def _read_raw_exists(self, rk: str) -> bool:
        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return False
        return entry.value is not None

    async def _keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except nats.js.errors.NoKeysError:
            return []

    @guarded("list the candidate keys")
    async def _candidate_keys(self) -> list[str]:
        return [k for k in await self._keys() if CANDIDATE in k]

    @guarded("list the credentials")
    async def _records(self) -> list[CredentialRecord]:
        out = []
        for rk in await self._keys():
            if split_key(rk) is None:
                continue
            found = await self._read(rk)
            if found is not None:
                out.append(found[0])
        return out

    @guarded("read the key derivation parameters")
    async def _kdf_params(self) -> KdfParams:
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
