"""Always-valid comparison of a candidate arm against control on conversion value per dollar.

The metric of an arm is a ratio, R = Σ value / Σ spend over the persons of the arm; the decision quantity is
the relative lift R_candidate / R_control - 1.

Method: a mixture sequential probability ratio test (mSPRT) with a normal mixture over the effect —
Johari, Koomen, Pekelis & Walsh, "Always valid inference: continuous monitoring of A/B tests", Operations
Research 70(3), 2022 (arXiv:1512.04922, 2017) — in its confidence-sequence form (the normal-mixture
boundary of Robbins 1970 / Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist. 2021), applied to the log of
the ratio with a delta-method plug-in variance. With the estimate Δ = log R̂_cand - log R̂_ctrl and its
variance V = V_cand + V_ctrl, every θ with

    |Δ - θ| > r(V),   r(V)² = V (V + τ²) / τ² · (2 log(1/α) + log((V + τ²) / V))

is rejected; that is exactly the mSPRT's Λ ≥ 1/α. Because V comes from the data, the guarantee is
asymptotic: Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit theory and
asymptotic confidence sequences" (Ann. Statist. 2024; arXiv:2103.06476) show that the Gaussian-mixture
boundary with a consistent plug-in variance keeps its time-uniform coverage; ``min_conversions`` keeps the
first looks away from the small-sample regime where a heavy-tailed value's variance is underestimated.

Why this way:

* The unit is the person (canonical id after identity resolution) — that is what assignment randomises;
  one person's impressions and conversions are correlated, persons are independent. So each arm keeps
  six sums over persons (n, Σx, Σy, Σx², Σy², Σxy): O(1) memory, batches merge exactly.
* Ratio by the delta method on the log: log R̂ ≈ log R + mean(x/x̄ - y/ȳ), so Var(log R̂) ≈ Var(x/x̄ - y/ȳ)/n.
  The log turns the relative lift into a difference and keeps the interval of the lift inside (-1, ∞).
* An interval that may be looked at after every batch: a fixed-horizon t-test peeked at every batch
  promotes or rolls back a candidate equal to control far more often than α (``bench/bench_canary.py``).
* No scipy: the boundary is closed-form, so the module needs only ``math`` (and numpy for batches).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from agent_service.config.experiments import SequentialConfig

__all__ = [
    "Arm",
    "Verdict",
    "Interval",
    "RatioStats",
    "SequentialTest",
    "TestResult",
    "compare",
    "difference_interval",
    "log_ratio_interval",
    "mixture_radius",
]


class Arm(enum.StrEnum):
    CONTROL = "control"
    CANDIDATE = "candidate"


class Verdict(enum.StrEnum):
    """A sequential test's verdict on one arm."""

    PROMOTE = "promote"
    """The whole interval of the lift is above 0."""
    HOLD = "hold"
    """No decision yet (too few data, or the interval straddles the boundaries)."""
    ROLLBACK = "rollback"
    """The whole interval of the lift is below ``-rollback_margin``."""


# ---------------------------------------------------------------------------------------
# Sufficient statistics of a ratio metric
# ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class RatioStats:
    """Sums over the i.i.d. units (persons) of one arm for the ratio Σx / Σy."""

    n: int = 0
    sum_x: float = 0.0
    sum_y: float = 0.0
    sum_xx: float = 0.0
    sum_yy: float = 0.0
    sum_xy: float = 0.0
    n_pos: int = 0
    """Units with x > 0 (persons with a conversion when x is value)."""

    def add(self, x: float, y: float) -> None:
        """One unit's totals (a person's value and spend)."""
        self.n += 1
        self.sum_x += x
        self.sum_y += y
        self.sum_xx += x * x
        self.sum_yy += y * y
        self.sum_xy += x * y
        self.n_pos += x > 0

    def add_many(self, x: ArrayLike, y: ArrayLike) -> None:
        """Many units at once; ``x`` and ``y`` have one entry per unit."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        if xa.shape != ya.shape or xa.ndim != 1:
            raise ValueError(f"x and y must be 1-d of equal length, got {xa.shape} and {ya.shape}")
        self.n += int(xa.size)
        self.sum_x += float(xa.sum())
        self.sum_y += float(ya.sum())
        self.sum_xx += float(xa @ xa)
        self.sum_yy += float(ya @ ya)
        self.sum_xy += float(xa @ ya)
        self.n_pos += int(np.count_nonzero(xa > 0))

    def merge(self, other: RatioStats) -> None:
        """Add another batch's sums (exact: every field is a sum)."""
        self.n += other.n
        self.sum_x += other.sum_x
        self.sum_y += other.sum_y
        self.sum_xx += other.sum_xx
        self.sum_yy += other.sum_yy
        self.sum_xy += other.sum_xy
        self.n_pos += other.n_pos

    @property
    def ratio(self) -> float:
        """Σx / Σy (nan when Σy = 0)."""
        return self.sum_x / self.sum_y if self.sum_y > 0 else math.nan

    def log_ratio_var(self) -> float:
        """Delta-method variance of log(Σx / Σy): Var(x/x̄ - y/ȳ) / n; inf when undefined."""
        if self.n < 2 or self.sum_x <= 0 or self.sum_y <= 0:
            return math.inf
        mx, my = self.sum_x / self.n, self.sum_y / self.n
        ss = self.sum_xx / (mx * mx) - 2 * self.sum_xy / (mx * my) + self.sum_yy / (my * my)
        return max(ss, 0.0) / (self.n - 1) / self.n

    def ratio_var(self) -> float:
        """Delta-method variance of Σx / Σy: Var(x - R y) / (n ȳ²); inf when undefined."""
        if self.n < 2 or self.sum_y <= 0:
            return math.inf
        r, my = self.sum_x / self.sum_y, self.sum_y / self.n
        ss = self.sum_xx - 2 * r * self.sum_xy + r * r * self.sum_yy
        return max(ss, 0.0) / (self.n - 1) / (self.n * my * my)


