"""The venue the order-router talks to: the paper exchange, or a live one over ccxt (EXCHANGE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.books import BookCache
from actors.venues.base import Venue
from bus.client import Bus
from config.settings import Settings

if TYPE_CHECKING:
    from actors.venues.ccxt_venue import CcxtVenue


def venue_keys(settings: Settings) -> tuple[str, str]:
    """EXCHANGE_API_KEY / SECRET; when unset, the venue's own pair (BINANCE_TESTNET_* in the Binance sandbox,
    ALPACA_API_*)."""
    if settings.EXCHANGE_API_KEY or settings.EXCHANGE_API_SECRET:
        return settings.EXCHANGE_API_KEY, settings.EXCHANGE_API_SECRET
    if settings.EXCHANGE == "binance" and settings.EXCHANGE_SANDBOX:
        return settings.BINANCE_TESTNET_API_KEY, settings.BINANCE_TESTNET_SECRET
    if settings.EXCHANGE == "alpaca":
        return settings.ALPACA_API_KEY, settings.ALPACA_API_SECRET
    return "", ""


def make_ccxt_venue(settings: Settings) -> CcxtVenue:
    from actors.venues.ccxt_venue import CcxtVenue

    key, secret = venue_keys(settings)
    return CcxtVenue(
        settings.EXCHANGE,
        pairs=settings.PAIRS,
        api_key=key,
        secret=secret,
        password=settings.EXCHANGE_PASSWORD,
        sandbox=settings.EXCHANGE_SANDBOX,
        api_url=settings.EXCHANGE_API_URL,
        timeout_ms=settings.EXCHANGE_TIMEOUT_MS,
        poll_ms=settings.EXCHANGE_POLL_MS,
        stream=settings.EXCHANGE_STREAM,
    )


def make_venue(settings: Settings, bus: Bus, books: BookCache | None = None) -> Venue:
    """Paper when PAPER_TRADING, else the ccxt venue for EXCHANGE (its ``start()`` is the start check)."""
    if settings.PAPER_TRADING or settings.EXCHANGE == "paper":
        from actors.venues.paper import PaperVenue

        return PaperVenue(settings, bus, books)
    return make_ccxt_venue(settings)
