"""Several venues at once (issue 17): EXCHANGES, each venue's settings (NAME_<KEY> variables, .env, TOML sections),
their checks and rules, the specs' key names, secrets kept out of every printout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.settings import (
    PARSERS,
    SECRET_FIELDS,
    VENUE_PARSERS,
    ConfigError,
    Settings,
    load_settings,
    read_environment,
    warnings_for,
)
from config.venues import (
    NAME_RE,
    SECRET_KEYS,
    VENUE_KEYS,
    VenueConfig,
    market_data_venues,
    parse_exchanges,
    venue_configs,
)

LIVE = {"LIVE_TRADING": "true", "PAPER_TRADING": "false", "API_TOKEN": "tok-live"}
BINANCE_KEYS = {"BINANCE_API_KEY": "bk-1", "BINANCE_API_SECRET": "bs-1"}
ALPACA_KEYS = {"ALPACA_API_KEY": "ak-1", "ALPACA_API_SECRET": "as-1"}
THREE = LIVE | {"EXCHANGES": "binance,alpaca,paper"} | BINANCE_KEYS | ALPACA_KEYS


def _error(env: dict[str, str], config_file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, config_file)
    message = str(info.value)
    assert "\n" not in message
    return message


def _venues(env: dict[str, str], config_file: Path | None = None) -> dict[str, VenueConfig]:
    return {v.name: v for v in venue_configs(load_settings(env, config_file))}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tbx.toml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------------
# EXCHANGES
# ------------------------------------------------------------------------------------------------------
def test_exchanges_lists_the_venues_in_priority_order():
    venues = venue_configs(load_settings(THREE))
    assert [(v.name, v.ccxt_id, v.priority) for v in venues] == [
        ("binance", "binance", 0),
        ("alpaca", "alpaca", 1),
        ("paper", "paper", 2),
    ]
    assert [v.paper for v in venues] == [False, False, True]


def test_exchanges_is_normalised_and_name_equals_ccxtid_names_a_second_account():
    s = load_settings(
        LIVE
        | {"EXCHANGES": " Paper , BINANCE, bn2 = Binance ", "BN2_API_KEY": "k2", "BN2_API_SECRET": "s2"}
        | BINANCE_KEYS
    )
    assert s.EXCHANGES == ("paper", "binance", "bn2=binance")
    bn2 = {v.name: v for v in venue_configs(s)}["bn2"]
    assert (bn2.ccxt_id, bn2.priority, bn2.api_key, bn2.api_secret) == ("binance", 2, "k2", "s2")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("binance,binance", "each venue name once; 'binance' is listed twice"),
        ("binance,BINANCE", "each venue name once"),
        ("bn2=binance,bn2=kraken", "each venue name once"),
        ("bin ance!", "a list of venue names such as binance,alpaca,paper or name=ccxtid"),
        ("b", "a list of venue names"),  # at least two characters
        ("2bn=binance", "a list of venue names"),  # a name starts with a letter
        ("bn2=bin-ance", "a list of venue names"),
        ("a=b=c", "a list of venue names"),
        ("paper=binance", "the name paper for the paper venue only"),
    ],
)
def test_a_wrong_exchanges_is_one_line_naming_it(raw, reason):
    message = _error({"EXCHANGES": raw})
    assert message.startswith(f"EXCHANGES={raw!r} is not allowed: ")
    assert reason in message


@pytest.mark.parametrize("raw", ["xeggex", "paper,XEGGEX", "xg=xeggex"])
def test_xeggex_in_exchanges_is_refused_with_the_xeggex_text(raw):
    message = _error({"EXCHANGES": raw})
    assert message.startswith(f"EXCHANGES={raw!r} is not allowed: Xeggex shut down in 2025")
    assert ": expected" not in message


@pytest.mark.parametrize("name", ["exchange", "binance_testnet", "xeggex"])
def test_a_venue_name_whose_variables_are_other_settings_is_refused(name):
    message = _error(LIVE | {"EXCHANGES": f"{name}=binance"})
    assert message.startswith(f"EXCHANGES='{name}=binance' is not allowed: the venue name {name!r} would read ")
    assert f"{name.upper()}_API_KEY" in message and "expected another name" in message


def test_empty_exchanges_is_the_single_exchange():
    assert load_settings({"EXCHANGES": " "}).EXCHANGES == ()
    assert [v.name for v in venue_configs(load_settings({"EXCHANGES": ""}))] == ["paper"]


def test_exchanges_as_a_toml_list(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = ["paper", "bn2=binance"]\nLIVE_TRADING = true\nPAPER_TRADING = false\n')
    s = load_settings({"API_TOKEN": "t", "BN2_API_KEY": "k", "BN2_API_SECRET": "s"}, path)
    assert s.EXCHANGES == ("paper", "bn2=binance")


@given(st.lists(st.from_regex(NAME_RE, fullmatch=True), min_size=1, max_size=6, unique=True))
def test_parsing_is_idempotent_and_keeps_the_order(names):
    names = [n for n in names if n != "paper"] or ["binance"]
    entries = [f"{n}=binance" if i % 2 else n for i, n in enumerate(names)]
    parsed = parse_exchanges(",".join(e.upper() for e in entries))
    assert parsed == tuple(entries)
    assert parse_exchanges(list(parsed)) == parsed


# ------------------------------------------------------------------------------------------------------
# Each venue's settings: environment, .env, TOML (flat names and sections), precedence, defaults
# ------------------------------------------------------------------------------------------------------
def test_each_venue_reads_its_own_variables():
    env = THREE | {
        "PAIRS": "BTC_USDT,ETH_USDT,SOL_USD",
        "BINANCE_API_URL": "http://127.0.0.1:9001/",
        "BINANCE_SANDBOX": "yes",
        "BINANCE_PAIRS": "btc_usdt, eth_usdt",
        "BINANCE_TIMEOUT_MS": " 2500 ",
        "BINANCE_POLL_MS": "200",
        "BINANCE_STREAM": "off",
        "BINANCE_PASSWORD": "pw-1",
        "ALPACA_PAIRS": "SOL_USD",
    }
    s = load_settings(env)
    assert s.VENUE_SETTINGS["BINANCE"] == {
        "API_KEY": "bk-1",
        "API_SECRET": "bs-1",
        "PASSWORD": "pw-1",
        "API_URL": "http://127.0.0.1:9001",
        "SANDBOX": "true",
        "PAIRS": "BTC_USDT,ETH_USDT",
        "TIMEOUT_MS": "2500",
        "POLL_MS": "200",
        "STREAM": "off",
    }
    v = {v.name: v for v in venue_configs(s)}
    b = v["binance"]
    assert (b.api_key, b.api_secret, b.password, b.api_url, b.sandbox) == (
        "bk-1",
        "bs-1",
        "pw-1",
        "http://127.0.0.1:9001",
        True,
    )
    assert (b.pairs, b.timeout_ms, b.poll_ms, b.stream) == (("BTC_USDT", "ETH_USDT"), 2500, 200, "off")
    a = v["alpaca"]
    assert (a.pairs, a.api_url, a.sandbox, a.timeout_ms, a.api_key) == (("SOL_USD",), "", False, 10_000, "ak-1")
    assert v["paper"].pairs == ("BTC_USDT", "ETH_USDT", "SOL_USD")


def test_what_a_venue_does_not_set_comes_from_exchange_defaults_and_pairs():
    env = THREE | {
        "PAIRS": "BTC_USDT,ETH_USDT",
        "EXCHANGE_TIMEOUT_MS": "3000",
        "EXCHANGE_POLL_MS": "700",
        "EXCHANGE_STREAM": "off",
        "ALPACA_TIMEOUT_MS": "4000",
    }
    v = _venues(env)
    assert (v["binance"].timeout_ms, v["binance"].poll_ms, v["binance"].stream) == (3000, 700, "off")
    assert (v["alpaca"].timeout_ms, v["alpaca"].poll_ms) == (4000, 700)
    assert v["binance"].pairs == v["alpaca"].pairs == v["paper"].pairs == ("BTC_USDT", "ETH_USDT")


def test_an_empty_venue_variable_is_not_set():
    v = _venues(THREE | {"BINANCE_PAIRS": "", "BINANCE_TIMEOUT_MS": " ", "BINANCE_API_URL": ""})
    assert v["binance"].pairs == Settings().PAIRS and v["binance"].timeout_ms == 10_000


def test_toml_sections_per_venue(tmp_path):
    path = _toml(
        tmp_path,
        """\
