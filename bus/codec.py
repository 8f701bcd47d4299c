"""The msgspec JSON codec of the bus: Decimal as strings, camelCase field names, typed decoding.

Decimal strings keep their exact digits but never an exponent or a negative zero (``domain.decimals.plain``:
``0E-8`` and ``-0.00`` are written ``0``, ``1E-8`` is ``0.00000001``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar

import msgspec

from domain.decimals import plain

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="string")
# a JSON string that may be a decimal msgspec wrote with an exponent, or a zero to be written 0; rare,
# so only such messages take the slow path (which looks at the types, so other strings never change)
_SUSPECT = re.compile(rb'"(?:-?[0-9.]+E[-+]?[0-9]+|-0(?:\.0*)?|0\.0+)"')


class DecodeFailure(ValueError):
    """A message that does not decode into its type; ``reason`` names the field when it can."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(msg: Any) -> bytes:
    data = _encoder.encode(msg)
    # what _SUSPECT looks for always has one of these; plain substring tests cost a fraction of the regex
    if b"E-" not in data and b"E+" not in data and b'"-0' not in data and b'"0.0' not in data:
        return data
    if _SUSPECT.search(data) is None:
        return data
    return _encoder.encode(_plain(msgspec.to_builtins(msg, builtin_types=(Decimal,))))


def _plain(node: Any) -> Any:
    if isinstance(node, Decimal):
        return plain(node)
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_plain(v) for v in node]
    return node


@cache
def _decoder(type_: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(type_)


def decode(data: bytes, type_: type[T]) -> T:
    try:
        return _decoder(type_).decode(data)
    except msgspec.ValidationError as e:
        raise DecodeFailure(f"invalid {type_.__name__}: {e}") from None
    except msgspec.DecodeError as e:
        raise DecodeFailure(f"malformed JSON: {e}") from None
