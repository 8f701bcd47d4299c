"""The paper-to-live transition (issue 18): its state and milestones, initiate, approve, reject, revert.

The risk-gate owns the transition (actors/transition.py); these endpoints only ask it."""

from __future__ import annotations

from typing import Annotated

import msgspec
from aiohttp import web

from gateway.common import BUS, ask, read_json
from gateway.problems import PROBLEM_TYPE, REQUEST_ID, ApiError, json_response, rest_json
from gateway.spec import Endpoint, add
from schemas.messages import Empty, Milestone, TransitionCommand, TransitionReply, TransitionView
from schemas.rest import Problem

GATE = "the risk-gate"
COMMAND_TIMEOUT_S = 20.0  # (a revert answers at once: its cleanup goes on in the risk-gate)
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class StepBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """initiate / revert: who asks and why (both optional, kept on the audit trail)."""

    by: Text | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class DecisionBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """approve / reject: ``by`` (who decides) is required; ``reason`` is kept with it."""

    by: Text
    reason: Annotated[str, msgspec.Meta(max_length=1000)] | None = None


class TransitionProblem(Problem):
    """A refused step: ``unmet`` names the milestones not met (MILESTONES_NOT_MET), ``milestones`` lists them all."""

    unmet: list[str] = msgspec.field(default_factory=list)
    milestones: list[Milestone] = msgspec.field(default_factory=list)


RETRY_AFTER_S = 2  # a 503 (the live books, or the milestones, not known yet): when to ask again


async def get_transition(request: web.Request) -> web.Response:
    bus = request.app[BUS]
    return json_response(await ask(request, bus.subjects.query("transition"), Empty(), TransitionView, GATE))


async def _step(request: web.Request, action: str, body_type: type) -> web.Response:
    if body_type is DecisionBody and not request.can_read_body:
        raise ApiError(422, "Validation failed", "by: required (who approves or rejects)", field="by")
    body = await read_json(request, body_type) if request.can_read_body else StepBody()
    cmd = TransitionCommand(action=action, by=body.by, reason=body.reason)  # type: ignore[arg-type, attr-defined]
    bus = request.app[BUS]
    reply: TransitionReply = await ask(  # type: ignore[assignment]
        request, bus.subjects.transition_command, cmd, TransitionReply, GATE, timeout=COMMAND_TIMEOUT_S
    )
    if reply.ok and reply.view is not None:
        return json_response(reply.view, status=202 if reply.view.state == "pending_approval" else 200)
    code = reply.code or "TRANSITION_REFUSED"
    titles = {409: "Conflict", 422: "Validation failed", 503: "Service Unavailable"}
    p = TransitionProblem(
        type=PROBLEM_TYPE + code.lower().replace("_", "-"), title=titles.get(reply.status, "Refused"),
        status=reply.status, detail=reply.detail or code, field=reply.field, code=code,
        request_id=request.get(REQUEST_ID), unmet=reply.unmet, milestones=reply.milestones,
    )  # fmt: skip
    headers = {"Retry-After": str(RETRY_AFTER_S)} if reply.status == 503 else None  # not known yet: retry later
    return web.Response(
        body=rest_json(p), status=reply.status, content_type="application/problem+json", headers=headers
    )


async def initiate(request: web.Request) -> web.Response:
    """Refused (409 MILESTONES_NOT_MET, the unmet ones listed) unless every milestone is met; then pending
    approval (202, TRANSITION_APPROVAL=manual) or live at the next stage (200, auto)."""
    return await _step(request, "initiate", StepBody)


async def approve(request: web.Request) -> web.Response:
    return await _step(request, "approve", DecisionBody)


async def reject(request: web.Request) -> web.Response:
    return await _step(request, "reject", DecisionBody)


async def revert(request: web.Request) -> web.Response:
    return await _step(request, "revert", StepBody)


def register(app: web.Application) -> None:
    t = "transition"
    add(
        app,
        Endpoint(
            "GET", "/api/transition", get_transition, "Paper or live, the capital stage, the milestones", t,
            {200: (TransitionView, "The transition now, its milestones measured now, the latest audit entries")},
            errors=(503, 504),
        ),
    )  # fmt: skip
    for path, handler, body, summary, ok in (
        ("/api/transition/initiate", initiate, StepBody, "Ask to go live (or to the next capital stage)",
         "Pending approval (202) or live at the next stage (200)"),
        ("/api/transition/approve", approve, DecisionBody, "Approve the pending step", "Live at the stage"),
        ("/api/transition/reject", reject, DecisionBody, "Reject the pending step", "Pending step dropped"),
        ("/api/transition/revert", revert, StepBody, "Back to paper at once (the live orders canceled after)", "Paper"),
    ):  # fmt: skip
        add(
            app,
            Endpoint(
                "POST", path, handler, summary, t, {200: (TransitionView, ok), 202: (TransitionView, ok)}
                if path.endswith("initiate") else {200: (TransitionView, ok)},
                body=body, body_required=body is DecisionBody, errors=(409, 422, 503, 504),
            ),
        )  # fmt: skip
