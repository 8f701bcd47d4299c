"""Venue keys sealed with AES-256-GCM: the pure part of the credential store (no I/O, no asyncio).

The key: ``CREDENTIAL_ENCRYPTION_KEY``. 64 hex characters (or ``hex:`` and them), or ``base64:`` and the
base64 (standard or URL-safe, padded or not) of exactly 32 bytes, is a raw 256-bit key (config/key_format.py
reads it). Anything else - an unprefixed base64 string too - is a passphrase, stretched with Scrypt (n=2**15,
r=8, p=1) and a random 16-byte salt made once per deployment and kept beside the records (``KdfParams``). A
record carries a short key id (HKDF-SHA256 of the key, 8 bytes) so that a record sealed under another key is
reported as a *wrong key*, and one whose bytes were changed as *tampered*.

The associated data binds everything the record says in clear: the venue and environment (the place it is read
from: a record moved to another venue or environment is refused), and its metadata - version, algorithm, key id,
storedAt, rotatedAt, keyLast4, source - so that editing any of it in the store (say, keyLast4 to hide which key
is in use, or the times) is refused as tampering too.

No message of this module ever holds a secret: errors name the venue, the environment, the setting and the
key ids only; ``VenueKeys`` hides its fields in ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from config.key_format import KEY_SETTING, KeyFormatError
from config.key_format import raw_key_of as _raw_key_of

ENVIRONMENTS: tuple[str, ...] = ("testnet", "live")
Environment = Literal["testnet", "live"]
RECORD_VERSION = 2  # 2: the metadata is part of the associated data
ALGORITHM = "AES-256-GCM"
NONCE_BYTES = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES = 16
VENUE_RE = re.compile(r"^[a-z0-9_]{2,40}$")  # a venue name of EXCHANGES (lower case), usable as a KV key part
SOURCE_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
LAST4_MIN_LENGTH = 12  # an API key shorter than this shows no last characters at all
_MAX_FIELD = 4096  # longest api key / secret / password accepted


class CredentialError(Exception):
    """A credential could not be stored or read. ``str()`` says why, never with a secret in it."""


class NoEncryptionKey(CredentialError):
    """Storing was refused: no CREDENTIAL_ENCRYPTION_KEY (keys are never kept in plain text)."""


class WrongKey(CredentialError):
    """The record was sealed under another key than this deployment's CREDENTIAL_ENCRYPTION_KEY."""


class TamperedRecord(CredentialError):
    """The record's bytes, venue or environment were changed after it was sealed (or it is not a record)."""


class CredentialNotFound(CredentialError):
    """No keys are stored for this venue and environment."""


class CredentialConflict(CredentialError):
    """Someone else changed the record between the read and the write (check-and-set failed)."""


class StoreUnavailable(CredentialError):
    """The store itself failed (cannot be read or written now: a file, NATS, Vault): no statement about a record."""


class InvalidCredential(CredentialError, ValueError):
    """A field of what is to be stored is not allowed; the message names the field and the reason."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class VenueKeys:
    """A venue's API key, secret and (some venues) password. ``repr`` never shows them."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        for name, value, required in (
            ("apiKey", self.api_key, True),
            ("apiSecret", self.api_secret, True),
            ("password", self.password, False),
        ):
            if not isinstance(value, str):
                raise InvalidCredential(name, "expected a string")
            if required and not value.strip():
                raise InvalidCredential(name, "must not be empty")
            if value != value.strip():
                raise InvalidCredential(name, "must not start or end with white space")
            if len(value) > _MAX_FIELD:
                raise InvalidCredential(name, f"longer than {_MAX_FIELD} characters")
            if any(ord(c) < 32 or ord(c) == 127 for c in value):
                raise InvalidCredential(name, "must not contain control characters")

    @property
    def last4(self) -> str:
        """The API key's last 4 characters, or '' when the key is too short to show any of it."""
        return self.api_key[-4:] if len(self.api_key) >= LAST4_MIN_LENGTH else ""


class KdfParams(msgspec.Struct, frozen=True, kw_only=True):
    """How a passphrase becomes the key: kept once per deployment beside the records (not secret)."""

    name: str = "scrypt"
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P
    salt: str  # base64 of SALT_BYTES random bytes


def new_kdf_params() -> KdfParams:
    return KdfParams(salt=base64.b64encode(os.urandom(SALT_BYTES)).decode())


