"""EXCHANGE_API_URL: point ccxt's REST URLs at another host (a local test exchange, a proxy, a region).

``rewrite_api_urls(ex.urls["api"], "http://127.0.0.1:8080")`` replaces the scheme and host (and port) of
every http(s) URL in the nested dicts/lists/strings and keeps each path; ``wss://`` URLs (ccxt.pro
streams) are left as they are. Host templates such as ``https://api.{hostname}`` are replaced whole.
"""

from __future__ import annotations

import re
from typing import Any

_HTTP_RE = re.compile(r"^https?://[^/]*", re.IGNORECASE)
_BASE_RE = re.compile(r"^(https?)://([^\s/?#@]+)/?$", re.IGNORECASE)


def parse_base(base: str) -> str:
    """``http(s)://host[:port]`` without a trailing slash; ValueError for anything else (a path, a query,
    credentials)."""
    m = _BASE_RE.match(base.strip())
    if not m:
        raise ValueError(f"expected http(s)://host[:port] with no path, got {base!r}")
    return f"{m.group(1).lower()}://{m.group(2)}"


def rewrite_url(url: str, base: str) -> str:
    return _HTTP_RE.sub(lambda _m: base, url, count=1) if _HTTP_RE.match(url) else url


def rewrite_api_urls(urls: Any, base: str) -> Any:
    """A copy of ``urls`` (ccxt's ``urls['api']``: a string or nested dicts/lists) with every http(s) URL
    moved to ``base``."""
    base = parse_base(base)
    if isinstance(urls, str):
        return rewrite_url(urls, base)
    if isinstance(urls, dict):
        return {k: rewrite_api_urls(v, base) for k, v in urls.items()}
    if isinstance(urls, list):
        return [rewrite_api_urls(v, base) for v in urls]
    return urls
