"""REST shapes of the credentials endpoints (``gateway/credentials.py``): never a secret in an answer."""

from __future__ import annotations

import msgspec

from schemas.messages import VenueCheck
from schemas.rest import RestIn


class StoreCredentials(RestIn):
    """``POST /api/credentials``."""

    exchange: str
    api_key: str
    api_secret: str
    password: str | None = None
    environment: str | None = None  # testnet | live; default: the one the venue runs on


class RotateCredentials(RestIn):
    """``POST /api/credentials/{exchange}/rotate``."""

    api_key: str
    api_secret: str
    password: str | None = None
    environment: str | None = None


class CredentialEntry(msgspec.Struct, kw_only=True, rename="camel"):
    """One venue and environment with keys: where they are kept and come from, never more than the key's last 4."""

    exchange: str
    environment: str  # testnet | live
    store: str  # kv | file | vault | env
    source: str  # api | env
    stored_at: int | None = None  # epoch ms
    rotated_at: int | None = None
    key_last4: str = ""
    encrypted: bool = False
    in_use: bool | None = None  # the venue trades on these keys now (null: the order-router did not answer)
    readable: bool | None = None  # opened with this deployment's key (null: not tried: no key, or env keys)
    error: str | None = None  # why it cannot be opened: "tampered" | "wrong key"


class StoredCredentials(CredentialEntry, kw_only=True):
    """The answer of a store or a rotation: the entry, the venue's check, and whether a venue swapped keys."""

    swapped: bool = False
    check: VenueCheck | None = None
    detail: str | None = None


class CredentialsStatus(msgspec.Struct, kw_only=True, rename="camel"):
    """``GET /api/credentials/status``."""

    credentials: list[CredentialEntry]
    encryption_key_set: bool
    store: str  # kv | file | vault


class CredentialsDeleted(msgspec.Struct, kw_only=True, rename="camel"):
    deleted: bool
    exchange: str
    environment: str