class CredentialRecord(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a store keeps for one venue and environment. Only ``nonce`` and ``ciphertext`` relate to the
    secrets, and they are the AES-GCM output; the rest is shown by the status list."""

    version: int
    venue: str
    environment: str
    algorithm: str = ALGORITHM
    nonce: str  # base64, 12 bytes, fresh for every write
    ciphertext: str  # base64: AES-GCM ciphertext with its 16-byte tag
    key_id: str  # hex, HKDF of the key: tells a wrong key from a tampered record
    stored_at: int  # epoch ms of the first store
    rotated_at: int | None = None  # epoch ms of the last rotation
    key_last4: str = ""  # the API key's last 4 characters ('' for a short key)
    source: str = "api"  # who stored it (api, ...)


class CredentialStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One line of the status list: never a secret."""

    venue: str
    environment: str
    store: str  # kv | file | vault
    source: str
    stored_at: int
    rotated_at: int | None
    key_last4: str
    encrypted: bool
    record_id: str = ""  # which record (``record_id_of``): tells the keys in use from others; never a secret
    readable: bool | None = None  # opened with this deployment's key (None: not tried, no key)
    error: str | None = None  # why it cannot be opened: "tampered" | "wrong key"


# ------------------------------------------------------------------------------------------------------
# The key
# ------------------------------------------------------------------------------------------------------
def raw_key_of(setting: str) -> bytes | None:
    """The 32-byte key ``setting`` spells, or None when it is a passphrase (config/key_format.py); a prefixed
    value that does not decode is an InvalidCredential naming CREDENTIAL_ENCRYPTION_KEY."""
    try:
        return _raw_key_of(setting)
    except KeyFormatError as e:
        raise InvalidCredential(KEY_SETTING, e.reason) from None


def derive_key(passphrase: str, kdf: KdfParams) -> bytes:
    """Scrypt of the passphrase with the deployment's salt (about 0.1 s: derive once, keep the result)."""
    if kdf.name != "scrypt":
        raise TamperedRecord(f"unknown key derivation {kdf.name!r} beside the records (expected scrypt)")
    try:
        salt = base64.b64decode(kdf.salt, validate=True)
    except (binascii.Error, ValueError):
        raise TamperedRecord("the key derivation's salt beside the records is not base64") from None
    if len(salt) < SALT_BYTES or not (2**14 <= kdf.n <= 2**20) or not (1 <= kdf.r <= 32) or not (1 <= kdf.p <= 16):
        raise TamperedRecord("the key derivation's parameters beside the records are out of range")
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode())


def key_id_of(key: bytes) -> str:
    """A short fingerprint of the key (not the key: HKDF output, 8 bytes as hex)."""
    return HKDF(algorithm=hashes.SHA256(), length=8, salt=None, info=b"tbx-credential-key-id").derive(key).hex()


@dataclass(frozen=True)
class EncryptionKey:
    """The deployment's 256-bit key, ready to seal and open records."""

    key: bytes = field(repr=False)
    kind: Literal["raw", "passphrase"]
    key_id: str = ""

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise ValueError("an AES-256 key is 32 bytes")
        object.__setattr__(self, "key_id", key_id_of(self.key))

    @classmethod
    def from_setting(cls, setting: str, kdf: KdfParams | None = None) -> EncryptionKey:
        """The key ``CREDENTIAL_ENCRYPTION_KEY`` spells: a raw key as it is, a passphrase through Scrypt with
        ``kdf`` (the deployment's salt; required for a passphrase)."""
        if not setting.strip():
            raise NoEncryptionKey(f"{KEY_SETTING} is not set")
        raw = raw_key_of(setting)
        if raw is not None:
            return cls(raw, "raw")
        if kdf is None:
            raise ValueError("a passphrase needs the deployment's key derivation parameters (salt)")
        return cls(derive_key(setting, kdf), "passphrase")


def is_passphrase(setting: str) -> bool:
    return bool(setting.strip()) and raw_key_of(setting) is None


# ------------------------------------------------------------------------------------------------------
# Seal and open
# ------------------------------------------------------------------------------------------------------
def check_venue(venue: str) -> str:
    if not isinstance(venue, str) or not VENUE_RE.match(venue):
        raise InvalidCredential("exchange", "expected a venue name: 2 to 40 lower-case letters, digits or '_'")
    return venue


def check_environment(environment: str) -> str:
    if environment not in ENVIRONMENTS:
        raise InvalidCredential("environment", "expected testnet or live")
    return environment


def check_source(source: str) -> str:
    if not isinstance(source, str) or not SOURCE_RE.match(source):
        raise InvalidCredential("source", "expected 1 to 32 lower-case letters, digits, '_' or '-'")
    return source


