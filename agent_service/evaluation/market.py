"""What the evaluation harness needs from a simulated market, slot by slot (a small port).

A market offers the opportunities of a time slot (what a bidder may see, nothing more),
resolves the bids made for them (auctions, impressions, clicks) and releases the conversions
that fall due later. Ground truth — each opportunity's true expected value of every creative
and the competing price — is read only by evaluation code (regret, hindsight optimum) through
:class:`Truth`. Adapters: the simulators engineer's vectorised engine
(:mod:`agent_service.evaluation.sim_market`) and, in tests, a small stand-in world.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

__all__ = ["ConversionQueue", "Conversions", "Market", "Opportunities", "Plays", "Results", "Truth"]


class Opportunities(NamedTuple):
    """B opportunities of one slot, as a bidder sees them."""

    event_time: np.ndarray
    """int64 [B] ms."""
    person: np.ndarray
    """int64 [B] the person as the bidder knows them (resolved identity; a device id when unlinked)."""
    device: np.ndarray
    """int64 [B] device id."""
    device_class: np.ndarray
    """int64 [B] 0 mobile, 1 desktop, 2 other."""
    channel_mask: np.ndarray
    """bool [B, 3] channels offered (organic, paid_search, social)."""
    floor_cpm_usd: np.ndarray
    """float [B] reserve price."""
    segment_probs: np.ndarray
    """float [B, K] discovered-segment posterior from the request's context."""
    identity_confidence: np.ndarray
    """float [B]."""
    device_count: np.ndarray
    """int64 [B] devices known for the person."""
    context: np.ndarray
    """int64 [B] the request's page/app context category (what ``segment_probs`` is computed from)."""


class Plays(NamedTuple):
    """A bidder's answer for B opportunities."""

    bid_cpm_usd: np.ndarray
    """float [B] bid; 0 = no bid (organic rows: 0, the placement is taken when ``take``)."""
    creative: np.ndarray
    """int64 [B]"""
    channel: np.ndarray
    """int64 [B]"""
    target: np.ndarray
    """int64 [B] targeted segment."""
    take: np.ndarray
    """bool [B] the opportunity is played (a bid sent, or the organic placement taken)."""


class Results(NamedTuple):
    """What happened to B plays."""

    won: np.ndarray
    """bool [B] impression bought (or organic placement shown)."""
    price_cpm_usd: np.ndarray
    """float [B] price paid per mille (0 when lost or organic)."""
    clicked: np.ndarray
    """bool [B]"""
    position: np.ndarray
    """int64 [B] slot won (1 = top), 0 when lost."""
    expected_value_usd: np.ndarray
    """float [B] GROUND TRUTH, evaluation only: expected conversion value of the play as shown
    (0 when not shown) — the low-variance measure of the value a policy wins."""


class Conversions(NamedTuple):
    """Conversions that happened in a time range (as the stream would see them)."""

    person: np.ndarray
    """int64 [N] the person who converted (as the bidder would resolve them)."""
    time_ms: np.ndarray
    """int64 [N]"""
    value_usd: np.ndarray
    """float [N]"""


class ConversionQueue:
    """Conversions scheduled in event time by a market, handed out once due."""

    def __init__(self) -> None:
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def schedule(self, person: np.ndarray, time_ms: np.ndarray, value_usd: np.ndarray) -> None:
        """Add conversions that will happen at ``time_ms``."""
        self._pending.append((person, time_ms, value_usd))

    def due(self, t1: int) -> Conversions:
        """The scheduled conversions with event time before ``t1`` (removed from the queue)."""
        if not self._pending:
            return Conversions(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        person = np.concatenate([x[0] for x in self._pending])
        t = np.concatenate([x[1] for x in self._pending])
        v = np.concatenate([x[2] for x in self._pending])
        due = t < t1
        self._pending = [(person[~due], t[~due], v[~due])]
        return Conversions(person[due], t[due], v[due])


class Truth(NamedTuple):
    """Ground truth of B opportunities (evaluation only)."""

    value_by_creative: np.ndarray
    """float [B, C] expected conversion value of an impression of each creative on the channel
    played (USD), journey effects (fatigue) included as of now."""
    segment: np.ndarray
    """int64 [B] true segment."""
    price_cpm_usd: np.ndarray
    """float [B] the price a bid had to beat on the channel played (0 for organic)."""


class Market(Protocol):
    """A seeded simulated market (see the module docstring)."""

    start_ms: int
    slots_per_day: int
    creatives: int
    segments: int
    budget_usd: float
    """Daily budget of the campaign."""

    def opportunities(self, t0: int, t1: int) -> Opportunities:
        """Opportunities with event times in [t0, t1)."""
        ...

    def truth(self, opps: Opportunities, channel: np.ndarray) -> Truth:
        """Ground truth of ``opps`` if played on ``channel`` (evaluation only)."""
        ...

    def resolve(self, opps: Opportunities, plays: Plays) -> Results:
        """Run the auctions and the people's responses for ``plays``."""
        ...

    def conversions(self, t0: int, t1: int) -> Conversions:
        """Conversions with event time in [t0, t1)."""
        ...
