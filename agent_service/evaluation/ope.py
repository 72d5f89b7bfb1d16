"""Off-policy evaluation: the value of a candidate policy from another policy's logged decisions.

Inputs follow the Open Bandit Pipeline (obp) conventions, so the same arrays feed both:

* ``reward`` [n], ``action`` [n] (index of the logged action), ``pscore`` [n] (its probability
  under the logging policy), optional ``position`` [n] (slot of a ranked list, 0 otherwise);
* ``action_dist`` — the candidate's probabilities: [n, A, L] (obp's shape), [n, A] (one
  position), or [n] holding only π_e(a_i | x_i) of the logged action (enough for IPS/SNIPS);
* ``q_hat`` [n, A, L] or [n, A] — a reward model's estimate for every action (the direct
  method's input), fitted from the log only (:func:`cell_mean_rewards`).

With ``w_i = π_e(a_i|x_i) / π_b(a_i|x_i)``::

    IPS        mean(w r)                         unbiased when π_b > 0 wherever π_e > 0
    SNIPS      sum(w r) / sum(w)                 biased O(1/n), invariant to a scale of w
    DM         mean(sum_a π_e(a|x) q̂(x,a))       low variance, biased when q̂ is wrong
    DR         DM + mean(w (r - q̂(x,a)))         unbiased if either π_b or q̂ is right
    Switch-DR  DM + mean(1[w <= τ] w (r - q̂))    DR, DM alone where the weight exceeds τ

Every estimator returns an :class:`Estimate` with a confidence interval (``ci``: seeded
percentile ``bootstrap``, ``normal`` by the CLT, or empirical ``bernstein`` (Maurer & Pontil
2009, Thm 4)), the Kish effective sample size ``(sum w)^2 / sum w^2`` and a support check.
Pure numpy: no infrastructure imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CI_METHODS",
    "Estimate",
    "SupportLimits",
    "action_dist_3d",
    "cell_mean_rewards",
    "direct_method",
    "doubly_robust",
    "importance_weights",
    "ips",
    "kish_ess",
    "snips",
    "switch_dr",
]

CiMethod = Literal["bootstrap", "normal", "bernstein"]
CI_METHODS: tuple[str, ...] = ("bootstrap", "normal", "bernstein")
Floats = NDArray[np.float64]


@dataclass(frozen=True)
class SupportLimits:
    """When an estimate's support is called poor."""

    min_ess_share: float = 0.01
    """Warn when the effective sample size is under this share of n."""
    max_weight_share: float = 0.05
    """Warn when one record carries more than this share of the total weight (n >= 100)."""
    weight_mean_tol: float = 0.1
    """Warn when mean(w) is further than this (and 4 standard errors) from 1: the candidate puts
    mass on actions the logger (almost) never took, or the propensities are wrong."""


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer for one candidate.

    :param estimator: ``ips``, ``snips``, ``dm``, ``dr`` or ``switch-dr``.
    :param value: the estimated policy value (mean reward per logged decision).
    :param ci_low: lower end of the interval. :param ci_high: upper end.
    :param ci_method: how the interval was made (method, level, resamples and seed).
    :param n: records used. :param ess: Kish effective sample size of the weights.
    :param max_weight: largest importance weight. :param weight_mean: mean weight (≈ 1 under support).
    :param poor_support: True when any warning fired. :param warnings: what fired, in words.
    """

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    ci_method: str
    n: int
    ess: float
    max_weight: float
    weight_mean: float
    poor_support: bool
    warnings: tuple[str, ...] = ()

    def covers(self, truth: float) -> bool:
        return self.ci_low <= truth <= self.ci_high


# ---------------------------------------------------------------------------- inputs
def action_dist_3d(action_dist: ArrayLike, n: int) -> Floats:
    """``action_dist`` as [n, A, L]; rejects rows that are not probability distributions."""
    d = np.asarray(action_dist, dtype=np.float64)
    if d.ndim == 2:
        d = d[:, :, None]
    if d.ndim != 3 or d.shape[0] != n:
        raise ValueError(f"action_dist must be [n, A] or [n, A, L] with n={n}, got shape {d.shape}")
    if not np.all(np.isfinite(d)) or d.min() < 0:
        raise ValueError("action_dist has negative or non-finite probabilities")
    sums = d.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise ValueError(f"action_dist rows must sum to 1 over actions (found {sums.min():.6g}..{sums.max():.6g})")
    return d


def _logged(reward: ArrayLike, action: ArrayLike | None, pscore: ArrayLike,
            position: ArrayLike | None) -> tuple[Floats, NDArray[np.intp] | None, Floats, NDArray[np.intp]]:
    r = np.asarray(reward, dtype=np.float64)
    p = np.asarray(pscore, dtype=np.float64)
    n = r.shape[0]
    if r.ndim != 1 or p.shape != (n,) or n == 0:
        raise ValueError(f"reward and pscore must be non-empty [n] arrays of one length ({r.shape}, {p.shape})")
    if not np.all(np.isfinite(r)):
        raise ValueError("reward has non-finite values")
    if not (np.all(np.isfinite(p)) and p.min() > 0 and p.max() <= 1):
        raise ValueError("pscore must lie in (0, 1]: validate the log first (agent_service.evaluation.ope_log)")
    a = None if action is None else np.asarray(action, dtype=np.intp)
    if a is not None and a.shape != (n,):
        raise ValueError(f"action must be [n], got {a.shape}")
    pos = np.zeros(n, dtype=np.intp) if position is None else np.asarray(position, dtype=np.intp)
    if pos.shape != (n,):
        raise ValueError(f"position must be [n], got {pos.shape}")
    return r, a, p, pos


def importance_weights(action: ArrayLike | None, pscore: ArrayLike, action_dist: ArrayLike,
                       position: ArrayLike | None = None) -> Floats:
    """``w_i = π_e(a_i | x_i) / pscore_i``; ``action_dist`` of shape [n] is π_e of the logged action."""
    p = np.asarray(pscore, dtype=np.float64)
    d = np.asarray(action_dist, dtype=np.float64)
    if d.ndim == 1:
        if d.shape != p.shape or not (np.all(np.isfinite(d)) and d.min() >= 0 and d.max() <= 1):
            raise ValueError("a 1-d action_dist must hold π_e(a_i|x_i) in [0, 1] for every record")
        return d / p
    if action is None:
        raise ValueError("action is needed with a full action_dist")
    n = p.shape[0]
    d3 = action_dist_3d(d, n)
    pos = np.zeros(n, dtype=np.intp) if position is None else np.asarray(position, dtype=np.intp)
    return d3[np.arange(n), np.asarray(action, dtype=np.intp), pos] / p


def kish_ess(w: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (n when all weights are equal)."""
    x = np.asarray(w, dtype=np.float64)
    s2 = float(np.dot(x, x))
    return float(x.sum()) ** 2 / s2 if s2 > 0 else 0.0


