"""``tbx status``: is the service running, and where is its NATS? Reads DATA_DIR/nats.url (written by
``tbx run``) and GET /api/health, prints both. Exit 0 healthy, 1 running but unhealthy, 3 not running."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from config.settings import Settings

NATS_URL_FILE = "nats.url"
EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_NOT_RUNNING = 0, 1, 3


def health_url(settings: Settings) -> str:
    host = settings.HOST
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.PORT}/api/health"


def read_url_file(settings: Settings) -> tuple[Path, str | None]:
    path = Path(settings.DATA_DIR) / NATS_URL_FILE
    try:
        return path, path.read_text().strip() or None
    except OSError:
        return path, None


def get_health(url: str, timeout: float = 5.0) -> tuple[int | None, dict[str, Any] | None, str]:
    """(HTTP status, body, error): status None when nothing answers."""
    try:
        # our own loopback address: never through an HTTP proxy of the environment
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), ""
    except urllib.error.HTTPError as e:  # 503 when a part is down: still an answer
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        return e.code, body, ""
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        return None, None, str(reason)


def status(settings: Settings) -> int:
    path, nats_url = read_url_file(settings)
    url = health_url(settings)
    code, body, error = get_health(url)
    if nats_url:
        print(f"NATS_URL={nats_url}    (from {path})")
    else:
        print(f"NATS_URL unknown: no {path} (`tbx run` writes it while it runs)")
    if code is None:
        print(f"health: {url} -> no answer ({error})")
        left = f"; {path} is left from a run that did not stop cleanly" if nats_url else ""
        print(f"tbx status: not running{left}. Start it with `make run` or `tbx run`.")
        return EXIT_NOT_RUNNING
    state = body.get("status") if isinstance(body, dict) else None
    if not isinstance(body, dict) or state is None:
        print(f"health: {url} -> HTTP {code}, not this service's answer")
        return EXIT_UNHEALTHY
    actors = body.get("actors") or {}
    running = sorted(n for n, a in actors.items() if isinstance(a, dict) and a.get("status") == "running")
    down = sorted(f"{n} {a.get('status')}" for n, a in actors.items() if isinstance(a, dict) and n not in running)
    detail = f"{body.get('mode', '?')} mode, {len(running)} of {len(actors)} actors running"
    if down:
        detail += f"; not running: {', '.join(down)}"
    print(f"health: {url} -> HTTP {code} {state} ({detail})")
    return EXIT_HEALTHY if code == 200 and state == "healthy" else EXIT_UNHEALTHY
