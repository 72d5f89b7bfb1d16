"""Settings of the attribution models, in one frozen dataclass.

Model names are canonical short names (``last``, ``first``, ``linear``, ``time_decay``,
``position``, ``markov``, ``shapley``); the long forms used elsewhere (``last_touch``,
``first_touch``, ``linear_touch``, ``position_based``, ``data_driven``) are accepted by
:func:`canonical_model`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent_service.errors import ConfigError
from agent_service.units import DAY_MS, WINDOW_DAYS

__all__ = ["HEURISTIC_MODELS", "MODELS", "AttributionConfig", "canonical_model"]

MODELS: tuple[str, ...] = ("last", "first", "linear", "time_decay", "position", "markov", "shapley")
"""Every attribution model, by canonical name."""

HEURISTIC_MODELS: tuple[str, ...] = ("last", "first", "linear", "time_decay", "position")
"""Models that need no fitting: the credit of a journey depends on that journey only."""

_ALIASES = {
    "last_touch": "last",
    "last_click": "last",
    "first_touch": "first",
    "linear_touch": "linear",
    "timedecay": "time_decay",
    "time-decay": "time_decay",
    "position_based": "position",
    "position-based": "position",
    "u_shaped": "position",
    "data_driven": "shapley",
}


def canonical_model(name: str, key: str = "attribution.model") -> str:
    """The canonical name of an attribution model, or :class:`ConfigError` naming ``key``.

    :param name: a model name or alias (case-insensitive).
    :param key: the setting the name came from, for the error message.
    """
    low = name.strip().lower()
    low = _ALIASES.get(low, low)
    if low not in MODELS:
        raise ConfigError(key, f"unknown attribution model {name!r}; choose one of {', '.join(MODELS)}")
    return low


def _require(cond: bool, key: str, reason: str) -> None:
    if not cond:
        raise ConfigError(key, reason)


@dataclass(frozen=True)
class AttributionConfig:
    """How conversions are credited to the touches (and channels) that preceded them."""

    model: str = "last"
    """Attribution model (see :data:`MODELS`); aliases such as ``last_touch`` are accepted."""
    half_life_days: float = 7.0
    """Time decay: a touch this many days before the conversion gets half the weight of one at it."""
    position_first: float = 0.4
    """Position-based: share of the first touch (journeys of 3 or more touches)."""
    position_last: float = 0.4
    """Position-based: share of the last touch; the rest is spread evenly over the middle."""
    window_days: float = WINDOW_DAYS
    """Lookback window: touches older than this (event time) before the conversion get no credit."""
    prefer_clicks: bool = False
    """Click-through attribution: when a journey has clicked touches, only those are credited."""
    markov_order: int = 1
    """Order of the Markov chain (states are the last ``markov_order`` channels)."""
    shapley_exact_max: int = 12
    """Shapley values are exact for journeys with at most this many distinct channels, sampled above."""
    shapley_samples: int = 2000
    """Random permutations used when a journey has more than ``shapley_exact_max`` channels."""
    step_days: float = 1.0
    """Batch time decay over paths without timestamps: assumed days between consecutive touches."""
    seed: int = 0
    """Seed of every random draw (Shapley sampling); same input and seed give the same credit."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", canonical_model(self.model))
        _require(math.isfinite(self.half_life_days) and self.half_life_days > 0,
                 "attribution.half_life_days", "must be a positive number of days (Google Ads uses 7)")
        _require(0 <= self.position_first <= 1 and 0 <= self.position_last <= 1
                 and self.position_first + self.position_last <= 1 + 1e-12,
                 "attribution.position_first",
                 "need 0 <= position_first, position_last and position_first + position_last <= 1 "
                 "(e.g. 0.4 and 0.4, leaving 0.2 for the middle)")
        _require(math.isfinite(self.window_days) and self.window_days > 0,
                 "attribution.window_days", "must be a positive number of days (GAELP uses 14)")
        _require(1 <= self.markov_order <= 6, "attribution.markov_order", "must be between 1 and 6")
        _require(1 <= self.shapley_exact_max <= 20, "attribution.shapley_exact_max",
                 "must be between 1 and 20 (2**n coalitions are enumerated)")
        _require(self.shapley_samples >= 10, "attribution.shapley_samples", "must be >= 10 permutations")
        _require(math.isfinite(self.step_days) and self.step_days >= 0, "attribution.step_days",
                 "must be >= 0 days")

    @property
    def window_ms(self) -> int:
        """The lookback window in milliseconds of event time."""
        return int(self.window_days * DAY_MS)

    @property
    def half_life_ms(self) -> float:
        """The time-decay half-life in milliseconds."""
        return self.half_life_days * float(DAY_MS)
