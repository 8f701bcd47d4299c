"""The order-router: the actor (``actor``) and its parts, each with one job.

- ``store``: the order store over JetStream, the only writer of ORDERS;
- ``emulator``: what a venue cannot hold (stops, take-profits, brackets / OCO, reduce-only exits,
  expiry and timeouts);
- ``session``: the venue session (send, answers, cancel and edit at the venue, reconcile).
"""

from actors.order_router.actor import OrderRouter

__all__ = ["OrderRouter"]
