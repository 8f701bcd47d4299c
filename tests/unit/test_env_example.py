"""`.env.example` lists every setting with its default, and nothing else."""

from __future__ import annotations

from pathlib import Path

from config.settings import PARSERS, load_settings

ROOT = Path(__file__).resolve().parents[2]


def entries() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_env_example_lists_every_setting():
    assert set(entries()) == set(PARSERS)


def test_env_example_values_are_the_defaults():
    assert load_settings(entries()) == load_settings({})