EXCHANGES = "paper,binance,bn2=binance"
LIVE_TRADING = true
PAPER_TRADING = false
API_TOKEN = "t"
PAIRS = ["BTC_USDT", "ETH_USDT"]

[binance]
api_key = "bk-toml"
api_secret = "bs-toml"
sandbox = true
pairs = ["btc_usdt"]
timeout_ms = 1500

[BN2]
API_KEY = "k2"
api_secret = "s2"
api_url = "https://bn2.example:8443"
stream = "off"
""",
    )
    v = _venues({}, path)
    b, bn2 = v["binance"], v["bn2"]
    assert (b.api_key, b.api_secret, b.sandbox, b.pairs, b.timeout_ms) == (
        "bk-toml",
        "bs-toml",
        True,
        ("BTC_USDT",),
        1500,
    )
    assert (bn2.api_key, bn2.api_url, bn2.stream, bn2.sandbox) == ("k2", "https://bn2.example:8443", "off", False)


def test_flat_venue_names_in_toml_are_read_too(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "binance"\nBINANCE_API_KEY = "bk-flat"\nbinance_api_secret = "bs-flat"\n')
    b = _venues(LIVE, path)["binance"]
    assert (b.api_key, b.api_secret) == ("bk-flat", "bs-flat")


def test_environment_wins_over_toml_for_a_venue_setting(tmp_path):
    path = _toml(
        tmp_path,
        'EXCHANGES = "binance,bn2=binance"\n[binance]\ntimeout_ms = 1500\napi_url = "http://file:1"\n'
        '[bn2]\napi_key = "k2-file"\napi_secret = "s2-file"\n',
    )
    env = LIVE | BINANCE_KEYS | {"BINANCE_TIMEOUT_MS": "2500", "BINANCE_API_URL": "", "BN2_API_KEY": "k2-env"}
    v = _venues(env, path)
    assert v["binance"].timeout_ms == 2500
    assert v["binance"].api_url == ""  # set empty in the environment: wins, and means "not set"
    assert (v["bn2"].api_key, v["bn2"].api_secret) == ("k2-env", "s2-file")


def test_a_venue_set_twice_in_the_file_is_refused(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "binance"\nBINANCE_POLL_MS = 100\n[binance]\npoll_ms = 200\n')
    assert _error(LIVE | BINANCE_KEYS, path).startswith("BINANCE_POLL_MS is set twice in ")


def test_dotenv_venue_variables_are_read_and_not_warned_about(tmp_path, monkeypatch):
    for name in [*PARSERS, "TBX_CONFIG", *[f"{n}_{k}" for n in ("BINANCE", "BN2", "KRAKEN") for k in VENUE_KEYS]]:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "EXCHANGES=paper,binance,bn2=binance\nLIVE_TRADING=true\nPAPER_TRADING=false\nAPI_TOKEN=t\n"
        "BINANCE_API_KEY=bk\nBINANCE_API_SECRET=bs\nBN2_API_KEY=k2\nBN2_API_SECRET=s2\nBN2_POLL_MS=300\n"
        "KRAKEN_API_KEY=kk\nBINANCE_APIKEY=typo\n"
    )
    env, warnings = read_environment(tmp_path)
    v = {v.name: v for v in venue_configs(load_settings(env))}
    assert (v["bn2"].api_key, v["bn2"].poll_ms, v["binance"].api_secret) == ("k2", 300, "bs")
    [warning] = warnings
    assert "BINANCE_APIKEY" in warning and "KRAKEN_API_KEY" in warning  # kraken is not listed: ignored
    assert "BN2_" not in warning and "BINANCE_API_KEY" not in warning.replace("BINANCE_APIKEY", "")
    assert "kk" not in warning and "typo" not in warning


def test_dotenv_warning_knows_the_venues_listed_in_the_toml_file(tmp_path, monkeypatch):
    for name in [*PARSERS, "TBX_CONFIG", "BN2_API_KEY"]:
        monkeypatch.delenv(name, raising=False)
    path = _toml(tmp_path, 'EXCHANGES = "paper,bn2=binance"\n')
    (tmp_path / ".env").write_text("BN2_API_KEY=k2\n")
    assert read_environment(tmp_path, config_file=path)[1] == []
    (tmp_path / ".env").write_text(f"TBX_CONFIG={path}\nBN2_API_KEY=k2\n")
    assert read_environment(tmp_path)[1] == []
    (tmp_path / ".env").write_text("BN2_API_KEY=k2\n")
    assert "BN2_API_KEY" in read_environment(tmp_path)[1][0]  # no EXCHANGES anywhere: not a setting


# ------------------------------------------------------------------------------------------------------
# Each value checked like its EXCHANGE_* twin, the error naming the venue's variable
# ------------------------------------------------------------------------------------------------------
VENUE_BAD_VALUES = [
    ("API_URL", "ftp://x", "expected http://host:port or https://host:port with no path"),
    ("API_URL", "http://host:1/api", "expected http://host:port or https://host:port with no path"),
    ("SANDBOX", "maybe", "expected true or false"),
    ("PAIRS", "BTCUSDT", "expected a comma-separated list of pairs written BASE_QUOTE"),
    ("TIMEOUT_MS", "50", "expected an integer from 100 to 600000"),
    ("POLL_MS", "10", "expected an integer from 50 to 600000"),
    ("STREAM", "on", "expected one of auto, off"),
]


def test_the_bad_value_table_covers_every_checked_venue_key():
    assert {k for k, _, _ in VENUE_BAD_VALUES} == set(VENUE_KEYS) - SECRET_KEYS
    assert set(VENUE_PARSERS) == set(VENUE_KEYS)


@pytest.mark.parametrize(("key", "value", "allowed"), VENUE_BAD_VALUES)
def test_a_bad_venue_value_names_the_venues_variable(key, value, allowed):
    message = _error(LIVE | BINANCE_KEYS | {"EXCHANGES": "paper,binance", f"BINANCE_{key}": value})
    assert message.startswith(f"BINANCE_{key}={value!r} is not allowed: ")
    assert allowed in message


@pytest.mark.parametrize(("key", "value", "allowed"), VENUE_BAD_VALUES)
def test_a_bad_venue_value_in_a_toml_section_names_the_variable_too(tmp_path, key, value, allowed):
    path = _toml(tmp_path, f'EXCHANGES = "bn2=binance"\n[bn2]\n{key.lower()} = {json.dumps(value)}\n')
    message = _error(LIVE | {"BN2_API_KEY": "k", "BN2_API_SECRET": "s"}, path)
    assert message.startswith(f"BN2_{key}={value!r} is not allowed: ") and allowed in message


def test_toml_types_are_checked_as_strictly_as_text(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "binance"\n[binance]\ntimeout_ms = true\n')
    assert _error(LIVE | BINANCE_KEYS, path).startswith("BINANCE_TIMEOUT_MS='True' is not allowed: expected an integer")


def test_a_url_with_credentials_is_refused_without_showing_them():
    message = _error(LIVE | BINANCE_KEYS | {"EXCHANGES": "binance", "BINANCE_API_URL": "http://u:hunter2@h:1"})
    assert message.startswith("BINANCE_API_URL='http://***@h:1' is not allowed")
    assert "hunter2" not in message


def test_an_unknown_key_in_a_venue_section_is_refused_naming_it(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "binance"\n[binance]\napi_kee = "x"\n')
    message = _error(LIVE | BINANCE_KEYS, path)
    assert message.startswith(f"'api_kee' in [binance] of {str(path)!r}: unknown venue setting; allowed are api_key")
    path = _toml(tmp_path, 'EXCHANGES = "binance"\n[binance.more]\nx = 1\n')
    assert "'more' in [binance]" in _error(LIVE | BINANCE_KEYS, path)


def test_a_section_for_a_venue_not_listed_is_refused_naming_it(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "binance"\n[kraken]\napi_key = "x"\n')
    message = _error(LIVE | BINANCE_KEYS, path)
    assert message.startswith(f"'kraken' in {str(path)!r}: unknown setting; a section [name] is allowed only")
    assert "(listed: binance)" in message
    path = _toml(tmp_path, '[binance]\napi_key = "x"\n')  # no EXCHANGES at all
    assert "(listed: none)" in _error({}, path)


def test_a_flat_variable_of_a_venue_not_listed_is_refused_in_the_file(tmp_path):
    path = _toml(tmp_path, 'EXCHANGES = "paper"\nKRAKEN_API_KEY = "hunter2"\n')
    message = _error({}, path)
    assert message.startswith("'KRAKEN_API_KEY' in ") and "unknown setting" in message
    assert "hunter2" not in message


def test_venue_settings_is_not_a_variable(tmp_path):
    assert "VENUE_SETTINGS" not in PARSERS
    s = load_settings({"VENUE_SETTINGS": '{"BINANCE": {"API_KEY": "x"}}'})
    assert s.VENUE_SETTINGS == {}  # not read from a variable of that name
    path = _toml(tmp_path, 'VENUE_SETTINGS = "x"\n')
    assert "unknown setting" in _error({}, path)


def test_the_paper_venue_takes_only_pairs():
    v = _venues({"EXCHANGES": "paper", "PAPER_PAIRS": "BTC_USDT"})
    assert v["paper"].pairs == ("BTC_USDT",)
    message = _error({"EXCHANGES": "paper", "PAPER_API_KEY": "hunter2"})
    assert message.startswith("PAPER_API_KEY='***' is not allowed: paper is the paper venue, which takes only PAPER")
    assert "hunter2" not in message
    assert _error({"EXCHANGES": "sim=paper", "SIM_SANDBOX": "true"}).startswith("SIM_SANDBOX='true' is not allowed")


# ------------------------------------------------------------------------------------------------------
# The specs' own key names
# ------------------------------------------------------------------------------------------------------
def test_binance_testnet_keys_are_a_binance_venues_sandbox_keys():
    env = LIVE | {"EXCHANGES": "binance", "BINANCE_SANDBOX": "true"}
    env |= {"BINANCE_TESTNET_API_KEY": "tk", "BINANCE_TESTNET_SECRET": "ts"}
    b = _venues(env)["binance"]
    assert (b.api_key, b.api_secret, b.sandbox) == ("tk", "ts", True)
    bn2 = _venues(env | {"EXCHANGES": "bn2=binance", "BN2_SANDBOX": "true"})["bn2"]
    assert (bn2.api_key, bn2.api_secret) == ("tk", "ts")
    assert _venues(env | BINANCE_KEYS)["binance"].api_key == "bk-1"  # the venue's own keys win


def test_binance_testnet_keys_are_not_the_live_binance_keys():
    env = LIVE | {"EXCHANGES": "binance", "BINANCE_TESTNET_API_KEY": "tk", "BINANCE_TESTNET_SECRET": "ts"}
    message = _error(env)
    assert message == (
        "BINANCE_API_KEY / BINANCE_API_SECRET are not set: LIVE_TRADING=true on binance needs the venue's keys "
        "(or, with BINANCE_SANDBOX=true, BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_SECRET)"
    )


def test_alpaca_keys_are_any_alpaca_venues_keys():
    assert _venues(THREE)["alpaca"].api_key == "ak-1"
    al2 = _venues(LIVE | ALPACA_KEYS | {"EXCHANGES": "al2=alpaca"})["al2"]
    assert (al2.api_key, al2.api_secret) == ("ak-1", "as-1")
    own = _venues(LIVE | ALPACA_KEYS | {"EXCHANGES": "al2=alpaca", "AL2_API_KEY": "k", "AL2_API_SECRET": "s"})
    assert (own["al2"].api_key, own["al2"].api_secret) == ("k", "s")


# ------------------------------------------------------------------------------------------------------
# Rules together
# ------------------------------------------------------------------------------------------------------
def test_a_live_venue_needs_live_trading():
    message = _error({"EXCHANGES": "paper,binance"} | BINANCE_KEYS)
    assert message.startswith("EXCHANGES='paper,binance' is not allowed without LIVE_TRADING=true: binance is a live")
    assert "are live venues" in _error({"EXCHANGES": "binance,alpaca"})
    assert "PAPER_TRADING" in _error({"EXCHANGES": "binance", "LIVE_TRADING": "true"})  # not with paper trading


def test_only_paper_venues_work_in_paper_mode_and_not_live():
    s = load_settings({"EXCHANGES": "paper"})
    assert [v.name for v in venue_configs(s)] == ["paper"] and s.MARKET_DATA == "synthetic"
    assert [v.name for v in venue_configs(load_settings({"EXCHANGES": "sim=paper"}))] == ["sim"]
    assert _error(LIVE | {"EXCHANGES": "paper"}).startswith(
        "EXCHANGES='paper' is not allowed with LIVE_TRADING=true: expected at least one live venue"
    )


def test_several_paper_venues_each_with_its_name():
    venues = venue_configs(load_settings({"EXCHANGES": "paper,sim=paper"}))
    assert [(v.name, v.paper) for v in venues] == [("paper", True), ("sim", True)]


def test_each_live_venue_needs_its_keys():
    env = LIVE | {"EXCHANGES": "paper,binance,bn2=binance"} | BINANCE_KEYS
    assert _error(env).startswith("BN2_API_KEY / BN2_API_SECRET are not set: LIVE_TRADING=true on bn2 needs")
    assert _error(env | {"BN2_API_KEY": "k2"}).startswith("BN2_API_SECRET is not set: LIVE_TRADING=true on bn2")
    assert _error(env | {"BN2_API_SECRET": "s2"}).startswith("BN2_API_KEY is not set")
    sandbox = _error(LIVE | {"EXCHANGES": "binance", "BINANCE_SANDBOX": "true"})
    assert sandbox == (
        "BINANCE_API_KEY / BINANCE_API_SECRET are not set: LIVE_TRADING=true on binance needs the venue's keys "
        "(or BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_SECRET)"
    )
    assert _error(LIVE | {"EXCHANGES": "al2=alpaca"}).endswith("(or ALPACA_API_KEY / ALPACA_API_SECRET)")
    assert _error(LIVE | {"EXCHANGES": "alpaca"}).endswith("on alpaca needs the venue's keys")
    assert _error(LIVE | {"EXCHANGES": "kraken"}).endswith("on kraken needs the venue's keys")


def test_the_single_exchanges_keys_are_not_a_listed_venues():
    env = LIVE | {"EXCHANGES": "binance", "EXCHANGE": "binance", "EXCHANGE_API_KEY": "k", "EXCHANGE_API_SECRET": "s"}
    assert _error(env).startswith("BINANCE_API_KEY / BINANCE_API_SECRET are not set")


def test_live_trading_with_venues_needs_api_token():
    assert _error(THREE | {"API_TOKEN": ""}).startswith("API_TOKEN='' is not allowed with LIVE_TRADING=true")


def test_market_data_with_several_venues():
    assert load_settings(THREE).MARKET_DATA == "venue"  # a live venue listed: its books
    assert load_settings(THREE | {"MARKET_DATA": "none"}).MARKET_DATA == "none"
    assert _error(THREE | {"MARKET_DATA": "synthetic"}).startswith(
        "MARKET_DATA='synthetic' is not allowed with LIVE_TRADING=true"
    )
    assert _error({"EXCHANGES": "paper", "MARKET_DATA": "venue"}).startswith(
        "MARKET_DATA='venue' is not allowed in paper mode"
    )


def test_paper_books_names_a_listed_live_venue():
    s = load_settings(THREE | {"PAPER_BOOKS": "Alpaca"})
    assert s.PAPER_BOOKS == "alpaca" and warnings_for(s) == []
    assert _error(THREE | {"PAPER_BOOKS": "kraken"}) == (
        "PAPER_BOOKS='kraken' is not allowed: expected a live venue listed in EXCHANGES (binance, alpaca)"
    )
    assert _error(THREE | {"PAPER_BOOKS": "paper"}).startswith("PAPER_BOOKS='paper' is not allowed")
    # paper mode: any venue's books (read without keys with MARKET_DATA=venue, or named so by another publisher)
    s = load_settings({"PAPER_BOOKS": "binance", "MARKET_DATA": "venue"})
    assert [(v.name, v.ccxt_id, v.api_key) for v in market_data_venues(s)] == [("binance", "binance", "")]
    assert market_data_venues(load_settings({"PAPER_BOOKS": "binance"})) == []  # synthetic: no venue is read
    s = load_settings(LIVE | BINANCE_KEYS | {"EXCHANGES": "binance", "PAPER_BOOKS": "binance"})
    assert warnings_for(s) == ["PAPER_BOOKS='binance' has no effect: no paper venue is listed in EXCHANGES"]


def test_a_venue_pair_must_be_in_pairs():
    env = THREE | {"PAIRS": "BTC_USDT,ETH_USDT", "BINANCE_PAIRS": "BTC_USDT,SOL_USDT,DOGE_USDT"}
    assert _error(env) == (
        "BINANCE_PAIRS='BTC_USDT,SOL_USDT,DOGE_USDT' is not allowed: SOL_USDT, DOGE_USDT are not in PAIRS "
        "(BTC_USDT,ETH_USDT); a venue trades pairs of PAIRS only (risk limits and market data are kept per pair of "
        "PAIRS): add them to PAIRS"
    )
    assert _error({"EXCHANGES": "paper", "PAPER_PAIRS": "SOL_USDT"}).startswith("PAPER_PAIRS='SOL_USDT' is not")
    ok = _venues(env | {"PAIRS": "BTC_USDT,ETH_USDT,SOL_USDT,DOGE_USDT"})
    assert ok["binance"].pairs == ("BTC_USDT", "SOL_USDT", "DOGE_USDT")


def test_one_account_listed_twice_is_refused():
    env = LIVE | BINANCE_KEYS | {"EXCHANGES": "binance,bn2=binance", "BN2_API_KEY": "bk-1", "BN2_API_SECRET": "x"}
    message = _error(env)
    assert message.startswith("EXCHANGES='binance,bn2=binance' is not allowed: binance and bn2 are one account")
    assert "bk-1" not in message
    load_settings(env | {"BN2_API_URL": "http://127.0.0.1:9002"})  # another server (a local test exchange)
    load_settings(env | {"BN2_SANDBOX": "true"})  # the testnet is another account


def test_base_currency_rule_is_unchanged():
    assert _error(THREE | {"BASE_CURRENCY": "EUR"}).startswith("PAIRS='BTC_USDT,ETH_USDT,XMR_USDT,RVN_USDT' is not")


# ------------------------------------------------------------------------------------------------------
# The single EXCHANGE keeps working; EXCHANGES wins
# ------------------------------------------------------------------------------------------------------
def test_the_single_exchange_is_as_before():
    env = LIVE | {
        "EXCHANGE": "binance",
        "EXCHANGE_API_KEY": "k",
        "EXCHANGE_API_SECRET": "s",
        "EXCHANGE_PASSWORD": "p",
        "EXCHANGE_SANDBOX": "true",
        "EXCHANGE_API_URL": "http://127.0.0.1:9001",
        "EXCHANGE_TIMEOUT_MS": "2000",
        "EXCHANGE_POLL_MS": "300",
        "EXCHANGE_STREAM": "off",
        "PAIRS": "BTC_USDT",
    }
    s = load_settings(env)
    assert s.VENUE_SETTINGS == {} and warnings_for(s) == []
    assert venue_configs(s) == [
        VenueConfig(
            "binance", "binance", 0, ("BTC_USDT",), "k", "s", "p", True, "http://127.0.0.1:9001", 2000, 300, "off"
        )
    ]
    assert venue_configs(load_settings({})) == [VenueConfig("paper", "paper", 0, Settings().PAIRS)]
    assert _error(LIVE | {"EXCHANGE": "binance"}).startswith("EXCHANGE_API_KEY / EXCHANGE_API_SECRET are not set")


def test_venue_variables_are_not_read_without_exchanges():
    s = load_settings(LIVE | {"EXCHANGE": "binance", "EXCHANGE_API_KEY": "k", "EXCHANGE_API_SECRET": "s"} | {
        "BINANCE_API_URL": "ftp://not-read", "BINANCE_PAIRS": "NOT A PAIR"})  # fmt: skip
    assert s.VENUE_SETTINGS == {} and venue_configs(s)[0].pairs == Settings().PAIRS


def test_exchanges_wins_over_exchange_with_a_warning():
    env = THREE | {"EXCHANGE": "kraken", "EXCHANGE_API_KEY": "hunter2", "EXCHANGE_API_URL": "http://x:1"}
    s = load_settings(env)
    assert [v.name for v in venue_configs(s)] == ["binance", "alpaca", "paper"]
    first, second = warnings_for(s)
    assert first.startswith("EXCHANGE='kraken' is ignored: EXCHANGES='binance,alpaca,paper' is set and wins")
    assert second.startswith("EXCHANGE_API_KEY, EXCHANGE_API_URL are ignored: EXCHANGES is set")
    assert "hunter2" not in first + second
    assert warnings_for(load_settings(THREE)) == []  # EXCHANGE left at paper: nothing to say


def test_a_venue_sandbox_follows_exchange_sandbox_unless_set():
    sandbox = {"EXCHANGE_SANDBOX": "true"}
    assert [v.sandbox for v in venue_configs(load_settings(THREE | sandbox)) if not v.paper] == [True, True]
    assert warnings_for(load_settings(THREE | sandbox)) == []
    own = THREE | sandbox | {"BINANCE_SANDBOX": "false"}
    assert [v.sandbox for v in venue_configs(load_settings(own)) if not v.paper] == [False, True]


# ------------------------------------------------------------------------------------------------------
# Secrets: never in tbx config, redacted(), a VenueConfig's repr or an error
# ------------------------------------------------------------------------------------------------------
SECRETS = {
    "BINANCE_API_KEY": "hunter2-bk",
    "BINANCE_API_SECRET": "hunter2-bs",
    "BINANCE_PASSWORD": "hunter2-bp",
    "BN2_API_KEY": "hunter2-k2",
    "BN2_API_SECRET": "hunter2-s2",
    "BN2_PASSWORD": "hunter2-p2",
}
TWO_VENUES = LIVE | SECRETS | {"EXCHANGES": "paper,binance,bn2=binance", "BN2_API_URL": "http://127.0.0.1:9002"}


def test_tbx_config_prints_no_secret_of_any_venue(tmp_path, monkeypatch, capsys):
    from tbx.cli import main

    for name in [*PARSERS, "TBX_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    for name, value in TWO_VENUES.items():
        monkeypatch.setenv(name, value)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "tok-live" not in out
    printed = json.loads(out)["VENUE_SETTINGS"]
    assert printed["BINANCE"] == {"API_KEY": "***", "API_SECRET": "***", "PASSWORD": "***"}
    assert printed["BN2"]["API_URL"] == "http://127.0.0.1:9002"


def test_redacted_and_repr_hide_every_venue_secret():
    s = load_settings(TWO_VENUES)
    out = s.redacted()
    assert "hunter2" not in repr(out)
    assert all(out["VENUE_SETTINGS"][n][k] == "***" for n in ("BINANCE", "BN2") for k in SECRET_KEYS)
    assert s.VENUE_SETTINGS["BN2"]["API_KEY"] == "hunter2-k2"  # the settings themselves keep the values
    for v in venue_configs(s):
        assert "hunter2" not in repr(v) and "hunter2" not in str(v)


@pytest.mark.parametrize(
    "extra",
    [
        {"PORT": "0"},
        {"LIVE_TRADING": "false"},
        {"PAIRS": "ETH_USDT", "BINANCE_PAIRS": "BTC_USDT"},
        {"BN2_API_URL": "http://127.0.0.1:9002/x"},
        {"BN2_API_KEY": "hunter2-bk", "BN2_API_SECRET": "hunter2-bs", "BN2_API_URL": ""},  # one account twice
        {"PAPER_API_KEY": "hunter2-pk"},
        {"BINANCE_API_SECRET": ""},
    ],
    ids=lambda e: ",".join(e),
)
def test_no_venue_error_echoes_a_secret(extra):
    env = TWO_VENUES | {name: f"hunter2-{name.lower()}" for name in SECRET_FIELDS} | extra
    assert "hunter2" not in _error(env)
