"""`.env` in the working directory: read with python-dotenv, literally; the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import PARSERS, ConfigError, load_settings, read_environment


@pytest.fixture
def clean_env(monkeypatch):
    for name in [*PARSERS, "TBX_CONFIG"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_values_of_the_file_are_read(tmp_path: Path, clean_env):
    (tmp_path / ".env").write_text(
        "# comment\nPORT=3999\nexport LOG_LEVEL=debug\nPAIRS='BTC_USDT,ETH_USDT'\nNATS_PORT=4333\n\nAPI_TOKEN=\n"
    )
    env, warnings = read_environment(tmp_path)
    s = load_settings(env)
    assert (s.PORT, s.LOG_LEVEL, s.PAIRS, s.NATS_PORT, s.API_TOKEN) == (
        3999,
        "DEBUG",
        ("BTC_USDT", "ETH_USDT"),
        4333,
        "",
    )
    assert warnings == []


def test_the_environment_wins_over_the_file_even_when_empty(tmp_path: Path, clean_env):
    (tmp_path / ".env").write_text("PORT=3999\nNATS_URL=nats://file.example:4222\n")
    clean_env.setenv("PORT", "4001")
    clean_env.setenv("NATS_URL", "")
    s = load_settings(read_environment(tmp_path)[0])
    assert s.PORT == 4001 and s.NATS_URL == ""


def test_values_are_taken_literally(tmp_path: Path, clean_env):
    clean_env.setenv("HOME", "/home/someone")
    (tmp_path / ".env").write_text("API_TOKEN=a${HOME}$b\\n\n")
    s = load_settings(read_environment(tmp_path)[0])
    assert s.API_TOKEN == "a${HOME}$b\\n"


def test_no_file_is_just_the_environment(tmp_path: Path, clean_env):
    clean_env.setenv("PORT", "4002")
    env, warnings = read_environment(tmp_path)
    assert load_settings(env).PORT == 4002 and warnings == []


def test_names_that_are_not_settings_are_named_in_a_warning_without_their_values(tmp_path: Path, clean_env):
    (tmp_path / ".env").write_text("NAST_URL=nats://x:secret@h:1\nPORT=3999\nTBX_CONFIG=\n")
    env, warnings = read_environment(tmp_path)
    assert load_settings(env).PORT == 3999
    assert len(warnings) == 1 and "NAST_URL" in warnings[0] and "secret" not in warnings[0]
    assert "TBX_CONFIG" not in warnings[0]


def test_a_wrong_value_in_the_file_is_a_config_error_naming_it(tmp_path: Path, clean_env):
    (tmp_path / ".env").write_text("MAX_POSITION_SIZE=lots\n")
    with pytest.raises(ConfigError, match="MAX_POSITION_SIZE='lots' is not allowed"):
        load_settings(read_environment(tmp_path)[0])


def test_tbx_config_named_in_the_file_is_used(tmp_path: Path, clean_env):
    (tmp_path / "tbx.toml").write_text("PORT = 3777\nLOG_LEVEL = 'WARNING'\n")
    (tmp_path / ".env").write_text(f"TBX_CONFIG={tmp_path / 'tbx.toml'}\nLOG_LEVEL=ERROR\n")
    s = load_settings(read_environment(tmp_path)[0])
    assert s.PORT == 3777 and s.LOG_LEVEL == "ERROR"  # .env wins over the TOML file
