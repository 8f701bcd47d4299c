"""The msgspec JSON codec of the bus: Decimal as strings, camelCase field names, typed decoding."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="string")


class DecodeFailure(ValueError):
    """A message that does not decode into its type; ``reason`` names the field when it can."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(msg: Any) -> bytes:
    return _encoder.encode(msg)


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
