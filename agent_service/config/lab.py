"""Settings of the lab commands: training and evaluation on the simulator (``[train]``,
``[evaluate]``)."""

from __future__ import annotations

from dataclasses import dataclass

from agent_service.errors import ConfigError

__all__ = ["EvalConfig", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """A training run on the simulator (TOML table ``[train]``; ``gaelp train`` flags)."""

    days: int = 60
    """Simulated budget periods to train for."""
    seed: int = 100
    """Seed of the training world (evaluation uses other seeds)."""
    budget_usd: float | None = None
    """Daily budget of the campaign, USD (None: ``[budget] daily_usd``)."""
    persons: int = 5_000
    """People in the world."""
    opportunities_per_day: float = 20_000.0
    """Traffic volume."""
    checkpoint_every: int = 10
    """Days between checkpoints."""
    max_minutes: float = 13.0
    """Stop early (after a whole day) when the wall clock passes this (the baselines' tuning follows)."""
    baseline_days: int = 10
    """Days of the dual-pacing run that warms the baselines' value model (0: none)."""
    runners: int = 16
    """Env runners on Ray, each a shard of the world with 1/N of its people, traffic and budget
    (``lab.parallel``); 0: one process, no Ray."""
    sync_slots: int = 0
    """Budget slots between the runners' meetings, where each updates and the weights are averaged
    and the campaign statistics pooled (0: as often as one learner on the whole market updates)."""
    calibration: str = ""
    """Calibration file of the training world ("" = simulators/calibration/default.toml), e.g. one
    written by ``gaelp discover``."""

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ConfigError("train.days", "must be >= 1")
        if self.budget_usd is not None and self.budget_usd <= 0:
            raise ConfigError("train.budget_usd", "must be > 0")
        if self.checkpoint_every < 1:
            raise ConfigError("train.checkpoint_every", "must be >= 1")
        if self.max_minutes <= 0:
            raise ConfigError("train.max_minutes", "must be > 0")
        if self.sync_slots < 0:
            raise ConfigError("train.sync_slots", "must be >= 0 (0: the single learner's update cadence)")
        if self.runners < 0:
            raise ConfigError("train.runners", "must be >= 0 (0: one process without Ray)")


@dataclass(frozen=True)
class EvalConfig:
    """An evaluation on held-out simulated worlds (TOML table ``[evaluate]``; ``gaelp evaluate`` flags)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """World seeds (must not include the training seed)."""
    days: int = 3
    """Budget periods measured per seed."""
    warmup: int = 2
    """Budget periods run before measuring (every policy, same days)."""
    budget_usd: float | None = None
    """Daily budget, USD (None: the training run's, else ``[budget] daily_usd``)."""
    persons: int = 5_000
    """People per world."""
    opportunities_per_day: float = 20_000.0
    """Traffic volume."""
    agent_learns: bool = True
    """The agent keeps learning online during evaluation (as deployed)."""

    def __post_init__(self) -> None:
        if len(self.seeds) < 2:
            raise ConfigError("evaluate.seeds", "need at least 2 seeds for an interval (5 or more recommended)")
        if self.days < 1 or self.warmup < 0:
            raise ConfigError("evaluate.days", "need days >= 1 and warmup >= 0")
        if self.budget_usd is not None and self.budget_usd <= 0:
            raise ConfigError("evaluate.budget_usd", "must be > 0")
