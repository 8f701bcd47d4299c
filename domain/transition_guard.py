"""What the paper-to-live transition lets through to a live venue, and what a revert leaves behind: pure rules
shared by the risk-gate (actors/transition.py) and the order-router (its last check before a live venue).

- An order that only reduces a live position (reduce-only: a close, close-all, an emergency close, the exit legs
  of a position) goes to its live venue in every mode: a revert keeps positions (TRANSITION_REVERT_POSITIONS=keep)
  and they must stay closable and protected.
- Any other order for a live venue needs live mode, and an approval made under the current epoch (the number of
  reverts so far): an approval stored before a revert (the order-router was away) never executes live.
- A revert cancels every order on a live venue that is not terminal (working at the venue, or held by the
  router: an untriggered stop, a bracket leg), except - when positions are kept - the reduce-only exits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.messages import TERMINAL_STATUSES, Order, TransitionState

LIVE_NOT_APPROVED = "LIVE_NOT_APPROVED"


def live_refusal(state: TransitionState | None, approval_epoch: int | None, reducing: bool, venue: str) -> str | None:
    """Why an approved order may not go to the live ``venue`` now (None: it may). ``state``: the transition's
    stored state (None: no transition state stored - a deployment without one decides as before)."""
    if reducing or state is None:
        return None
    if state.mode != "live":
        return (
            f"{LIVE_NOT_APPROVED}: live trading on {venue} is not approved: the service is in paper mode (approved "
            "before a revert, or not through the transition)"
        )
    if approval_epoch is not None and approval_epoch < state.epoch:
        return (
            f"{LIVE_NOT_APPROVED}: approved before a revert to paper (epoch {approval_epoch}, now {state.epoch}): "
            f"not sent to {venue}; submit it again"
        )
    return None


def open_order(o: Order) -> bool:
    """Not terminal: working at a venue, on its way, or held by the router (a stop not triggered, a leg)."""
    return o.status not in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Cleanup:
    cancel: list[str]  # order ids to cancel
    kept: list[str]  # reduce-only exits of kept positions, left working


def revert_cleanup(orders: Iterable[Order], live_venues: Iterable[str], keep_exits: bool) -> Cleanup:
    """The orders a revert cancels: every open order on a live venue; with ``keep_exits`` (positions kept) the
    reduce-only ones stay (the stop-loss / take-profit of a kept position)."""
    live = set(live_venues)
    cancel: list[str] = []
    kept: list[str] = []
    for o in orders:
        if o.venue not in live or not open_order(o):
            continue
        (kept if keep_exits and o.reduce_only else cancel).append(o.order_id)
    return Cleanup(sorted(cancel), sorted(kept))
