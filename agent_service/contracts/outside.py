"""The decision record of an outside bidder: the live policy when GAELP is not the one bidding.

An outside bidder (another DSP, a rule engine, last year's model) logs one record per
impression it decided on ``topics.outside_decisions``. The stream stores it like one of
GAELP's own decisions, so the exchange's auction results and ad events that name its ``id``,
and the conversions after them, join to it and earn it experience records (``pipeline/
outside.py``); the warehouse keeps it in ``outside_decisions`` for ``gaelp ope --live
outside:<bidder>``, which pairs it with GAELP's candidate decisions on the same request and imp.

A record missing a required field, or with one of the wrong type, is dead-lettered with the
field and the reason. ``propensity`` is only range-checked by OPE: a value outside (0, 1] is
kept in the log and refused there with a count, never used.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from agent_service.contracts.events import EventTime

__all__ = ["OutsideDecision"]

_Id = Annotated[str, Meta(min_length=1, max_length=256)]


class OutsideDecision(Struct, frozen=True, kw_only=True):
    """One decision of an outside bidder on one impression."""

    id: _Id
    """Decision id: what its auction results and ad events name as ``decision_id`` (by convention
    ``<request id>:<imp id>``, as GAELP's own)."""
    event_time: EventTime
    """When the bid request was decided, ms since the epoch (event time)."""
    request_id: _Id
    """OpenRTB ``BidRequest.id``: pairs the record with GAELP's candidate decision on the request."""
    imp_id: _Id
    """OpenRTB ``Imp.id``."""
    device_id: _Id
    """Raw device id of the request (pseudonymised as it is decoded)."""
    bidder: _Id
    """The outside bidder's name (``gaelp ope --live outside:<bidder>``)."""
    bid_cpm_micros: Annotated[int, Meta(ge=0)]
    """Bid sent, CPM in micros; 0 for a no-bid."""
    bidder_version: Annotated[str, Meta(max_length=256)] = ""
    """The bidder's own version label."""
    user_id: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    """Raw logged-in user id, when known (pseudonymised as it is decoded)."""
    channel: Annotated[str, Meta(max_length=64)] | None = None
    creative: Annotated[int, Meta(ge=0)] | None = None
    propensity: float | None = None
    """Probability of this bid (its bid bucket, see ``gaelp ope --bid-edges``) under the bidder's
    policy; None when the bidder does not log one (OPE then estimates it: ``evaluation/
    outside_propensity.py``)."""
    features: list[float] | None = None
    """The context features the bidder decided from, when it shares them: the propensity model's
    inputs (otherwise GAELP's own view of the request, its candidate's state vector)."""
