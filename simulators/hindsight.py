"""The hindsight optimum of a finished episode: the bound every policy is measured against.

Given an episode's opportunities with the true value of every option (channel × position, the
best creative for the person's true segment) and the price each option would have cost (the
competitors' bids and floors, known in hindsight), find the best use of the same budget:

    maximise  Σ v_ij x_ij
    s.t.      Σ_j x_ij ≤ 1                     for each opportunity i (one ad per opportunity)
              Σ_{i in day d} c_ij x_ij ≤ B      for each day d (the daily budget)
              Σ_{i in day d, j organic} x_ij ≤ R   (organic reach per day)
              x_ij ∈ {0, 1}  (exact)  or  0 ≤ x_ij ≤ 1  (LP relaxation, an upper bound)

``hindsight_optimum`` solves the LP relaxation with HiGHS (an upper bound on every 0/1
allocation) and reports the 0/1 allocation made of its integral part (feasible, at most a few
options below the LP: a basic optimum has at most one fractional opportunity per binding
constraint); ``exact=True`` solves the 0/1 problem (MILP) for small episodes.

WHICH VALUES (journey effects). An impression's true value depends on the person's journey —
stage, earlier touches, fatigue — which earlier ads change. The optimum is computed with
policy-independent values so that every policy on the same seed is compared to the same number:

- ``mode="myopic"`` (the benchmark's ceiling): each opportunity valued as the *first GAELP touch
  of a person left alone by GAELP* — the person's interest as it would be with no GAELP ads
  (relaxing from its initial level to the baseline), no earlier touches (no touch lift), no
  fatigue, the best creative for the true segment. A policy that builds journeys (earlier ads
  raising later values) can exceed it: a fraction of the optimum above 1 is possible and means
  journey value this bound does not count. Conversions already pending are ignored.
- ``mode="upper"``: each opportunity valued at the most favourable journey state (decision
  stage, full touch lift, no fatigue, best creative). Every touch's expected conversion value is
  at most this, so the LP is a true upper bound on the expected value any policy can win with
  the budget (loose).

Costs are exact: second price pays max(highest competing bid, floor); the first-price channel
costs the same (bid one tick above the best competitor); position j of paid search costs the
j-th highest competing bid (or the floor); organic is free and capped by reach.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, sparse

from agent_service.units import DAY_MS, HOUR_MS
from simulators.auctions import position_prices
from simulators.batches import WorldOpportunities
from simulators.engine import Engine

__all__ = ["OPTION_NAMES", "HindsightResult", "Options", "dual_bound", "episode_options", "hindsight_optimum"]

OPTION_NAMES: tuple[str, ...] = ("organic", "social") + tuple(f"paid_search@{j}" for j in range(1, 11))
"""Columns of ``Options``: organic, social, then paid search positions 1..10."""
_INF = 2**31 - 1


class Options(NamedTuple):
    """Every option of every opportunity of an episode."""

    values: np.ndarray
    """float64 (n, 12) true expected value, USD."""
    costs: np.ndarray
    """int64 (n, 12) cost in micros."""
    valid: np.ndarray
    """bool (n, 12): the option exists (channel offered, position exists)."""
    day: np.ndarray
    """int64 (n,) budget period (day since the world's start) of each opportunity."""


class HindsightResult(NamedTuple):
    """The optimum of one episode."""

    lp_value: float
    """LP relaxation optimum, USD: an upper bound on every 0/1 allocation with these values."""
    value: float
    """Value of the 0/1 allocation reported (exact optimum when ``exact``), USD."""
    spend_micros: int
    """What that allocation spends."""
    choice: np.ndarray
    """int (n,) option column chosen per opportunity, -1 for none."""
    exact: bool
    """True when ``value`` is the proven 0/1 optimum."""
    mode: str
    """Which values were used (see the module docstring)."""


def episode_options(engine: Engine, opps: WorldOpportunities, mode: str = "myopic") -> Options:
    """True values and hindsight costs of every option of ``opps``.

    :param engine: the engine that produced the opportunities (its calibration and people).
    :param opps: the episode's opportunities (any lanes; days are counted from the world start).
    :param mode: ``myopic`` or ``upper`` (see the module docstring).
    """
    if mode not in ("myopic", "upper"):
        raise ValueError(f"mode must be 'myopic' or 'upper', got {mode!r}")
    m, pop = engine.model, engine.pop
    n = opps.t.size
    seg = opps.segment.astype(np.int64)
    hour = (opps.t % DAY_MS) // HOUR_MS
    if mode == "myopic":
        b = pop.baseline[opps.person]
        days = (opps.t - engine.cfg.start_ms) / DAY_MS
        z = b + (pop.initial[opps.person] - b) * np.exp(-days / m.tau_interest)
        stage = m.stage_of(z).astype(np.int64)
        touches = 0.0
    else:
        stage = np.full(n, 2, dtype=np.int64)
        touches = np.inf
    cr = m.best_creative[seg]
    values = np.zeros((n, 12))
    costs = np.zeros((n, 12), dtype=np.int64)
    valid = np.zeros((n, 12), dtype=bool)
    for col, ch, pos in [(0, 0, 1), (1, 2, 1)] + [(1 + j, 1, j) for j in range(1, 11)]:
        if pos > m.positions[ch]:
            continue
        chv = np.full(n, ch)
        pc = m.p_click(chv, seg, stage, cr, 0.0, pos)
        conv, view = m.p_conv(chv, seg, stage, hour, touches)
        values[:, col] = m.expected_value(pc, conv, view, seg)
        valid[:, col] = opps.offered[:, ch]
    costs[:, 1] = np.maximum(opps.comp_social.max(axis=1, initial=0), opps.floor)
    k = int(m.positions[1])
    pp = position_prices(np.ascontiguousarray(opps.comp_search.T), opps.floor.astype(np.int64), k)
    costs[:, 2:2 + k] = pp
    valid[:, 2:2 + k] &= pp < _INF
    return Options(values, costs, valid, (opps.t - engine.cfg.start_ms) // DAY_MS)


def hindsight_optimum(options: Options, budget_micros: int, organic_cap: int | None = None,
                      exact: bool = False, mode: str = "myopic") -> HindsightResult:
    """Best allocation of ``budget_micros`` per day over the episode's options.

    :param options: from ``episode_options`` (or built by hand).
    :param budget_micros: budget per day (per distinct ``options.day``).
    :param organic_cap: organic placements per day (None: unlimited; column 0 is organic).
    :param exact: also solve the 0/1 problem exactly (MILP; small episodes only).
    :param mode: label recorded in the result.
    """
    n, m = options.values.shape
    keep = options.valid & (options.values > 0) & (options.costs <= budget_micros)
    rows, cols = np.nonzero(keep)
    nv = rows.size
    if nv == 0:
        return HindsightResult(0.0, 0.0, 0, np.full(n, -1), True, mode)
    v = options.values[rows, cols]
    c = options.costs[rows, cols].astype(np.float64)
    days, day_idx = np.unique(options.day[rows], return_inverse=True)
    nd = days.size
    var = np.arange(nv)
    blocks = [sparse.csr_matrix((np.ones(nv), (rows, var)), shape=(n, nv)),
              sparse.csr_matrix((c, (day_idx, var)), shape=(nd, nv))]
    rhs = [np.ones(n), np.full(nd, float(budget_micros))]
    if organic_cap is not None:
        org = cols == 0
        blocks.append(sparse.csr_matrix((np.ones(org.sum()), (day_idx[org], var[org])), shape=(nd, nv)))
        rhs.append(np.full(nd, float(organic_cap)))
    a_ub = sparse.vstack(blocks).tocsr()
    b_ub = np.concatenate(rhs)
    lp = optimize.linprog(-v, A_ub=a_ub, b_ub=b_ub, bounds=(0, 1), method="highs")
    if lp.status != 0:
        raise RuntimeError(f"hindsight LP failed: {lp.message}")
    x = lp.x
    lp_value = float(v @ x)
    if exact:
        res = optimize.milp(-v, constraints=optimize.LinearConstraint(a_ub, -np.inf, b_ub),
                            integrality=np.ones(nv), bounds=optimize.Bounds(0, 1))
        if res.status != 0:
            raise RuntimeError(f"hindsight MILP failed: {res.message}")
        x = res.x
    chosen = x > 1 - 1e-6
    choice = np.full(n, -1)
    choice[rows[chosen]] = cols[chosen]
    return HindsightResult(lp_value, float(v[chosen].sum()), int(c[chosen].sum()), choice, exact, mode)


def dual_bound(options: Options, budget_micros: int, organic_cap: int | None = None, iters: int = 60) -> float:
    """An upper bound on :func:`hindsight_optimum`'s LP, in a fraction of its time: the Lagrangian
    dual of each day's budget and organic-reach constraints,

        g(λ, μ) = Σ_i max(0, max_j (v_ij − λ c_ij − μ [j organic])) + λ B + μ R   ≥ every allocation's value

    for *any* λ, μ ≥ 0 (weak duality), minimised over λ by golden-section search (g is convex)
    with μ solved exactly for each λ (the (R+1)-th largest organic surplus). Equal to the LP optimum
    at the minimiser; whatever the search ends on, the number is still a valid bound.
    """
    keep = options.valid & (options.values > 0) & (options.costs <= budget_micros)
    v = np.where(keep, options.values, -np.inf)
    c = options.costs.astype(np.float64)
    total = 0.0
    for d in np.unique(options.day):
        rows = options.day == d
        vd, cd = v[rows], c[rows]
        organic = np.maximum(vd[:, 0], 0.0) if organic_cap is not None else np.zeros(len(vd))
        paid = vd if organic_cap is None else vd[:, 1:]
        paid_c = cd if organic_cap is None else cd[:, 1:]

        def g(lam: float, paid: np.ndarray = paid, paid_c: np.ndarray = paid_c, organic: np.ndarray = organic) -> float:
            best = np.maximum((paid - lam * paid_c).max(axis=1), 0.0)
            if organic_cap is None:
                return float(best.sum() + lam * budget_micros)
            surplus = organic - best  # what organic adds over the best paid option (or nothing)
            pos = surplus[surplus > 0]
            k = len(pos) - organic_cap - 1  # μ = the (R+1)-th largest surplus: the top R stay positive
            mu = float(np.partition(pos, k)[k]) if k >= 0 else 0.0
            return float(best.sum() + np.maximum(surplus - mu, 0.0).sum() + lam * budget_micros + mu * organic_cap)

        ratio = np.where(np.isfinite(paid) & (paid_c > 0), paid / np.maximum(paid_c, 1.0), 0.0)
        lo, hi = 0.0, float(ratio.max(initial=0.0))
        phi = (math.sqrt(5.0) - 1.0) / 2.0
        a, b = hi - phi * (hi - lo), lo + phi * (hi - lo)
        ga, gb = g(a), g(b)
        best_g = min(g(lo), g(hi), ga, gb)
        for _ in range(iters):
            if ga <= gb:
                hi, b, gb = b, a, ga
                a = hi - phi * (hi - lo)
                ga = g(a)
            else:
                lo, a, ga = a, b, gb
                b = lo + phi * (hi - lo)
                gb = g(b)
            best_g = min(best_g, ga, gb)
        total += best_g
    return total


