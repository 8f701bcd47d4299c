"""Settings: one typed Struct read from environment variables and an optional TOML file.

Precedence: environment > TOML file (``TBX_CONFIG`` or ``--config``) > defaults. Every variable is
checked at start-up; a wrong value stops the service with one line naming the variable, the value
and what is allowed (``ConfigError``).
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec

from config.cores import default_run_processes
from config.venues import PAPER, SECRET_KEYS, VENUE_KEYS, parse_exchanges, split_entry
from domain.sizing import SIZING_METHODS
from schemas.subjects import PAIR_RE, PREFIX_RE

SECRET_FIELDS = frozenset(
    {
        "API_TOKEN",
        "EXCHANGE_API_KEY",
        "EXCHANGE_API_SECRET",
        "EXCHANGE_PASSWORD",
        "XEGGEX_API_KEY",
        "XEGGEX_API_SECRET",
        "ALPACA_API_KEY",
        "ALPACA_API_SECRET",
        "BINANCE_TESTNET_API_KEY",
        "BINANCE_TESTNET_SECRET",
        "CREDENTIAL_ENCRYPTION_KEY",
        "VAULT_TOKEN",
    }
)

URL_FIELDS = (
    "NATS_URL",
    "CORE_SERVICE_URL",
    "ML_SERVICE_URL",
    "RISK_SERVICE_URL",
    "EXCHANGE_API_URL",
    "VAULT_ENDPOINT",
)

XEGGEX_GONE = (
    "Xeggex shut down in 2025 and ccxt has no adapter for it; set EXCHANGE to a ccxt exchange id "
    "(for example binance, kraken, kucoin) with EXCHANGE_API_KEY / EXCHANGE_API_SECRET"
)


class ConfigError(ValueError):
    """A setting has a value that is not allowed. ``str()`` is the one line to print."""


class _Reason(ValueError):
    """A parser's refusal that is a whole sentence, not an 'expected ...' clause."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    # -- service --------------------------------------------------------------------------------
    PORT: int = 3004
    HOST: str = "127.0.0.1"
    NODE_ENV: str = "development"
    LOG_LEVEL: str = "INFO"
    DATA_DIR: str = "./data"
    API_TOKEN: str = ""
    CORS_ORIGINS: tuple[str, ...] = ("http://localhost:3005",)  # the dashboard; empty: no cross-origin calls
    MAX_BODY_BYTES: int = 1_048_576  # a larger request body is refused with 413
    # -- trading mode ---------------------------------------------------------------------------
    PAPER_TRADING: bool = True
    LIVE_TRADING: bool = False
    # -- exchange -------------------------------------------------------------------------------
    EXCHANGE: str = "paper"
    # several venues at once: "binance,alpaca,paper" or "paper,binance,bn2=binance" (name=ccxt id); each venue's
    # settings under its NAME in upper case (BINANCE_API_KEY, BN2_API_URL, ...; see config/venues.py). Wins over
    # EXCHANGE when both are set.
    EXCHANGES: tuple[str, ...] = ()
    # the per-venue settings read for the names in EXCHANGES: NAME -> {"API_KEY": ..., "PAIRS": ...}
    VENUE_SETTINGS: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    ROUTING: str = "best_price"  # an order naming no venue: best_price (fees included) or priority (EXCHANGES order)
    PAPER_BOOKS: str = ""  # the venue whose books the paper venue trades on (default: the first live venue listed)
    PRICE_EVENT_MS: int = 1000  # price events on /api/stream and /api/ws: at most one per pair and venue this often
    EXCHANGE_API_KEY: str = ""
    EXCHANGE_API_SECRET: str = ""
    EXCHANGE_PASSWORD: str = ""
    EXCHANGE_SANDBOX: bool = False
    EXCHANGE_API_URL: str = ""  # http(s)://host[:port]: replaces scheme and host of ccxt's REST URLs
    EXCHANGE_TIMEOUT_MS: int = 10_000  # ccxt's request timeout
    EXCHANGE_POLL_MS: int = 1000  # open orders and trades are polled this often when not streamed
    EXCHANGE_STREAM: str = "auto"  # auto: ccxt.pro watch_orders/watch_my_trades when offered, else polling; off
    XEGGEX_API_KEY: str = ""
    XEGGEX_API_SECRET: str = ""
    ALPACA_API_KEY: str = ""
    ALPACA_API_SECRET: str = ""
    BINANCE_TESTNET_API_KEY: str = ""
    BINANCE_TESTNET_SECRET: str = ""
    EXTERNAL_ORDERS: str = "adopt"  # orders placed at the venue outside this service: adopt (booked) or ignore
    VENUE_UNKNOWN_GRACE_MS: int = 60_000  # an order the venue does not know this long after it was sent: rejected
    RECONCILE_INTERVAL_MS: int = 10_000  # orders (and, live, balances) reconciled with the venue this often
    PAPER_TAKER_FEE: Decimal = Decimal("0.001")
    PAPER_MAKER_FEE: Decimal = Decimal("0.001")
    PAPER_MIN_NOTIONAL: Decimal = Decimal("1")
    PAPER_LATENCY_MS: int = 0
    PAPER_MARKETS: str = ""  # JSON: {"BTC_USDT": {"tickSize": "0.01", "amountStep": "0.00001", ...}}
    # -- credentials (config/credentials.py, config/credential_store.py) ----------------------------------
    CREDENTIAL_ENCRYPTION_KEY: str = ""  # 64 hex, hex:/base64: + 32 bytes: a raw key; else a passphrase (Scrypt)
    CREDENTIAL_STORE: str = "kv"  # where stored keys are kept: kv (JetStream KV <PREFIX>_CREDENTIALS) or file
    CREDENTIAL_FILE: str = ""  # CREDENTIAL_STORE=file: the file (empty: DATA_DIR/credentials.json)
    VAULT_ENABLED: bool = False  # keep the keys in Vault (or OpenBao) KV v2 instead
    VAULT_ENDPOINT: str = ""
    VAULT_TOKEN: str = ""
    VAULT_SECRET_PATH: str = "secret/data/trading-bot"
    # -- the other services of the family ------------------------------------------------------------
    CORE_SERVICE_URL: str = ""
    ML_SERVICE_URL: str = ""
    RISK_SERVICE_URL: str = ""
    RISK_SERVICE_TIMEOUT: int = 500  # ms; slower or down: the local rules decide
    ML_SERVICE_TIMEOUT: int = 500  # ms; slower or down: the confidence is left as it is
    ML_WEIGHT: Decimal = Decimal("0.5")  # how far the ML service's view moves a signal's confidence
    ML_SIGNAL_SOURCE: str = "ml_prediction"  # the ML service's own signals: not scored by it again
    # -- signals ----------------------------------------------------------------------------------
    MIN_CONFIDENCE: Decimal = Decimal("0.6")
    SOURCE_MIN_CONFIDENCE: str = ""  # JSON: {"ml_prediction": "0.7"}; other sources: MIN_CONFIDENCE
    SIGNAL_DEDUPE_WINDOW: int = 60_000  # ms: one executed signal per (source, pair, signal) in this time
    SIGNAL_AGGREGATION_WINDOW: int = 0  # ms: combine the sources' signals for a pair; 0: each acts alone
    SIGNAL_WEIGHTS: str = ""  # JSON: {"core": "1", "ml_prediction": "2"}; other sources weigh 1
    SIGNAL_ORDER_TYPE: str = "market"  # or limit: at SIGNAL_LIMIT_OFFSET_PERCENT from the mid; or twap / vwap
    SIGNAL_ALGO_DURATION_MS: int = 60_000  # SIGNAL_ORDER_TYPE twap / vwap: the schedule's length (algo.durationMs)
    SIGNAL_ALGO_SLICES: int = 10  # ... and its number of slices (algo.slices)
    SIGNAL_LIMIT_OFFSET_PERCENT: Decimal = Decimal("0.1")
    POSITION_SIZE_METHOD: str = "auto"  # auto: fixed_fractional with a stop, else fixed_notional
    RISK_PER_TRADE: Decimal = Decimal("0.02")  # of equity: what a signal risks (riskParameters.maxRiskPercent)
    DEFAULT_STOP_LOSS_PERCENT: Decimal = Decimal(2)  # with STOP_LOSS_ENABLED, when a signal gives none
    DEFAULT_TAKE_PROFIT_PERCENT: Decimal = Decimal(4)  # 0: no take-profit leg by default
    # -- order management -------------------------------------------------------------------------
    DEFAULT_ORDER_TIMEOUT: int = 300_000
    MAX_SLIPPAGE_PERCENT: Decimal = Decimal("0.5")
    MAX_SLIPPAGE_ALERT_BPS: Decimal = Decimal(0)  # an order this far (bps) from its arrival mid: warning; 0: off
    DEFAULT_TIME_IN_FORCE: str = "GTC"
    # -- risk -----------------------------------------------------------------------------------------
    ENABLE_RISK_CHECKS: bool = True
    MAX_POSITION_SIZE: Decimal = Decimal("0.25")
    MAX_DAILY_LOSS: Decimal = Decimal("0.05")
    STOP_LOSS_ENABLED: bool = True
    MAX_ORDERS_PER_SECOND: int = 50
    MAX_ORDER_NOTIONAL: Decimal = Decimal(0)  # in BASE_CURRENCY; 0: no limit
    ALLOW_SHORT: bool = False  # sell more base than is held (a venue with margin); spot: false
    CORRELATION_GROUPS: str = ""  # JSON: {"majors": {"pairs": ["BTC_USDT", "ETH_USDT"], "maxExposure": "0.4"}}
    TRADING_HOURS: str = ""  # "HH:MM-HH:MM" in TRADING_TIMEZONE; empty: always
    TRADING_TIMEZONE: str = "UTC"
    MAX_TOTAL_EXPOSURE: Decimal = Decimal(1)  # of equity, all pairs (1 = no leverage): the spec's maxLeverage
    MAX_DRAWDOWN: Decimal = Decimal(0)  # of peak equity; 0: no limit
    MIN_ACCOUNT_BALANCE: Decimal = Decimal(0)  # in BASE_CURRENCY: no opening order takes equity below it; 0: none
    PRICE_BAND_PERCENT: Decimal = Decimal(10)  # a limit price at most this far from the mid; 0: no band
    # -- paper to live (issue 18; domain/transition.py): fractions as the risk limits, stages in percent ----
    # where a deployment without a stored state starts: auto (paper beside live venues: paper; live venues only: live
    # at 100 %), true (paper), false (live venues: live at 100 %, even beside a paper venue)
    TRANSITION_REQUIRED: str = "auto"
    TRANSITION_APPROVAL: str = "manual"  # or auto: an initiate whose milestones are met goes live at once
    TRANSITION_MIN_WIN_RATE: Decimal = Decimal("0.6")  # fraction of round trips won
    TRANSITION_MIN_PROFIT_FACTOR: Decimal = Decimal("1.5")
    TRANSITION_MIN_SHARPE: Decimal = Decimal("1.0")  # 0: not required
    TRANSITION_MIN_TRADES: int = 50  # completed round trips in the evaluation period
    TRANSITION_MAX_DRAWDOWN: Decimal = Decimal("0.10")  # fraction of peak equity
    TRANSITION_MIN_DAYS: int = 30  # days of paper trading history required, over the whole paper record
    TRANSITION_EVALUATION_DAYS: int = 30  # the window the rates and drawdown are measured over; 0: the whole record
    TRANSITION_STAGES: tuple[Decimal, ...] = (Decimal(10), Decimal(25), Decimal(50), Decimal(100))  # percent
    TRANSITION_STAGE_DAYS: int = 7  # a stage's own window (live history) before the next stage
    TRANSITION_STAGE_MIN_TRADES: int = 20  # round trips in a stage's window before the next stage
    TRANSITION_LIVE_CAPITAL: Decimal = Decimal(0)  # the capital the stages' percents apply to; 0: the live equity
    TRANSITION_REVERT_DRAWDOWN: Decimal = Decimal("0.10")  # live drawdown since the stage began: back to paper
    TRANSITION_REVERT_DAILY_LOSS: Decimal = Decimal("0.05")  # live loss of the day: back to paper
    TRANSITION_REVERT_VENUE_GRACE_MS: int = 60_000  # a live venue down this long: back to paper
    TRANSITION_REVERT_POSITIONS: str = "keep"  # or flatten: close the live positions on a revert
    # -- portfolio ------------------------------------------------------------------------------------
    INITIAL_BALANCE: Decimal = Decimal("50000")
    BASE_CURRENCY: str = "USDT"
    CONVERSION_BRIDGE: str = "USDT"  # totals: X_BASE, else BASE_X, else through this currency
    CURRENCY_PRECISION: str = ""  # JSON: {"USDT": 2, "BTC": 8}; 8 decimals for the others
    BALANCE_DUST: str = ""  # a venue's balance this close to the ledger's agrees: JSON {"USDT": "0.01"}; see below
    POSITION_UPDATE_INTERVAL: int = 5000
    SNAPSHOT_INTERVAL: int = 30_000
    # -- bus and market data ------------------------------------------------------------------------
    NATS_URL: str = ""
    NATS_PORT: int | None = None  # the embedded nats-server's port; unset: 4222, or a free port when taken
    NATS_REPLICAS: int = 1
    # joining an existing NATS that asks for more than a URL (README "NATS accounts, TLS and credentials files")
    NATS_CREDS: str = ""  # a .creds file: the user's JWT and nkey seed (decentralised auth, accounts)
    NATS_NKEY_SEED: str = ""  # a file holding a user's nkey seed (SU...), for servers that list nkey users
    NATS_TLS_CA: str = ""  # CA certificates (PEM) that signed the servers' certificates
    NATS_TLS_CERT: str = ""  # a client certificate (PEM) for servers that verify clients (mutual TLS) ...
    NATS_TLS_KEY: str = ""  # ... and its private key
    PARTITIONS: int = 1  # pairs hashed into this many partitions (signal-intake, order-router, fill-tracker)
    PARTITION: int | None = None  # the partition a `tbx actor` of a partitioned actor serves (0..PARTITIONS-1)
    # `tbx run`'s worker processes (issue 22): 1 = everything in one process; unset/auto: 2 with >= 2 cores, else 1
    RUN_PROCESSES: int = msgspec.field(default_factory=default_run_processes)
    FAILOVER_MS: int = 2000  # a standby takes over within this long of the active's death (issue 19)
    BUS_PREFIX: str = "tbx"
    PAIRS: tuple[str, ...] = ("BTC_USDT", "ETH_USDT", "XMR_USDT", "RVN_USDT")
    MARKET_DATA: str = "synthetic"
    MARKET_DATA_SEED: int = 42
    MARKET_DATA_INTERVAL: int = 250
    SYNTHETIC_CLOCK: str = "wall"  # event: a pair's synthetic book steps on each order of it filled (md_feed.py)

    @property
    def replay_file(self) -> Path | None:
        return Path(self.MARKET_DATA[len("replay:") :]) if self.MARKET_DATA.startswith("replay:") else None

    def redacted(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self)
        for k in SECRET_FIELDS:
            if out.get(k):
                out[k] = "***"
        for k in URL_FIELDS:
            out[k] = hide_credentials(out[k])
        out["VENUE_SETTINGS"] = {
            venue: {
                key: "***" if key in SECRET_KEYS and value else hide_credentials(value) if key == "API_URL" else value
                for key, value in own.items()
            }
            for venue, own in self.VENUE_SETTINGS.items()
        }
        return out


