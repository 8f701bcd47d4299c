"""The layout's import rules (README "Development"), kept by a test: pure logic in domain/ depends on nothing but
schemas, the gateway never imports an actor, and no layer reaches one above it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"schemas", "domain", "bus", "config", "credentials", "actors", "gateway", "tbx", "bench", "tests"}
MAY_IMPORT: dict[str, set[str]] = {
    "schemas": set(),
    "domain": {"schemas"},
    "bus": {"schemas", "domain"},
    "config": {"schemas", "domain"},
    "credentials": {"schemas", "domain", "config", "bus"},
    "gateway": {"schemas", "domain", "bus", "config", "credentials"},
    "actors": {"schemas", "domain", "bus", "config", "credentials"},
}


def imports_of(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def breaches() -> list[str]:
    out = []
    for layer, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, module in imports_of(path):
                top = module.split(".")[0]
                if top in OURS and top != layer and top not in allowed:
                    out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_every_layer_imports_only_what_the_layout_allows() -> None:
    assert breaches() == []


def test_the_check_sees_a_breach(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom actors.risk_gate import RiskGate\nfrom . import y\n")
    assert imports_of(bad) == [(1, "os"), (2, "actors.risk_gate")]


def test_domain_does_no_io() -> None:
    """domain/ is pure: no asyncio, no sockets, no NATS, no files, no HTTP."""
    io = {"asyncio", "nats", "aiohttp", "socket", "ccxt", "hvac", "requests", "subprocess"}
    found = [
        f"{p.relative_to(ROOT)}:{line} imports {m}"
        for p in sorted((ROOT / "domain").rglob("*.py"))
        for line, m in imports_of(p)
        if m.split(".")[0] in io
    ]
    assert found == []
