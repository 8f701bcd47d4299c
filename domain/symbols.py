"""A trading pair as clients of the enhanced-execution spec write it (``symbol``: ``BTCUSDT``, ``BTC/USDT``,
``BTC_USDT``, ``btc-usdt``), matched against the pairs this service trades (PAIRS, written ``BASE_QUOTE``)."""

from __future__ import annotations

from collections.abc import Sequence

SEPARATORS = "/_-"


class SymbolError(ValueError):
    """Why a symbol names no pair traded here (a sentence naming the symbol and the pairs)."""


def match_symbol(symbol: str, pairs: Sequence[str]) -> str:
    """The pair of ``pairs`` that ``symbol`` names, in any case: with a separator (``/``, ``_``, ``-``) base and
    quote are as written; without one (``BTCUSDT``) the one pair whose base and quote run together are it. No
    such pair, or several (``ABCD`` with ``AB_CD`` and ``ABC_D``): SymbolError."""
    text = symbol.strip().upper()
    listed = ", ".join(pairs)
    if not text:
        raise SymbolError(f"symbol is empty: one of the pairs traded here ({listed}), e.g. BTCUSDT or BTC/USDT")
    seps = [c for c in text if c in SEPARATORS]
    if len(seps) == 1:
        base, _, quote = text.partition(seps[0])
        pair = f"{base}_{quote}"
        if base and quote and pair in pairs:
            return pair
    elif not seps:
        found = [p for p in pairs if p.replace("_", "") == text]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise SymbolError(
                f"symbol {symbol[:40]!r} names several pairs ({', '.join(found)}): write it with a separator "
                f"({found[0].replace('_', '/')})"
            )
    raise SymbolError(f"symbol {symbol[:40]!r} is not a pair traded here (PAIRS: {listed})")
