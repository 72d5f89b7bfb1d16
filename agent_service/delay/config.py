"""Settings of the delayed-conversion model and its online learner."""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent_service.errors import ConfigError
from agent_service.units import DAY_S, WINDOW_DAYS

__all__ = ["DelayModelConfig"]


@dataclass(frozen=True)
class DelayModelConfig:
    """Learning settings of :class:`~agent_service.delay.model.DelayedConversionModel`."""

    lr: float = 0.02
    """Adam learning rate of online steps."""
    beta1: float = 0.9
    """Adam first-moment decay."""
    beta2: float = 0.999
    """Adam second-moment decay."""
    l2: float = 1e-4
    """L2 penalty on the feature weights (not the intercepts)."""
    prior_rate: float = 0.05
    """Initial eventual-conversion probability (sets the logit intercept)."""
    prior_mean_delay_days: float = 2.0
    """Initial mean delay in days (sets the log-rate intercept)."""
    delay_by_features: bool = True
    """The delay rate depends on the features (Chapelle's model); False: one rate shared by all
    touches. With few conversions and delays that are not exponential, per-feature rates trade
    off against the conversion probability (a slow rate excuses a high probability) and the
    probabilities stop ranking touches; a shared rate keeps them identifiable."""
    window_days: float = WINDOW_DAYS
    """Attribution window: conversions later than this are never joined (censoring time cap)."""
    buffer_size: int = 200_000
    """Touches kept by the online learner (oldest evicted first)."""
    batch_size: int = 512
    """Minibatch of one online step."""
    seed: int = 0
    """Seed of initial weights and minibatch sampling."""

    def __post_init__(self) -> None:
        checks = [
            (self.lr > 0, "delay.lr", "must be > 0"),
            (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "delay.beta1", "beta1 and beta2 must be in [0, 1)"),
            (self.l2 >= 0, "delay.l2", "must be >= 0"),
            (0 < self.prior_rate < 1, "delay.prior_rate", "must be in (0, 1)"),
            (math.isfinite(self.prior_mean_delay_days) and self.prior_mean_delay_days > 0,
             "delay.prior_mean_delay_days", "must be > 0 days"),
            (math.isfinite(self.window_days) and self.window_days > 0, "delay.window_days", "must be > 0 days"),
            (self.buffer_size > 0, "delay.buffer_size", "must be > 0"),
            (self.batch_size > 0, "delay.batch_size", "must be > 0"),
        ]
        for ok, key, reason in checks:
            if not ok:
                raise ConfigError(key, reason)

    @property
    def window_s(self) -> float:
        """The window in seconds."""
        return self.window_days * float(DAY_S)
