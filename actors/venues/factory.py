"""The venue the order-router talks to: the paper exchange, or a live one over ccxt (EXCHANGE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.books import BookCache
from actors.venues.base import Venue
from bus.client import Bus
from config.settings import Settings, venue_credentials
from config.venues import VenueConfig

if TYPE_CHECKING:
    from actors.venues.ccxt_venue import CcxtVenue


ORDERS_SHARE = 0.75  # of a venue's per-IP request budget (Binance weight): the order-router's instance
BOOKS_SHARE = 0.25  # ... and the md-feed's (MARKET_DATA=venue)


def make_ccxt_venue(settings: Settings, keys: bool = True, share: float = ORDERS_SHARE) -> CcxtVenue:
    """The ccxt venue of EXCHANGE; ``keys=False``: without the keys (public market data only). ``share``: the part
    of the venue's per-IP request budget its rate limiter keeps to (where the venue counts per IP)."""
    from actors.venues.ccxt_venue import CcxtVenue

    key, secret, password = venue_credentials(settings) if keys else ("", "", "")
    return CcxtVenue(
        settings.EXCHANGE,
        pairs=settings.PAIRS,
        api_key=key,
        secret=secret,
        password=password,
        sandbox=settings.EXCHANGE_SANDBOX,
        api_url=settings.EXCHANGE_API_URL,
        timeout_ms=settings.EXCHANGE_TIMEOUT_MS,
        poll_ms=settings.EXCHANGE_POLL_MS,
        stream=settings.EXCHANGE_STREAM,
        rate_share=share,
    )


def make_venue(settings: Settings, bus: Bus, books: BookCache | None = None) -> Venue:
    """Paper when PAPER_TRADING, else the ccxt venue for EXCHANGE (its ``start()`` is the start check)."""
    if settings.PAPER_TRADING or settings.EXCHANGE == "paper":
        from actors.venues.paper import PaperVenue

        return PaperVenue(settings, bus, books)
    return make_ccxt_venue(settings)


def make_ccxt_venue_for(cfg: VenueConfig, keys: bool = True, share: float = ORDERS_SHARE) -> CcxtVenue:
    """The ccxt venue of one configured venue (``config.venues.VenueConfig``: EXCHANGES, or the single EXCHANGE);
    ``keys`` and ``share`` as ``make_ccxt_venue``. Its ``name`` is the ccxt id; the venue's own name is
    ``cfg.name``."""
    from actors.venues.ccxt_venue import CcxtVenue

    return CcxtVenue(
        cfg.ccxt_id,
        pairs=cfg.pairs,
        api_key=cfg.api_key if keys else "",
        secret=cfg.api_secret if keys else "",
        password=cfg.password if keys else "",
        sandbox=cfg.sandbox,
        api_url=cfg.api_url,
        timeout_ms=cfg.timeout_ms,
        poll_ms=cfg.poll_ms,
        stream=cfg.stream,
        rate_share=share,
    )