# ------------------------------------------------------------------------------------------------------
# Parsers: each turns a raw value into the field's type or raises ValueError("what is allowed").
# ------------------------------------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    s = str(raw).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError("true or false")


def _transition_required(raw: Any) -> str:
    """TRANSITION_REQUIRED: auto, or true / false (any spelling _bool takes)."""
    if str(raw).strip().lower() == "auto":
        return "auto"
    try:
        return "true" if _bool(raw) else "false"
    except ValueError:
        raise ValueError("auto, true or false") from None


def _int(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    allowed = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"

    def parse(raw: Any) -> int:
        if isinstance(raw, bool):
            raise ValueError(allowed)
        try:
            v = int(str(raw).strip())
        except ValueError:
            raise ValueError(allowed) from None
        if v < lo or (hi is not None and v > hi):
            raise ValueError(allowed)
        return v

    return parse


def _dec(lo: Decimal, hi: Decimal | None = None, *, lo_open: bool = False) -> Callable[[Any], Decimal]:
    op = ">" if lo_open else ">="
    allowed = f"a number {op} {lo}" + ("" if hi is None else f" and <= {hi}")

    def parse(raw: Any) -> Decimal:
        if isinstance(raw, bool):
            raise ValueError(allowed)
        try:
            v = Decimal(str(raw).strip())
        except InvalidOperation:
            raise ValueError(allowed) from None
        if not v.is_finite() or v < lo or (lo_open and v == lo) or (hi is not None and v > hi):
            raise ValueError(allowed)
        return v

    return parse


def _slippage_alert(raw: Any) -> Decimal:
    """MAX_SLIPPAGE_ALERT_BPS: basis points above 0 up to 10000; empty or 0: no SLIPPAGE alerts."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return Decimal(0)
    try:
        return _dec(Decimal(0), Decimal(10000))(raw)
    except ValueError:
        raise ValueError("basis points from 0 (no alerts) to 10000, or empty (no alerts)") from None


def _choice(*options: str, upper: bool = False) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        s = str(raw).strip()
        s = s.upper() if upper else s
        if s not in options:
            raise ValueError("one of " + ", ".join(options))
        return s

    return parse


def _pattern(rx: re.Pattern[str], allowed: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        s = str(raw).strip()
        if not rx.match(s):
            raise ValueError(allowed)
        return s

    return parse


def _url(*schemes: str, allow_empty: bool = True) -> Callable[[Any], str]:
    allowed = " or ".join(f"{s}://host:port" for s in schemes) + (" (or empty)" if allow_empty else "")

    def parse(raw: Any) -> str:
        s = str(raw).strip()
        if not s and allow_empty:
            return ""
        parts = [p.strip() for p in s.split(",")] if "nats" in schemes else [s]
        for p in parts:
            m = re.match(r"^([a-z]+)://([^\s/@]+@)?[^\s/:@]+(?::(\d{1,5}))?(/.*)?$", p)
            if not m or m.group(1) not in schemes or (m.group(3) and not 0 < int(m.group(3)) <= 65535):
                raise ValueError(allowed)
        return s.rstrip("/") if "nats" not in schemes else s

    return parse


def _origins(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    out = tuple(dict.fromkeys(str(o).strip().rstrip("/") for o in items if str(o).strip()))
    for o in out:
        if o != "*" and not re.match(r"^https?://[^\s/:]+(:\d{1,5})?$", o):
            raise ValueError("a comma-separated list of origins such as http://localhost:3005 (or *), or empty")
    return out


def _optional_port(raw: Any) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _int(1, 65535)(raw)


def _run_processes(raw: Any) -> int:
    """RUN_PROCESSES: 1 to 64, or auto / empty: 2 when the machine has at least 2 usable cores, else 1."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "auto")):
        return default_run_processes()
    try:
        return _int(1, 64)(raw)
    except ValueError:
        raise ValueError("an integer from 1 to 64, or auto (2 with at least 2 cores, else 1)") from None


def _optional_partition(raw: Any) -> int | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _int(0, 63)(raw)


def _text(raw: Any) -> str:
    return str(raw).strip()


def _pairs(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    pairs = tuple(dict.fromkeys(str(p).strip().upper() for p in items if str(p).strip()))
    if not pairs or not all(PAIR_RE.match(p) for p in pairs):
        raise ValueError("a comma-separated list of pairs written BASE_QUOTE, e.g. BTC_USDT,ETH_USDT")
    return pairs


def _market_data(raw: Any) -> str:
    s = str(raw).strip()
    if s in ("synthetic", "none", "venue"):
        return s
    if s.startswith("replay:") and len(s) > len("replay:"):
        return s
    raise ValueError("synthetic, venue, none or replay:FILE")


class PaperMarket(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """Per-pair rules of the paper venue; what is left out takes the defaults."""

    tick_size: Decimal | None = None
    amount_step: Decimal | None = None
    min_notional: Decimal | None = None
    maker_fee: Decimal | None = None
    taker_fee: Decimal | None = None


def parse_paper_markets(raw: str) -> dict[str, PaperMarket]:
    return msgspec.json.decode(raw, type=dict[str, PaperMarket]) if raw.strip() else {}


def _paper_markets(raw: Any) -> str:
    s = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
    try:
        markets = parse_paper_markets(s)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ValueError(
            'a JSON object such as {"BTC_USDT": {"tickSize": "0.01", "amountStep": "0.00001", '
            f'"minNotional": "10", "makerFee": "0.0008", "takerFee": "0.001"}} ({e})'
        ) from None
    for pair, m in markets.items():
        if not PAIR_RE.match(pair):
            raise ValueError(f"pairs written BASE_QUOTE as keys, not {pair!r}")
        for name in ("tick_size", "amount_step"):
            v = getattr(m, name)
            if v is not None and (not v.is_finite() or v <= 0):
                raise ValueError(f"a positive {name} for {pair}")
        for name in ("min_notional", "maker_fee", "taker_fee"):
            v = getattr(m, name)
            if v is not None and (not v.is_finite() or v < (Decimal("-0.01") if name == "maker_fee" else 0)):
                raise ValueError(f"a non-negative {name} for {pair}")
    return s.strip()


def parse_currency_precision(raw: str) -> dict[str, int]:
    return msgspec.json.decode(raw, type=dict[str, int]) if raw.strip() else {}


def _currency_precision(raw: Any) -> str:
    s = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
    allowed = 'a JSON object of currency -> decimals (0 to 18), e.g. {"USDT": 2, "BTC": 8}'
    try:
        digits = parse_currency_precision(s)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ValueError(allowed) from None
    if not all(re.match(r"^[A-Z0-9]{2,20}$", c) and 0 <= d <= 18 for c, d in digits.items()):
        raise ValueError(allowed)
    return s.strip()


def parse_balance_dust(raw: str) -> dict[str, Decimal]:
    """BALANCE_DUST: currency -> the largest difference between the venue's balance and the ledger's
    that still agrees ("*": any other currency). A currency not named (and no "*"): one unit of its last
    decimal in CURRENCY_PRECISION (0.00000001 with the default 8 decimals)."""
    return msgspec.json.decode(raw, type=dict[str, Decimal]) if raw.strip() else {}


def _balance_dust(raw: Any) -> str:
    s = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
    allowed = (
        'a JSON object of currency (or "*" for any other) -> amount >= 0, e.g. {"USDT": "0.01", "*": "0.00000001"}'
    )
    try:
        dust = parse_balance_dust(s)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise ValueError(allowed) from None
    if not all((c == "*" or re.match(r"^[A-Z0-9]{2,20}$", c)) and v.is_finite() and v >= 0 for c, v in dust.items()):
        raise ValueError(allowed)
    return s.strip()


class CorrelationGroup(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pairs: list[str]
    max_exposure: Decimal


def parse_correlation_groups(raw: str) -> dict[str, CorrelationGroup]:
    return msgspec.json.decode(raw, type=dict[str, CorrelationGroup]) if raw.strip() else {}


def _correlation_groups(raw: Any) -> str:
    s = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
    allowed = 'a JSON object such as {"majors": {"pairs": ["BTC_USDT", "ETH_USDT"], "maxExposure": "0.4"}}'
    try:
        groups = parse_correlation_groups(s)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ValueError(f"{allowed} ({e})") from None
    for name, g in groups.items():
        if not g.pairs or not all(PAIR_RE.match(p) for p in g.pairs):
            raise ValueError(f"{allowed}: group {name!r} needs pairs written BASE_QUOTE")
        if not g.max_exposure.is_finite() or g.max_exposure <= 0:
            raise ValueError(f"{allowed}: group {name!r} needs a positive maxExposure")
    return s.strip()


def parse_source_numbers(raw: str) -> dict[str, Decimal]:
    return msgspec.json.decode(raw, type=dict[str, Decimal]) if raw.strip() else {}


def _source_numbers(example: str, hi: Decimal | None) -> Callable[[Any], str]:
    """A JSON object of signal source -> number (0..hi), e.g. SOURCE_MIN_CONFIDENCE, SIGNAL_WEIGHTS."""
    bound = f" from 0 to {hi}" if hi is not None else " >= 0"
    allowed = f'a JSON object of source -> number{bound}, e.g. {{"ml_prediction": "{example}"}}'

    def parse(raw: Any) -> str:
        s = raw if isinstance(raw, str) else msgspec.json.encode(raw).decode()
        try:
            values = parse_source_numbers(s)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise ValueError(allowed) from None
        if not all(v.is_finite() and v >= 0 and (hi is None or v <= hi) for v in values.values()):
            raise ValueError(allowed)
        return s.strip()

    return parse


def parse_trading_hours(raw: str) -> tuple[int, int] | None:
    """'09:00-16:00' -> (540, 960) minutes of the day; '' -> None (always)."""
    if not raw.strip():
        return None
    m = re.match(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$", raw.strip())
    if not m:
        raise ValueError("HH:MM-HH:MM (24 h), e.g. 09:00-16:00, or empty for always")
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if start == end:
        raise ValueError("a start and an end that differ")
    return start, end


def _trading_hours(raw: Any) -> str:
    parse_trading_hours(str(raw))
    return str(raw).strip()


def _timezone(raw: Any) -> str:
    import zoneinfo

    s = str(raw).strip()
    try:
        zoneinfo.ZoneInfo(s)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("an IANA time zone such as UTC or America/New_York") from None
    return s


PASSPHRASE_MIN = 16


def encryption_key_problem(value: str) -> str | None:
    """Why CREDENTIAL_ENCRYPTION_KEY's value is not allowed (None: empty, a raw key - 64 hex characters, or
    with a hex: / base64: prefix - or a passphrase of at least PASSPHRASE_MIN
    characters). The value itself is never part of the answer."""
    from config.key_format import KeyFormatError, raw_key_of

    s = value.strip()
    if not s:
        return None
    try:
        if raw_key_of(s) is not None:
            return None
    except KeyFormatError as e:
        return e.reason
    if len(s) < PASSPHRASE_MIN:
        return (
            "expected a key (64 hex characters, or base64: and the base64 of 32 bytes) or a passphrase of at least "
            f"{PASSPHRASE_MIN} characters"
        )
    return None


def _optional_path(raw: Any) -> str:
    s = str(raw).strip()
    if s and ("\x00" in s or s.endswith("/")):
        raise ValueError("a file path, not a directory (or empty)")
    return s


def _readable_file(raw: Any) -> str:
    """A file that must be there and readable now (empty: not used)."""
    s = _optional_path(raw)
    if s and not os.access(s, os.R_OK):
        why = "does not exist" if not os.path.exists(s) else "cannot be read by this user"
        raise _Reason(f"the file {why}")
    if s and os.path.isdir(s):
        raise _Reason("a directory, not a file")
    return s


def _secret_path(raw: Any) -> str:
    from config.key_format import split_secret_path

    s = str(raw).strip().strip("/")
    if not re.match(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$", s):
        raise ValueError("a Vault KV v2 path such as secret/data/trading-bot (mount, then the path under it)")
    split_secret_path(s)
    return s


def _exchange(raw: Any) -> str:
    s = str(raw).strip().lower()
    if s == "xeggex":
        raise _Reason(XEGGEX_GONE)
    if not re.match(r"^[a-z0-9_]{2,40}$", s):
        raise ValueError("paper, or a ccxt exchange id such as binance or kraken")
    return s


def _exchanges(raw: Any) -> tuple[str, ...]:
    """EXCHANGES: names of venues, each ``name`` (a ccxt id or paper) or ``name=ccxtid``; see config/venues.py."""
    try:
        return parse_exchanges(raw)
    except ValueError as e:
        if str(e) == XEGGEX_GONE:
            raise _Reason(XEGGEX_GONE) from None
        raise


def _paper_books(raw: Any) -> str:
    s = str(raw).strip().lower()
    if s and not re.match(r"^[a-z0-9_]{2,40}$", s):
        raise ValueError("the name of a venue in EXCHANGES, or empty")
    return s


def _api_base(raw: Any) -> str:
    """EXCHANGE_API_URL: empty, or http(s)://host[:port] with no path, query or credentials."""
    s = str(raw).strip().rstrip("/")
    if s and not re.match(r"^https?://[A-Za-z0-9.\-\[\]:]+$", s, re.IGNORECASE):
        raise ValueError("http://host:port or https://host:port with no path (or empty)")
    return s


def _stages(raw: Any) -> tuple[Decimal, ...]:
    """TRANSITION_STAGES: percents of the live capital, rising, each in (0, 100], the last 100."""
    allowed = "a comma-separated list of rising percents in (0, 100] ending with 100, e.g. 10,25,50,100"
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    try:
        out = tuple(Decimal(str(x).strip()) for x in items if str(x).strip())
    except ArithmeticError:
        raise ValueError(allowed) from None
    if not out or out[-1] != 100 or any(not (0 < x <= 100) or not x.is_finite() for x in out):
        raise ValueError(allowed)
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(allowed)
    return out


PARSERS: dict[str, Callable[[Any], Any]] = {
    "PORT": _int(1, 65535),
    "HOST": _pattern(re.compile(r"^[A-Za-z0-9.:\-\[\]]+$"), "a host name or IP address"),
    "NODE_ENV": _choice("development", "production", "test"),
    "LOG_LEVEL": _choice("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL", upper=True),
    "DATA_DIR": _pattern(re.compile(r"^\S.*$"), "a directory path"),
    "API_TOKEN": _text,
    "CORS_ORIGINS": _origins,
    "MAX_BODY_BYTES": _int(1024, 64 * 1_048_576),
    "PAPER_TRADING": _bool,
    "LIVE_TRADING": _bool,
    "EXCHANGE": _exchange,
    "EXCHANGES": _exchanges,
    "ROUTING": _choice("best_price", "priority"),
    "PAPER_BOOKS": _paper_books,
    "PRICE_EVENT_MS": _int(50, 3_600_000),
    "EXCHANGE_API_KEY": _text,
    "EXCHANGE_API_SECRET": _text,
    "EXCHANGE_PASSWORD": _text,
    "EXCHANGE_SANDBOX": _bool,
    "EXCHANGE_API_URL": _api_base,
    "EXCHANGE_TIMEOUT_MS": _int(100, 600_000),
    "EXCHANGE_POLL_MS": _int(50, 600_000),
    "EXCHANGE_STREAM": _choice("auto", "off"),
    "XEGGEX_API_KEY": _text,
    "XEGGEX_API_SECRET": _text,
    "ALPACA_API_KEY": _text,
    "ALPACA_API_SECRET": _text,
    "BINANCE_TESTNET_API_KEY": _text,
    "BINANCE_TESTNET_SECRET": _text,
    "EXTERNAL_ORDERS": _choice("adopt", "ignore"),
    "VENUE_UNKNOWN_GRACE_MS": _int(1_000, 86_400_000),
    "RECONCILE_INTERVAL_MS": _int(100, 3_600_000),
    "PAPER_TAKER_FEE": _dec(Decimal(0), Decimal("0.1")),
    "PAPER_MAKER_FEE": _dec(Decimal("-0.01"), Decimal("0.1")),
    "PAPER_MIN_NOTIONAL": _dec(Decimal(0)),
    "PAPER_LATENCY_MS": _int(0, 60_000),
    "PAPER_MARKETS": _paper_markets,
    "CREDENTIAL_ENCRYPTION_KEY": _text,  # a secret: checked in _check_together, never shown
    "CREDENTIAL_STORE": _choice("kv", "file"),
    "CREDENTIAL_FILE": _optional_path,
    "VAULT_ENABLED": _bool,
    "VAULT_ENDPOINT": _url("http", "https"),
    "VAULT_TOKEN": _text,
    "VAULT_SECRET_PATH": _secret_path,
    "CORE_SERVICE_URL": _url("http", "https"),
    "ML_SERVICE_URL": _url("http", "https"),
    "RISK_SERVICE_URL": _url("http", "https"),
    "RISK_SERVICE_TIMEOUT": _int(10, 60_000),
    "ML_SERVICE_TIMEOUT": _int(10, 60_000),
    "ML_WEIGHT": _dec(Decimal(0), Decimal(1)),
    "ML_SIGNAL_SOURCE": _pattern(re.compile(r"^\S{1,64}$"), "a source name (no spaces)"),
    "MIN_CONFIDENCE": _dec(Decimal(0), Decimal(1)),
    "SOURCE_MIN_CONFIDENCE": _source_numbers("0.7", Decimal(1)),
    "SIGNAL_DEDUPE_WINDOW": _int(0, 86_400_000),
    "SIGNAL_AGGREGATION_WINDOW": _int(0, 3_600_000),
    "SIGNAL_WEIGHTS": _source_numbers("2", None),
    "SIGNAL_ORDER_TYPE": _choice("market", "limit", "twap", "vwap"),
    "SIGNAL_ALGO_DURATION_MS": _int(1, 604_800_000),
    "SIGNAL_ALGO_SLICES": _int(1, 10_000),
    "SIGNAL_LIMIT_OFFSET_PERCENT": _dec(Decimal(0), Decimal(50)),
    "POSITION_SIZE_METHOD": _choice("auto", *SIZING_METHODS),
    "RISK_PER_TRADE": _dec(Decimal(0), Decimal(1), lo_open=True),
    "DEFAULT_STOP_LOSS_PERCENT": _dec(Decimal(0), Decimal(99), lo_open=True),
    "DEFAULT_TAKE_PROFIT_PERCENT": _dec(Decimal(0), Decimal(1000)),
    "DEFAULT_ORDER_TIMEOUT": _int(0),
    "MAX_SLIPPAGE_PERCENT": _dec(Decimal(0), Decimal(100)),
    "MAX_SLIPPAGE_ALERT_BPS": _slippage_alert,
    "DEFAULT_TIME_IN_FORCE": _choice("GTC", "IOC", "FOK", "GTD", upper=True),
    "ENABLE_RISK_CHECKS": _bool,
    "MAX_POSITION_SIZE": _dec(Decimal(0), Decimal(1), lo_open=True),
    "MAX_DAILY_LOSS": _dec(Decimal(0), Decimal(1), lo_open=True),
    "STOP_LOSS_ENABLED": _bool,
    "MAX_ORDERS_PER_SECOND": _int(1, 1_000_000),
    "MAX_ORDER_NOTIONAL": _dec(Decimal(0)),
    "ALLOW_SHORT": _bool,
    "CORRELATION_GROUPS": _correlation_groups,
    "TRADING_HOURS": _trading_hours,
    "TRADING_TIMEZONE": _timezone,
    "MAX_TOTAL_EXPOSURE": _dec(Decimal(0), Decimal(100), lo_open=True),
    "MAX_DRAWDOWN": _dec(Decimal(0), Decimal(1)),
    "MIN_ACCOUNT_BALANCE": _dec(Decimal(0)),
    "PRICE_BAND_PERCENT": _dec(Decimal(0), Decimal(1000)),
    "TRANSITION_REQUIRED": _transition_required,
    "TRANSITION_APPROVAL": _choice("manual", "auto"),
    "TRANSITION_MIN_WIN_RATE": _dec(Decimal(0), Decimal(1)),
    "TRANSITION_MIN_PROFIT_FACTOR": _dec(Decimal(0), Decimal(1000)),
    "TRANSITION_MIN_SHARPE": _dec(Decimal(0), Decimal(100)),
    "TRANSITION_MIN_TRADES": _int(0, 1_000_000),
    "TRANSITION_MAX_DRAWDOWN": _dec(Decimal(0), Decimal(1)),
    "TRANSITION_MIN_DAYS": _int(0, 3650),
    "TRANSITION_EVALUATION_DAYS": _int(0, 3650),
    "TRANSITION_STAGES": _stages,
    "TRANSITION_STAGE_DAYS": _int(0, 3650),
    "TRANSITION_STAGE_MIN_TRADES": _int(0, 1_000_000),
    "TRANSITION_LIVE_CAPITAL": _dec(Decimal(0)),
    "TRANSITION_REVERT_DRAWDOWN": _dec(Decimal(0), Decimal(1), lo_open=True),
    "TRANSITION_REVERT_DAILY_LOSS": _dec(Decimal(0), Decimal(1), lo_open=True),
    "TRANSITION_REVERT_VENUE_GRACE_MS": _int(1_000, 86_400_000),
    "TRANSITION_REVERT_POSITIONS": _choice("keep", "flatten"),
    "INITIAL_BALANCE": _dec(Decimal(0), lo_open=True),
    "CURRENCY_PRECISION": _currency_precision,
    "BALANCE_DUST": _balance_dust,
    "BASE_CURRENCY": _pattern(re.compile(r"^[A-Z0-9]{2,20}$"), "an upper-case currency code such as USDT"),
    "CONVERSION_BRIDGE": _pattern(re.compile(r"^[A-Z0-9]{2,20}$"), "an upper-case currency code such as USDT"),
    "POSITION_UPDATE_INTERVAL": _int(100),
    "SNAPSHOT_INTERVAL": _int(100, 86_400_000),
    "NATS_URL": _url("nats", "tls", "ws", "wss"),
    "NATS_PORT": _optional_port,
    "NATS_REPLICAS": _int(1, 5),
    "NATS_CREDS": _readable_file,
    "NATS_NKEY_SEED": _readable_file,
    "NATS_TLS_CA": _readable_file,
    "NATS_TLS_CERT": _readable_file,
    "NATS_TLS_KEY": _readable_file,
    "PARTITIONS": _int(1, 64),
    "PARTITION": _optional_partition,
    "RUN_PROCESSES": _run_processes,
    "FAILOVER_MS": _int(300, 3_600_000),
    "BUS_PREFIX": _pattern(PREFIX_RE, "1 to 32 letters, digits, '_' or '-'"),
    "PAIRS": _pairs,
    "MARKET_DATA": _market_data,
    "MARKET_DATA_SEED": _int(0),
    "MARKET_DATA_INTERVAL": _int(10, 60_000),
    "SYNTHETIC_CLOCK": _choice("wall", "event"),
}
# Fields the loader fills itself, never set by name: VENUE_SETTINGS is read from the NAME_<KEY> variables and the
# TOML sections of the venues listed in EXCHANGES (VENUE_PARSERS below), not from a variable VENUE_SETTINGS.
DERIVED_FIELDS = frozenset({"VENUE_SETTINGS"})
assert not set(PARSERS) & DERIVED_FIELDS, "a derived field is not a variable"
assert set(PARSERS) | DERIVED_FIELDS == set(Settings.__struct_fields__), "every setting needs a parser"

# What a venue of EXCHANGES may set under its name (``BINANCE_API_URL``, ``[binance] api_url``): the same rules as
# its EXCHANGE_* twin (PAIRS: as PAIRS).
VENUE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "API_KEY": _text,
    "API_SECRET": _text,
    "PASSWORD": _text,
    "API_URL": PARSERS["EXCHANGE_API_URL"],
    "SANDBOX": PARSERS["EXCHANGE_SANDBOX"],
    "PAIRS": PARSERS["PAIRS"],
    "TIMEOUT_MS": PARSERS["EXCHANGE_TIMEOUT_MS"],
    "POLL_MS": PARSERS["EXCHANGE_POLL_MS"],
    "STREAM": PARSERS["EXCHANGE_STREAM"],
}


def hide_credentials(url: str) -> str:
    """``nats://user:secret@host`` -> ``nats://***@host`` (for logs and error messages)."""
    return re.sub(r"(://)[^\s/@,]+@", r"\1***@", url)


def without_credentials(url: str) -> str:
    """``nats://user:secret@host:4222`` -> ``nats://host:4222`` (each URL of a comma-separated list): what
    may be shown to anyone, in an answer or a file."""
    out = []
    for part in url.split(","):
        scheme, sep, rest = part.partition("://")
        if sep:
            authority, slash, path = rest.partition("/")
            rest = authority.rpartition("@")[2] + slash + path
        out.append(scheme + sep + rest)
    return ",".join(out)


def _is_secret(name: str) -> bool:
    """A setting or a venue's NAME_API_KEY / NAME_API_SECRET / NAME_PASSWORD."""
    return name in SECRET_FIELDS or any(name.endswith("_" + key) for key in SECRET_KEYS)


def _show(name: str, raw: Any) -> str:
    if _is_secret(name):
        return "'***'"
    return repr(hide_credentials(str(raw)) if name in URL_FIELDS or name.endswith("_API_URL") else str(raw))


DOTENV_FILE = ".env"


def read_environment(
    directory: str | Path = ".", config_file: str | Path | None = None
) -> tuple[dict[str, str], list[str]]:
    """The environment to read settings from: ``.env`` in ``directory`` (the working directory), if there is
    one, overlaid by the process environment (a variable set in the environment wins over the file).

    The file is read with python-dotenv, literally (no ``${VAR}`` expansion). Returns the merged mapping and
    warnings: names in the file that are not settings (a typo would otherwise be ignored in silence). The
    NAME_<KEY> variables of the venues listed in EXCHANGES (here, or in the TOML file ``config_file`` /
    ``TBX_CONFIG``) are settings."""
    from dotenv import dotenv_values

    path = Path(directory) / DOTENV_FILE
    from_file: dict[str, str] = {}
    if path.is_file():
        try:
            values = dotenv_values(path, interpolate=False, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{str(path)!r}: cannot read the file ({e})") from None
        from_file = {k: v for k, v in values.items() if v is not None}
    merged = {**from_file, **os.environ}
    venue_vars = {venue_variable(name, key) for name in _listed_venues(merged, config_file) for key in VENUE_KEYS}
    unknown = sorted(set(from_file) - set(PARSERS) - {"TBX_CONFIG"} - venue_vars)
    warnings = (
        [f"{path}: not settings, ignored: {', '.join(unknown)} (the settings are the variables of .env.example)"]
        if unknown
        else []
    )
    return merged, warnings


def _listed_venues(env: Mapping[str, str], config_file: str | Path | None) -> list[str]:
    """The venue names of EXCHANGES as the loader will read them (environment, else the TOML file); nothing when
    EXCHANGES cannot be read (the loader then says why)."""
    raw: Any = env.get("EXCHANGES")
    path = config_file or env.get("TBX_CONFIG")
    if raw is None and path:
        try:
            data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return []
        raw = next((v for k, v in data.items() if k.upper() == "EXCHANGES"), None)
    try:
        return [split_entry(e)[0] for e in parse_exchanges(raw)] if raw is not None else []
    except ValueError:
        return []


def venue_variable(name: str, key: str) -> str:
    """The variable of a venue's setting: (bn2, API_URL) -> BN2_API_URL."""
    return f"{name.upper()}_{key}"


def load_settings(env: Mapping[str, str] | None = None, config_file: str | Path | None = None) -> Settings:
    """Read the settings. Raises ConfigError with one line for the first wrong value."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    others: dict[str, Any] = {}  # keys of the file that are not settings: venue sections, venue variables
    path = config_file or env.get("TBX_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_bytes().decode("utf-8"))
        except OSError as e:
            raise ConfigError(f"TBX_CONFIG={str(path)!r}: cannot read the file ({e.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"TBX_CONFIG={str(path)!r}: not valid TOML (the file is not UTF-8)") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"TBX_CONFIG={str(path)!r}: not valid TOML ({e})") from None
        for key, value in data.items():
            name = key.upper()
            if name in PARSERS:
                raw[name] = value
            else:
                others[key] = value
    for name in PARSERS:
        if name in env:
            raw[name] = env[name]

    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _parse(PARSERS[name], name, value)
    exchanges: tuple[str, ...] = values.get("EXCHANGES", ())
    values["VENUE_SETTINGS"] = _venue_settings(exchanges, env, others, str(path))
    live_listed = any(split_entry(e)[1] != PAPER for e in exchanges)
    if (values.get("LIVE_TRADING") or live_listed) and "MARKET_DATA" not in values:
        values["MARKET_DATA"] = "venue"  # live: the venues' own books, never synthetic prices
    settings = Settings(**values)
    _check_together(settings)
    return settings


def _parse(parse: Callable[[Any], Any], name: str, value: Any) -> Any:
    try:
        return parse(value)
    except _Reason as e:
        raise ConfigError(f"{name}={_show(name, value)} is not allowed: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{name}={_show(name, value)} is not allowed: expected {e}") from None


def _as_text(value: Any) -> str:
    """A venue setting's parsed value as VENUE_SETTINGS keeps it: true/false, digits, comma-separated pairs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _venue_settings(
    exchanges: tuple[str, ...], env: Mapping[str, str], others: dict[str, Any], path: str
) -> dict[str, dict[str, str]]:
    """VENUE_SETTINGS: for each venue of EXCHANGES, its NAME_<KEY> variables (environment first), else the same
    names in the TOML file, else its TOML section ``[name]`` (``api_key = "..."``), each checked like its
    EXCHANGE_* twin and kept as normalised text. An empty value is no value (the default applies). The file's
    keys that are neither settings nor a listed venue's are refused, naming them."""
    venues = [split_entry(e) for e in exchanges]
    names = [name for name, _ in venues]
    listed = ", ".join(names) or "none"
    for name, ccxt_id in venues:
        clash = [venue_variable(name, k) for k in VENUE_KEYS if venue_variable(name, k) in PARSERS]
        if clash and not (name == ccxt_id == "alpaca"):  # ALPACA_API_KEY / _SECRET: the alpaca venue's own keys
            raise ConfigError(
                f"EXCHANGES={','.join(exchanges)!r} is not allowed: the venue name {name!r} would read "
                f"{', '.join(clash)}, which are other settings; expected another name (e.g. {name}2={ccxt_id})"
            )
    variables = {venue_variable(name, k): (name, k) for name in names for k in VENUE_KEYS}
    flat: dict[str, tuple[str, Any]] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in others.items():
        if isinstance(value, dict) and key.lower() in names and key.lower() not in sections:
            sections[key.lower()] = value
        elif not isinstance(value, dict) and key.upper() in variables and key.upper() not in flat:
            flat[key.upper()] = (key, value)
        elif isinstance(value, dict):
            raise ConfigError(
                f"{key!r} in {path!r}: unknown setting; a section [name] is allowed only for a venue listed in "
                f"EXCHANGES (listed: {listed}), once"
            )
        else:
            raise ConfigError(
                f"{key!r} in {path!r}: unknown setting; allowed are the variables of .env.example and NAME_<KEY> "
                f"of a venue listed in EXCHANGES (listed: {listed}), once"
            )
    from_sections: dict[str, Any] = {}
    for name, table in sections.items():
        for key, value in table.items():
            k = key.upper()
            if k not in VENUE_KEYS or isinstance(value, dict):
                raise ConfigError(
                    f"{key!r} in [{name}] of {path!r}: unknown venue setting; allowed are "
                    f"{', '.join(k.lower() for k in VENUE_KEYS)}"
                )
            var = venue_variable(name, k)
            if var in flat or var in from_sections:
                raise ConfigError(
                    f"{var} is set twice in {path!r}: as {flat[var][0] if var in flat else var!r} and in [{name}]"
                )
            from_sections[var] = value
    out: dict[str, dict[str, str]] = {}
    for name, ccxt_id in venues:
        own: dict[str, str] = {}
        for k in VENUE_KEYS:
            var = venue_variable(name, k)
            if var in env:
                value: Any = env[var]
            elif var in flat:
                value = flat[var][1]
            elif var in from_sections:
                value = from_sections[var]
            else:
                continue
            if isinstance(value, str) and not value.strip():
                continue  # empty: not set
            if ccxt_id == PAPER and k != "PAIRS":
                raise ConfigError(
                    f"{var}={_show(var, value)} is not allowed: {name} is the paper venue, which takes only "
                    f"{venue_variable(name, 'PAIRS')} (no keys, URL or connection settings)"
                )
            own[k] = _as_text(_parse(VENUE_PARSERS[k], var, value))
        if own:
            out[name.upper()] = own
    return out


def _check_together(s: Settings) -> None:
    if s.PARTITION is not None and s.PARTITION >= s.PARTITIONS:
        raise ConfigError(
            f"PARTITION={s.PARTITION} is not allowed with PARTITIONS={s.PARTITIONS}: expected 0..{s.PARTITIONS - 1}"
        )
    if s.LIVE_TRADING and s.PAPER_TRADING:
        raise ConfigError(
            "LIVE_TRADING='true' is not allowed together with PAPER_TRADING='true': "
            "set PAPER_TRADING=false to trade live, or LIVE_TRADING=false to paper trade"
        )
    if not s.LIVE_TRADING and not s.PAPER_TRADING:
        raise ConfigError("PAPER_TRADING='false' is not allowed with LIVE_TRADING='false': one trading mode must be on")
    if s.EXCHANGES:
        _check_venue_modes(s)
    elif s.LIVE_TRADING and s.EXCHANGE == "paper":
        raise ConfigError(
            "EXCHANGE='paper' is not allowed with LIVE_TRADING=true: expected a ccxt exchange id such as binance"
        )
    if s.LIVE_TRADING and not s.API_TOKEN:
        raise ConfigError("API_TOKEN='' is not allowed with LIVE_TRADING=true: expected a secret token")
    if bool(s.NATS_TLS_CERT) != bool(s.NATS_TLS_KEY):
        have, lack = ("NATS_TLS_CERT", "NATS_TLS_KEY") if s.NATS_TLS_CERT else ("NATS_TLS_KEY", "NATS_TLS_CERT")
        raise ConfigError(f"{lack} is not set: {have} needs it (a client certificate and its key go together)")
    if s.NATS_CREDS and s.NATS_NKEY_SEED:
        raise ConfigError(
            "NATS_NKEY_SEED is not allowed together with NATS_CREDS: a .creds file holds the user's seed already"
        )
    problem = encryption_key_problem(s.CREDENTIAL_ENCRYPTION_KEY)
    if problem:
        raise ConfigError(f"CREDENTIAL_ENCRYPTION_KEY='***' is not allowed: {problem}")
    if s.VAULT_ENABLED and not (s.VAULT_ENDPOINT and s.VAULT_TOKEN):
        missing = " and ".join(n for n in ("VAULT_ENDPOINT", "VAULT_TOKEN") if not getattr(s, n))
        raise ConfigError(
            f"{missing} {'is' if ' and ' not in missing else 'are'} not set: VAULT_ENABLED=true needs the Vault "
            "server's address (VAULT_ENDPOINT, e.g. http://127.0.0.1:8200) and a token (VAULT_TOKEN)"
        )
    if s.LIVE_TRADING and not s.EXCHANGES and s.XEGGEX_API_KEY and not s.EXCHANGE_API_KEY:
        raise ConfigError(f"XEGGEX_API_KEY='***' is not allowed: {XEGGEX_GONE}")
    # a live venue listed <=> LIVE_TRADING (checked above for EXCHANGES; EXCHANGE=paper is refused when live)
    if s.LIVE_TRADING and s.MARKET_DATA == "synthetic":
        raise ConfigError(
            "MARKET_DATA='synthetic' is not allowed with LIVE_TRADING=true: expected venue (the venue's books, the "
            "default when trading live), none (an outside publisher of tbx.md.book) or replay:FILE"
        )
    if not s.LIVE_TRADING and s.MARKET_DATA == "venue" and not s.PAPER_BOOKS:
        raise ConfigError(
            "MARKET_DATA='venue' is not allowed in paper mode without PAPER_BOOKS: expected synthetic, none or "
            "replay:FILE (the paper venue has no books of its own), or PAPER_BOOKS=<a ccxt exchange id such as "
            "binance> to paper trade on that exchange's public books"
        )
    if s.EXCHANGES:
        _check_venues(s)
    elif s.LIVE_TRADING and not all(venue_credentials(s)[:2]):
        key, secret = ("ALPACA_API_KEY", "ALPACA_API_SECRET") if s.EXCHANGE == "alpaca" else (
            ("BINANCE_TESTNET_API_KEY", "BINANCE_TESTNET_SECRET") if s.EXCHANGE == "binance" and s.EXCHANGE_SANDBOX
            else (None, None)
        )  # fmt: skip
        also = f" (or {key} / {secret})" if key else ""
        raise ConfigError(
            f"EXCHANGE_API_KEY / EXCHANGE_API_SECRET are not set: LIVE_TRADING=true on {s.EXCHANGE} needs the "
            f"venue's keys{also}"
        )
    if s.PAPER_BOOKS:
        from config.venues import live_venues

        live = [v.name for v in live_venues(s)] if s.EXCHANGES else []
        # paper mode: any venue name (an exchange read without keys with MARKET_DATA=venue, or books another
        # deployment or an outside publisher names so); with live venues listed, one of them
        if live and s.PAPER_BOOKS not in live:
            raise ConfigError(
                f"PAPER_BOOKS={s.PAPER_BOOKS!r} is not allowed: expected a live venue listed in EXCHANGES "
                f"({', '.join(live) or 'none is listed'})"
            )
    if s.BASE_CURRENCY not in {p.split("_")[1] for p in s.PAIRS}:
        raise ConfigError(
            f"PAIRS={','.join(s.PAIRS)!r} is not allowed with BASE_CURRENCY={s.BASE_CURRENCY!r}: "
            f"expected at least one pair quoted in {s.BASE_CURRENCY}"
        )
    if s.HOST not in ("127.0.0.1", "localhost", "::1") and not s.API_TOKEN:
        raise ConfigError(
            f"HOST={s.HOST!r} is not allowed without API_TOKEN: expected 127.0.0.1 (or set API_TOKEN to "
            "serve other addresses)"
        )


def _check_venue_modes(s: Settings) -> None:
    """EXCHANGES and the trading mode: a live venue needs LIVE_TRADING=true, LIVE_TRADING=true a live venue.
    Several paper venues may be listed (``alpha=paper,beta=paper``: each its own books and store)."""
    listed = ",".join(s.EXCHANGES)
    venues = [split_entry(e) for e in s.EXCHANGES]
    live = [name for name, ccxt_id in venues if ccxt_id != PAPER]
    if live and not s.LIVE_TRADING:
        raise ConfigError(
            f"EXCHANGES={listed!r} is not allowed without LIVE_TRADING=true: {', '.join(live)} "
            f"{'is a live venue' if len(live) == 1 else 'are live venues'}; set LIVE_TRADING=true and "
            "PAPER_TRADING=false to trade on it, or list only paper"
        )
    if not live and s.LIVE_TRADING:
        raise ConfigError(
            f"EXCHANGES={listed!r} is not allowed with LIVE_TRADING=true: expected at least one live venue (a ccxt "
            "exchange id such as binance)"
        )


def _check_venues(s: Settings) -> None:
    """Each venue of EXCHANGES: its keys when live, its pairs within PAIRS, one account listed once."""
    from config.venues import venue_configs

    venues = venue_configs(s)
    for v in venues:
        if v.paper or (v.api_key and v.api_secret):
            continue
        own = s.VENUE_SETTINGS.get(v.name.upper(), {})
        key, secret = venue_variable(v.name, "API_KEY"), venue_variable(v.name, "API_SECRET")
        if own.get("API_KEY") or own.get("API_SECRET"):  # one of the two
            missing = secret if own.get("API_KEY") else key
            raise ConfigError(
                f"{missing} is not set: LIVE_TRADING=true on {v.name} needs the venue's key and secret "
                f"({key} / {secret})"
            )
        also = ""
        if v.ccxt_id == "binance":
            sandbox = "" if v.sandbox else f", with {venue_variable(v.name, 'SANDBOX')}=true,"
            also = f" (or{sandbox} BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_SECRET)"
        elif v.ccxt_id == "alpaca" and v.name != "alpaca":
            also = " (or ALPACA_API_KEY / ALPACA_API_SECRET)"
        raise ConfigError(f"{key} / {secret} are not set: LIVE_TRADING=true on {v.name} needs the venue's keys{also}")
    for v in venues:
        extra = [p for p in v.pairs if p not in s.PAIRS]
        if extra:
            var = venue_variable(v.name, "PAIRS")
            raise ConfigError(
                f"{var}={','.join(v.pairs)!r} is not allowed: {', '.join(extra)} "
                f"{'is' if len(extra) == 1 else 'are'} not in PAIRS ({','.join(s.PAIRS)}); a venue trades pairs "
                "of PAIRS only (risk limits and market data are kept per pair of PAIRS): add them to PAIRS"
            )
    seen: dict[tuple[str, str, bool, str], str] = {}
    for v in venues:
        if v.paper:
            continue
        account = (v.ccxt_id, v.api_key, v.sandbox, v.api_url)
        if account in seen:
            raise ConfigError(
                f"EXCHANGES={','.join(s.EXCHANGES)!r} is not allowed: {seen[account]} and {v.name} are one account "
                f"({v.ccxt_id}, the same API key and URL), whose balance would be counted twice; list it once"
            )
        seen[account] = v.name


def venue_credentials(s: Settings) -> tuple[str, str, str]:
    """The live venue's (api key, secret, password): EXCHANGE_API_KEY / _SECRET / _PASSWORD, else the
    specs' own names for the venue (ALPACA_API_KEY / _SECRET on alpaca, BINANCE_TESTNET_API_KEY / _SECRET on
    the binance sandbox)."""
    if s.EXCHANGE_API_KEY or s.EXCHANGE_API_SECRET:
        return s.EXCHANGE_API_KEY, s.EXCHANGE_API_SECRET, s.EXCHANGE_PASSWORD
    if s.EXCHANGE == "alpaca":
        return s.ALPACA_API_KEY, s.ALPACA_API_SECRET, ""
    if s.EXCHANGE == "binance" and s.EXCHANGE_SANDBOX:
        return s.BINANCE_TESTNET_API_KEY, s.BINANCE_TESTNET_SECRET, ""
    return "", "", ""


def warnings_for(s: Settings) -> list[str]:
    """Things that are allowed but that an operator should hear about at start-up."""
    out = []
    if s.XEGGEX_API_KEY or s.XEGGEX_API_SECRET:
        out.append(f"XEGGEX_API_KEY/SECRET are set but ignored: {XEGGEX_GONE}")
    if s.EXCHANGES:
        if s.EXCHANGE != "paper":
            out.append(
                f"EXCHANGE={s.EXCHANGE!r} is ignored: EXCHANGES={','.join(s.EXCHANGES)!r} is set and wins (the "
                "venues are those of EXCHANGES, each with its NAME_* settings)"
            )
        single = [
            name
            for name in ("EXCHANGE_API_KEY", "EXCHANGE_API_SECRET", "EXCHANGE_PASSWORD", "EXCHANGE_API_URL")
            if getattr(s, name)
        ]
        if single:
            out.append(
                f"{', '.join(single)} {'is' if len(single) == 1 else 'are'} ignored: EXCHANGES is set, and each "
                "venue has its own (NAME_API_KEY, NAME_API_SECRET, NAME_PASSWORD, NAME_API_URL)"
            )
        if s.PAPER_BOOKS and all(split_entry(e)[1] != PAPER for e in s.EXCHANGES):
            out.append(f"PAPER_BOOKS={s.PAPER_BOOKS!r} has no effect: no paper venue is listed in EXCHANGES")
    if s.NATS_PORT is not None and s.NATS_URL:
        out.append(
            f"NATS_PORT={s.NATS_PORT} is ignored: NATS_URL is set, so no embedded nats-server is started "
            "(unset NATS_URL to run one on NATS_PORT)"
        )
    joining = [
        n for n in ("NATS_CREDS", "NATS_NKEY_SEED", "NATS_TLS_CA", "NATS_TLS_CERT", "NATS_TLS_KEY") if getattr(s, n)
    ]
    if joining and not s.NATS_URL:
        out.append(
            f"{', '.join(joining)} {'is' if len(joining) == 1 else 'are'} ignored: NATS_URL is not set, so `tbx run` "
            "starts its own embedded nats-server, which asks for none of them"
        )
    return out
