"""How the credential settings are spelled (pure parsing, for config/settings.py's validation and the
credentials package): CREDENTIAL_ENCRYPTION_KEY as a raw 256-bit key or a passphrase, VAULT_SECRET_PATH as a
mount and a path. Never returns or raises with the value itself in a message."""

from __future__ import annotations

import base64
import binascii
import re

KEY_SETTING = "CREDENTIAL_ENCRYPTION_KEY"

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class KeyFormatError(ValueError):
    """A prefixed key that does not decode; ``reason`` says why (never the value)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def raw_key_of(setting: str) -> bytes | None:
    """The 32-byte key ``setting`` spells (64 hex characters, ``hex:`` and 64 hex characters, or ``base64:`` and
    the base64 of 32 bytes), or None when it is a passphrase - an unprefixed base64 string too (a passphrase
    that happens to look like one is never taken as a raw key without its KDF). A prefixed value that does not
    decode is refused."""
    s = setting.strip()
    if s.startswith("hex:"):
        try:
            key = bytes.fromhex(s[4:])
        except ValueError:
            raise KeyFormatError("hex: must be followed by 64 hex characters (32 bytes)") from None
        if len(key) != 32:
            raise KeyFormatError("hex: must be followed by 64 hex characters (32 bytes)")
        return key
    if s.startswith("base64:"):
        key = _b64_32(s[7:])
        if key is None:
            raise KeyFormatError("base64: must be followed by the base64 of exactly 32 bytes")
        return key
    if _HEX64.match(s):
        return bytes.fromhex(s)
    return None


def _b64_32(s: str) -> bytes | None:
    padded = s + "=" * (-len(s) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            key = decode(padded.encode())
        except (binascii.Error, ValueError):
            continue
        if len(key) == 32:
            return key
    return None


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
