"""The venues the order-router talks to: the paper exchange, or live ones over ccxt (EXCHANGES, or EXCHANGE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.books import BookCache
from actors.venues.base import Venue
from bus.client import Bus
from config.settings import Settings
from config.venues import VenueConfig, venue_configs
from domain.partitions import owns

if TYPE_CHECKING:
    from actors.venues.ccxt_venue import CcxtVenue


ORDERS_SHARE = 0.75  # of a venue's per-IP request budget (Binance weight): the order-router's instance
BOOKS_SHARE = 0.25  # ... and the md-feed's (MARKET_DATA=venue)


def make_ccxt_venue_of(
    cfg: VenueConfig, keys: bool = True, share: float = ORDERS_SHARE, own_pairs: tuple[str, ...] | None = None
) -> CcxtVenue:
    """The ccxt venue of one configured venue (``cfg.name`` may differ from its ccxt id: a second account);
    ``own_pairs``: the pairs whose orders it follows (a partition's), None: all."""
    from actors.venues.ccxt_venue import CcxtVenue

    venue = CcxtVenue(
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
        name=cfg.name,
        own_pairs=own_pairs,
    )
    return venue


def make_venue_of(cfg: VenueConfig, settings: Settings, bus: Bus, books: BookCache | None = None) -> Venue:
    """The venue one entry of EXCHANGES (or the single EXCHANGE) names: paper, or ccxt (its ``start()`` is the
    start check)."""
    if cfg.paper:
        from actors.venues.paper import PaperVenue

        return PaperVenue(settings, bus, books, pairs=cfg.pairs, name=cfg.name)
    # partitioned: every partition's order-router has a client of its own on the same account (and IP): each
    # spends 1/PARTITIONS of the order-router's share of the venue's request budget, and polls only the orders of
    # its own partition's pairs (the other partitions poll theirs)
    own = None
    if settings.PARTITIONS > 1 and settings.PARTITION is not None:
        own = tuple(p for p in cfg.pairs if owns(settings.PARTITION, settings.PARTITIONS, p))
    return make_ccxt_venue_of(cfg, share=ORDERS_SHARE / max(1, settings.PARTITIONS), own_pairs=own)


def make_venues(settings: Settings, bus: Bus, books: BookCache | None = None) -> list[Venue]:
    """Every venue of the deployment, in priority order."""
    return [make_venue_of(cfg, settings, bus, books) for cfg in venue_configs(settings)]


def make_venue(settings: Settings, bus: Bus, books: BookCache | None = None) -> Venue:
    """The first venue of the deployment (paper when PAPER_TRADING without EXCHANGES)."""
    return make_venue_of(venue_configs(settings)[0], settings, bus, books)
