"""The order-router's own check of the paper-to-live transition, the last one before a live venue.

The risk-gate decides (actors/transition.py), but an approval waits on the durable hop while the order-router is
away (a restart, a slow router), and a revert may come meanwhile: so the router reads the transition's state
(JetStream KV ``<PREFIX>_TRANSITION``, key ``state``) when it creates an order for a live venue, and refuses - the
order REJECTED with LIVE_NOT_APPROVED on its trail, the reservation released as for any refusal - an approval
while the mode is paper or made under an earlier epoch (before the last revert). Reducing orders (reduce-only
closes, the exits of kept positions, emergency closes) always pass (domain/transition_guard.py). A deployment
whose state was never stored (no risk-gate has started on this prefix) is not checked.
"""

from __future__ import annotations

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from bus.client import Bus
from bus.errors import Transient
from config.settings import Settings
from config.venues import venue_configs
from domain.transition_guard import live_refusal
from schemas.messages import ApprovedOrder, TransitionState

STATE_KEY = "state"


class LiveCheck:
    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.bus = bus
        self.live = {v.name for v in venue_configs(settings) if not v.paper}
        self.kv: KeyValue | None = None

    async def open(self) -> None:
        if self.live:
            self.kv = await self.bus.kv(self.bus.subjects.kv_transition)

    async def state(self) -> TransitionState | None:
        """The stored state, read now (None: never stored). Raises Transient when it cannot be read: the
        approval is then handled again (the consumer's back-off), never sent live unchecked."""
        assert self.kv is not None
        try:
            entry = await self.kv.get(STATE_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise Transient(f"the transition's state could not be read ({type(e).__name__})") from e
        if not entry.value:
            return None
        try:
            return msgspec.json.decode(entry.value, type=TransitionState)
        except (msgspec.ValidationError, msgspec.DecodeError):  # never guessed live
            return TransitionState(mode="paper", epoch=1 << 62)

    async def refusal(self, a: ApprovedOrder, venue: str) -> str | None:
        """Why the approved order may not go to ``venue`` (None: it may). Only live venues are checked."""
        if venue not in self.live or self.kv is None or a.request.reduce_only:
            return None
        return live_refusal(await self.state(), a.transition_epoch, False, venue)
