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


# the venues the enhanced-execution spec names in its examples and its list of supported exchanges
SPEC_VENUES = frozenset({"binance", "alpaca"})


def spec_venue(name: str, venues: Sequence[tuple[str, bool]]) -> str:
    """The venue a spec client's ``exchange`` stands for, given the configured ``venues`` (name, is paper).
    A configured name is itself; a venue the spec names (SPEC_VENUES, any case) that is not configured is the
    paper venue when that is the only venue there is (the default setup: the spec's examples trade on paper);
    anything else is returned as written, for the endpoint to refuse (with a live venue configured, an order
    for ``binance`` must never land anywhere but on a venue named so)."""
    key = name.strip().lower()
    if any(key == v for v, _ in venues):
        return name
    if key in SPEC_VENUES and len(venues) == 1 and venues[0][1]:
        return venues[0][0]
    return name
