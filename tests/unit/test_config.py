"""Unit tests of config.settings: defaults, one-line errors per variable, combination rules, TOML file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from config import settings as settings_mod
from config.cores import default_run_processes
from config.settings import (
    PARSERS,
    SECRET_FIELDS,
    ConfigError,
    Settings,
    load_settings,
    warnings_for,
)

# Fields whose parser is plain text: any value is allowed, so they have no "bad value" row below.
TEXT_FIELDS = {name for name, parse in PARSERS.items() if parse is settings_mod._text}

# A live-trading environment that lacks only the venue's keys.
LIVE_ENV = {"LIVE_TRADING": "true", "PAPER_TRADING": "false", "EXCHANGE": "binance", "API_TOKEN": "tok-live"}
LIVE_KEYS = {"EXCHANGE_API_KEY": "key-live", "EXCHANGE_API_SECRET": "secret-live"}


def _error(env: dict[str, str], config_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, config_file)
    return str(info.value)


# ------------------------------------------------------------------------------------------------------
# Defaults
# ------------------------------------------------------------------------------------------------------
EXPECTED_DEFAULTS = {
    "PORT": 3004,
    "HOST": "127.0.0.1",
    "NODE_ENV": "development",
    "LOG_LEVEL": "INFO",
    "DATA_DIR": "./data",
    "API_TOKEN": "",
    "CORS_ORIGINS": ("http://localhost:3005",),
    "MAX_BODY_BYTES": 1_048_576,
    "PAPER_TRADING": True,
    "LIVE_TRADING": False,
    "EXCHANGE": "paper",
    "EXCHANGES": (),
    "VENUE_SETTINGS": {},
    "ROUTING": "best_price",
    "PAPER_BOOKS": "",
    "PRICE_EVENT_MS": 1000,
    "EXCHANGE_API_KEY": "",
    "EXCHANGE_API_SECRET": "",
    "EXCHANGE_PASSWORD": "",
    "EXCHANGE_SANDBOX": False,
    "EXCHANGE_API_URL": "",
    "EXCHANGE_TIMEOUT_MS": 10_000,
    "EXCHANGE_POLL_MS": 1000,
    "EXCHANGE_STREAM": "auto",
    "XEGGEX_API_KEY": "",
    "XEGGEX_API_SECRET": "",
    "ALPACA_API_KEY": "",
    "ALPACA_API_SECRET": "",
    "BINANCE_TESTNET_API_KEY": "",
    "BINANCE_TESTNET_SECRET": "",
    "EXTERNAL_ORDERS": "adopt",
    "VENUE_UNKNOWN_GRACE_MS": 60_000,
    "RECONCILE_INTERVAL_MS": 10_000,
    "PAPER_TAKER_FEE": Decimal("0.001"),
    "PAPER_MAKER_FEE": Decimal("0.001"),
    "PAPER_MIN_NOTIONAL": Decimal("1"),
    "PAPER_LATENCY_MS": 0,
    "PAPER_MARKETS": "",
    "CURRENCY_PRECISION": "",
    "BALANCE_DUST": "",
    "SNAPSHOT_INTERVAL": 30_000,
    "MAX_ORDER_NOTIONAL": Decimal(0),
    "ALLOW_SHORT": False,
    "CORRELATION_GROUPS": "",
    "TRADING_HOURS": "",
    "TRADING_TIMEZONE": "UTC",
    "MAX_TOTAL_EXPOSURE": Decimal(1),
    "MAX_DRAWDOWN": Decimal(0),
    "MIN_ACCOUNT_BALANCE": Decimal(0),
    "PRICE_BAND_PERCENT": Decimal(10),
    "CREDENTIAL_ENCRYPTION_KEY": "",
    "CREDENTIAL_STORE": "kv",
    "CREDENTIAL_FILE": "",
    "VAULT_ENABLED": False,
    "VAULT_ENDPOINT": "",
    "VAULT_TOKEN": "",
    "VAULT_SECRET_PATH": "secret/data/trading-bot",
    "TRANSITION_REQUIRED": "auto",
    "TRANSITION_APPROVAL": "manual",
    "TRANSITION_MIN_WIN_RATE": Decimal("0.6"),
    "TRANSITION_MIN_PROFIT_FACTOR": Decimal("1.5"),
    "TRANSITION_MIN_SHARPE": Decimal("1.0"),
    "TRANSITION_MIN_TRADES": 50,
    "TRANSITION_MAX_DRAWDOWN": Decimal("0.10"),
    "TRANSITION_MIN_DAYS": 30,
    "TRANSITION_EVALUATION_DAYS": 30,
    "TRANSITION_STAGES": (Decimal(10), Decimal(25), Decimal(50), Decimal(100)),
    "TRANSITION_STAGE_DAYS": 7,
    "TRANSITION_STAGE_MIN_TRADES": 20,
    "TRANSITION_LIVE_CAPITAL": Decimal(0),
    "TRANSITION_REVERT_DRAWDOWN": Decimal("0.10"),
    "TRANSITION_REVERT_DAILY_LOSS": Decimal("0.05"),
    "TRANSITION_REVERT_VENUE_GRACE_MS": 60_000,
    "TRANSITION_REVERT_POSITIONS": "keep",
    "CORE_SERVICE_URL": "",
    "ML_SERVICE_URL": "",
    "RISK_SERVICE_URL": "",
    "RISK_SERVICE_TIMEOUT": 500,
    "ML_SERVICE_TIMEOUT": 500,
    "ML_WEIGHT": Decimal("0.5"),
    "ML_SIGNAL_SOURCE": "ml_prediction",
    "MIN_CONFIDENCE": Decimal("0.6"),
    "SOURCE_MIN_CONFIDENCE": "",
    "SIGNAL_DEDUPE_WINDOW": 60_000,
    "SIGNAL_AGGREGATION_WINDOW": 0,
    "SIGNAL_WEIGHTS": "",
    "SIGNAL_ORDER_TYPE": "market",
    "SIGNAL_ALGO_DURATION_MS": 60_000,
    "SIGNAL_ALGO_SLICES": 10,
    "SIGNAL_LIMIT_OFFSET_PERCENT": Decimal("0.1"),
    "POSITION_SIZE_METHOD": "auto",
    "RISK_PER_TRADE": Decimal("0.02"),
    "DEFAULT_STOP_LOSS_PERCENT": Decimal(2),
    "DEFAULT_TAKE_PROFIT_PERCENT": Decimal(4),
    "DEFAULT_ORDER_TIMEOUT": 300000,
    "MAX_SLIPPAGE_PERCENT": Decimal("0.5"),
    "MAX_SLIPPAGE_ALERT_BPS": Decimal(0),
    "DEFAULT_TIME_IN_FORCE": "GTC",
    "ENABLE_RISK_CHECKS": True,
    "MAX_POSITION_SIZE": Decimal("0.25"),
    "MAX_DAILY_LOSS": Decimal("0.05"),
    "STOP_LOSS_ENABLED": True,
    "MAX_ORDERS_PER_SECOND": 50,
    "INITIAL_BALANCE": Decimal("50000"),
    "BASE_CURRENCY": "USDT",
    "CONVERSION_BRIDGE": "USDT",
    "POSITION_UPDATE_INTERVAL": 5000,
    "NATS_URL": "",
    "NATS_PORT": None,
    "NATS_REPLICAS": 1,
    "NATS_CREDS": "",
    "NATS_NKEY_SEED": "",
    "NATS_TLS_CA": "",
    "NATS_TLS_CERT": "",
    "NATS_TLS_KEY": "",
    "PARTITIONS": 1,
    "PARTITION": None,
    "RUN_PROCESSES": default_run_processes(),  # auto: 2 with at least 2 usable cores, else 1
    "FAILOVER_MS": 2000,
    "BUS_PREFIX": "tbx",
    "PAIRS": ("BTC_USDT", "ETH_USDT", "XMR_USDT", "RVN_USDT"),
    "MARKET_DATA": "synthetic",
    "MARKET_DATA_SEED": 42,
    "MARKET_DATA_INTERVAL": 250,
    "SYNTHETIC_CLOCK": "wall",
}


def test_expected_defaults_table_covers_every_setting():
    assert set(EXPECTED_DEFAULTS) == set(Settings.__struct_fields__)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED_DEFAULTS.items()))
def test_default_with_empty_env(name, expected):
    value = getattr(load_settings({}), name)
    assert value == expected
    assert type(value) is type(expected)  # Decimal stays Decimal, bool stays bool, tuple stays tuple


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_default_passes_its_own_parser_unchanged(name):
    default = getattr(Settings(), name)
    assert PARSERS[name](default) == default


def test_empty_env_has_no_replay_file_and_no_warnings():
    s = load_settings({})
    assert s.replay_file is None
    assert warnings_for(s) == []


def test_env_none_reads_os_environ(monkeypatch):
    for name in [*PARSERS, "TBX_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "4321")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings()
    assert s.PORT == 4321
    assert s.LOG_LEVEL == "DEBUG"


# ------------------------------------------------------------------------------------------------------
# One bad value per variable: one line naming the variable, the value and what is allowed
# ------------------------------------------------------------------------------------------------------
BAD_VALUES = [
    ("EXCHANGES", "binance,binance", "each venue name once"),
    ("EXCHANGES", "bin ance!", "a list of venue names such as binance,alpaca,paper"),
    ("ROUTING", "cheapest", "one of best_price, priority"),
    ("PAPER_BOOKS", "Bin!", "the name of a venue in EXCHANGES, or empty"),
    ("PRICE_EVENT_MS", "10", "expected an integer from 50 to 3600000"),
    ("PORT", "0", "expected an integer from 1 to 65535"),
    ("PORT", "65536", "expected an integer from 1 to 65535"),
    ("PORT", "http", "expected an integer from 1 to 65535"),
    ("PORT", "3004.5", "expected an integer from 1 to 65535"),
    ("HOST", "my host", "expected a host name or IP address"),
    ("HOST", "", "expected a host name or IP address"),
    ("NODE_ENV", "staging", "expected one of development, production, test"),
    ("LOG_LEVEL", "verbose", "expected one of TRACE, DEBUG, INFO, SUCCESS, WARNING, ERROR, CRITICAL"),
    ("DATA_DIR", "   ", "expected a directory path"),
    ("PAPER_TRADING", "maybe", "expected true or false"),
    ("LIVE_TRADING", "2", "expected true or false"),
    ("EXCHANGE_SANDBOX", "y", "expected true or false"),
    ("EXCHANGE_API_URL", "http://127.0.0.1:8080/api/v3", "expected http://host:port or https://host:port with no path"),
    ("EXCHANGE_API_URL", "ftp://127.0.0.1", "expected http://host:port or https://host:port with no path"),
    ("EXCHANGE_API_URL", "http://host:1/?a=b", "expected http://host:port or https://host:port with no path"),
    ("EXCHANGE_TIMEOUT_MS", "50", "expected an integer from 100 to 600000"),
    ("EXCHANGE_POLL_MS", "10", "expected an integer from 50 to 600000"),
    ("EXCHANGE_STREAM", "on", "expected one of auto, off"),
    ("ENABLE_RISK_CHECKS", "enabled", "expected true or false"),
    ("STOP_LOSS_ENABLED", "", "expected true or false"),
    ("EXCHANGE", "xeggex", "Xeggex shut down in 2025 and ccxt has no adapter for it"),
    ("EXCHANGE", "XeGGeX", "Xeggex shut down in 2025 and ccxt has no adapter for it"),
    ("EXCHANGE", "not an exchange!", "expected paper, or a ccxt exchange id such as binance or kraken"),
    ("PAPER_TAKER_FEE", "0.2", "expected a number >= 0 and <= 0.1"),
    ("PAPER_TAKER_FEE", "-0.001", "expected a number >= 0 and <= 0.1"),
    ("PAPER_TAKER_FEE", "ten", "expected a number >= 0 and <= 0.1"),
    ("PAPER_MAKER_FEE", "-0.02", "expected a number >= -0.01 and <= 0.1"),
    ("PAPER_MIN_NOTIONAL", "-1", "expected a number >= 0"),
    ("PAPER_LATENCY_MS", "-5", "expected an integer from 0 to 60000"),
    ("PAPER_MARKETS", '{"BTC_USDT": {"tick": 1}}', "unknown field `tick`"),
    ("PAPER_MARKETS", '{"btc": {}}', "pairs written BASE_QUOTE"),
    ("CURRENCY_PRECISION", '{"USDT": 40}', "currency -> decimals"),
    ("CURRENCY_PRECISION", "[2]", "currency -> decimals"),
    ("BALANCE_DUST", '{"USDT": "-0.01"}', "amount >= 0"),
    ("BALANCE_DUST", "0.01", "a JSON object of currency"),
    ("SNAPSHOT_INTERVAL", "5", "expected an integer from 100 to 86400000"),
    ("MAX_ORDER_NOTIONAL", "-1", "expected a number >= 0"),
    ("ALLOW_SHORT", "maybe", "true or false"),
    ("CORRELATION_GROUPS", '{"g": {"pairs": [], "maxExposure": "1"}}', "needs pairs"),
    ("CORRELATION_GROUPS", '{"g": {"pairs": ["BTC_USDT"], "maxExposure": "0"}}', "positive maxExposure"),
    ("TRADING_HOURS", "9-16", "HH:MM-HH:MM"),
    ("TRADING_HOURS", "09:00-09:00", "differ"),
    ("TRADING_TIMEZONE", "Mars/Olympus", "IANA time zone"),
    ("MAX_TOTAL_EXPOSURE", "0", "expected a number > 0 and <= 100"),
    ("MAX_DRAWDOWN", "2", "expected a number >= 0 and <= 1"),
    ("MIN_ACCOUNT_BALANCE", "-1", "expected a number >= 0"),
    ("PRICE_BAND_PERCENT", "x", "expected a number >= 0 and <= 1000"),
    ("TRANSITION_STAGES", "50,20,100", "rising percents"),
    ("TRANSITION_STAGES", "10,50", "ending with 100"),
    ("TRANSITION_APPROVAL", "maybe", "manual"),
    ("TRANSITION_REQUIRED", "perhaps", "auto, true or false"),
    ("TRANSITION_MIN_DAYS", "-1", "an integer from 0"),
    ("TRANSITION_MIN_WIN_RATE", "60", "expected a number >= 0 and <= 1"),
    ("TRANSITION_MIN_PROFIT_FACTOR", "-1", "expected a number >= 0"),
    ("TRANSITION_MIN_SHARPE", "-1", "expected a number >= 0"),
    ("TRANSITION_MIN_TRADES", "-1", "expected an integer"),
    ("TRANSITION_MAX_DRAWDOWN", "10", "expected a number >= 0 and <= 1"),
    ("TRANSITION_EVALUATION_DAYS", "x", "expected an integer"),
    ("TRANSITION_STAGE_DAYS", "-3", "expected an integer"),
    ("TRANSITION_STAGE_MIN_TRADES", "x", "expected an integer"),
    ("TRANSITION_LIVE_CAPITAL", "-5", "expected a number >= 0"),
    ("TRANSITION_REVERT_DRAWDOWN", "0", "expected a number > 0 and <= 1"),
    ("TRANSITION_REVERT_DAILY_LOSS", "5", "expected a number > 0 and <= 1"),
    ("TRANSITION_REVERT_VENUE_GRACE_MS", "10", "expected an integer"),
    ("TRANSITION_REVERT_POSITIONS", "sell", "keep"),
    ("PAPER_MARKETS", '{"BTC_USDT": {"tickSize": "0"}}', "a positive tick_size"),
    ("CORE_SERVICE_URL", "ftp://core:21", "expected http://host:port or https://host:port (or empty)"),
    ("ML_SERVICE_URL", "localhost:3002", "expected http://host:port or https://host:port (or empty)"),
    ("RISK_SERVICE_URL", "http://", "expected http://host:port or https://host:port (or empty)"),
    ("CORS_ORIGINS", "localhost:3005", "a comma-separated list of origins"),
    ("CORS_ORIGINS", "http://a.example/path", "a comma-separated list of origins"),
    ("MAX_BODY_BYTES", "10", "expected an integer from 1024 to 67108864"),
    ("RISK_SERVICE_TIMEOUT", "5", "expected an integer from 10 to 60000"),
    ("ML_SERVICE_TIMEOUT", "soon", "expected an integer from 10 to 60000"),
    ("ML_WEIGHT", "1.5", "expected a number >= 0 and <= 1"),
    ("CREDENTIAL_STORE", "vault", "expected one of kv, file"),
    ("CREDENTIAL_FILE", "data/", "expected a file path, not a directory (or empty)"),
    ("VAULT_ENABLED", "maybe", "expected true or false"),
    ("VAULT_ENDPOINT", "localhost:8200", "expected http://host:port or https://host:port (or empty)"),
    ("VAULT_SECRET_PATH", "secret data", "expected a Vault KV v2 path such as secret/data/trading-bot"),
    ("ML_SIGNAL_SOURCE", "ml prediction", "expected a source name (no spaces)"),
    ("MIN_CONFIDENCE", "-0.1", "expected a number >= 0 and <= 1"),
    ("SOURCE_MIN_CONFIDENCE", '{"core": "1.2"}', "source -> number from 0 to 1"),
    ("SOURCE_MIN_CONFIDENCE", '["core"]', "source -> number from 0 to 1"),
    ("SIGNAL_DEDUPE_WINDOW", "-1", "expected an integer from 0 to 86400000"),
    ("SIGNAL_AGGREGATION_WINDOW", "3600001", "expected an integer from 0 to 3600000"),
    ("SIGNAL_WEIGHTS", '{"core": "-1"}', "source -> number >= 0"),
    ("SIGNAL_ORDER_TYPE", "stop", "expected one of market, limit, twap, vwap"),
    ("SIGNAL_ALGO_DURATION_MS", "0", "SIGNAL_ALGO_DURATION_MS"),
    ("SIGNAL_ALGO_SLICES", "10001", "SIGNAL_ALGO_SLICES"),
    ("SIGNAL_LIMIT_OFFSET_PERCENT", "51", "expected a number >= 0 and <= 50"),
    ("POSITION_SIZE_METHOD", "martingale", "expected one of auto, fixed_quantity, fixed_notional"),
    ("RISK_PER_TRADE", "0", "expected a number > 0 and <= 1"),
    ("DEFAULT_STOP_LOSS_PERCENT", "0", "expected a number > 0 and <= 99"),
    ("DEFAULT_TAKE_PROFIT_PERCENT", "-1", "expected a number >= 0 and <= 1000"),
    ("DEFAULT_ORDER_TIMEOUT", "-1", "expected an integer >= 0"),
    ("EXTERNAL_ORDERS", "keep", "expected one of adopt, ignore"),
    ("VENUE_UNKNOWN_GRACE_MS", "10", "expected an integer from 1000 to 86400000"),
    ("RECONCILE_INTERVAL_MS", "10", "expected an integer from 100 to 3600000"),
    ("MAX_SLIPPAGE_PERCENT", "101", "expected a number >= 0 and <= 100"),
    ("MAX_SLIPPAGE_PERCENT", "NaN", "expected a number >= 0 and <= 100"),
    ("MAX_SLIPPAGE_ALERT_BPS", "-1", "expected basis points from 0 (no alerts) to 10000, or empty (no alerts)"),
    ("MAX_SLIPPAGE_ALERT_BPS", "NaN", "expected basis points from 0 (no alerts) to 10000, or empty (no alerts)"),
    ("DEFAULT_TIME_IN_FORCE", "DAY", "expected one of GTC, IOC, FOK, GTD"),
    ("MAX_POSITION_SIZE", "0", "expected a number > 0 and <= 1"),
    ("MAX_POSITION_SIZE", "1.5", "expected a number > 0 and <= 1"),
    ("MAX_DAILY_LOSS", "0", "expected a number > 0 and <= 1"),
    ("MAX_DAILY_LOSS", "Infinity", "expected a number > 0 and <= 1"),
    ("MAX_ORDERS_PER_SECOND", "0", "expected an integer from 1 to 1000000"),
    ("MAX_ORDERS_PER_SECOND", "1000001", "expected an integer from 1 to 1000000"),
    ("INITIAL_BALANCE", "0", "expected a number > 0"),
    ("INITIAL_BALANCE", "-100", "expected a number > 0"),
    ("BASE_CURRENCY", "usdt", "expected an upper-case currency code such as USDT"),
    ("CONVERSION_BRIDGE", "usdt", "expected an upper-case currency code such as USDT"),
    ("CONVERSION_BRIDGE", "", "expected an upper-case currency code such as USDT"),
    ("POSITION_UPDATE_INTERVAL", "99", "expected an integer >= 100"),
    ("NATS_URL", "http://localhost:4222", "expected nats://host:port or tls://host:port or ws://host:port"),
    ("NATS_URL", "nats://a:4222,", "expected nats://host:port or tls://host:port or ws://host:port"),
    ("NATS_PORT", "0", "expected an integer from 1 to 65535"),
    ("NATS_PORT", "4222x", "expected an integer from 1 to 65535"),
    ("NATS_PORT", "65536", "expected an integer from 1 to 65535"),
    ("NATS_REPLICAS", "0", "expected an integer from 1 to 5"),
    ("NATS_REPLICAS", "6", "expected an integer from 1 to 5"),
    ("NATS_CREDS", "/nonexistent/user.creds", "the file does not exist"),
    ("NATS_NKEY_SEED", "/nonexistent/user.nk", "the file does not exist"),
    ("NATS_TLS_CA", "/", "a file path, not a directory (or empty)"),
    ("NATS_TLS_CERT", "/nonexistent/client.pem", "the file does not exist"),
    ("NATS_TLS_KEY", "/nonexistent/client-key.pem", "the file does not exist"),
    ("PARTITIONS", "0", "expected an integer from 1 to 64"),
    ("PARTITIONS", "65", "expected an integer from 1 to 64"),
    ("PARTITION", "-1", "expected an integer from 0 to 63"),
    ("RUN_PROCESSES", "0", "expected an integer from 1 to 64, or auto"),
    ("RUN_PROCESSES", "many", "expected an integer from 1 to 64, or auto"),
    ("FAILOVER_MS", "299", "expected an integer from 300 to 3600000"),
    ("BUS_PREFIX", "tbx.prod", "expected 1 to 32 letters, digits, '_' or '-'"),
    ("BUS_PREFIX", "x" * 33, "expected 1 to 32 letters, digits, '_' or '-'"),
    ("PAIRS", "BTCUSDT", "expected a comma-separated list of pairs written BASE_QUOTE"),
    ("PAIRS", " , ", "expected a comma-separated list of pairs written BASE_QUOTE"),
    ("PAIRS", "BTC_USDT,ETH-USDT", "expected a comma-separated list of pairs written BASE_QUOTE"),
    ("MARKET_DATA", "live", "expected synthetic, venue, none or replay:FILE"),
    ("MARKET_DATA", "replay:", "expected synthetic, venue, none or replay:FILE"),
    ("MARKET_DATA_SEED", "-1", "expected an integer >= 0"),
    ("MARKET_DATA_INTERVAL", "5", "expected an integer from 10 to 60000"),
    ("MARKET_DATA_INTERVAL", "60001", "expected an integer from 10 to 60000"),
    ("SYNTHETIC_CLOCK", "tick", "one of wall, event"),
]


def test_bad_value_table_covers_every_variable_that_can_be_wrong():
    assert {name for name, _, _ in BAD_VALUES} == set(PARSERS) - TEXT_FIELDS


def test_text_fields_are_exactly_the_free_text_settings():
    assert TEXT_FIELDS == SECRET_FIELDS  # every free-text setting is a secret, and every secret is free text


@pytest.mark.parametrize(("name", "value", "allowed"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v, _ in BAD_VALUES])
def test_bad_value_is_one_line_naming_variable_value_and_allowed(name, value, allowed):
    message = _error({name: value})
    assert message.startswith(f"{name}={value!r} is not allowed: ")
    assert allowed in message
    assert "\n" not in message


def test_xeggex_exchange_message_says_what_to_do_instead():
    message = _error({"EXCHANGE": "xeggex"})
    assert "Xeggex shut down in 2025" in message
    assert "ccxt has no adapter" in message
    assert "EXCHANGE_API_KEY" in message
    assert ": expected" not in message  # a whole sentence, not an "expected ..." clause


@pytest.mark.parametrize(
    ("name", "value"),
    [("PORT", "30\n04"), ("NODE_ENV", "dev\nprod"), ("HOST", "a\nb"), ("PAIRS", "BTC_USDT\nETH_USDT"), ("PORT", "\r")],
)
def test_message_stays_one_line_when_the_value_has_line_breaks(name, value):
    message = _error({name: value})
    assert "\n" not in message
    assert "\r" not in message
    assert message.startswith(f"{name}=")


# ------------------------------------------------------------------------------------------------------
# Secrets are never echoed
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SECRET_FIELDS))
def test_secret_values_are_shown_as_stars(name):
    assert settings_mod._show(name, "hunter2") == "'***'"


def test_non_secret_values_are_shown_quoted():
    assert settings_mod._show("PORT", 0) == "'0'"


@pytest.mark.parametrize(
    "extra",
    [
        {"PORT": "0"},
        {"BASE_CURRENCY": "EUR"},
        {"PAPER_TRADING": "false"},
        {"LIVE_TRADING": "true"},
        {"EXCHANGE": "xeggex"},
    ],
    ids=lambda e: ",".join(e),
)
def test_no_error_echoes_a_secret(extra):
    env = {name: f"hunter2-{name.lower()}" for name in SECRET_FIELDS} | extra
    message = _error(env)
    assert "hunter2" not in message


def test_xeggex_key_in_live_mode_is_refused_without_echoing_it():
    message = _error(LIVE_ENV | {"XEGGEX_API_KEY": "xk-hunter2"})
    assert message.startswith("XEGGEX_API_KEY='***' is not allowed: ")
    assert "Xeggex shut down in 2025" in message
    assert "hunter2" not in message
    assert "tok-live" not in message


def test_toml_syntax_error_does_not_echo_a_secret(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text('API_TOKEN = "hunter2\n')
    message = _error({}, path)
    assert "not valid TOML" in message
    assert "hunter2" not in message


# ------------------------------------------------------------------------------------------------------
# Combination rules (_check_together)
# ------------------------------------------------------------------------------------------------------
def test_live_and_paper_together_is_refused_naming_both():
    message = _error({"LIVE_TRADING": "true", "PAPER_TRADING": "true"})
    assert "LIVE_TRADING" in message
    assert "PAPER_TRADING" in message
    assert "not allowed" in message
    assert "\n" not in message


def test_live_trading_alone_keeps_the_default_paper_mode_and_is_refused():
    message = _error({"LIVE_TRADING": "yes"})
    assert "LIVE_TRADING" in message
    assert "PAPER_TRADING" in message


def test_neither_trading_mode_is_refused():
    message = _error({"PAPER_TRADING": "false"})
    assert message.startswith("PAPER_TRADING='false' is not allowed with LIVE_TRADING='false'")
    assert "one trading mode must be on" in message


def test_live_trading_with_paper_exchange_is_refused():
    message = _error({"LIVE_TRADING": "true", "PAPER_TRADING": "false"})
    assert message.startswith("EXCHANGE='paper' is not allowed with LIVE_TRADING=true")


def test_live_trading_without_api_token_is_refused():
    message = _error({"LIVE_TRADING": "true", "PAPER_TRADING": "false", "EXCHANGE": "kraken"})
    assert message.startswith("API_TOKEN='' is not allowed with LIVE_TRADING=true")


def test_live_trading_without_the_venues_keys_is_refused_in_one_line():
    message = _error(LIVE_ENV)
    assert message.startswith("EXCHANGE_API_KEY / EXCHANGE_API_SECRET are not set")
    assert "binance" in message and "\n" not in message
    sandbox = _error(LIVE_ENV | {"EXCHANGE_SANDBOX": "true"})
    assert "BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_SECRET" in sandbox
    assert "ALPACA_API_KEY / ALPACA_API_SECRET" in _error(LIVE_ENV | {"EXCHANGE": "alpaca"})


def test_live_trading_reads_the_venues_books_never_synthetic_prices():
    assert load_settings(LIVE_ENV | LIVE_KEYS).MARKET_DATA == "venue"
    assert load_settings(LIVE_ENV | LIVE_KEYS | {"MARKET_DATA": "none"}).MARKET_DATA == "none"
    assert _error(LIVE_ENV | LIVE_KEYS | {"MARKET_DATA": "synthetic"}).startswith(
        "MARKET_DATA='synthetic' is not allowed with LIVE_TRADING=true"
    )
    assert _error({"MARKET_DATA": "venue"}).startswith("MARKET_DATA='venue' is not allowed in paper mode")
    assert load_settings({}).MARKET_DATA == "synthetic"


def test_live_trading_with_keys_loads_and_the_specs_key_names_count():
    s = load_settings(LIVE_ENV | LIVE_KEYS)
    assert s.LIVE_TRADING and settings_mod.venue_credentials(s) == ("key-live", "secret-live", "")
    alpaca = load_settings(LIVE_ENV | {"EXCHANGE": "alpaca", "ALPACA_API_KEY": "ak", "ALPACA_API_SECRET": "as"})
    assert settings_mod.venue_credentials(alpaca) == ("ak", "as", "")
    testnet = LIVE_ENV | {"EXCHANGE_SANDBOX": "true", "BINANCE_TESTNET_API_KEY": "tk", "BINANCE_TESTNET_SECRET": "ts"}
    assert settings_mod.venue_credentials(load_settings(testnet)) == ("tk", "ts", "")
    assert _error(LIVE_ENV | LIVE_KEYS | {"API_TOKEN": ""}).startswith("API_TOKEN='' is not allowed")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com"])
def test_non_loopback_host_without_api_token_is_refused(host):
    message = _error({"HOST": host})
    assert message.startswith(f"HOST={host!r} is not allowed without API_TOKEN")


@pytest.mark.parametrize("host", ["0.0.0.0", "example.com"])
def test_non_loopback_host_with_api_token_is_allowed(host):
    s = load_settings({"HOST": host, "API_TOKEN": "t0k"})
    assert host == s.HOST
    assert s.API_TOKEN == "t0k"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_host_needs_no_api_token(host):
    assert host == load_settings({"HOST": host}).HOST


def test_base_currency_not_quoted_by_any_pair_is_refused():
    message = _error({"BASE_CURRENCY": "EUR", "PAIRS": "BTC_USDT,ETH_USDT"})
    assert message.startswith("PAIRS='BTC_USDT,ETH_USDT' is not allowed with BASE_CURRENCY='EUR'")
    assert "quoted in EUR" in message


def test_base_currency_quoted_by_one_pair_is_enough():
    s = load_settings({"BASE_CURRENCY": "EUR", "PAIRS": "BTC_USDT,ETH_EUR"})
    assert s.BASE_CURRENCY == "EUR"


def test_base_currency_as_the_base_of_a_pair_does_not_count():
    message = _error({"BASE_CURRENCY": "BTC", "PAIRS": "BTC_USDT"})
    assert "BASE_CURRENCY='BTC'" in message


# ------------------------------------------------------------------------------------------------------
# Good values
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("false", False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("on", True),
        ("off", False),
        ("TRUE", True),
        (" No ", False),
    ],
)
def test_boolean_spellings(raw, expected):
    s = load_settings({"EXCHANGE_SANDBOX": raw, "STOP_LOSS_ENABLED": raw})
    assert s.EXCHANGE_SANDBOX is expected
    assert s.STOP_LOSS_ENABLED is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("auto", "auto"), (" AUTO ", "auto"), ("true", "true"), ("yes", "true"), ("false", "false"), ("0", "false")],
)
def test_transition_required_is_auto_true_or_false(raw, expected):
    got = load_settings({"TRANSITION_REQUIRED": raw}).TRANSITION_REQUIRED
    assert got == expected


def test_paper_trading_yes_and_live_trading_no():
    s = load_settings({"PAPER_TRADING": "yes", "LIVE_TRADING": "no"})
    assert s.PAPER_TRADING is True
    assert s.LIVE_TRADING is False


def test_pairs_are_upper_cased_stripped_and_deduplicated_in_order():
    s = load_settings({"PAIRS": " eth_usdt , btc_usdt,ETH_USDT,, Btc_Usdt "})
    assert s.PAIRS == ("ETH_USDT", "BTC_USDT")


def test_single_pair():
    assert load_settings({"PAIRS": "xmr_usdt"}).PAIRS == ("XMR_USDT",)


def test_market_data_replay_file():
    s = load_settings({"MARKET_DATA": "replay:/data/books.jsonl"})
    assert s.MARKET_DATA == "replay:/data/books.jsonl"
    assert s.replay_file == Path("/data/books.jsonl")


@pytest.mark.parametrize("value", ["synthetic", "none"])
def test_market_data_without_replay_file(value):
    s = load_settings({"MARKET_DATA": value})
    assert value == s.MARKET_DATA
    assert s.replay_file is None


def test_nats_url_with_several_servers():
    url = "nats://n1:4222, tls://n2.example.com:4223,ws://n3:8080/,wss://n4"
    assert url == load_settings({"NATS_URL": f"  {url}  "}).NATS_URL


@pytest.mark.parametrize("url", ["nats://127.0.0.1:4222", "nats://localhost", "nats://s3cr3t-token@nats:4222"])
def test_single_nats_url(url):
    assert url == load_settings({"NATS_URL": url}).NATS_URL


def test_service_url_trailing_slash_is_dropped():
    s = load_settings({"CORE_SERVICE_URL": "http://core:3000/", "RISK_SERVICE_URL": "https://risk.example.com"})
    assert s.CORE_SERVICE_URL == "http://core:3000"
    assert s.RISK_SERVICE_URL == "https://risk.example.com"


def test_empty_urls_are_allowed():
    s = load_settings({"NATS_URL": "", "ML_SERVICE_URL": "  "})
    assert s.NATS_URL == ""
    assert s.ML_SERVICE_URL == ""


def test_choices_and_numbers_are_normalized():
    s = load_settings(
        {
            "LOG_LEVEL": "debug",
            "DEFAULT_TIME_IN_FORCE": "ioc",
            "EXCHANGE": " Binance ",
            "PORT": " 8080 ",
            "NODE_ENV": "production",
        }
    )
    assert s.LOG_LEVEL == "DEBUG"
    assert s.DEFAULT_TIME_IN_FORCE == "IOC"
    assert s.EXCHANGE == "binance"
    assert s.PORT == 8080
    assert s.NODE_ENV == "production"


def test_decimals_are_exact():
    s = load_settings(
        {
            "INITIAL_BALANCE": "12345.678901234567890123",
            "PAPER_TAKER_FEE": "0.1",
            "PAPER_MAKER_FEE": "-0.01",
            "MAX_POSITION_SIZE": "1",
            "MAX_SLIPPAGE_PERCENT": "0",
        }
    )
    assert Decimal("12345.678901234567890123") == s.INITIAL_BALANCE
    assert str(s.INITIAL_BALANCE) == "12345.678901234567890123"
    assert Decimal("0.1") == s.PAPER_TAKER_FEE
    assert Decimal("-0.01") == s.PAPER_MAKER_FEE
    assert Decimal(1) == s.MAX_POSITION_SIZE
    assert Decimal(0) == s.MAX_SLIPPAGE_PERCENT


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "1", 1),
        ("PORT", "65535", 65535),
        ("DEFAULT_ORDER_TIMEOUT", "0", 0),
        ("POSITION_UPDATE_INTERVAL", "100", 100),
        ("MARKET_DATA_INTERVAL", "10", 10),
        ("MARKET_DATA_INTERVAL", "60000", 60000),
        ("MAX_ORDERS_PER_SECOND", "1000000", 1_000_000),
        ("NATS_REPLICAS", "5", 5),
        ("BUS_PREFIX", "x" * 32, "x" * 32),
        ("BUS_PREFIX", "prod-2_a", "prod-2_a"),
    ],
)
def test_range_edges_are_allowed(name, value, expected):
    assert getattr(load_settings({name: value}), name) == expected


def test_settings_are_frozen():
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.PORT = 1  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------------
# TOML file
# ------------------------------------------------------------------------------------------------------
TOML_TEXT = """\
PORT = 4000
LOG_LEVEL = "debug"
PAPER_TAKER_FEE = "0.002"
MAX_SLIPPAGE_PERCENT = 0.1
INITIAL_BALANCE = 1000
PAPER_TRADING = true
STOP_LOSS_ENABLED = false
PAIRS = ["btc_usdt", "eth_usdt"]
bus_prefix = "prod"
NATS_URL = "nats://n1:4222,nats://n2:4222"
"""


@pytest.fixture
def toml_file(tmp_path: Path) -> Path:
    path = tmp_path / "tbx.toml"
    path.write_text(TOML_TEXT)
    return path


def _check_toml_values(s: Settings) -> None:
    assert s.PORT == 4000
    assert s.LOG_LEVEL == "DEBUG"
    assert Decimal("0.002") == s.PAPER_TAKER_FEE
    assert Decimal("0.1") == s.MAX_SLIPPAGE_PERCENT  # a TOML float, yet exact
    assert Decimal(1000) == s.INITIAL_BALANCE
    assert type(s.INITIAL_BALANCE) is Decimal
    assert s.PAPER_TRADING is True
    assert s.STOP_LOSS_ENABLED is False
    assert s.PAIRS == ("BTC_USDT", "ETH_USDT")
    assert s.BUS_PREFIX == "prod"  # keys are case-insensitive
    assert s.NATS_URL == "nats://n1:4222,nats://n2:4222"
    assert s.HOST == "127.0.0.1"  # not in the file: default


def test_toml_file_values_load(toml_file):
    _check_toml_values(load_settings({}, toml_file))


def test_toml_file_as_str_path(toml_file):
    _check_toml_values(load_settings({}, str(toml_file)))


def test_tbx_config_in_env_points_at_the_file(toml_file):
    _check_toml_values(load_settings({"TBX_CONFIG": str(toml_file)}))


def test_environment_wins_over_the_file(toml_file):
    s = load_settings({"PORT": "5000", "PAIRS": "xmr_usdt", "TBX_CONFIG": str(toml_file)})
    assert s.PORT == 5000
    assert s.PAIRS == ("XMR_USDT",)
    assert s.LOG_LEVEL == "DEBUG"  # the rest still comes from the file


def test_config_file_argument_wins_over_tbx_config(tmp_path, toml_file):
    missing = tmp_path / "missing.toml"
    assert load_settings({"TBX_CONFIG": str(missing)}, toml_file).PORT == 4000


def test_empty_toml_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    assert load_settings({}, path) == load_settings({})


def test_unknown_key_in_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text("PORT = 4000\nPROT = 4001\n")
    message = _error({}, path)
    assert message.startswith("'PROT' in ")
    assert str(path) in message
    assert "unknown setting" in message
    assert "\n" not in message


def test_table_in_file_is_an_unknown_key(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text("[service]\nPORT = 4000\n")
    message = _error({}, path)
    assert message.startswith("'service' in ")
    assert "unknown setting" in message


def test_bad_value_in_file_is_refused_like_an_env_value(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text("PORT = 0\n")
    assert _error({}, path) == "PORT='0' is not allowed: expected an integer from 1 to 65535"


def test_toml_bool_is_not_an_integer(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text("PORT = true\n")
    assert _error({}, path).startswith("PORT='True' is not allowed: expected an integer")


def test_combination_rules_apply_to_file_values(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text('HOST = "0.0.0.0"\n')
    assert _error({}, path).startswith("HOST='0.0.0.0' is not allowed without API_TOKEN")


def test_invalid_toml_is_a_config_error(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text("PORT = \n")
    message = _error({}, path)
    assert message.startswith(f"TBX_CONFIG={str(path)!r}: not valid TOML")
    assert "\n" not in message


def test_missing_file_is_a_config_error(tmp_path):
    path = tmp_path / "nope.toml"
    message = _error({"TBX_CONFIG": str(path)})
    assert message.startswith(f"TBX_CONFIG={str(path)!r}: cannot read the file")
    assert "No such file" in message


def test_directory_instead_of_file_is_a_config_error(tmp_path):
    message = _error({}, tmp_path)
    assert "cannot read the file" in message


def test_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_bytes(b"# caf\xe9 (latin-1)\nPORT = 4000\n")
    message = _error({}, path)
    assert "TBX_CONFIG" in message


def test_unknown_key_message_stays_one_line(tmp_path):
    path = tmp_path / "tbx.toml"
    path.write_text('"PORT\\nX" = 1\n')
    message = _error({}, path)
    assert "unknown setting" in message
    assert "\n" not in message


def test_nats_url_with_user_and_password():
    url = "nats://tbx:s3cret@nats:4222"
    settings = load_settings({"NATS_URL": url})
    assert url == settings.NATS_URL
    assert settings.redacted()["NATS_URL"] == "nats://***@nats:4222"


def test_a_refused_url_never_shows_its_credentials():
    message = _error({"NATS_URL": "http://tbx:s3cret@nats:4222"})
    assert "s3cret" not in message and "***@nats" in message


def test_service_url_port_out_of_range_is_refused():
    message = _error({"CORE_SERVICE_URL": "http://core:99999"})
    assert message.startswith("CORE_SERVICE_URL='http://core:99999' is not allowed")


# ------------------------------------------------------------------------------------------------------
# warnings_for and redacted
# ------------------------------------------------------------------------------------------------------
def test_warnings_mention_xeggex_when_its_key_is_set():
    warnings = warnings_for(load_settings({"XEGGEX_API_KEY": "xk-hunter2"}))
    assert len(warnings) == 1
    assert "XEGGEX_API_KEY" in warnings[0]
    assert "Xeggex shut down in 2025" in warnings[0]
    assert "ignored" in warnings[0]
    assert "hunter2" not in warnings[0]


def test_warnings_mention_xeggex_when_only_its_secret_is_set():
    warnings = warnings_for(load_settings({"XEGGEX_API_SECRET": "xs"}))
    assert len(warnings) == 1
    assert "Xeggex" in warnings[0]


def test_no_warnings_for_other_exchange_keys():
    assert warnings_for(load_settings({"EXCHANGE": "binance", "EXCHANGE_API_KEY": "k"})) == []


def test_redacted_hides_every_secret():
    env = {name: f"hunter2-{name.lower()}" for name in SECRET_FIELDS}
    s = load_settings(env | {"PORT": "4100"})
    assert s.API_TOKEN == "hunter2-api_token"  # the Struct itself keeps the real value
    out = s.redacted()
    for name in SECRET_FIELDS:
        assert out[name] == "***", name
    assert "hunter2" not in repr(out)
    assert "hunter2" not in msgspec.json.encode(out).decode()
    assert out["PORT"] == 4100
    assert set(out) == set(Settings.__struct_fields__)


def test_redacted_leaves_empty_secrets_empty_and_keeps_other_values():
    out = load_settings({}).redacted()
    for name in SECRET_FIELDS:
        assert out[name] == ""
    assert out["HOST"] == "127.0.0.1"
    assert Decimal(out["INITIAL_BALANCE"]) == Decimal("50000")
    assert list(out["PAIRS"]) == ["BTC_USDT", "ETH_USDT", "XMR_USDT", "RVN_USDT"]


# ------------------------------------------------------------------------------------------------------
# NATS_PORT and URLs without credentials
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "expected"), [("", None), ("  ", None), ("4333", 4333), (" 1 ", 1), ("65535", 65535)])
def test_nats_port_empty_is_unset_and_a_number_is_the_port(raw, expected):
    port = load_settings({"NATS_PORT": raw}).NATS_PORT
    assert port == expected


def test_nats_port_with_nats_url_is_ignored_with_a_warning():
    s = load_settings({"NATS_PORT": "4333", "NATS_URL": "nats://user:pw@nats.example:4222"})
    [warning] = warnings_for(s)
    assert warning.startswith("NATS_PORT=4333 is ignored: NATS_URL is set")
    assert "pw" not in warning
    assert warnings_for(load_settings({"NATS_PORT": "4333"})) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://user:secret@nats.example:4222", "nats://nats.example:4222"),
        ("nats://s3cr3t-token@nats.example:4222", "nats://nats.example:4222"),
        ("tls://a:b@n1:4222,tls://c:d@n2:4222", "tls://n1:4222,tls://n2:4222"),
        ("nats://u:p@ss@host:4222", "nats://host:4222"),  # an unencoded @ in a password: still nothing of it
        ("ws://u:p@host:80/path", "ws://host:80/path"),
        ("", ""),
    ],
)
def test_without_credentials_leaves_no_part_of_a_secret(url, shown):
    assert settings_mod.without_credentials(url) == shown


def test_max_slippage_alert_bps_empty_or_zero_turns_the_alerts_off():
    assert Decimal(0) == load_settings({}).MAX_SLIPPAGE_ALERT_BPS
    assert Decimal(0) == load_settings({"MAX_SLIPPAGE_ALERT_BPS": ""}).MAX_SLIPPAGE_ALERT_BPS
    assert Decimal(0) == load_settings({"MAX_SLIPPAGE_ALERT_BPS": "0"}).MAX_SLIPPAGE_ALERT_BPS
    assert Decimal("12.5") == load_settings({"MAX_SLIPPAGE_ALERT_BPS": "12.5"}).MAX_SLIPPAGE_ALERT_BPS
