"""Encoding and decoding of the wire contracts, with errors that name the field.

msgspec validates while it parses (types, required fields, ranges) and reports the JSON path
of the first bad field; ``decode`` turns that into ``DecodeError(field, reason)``. Checks that
span fields (ids unique across ``imp``) run after parsing.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from agent_service.contracts.openrtb import BidRequest
from agent_service.errors import DecodeError

__all__ = ["decode", "decode_bid_request", "encode", "to_builtins"]

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_AT_PATH = re.compile(r"^(?P<reason>.*?) - at `(?P<path>[^`]*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")


def _decoder(tp: type[T]) -> msgspec.json.Decoder[T]:
    dec = _decoders.get(tp)
    if dec is None:
        dec = _decoders[tp] = msgspec.json.Decoder(tp)
    return dec


def _to_decode_error(exc: msgspec.MsgspecError) -> DecodeError:
    text = str(exc)
    path, reason = "$", text
    match = _AT_PATH.match(text)
    if match:
        path, reason = match["path"], match["reason"]
    missing = _MISSING.match(reason)
    if missing:  # name the missing field itself, not its parent object
        return DecodeError(f"{path}.{missing['name']}", "required field is missing")
    if match:
        return DecodeError(path, reason)
    if isinstance(exc, msgspec.ValidationError):
        return DecodeError("$", text)
    return DecodeError("$", f"invalid JSON: {text}")


def decode(data: bytes | str, tp: type[T]) -> T:
    """Decode one JSON record into the contract ``tp``.

    :param data: the raw JSON.
    :param tp: a contract Struct type.
    :raises DecodeError: naming the offending field.
    """
    try:
        return _decoder(tp).decode(data)
    except msgspec.MsgspecError as exc:
        raise _to_decode_error(exc) from exc


def decode_bid_request(data: bytes | str) -> BidRequest:
    """Decode and check an OpenRTB bid request (unique ``imp`` ids on top of the schema)."""
    req = decode(data, BidRequest)
    seen: set[str] = set()
    for i, imp in enumerate(req.imp):
        if imp.id in seen:
            raise DecodeError(f"$.imp[{i}].id", f"duplicate impression id {imp.id!r}")
        seen.add(imp.id)
    return req


def encode(obj: Any) -> bytes:
    """Encode a contract (or builtins) as compact JSON."""
    return _encoder.encode(obj)


def to_builtins(obj: Any) -> Any:
    """A contract as plain dicts/lists (for reports and warehouse rows)."""
    return msgspec.to_builtins(obj)
