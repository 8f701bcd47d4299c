"""How a Decimal is written where it leaves the service. Pure, exact: never through float.

- ``plain``: the bus's decimal strings. The digits as computed (a currency's precision stays visible,
  ``0.50000000``), but never an exponent (``1E-8`` -> ``0.00000001``, ``1E+3`` -> ``1000``) and never a
  negative zero; zero is ``0`` (``0E-8``, ``-0.00`` -> ``0``).
- ``shortest``: REST's JSON numbers. The shortest exact form: no exponent, no trailing zeros, no
  negative zero (``0``, ``0.1``, ``60162``).

Neither is defined for NaN or infinities (``str`` of them is returned unchanged). A value whose plain form
would run past ``MAX_PLAIN`` digits either side of the point (``1E+50000000``: nothing the service computes,
only what a caller sent) keeps its exponent (``str``, still exact): writing it out would cost megabytes.
"""

from __future__ import annotations

import re
from decimal import Decimal

# how a decimal string or number literal may look when it needs rewriting: an exponent, a signed zero,
# a zero with decimals (the fast path of the encoders: anything else is already written as it should be)
NEEDS_PLAIN = re.compile(r"[eE]|^-0(?:\.0*)?$|^0\.0*$")
MAX_PLAIN = 1000  # digits either side of the point a plain form may have (a few kB at most)


def _too_long(d: Decimal) -> bool:
    return d.adjusted() >= MAX_PLAIN or d.as_tuple().exponent < -MAX_PLAIN  # type: ignore[operator]


def plain(d: Decimal) -> str:
    """The bus's form: no exponent, no negative zero, zero as ``0``; otherwise the exact digits."""
    if not d.is_finite():
        return str(d)
    if not d:
        return "0"
    return str(d) if _too_long(d) else format(d, "f")


def shortest(d: Decimal) -> str:
    """The shortest exact form: no exponent, no trailing zeros, no negative zero."""
    if not d.is_finite():
        return str(d)
    if not d:
        return "0"
    if _too_long(d):
        return str(d)
    text = format(d, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def shortest_literal(text: str) -> str:
    """A JSON number literal (as a JSON encoder wrote it) in the shortest exact form."""
    return shortest(Decimal(text))
