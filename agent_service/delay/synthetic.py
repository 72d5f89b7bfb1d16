"""A seeded delayed-feedback stream with known truth (tests and benches only).

Touches arrive uniformly over ``days``; each has features ``x ~ N(0, I)``, converts with
probability ``sigmoid(w·x + b)`` and, if it does, after an exponential delay (rate
``exp(v·x + c)`` per day) or a lognormal one (a misspecified case for the exponential model).
Roughly: a third of the conversions within hours, half within a day, a tail over weeks,
like the Criteo figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.units import DAY_MS

__all__ = ["DelayedStream", "delayed_feedback_stream"]



@dataclass(frozen=True)
class DelayedStream:
    """A synthetic stream and its truth."""

    features: np.ndarray
    """``(n, d)`` touch features."""
    time_ms: np.ndarray
    """``(n,)`` touch event times, sorted."""
    p_true: np.ndarray
    """``(n,)`` true eventual-conversion probability."""
    converts: np.ndarray
    """``(n,)`` whether the touch eventually converts."""
    delay_ms: np.ndarray
    """``(n,)`` true delay (ms) of converting touches; -1 otherwise."""

    def converted_by(self, now_ms: int, window_ms: int) -> np.ndarray:
        """Which touches have a joined conversion at ``now_ms`` (within the window)."""
        out: np.ndarray = self.converts & (self.delay_ms <= window_ms) & (self.time_ms + self.delay_ms <= now_ms)
        return out


def delayed_feedback_stream(n: int, days: float, seed: int = 0, *, n_features: int = 3,
                            delay: str = "exponential", base_rate: float = 0.08) -> DelayedStream:
    """Draw a stream.

    :param n: touches.
    :param days: span of touch times (starting at 0 ms).
    :param seed: seed of every draw.
    :param n_features: feature dimension.
    :param delay: ``"exponential"`` (the model's family) or ``"lognormal"``.
    :param base_rate: conversion probability at ``x = 0``.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    w = np.linspace(0.8, -0.5, n_features)
    v = np.linspace(-0.4, 0.6, n_features)
    logit = x @ w + np.log(base_rate / (1 - base_rate))
    p = 1 / (1 + np.exp(-logit))
    converts = rng.random(n) < p
    if delay == "exponential":
        rate = np.exp(x @ v + np.log(1 / 1.5))  # mean 1.5 days at x = 0
        delay_days = rng.exponential(1 / rate)
    elif delay == "lognormal":
        delay_days = np.exp(rng.normal(np.log(0.6) + 0.3 * (x @ v), 1.4))
    else:
        raise ValueError(f"unknown delay family {delay!r}")
    t = np.sort(rng.uniform(0, days * DAY_MS, size=n)).astype(np.int64)
    d = np.where(converts, (delay_days * DAY_MS).astype(np.int64), -1)
    return DelayedStream(x, t, p, converts, d)
