"""The world protocol: what a simulator offers the driver that feeds GAELP's topics.

A world produces OpenRTB bid requests for a time slot, resolves the decisions GAELP made for
them (auctions, impressions, clicks) and releases later events (conversions 3–14+ days on,
identity links) when their event time comes. Every record is a wire contract from
``agent_service.contracts`` in event time; ground truth stays inside the world and is only
read by evaluation code (``truth``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from agent_service.contracts.events import Decision
from agent_service.contracts.openrtb import BidRequest

__all__ = ["World", "WorldEvent"]


class WorldEvent(NamedTuple):
    """One record for a topic role: ``auction_results``, ``ad_events``, ``conversions``, ``identity_links``."""

    role: str
    key: str
    record: Any
    """A contract Struct with ``id`` and ``event_time``."""


class World(Protocol):
    start_ms: int
    """Event time of the first slot."""
    creatives: int
    """Creative variants the world renders (the agent's catalogue in ``gaelp simulate``)."""
    counts: dict[str, float]
    """Running ground-truth totals (opportunities, impressions, clicks, conversions, ...)."""

    def requests(self, t0: int, t1: int) -> list[BidRequest]:
        """Bid requests with event times in [t0, t1) (``ext.gaelp.event_time``), in time order."""
        ...

    def resolve(self, decisions: Sequence[Decision]) -> list[WorldEvent]:
        """Run the auctions and user responses for GAELP's decisions on this slot's requests."""
        ...

    def due(self, t0: int, t1: int) -> list[WorldEvent]:
        """Events scheduled earlier (conversions, identity links) with event time in [t0, t1)."""
        ...

    def truth(self) -> dict[str, Any]:
        """Ground-truth totals for evaluation (never shown to the agent)."""
        ...
