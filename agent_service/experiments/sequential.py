"""An always-valid sequential comparison of value per dollar between a candidate and control.

The metric is a ratio, ``R = Σ conversion value / Σ spend`` over each arm's people. By the delta
method its estimate has variance ``(σ_v² − 2R·cov(v, s) + R²·σ_s²) / (n · s̄²)`` (``v``, ``s``: a
person's value and spend). The difference ``θ = R_cand − R_ctrl`` is tested with the normal
mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh 2017, "Always valid
inference"): with ``V`` the variance of ``θ̂`` and a N(0, τ²) mixture over θ,

    Λ(θ₀) = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 V (V + τ²)))

and the always-valid (1 − α) confidence sequence is ``{θ₀ : Λ(θ₀) < 1/α}``:

    θ̂ ± sqrt(V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V)))

It may be looked at after every batch — peeking does not inflate the error rate, unlike a
fixed-horizon t-test checked repeatedly (``bench/bench_canary.py`` measures both). ``τ`` is the
scale of the effects one expects (a share of the control's value per dollar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ArmStats", "Comparison", "compare"]


@dataclass
class ArmStats:
    """Running sums of one arm (people, their value and spend; O(1) per update)."""

    n: int = 0
    v: float = 0.0
    s: float = 0.0
    vv: float = 0.0
    ss: float = 0.0
    vs: float = 0.0
    conversions: int = 0

    def add(self, value: np.ndarray, spend: np.ndarray, conversions: int = 0) -> None:
        """Add people (value and spend per person, USD)."""
        v, s = np.asarray(value, np.float64), np.asarray(spend, np.float64)
        self.n += len(v)
        self.v += float(v.sum())
        self.s += float(s.sum())
        self.vv += float(v @ v)
        self.ss += float(s @ s)
        self.vs += float(v @ s)
        self.conversions += conversions

    @property
    def ratio(self) -> float:
        return self.v / self.s if self.s > 0 else float("nan")

    def ratio_variance(self) -> float:
        """Delta-method variance of :attr:`ratio`."""
        if self.n < 2 or self.s <= 0:
            return float("inf")
        n, r = self.n, self.ratio
        mv, ms = self.v / n, self.s / n
        var_v = self.vv / n - mv * mv
        var_s = self.ss / n - ms * ms
        cov = self.vs / n - mv * ms
        return max((var_v - 2 * r * cov + r * r * var_s) / (n * ms * ms), 1e-300)


class Comparison:
    """Where the comparison stands."""

    def __init__(self, diff: float, low: float, high: float, control_ratio: float) -> None:
        self.diff, self.low, self.high, self.control_ratio = diff, low, high, control_ratio

    @property
    def lift(self) -> float:
        """Relative lift of value per dollar, candidate over control."""
        return self.diff / self.control_ratio if self.control_ratio > 0 else float("nan")

    @property
    def lift_interval(self) -> tuple[float, float]:
        c = self.control_ratio
        return (self.low / c, self.high / c) if c > 0 else (float("nan"), float("nan"))


def compare(control: ArmStats, candidate: ArmStats, alpha: float = 0.05, tau_share: float = 0.1) -> Comparison:
    """The always-valid (1 − α) confidence sequence of ``R_cand − R_ctrl`` (module docstring);
    ``tau_share``: the mixture's scale as a share of the control's value per dollar."""
    theta = candidate.ratio - control.ratio
    v = control.ratio_variance() + candidate.ratio_variance()
    if not (math.isfinite(theta) and math.isfinite(v)):
        return Comparison(float("nan"), -math.inf, math.inf, control.ratio)
    tau2 = (tau_share * max(abs(control.ratio), 1e-12)) ** 2
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    return Comparison(theta, theta - half, theta + half, control.ratio)
