"""The venues a deployment trades on: ``EXCHANGES`` (several at once) or the single ``EXCHANGE``.

``EXCHANGES=binance,alpaca,paper``: each entry is a venue name, which is also its ccxt exchange id (or
``paper``), or ``name=ccxtid`` for a second account or copy of one exchange (``bn2=binance``). Each
venue's settings sit under its name in upper case: ``BINANCE_API_KEY``, ``BINANCE_API_SECRET``,
``BINANCE_PASSWORD``, ``BINANCE_API_URL``, ``BINANCE_SANDBOX``, ``BINANCE_PAIRS`` (default ``PAIRS``),
``BINANCE_TIMEOUT_MS``, ``BINANCE_POLL_MS``, ``BINANCE_STREAM`` (defaults: the ``EXCHANGE_*`` ones), or in
a TOML section ``[binance]``. The specs' own names keep their meaning: ``BINANCE_TESTNET_API_KEY`` /
``BINANCE_TESTNET_SECRET`` are a binance venue's sandbox keys, ``ALPACA_API_KEY`` / ``ALPACA_API_SECRET``
an alpaca venue's keys. Without ``EXCHANGES`` the one venue is ``EXCHANGE`` with the ``EXCHANGE_*``
settings (paper when PAPER_TRADING). The order of the list is the venues' priority (ties of routing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config.settings import Settings

PAPER = "paper"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
# what a venue may set under its name (NAME_<KEY>)
VENUE_KEYS = ("API_KEY", "API_SECRET", "PASSWORD", "API_URL", "SANDBOX", "PAIRS", "TIMEOUT_MS", "POLL_MS", "STREAM")
SECRET_KEYS = frozenset({"API_KEY", "API_SECRET", "PASSWORD"})


@dataclass(frozen=True, slots=True)
class VenueConfig:
    name: str  # how orders, fills, books and the REST API name the venue ("exchange")
    ccxt_id: str  # the ccxt exchange id, or "paper"
    priority: int  # 0 first: the EXCHANGES order (routing ties)
    pairs: tuple[str, ...]
    api_key: str = ""
    api_secret: str = ""
    password: str = ""
    sandbox: bool = False
    api_url: str = ""
    timeout_ms: int = 10_000
    poll_ms: int = 1000
    stream: str = "auto"

    @property
    def paper(self) -> bool:
        return self.ccxt_id == PAPER

    def __repr__(self) -> str:  # never a secret in a log line
        return f"VenueConfig({self.name}={self.ccxt_id}, pairs={','.join(self.pairs)}, url={self.api_url or '-'})"


def parse_exchanges(raw: Any) -> tuple[str, ...]:
    """``EXCHANGES``: a comma-separated list (or a TOML list) of ``name`` or ``name=ccxtid``, normalised to lower
    case; names unique. Raises ValueError with what is allowed."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    out: list[str] = []
    names: set[str] = set()
    for item in items:
        entry = str(item).strip().lower().replace(" ", "")
        if not entry:
            continue
        name, _, ccxt_id = entry.partition("=")
        ccxt_id = ccxt_id or name
        if ccxt_id == "xeggex":
            from config.settings import XEGGEX_GONE

            raise ValueError(XEGGEX_GONE)
        if not NAME_RE.match(name) or not NAME_RE.match(ccxt_id):
            raise ValueError(
                f"a list of venue names such as binance,alpaca,paper or name=ccxtid (bn2=binance); {entry!r} is not"
            )
        if name == PAPER and ccxt_id != PAPER:
            raise ValueError(f"the name paper for the paper venue only; {entry!r} is not (name it otherwise)")
        if name in names:
            raise ValueError(f"each venue name once; {name!r} is listed twice")
        names.add(name)
        out.append(f"{name}={ccxt_id}" if ccxt_id != name else name)
    return tuple(out)


def split_entry(entry: str) -> tuple[str, str]:
    name, _, ccxt_id = entry.partition("=")
    return name, ccxt_id or name


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("true", "1", "yes", "on")


