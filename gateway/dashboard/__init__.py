"""The live trading dashboard: one static page served by the gateway (issue 21).

``GET /`` and ``GET /dashboard`` answer ``static/index.html``; ``GET /dashboard/static/<file>`` the page's
files (its script, its style sheet, the vendored chart library). They need no token, even with API_TOKEN
set (``gateway/problems.py`` lets these paths through): the page holds no data, and every API call it makes
carries the token the trader types in. Every answer carries a Content-Security-Policy that allows only this
origin (no inline script or style, no other host), and the page's files are packaged with the service
(they live inside the ``gateway`` package). Not part of the OpenAPI document: it is a page, not the API.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.problems import ApiError

STATIC = Path(__file__).parent / "static"
PAGE_PATHS = ("/", "/dashboard")
STATIC_PREFIX = "/dashboard/static/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".md": "text/markdown",
    "": "text/plain",  # LICENSE
}
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(path: Path, cache: str) -> web.FileResponse:
    ctype = CONTENT_TYPES.get(path.suffix)
    if ctype is None or not path.is_file():
        raise ApiError(404, "Not Found", "no such file of the dashboard", code="NOT_FOUND")
    charset = "; charset=utf-8" if ctype.startswith("text/") or ctype == "image/svg+xml" else ""
    return web.FileResponse(
        path, headers={**HEADERS, "Content-Type": ctype + charset, "Cache-Control": cache}
    )  # fmt: skip


async def page(request: web.Request) -> web.FileResponse:
    return _file(STATIC / "index.html", "no-cache")


async def static(request: web.Request) -> web.FileResponse:
    """A file of ``static/`` (subfolders too), never one outside it (``..``, symlinks out, absolute paths)."""
    name = request.match_info["name"]
    root = STATIC.resolve()
    missing = ApiError(404, "Not Found", "no such file of the dashboard", code="NOT_FOUND")
    if "\x00" in name:  # a NUL byte cannot name a file (Path.resolve would raise): 404, never a 500
        raise missing
    try:
        target = (root / name).resolve()
        if not target.is_relative_to(root) or any(part.startswith(".") for part in Path(name).parts):
            raise missing
        return _file(target, "no-cache")
    except (ValueError, OSError):  # any other name the file system refuses (too long, ...): not one of ours
        raise missing from None


def register(app: web.Application) -> None:
    for p in PAGE_PATHS:
        app.router.add_get(p, page)
    app.router.add_get(STATIC_PREFIX + "{name:.+}", static)
