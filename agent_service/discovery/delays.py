"""Click-to-conversion delay, with right-censoring and unknown causing clicks.

GA4 records a purchase, not which earlier click caused it, and a click near the end of the data
may still convert after it. Both are handled by one censored likelihood fitted by EM:

**Method.** Every click converts with probability q after a delay with density f (the
simulator's family: a shifted log-normal, parameters θ = shift, median, sigma); a conversion's
cause is latent among its person's clicks in the ``max_days`` before it, or a background
(a conversion on a device not linked to its click, which may meet that device's unrelated
clicks). The log-likelihood is Σ_j log(q Σ_i f(t_j − t_i) + γ) + Σ_i log(1 − q F(c_i)), where
c_i = data end − t_i is click i's follow-up: a click still inside its window is censored at
c_i (it contributes "no conversion *yet*", 1 − q F(c_i)), never counted as "no conversion".
EM alternates responsibilities r_ji ∝ q f(t_j − t_i) (background ∝ γ) with the M-step
q, θ = argmax Σ r log(q f) + Σ_i (1 − R_i) log(1 − q F(c_i; θ)) (R_i: click i's attributed
conversions; q by bisection, θ by Nelder–Mead). γ is pinned by
the conversions that have no candidate at all (the visible part of the unlinked ones): the
unlinked conversions that do find candidates are estimated as that count × p/(1 − p), p the
share of time their persons have a click within ``max_days`` before. Alongside, a
nonparametric Kaplan–Meier estimate with the same responsibilities (hazard per bin = attributed
conversions / clicks at risk, i.e. with follow-up reaching the bin) is reported as a check of the
family.

Per-click conversion rates (by channel, device, segment) are the responsibilities summed over
a group's clicks divided by the clicks' expected observable share F(c_i).

**Check.** Round trip (tests/discovery): median and 90th percentile within the stated relative
tolerance of the generating mixture's; the bench prints two naive estimates beside it (the last
click before each conversion, and the responsibilities' lags without the censoring correction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.optimize import minimize
from scipy.special import ndtr

from agent_service.discovery.data import Observations
from agent_service.units import DAY_MS
from simulators.calibration.schema import DelayComponent

__all__ = ["DelayFinding", "discover_delays", "lognormal_from_quantiles"]

_Z90 = 1.2815515655446004


@dataclass(frozen=True)
class DelayFinding:
    quantiles: dict[str, float]
    """p10, p50, p90 of the fitted (censoring-corrected) delay, days."""
    km_quantiles: dict[str, float]
    """p10, p50, p90 of the nonparametric Kaplan–Meier estimate with the same attribution."""
    naive_last_click: dict[str, float]
    """p50, p90 of conversion time − last earlier click (no attribution, no censoring)."""
    naive_uncensored: dict[str, float]
    """p50, p90 of the attributed lags without the censoring correction."""
    component: DelayComponent
    """The fitted shifted log-normal."""
    q: float
    """Per-click conversion probability."""
    background_share: float
    """Share of conversions with candidates attributed to no click."""
    without_candidates: int
    """Conversions with no earlier click of their person in range."""
    conversions: int
    click_conversions: np.ndarray
    """[sessions] attributed conversions per session (0 for unclicked sessions)."""
    exposure: np.ndarray
    """[sessions] F(follow-up) of each clicked session (0 if unclicked)."""

    def attributed(self, weights: np.ndarray) -> np.ndarray:
        """Conversions attributed to clicks grouped by per-session weights.

        :param weights: float [sessions, G] (one-hot groups, or segment responsibilities).
        """
        return np.asarray(self.click_conversions @ weights)


def _dist(theta: np.ndarray) -> stats.rv_continuous:
    return stats.lognorm(np.exp(theta[2]), scale=np.exp(theta[1]))


def discover_delays(obs: Observations, max_days: float = 45.0, iters: int = 40, bin_days: float = 0.25) -> DelayFinding:
    """Fit the delay distribution (see the module docstring).

    :param obs: the ingested sessions and conversions.
    :param max_days: longest delay considered (also capped by the data's span).
    :param iters: EM iterations.
    :param bin_days: bin width of the Kaplan–Meier check, days.
    """
    span = (obs.end_ms - obs.start_ms) / DAY_MS
    horizon = min(max_days, span)
    clicks = np.flatnonzero(obs.s_click)
    order = np.lexsort((obs.s_time[clicks], obs.s_unit[clicks]))
    clicks = clicks[order]
    cu, ct = obs.s_unit[clicks], obs.s_time[clicks]
    t0 = int(min(obs.start_ms, ct.min() if ct.size else obs.start_ms))
    key = (cu << 41) | (ct - t0)
    h_ms = int(horizon * DAY_MS)
    lo = np.searchsorted(key, (obs.c_unit << 41) | np.maximum(obs.c_time - h_ms - t0, 0), side="left")
    hi = np.searchsorted(key, (obs.c_unit << 41) | np.maximum(obs.c_time - t0, 0), side="left")
    n_cand = hi - lo
    has = n_cand > 0
    conv = np.repeat(np.arange(obs.c_time.size), n_cand)
    pair = np.repeat(lo, n_cand) + np.arange(n_cand.sum()) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    d = (obs.c_time[conv] - ct[pair]) / DAY_MS
    fu = np.minimum((obs.end_ms - ct) / DAY_MS, horizon)
    # the time in which an unlinked conversion would meet candidates
    same_next = np.r_[cu[1:] == cu[:-1], False]
    gap = np.where(same_next, np.r_[ct[1:] - ct[:-1], 0] / DAY_MS, np.inf)
    cover = np.bincount(cu, weights=np.minimum(np.minimum(gap, horizon), fu),
                        minlength=int(obs.c_unit.max(initial=0)) + 1)
    p_cand = float(np.clip(np.mean(cover[obs.c_unit] / max(span, 1e-9)), 0.0, 0.95)) if obs.c_unit.size else 0.0
    unlinked_with = (~has).sum() * p_cand / (1.0 - p_cand)
    fu_cell = np.rint(fu * 100).astype(np.int64)
    fu_grid = np.arange(fu_cell.max(initial=0) + 1) / 100.0
    theta = np.array([0.0, np.log(max(np.median(d), 0.5)) if d.size else 0.0, np.log(0.8)])
    q = has.sum() / max(clicks.size, 1)
    r = np.zeros(d.size)
    bg = np.zeros(obs.c_time.size)
    for _ in range(iters):
        dens = q * _dist(theta).pdf(np.maximum(d - theta[0], 0.0)) + 1e-300
        signal = np.bincount(conv, weights=dens, minlength=obs.c_time.size)
        gamma = _background(signal[has], unlinked_with)
        r = dens / (signal + gamma)[conv]
        bg = np.where(has, gamma / (signal + gamma), 0.0)
        alive = 1.0 - np.minimum(np.bincount(pair, weights=r, minlength=fu.size), 1.0)  # clicks not (yet) converted
        # the censored clicks enter through their follow-up only: pooled on a 0.01-day grid
        w_alive = np.bincount(fu_cell, weights=alive, minlength=fu_grid.size)
        q = _q_step(r.sum(), w_alive, _dist(theta).cdf(np.maximum(fu_grid - theta[0], 0.0)))
        new = _m_step(theta, d, r, fu_grid, q, w_alive)
        done = bool(np.max(np.abs(new - theta)) < 1e-5)
        theta = new
        if done:
            break
    dist = _dist(theta)
    comp = DelayComponent(family="lognormal", weight=1.0, shift_days=round(float(theta[0]), 4),
                          scale_days=round(float(np.exp(theta[1])), 4), shape=1.0,
                          sigma=round(float(np.exp(theta[2])), 4))
    quant = {f"p{p}": float(theta[0] + dist.ppf(p / 100)) for p in (10, 50, 90)}
    km = _kaplan_meier(d, r, fu, horizon, bin_days)
    last = (obs.c_time[has] - ct[hi[has] - 1]) / DAY_MS
    naive_last = {"p50": float(np.median(last)) if last.size else float("nan"),
                  "p90": float(np.quantile(last, 0.9)) if last.size else float("nan")}
    naive_unc = {f"p{p}": _wquantile(d, r, p / 100) for p in (50, 90)}
    per_click = np.bincount(pair, weights=r, minlength=clicks.size)
    conversions = np.zeros(obs.s_time.size)
    conversions[clicks] = per_click
    exposure = np.zeros(obs.s_time.size)
    exposure[clicks] = dist.cdf(np.maximum(fu - theta[0], 0.0))
    return DelayFinding(quant, km, naive_last, naive_unc, comp, float(q), float(bg.sum() / max(has.sum(), 1)),
                        int((~has).sum()), int(obs.c_time.size), conversions, exposure)


def _logpdf(x: np.ndarray, th: np.ndarray) -> np.ndarray:
    """Log-normal log density (median e^th[1], sigma e^th[2]) of x > 0 (scipy.stats' frozen objects cost ms a call)."""
    sig = np.exp(th[2])
    lx = np.log(np.maximum(x, 1e-300))
    return np.asarray(-lx - th[2] - 0.5 * np.log(2 * np.pi) - (lx - th[1]) ** 2 / (2 * sig * sig))


def _cdf(x: np.ndarray, th: np.ndarray) -> np.ndarray:
    return np.asarray(ndtr((np.log(np.maximum(x, 1e-300)) - th[1]) / np.exp(th[2])))


def _q_step(converted: float, alive: np.ndarray, cdf: np.ndarray) -> float:
    """q solving converted / q = Σ_i alive_i F_i / (1 − q F_i) (bisection)."""
    if converted <= 0:
        return 1e-9
    lo, hi = 1e-9, 1.0 - 1e-9
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        grad = converted / mid - (alive * cdf / (1.0 - mid * cdf)).sum()
        lo, hi = (mid, hi) if grad > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _m_step(theta: np.ndarray, d: np.ndarray, r: np.ndarray, fu: np.ndarray, q: float,
            alive: np.ndarray) -> np.ndarray:
    keep = r > 1e-9
    dk, rk = d[keep], r[keep]

    def nll(th: np.ndarray) -> float:
        if th[0] < 0 or th[0] >= dk.min(initial=np.inf) or not -3 < th[2] < 1.5:
            return 1e18
        ll = (rk * _logpdf(dk - th[0], th)).sum() + (alive * np.log1p(-q * _cdf(fu - th[0], th))).sum()
        return float(-ll)

    res = minimize(nll, theta, method="Nelder-Mead", options={"maxiter": 300, "xatol": 1e-4, "fatol": 1e-6})
    return np.asarray(res.x) if res.fun < nll(theta) else theta


def _background(signal: np.ndarray, target: float) -> float:
    """γ with Σ_j γ / (signal_j + γ) = target over the conversions with candidates (bisection on log γ)."""
    if target <= 0 or not signal.size:
        return 1e-300
    lo, hi = -700.0, 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        g = np.exp(mid)
        lo, hi = (mid, hi) if (g / (signal + g)).sum() < target else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def _kaplan_meier(d: np.ndarray, r: np.ndarray, fu: np.ndarray, horizon: float, w: float) -> dict[str, float]:
    n = max(1, int(np.ceil(horizon / w)))
    edges = np.arange(n + 1) * w
    events = np.bincount(np.minimum((d / w).astype(np.int64), n - 1), weights=r, minlength=n)
    at_risk = fu.size - np.searchsorted(np.sort(fu), edges[:-1], side="right")
    h = np.where(at_risk > 0, events / np.maximum(at_risk, 1), 0.0)
    surv = np.r_[1.0, np.cumprod(1.0 - np.minimum(h, 1.0))]
    cdf = (1.0 - surv) / max(1.0 - surv[-1], 1e-12)
    return {f"p{p}": _quantile(edges, cdf, p / 100) for p in (10, 50, 90)}


def _wquantile(x: np.ndarray, w: np.ndarray, p: float) -> float:
    if not x.size or w.sum() <= 0:
        return float("nan")
    o = np.argsort(x)
    c = np.cumsum(w[o]) / w.sum()
    return float(x[o][min(int(np.searchsorted(c, p)), x.size - 1)])


def _quantile(edges: np.ndarray, cdf: np.ndarray, p: float) -> float:
    i = int(np.searchsorted(cdf, p, side="left"))
    if i <= 0:
        return float(edges[0])
    if i >= cdf.size:
        return float(edges[-1])
    lo, hi = cdf[i - 1], cdf[i]
    return float(edges[i - 1] + (p - lo) / max(hi - lo, 1e-12) * (edges[i] - edges[i - 1]))


def lognormal_from_quantiles(p10: float, p50: float, p90: float) -> DelayComponent:
    """A shifted log-normal with these 10th, 50th and 90th percentiles (days).

    The shift solves (p50 − s)² = (p10 − s)(p90 − s); when that has no solution in [0, p10)
    (a right-skew too weak for a log-normal), the shift is 0 and only p50 and p90 are matched.
    """
    den = 2 * p50 - p10 - p90
    s = (p50 * p50 - p10 * p90) / den if den < 0 else -1.0
    if not 0.0 <= s < p10:
        s = 0.0
    med = max(p50 - s, 1e-3)
    sigma = max(np.log(max(p90 - s, med * 1.0001) / med) / _Z90, 1e-3)
    return DelayComponent(family="lognormal", weight=1.0, shift_days=round(float(s), 4),
                          scale_days=round(float(med), 4), shape=1.0, sigma=round(float(sigma), 4))
