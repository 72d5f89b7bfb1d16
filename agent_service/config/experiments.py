"""Settings of the canary (candidate policy on a hashed share of persons) and of creative A/B
experiments: one frozen dataclass per concern, every field documented, bad values rejected by key.

A TOML file carries them as ``[canary]`` (with ``[canary.test]`` and ``[canary.guardrails]``) and
``[[experiments]]`` tables; :func:`load_experiments` reads that mapping. A bad value raises
:class:`ExperimentConfigError`, which is both GAELP's :class:`~agent_service.errors.ConfigError` (the key
and how to fix it) and a :class:`ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_service.errors import ConfigError
from agent_service.typed_mapping import from_mapping
from agent_service.units import DAY_MS

__all__ = [
    "ArmConfig",
    "CanaryConfig",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentsConfig",
    "GuardrailConfig",
    "SequentialConfig",
    "load_experiments",
]


class ExperimentConfigError(ConfigError, ValueError):
    """An experiment or canary setting is invalid; names the key (``canary.share``, ``arms[1].weight``)."""


def _need(cond: bool, key: str, reason: str) -> None:
    if not cond:
        raise ExperimentConfigError(key, reason)


def _finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


@dataclass(frozen=True)
class SequentialConfig:
    """The always-valid test on conversion value per dollar (``agent_service.experiments.sequential``)."""

    alpha: float = 0.05
    """Error level of the two-sided confidence sequence: over the whole run, the chance that a candidate
    equal to control is ever promoted or rolled back is at most ``alpha`` (asymptotically)."""
    mixture_sd: float = 0.10
    """Standard deviation of the normal mixture over the log lift (mSPRT's tau): the boundary is tightest
    for effects of about this size (0.10 ≈ a 10 % lift)."""
    min_persons: int = 1000
    """Persons per arm before any decision (the variance estimate needs them)."""
    min_conversions: int = 100
    """Persons with a conversion per arm before any decision: with heavy-tailed values the plug-in
    variance is too small until enough of them are seen."""
    rollback_margin: float = 0.0
    """Roll back when the whole interval of the relative lift lies below ``-rollback_margin``
    (0: as soon as the candidate is surely worse; 0.02: only when it is surely > 2 % worse)."""

    def __post_init__(self) -> None:
        _need(_finite(self.alpha) and 0 < self.alpha < 1, "alpha", "must be in (0, 1), e.g. 0.05")
        _need(_finite(self.mixture_sd) and self.mixture_sd > 0, "mixture_sd", "must be > 0 (log-lift scale)")
        _need(self.min_persons >= 2, "min_persons", "must be >= 2 per arm")
        _need(self.min_conversions >= 2, "min_conversions", "must be >= 2 per arm")
        _need(_finite(self.rollback_margin) and 0 <= self.rollback_margin < 1, "rollback_margin",
              "must be in [0, 1)")


@dataclass(frozen=True)
class GuardrailConfig:
    """Limits on the candidate relative to control; breaking one (surely, by an always-valid interval at
    level ``alpha``) rolls the candidate back with the guardrail's name as the reason."""

    max_spend_rate_increase: float = 0.25
    """Largest relative increase of spend per bid request (0.25: +25 %)."""
    max_no_bid_rate_increase: float = 0.10
    """Largest increase of the share of requests answered with no bid (absolute, 0.10 = 10 points)."""
    max_error_rate_increase: float = 0.01
    """Largest increase of the share of requests that failed (absolute)."""
    max_error_rate: float = 0.20
    """Hard cap on the candidate's observed error rate (a broken candidate is rolled back at once)."""
    alpha: float = 0.01
    """Error level of each guardrail's interval."""
    min_requests: int = 2000
    """Requests per arm before any guardrail is judged."""

    def __post_init__(self) -> None:
        _need(_finite(self.max_spend_rate_increase) and self.max_spend_rate_increase > 0,
              "max_spend_rate_increase", "must be > 0 (relative, e.g. 0.25)")
        _need(_finite(self.max_no_bid_rate_increase) and 0 < self.max_no_bid_rate_increase <= 1,
              "max_no_bid_rate_increase", "must be in (0, 1]")
        _need(_finite(self.max_error_rate_increase) and 0 < self.max_error_rate_increase <= 1,
              "max_error_rate_increase", "must be in (0, 1]")
        _need(_finite(self.max_error_rate) and 0 < self.max_error_rate <= 1, "max_error_rate", "must be in (0, 1]")
        _need(_finite(self.alpha) and 0 < self.alpha < 1, "alpha", "must be in (0, 1)")
        _need(self.min_requests >= 2, "min_requests", "must be >= 2")


@dataclass(frozen=True)
class CanaryConfig:
    """``gaelp promote --canary``: the candidate serves a stable hashed share of persons (TOML ``[canary]``)."""

    share: float = 0.05
    """Share of persons (canonical ids) served by the candidate in the first stage, in (0, 1]."""
    ramp: tuple[float, ...] = ()
    """Later shares, increasing, the last one usually 1.0 (e.g. [0.25, 0.5, 1.0]); empty = promote
    straight from ``share``. A stage is left when the test says promote and the stage has
    ``stage_min_persons`` candidate persons; leaving the last stage promotes."""
    stage_min_persons: int = 10_000
    """Candidate persons observed at a stage before the ramp moves on (guardrails get to see the larger
    share before it grows again)."""
    max_persons: int = 10_000_000
    """Horizon in persons (both arms): with no decision by then the canary is held (share frozen)."""
    max_duration_ms: int = 14 * DAY_MS
    """Horizon in event time since the start: with no decision by then the canary is held."""
    evaluate_every_s: float = 60.0
    """Wall seconds between the evaluations of ``gaelp promote`` (each reads the per-arm totals from Redis)."""
    test: SequentialConfig = field(default_factory=SequentialConfig)
    """The sequential test on conversion value per dollar."""
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    """Spend rate, no-bid rate and error rate limits."""

    def __post_init__(self) -> None:
        _need(_finite(self.evaluate_every_s) and self.evaluate_every_s > 0, "canary.evaluate_every_s",
              "must be > 0 seconds")
        _need(_finite(self.share) and 0 < self.share <= 1, "canary.share", "must be in (0, 1], e.g. 0.05")
        prev = self.share
        for i, s in enumerate(self.ramp):
            _need(_finite(s) and prev < s <= 1, f"canary.ramp[{i}]",
                  f"stages must increase and stay <= 1 (got {s} after {prev})")
            prev = s
        _need(self.stage_min_persons >= 1, "canary.stage_min_persons", "must be >= 1")
        _need(self.max_persons >= 2 * self.test.min_persons, "canary.max_persons",
              "must be >= 2 * test.min_persons")
        _need(self.max_duration_ms > 0, "canary.max_duration_ms", "must be > 0 ms")

    @property
    def stages(self) -> tuple[float, ...]:
        """Every share the candidate goes through, first to last."""
        return (self.share, *self.ramp)


@dataclass(frozen=True)
class ArmConfig:
    """One arm of a creative experiment: a creative or a set of creatives and its allocation weight."""

    name: str
    """Arm name, unique within the experiment (the first arm is the control)."""
    creatives: tuple[str, ...]
    """Creative ids the arm may show."""
    weight: float = 1.0
    """Allocation weight (>= 0); shares are the weights over their sum."""

    def __post_init__(self) -> None:
        _need(bool(self.name), "name", "must not be empty")
        _need(len(self.creatives) >= 1 and all(self.creatives), "creatives",
              f"arm '{self.name}' needs at least one non-empty creative id")
        _need(_finite(self.weight) and self.weight >= 0, "weight",
              f"arm '{self.name}': allocation weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class ExperimentConfig:
    """A creative A/B experiment (TOML ``[[experiments]]``)."""

    id: str
    """Experiment id; salts the person hash, so experiments are assigned independently."""
    arms: tuple[ArmConfig, ...]
    """Two or more arms, the first being the control."""
    start_ms: int
    """Start (event time, ms since the epoch); exposures before it are not counted."""
    stop_ms: int
    """Stop (event time, ms); after it the experiment stops counting and assigning."""
    test: SequentialConfig = field(default_factory=SequentialConfig)
    """The sequential test of every arm against the control (alpha is split over the arms)."""
    guardrails: GuardrailConfig = field(default_factory=GuardrailConfig)
    """Per-arm guardrails against the control; an arm breaking one is stopped."""

    def __post_init__(self) -> None:
        _need(bool(self.id) and ":" not in self.id, "id", "must be non-empty and contain no ':'")
        _need(len(self.arms) >= 2, "arms", f"experiment '{self.id}' needs at least two arms")
        names = [a.name for a in self.arms]
        _need(len(set(names)) == len(names), "arms", f"experiment '{self.id}': arm names must be unique")
        for i, a in enumerate(self.arms):
            _need(a.weight >= 0, f"arms[{i}].weight", f"experiment '{self.id}': must be >= 0")
        total = sum(a.weight for a in self.arms)
        _need(total > 0, "arms.weight", f"experiment '{self.id}': allocation weights must sum to > 0")
        _need(self.arms[0].weight > 0, "arms[0].weight", f"experiment '{self.id}': the control needs weight > 0")
        _need(self.start_ms >= 0, "start_ms", f"experiment '{self.id}': must be >= 0 (ms since the epoch)")
        _need(self.stop_ms > self.start_ms, "stop_ms", f"experiment '{self.id}': stop_ms must be after start_ms")

    @property
    def shares(self) -> tuple[float, ...]:
        """Allocation shares of the arms (weights over their sum)."""
        total = sum(a.weight for a in self.arms)
        return tuple(a.weight / total for a in self.arms)


@dataclass(frozen=True)
class ExperimentsConfig:
    """The canary and every creative experiment."""

    canary: CanaryConfig = field(default_factory=CanaryConfig)
    """The canary of ``gaelp promote``."""
    experiments: tuple[ExperimentConfig, ...] = ()
    """Creative A/B experiments."""

    def __post_init__(self) -> None:
        ids = [e.id for e in self.experiments]
        _need(len(set(ids)) == len(ids), "experiments", "experiment ids must be unique")


def load_experiments(data: Mapping[str, Any]) -> ExperimentsConfig:
    """Build :class:`ExperimentsConfig` from parsed TOML (``canary`` and ``experiments`` keys).

    :param data: the mapping; unknown keys and bad values raise ConfigError naming the key.
    """
    return from_mapping(ExperimentsConfig, dict(data))
