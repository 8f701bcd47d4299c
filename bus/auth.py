"""How a connection proves itself to a NATS that asks for more than a URL: TLS (with a client certificate for
mutual TLS), a .creds file (user JWT + nkey seed: decentralised auth with accounts) or an nkey seed.

User and password or a token still go in the URL (``nats://user:pass@host:4222``). The files are read by
nats-py when it connects (a .creds file again at each reconnect), never logged, never put on the bus.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class NatsAuth:
    creds: str = ""  # path of a .creds file
    nkey_seed: str = ""  # path of a file holding an nkey seed
    tls_ca: str = ""  # CA bundle (PEM) the servers' certificates are checked against
    tls_cert: str = ""  # client certificate (PEM), with tls_key
    tls_key: str = ""

    def tls_context(self) -> ssl.SSLContext | None:
        """A TLS context when any TLS file is given (else nats-py's default for ``tls://`` URLs)."""
        if not (self.tls_ca or self.tls_cert):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca or None)
        if self.tls_cert:
            ctx.load_cert_chain(self.tls_cert, self.tls_key or None)
        return ctx

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``."""
        out: dict[str, Any] = {}
        ctx = self.tls_context()
        if ctx is not None:
            out["tls"] = ctx
        if self.creds:
            out["user_credentials"] = self.creds
        if self.nkey_seed:
            out["nkeys_seed"] = self.nkey_seed
        return out
