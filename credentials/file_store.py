"""Sealed venue keys in one JSON file (``CREDENTIAL_FILE``, default ``DATA_DIR/credentials.json``).

Mode 0600, written atomically (a temp file in the same directory, fsync, rename); every read-modify-write holds
an ``flock`` on ``<file>.lock`` so processes sharing the file cannot lose each other's writes. The file's calls
run in ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from credentials.sealing import (
    CredentialConflict,
    CredentialRecord,
    KdfParams,
    TamperedRecord,
    new_kdf_params,
)
from credentials.store import CANDIDATE, CredentialStore, guarded, placed, split_key

FILE_VERSION = 1


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
        return None if record is None else (placed(record, rk), content.revisions.get(rk, 0))

    def _write_sync(self, rk: str, record: CredentialRecord, revision: int | None) -> int:
        with self._locked():
            content = self._load()
            current = content.revisions.get(rk, 0) if rk in content.records else None
            if revision is not None and (current or 0) != revision:
                raise CredentialConflict(
                    f"the keys of {record.venue}/{record.environment} were changed by someone else meanwhile: "
                    "read the status and try again"
                )
            content.records[rk] = record
            # a new record's revision continues from the file's highest: a record deleted and stored again never
            # has a revision it had before
            content.revisions[rk] = max([current or 0, *content.revisions.values()]) + 1
            self._save(content)
            return content.revisions[rk]

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
        return [placed(r, rk) for rk, r in content.records.items() if split_key(rk) is not None]

    def _candidates_sync(self) -> list[str]:
        with self._locked():
            return [rk for rk in self._load().records if CANDIDATE in rk]

    def _kdf_sync(self) -> KdfParams:
        with self._locked():
            content = self._load()
            if content.kdf is None:
                content.kdf = new_kdf_params()
                self._save(content)
            return content.kdf

    def where(self) -> str:
        return f"the file {str(self.path)!r} (CREDENTIAL_FILE)"

    @guarded("read a credential")
    async def _read(self, rk: str) -> tuple[CredentialRecord, int] | None:
        return await asyncio.to_thread(self._read_sync, rk)

    @guarded("store a credential")
    async def _write(self, rk: str, record: CredentialRecord, revision: int | None) -> int:
        return await asyncio.to_thread(self._write_sync, rk, record, revision)

    @guarded("remove a credential")
    async def _remove(self, rk: str) -> bool:
        return await asyncio.to_thread(self._remove_sync, rk)

    @guarded("list the credentials")
    async def _records(self) -> list[CredentialRecord]:
        return await asyncio.to_thread(self._records_sync)

    @guarded("list the candidate keys")
    async def _candidate_keys(self) -> list[str]:
        return await asyncio.to_thread(self._candidates_sync)

    @guarded("read the key derivation parameters")
    async def _kdf_params(self) -> KdfParams:
        return await asyncio.to_thread(self._kdf_sync)