def venue_configs(s: Settings) -> list[VenueConfig]:
    """Every venue of the deployment, in priority order. Pure and cheap: the values were checked and normalised by
    the settings loader (``VENUE_SETTINGS``); what a venue does not set is the ``EXCHANGE_*`` default (timeout,
    poll, stream) or ``PAIRS``; keys fall back to the specs' own names (``ALPACA_API_KEY`` / ``_SECRET`` for an
    alpaca venue, ``BINANCE_TESTNET_API_KEY`` / ``_SECRET`` for a binance venue on its sandbox)."""
    if not s.EXCHANGES:
        if s.PAPER_TRADING or s.EXCHANGE == PAPER:
            return [VenueConfig(PAPER, PAPER, 0, s.PAIRS)]
        from config.settings import venue_credentials

        key, secret, password = venue_credentials(s)
        one = VenueConfig(
            name=s.EXCHANGE,
            ccxt_id=s.EXCHANGE,
            priority=0,
            pairs=s.PAIRS,
            api_key=key,
            api_secret=secret,
            password=password,
            sandbox=s.EXCHANGE_SANDBOX,
            api_url=s.EXCHANGE_API_URL,
            timeout_ms=s.EXCHANGE_TIMEOUT_MS,
            poll_ms=s.EXCHANGE_POLL_MS,
            stream=s.EXCHANGE_STREAM,
        )
        return [one]
    out = []
    for i, entry in enumerate(s.EXCHANGES):
        name, ccxt_id = split_entry(entry)
        own = s.VENUE_SETTINGS.get(name.upper(), {})
        pairs = tuple(p.strip().upper() for p in own["PAIRS"].split(",") if p.strip()) if own.get("PAIRS") else s.PAIRS
        if ccxt_id == PAPER:
            out.append(VenueConfig(PAPER if name == PAPER else name, PAPER, i, pairs))
            continue
        sandbox = _bool(own["SANDBOX"]) if "SANDBOX" in own else s.EXCHANGE_SANDBOX  # (never live by surprise)
        key, secret = own.get("API_KEY", ""), own.get("API_SECRET", "")
        if not (key or secret):  # the specs' own names
            if ccxt_id == "alpaca":
                key, secret = s.ALPACA_API_KEY, s.ALPACA_API_SECRET
            elif ccxt_id == "binance" and sandbox:
                key, secret = s.BINANCE_TESTNET_API_KEY, s.BINANCE_TESTNET_SECRET
        cfg = VenueConfig(
            name=name,
            ccxt_id=ccxt_id,
            priority=i,
            pairs=pairs,
            api_key=key,
            api_secret=secret,
            password=own.get("PASSWORD", ""),
            sandbox=sandbox,
            api_url=own.get("API_URL", ""),
            timeout_ms=int(own.get("TIMEOUT_MS", s.EXCHANGE_TIMEOUT_MS)),
            poll_ms=int(own.get("POLL_MS", s.EXCHANGE_POLL_MS)),
            stream=own.get("STREAM", s.EXCHANGE_STREAM),
        )
        out.append(cfg)
    return out


def environment_of(cfg: VenueConfig) -> str:
    """The environment whose keys a venue uses: testnet when its sandbox is on, else live."""
    return "testnet" if cfg.sandbox else "live"


def credential_venue_config(
    s: Settings, name: str, environment: str, environ: Mapping[str, str] | None = None
) -> VenueConfig:
    """The venue that keys of ``name`` / ``environment`` are checked against: a configured venue (EXCHANGES, or the
    live EXCHANGE) with its URL override, pairs and timeout; otherwise (paper mode, keys prepared before going
    live) the ccxt exchange ``name`` with ``NAME_API_URL`` / ``NAME_TIMEOUT_MS`` of the environment if set. The
    sandbox follows ``environment`` (testnet keys are checked on the venue's sandbox), never the venue's setting."""
    import os

    from config.settings import PARSERS, venue_variable

    sandbox = environment == "testnet"
    for cfg in venue_configs(s):
        if cfg.name == name and not cfg.paper:
            return replace(cfg, api_key="", api_secret="", password="", sandbox=sandbox)
    env = os.environ if environ is None else environ
    if name == s.EXCHANGE and s.EXCHANGE_API_URL:
        url = s.EXCHANGE_API_URL
    else:
        url = PARSERS["EXCHANGE_API_URL"](env.get(venue_variable(name, "API_URL"), ""))
    timeout = env.get(venue_variable(name, "TIMEOUT_MS"), "")
    return VenueConfig(
        name=name, ccxt_id=name, priority=0, pairs=s.PAIRS, sandbox=sandbox, api_url=url,
        timeout_ms=int(PARSERS["EXCHANGE_TIMEOUT_MS"](timeout)) if timeout else s.EXCHANGE_TIMEOUT_MS,
        stream="off",
    )  # fmt: skip


def venue_names(s: Settings) -> list[str]:
    return [v.name for v in venue_configs(s)]


def live_venues(s: Settings) -> list[VenueConfig]:
    return [v for v in venue_configs(s) if not v.paper]


def market_data_venues(s: Settings) -> list[VenueConfig]:
    """The venues whose books and trades the md-feed reads (MARKET_DATA=venue): every live venue; in paper mode
    the exchange PAPER_BOOKS names (a ccxt id), read without keys - paper trading on a real venue's prices."""
    if s.MARKET_DATA != "venue":
        return []
    live = live_venues(s)
    if live or not s.PAPER_BOOKS:
        return live
    return [VenueConfig(name=s.PAPER_BOOKS, ccxt_id=s.PAPER_BOOKS, priority=0, pairs=s.PAIRS)]
