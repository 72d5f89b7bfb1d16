"""Typed batches of the vectorised engine: opportunities, actions, outcomes, ground truth.

Every batch is a NamedTuple of numpy arrays with the same first dimension ``n`` (one row per
opportunity). ``take`` selects rows of any of them. Which fields are ground truth is said per
field: observations are built only from the others (``simulators.observation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np

from agent_service.errors import ConfigError

__all__ = ["CHANNEL_INDEX", "Actions", "EngineConfig", "WorldOutcomes", "WorldOpportunities", "WorldTruth", "concat", "take"]

CHANNEL_INDEX = {"organic": 0, "paid_search": 1, "social": 2}
"""Channel ids used in every array (the order of ``agent_service.config.CHANNELS``)."""

B = TypeVar("B", bound=tuple)  # type: ignore[type-arg]


def take(batch: B, idx: np.ndarray | slice) -> B:
    """Rows ``idx`` of a batch.

    :param batch: a ``WorldOpportunities``, ``Actions``, ``WorldOutcomes`` or ``WorldTruth``.
    :param idx: row indices, boolean mask or slice.
    """
    return type(batch)(*(a[idx] for a in batch))


def concat(batches: list[B]) -> B:
    """Rows of several batches of the same type, in order.

    :param batches: at least one batch.
    """
    return type(batches[0])(*(np.concatenate(cols) for cols in zip(*batches, strict=True)))


@dataclass(frozen=True)
class EngineConfig:
    """Run settings of the engine (the calibration says how the world behaves; this says how big)."""

    persons: int = 5_000
    """People per lane (each lane is an independent world)."""
    opportunities_per_day: float = 20_000.0
    """Expected opportunities per day per lane (shaped by the hourly and weekday profiles)."""
    lanes: int = 1
    """Independent worlds run side by side (one per vector-env copy)."""
    seed: int = 0
    """Seed of every draw of the run (population, traffic, market, outcomes)."""
    start_ms: int = 1_767_225_600_000
    """Event time of the world's start (2026-01-01T00:00Z, a Thursday)."""
    enforce_targeting: bool = True
    """Apply the action's target segment as an audience filter (the stream world turns it off
    while the service's ``Action.segment`` is not a real target)."""

    def __post_init__(self) -> None:
        if self.persons <= 0:
            raise ConfigError("engine.persons", "must be > 0")
        if self.opportunities_per_day <= 0:
            raise ConfigError("engine.opportunities_per_day", "must be > 0")
        if not 1 <= self.lanes <= 4096:
            raise ConfigError("engine.lanes", "must be in 1..4096")
        if self.start_ms < 0:
            raise ConfigError("engine.start_ms", "must be >= 0 (ms since the Unix epoch)")


class WorldOpportunities(NamedTuple):
    """The world's ad opportunities (one row each, ground truth included) in event-time order per lane."""

    lane: np.ndarray
    """int16 lane (world) of the row."""
    t: np.ndarray
    """int64 event time, ms since the epoch."""
    person: np.ndarray
    """int32 global person index (GROUND TRUTH)."""
    device: np.ndarray
    """int32 global device index (observable as the device id)."""
    segment: np.ndarray
    """int8 true segment (GROUND TRUTH)."""
    stage: np.ndarray
    """int8 journey stage when the opportunity arose (GROUND TRUTH)."""
    category: np.ndarray
    """int8 page category index into ``calibration.traffic.categories`` (observable)."""
    devtype: np.ndarray
    """int8 AdCOM device type (observable)."""
    logged: np.ndarray
    """bool: the person is logged in on this device (observable: the request carries a user id)."""
    arm: np.ndarray
    """int8 A/B arm of the device (observable: a hash of the device id)."""
    offered: np.ndarray
    """bool (n, 3): channels this opportunity offers (organic, paid search, social) (observable)."""
    floor: np.ndarray
    """int32 floor / reserve in ticks (0.001 USD CPM) (observable)."""
    comp_social: np.ndarray
    """int32 (n, k_social) competing bids on social, ticks (hidden: the market)."""
    comp_search: np.ndarray
    """int32 (n, k_search) competing bids in paid search, ticks (hidden)."""
    u_click: np.ndarray
    """Uniform deciding the click (common random numbers across policies) (hidden)."""
    u_conv: np.ndarray
    """Uniform deciding the conversion (hidden)."""
    z_value: np.ndarray
    """Standard normal of the conversion value (hidden)."""
    delay_days: np.ndarray
    """Conversion delay this opportunity would have, days (hidden)."""
    u_device: np.ndarray
    """Uniform picking the device a conversion happens on (hidden)."""


class Actions(NamedTuple):
    """What the agent does with each opportunity."""

    active: np.ndarray
    """bool: the agent takes part (bids, or places organically)."""
    bid: np.ndarray
    """int32 bid, ticks (0.001 USD CPM = micros per impression); ignored for organic."""
    creative: np.ndarray
    """int16 creative id."""
    channel: np.ndarray
    """int8 channel id (``CHANNEL_INDEX``)."""
    target: np.ndarray
    """int8 target audience (segment id; ``n_segments`` = everyone)."""


class WorldOutcomes(NamedTuple):
    """What happened (what the service learns, in event time, through the contracts)."""

    eligible: np.ndarray
    """bool: the action reached the auction (channel offered, audience matched)."""
    won: np.ndarray
    """bool: the ad was shown (auction won, or organic placement within reach)."""
    price: np.ndarray
    """int32 price paid, ticks = micros for this impression (0 unless won on a paid channel)."""
    position: np.ndarray
    """int16 position (1 = top) in paid search, 1 for other shown ads, 0 when not shown."""
    click: np.ndarray
    """bool: clicked."""
    conv: np.ndarray
    """bool: this touch caused a conversion (arriving later, see conv_time)."""
    conv_time: np.ndarray
    """int64 event time of the conversion, ms (-1 when none)."""
    conv_value: np.ndarray
    """int64 conversion value, micros (0 when none)."""
    conv_device: np.ndarray
    """int32 global device the conversion happens on (-1 when none)."""
    in_window: np.ndarray
    """bool: the conversion lands within the attribution window of its touch."""


class WorldTruth(NamedTuple):
    """Ground truth beside each outcome — evaluation only, never in an observation."""

    person: np.ndarray
    """int32 global person."""
    segment: np.ndarray
    """int8 true segment."""
    stage: np.ndarray
    """int8 journey stage when the ad was decided."""
    p_click: np.ndarray
    """True click probability of the chosen creative/channel/position (as shown, or at position 1)."""
    p_conv: np.ndarray
    """True conversion probability after a click (0 while a conversion is pending)."""
    p_view: np.ndarray
    """True view-through conversion probability of an unclicked impression."""
    expected_value: np.ndarray
    """Expected conversion value of showing the ad, USD (p_click·p_conv + (1-p_click)·p_view)·value."""
