"""Sealed venue keys in Vault (or OpenBao) KV v2 through hvac, at ``<VAULT_SECRET_PATH>/<venue>/<environment>``.

Rotate uses KV v2's ``cas`` (``cas=0``: only if there is none). KV v2 keeps old versions of a secret: after
every write of a record, its earlier versions are destroyed (``destroy``: their data is gone for good), so the
keys a rotation replaced are not left readable in the secret's history. With CREDENTIAL_ENCRYPTION_KEY the
record is sealed as in the other stores; without it Vault's own encryption and token are the protection, and
the keys are kept as Vault secrets. hvac is synchronous: every call runs in ``asyncio.to_thread``.

The mount is VAULT_SECRET_PATH's first segment (``secret/data/trading-bot``: mount ``secret``): a KV v2 engine
mounted at a nested path (``kv/prod/...`` mounted at ``kv/prod``) is not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import msgspec
from loguru import logger

from config.key_format import split_secret_path
from credentials.sealing import (
    ENVIRONMENTS,
    VENUE_RE,
    CredentialConflict,
    CredentialError,
    CredentialRecord,
    CredentialStatus,
    KdfParams,
    TamperedRecord,
    VenueKeys,
    new_kdf_params,
    status_of,
)
from credentials.store import CANDIDATE, CredentialStore, guarded, placed, rk_parts

# ------------------------------------------------------------------------------------------------------
# Vault (or OpenBao) KV v2
# ------------------------------------------------------------------------------------------------------
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

    def where(self) -> str:
        from config.settings import hide_credentials

        return f"Vault at {hide_credentials(self.endpoint)}, {'/'.join(p for p in (self.mount, self.base) if p)}"

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
            return placed(msgspec.convert(data, CredentialRecord), rk)
        except msgspec.ValidationError:
            venue, environment = rk.split(".", 1)
            raise TamperedRecord(f"the Vault secret of {venue}/{environment} is not a credential record") from None

    @guarded("read a credential")
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
        venue, environment = rk_parts(rk)
        return CredentialRecord(
            version=1,
            venue=venue,
            environment=environment,
            algorithm="vault",
            nonce="",
            ciphertext="",
            key_id=str(data.get("recordId") or ""),  # (no key: the record's id, see record_id_of)
            stored_at=int(data.get("storedAt") or 0),
            rotated_at=data.get("rotatedAt"),
            key_last4=str(data.get("keyLast4") or ""),
            source=str(data.get("source") or "api"),
        )

    @guarded("store a credential")
    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> int:
        return await self._write_data(rk, msgspec.to_builtins(record), revision)

    async def _write_data(self, rk: str, data: dict[str, Any], revision: int | None) -> int:
        import hvac.exceptions

        kv2 = self._client.secrets.kv.v2
        venue, environment = rk_parts(rk)
        try:
            r = await self._call(
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
        version = int(r["data"]["version"])
        if version > 1 and CANDIDATE not in rk:  # the keys this write replaced: not kept in the history
            try:
                await self._call(
                    "destroy the replaced versions of a credential",
                    kv2.destroy_secret_versions,
                    path=self._path(rk),
                    versions=list(range(1, version)),
                    mount_point=self.mount,
                )
            except CredentialError as e:
                # the new keys are written: the write succeeded (a rotation goes on to the swap); only the old
                # versions stay in Vault's history - a token without `update` on `<mount>/destroy/...`
                logger.bind(actor="credentials").warning(
                    "the keys of {}/{} are stored, but their replaced versions are still in Vault's history (the "
                    "token may not destroy them: grant update on {}/destroy/*): {}",
                    venue, environment, self.mount, e,
                )  # fmt: skip
        return version

    # Vault without CREDENTIAL_ENCRYPTION_KEY: Vault's own encryption keeps the keys.
    plain_ok = True

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
        if self.can_encrypt:
            return await super()._write_keys(rk, venue, environment, keys, stored_at, rotated_at, source, revision)
        record_id = secrets.token_hex(8)
        status = self._plain_status(venue, environment, keys, source, stored_at, rotated_at, record_id)
        return status, await self._write_data(rk, self._plain_data(keys, status), revision)

    async def _promote_write(self, ck: str, rk: str, record: CredentialRecord, revision: int) -> None:
        if record.ciphertext:
            await self._write(rk, record, revision)
            return
        found = await self._read_data(self._path(ck))  # kept by Vault alone: the candidate's secret, as it is
        if found is None:
            venue, environment = rk_parts(rk)
            raise CredentialError(f"the candidate keys of {venue}/{environment} were removed meanwhile")
        await self._write_data(rk, found[0], revision)

    @guarded("read a credential")
    async def _get_at(self, rk: str, venue: str, environment: str) -> tuple[VenueKeys, CredentialRecord, int] | None:
        found = await self._read_data(self._path(rk))
        if found is None:
            return None
        data, version = found
        if "ciphertext" in data:
            record = self._record_of(data, rk)
            return await self._open(record, venue, environment), record, version
        try:
            keys = VenueKeys(str(data["apiKey"]), str(data["apiSecret"]), str(data.get("password") or ""))
        except (KeyError, CredentialError):
            raise TamperedRecord(f"the Vault secret of {venue}/{environment} holds no keys") from None
        return keys, self._plain_record(data, rk), version

    @staticmethod
    def _plain_status(
        venue: str,
        environment: str,
        keys: VenueKeys,
        source: str,
        stored_at: int,
        rotated_at: int | None,
        record_id: str,
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
            record_id=record_id,
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
            "recordId": status.record_id,
        }

    @guarded("list the credentials")
    async def status(self) -> list[CredentialStatus]:
        out = []
        for rk in await self._keys():
            found = await self._read_data(self._path(rk))
            if found is None:
                continue
            data = found[0]
            venue, environment = rk.split(".", 1)
            if "ciphertext" in data:
                record = self._record_of(data, rk)
                out.append(await self._verified(record, status_of(record, self.name)))
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
                        record_id=r.key_id,
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

    async def _keys(self, candidates: bool = False) -> list[str]:
        """The record keys (``<venue>.<environment>``) kept, or (``candidates``) the candidates' keys."""
        out = []
        for venue_dir in await self._list(self.base):
            venue = venue_dir.rstrip("/")
            if not venue_dir.endswith("/") or not VENUE_RE.match(venue):
                continue
            for name in await self._list("/".join(p for p in (self.base, venue) if p)):
                if (CANDIDATE in name) if candidates else (name in ENVIRONMENTS):
                    out.append(f"{venue}.{name}")
        return out

    @guarded("list the candidate keys")
    async def _candidate_keys(self) -> list[str]:
        return await self._keys(candidates=True)

    @guarded("remove a credential")
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

    @guarded("read the key derivation parameters")
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
