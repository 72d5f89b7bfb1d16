"""The attribution port used by the stream: credit for one conversion over its journey.

The stream calls ``credit(touches, conversion_time_ms)`` and gets (decision id, fraction)
pairs whose fractions sum to 1. ``LastTouch`` is the default; the models of
``agent_service.attribution`` plug in behind the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agent_service.contracts.events import Touch

__all__ = ["AttributionModel", "JourneyLearner", "LastTouch", "split_micros"]


class AttributionModel(Protocol):
    def credit(self, touches: Sequence[Touch], conversion_time_ms: int) -> list[tuple[str, float]]:
        """Fractions of the conversion per decision id (sum 1; empty when no touch)."""
        ...


@runtime_checkable
class JourneyLearner(Protocol):
    """A model that learns from the journeys the stream sees (data-driven attribution): told each
    converting journey once (when its join is applied) and each touch whose window closed uncredited."""

    def observe_conversion(self, channels: Sequence[str], value_usd: float) -> None: ...

    def observe_null(self, channels: Sequence[str]) -> None: ...


class LastTouch:
    """All credit to the latest touch at or before the conversion (clicks preferred when ``prefer_clicks``)."""

    def __init__(self, prefer_clicks: bool = False) -> None:
        self.prefer_clicks = prefer_clicks

    def credit(self, touches: Sequence[Touch], conversion_time_ms: int) -> list[tuple[str, float]]:
        eligible = [t for t in touches if t.event_time <= conversion_time_ms]
        if self.prefer_clicks and any(t.clicked for t in eligible):
            eligible = [t for t in eligible if t.clicked]
        if not eligible:
            return []
        last = max(eligible, key=lambda t: (t.event_time, t.decision_id))
        return [(last.decision_id, 1.0)]


def split_micros(total: int, fractions: Sequence[tuple[str, float]]) -> list[tuple[str, int]]:
    """Split ``total`` micros by fractions exactly (largest remainder), so credits sum to ``total``."""
    if not fractions:
        return []
    raw = [total * f for _, f in fractions]
    amounts = [int(v) for v in raw]
    short = total - sum(amounts)
    for i in sorted(range(len(raw)), key=lambda i: (amounts[i] - raw[i], i))[:short]:
        amounts[i] += 1
    return [(k, a) for (k, _), a in zip(fractions, amounts, strict=True)]
