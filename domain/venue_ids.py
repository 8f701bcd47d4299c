"""Our client order ids as a venue's client order ids: pure, deterministic, stable across restarts.

A venue limits the characters and the length of a client order id (Binance ``^[.A-Z:/a-z0-9_-]{1,36}$``,
Alpaca up to 128 characters). Ours is sent unchanged when it fits the venue's rule. When it does not,
it is sent as ``h-`` followed by the first hex digits of the SHA-256 of ours, as many as the venue allows
(34 on Binance, 64 at most). An id of ours that already has that shape (``h-`` and lower-case hex) is
mapped too, so an unchanged id and a mapped one can never be equal: the mapping is injective up to a
hash collision (2^-136 on Binance).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAPPED_PREFIX = "h-"
_HEX_MAX = 64


@dataclass(frozen=True, slots=True)
class ClientIdRule:
    """What a venue accepts as a client order id: a full-match pattern and a maximum length."""

    venue: str
    pattern: re.Pattern[str]
    max_len: int

    def fits(self, cid: str) -> bool:
        return 0 < len(cid) <= self.max_len and self.pattern.fullmatch(cid) is not None


BINANCE = ClientIdRule("binance", re.compile(r"[.A-Z:/a-z0-9_-]{1,36}"), 36)
# Alpaca: any characters up to 128; printable ASCII without spaces keeps it safe in URLs and logs
ALPACA = ClientIdRule("alpaca", re.compile(r"[!-~]{1,128}"), 128)
# any other venue: letters, digits, '_' and '-', at most 32 (what most ccxt venues accept)
DEFAULT = ClientIdRule("default", re.compile(r"[A-Za-z0-9_-]{1,32}"), 32)

RULES = {"binance": BINANCE, "binanceus": BINANCE, "alpaca": ALPACA}
_MAPPED_RE = re.compile(re.escape(MAPPED_PREFIX) + r"[0-9a-f]+")


def rule_for(venue: str) -> ClientIdRule:
    return RULES.get(venue, DEFAULT)


def looks_mapped(cid: str) -> bool:
    """True when ``cid`` has the shape of a mapped id (such an id of ours is mapped as well)."""
    return _MAPPED_RE.fullmatch(cid) is not None


def venue_client_id(ours: str, rule: ClientIdRule) -> str:
    """The client order id to send to the venue for our ``ours``."""
    if rule.fits(ours) and not looks_mapped(ours):
        return ours
    digits = min(rule.max_len - len(MAPPED_PREFIX), _HEX_MAX)
    if digits < 16:
        raise ValueError(f"a venue client id of at most {rule.max_len} characters cannot hold a mapped id")
    return MAPPED_PREFIX + hashlib.sha256(ours.encode()).hexdigest()[:digits]
