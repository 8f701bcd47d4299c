"""The OpenAPI 3.1 document, generated from the endpoint table and the msgspec schemas, and the
browsable page that shows it (``/api/docs``: one local HTML file, no CDN)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from gateway.spec import ENDPOINTS, Endpoint, Param
from schemas.messages import Fill
from schemas.rest import Problem

# what a decimal string in a body may look like (the server refuses "", "abc", "NaN", "Infinity")
DECIMAL_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DECIMAL = {
    "type": ["number", "string"],
    "pattern": DECIMAL_PATTERN,
    "description": (
        "a decimal: a JSON number in answers (the shortest exact form: 0, 0.1, 60162), a number or a decimal "
        "string in bodies"
    ),
}
DOCS_HTML = Path(__file__).with_name("docs.html")
COMMON_ERRORS = {
    400: "Malformed JSON",
    401: "Missing or wrong Bearer token (when API_TOKEN is set)",
    404: "No such endpoint or resource",
    405: "Method not allowed on this path",
    413: "Body larger than MAX_BODY_BYTES",
    426: "Upgrade Required: a WebSocket endpoint asked without the WebSocket upgrade",
    415: "The body is not application/json",
    422: "Validation failed: the offending field is named",
    500: "An error inside the service (details in its logs, never here)",
    503: "The actor that must answer is not running, cannot answer right now (a JetStream stream without a "
    "leader during an election, after the service's own retries: with Retry-After), or trading is halted",
    504: "The actor that must answer did not answer in time",
}
TITLES = {
    409: "Conflict: a duplicate client id, or a command on a closed order",
    502: "The actor that must answer failed",
    501: "Not Implemented: an action whose endpoint (or a filter) this build of the service does not have",
}


def _fix_decimals(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("format") == "decimal":
            # bounds a field states (minimum, maximum...) apply to the number form; the pattern to the string
            extra = {k: v for k, v in node.items() if k not in ("type", "format")}
            return {**DECIMAL, **extra}
        return {k: _fix_decimals(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_decimals(v) for v in node]
    return node


def _parameter(p: Param) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": p.name, "in": p.where, "required": p.required, "schema": p.schema, "description": p.description,
    }  # fmt: skip
    if p.where == "query":  # ?limit= is the same as leaving limit out
        out["allowEmptyValue"] = True
        out["description"] = f"{p.description} (empty: as if not given)".lstrip()
    return out


def document(endpoints: list[Endpoint], *, version: str, token: bool) -> dict[str, Any]:
    types: list[Any] = [Problem, Fill]  # Fill: the fill events of /api/stream and /api/ws
    for ep in endpoints:
        if ep.body is not None:
            types.append(ep.body)
        types.extend(t for t, _ in ep.responses.values() if t is not None)
        types.extend(ep.events)
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = {id(t): r for t, r in zip(types, refs, strict=True)}
    problem = {"application/problem+json": {"schema": ref_of[id(Problem)]}}
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        name = re.sub(r"[^A-Za-z0-9]+", "_", ep.path.strip("/")).strip("_")
        op: dict[str, Any] = {
            "operationId": f"{ep.method.lower()}_{name}",
            "summary": ep.summary,
            "tags": [ep.tag],
            "responses": {},
        }
        if ep.description:
            op["description"] = ep.description
        if ep.params:
            op["parameters"] = [_parameter(p) for p in ep.params]
        if ep.body is not None:
            op["requestBody"] = {
                "required": ep.body_required,
                "content": {"application/json": {"schema": ref_of[id(ep.body)]}},
            }
        for status, (t, desc) in sorted(ep.responses.items()):
            resp: dict[str, Any] = {"description": desc}
            if t is not None:
                resp["content"] = {ep.media: {"schema": ref_of[id(t)]}}
            elif status != 101:
                schema = {"type": "object"} if ep.media == "application/json" else {"type": "string"}
                resp["content"] = {ep.media: {"schema": schema}}
            op["responses"][str(status)] = resp
        codes = set(ep.errors) | {404, 500}
        if ep.body is not None:
            codes |= {400, 413, 415, 422}
        if any(p.where == "query" for p in ep.params):
            codes.add(422)
        if token and not ep.open:
            codes.add(401)
            op["security"] = [{"bearer": []}]
        for status in sorted(codes):
            desc = COMMON_ERRORS.get(status) or TITLES.get(status, "An error")
            op["responses"].setdefault(str(status), {"description": desc, "content": problem})
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "trading-bot-execution",
            "version": version,
            "description": (
                "The execution service of the trading-bot family: orders and signals in, risk-checked, routed to "
                "a paper or real venue, fills tracked, books kept. Every error is application/problem+json."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": _fix_decimals(components)},
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


async def get_openapi(request: web.Request) -> web.Response:
    from gateway.common import SETTINGS
    from gateway.health import VERSION

    doc = document(request.app[ENDPOINTS], version=VERSION, token=bool(request.app[SETTINGS].API_TOKEN))
    return web.Response(body=msgspec.json.encode(doc), content_type="application/json")


async def get_docs(request: web.Request) -> web.Response:
    return web.Response(text=DOCS_HTML.read_text(), content_type="text/html")