# ---------------------------------------------------------------------------------------
# The normal-mixture confidence sequence
# ---------------------------------------------------------------------------------------
def mixture_radius(var: float, alpha: float, tau: float) -> float:
    """Half-width of the two-sided normal-mixture confidence sequence at level ``alpha``.

    :param var: variance of the estimate now (V).
    :param alpha: error level over the whole (unbounded) run.
    :param tau: standard deviation of the normal mixture over the effect (the mSPRT's τ).
    """
    if not math.isfinite(var):
        return math.inf
    if var <= 0:
        return 0.0
    t2 = tau * tau
    return math.sqrt(var * (var + t2) / t2 * (2 * math.log(1 / alpha) + math.log((var + t2) / var)))


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its always-valid interval (on the scale it was computed on)."""

    estimate: float
    lower: float
    upper: float
    std_err: float


def log_ratio_interval(control: RatioStats, candidate: RatioStats, alpha: float, tau: float) -> Interval:
    """Always-valid interval of log(R_candidate / R_control); ±inf bounds while undefined."""
    v = control.log_ratio_var() + candidate.log_ratio_var()
    if not math.isfinite(v):
        return Interval(math.nan, -math.inf, math.inf, math.inf)
    est = math.log(candidate.ratio) - math.log(control.ratio)
    r = mixture_radius(v, alpha, tau)
    return Interval(est, est - r, est + r, math.sqrt(v))


def difference_interval(control: RatioStats, candidate: RatioStats, alpha: float, tau: float) -> Interval:
    """Always-valid interval of R_candidate - R_control (for rates that may be 0, such as an error rate)."""
    v = control.ratio_var() + candidate.ratio_var()
    if not math.isfinite(v):
        return Interval(math.nan, -math.inf, math.inf, math.inf)
    est = candidate.ratio - control.ratio
    r = mixture_radius(v, alpha, tau)
    return Interval(est, est - r, est + r, math.sqrt(v))


def _lift(log_ratio: float) -> float:
    """exp(log_ratio) - 1, saturating at inf instead of overflowing."""
    return math.expm1(log_ratio) if log_ratio < 700 else math.inf


# ---------------------------------------------------------------------------------------
# The test on value per dollar
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TestResult:
    """Where the test stands; lifts are relative (0.1 = the candidate earns 10 % more value per dollar)."""

    __test__ = False  # not a pytest class

    lift: float
    """Point estimate of the relative lift (nan before both arms have value and spend)."""
    lower: float
    """Lower end of the always-valid interval of the lift (-1 while undefined)."""
    upper: float
    """Upper end (inf while undefined)."""
    decision: Verdict
    ready: bool
    """Both arms have reached ``min_persons`` and ``min_conversions``."""
    control_persons: int
    candidate_persons: int
    control_conversions: int
    candidate_conversions: int
    control_value_per_dollar: float
    candidate_value_per_dollar: float


class SequentialTest:
    """Candidate vs control on Σ value / Σ spend, fed person by person or in batches, readable any time.

    :param config: level, mixture width, minimum sample and rollback margin.
    """

    def __init__(self, config: SequentialConfig | None = None) -> None:
        self.config = config or SequentialConfig()
        self.stats: dict[Arm, RatioStats] = {Arm.CONTROL: RatioStats(), Arm.CANDIDATE: RatioStats()}

    def observe(self, arm: Arm, value: float, spend: float) -> None:
        """One person's totals (value of their conversions and what was spent on them, in USD)."""
        if not (value >= 0 and spend >= 0):
            raise ValueError(f"value and spend must be >= 0, got {value}, {spend}")
        self.stats[Arm(arm)].add(value, spend)

    def observe_many(self, arm: Arm, values: ArrayLike, spends: ArrayLike) -> None:
        """Many persons of one arm at once (arrays with one entry per person)."""
        self.stats[Arm(arm)].add_many(values, spends)

    def add_stats(self, arm: Arm, stats: RatioStats) -> None:
        """A batch already reduced to its sums."""
        self.stats[Arm(arm)].merge(stats)

    def result(self) -> TestResult:
        """The estimate, its interval and the decision now."""
        return compare(self.stats[Arm.CONTROL], self.stats[Arm.CANDIDATE], self.config)


def compare(control: RatioStats, candidate: RatioStats, config: SequentialConfig) -> TestResult:
    """Lift of ``candidate`` over ``control`` in Σx/Σy, its always-valid interval and the decision.

    :param control: the control arm's sums.
    :param candidate: the candidate arm's sums.
    :param config: level, mixture width, minimum sample and rollback margin.
    """
    c, k = control, candidate
    ready = min(c.n, k.n) >= config.min_persons and min(c.n_pos, k.n_pos) >= config.min_conversions
    iv = log_ratio_interval(c, k, config.alpha, config.mixture_sd)
    lift = _lift(iv.estimate) if math.isfinite(iv.estimate) else math.nan
    lower, upper = _lift(iv.lower), _lift(iv.upper)
    decision = Verdict.HOLD
    if ready and lower > 0:
        decision = Verdict.PROMOTE
    elif ready and upper < -config.rollback_margin:
        decision = Verdict.ROLLBACK
    return TestResult(lift, lower, upper, decision, ready, c.n, k.n, c.n_pos, k.n_pos, c.ratio, k.ratio)
