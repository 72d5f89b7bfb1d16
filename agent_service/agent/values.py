"""Value-per-impression estimates behind the bid: v̂ = P(click) · value per click, per channel.

Running, smoothed counts learned from experience (clicks and attributed conversion value per
won impression). They are posterior means with a weak prior, never optimistic samples (the
winner's curse, AGENT-DESIGN.md). The hybrid agent replaces this with learned models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent_service.config import CHANNELS

__all__ = ["ValueEstimator"]


@dataclass
class ValueEstimator:
    prior_impressions: float = 2_000.0
    """Pseudo-impressions of the prior."""
    prior_value_per_impression: float = 0.004
    """Prior value per impression, USD (a $4 CPM)."""
    impressions: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))
    value: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0.0))

    def observe_impression(self, channel: str) -> None:
        self.impressions[channel] = self.impressions.get(channel, 0.0) + 1.0

    def observe_value(self, channel: str, usd: float) -> None:
        self.value[channel] = self.value.get(channel, 0.0) + usd

    def per_impression(self, channel: str) -> float:
        """Posterior-mean value of one impression on ``channel``, USD."""
        n = self.impressions.get(channel, 0.0)
        v = self.value.get(channel, 0.0)
        return (v + self.prior_value_per_impression * self.prior_impressions) / (n + self.prior_impressions)

    def state(self) -> dict[str, dict[str, float]]:
        return {"impressions": dict(self.impressions), "value": dict(self.value)}

    def load(self, state: dict[str, dict[str, float]]) -> None:
        self.impressions = dict(state["impressions"])
        self.value = dict(state["value"])
