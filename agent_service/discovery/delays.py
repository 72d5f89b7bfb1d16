"""Click-to-conversion delay, with right-censoring and unknown causing clicks.

GA4 records a purchase, not which earlier click caused it, and a click near the end of the data
may still convert after it. Both are handled by one censored likelihood fitted by EM:

**Method.** Every click converts with probability q after a delay with density
f = Σ_k π_k f_k, a mixture of K shifted log-normals (θ_k = shift, median, sigma; the simulator's
mixture families are approximated, not assumed); a conversion's cause is latent among its
person's clicks in the ``max_days`` before it, or a background (a conversion on a device not
linked to its click, or caused by an impression; it may meet that device's unrelated clicks).
The background is a Poisson intensity γ a_u g(t) on conversion j's unit u: a_u the unit's ad
sessions over the mean (its person's activity, which sets how often the person converts on it
after clicks elsewhere, and not the timing of its own clicks), g the data's conversion rate over
time (conversions per day, 7-day average, integrating to 1 over the span: a background
conversion is a click-caused one the data cannot link, so it follows their ramp). The
log-likelihood is Σ_j log(q Σ_i f(t_j − t_i) + γ a_j g_j) + n_0 log γ − γ Σ_u a_u
+ Σ_i log(1 − q F(c_i)) (n_0: conversions with no candidate on a unit with sessions, background
for certain; Σ_u a_u the background's compensator), where c_i = data end − t_i is click i's
follow-up: a click still inside its window is censored at c_i (it contributes "no conversion
*yet*", 1 − q F(c_i)), never counted as "no conversion". EM alternates the cause
responsibilities r_ji ∝ q f(t_j − t_i) (background ∝ γ a_j g_j), with the component responsibilities
nested inside them (ρ_jik ∝ π_k f_k(t_j − t_i), so conversion j's share of component k through
click i is r_ji ρ_jik), and the M-step: q by bisection on Σ r log q + Σ_i (1 − R_i) log(1 − q F(c_i))
(R_i: click i's attributed conversions); π_k from the attributed lags' component shares plus
the censored clicks' expected later conversions by component, q π_k (1 − F_k(c)) / (1 − q F(c));
θ_k by Nelder–Mead on Σ r ρ_k log f_k + Σ_i (1 − R_i) log(1 − q F(c_i)), the other components
held (lags and follow-ups pooled on a 0.05-day grid; in a mixture a component's sigma is at most
e^0.5, wider ones turn into a second flat background). K grows from 1 to ``max_components`` (3)
while the BIC, −2 log L + 4K log(conversions with candidates), falls, and the lowest is written;
a K > 1 fit tries starts made from the one-component fit (its quantiles spread over K
components, and a quick head / body / late tail), 25 EM iterations each, and the best goes on
(mixture likelihoods have saddles EM sits in for a hundred iterations). K > 1 needs 40K
conversions with candidates. **The window prior.** The data cannot show a delay longer than H (the
horizon, at most the span), so q and the mass beyond H trade along a ridge: a higher q with a
longer tail explains the same lags. On ~50 lags maximum likelihood runs along it (one log-normal
made wide by the quick head, median +69 to +179 % on three of nine small worlds). The fit is a
MAP one with the prior m log F(H), a Beta(m + 1, 1) on F(H) — as if m more conversions had been
seen inside the window (m = 20: a priori F(H) > 0.87 with 95 %) — added to the log-likelihood
above and to each θ_k step; a fixed m fades as conversions grow (on ~500 it moves the p90 by
<= 1.3 points). γ is estimated with the rest: each E-step takes the γ that
maximises the likelihood given the click part (the root of Σ_j a_j g_j / (q Σ_i f + γ a_j g_j)
+ n_0 / γ = Σ_u a_u, by bisection). (It was once pinned before the fit by the conversions with no
candidate × the clicked-time share of the conversions' own units; a linked conversion's unit
has a click before it by construction, so that share ran 1.8–2.7× high and took the tail.) Alongside, a
nonparametric Kaplan–Meier estimate with the same responsibilities (hazard per bin = attributed
conversions / clicks at risk, i.e. with follow-up reaching the bin) is reported as a check of the
family.

Per-click conversion rates (by channel, device, segment) are the responsibilities summed over
a group's clicks divided by the clicks' expected observable share F(c_i).

**Check.** Round trip (tests/discovery): median and 90th percentile within the stated relative
tolerance of the generating mixture's; the bench prints two naive estimates beside it (the last
click before each conversion, and the responsibilities' lags without the censoring correction),
and the Kaplan–Meier quantiles are in the report beside the mixture's.
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
_LOG2PI = float(np.log(2 * np.pi))
_SPREAD = 0.6
"""How far apart (in the one-component fit's sigmas) the quantile start puts K components."""
_GRID = 0.05
"""Days per cell of the grid the M-step pools lags and follow-ups on."""
_BURN = 25
"""EM iterations each start of a K > 1 fit gets before the best goes on."""
_NM_ITERS = 40
"""Nelder–Mead iterations per M-step (warm-started: each EM step needs an improvement, not the optimum)."""
_LOG_SIGMA_MIN = -3.0
_LOG_SIGMA_MAX = (1.5, 0.5)
"""Largest log sigma of a lone component, and of a mixture's: in a mixture a component wider than
e^0.5 ≈ 1.65 (an exponential's log-delay has sd 1.28) turns into a second, flat background."""
_LOG_MEDIAN_MIN = float(np.log(0.05))
"""A component's median (above its shift) is at least one grid cell."""
_WINDOW_PRIOR = 20.0
"""Pseudo-conversions m of the MAP prior m log F(H) (H: the longest delay the data can show)."""


@dataclass(frozen=True)
class DelayFinding:
    quantiles: dict[str, float]
    """p10, p50, p90 of the fitted (censoring-corrected) delay mixture, days."""
    km_quantiles: dict[str, float]
    """p10, p50, p90 of the nonparametric Kaplan–Meier estimate with the same attribution."""
    naive_last_click: dict[str, float]
    """p50, p90 of conversion time − last earlier click (no attribution, no censoring)."""
    naive_uncensored: dict[str, float]
    """p50, p90 of the attributed lags without the censoring correction."""
    components: tuple[DelayComponent, ...]
    """The fitted mixture of shifted log-normals (weights sum to 1), by increasing median delay."""
    bic: dict[int, float]
    """BIC of the fit with K components for each K tried; the lowest is written."""
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


@dataclass(frozen=True)
class _Pairs:
    """Conversion × candidate-click pairs and the clicks' follow-ups (what every EM step reads)."""

    d: np.ndarray
    """[pairs] lag, days."""
    conv: np.ndarray
    """[pairs] conversion index."""
    click: np.ndarray
    """[pairs] click index."""
    has: np.ndarray
    """[conversions] bool: at least one candidate."""
    n_clicks: int
    bg_shape: np.ndarray
    """[conversions] the background's intensity shape at the conversion, a_u g(t) (per day)."""
    bg_free: int
    """Conversions without candidates whose unit has ad sessions (background for certain)."""
    bg_exposure: float
    """The background's compensator per unit of γ: Σ_u a_u (g integrates to 1 over the span)."""
    window: float
    """The longest delay the data can show (days): the attribution horizon, at most the span."""
    prior: float
    """Pseudo-conversions of the window prior m log F(window) (see ``_WINDOW_PRIOR``)."""
    fu_cell: np.ndarray
    """[clicks] follow-up's cell on the ``_GRID`` grid."""
    fu_grid: np.ndarray
    """[cells] follow-up grid, days."""
    d_cell: np.ndarray
    """[pairs] lag's cell on the ``_GRID`` grid (the M-step pools the lags there)."""
    d_grid: np.ndarray
    """[cells] lag cell centres, days."""


@dataclass(frozen=True)
class _Fit:
    theta: np.ndarray
    """[K, 3] shift (days), log median and log sigma of each component."""
    pi: np.ndarray
    """[K] component weights."""
    q: float
    r: np.ndarray
    """[pairs] responsibility of the click for the conversion."""
    bg: np.ndarray
    """[conversions] background responsibility."""
    loglik: float


def discover_delays(obs: Observations, max_days: float = 45.0, iters: int = 150, bin_days: float = 0.25,
                    max_components: int = 3, window_prior: float = _WINDOW_PRIOR) -> DelayFinding:
    """Fit the delay distribution (see the module docstring).

    :param obs: the ingested sessions and conversions.
    :param max_days: longest delay considered (also capped by the data's span).
    :param iters: most EM iterations per K.
    :param bin_days: bin width of the Kaplan–Meier check, days.
    :param max_components: most mixture components tried (K = 1..max_components, chosen by BIC).
    :param window_prior: pseudo-conversions m of the prior m log F(window) (0: maximum likelihood).
    """
    if max_components < 1:
        raise ValueError(f"max_components must be >= 1, got {max_components}")
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
    # the background's shape per conversion: its unit's activity × the data's conversion rate then
    n_units = int(max(obs.s_unit.max(initial=-1), obs.c_unit.max(initial=-1))) + 1
    act = np.bincount(obs.s_unit, minlength=n_units).astype(np.float64)
    act /= max(float(act[act > 0].mean()) if (act > 0).any() else 1.0, 1e-12)
    shape = act[obs.c_unit] * _time_profile(obs.c_time, obs.start_ms, obs.end_ms)
    fu_cell = np.rint(fu / _GRID).astype(np.int64)
    d_cell = np.floor(d / _GRID).astype(np.int64)
    data = _Pairs(d=d, conv=conv, click=pair, has=has, n_clicks=clicks.size,
                  bg_shape=shape, bg_free=int((~has & (shape > 0)).sum()), bg_exposure=float(act.sum()),
                  window=float(horizon), prior=float(window_prior), fu_cell=fu_cell,
                  fu_grid=np.arange(fu_cell.max(initial=0) + 1) * _GRID, d_cell=d_cell,
                  d_grid=(np.arange(d_cell.max(initial=0) + 1) + 0.5) * _GRID)
    q0 = has.sum() / max(clicks.size, 1)
    fits = [_em(np.array([[0.0, np.log(max(np.median(d), 0.5)) if d.size else 0.0, np.log(0.8)]]),
                np.ones(1), q0, data, iters)]
    log_n = float(np.log(max(int(has.sum()), 2)))
    bic = {1: -2.0 * fits[0].loglik + 4 * log_n}
    for k in range(2, max_components + 1):
        if has.sum() < 10 * 4 * k:  # too few conversions to tell K components apart
            break
        # mixture likelihoods have saddles: a few short starts, the best one goes on
        tries = [_em(th, pi, fits[0].q, data, _BURN) for th, pi in _starts(fits[0], k)]
        best_try = max(tries, key=lambda f: f.loglik)
        fits.append(_em(best_try.theta, best_try.pi, best_try.q, data, iters))
        bic[k] = -2.0 * fits[-1].loglik + 4 * k * log_n
        if bic[k] >= bic[k - 1]:  # a component that does not pay for itself: more will not either
            break
    best = fits[min(bic, key=bic.__getitem__) - 1]
    theta, pi, r = best.theta, best.pi, best.r
    order_k = np.argsort(theta[:, 0] + np.exp(theta[:, 1]))
    comps = tuple(DelayComponent(family="lognormal", weight=round(max(float(pi[i]), 1e-4), 4),
                                 shift_days=round(float(theta[i, 0]), 4), scale_days=round(float(np.exp(theta[i, 1])), 4),
                                 shape=1.0, sigma=round(float(np.exp(theta[i, 2])), 4)) for i in order_k)
    quant = dict(zip(("p10", "p50", "p90"), _mix_quantiles(theta, pi, (0.1, 0.5, 0.9)), strict=True))
    km = _kaplan_meier(d, r, fu, horizon, bin_days)
    last = (obs.c_time[has] - ct[hi[has] - 1]) / DAY_MS
    naive_last = {"p50": float(np.median(last)) if last.size else float("nan"),
                  "p90": float(np.quantile(last, 0.9)) if last.size else float("nan")}
    naive_unc = {f"p{p}": _wquantile(d, r, p / 100) for p in (50, 90)}
    per_click = np.bincount(pair, weights=r, minlength=clicks.size)
    conversions = np.zeros(obs.s_time.size)
    conversions[clicks] = per_click
    exposure = np.zeros(obs.s_time.size)
    exposure[clicks] = pi @ _comp_cdf(fu, theta)
    return DelayFinding(quant, km, naive_last, naive_unc, comps, bic, float(best.q),
                        float(best.bg.sum() / max(has.sum(), 1)), int((~has).sum()), int(obs.c_time.size),
                        conversions, exposure)


# ---------------------------------------------------------------- the EM


def _em(theta: np.ndarray, pi: np.ndarray, q: float, data: _Pairs, iters: int, tol: float = 0.01) -> _Fit:
    """EM for K = len(pi) components from (theta, pi, q): causes, then components within causes."""
    theta, pi = theta.copy(), pi.copy()
    n_conv = data.has.size
    window = np.array([data.window])
    prev = -np.inf
    for it in range(iters):
        # ---- E-step: which click (or the background) caused each conversion, and which component
        cd = pi[:, None] * _comp_pdf(data.d, theta)  # [K, pairs]
        mix = cd.sum(axis=0)
        dens = q * mix + 1e-300
        signal = np.bincount(data.conv, weights=dens, minlength=n_conv)
        bgd = data.bg_shape[data.has]
        gamma = _background(signal[data.has], bgd, data.bg_free, data.bg_exposure)
        bgj = gamma * data.bg_shape
        r = dens / (signal + bgj)[data.conv]
        alive = 1.0 - np.minimum(np.bincount(data.click, weights=r, minlength=data.n_clicks), 1.0)
        # the censored clicks enter through their follow-up only: pooled on the grid
        w_alive = np.bincount(data.fu_cell, weights=alive, minlength=data.fu_grid.size)
        fk = _comp_cdf(data.fu_grid, theta)  # [K, cells]
        fw = _comp_cdf(window, theta)[:, 0]  # [K] F_k(H)
        f = pi @ fk
        ll = float(np.log(signal[data.has] + gamma * bgd).sum() + data.bg_free * np.log(max(gamma, 1e-300))
                   - gamma * data.bg_exposure + (w_alive * np.log1p(-q * f)).sum()
                   + data.prior * np.log(max(float(pi @ fw), 1e-300)))
        if abs(ll - prev) < tol or it == iters - 1:  # (the fit returned is the one ll belongs to)
            break
        prev = ll
        # ---- M-step: q, then the weights (a censored click may still convert, by component), then each θ_k
        rho = cd / np.maximum(mix, 1e-300)
        q = _q_step(float(r.sum()), w_alive, f)
        later = w_alive * q * pi[:, None] * (1.0 - fk) / (1.0 - q * f)  # [K, cells]
        w_lag = np.stack([np.bincount(data.d_cell, weights=r * rho[k], minlength=data.d_grid.size)
                          for k in range(pi.size)])  # [K, lag cells]
        n_k = w_lag.sum(axis=1) + later.sum(axis=1)
        pi = n_k / max(n_k.sum(), 1e-300)
        f = pi @ fk  # the other components' share in each θ_k step is weighted by the new π
        for k in range(pi.size):
            rest = f - pi[k] * fk[k] if pi.size > 1 else np.zeros_like(f)
            rest_w = float(pi @ fw - pi[k] * fw[k]) if pi.size > 1 else 0.0
            theta[k] = _m_step(theta[k], data, w_lag[k], w_alive, q, pi[k], rest, rest_w, _LOG_SIGMA_MAX[pi.size > 1])
            fk[k] = _comp_cdf(data.fu_grid, theta[k:k + 1])[0]
            fw[k] = _comp_cdf(window, theta[k:k + 1])[0, 0]
            f = pi @ fk
    return _Fit(theta, pi, q, r, np.where(data.has, bgj / np.maximum(signal + bgj, 1e-300), 0.0), ll)


def _starts(one: _Fit, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Starts of a K-component fit, from the one-component fit (quantile function Q): its
    quantiles (j + ½)/K spread over K narrower components, and the shapes delays take — a quick
    head (shift 0 at Q(0.05)), the body (the one-component fit, narrower) and a late tail
    (shifted to Q(0.7), median at Q(0.95))."""
    s, mu, ls = one.theta[0]
    sig = np.exp(ls)

    def qf(p: float) -> float:
        return float(s + np.exp(mu + sig * stats.norm.ppf(p)))

    z = stats.norm.ppf((np.arange(k) + 0.5) / k)
    inner = sig * np.sqrt(max(1.0 - _SPREAD * _SPREAD * float(np.mean(z * z)), 0.05))
    out = [(np.stack([np.full(k, s), mu + _SPREAD * sig * z, np.full(k, np.log(inner))], axis=1), np.full(k, 1.0 / k))]
    head = (np.array([0.0, np.log(max(qf(0.05), 0.05)), 0.0]), 0.1)
    body = (np.array([s, mu, ls + np.log(0.8)]), 0.0)
    tail = (np.array([qf(0.7), np.log(max(qf(0.95) - qf(0.7), 0.05)), np.log(0.5)]), 0.15)
    shapes = [[head, body, tail]] if k == 3 else [[body, tail], [head, body]] if k == 2 else []
    for parts in shapes:
        theta = np.stack([p[0] for p in parts])
        pi = np.array([p[1] for p in parts])
        pi[pi == 0] = 1.0 - pi.sum()
        out.append((theta, pi))
    return out


def _comp_pdf(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """[K, n] component densities at delays x (0 at and below a component's shift)."""
    y = x[None, :] - theta[:, :1]
    return np.where(y > 0, np.exp(_logpdf_k(y, theta)), 0.0)


def _logpdf_k(y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    sig = np.exp(theta[:, 2:3])
    ly = np.log(np.maximum(y, 1e-300))
    return np.asarray(-ly - theta[:, 2:3] - 0.5 * _LOG2PI - (ly - theta[:, 1:2]) ** 2 / (2 * sig * sig))


def _comp_cdf(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """[K, n] component distribution functions at delays x."""
    y = x[None, :] - theta[:, :1]
    return np.asarray(ndtr((np.log(np.maximum(y, 1e-300)) - theta[:, 1:2]) / np.exp(theta[:, 2:3])))


def _mix_quantiles(theta: np.ndarray, pi: np.ndarray, ps: tuple[float, ...]) -> list[float]:
    lo, hi = np.zeros(len(ps)), np.full(len(ps), 2000.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = pi @ _comp_cdf(mid, theta) < np.asarray(ps)
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return [float(v) for v in 0.5 * (lo + hi)]


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


def _m_step(th0: np.ndarray, data: _Pairs, w: np.ndarray, alive: np.ndarray, q: float, pi_k: float,
            rest: np.ndarray, rest_w: float, sig_max: float) -> np.ndarray:
    """θ_k maximising Σ w log f_k(lag) + Σ alive log(1 − q (π_k F_k(c) + Σ_{l≠k} π_l F_l(c))) (Nelder–Mead)."""
    keep = w > 1e-12
    dk, wk = data.d_grid[keep], w[keep]
    on = alive > 0
    fg, al, rs = data.fu_grid[on], alive[on], rest[on]
    dmin = dk.min(initial=np.inf)

    def nll(th: np.ndarray) -> float:
        if th[0] < 0 or th[0] >= dmin or not _LOG_SIGMA_MIN < th[2] < sig_max or th[1] < _LOG_MEDIAN_MIN:
            return 1e18
        t = th[None, :]
        ll = (wk * _logpdf_k((dk - th[0])[None, :], t)[0]).sum()
        ll += (al * np.log1p(-q * (rs + pi_k * _comp_cdf(fg, t)[0]))).sum()
        if data.prior > 0:
            ll += data.prior * np.log(max(rest_w + pi_k * float(_comp_cdf(np.array([data.window]), t)[0, 0]), 1e-300))
        return float(-ll)

    if not wk.size:
        return th0
    # scipy's default simplex steps a zero shift by 0.00025 days: it would never leave 0
    step = np.diag([min(0.25, 0.5 * max(dmin - th0[0], 0.0)), 0.1, 0.1])
    res = minimize(nll, th0, method="Nelder-Mead", options={"maxiter": _NM_ITERS, "xatol": 1e-4, "fatol": 1e-6,
                                                            "initial_simplex": np.vstack([th0, th0 + step])})
    return np.asarray(res.x) if res.fun < nll(th0) else th0


def _background(signal: np.ndarray, shape: np.ndarray, free: int, exposure: float) -> float:
    """γ maximising Σ_j log(signal_j + γ b_j) + free · log γ − γ · exposure (b_j = ``shape``, over the
    conversions with candidates): the root of Σ_j b_j / (signal_j + γ b_j) + free / γ = exposure,
    decreasing in γ (bisection on log γ)."""
    n = float(free + shape.size)
    if n <= 0 or exposure <= 0:
        return 1e-300
    lo, hi = -700.0, float(np.log(n / exposure)) + 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        g = np.exp(mid)
        score = (shape / (signal + g * shape)).sum() + free / g - exposure
        lo, hi = (mid, hi) if score > 0 else (lo, mid)
    return float(np.exp(0.5 * (lo + hi)))


def _time_profile(t: np.ndarray, start_ms: int, end_ms: int, smooth_days: int = 7) -> np.ndarray:
    """[len(t)] the data's conversion rate at each time t, as a density over the span (per day):
    conversions per day, averaged over ``smooth_days`` (plus a floor: no day without a
    background), normalised to integrate to 1."""
    n = max(int(np.ceil((end_ms - start_ms) / DAY_MS)), 1)
    day = np.clip((t - start_ms) // DAY_MS, 0, n - 1).astype(np.int64)
    per_day = np.bincount(day, minlength=n).astype(np.float64)
    kern = np.ones(min(smooth_days, n))
    rate = np.convolve(per_day, kern, mode="same") / np.convolve(np.ones(n), kern, mode="same")
    rate = rate + 1e-3 * max(float(rate.mean()), 1e-12)
    span = (end_ms - start_ms) / DAY_MS
    return np.asarray(rate[day] / max(float(rate.sum()) * span / n, 1e-12))


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