def _support(w: Floats, limits: SupportLimits) -> tuple[float, tuple[str, ...]]:
    n = w.shape[0]
    ess = kish_ess(w)
    out = []
    if ess < limits.min_ess_share * n:
        out.append(f"effective sample size {ess:.1f} is under {limits.min_ess_share:.0%} of n={n}")
    total = float(w.sum())
    if n >= 100 and total > 0 and float(w.max()) / total > limits.max_weight_share:
        out.append(f"one record carries {float(w.max()) / total:.1%} of the total weight (max w={w.max():.4g})")
    se = float(w.std()) / math.sqrt(n)
    if abs(float(w.mean()) - 1.0) > max(limits.weight_mean_tol, 4 * se):
        out.append(f"mean weight {w.mean():.3f} is far from 1: the candidate takes actions the log lacks "
                   "(or the propensities are wrong)")
    if total == 0:
        out.append("the candidate gives probability 0 to every logged action")
    return ess, tuple(out)


# ---------------------------------------------------------------------------- intervals
def _bootstrap(stat: Callable[[NDArray[np.intp]], Floats], n: int, alpha: float, n_boot: int,
               seed: int) -> tuple[float, float]:
    """Percentile interval of ``stat`` over ``n_boot`` resamples; ``stat`` maps [c, n] indices to [c]."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 4_000_000 // n))  # bounded memory: chunk × n indices at a time
    boots = np.concatenate([stat(rng.integers(0, n, size=(min(chunk, n_boot - s), n)))
                            for s in range(0, n_boot, chunk)])
    return float(np.percentile(boots, 100 * alpha / 2)), float(np.percentile(boots, 100 * (1 - alpha / 2)))


def _interval(values: Floats, point: float, ci: CiMethod, alpha: float, n_boot: int, seed: int,
              value_range: float | None, ratio_den: Floats | None = None) -> tuple[float, float, str]:
    """Interval of a mean of ``values`` (or of ``sum values / sum ratio_den`` for SNIPS)."""
    n = values.shape[0]
    level = f"{1 - alpha:.0%}"
    if ci == "bootstrap":
        den = ratio_den

        def stat(idx: NDArray[np.intp]) -> Floats:
            num: Floats = values[idx].sum(axis=1)
            if den is None:
                mean: Floats = num / n
                return mean
            d: Floats = den[idx].sum(axis=1)
            return np.where(d > 0, num / np.where(d > 0, d, 1.0), 0.0)
        lo, hi = _bootstrap(stat, n, alpha, n_boot, seed)
        return lo, hi, f"bootstrap percentile {level}, {n_boot} resamples, seed {seed}"
    # normal and bernstein use the (linearised) per-record terms
    if ratio_den is not None:
        mw = float(ratio_den.mean())
        terms = (values - point * ratio_den) / mw if mw > 0 else np.zeros_like(values)
    else:
        terms = values
    sd = float(terms.std(ddof=1)) if n > 1 else math.inf
    if ci == "normal":
        half = NormalDist().inv_cdf(1 - alpha / 2) * sd / math.sqrt(n)
        return point - half, point + half, f"normal (CLT) {level}"
    if ci == "bernstein":
        span = float(terms.max() - terms.min()) if value_range is None else float(value_range)
        log_term = math.log(4 / alpha)  # two-sided: alpha/2 per side in Thm 4's ln(2/δ)
        half = math.sqrt(2 * sd**2 * log_term / n) + 7 * span * log_term / (3 * max(n - 1, 1))
        how = "given range" if value_range is not None else "observed range (heuristic: no known bound)"
        return point - half, point + half, f"empirical Bernstein {level}, {how}"
    raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")


def _estimate(name: str, point: float, values: Floats, w: Floats, ci: CiMethod, alpha: float, n_boot: int,
              seed: int, value_range: float | None, limits: SupportLimits, ratio_den: Floats | None = None) -> Estimate:
    lo, hi, how = _interval(values, point, ci, alpha, n_boot, seed, value_range, ratio_den)
    ess, warnings = _support(w, limits)
    return Estimate(name, point, lo, hi, how, int(values.shape[0]), ess, float(w.max()), float(w.mean()),
                    bool(warnings), warnings)


# ---------------------------------------------------------------------------- estimators
def ips(reward: ArrayLike, action: ArrayLike | None, pscore: ArrayLike, action_dist: ArrayLike,
        position: ArrayLike | None = None, *, clip: float = math.inf, ci: CiMethod = "bootstrap",
        alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, value_range: float | None = None,
        limits: SupportLimits = SupportLimits()) -> Estimate:
    """Inverse propensity scoring: ``mean(min(w, clip) · r)`` (obp ``InverseProbabilityWeighting``).

    :param reward: [n] observed rewards. :param action: [n] logged action indices (None with a 1-d
        ``action_dist``). :param pscore: [n] logging propensities in (0, 1].
    :param action_dist: the candidate's probabilities (see the module docstring).
    :param position: [n] list positions, or None. :param clip: largest weight kept (inf: none).
    :param ci: ``bootstrap`` (seeded percentile), ``normal`` or ``bernstein``. :param alpha: 1 - level.
    :param n_boot: bootstrap resamples. :param seed: bootstrap seed.
    :param value_range: known bound on the range of ``w·r`` for ``bernstein`` (observed range if None).
    """
    r, a, p, pos = _logged(reward, action, pscore, position)
    w = importance_weights(a, p, action_dist, pos)
    values = np.minimum(w, clip) * r
    return _estimate("ips", float(values.mean()), values, w, ci, alpha, n_boot, seed, value_range, limits)


def snips(reward: ArrayLike, action: ArrayLike | None, pscore: ArrayLike, action_dist: ArrayLike,
          position: ArrayLike | None = None, *, ci: CiMethod = "bootstrap", alpha: float = 0.05,
          n_boot: int = 1000, seed: int = 0, value_range: float | None = None,
          limits: SupportLimits = SupportLimits()) -> Estimate:
    """Self-normalised IPS: ``sum(w r) / sum(w)`` (obp ``SelfNormalizedInverseProbabilityWeighting``).

    The bootstrap resamples the ratio; ``normal``/``bernstein`` use its linearisation
    ``w (r - V) / mean(w)``. Parameters as :func:`ips`.
    """
    r, a, p, pos = _logged(reward, action, pscore, position)
    w = importance_weights(a, p, action_dist, pos)
    total = float(w.sum())
    point = float((w * r).sum() / total) if total > 0 else 0.0
    return _estimate("snips", point, w * r, w, ci, alpha, n_boot, seed, value_range, limits, ratio_den=w)


def _dm_terms(q_hat: ArrayLike, d3: Floats, pos: NDArray[np.intp]) -> tuple[Floats, Floats]:
    n = d3.shape[0]
    q = np.asarray(q_hat, dtype=np.float64)
    if q.ndim == 2:
        q = q[:, :, None]
    if q.shape != d3.shape:
        raise ValueError(f"q_hat must have action_dist's shape {d3.shape}, got {q.shape}")
    rows = np.arange(n)
    q_pos = q[rows, :, pos]  # [n, A]
    return (d3[rows, :, pos] * q_pos).sum(axis=1), q_pos


def direct_method(reward: ArrayLike, action: ArrayLike, pscore: ArrayLike, action_dist: ArrayLike,
                  q_hat: ArrayLike, position: ArrayLike | None = None, *, ci: CiMethod = "bootstrap",
                  alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, value_range: float | None = None,
                  limits: SupportLimits = SupportLimits()) -> Estimate:
    """The reward model alone: ``mean(sum_a π_e(a|x) q̂(x,a))`` (a baseline; its interval ignores the
    model's own error). Parameters as :func:`doubly_robust`."""
    r, a, p, pos = _logged(reward, action, pscore, position)
    d3 = action_dist_3d(action_dist, r.shape[0])
    dm, _ = _dm_terms(q_hat, d3, pos)
    w = importance_weights(a, p, d3, pos)
    return _estimate("dm", float(dm.mean()), dm, w, ci, alpha, n_boot, seed, value_range, limits)


def doubly_robust(reward: ArrayLike, action: ArrayLike, pscore: ArrayLike, action_dist: ArrayLike,
                  q_hat: ArrayLike, position: ArrayLike | None = None, *, ci: CiMethod = "bootstrap",
                  alpha: float = 0.05, n_boot: int = 1000, seed: int = 0, value_range: float | None = None,
                  limits: SupportLimits = SupportLimits()) -> Estimate:
    """Doubly robust: ``mean(q̂(x,π_e) + w (r - q̂(x,a)))`` (obp ``DoublyRobust``).

    :param q_hat: [n, A, L] or [n, A] reward model estimates for every action, fitted from the
        log only (cross-fitted: :func:`cell_mean_rewards`). Other parameters as :func:`ips`.
    """
    return switch_dr(reward, action, pscore, action_dist, q_hat, position, tau=math.inf, ci=ci, alpha=alpha,
                     n_boot=n_boot, seed=seed, value_range=value_range, limits=limits, _name="dr")


def switch_dr(reward: ArrayLike, action: ArrayLike, pscore: ArrayLike, action_dist: ArrayLike,
              q_hat: ArrayLike, position: ArrayLike | None = None, *, tau: float = math.inf,
              ci: CiMethod = "bootstrap", alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
              value_range: float | None = None, limits: SupportLimits = SupportLimits(),
              _name: str = "switch-dr") -> Estimate:
    """Switch-DR (Wang et al. 2017): the DR correction only where ``w <= tau`` (obp
    ``SwitchDoublyRobust(lambda_=tau)``); ``tau = inf`` is DR, ``tau = 0`` the direct method.
    Parameters as :func:`doubly_robust`."""
    if not tau >= 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    r, a, p, pos = _logged(reward, action, pscore, position)
    n = r.shape[0]
    if a is None:
        raise ValueError("DR needs the logged actions")
    d3 = action_dist_3d(action_dist, n)
    dm, q_pos = _dm_terms(q_hat, d3, pos)
    w = d3[np.arange(n), a, pos] / p
    correction = np.where(w <= tau, w, 0.0) * (r - q_pos[np.arange(n), a])
    values = dm + correction
    return _estimate(_name, float(values.mean()), values, w, ci, alpha, n_boot, seed, value_range, limits)


# ---------------------------------------------------------------------------- reward model
def cell_mean_rewards(cell: ArrayLike, action: ArrayLike, reward: ArrayLike, n_cells: int, n_actions: int, *,
                      prior: float = 5.0, folds: int = 2, seed: int = 0) -> Floats:
    """A reward model from the log only: the mean reward per (context cell, action), shrunk to the
    action's mean with ``prior`` pseudo-records, cross-fitted over ``folds`` (each record's
    estimates come from the other folds, so DR's correction term is not fitted on itself).

    :param cell: [n] context cell of each record (any binning of x into ``n_cells`` ints).
    :param action: [n] logged actions. :param reward: [n] rewards.
    :returns: [n, n_actions] q̂(x_i, a) for every record and action.
    """
    c = np.asarray(cell, dtype=np.intp)
    a = np.asarray(action, dtype=np.intp)
    r = np.asarray(reward, dtype=np.float64)
    n = r.shape[0]
    fold = np.random.default_rng(seed).integers(0, folds, size=n) if folds > 1 else np.zeros(n, dtype=np.intp)
    out = np.empty((n, n_actions))
    for k in range(max(folds, 1)):
        fit = fold != k if folds > 1 else np.ones(n, dtype=bool)
        flat = c[fit] * n_actions + a[fit]
        sums = np.bincount(flat, weights=r[fit], minlength=n_cells * n_actions).reshape(n_cells, n_actions)
        counts = np.bincount(flat, minlength=n_cells * n_actions).reshape(n_cells, n_actions)
        a_sum = sums.sum(axis=0)
        a_cnt = counts.sum(axis=0)
        overall = a_sum.sum() / max(a_cnt.sum(), 1)
        a_mean = (a_sum + prior * overall) / (a_cnt + prior)
        table = (sums + prior * a_mean) / (counts + prior)
        rows = fold == k
        out[rows] = table[c[rows]]
    return out
