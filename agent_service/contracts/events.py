"""GAELP's internal wire contracts: the records on every topic but bid requests.

Every record has an ``id`` (the key of its effect: a redelivery with the same id changes
nothing) and an ``event_time`` in integer milliseconds since the Unix epoch (UTC) — the time
the thing happened, not when it was processed. Money is integer micro-dollars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
import numpy as np
import orjson
from msgspec import Meta, Struct, field

__all__ = [
    "Action",
    "AdEvent",
    "AuctionResult",
    "Conversion",
    "DeadLetter",
    "Decision",
    "EventTime",
    "Experience",
    "IdentityLink",
    "RewardParts",
    "Tick",
    "Touch",
    "encoded_state",
    "encoded_states",
    "state_values",
]

EventTime = Annotated[int, Meta(ge=0)]
"""Milliseconds since the Unix epoch, UTC."""
Micros = Annotated[int, Meta(ge=0)]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Probability = Annotated[float, Meta(gt=0.0, le=1.0)]


class Action(Struct, frozen=True, kw_only=True):
    """What the agent chose for one opportunity."""

    bid_cpm_micros: Micros
    """Bid price, CPM in micros (0 when the channel has no auction, e.g. organic)."""
    creative: Annotated[int, Meta(ge=0)]
    channel: str
    segment: Annotated[int, Meta(ge=0)]
    """Target segment (a discovered segment id)."""
    multiplier: Annotated[int, Meta(ge=0)] = 0
    """Index of the bid multiplier chosen."""


class Decision(Struct, frozen=True, kw_only=True):
    """One decision as logged: what the agent saw, did, with what probability, by which model."""

    id: Id
    """Decision id: ``<request id>:<imp id>``."""
    event_time: EventTime
    request_id: Id
    imp_id: Id
    person_id: Id
    """Canonical person id after identity resolution (hashed)."""
    device_id: Id
    campaign: Id
    state: list[float]
    """The vector the agent decided from. The service may hold it already JSON-encoded, as a
    ``msgspec.Raw`` of the same array (encoded once on the bid path, copied as is into the
    decision log, the store and every experience record): read it with :func:`state_values`."""
    action: Action
    propensity: Probability
    """Probability of ``action`` under the behaviour policy."""
    model_version: Annotated[int, Meta(ge=0)]
    value_estimate_micros: Micros = 0
    """Estimated value of an impression (micros per impression)."""
    bid: bool = True
    """False when no bid left the service (budget, floor, shadow mode)."""
    no_bid_reason: str | None = None
    shadow: bool = False


class AuctionResult(Struct, frozen=True, kw_only=True):
    id: Id
    event_time: EventTime
    decision_id: Id
    won: bool
    position: Annotated[int, Meta(ge=1, le=10)] | None = None
    """Slot won (1 = top) for positional auctions such as paid search."""
    price_paid_micros: Micros = 0
    """What the impression cost (0 when lost)."""


class AdEvent(Struct, frozen=True, kw_only=True):
    id: Id
    event_time: EventTime
    decision_id: Id
    kind: Literal["impression", "click"]


class Conversion(Struct, frozen=True, kw_only=True):
    id: Id
    event_time: EventTime
    value_micros: Micros
    user_id: str | None = None
    """Logged-in (hashed) user id, when known."""
    device_id: str | None = None
    """Device the conversion happened on."""


OptionalId = Annotated[str, Meta(max_length=256)]


class IdentityLink(Struct, frozen=True, kw_only=True):
    """An identity observation: ``device_id`` is the person ``person_id`` (a login, or a scored
    match), or the same person as ``other_device_id`` (a scored device-to-device match).

    Exactly one of ``person_id`` and ``other_device_id`` is set; a ``login`` names a person.
    ``revoked`` withdraws the link ``id`` names (a logout, an unlink request, a matcher's
    correction): the record repeats the link's id and ends; a link revoked before it arrives
    never merges. Older producers (``id, event_time, device_id, person_id, kind, score``) stay
    valid: the fields after ``score`` are optional.
    """

    id: Id
    """Id of the link (the graph's edge id: adding it again changes nothing; a revocation names it)."""
    event_time: EventTime
    device_id: Id
    person_id: OptionalId = ""
    """The person (a hashed user id) the device is linked to; "" for a device-to-device link."""
    kind: Literal["login", "probabilistic"] = "login"
    """``login``: deterministic, merges at once; ``probabilistic``: merges only at or above the
    service's threshold (``join.identity_min_score``)."""
    score: Annotated[float, Meta(ge=0.0, le=1.0)] = 1.0
    """Match score of a probabilistic link (logins count as 1.0)."""
    other_device_id: OptionalId | None = None
    """The other device of a device-to-device (probabilistic) link."""
    ip: OptionalId | None = None
    """The shared IP behind a probabilistic match: an IP seen on too many devices (carrier NAT,
    office) is treated as shared and its matches are refused (and undone)."""
    revoked: bool = False
    """True: withdraw the link ``id`` (the person splits again if it was the only path)."""

    def __post_init__(self) -> None:
        if bool(self.person_id) == bool(self.other_device_id):
            raise ValueError("exactly one of person_id and other_device_id must be set - at `$.person_id`")
        if self.kind == "login" and not self.person_id:
            raise ValueError("a login links a device to a person: set person_id - at `$.person_id`")


class RewardParts(Struct, frozen=True, kw_only=True):
    """The seed's reward components, each in USD (see agent_service.reward)."""

    immediate: float = 0.0
    attribution: float = 0.0
    delayed: float = 0.0
    diversity: float = 0.0


class Experience(Struct, frozen=True, kw_only=True):
    """A reward increment for one decision, for the learner.

    A decision receives several records: ``outcome`` at the auction result (immediate reward,
    with the delayed estimate in ``parts.delayed``), ``click`` per click, ``credit`` per
    conversion credited to it, and ``final`` when its window closes. The first three are
    increments (their rewards add up); ``final`` carries the realised total with
    ``done=True`` — learners use either the increments or the final record, never both.
    ``id`` keys the record itself (``<decision id>:<kind>[:<conversion id>]``).
    """

    id: Id
    event_time: EventTime
    decision_id: Id
    kind: Literal["outcome", "click", "credit", "final"]
    state: list[float]
    action: Action
    propensity: Probability
    model_version: Annotated[int, Meta(ge=0)]
    reward: float
    parts: RewardParts = field(default_factory=RewardParts)
    done: bool = False
    """True on the final record: the decision's window has closed."""
    won: bool = False
    """On ``outcome`` records: the impression was bought (or shown, for organic)."""
    position: Annotated[int, Meta(ge=1, le=10)] | None = None
    """On ``outcome`` records of positional auctions: the slot won (1 = top)."""


class Touch(Struct, frozen=True, kw_only=True):
    """A touchpoint in a person's journey (stored per person for the join window)."""

    decision_id: Id
    event_time: EventTime
    channel: str
    creative: int
    segment: int
    device_id: str
    cost_micros: int = 0
    clicked: bool = False


class Tick(Struct, frozen=True, kw_only=True):
    """An event-time heartbeat: its source has sent everything up to ``event_time`` on this
    partition. Sent with the ``gaelp-kind: tick`` header on every partition of a source topic,
    so idle partitions do not hold the watermark back."""

    id: Id
    event_time: EventTime


class DeadLetter(Struct, frozen=True, kw_only=True):
    """A record that could not be processed, with the reason."""

    id: Id
    topic: str
    reason: str
    field: str
    payload: str
    """The raw record (UTF-8, or hex of its bytes when not UTF-8)."""
    event_time: EventTime = 0


def state_values(d: Decision) -> list[float]:
    """The decision's state as floats, whether it is held as a list or still encoded."""
    state: object = d.state
    if isinstance(state, msgspec.Raw):
        return msgspec.json.decode(state, type=list[float])
    return d.state


def encoded_state(values: np.ndarray | Sequence[float]) -> list[float]:
    """``values`` as float32, JSON-encoded once, for :attr:`Decision.state` (typed as the list it
    encodes). Each number is the shortest text that reads back as the same float32 (``0.1``, not
    float64's ``0.10000000149011612``), integral values without their ``.0``: about half the
    bytes the decisions store, the claims and the experience records then carry. Lossless for
    the learner, which reads the state as float32 (``-0.0`` reads back as ``0.0``)."""
    return _encoded(np.ascontiguousarray(values, np.float32))


def encoded_states(rows: np.ndarray, shared: Sequence[tuple[int, int]] = ()) -> list[list[float]]:
    """:func:`encoded_state` of each row of a ``[B, dim]`` matrix.

    :param shared: column spans ``[lo, hi)``, ascending and disjoint, whose values repeat from row
        to row and batch to batch (a slot's pacing features, the padding of a short or empty
        journey): each distinct span's text is formatted once and reused (the same bytes as
        formatting the whole row; formatting is most of this function's cost)."""
    rows = np.ascontiguousarray(rows, np.float32)
    if not shared or rows.ndim != 2:
        return [_encoded(row) for row in rows]
    spans: list[tuple[int, int, bool]] = []
    at = 0
    for lo, hi in shared:
        if lo > at:
            spans.append((at, lo, False))
        if hi > lo:
            spans.append((lo, hi, True))
        at = max(at, hi)
    if rows.shape[1] > at:
        spans.append((at, rows.shape[1], False))
    cache = _SPAN_TEXT
    if len(cache) > _SPAN_CACHE_MAX:  # bounded: journeys vary; the common spans come back at once
        cache.clear()
    out: list[list[float]] = []
    for row in rows:
        parts = []
        for lo, hi, reuse in spans:
            if not reuse:
                parts.append(_numbers(row[lo:hi]))
                continue
            key = row[lo:hi].tobytes()
            text = cache.get(key)
            if text is None:
                text = cache[key] = _numbers(row[lo:hi])
            parts.append(text)
        out.append(msgspec.Raw(b"[" + b",".join(parts) + b"]"))  # type: ignore[arg-type]
    return out


_SPAN_TEXT: dict[bytes, bytes] = {}
_SPAN_CACHE_MAX = 1024


def _numbers(values: np.ndarray) -> bytes:
    """The numbers of :func:`_text`, without the brackets."""
    return _text(values)[1:-1]


def _encoded(row: np.ndarray) -> list[float]:
    return msgspec.Raw(_text(row))  # type: ignore[return-value]


def _text(row: np.ndarray) -> bytes:
    text = orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)
    text = text.replace(b".0,", b",")  # a shortest repr ends in ".0" only when it is integral
    if text.endswith(b".0]"):
        text = text[:-3] + b"]"
    return text

