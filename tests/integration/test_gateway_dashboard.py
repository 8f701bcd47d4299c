"""The dashboard's serving (gateway/dashboard) over real HTTP: the page and its files, their types, the
Content-Security-Policy, the paths that need no token (and those that still do), no way out of the folder,
and the vendored chart library being the one VENDOR.md names."""

from __future__ import annotations

import hashlib
import re

import aiohttp
import pytest

from gateway.dashboard import CSP, STATIC
from tests.integration.test_gateway import start_gateway

TOKEN = "dash-token"
PROBLEM = "application/problem+json"


@pytest.fixture
async def gw(nats_url, prefix):
    gateway, base = await start_gateway(nats_url, prefix, API_TOKEN=TOKEN)
    async with aiohttp.ClientSession() as http:
        yield http, base
    await gateway.stop()


async def get(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, dict[str, str], bytes]:
    async with http.get(url, headers=headers) as r:
        return r.status, r.content_type, dict(r.headers), await r.read()


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard/static/app.js", "text/javascript"),
        ("/dashboard/static/style.css", "text/css"),
        ("/dashboard/static/favicon.svg", "image/svg+xml"),
        ("/dashboard/static/vendor/lightweight-charts.standalone.production.js", "text/javascript"),
        ("/dashboard/static/vendor/LICENSE", "text/plain"),
    ],
)
async def test_the_page_and_its_files_are_served_without_a_token_with_a_self_only_csp(gw, path, ctype):
    http, base = gw
    status, got, headers, body = await get(http, base + path)
    assert (status, got) == (200, ctype)
    assert headers["Content-Security-Policy"] == CSP and headers["X-Content-Type-Options"] == "nosniff"
    assert body


@pytest.mark.parametrize(
    "path",
    [
        "/api/status",  # the API still needs the token ...
        "/api/orders",
        "/dashboardx",  # ... and so does anything that only looks like the page
        "/dashboard/static",
        "/dashboard/x",
    ],
)
async def test_everything_else_still_needs_the_token(gw, path):
    http, base = gw
    status, ctype, _, _ = await get(http, base + path)
    assert (status, ctype) == (401, "application/problem+json")


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/%2e%2e/__init__.py",
        "/dashboard/static/..%2f__init__.py",
        "/dashboard/static/vendor/%2e%2e/%2e%2e/__init__.py",
        "/dashboard/static/nope.js",
        "/dashboard/static/.hidden",
        "/dashboard/static/vendor",
        "/dashboard/static/a%00.js",  # review F7: an embedded NUL byte was a 500 with a traceback
        "/dashboard/static/%00",
        "/dashboard/static/vendor/x%00/../app.js",
        "/dashboard/static/" + "a" * 5000 + ".js",  # a name too long for the file system
    ],
)
async def test_no_file_outside_the_static_folder_nor_a_missing_one(gw, path):
    http, base = gw
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}"}):  # a token opens no way out either
        status, ctype, _, body = await get(http, base + path, **headers)
        # 404; or 401 without the token when the path, its dot segments resolved, is outside the page's
        assert (status, ctype) in ((404, PROBLEM), (401 if not headers else 404, PROBLEM)), body
        assert b"import" not in body


def test_the_csp_allows_only_this_origin():
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == directives["script-src"] == directives["connect-src"] == "'self'"
    assert directives["style-src"] == "'self'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CSP and "http" not in CSP and "*" not in CSP


def test_the_page_loads_nothing_from_elsewhere_and_nothing_inline():
    html = (STATIC / "index.html").read_text()
    for url in re.findall(r"""<(?:script|link|img|iframe)\b[^>]*(?:src|href)=["']([^"']+)""", html):
        assert url.startswith("/dashboard/static/"), url
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html), "an inline script (the CSP refuses it)"
    assert "<style" not in html and " style=" not in html, "inline style (the CSP refuses it)"
    script = (STATIC / "app.js").read_text()
    assert "localStorage" not in script and "EventSource" not in script  # sessionStorage; fetch with headers
    assert "innerHTML" not in script  # rows are text: nothing from the API is ever parsed as HTML


def test_the_vendored_chart_library_is_the_one_vendor_md_names():
    vendor = STATIC / "vendor"
    notes = (vendor / "VENDOR.md").read_text()
    lib = (vendor / "lightweight-charts.standalone.production.js").read_bytes()
    assert hashlib.sha256(lib).hexdigest() in notes
    version = re.search(r"\| version \| ([0-9.]+) \|", notes)
    assert version and f"Lightweight Charts™ v{version[1]}".encode() in lib[:300]
    assert "sha512-" in notes and "npm pack lightweight-charts@" in notes
    assert "Apache License" in (vendor / "LICENSE").read_text()
