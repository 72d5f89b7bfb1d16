"""The user DB's rows: a ``PersonProfile`` as a row of the ``users`` table, and back.

A snapshot writes one row per person under one snapshot id (``row_id`` = ``<snapshot>:<person>``,
so a resent batch is stored once); a restore reads one snapshot back. Reading back checks every
field a warehouse cannot type (JSON columns, ranges) and names the bad one, ``users.<column>``
with the index inside it, in a :class:`~agent_service.errors.DecodeError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import msgspec

from agent_service.contracts.events import Touch
from agent_service.errors import DecodeError
from agent_service.ports.store import Activity, DeviceShare, PersonProfile

__all__ = ["profile_of", "user_row"]


def user_row(p: PersonProfile, snapshot: str, started_ms: int) -> dict[str, Any]:
    """``p`` as a ``users`` row of ``snapshot`` (JSON columns as Python values: ``validate`` encodes them)."""
    return {"row_id": f"{snapshot}:{p.person_id}", "event_time": started_ms, "snapshot": snapshot,
            "person_id": p.person_id, "device_count": len(p.devices), "devices": [list(d) for d in p.devices],
            "contexts": [list(c) for c in p.contexts], "activity_requests": p.activity.requests,
            "activity_search": p.activity.search, "activity_at_ms": p.activity.at_ms,
            "shares": [{"device": s.device_id, "contexts": [list(c) for c in s.contexts],
                        "requests": s.activity.requests, "search": s.activity.search, "at_ms": s.activity.at_ms}
                       for s in p.shares],
            "touches": len(p.journey), "last_touch_ms": max((t.event_time for t in p.journey), default=None),
            "journey": [msgspec.to_builtins(t) for t in p.journey], "clicks": list(p.clicks)}


def profile_of(row: Mapping[str, Any]) -> PersonProfile:
    """The profile a ``users`` row holds; :class:`DecodeError` naming the first bad field."""
    person = row.get("person_id")
    if not isinstance(person, str) or not person:
        raise DecodeError("users.person_id", "must be a non-empty string")
    devices = tuple((_str(d, f"users.devices[{i}][0]"), _confidence(c, f"users.devices[{i}][1]"))
                    for i, (d, c) in enumerate(_pairs(row, "devices")))
    shares = []
    for i, s in enumerate(_list(row, "shares")):
        field = f"users.shares[{i}]"
        if not isinstance(s, dict):
            raise DecodeError(field, "expected an object {device, contexts, requests, search, at_ms}")
        shares.append(DeviceShare(_str(s.get("device"), f"{field}.device"),
                                  _contexts(s.get("contexts"), f"{field}.contexts"),
                                  _activity(s.get("requests"), s.get("search"), s.get("at_ms"), f"{field}.")))
    journey = []
    for i, t in enumerate(_list(row, "journey")):
        try:
            journey.append(msgspec.convert(t, Touch))
        except msgspec.ValidationError as exc:
            raise DecodeError(f"users.journey[{i}]", str(exc)) from exc
    clicks = tuple(_str(c, f"users.clicks[{i}]") for i, c in enumerate(_list(row, "clicks")))
    return PersonProfile(person, devices, _contexts(_json(row, "contexts"), "users.contexts"),
                         _activity(row.get("activity_requests"), row.get("activity_search"), row.get("activity_at_ms"),
                                   "users.activity_"),
                         tuple(shares), tuple(sorted(journey, key=lambda t: (t.event_time, t.decision_id))),
                         tuple(sorted(clicks)))


def _json(row: Mapping[str, Any], column: str) -> Any:
    """A JSON column's value (DuckDB gives JSON text, BigQuery may give it parsed)."""
    value = row.get(column)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise DecodeError(f"users.{column}", f"invalid JSON: {exc}") from exc
    return value


def _list(row: Mapping[str, Any], column: str) -> list[Any]:
    value = _json(row, column)
    if not isinstance(value, list):
        raise DecodeError(f"users.{column}", f"expected a JSON array, got {type(value).__name__}")
    return value


def _pairs(row: Mapping[str, Any], column: str) -> list[tuple[Any, Any]]:
    out = []
    for i, x in enumerate(_list(row, column)):
        if not isinstance(x, list) or len(x) != 2:
            raise DecodeError(f"users.{column}[{i}]", "expected a pair [a, b]")
        out.append((x[0], x[1]))
    return out


def _str(x: Any, field: str) -> str:
    if not isinstance(x, str) or not x:
        raise DecodeError(field, f"expected a non-empty string, got {x!r}")
    return x


def _int(x: Any, field: str, low: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < low:
        raise DecodeError(field, f"expected an integer >= {low}, got {x!r}")
    return x


def _number(x: Any, field: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
        raise DecodeError(field, f"expected a finite number >= 0, got {x!r}")
    return float(x)


def _confidence(x: Any, field: str) -> float:
    c = _number(x, field)
    if c > 1:
        raise DecodeError(field, f"a confidence is at most 1, got {x!r}")
    return c


def _contexts(value: Any, field: str) -> tuple[tuple[int, int], ...]:
    if not isinstance(value, list):
        raise DecodeError(field, f"expected a JSON array of [bucket, requests], got {type(value).__name__}")
    out = []
    for i, x in enumerate(value):
        if not isinstance(x, list) or len(x) != 2:
            raise DecodeError(f"{field}[{i}]", "expected a pair [bucket, requests]")
        out.append((_int(x[0], f"{field}[{i}][0]", 0), _int(x[1], f"{field}[{i}][1]", 1)))
    if len({b for b, _ in out}) != len(out):
        raise DecodeError(field, "a context bucket is listed twice")
    return tuple(sorted(out))


def _activity(requests: Any, search: Any, at_ms: Any, field: str) -> Activity:
    """The activity from its three fields, named ``<field>requests``, ``<field>search``, ``<field>at_ms``."""
    return Activity(_number(requests, f"{field}requests"), _number(search, f"{field}search"),
                    _int(at_ms, f"{field}at_ms", 0))
