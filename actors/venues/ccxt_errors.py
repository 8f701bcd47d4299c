"""ccxt's exceptions as decisions, by CLASS (never by message text), and error text safe to show.

``classify(exc)`` answers what a failed command means for the order:

- ``rejected``: the venue refused it and nothing was placed (``code`` says why: INSUFFICIENT_FUNDS,
  INVALID_ORDER, BAD_SYMBOL, BAD_REQUEST, NOT_SUPPORTED, VENUE_REJECTED, KEYS_REFUSED);
- ``maybe_duplicate``: a plain InvalidOrder / BadRequest is also how Binance (-2010 "Duplicate order
  sent.") and Alpaca (40010001 "client_order_id must be unique") answer a client id they already hold:
  the order is looked up by client id; found, it is that order; not found, it is rejected;
- ``duplicate``: DuplicateOrderId: the order is there, look it up;
- ``rate_limited``: RateLimitExceeded / DDoSProtection: not processed, back off and send again;
- ``not_processed``: the request was refused before it was processed (InvalidNonce: the clock);
- ``unknown``: RequestTimeout, NetworkError, ExchangeNotAvailable, OperationFailed / BadResponse
  (Binance -1006 / -1007 "execution status unknown") and anything else: the command may have taken
  effect; never sent again blind.

The order of ``TABLE`` matters (the first class that matches wins: subclasses before their parents);
``tests/unit/test_ccxt_pure.py`` pins the part of ccxt's hierarchy this relies on.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Literal

import aiohttp
import ccxt

Kind = Literal["rejected", "maybe_duplicate", "duplicate", "rate_limited", "not_processed", "unknown"]


@dataclass(frozen=True, slots=True)
class Classified:
    kind: Kind
    code: str | None = None  # for rejections: what the order's ``code`` says


TABLE: list[tuple[type[BaseException], Classified]] = [
    (ccxt.DuplicateOrderId, Classified("duplicate")),
    (ccxt.OrderImmediatelyFillable, Classified("rejected", "INVALID_ORDER")),  # post-only would take
    (ccxt.OrderNotFound, Classified("rejected", "INVALID_ORDER")),
    (ccxt.InsufficientFunds, Classified("rejected", "INSUFFICIENT_FUNDS")),
    (ccxt.InvalidOrder, Classified("maybe_duplicate", "INVALID_ORDER")),
    (ccxt.BadSymbol, Classified("rejected", "BAD_SYMBOL")),
    (ccxt.BadRequest, Classified("maybe_duplicate", "BAD_REQUEST")),
    (ccxt.AuthenticationError, Classified("rejected", "KEYS_REFUSED")),
    (ccxt.NotSupported, Classified("rejected", "NOT_SUPPORTED")),
    (ccxt.ArgumentsRequired, Classified("rejected", "NOT_SUPPORTED")),
    (ccxt.OperationRejected, Classified("rejected", "VENUE_REJECTED")),
    (ccxt.RateLimitExceeded, Classified("rate_limited")),
    (ccxt.DDoSProtection, Classified("rate_limited")),
    (ccxt.InvalidNonce, Classified("not_processed")),
    (ccxt.RequestTimeout, Classified("unknown")),
    (ccxt.ExchangeNotAvailable, Classified("unknown")),
    (ccxt.NetworkError, Classified("unknown")),
    (ccxt.OperationFailed, Classified("unknown")),  # BadResponse, NullResponse, CancelPending
]

_UNKNOWN = Classified("unknown")


_NOT_SENT = Classified("not_processed")


def classify(exc: BaseException) -> Classified:
    if isinstance(exc, ccxt.ExchangeNotAvailable) and isinstance(
        exc.__cause__, aiohttp.ClientConnectorError | socket.gaierror
    ):  # no connection was made (refused, no route, no such host): the request was never sent
        return _NOT_SENT
    for cls, verdict in TABLE:
        if isinstance(exc, cls):
            return verdict
    return _UNKNOWN  # a plain ExchangeError (a code ccxt does not map) or anything else: assume it may have acted


_QUERY_RE = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*", re.IGNORECASE)
_KV_SECRET_RE = re.compile(
    r"(?i)\b(signature|apikey|api_key|secret|key|token|password|passphrase|x-mbx-apikey|apca-api-key-id|"
    r"apca-api-secret-key)(\"?\s*[:=]\s*\"?)[^\s&\"',}]+"
)
_LONG_TOKEN_RE = re.compile(r"\b[A-Za-z0-9+/=_-]{32,}\b")


def safe_message(text: str, secrets: tuple[str, ...] = (), limit: int = 300) -> str:
    """Error text that may be shown: no query strings (they carry signatures), no key=value secrets, no
    key-like long tokens, none of ``secrets``; cut to ``limit`` characters."""
    out = text
    for s in secrets:
        if s:
            out = out.replace(s, "***")
    out = _QUERY_RE.sub(r"\1?***", out)
    out = _KV_SECRET_RE.sub(r"\1\2***", out)
    out = _LONG_TOKEN_RE.sub("***", out)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"
