"""Errors raised by the bus layer."""


class BusError(RuntimeError):
    """Base of bus errors."""


class BusUnavailable(BusError):
    """NATS cannot be reached."""


class RequestFailed(BusError):
    """A request got no answer in time, nobody was listening, or the responder reported an error."""

    def __init__(
        self,
        subject: str,
        reason: str,
        *,
        no_responders: bool = False,
        timeout: bool = False,
        unavailable: bool = False,
    ) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason
        self.no_responders = no_responders
        self.timeout = timeout
        # the responder failed on something briefly unavailable (JetStream without a stream leader, NATS
        # reconnecting) after retrying within its bound: asking again in a moment is the remedy
        self.unavailable = unavailable

    @property
    def transient(self) -> bool:
        return self.no_responders or self.timeout or self.unavailable


class Transient(BusError):
    """A handler could not finish because something it needs is unavailable right now: retry, never
    dead-letter (for example the next actor on the path is down)."""


class LeaseLost(Transient):
    """This instance may not write now: it does not provably hold its leadership lease (a standby, a lease
    not renewed in time, or one taken over by another instance). Transient for the message in hand: it goes
    back to the stream, and the instance that holds the lease handles it."""