def associated_data(record: CredentialRecord, venue: str, environment: str) -> bytes:
    """What the GCM tag authenticates besides the ciphertext: the place the record is read from (``venue`` /
    ``environment``, not what it says of itself) and every field it shows in clear, in one canonical form."""
    bound = [
        record.version,
        record.algorithm,
        venue,
        environment,
        record.key_id,
        record.stored_at,
        record.rotated_at,
        record.key_last4,
        record.source,
    ]
    return b"tbx-credential/" + json.dumps(bound, separators=(",", ":")).encode()


def seal(
    key: EncryptionKey,
    venue: str,
    environment: str,
    keys: VenueKeys,
    *,
    stored_at: int,
    rotated_at: int | None = None,
    source: str = "api",
) -> CredentialRecord:
    """Encrypt ``keys`` for ``venue`` / ``environment`` with a fresh random nonce."""
    check_venue(venue)
    check_environment(environment)
    check_source(source)
    plain = json.dumps({"apiKey": keys.api_key, "apiSecret": keys.api_secret, "password": keys.password}).encode()
    nonce = os.urandom(NONCE_BYTES)
    bare = CredentialRecord(
        version=RECORD_VERSION,
        venue=venue,
        environment=environment,
        nonce=base64.b64encode(nonce).decode(),
        ciphertext="",
        key_id=key.key_id,
        stored_at=stored_at,
        rotated_at=rotated_at,
        key_last4=keys.last4,
        source=source,
    )
    ct = AESGCM(key.key).encrypt(nonce, plain, associated_data(bare, venue, environment))
    return msgspec.structs.replace(bare, ciphertext=base64.b64encode(ct).decode())


def open_record(key: EncryptionKey, record: CredentialRecord, venue: str, environment: str) -> VenueKeys:
    """The keys in ``record``, which must be the record of ``venue`` / ``environment`` (the place it was read
    from, not what it says of itself). Raises WrongKey or TamperedRecord."""
    where = f"{venue}/{environment}"
    if record.version != RECORD_VERSION or record.algorithm != ALGORITHM:
        raise TamperedRecord(
            f"the credential record of {where} has version {record.version} / {record.algorithm!r}; "
            f"expected {RECORD_VERSION} / {ALGORITHM}"
        )
    if record.key_id != key.key_id:
        raise WrongKey(
            f"the credential record of {where} was sealed with another key (key id {record.key_id[:16]!r}, "
            f"this deployment's {KEY_SETTING} has key id {key.key_id!r}): set the key it was stored with, "
            "or store the keys again"
        )
    try:
        nonce = base64.b64decode(record.nonce, validate=True)
        ct = base64.b64decode(record.ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise TamperedRecord(
            f"the credential record of {where} is damaged: nonce or ciphertext is not base64"
        ) from None
    if len(nonce) != NONCE_BYTES:
        raise TamperedRecord(f"the credential record of {where} is damaged: the nonce is not {NONCE_BYTES} bytes")
    try:
        plain = AESGCM(key.key).decrypt(nonce, ct, associated_data(record, venue, environment))
    except InvalidTag:
        raise TamperedRecord(
            f"the credential record of {where} was changed after it was stored (its keys or what it says of them: "
            "times, keyLast4, source; or it was moved from another venue or environment): refused; store the keys "
            "again"
        ) from None
    try:
        fields = json.loads(plain)
        return VenueKeys(fields["apiKey"], fields["apiSecret"], fields.get("password", ""))
    except (ValueError, KeyError, TypeError, InvalidCredential):
        raise TamperedRecord(f"the credential record of {where} holds no keys") from None


def encode_record(record: CredentialRecord) -> bytes:
    return msgspec.json.encode(record)


def decode_record(data: bytes, venue: str, environment: str) -> CredentialRecord:
    try:
        return msgspec.json.decode(data, type=CredentialRecord)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise TamperedRecord(f"the credential record of {venue}/{environment} is not a credential record") from None


def record_id_of(record: CredentialRecord) -> str:
    """Which record this is: a digest of its nonce and ciphertext (16 hex digits; a fresh nonce for every seal,
    so every write of new keys has its own). A record without a ciphertext (Vault keeping the keys itself)
    carries its id in ``key_id``."""
    if not record.ciphertext:
        return record.key_id
    return hashlib.sha256(f"{record.nonce}.{record.ciphertext}".encode()).hexdigest()[:16]


def status_of(record: CredentialRecord, store: str) -> CredentialStatus:
    return CredentialStatus(
        venue=record.venue,
        environment=record.environment,
        store=store,
        source=record.source,
        stored_at=record.stored_at,
        rotated_at=record.rotated_at,
        key_last4=record.key_last4,
        encrypted=True,
        record_id=record_id_of(record),
    )
