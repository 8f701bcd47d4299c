"""Sealed venue keys in a JetStream KV bucket: ``<PREFIX>_CREDENTIALS``, key ``<venue>.<environment>``, history 1.

Rotate is ``update(last=revision)`` (check-and-set); delete is ``purge`` (removes the old ciphertext from the
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
from credentials.store import KDF_KEY, CredentialStore, placed, split_key

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

    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        venue, environment = rk.split(".", 1)
        return placed(decode_record(entry.value, venue, environment), rk), int(entry.revision or 0)

    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> None:
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
        try:
            entry = await self.kv.get(rk)
        except nats.js.errors.KeyNotFoundError:
            return False
        return entry.value is not None

    async def _records(self) -> list[CredentialRecord]:
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out = []
        for rk in keys:
            if split_key(rk) is None:
                continue
            found = await self._read(rk)
            if found is not None:
                out.append(found[0])
        return out

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
