"""The competitor landscape: the distribution of the price to beat, learned from our own auctions.

A won auction reveals the price to beat (the second price we paid); a lost one only that it was
above our bid. The won prices alone are a sample of prices *below our bids*, so their empirical
distribution (or mean) is biased low, by as much as we bid low. Lost auctions are right-censored
observations at the bid, and the product-limit (Kaplan–Meier) estimator uses both:

    S(t) = P(price > t) = Π_{t_j ≤ t} (1 − d_j / n_j)

over the distinct revealed prices t_j, with d_j auctions won at price t_j and n_j auctions "at
risk" there (revealed price ≥ t_j, or lost with bid ≥ t_j). Ties win (a bid equal to the price
wins, as in the iPinYou replay), so the win rate at bid b is w(b) = P(price ≤ b) = 1 − S(b).

Per context bucket, the discrete hazard is shrunk to the pooled one (a Beta prior of strength
``prior_strength`` centred on the pooled hazard):

    h_k(t_j) = (d_kj + m · h_pool(t_j)) / (n_kj + m)

so a thin bucket follows the pooled curve, a well-observed one its own, and a bucket's tail past
its own highest bid follows the pooled tail. Past the highest bid or price seen anywhere the curve
is not identified by the data: it continues with a log-normal fitted to the identified part (the
censored log-normal model), or, with ``tail=False``, stays flat (a lower bound).

Censoring must be independent of the price *given the context*: if the bid depends on something
that also moves the price (a pCTR-proportional bid), put that in the context, or explore (randomise
bids), or the curve is biased toward the prices of the auctions that were bid high.

Observations are kept as counts per price level; curves are recomputed lazily after new
observations, so ``observe`` is O(1) and reads cost O(levels).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = ["Curve", "PriceLandscape", "grid_win_curves"]


@dataclass(frozen=True)
class Curve:
    """A fitted win-rate curve: ``win[j] = P(price ≤ levels[j])``, a step function in between, and
    above ``identified_to`` a log-normal tail (when fitted) joined to the last identified value."""

    levels: np.ndarray
    """float64[J]: distinct revealed prices, ascending."""
    win: np.ndarray
    """float64[J]: P(price ≤ level), non-decreasing."""
    identified_to: float
    """Highest bid or price observed (pooled): no data say anything about prices above it."""
    tail: tuple[float, float] | None = None
    """(μ, σ) of ln price fitted on the identified part, for P(price > b | price > identified_to);
    None: the curve stays flat above ``identified_to`` (a lower bound)."""

    def at(self, bid: np.ndarray | float) -> np.ndarray:
        """w(bid) = P(price ≤ bid), vectorised."""
        b = np.asarray(bid, dtype=np.float64)
        if not self.levels.size:
            return np.zeros_like(b)
        idx = np.searchsorted(self.levels, b, side="right") - 1
        w = np.where(idx >= 0, self.win[np.maximum(idx, 0)], 0.0)
        if self.tail is None:
            return w
        mu, sigma = self.tail
        c = self.identified_to
        w_c = float(self.at_identified(c))
        above = b > c
        surv_c = max(float(ndtr(-(math.log(max(c, 1e-12)) - mu) / sigma)), 1e-300)
        surv_b = ndtr(-(np.log(np.maximum(b, 1e-12)) - mu) / sigma)
        return np.where(above, 1.0 - (1.0 - w_c) * surv_b / surv_c, w)

    def at_identified(self, bid: float) -> float:
        """The step function alone (no tail)."""
        idx = int(np.searchsorted(self.levels, bid, side="right")) - 1
        return float(self.win[idx]) if idx >= 0 else 0.0

    def quantile(self, q: float) -> float | None:
        """Smallest price p with P(price ≤ p) ≥ q (from the tail past ``identified_to``; None
        when the data do not reach q and there is no tail)."""
        idx = int(np.searchsorted(self.win, q - 1e-12, side="left"))
        if idx < self.levels.size:
            return float(self.levels[idx])
        if self.tail is None or not self.levels.size:
            return None
        mu, sigma = self.tail
        c = self.identified_to
        ratio = (1.0 - q) / max(1.0 - float(self.win[-1]), 1e-300)
        surv_c = float(ndtr(-(math.log(max(c, 1e-12)) - mu) / sigma))
        return math.exp(mu + sigma * float(ndtri(1.0 - ratio * surv_c))) if q < 1 else math.inf


@dataclass
class _Counts:
    events: Counter[float] = field(default_factory=Counter)
    """Won auctions per revealed price."""
    censored: Counter[float] = field(default_factory=Counter)
    """Lost auctions per bid (the price was above it)."""

    @property
    def n(self) -> int:
        return sum(self.events.values()) + sum(self.censored.values())


def _at_risk(c: _Counts, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_j, n_j) of one set of counts at the given levels."""
    d = np.array([c.events.get(float(t), 0) for t in levels], dtype=np.float64)
    times = np.fromiter((*c.events.keys(), *c.censored.keys()), dtype=np.float64)
    counts = np.fromiter((*c.events.values(), *c.censored.values()), dtype=np.float64)
    order = np.argsort(times)
    times, counts = times[order], counts[order]
    below = np.concatenate([[0.0], np.cumsum(counts)])[np.searchsorted(times, levels, side="left")]
    return d, counts.sum() - below


class PriceLandscape:
    """Online Kaplan–Meier estimate of the price to beat, per context with shrinkage to the pool.

    :param prior_strength: m, pseudo-auctions at risk with which a bucket's hazard is pulled to
        the pooled hazard at every price level (0 = independent per-bucket curves).
    :param resolution: prices and bids are rounded to this grid before counting (0 = exact; use
        e.g. 0.01 USD CPM for continuous prices, to bound the number of levels).
    :param tail: above the highest bid or price seen, continue the curve with a log-normal fitted
        to its identified part (False: flat there, a lower bound, and quantiles above it None).
    """

    def __init__(self, prior_strength: float = 50.0, resolution: float = 0.0, tail: bool = True) -> None:
        if not (math.isfinite(prior_strength) and prior_strength >= 0):
            raise ValueError(f"prior_strength: must be finite and >= 0, got {prior_strength!r}")
        if not (math.isfinite(resolution) and resolution >= 0):
            raise ValueError(f"resolution: must be finite and >= 0, got {resolution!r}")
        self.prior_strength = float(prior_strength)
        self.resolution = float(resolution)
        self.tail = tail
        self._pool = _Counts()
        self._buckets: dict[Hashable, _Counts] = {}
        self._curves: dict[Hashable, Curve] = {}
        self._max_seen = 0.0

    # --- updates ------------------------------------------------------------------------------
    def observe(self, context: Hashable, bid: float, won: bool, price: float | None = None) -> None:
        """One auction's result.

        :param context: the bucket (any hashable: a channel, ``(channel, hour)``, a pCTR decile).
        :param bid: our bid (after caps: the bid actually sent), >= 0.
        :param won: whether it won.
        :param price: the price to beat: required when won (0 <= price <= bid); None when lost
            (censored: only price > bid is known), or the price if the exchange reveals it on a
            loss too (then > bid, an exact observation).
        :raises ValueError: naming the field (``bid``, ``price``, ``won``) of bad input.
        """
        bid = self._level(bid, "bid")
        if won:
            if price is None:
                raise ValueError("price: a won auction must reveal its price (got None)")
            p = self._level(price, "price")
            if p > bid:
                raise ValueError(f"price: {price!r} is above the winning bid {bid!r} (ties win, higher prices lose)")
            self._pool.events[p] += 1
            self._buckets.setdefault(context, _Counts()).events[p] += 1
            self._max_seen = max(self._max_seen, bid)
        elif price is not None:
            p = self._level(price, "price")
            if p <= bid:
                raise ValueError(f"won: False with a price {price!r} at or below the bid {bid!r} (ties win)")
            self._pool.events[p] += 1
            self._buckets.setdefault(context, _Counts()).events[p] += 1
            self._max_seen = max(self._max_seen, p)
        else:
            self._pool.censored[bid] += 1
            self._buckets.setdefault(context, _Counts()).censored[bid] += 1
            self._max_seen = max(self._max_seen, bid)
        self._curves.clear()

    def _level(self, x: float, name: str) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: expected a number, got {type(x).__name__}")
        v = float(x)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: must be finite and >= 0, got {x!r}")
        return round(v / self.resolution) * self.resolution if self.resolution else v

    # --- reads --------------------------------------------------------------------------------
    @property
    def contexts(self) -> tuple[Hashable, ...]:
        """Contexts observed so far."""
        return tuple(self._buckets)

    def count(self, context: Hashable | None = None) -> int:
        """Auctions observed in a context (None: all)."""
        c = self._pool if context is None else self._buckets.get(context)
        return c.n if c is not None else 0

    def curve(self, context: Hashable | None = None) -> Curve:
        """The fitted curve of a context (None, or a context never seen: the pooled curve)."""
        key = context if context in self._buckets else None
        hit = self._curves.get(key)
        if hit is None:
            hit = self._curves[key] = self._fit(key)
        return hit

    def win_rate(self, context: Hashable | None, bid: float) -> float:
        """Estimated P(win) = P(price ≤ bid) in a context.

        :param context: the bucket (None: pooled).
        :param bid: the bid.
        """
        return float(self.curve(context).at(self._level(bid, "bid")))

    def quantile(self, context: Hashable | None, q: float) -> float | None:
        """The bid that wins a share q of the auctions in a context (None: not identified yet).

        :param context: the bucket (None: pooled).
        :param q: target win rate in (0, 1].
        """
        if not 0 < q <= 1:
            raise ValueError(f"q: must be in (0, 1], got {q!r}")
        return self.curve(context).quantile(q)

    def _fit(self, context: Hashable | None) -> Curve:
        levels = np.array(sorted(self._pool.events), dtype=np.float64)
        if not levels.size:
            return Curve(levels, levels.copy(), self._max_seen)
        d, n = _at_risk(self._pool, levels)
        hazard = d / np.maximum(n, 1.0)
        if context is not None:
            dk, nk = _at_risk(self._buckets[context], levels)
            m = self.prior_strength
            hazard = np.where(nk + m > 0, (dk + m * hazard) / np.maximum(nk + m, 1e-12), hazard)
        win = np.maximum.accumulate(1.0 - np.cumprod(1.0 - np.clip(hazard, 0.0, 1.0)))
        curve = Curve(levels, win, self._max_seen)
        if not self.tail or win[-1] >= 1.0:
            return curve
        try:
            mu, sigma, _, _ = _fit_max_lognormal(curve, 1)
        except ValueError:  # too few identified levels: stay flat
            return curve
        return Curve(levels, win, self._max_seen, (mu, sigma))


def grid_win_curves(events: np.ndarray, censored: np.ndarray, prior_strength: float,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """The estimator of :class:`PriceLandscape` (``tail=False``) on a fixed price grid, for every
    context at once: the agent keeps its landscape as dense counts (linear, so they decay and
    add up over parallel runners like its other statistics) and reads it per request.

    :param events: float [K, J] won auctions (decayed counts) per context and revealed price level.
    :param censored: float [K, J] lost auctions per context and bid level (the price was above it).
    :param prior_strength: m, the pull of each context's hazard to the pooled one.
    :param groups: int [K] a group per context (e.g. its channel): a context is pulled to its
        group's hazard, itself pulled to the pooled one with the same m (None: one group).
    :returns: float64 [K, J] ``P(price ≤ level j)`` per context; flat (a lower bound) past the
        highest level observed.
    """
    d = np.asarray(events, np.float64)
    c = np.asarray(censored, np.float64)
    if d.shape != c.shape or d.ndim != 2:
        raise ValueError(f"censored: shape {c.shape} must equal events' {d.shape} ([contexts, levels])")
    # at risk at level j: revealed prices and censored bids at levels >= j (ties: censored ones are at risk)
    n = np.flip(np.cumsum(np.flip(d + c, axis=1), axis=1), axis=1)
    d0, n0 = d.sum(0), n.sum(0)
    pooled = np.where(n0 > 0, d0 / np.maximum(n0, 1e-12), 0.0)
    m = float(prior_strength)

    def shrunk(dk: np.ndarray, nk: np.ndarray, target: np.ndarray) -> np.ndarray:
        return np.where(nk + m > 0, (dk + m * target) / np.maximum(nk + m, 1e-12), target)

    if groups is not None:
        g = np.asarray(groups, np.int64)
        if g.shape != (d.shape[0],):
            raise ValueError(f"groups: shape {g.shape}, expected ({d.shape[0]},) (one per context)")
        dg, ng = np.zeros((g.max() + 1, d.shape[1])), np.zeros((g.max() + 1, d.shape[1]))
        np.add.at(dg, g, d)
        np.add.at(ng, g, n)
        target = shrunk(dg, ng, pooled)[g]
    else:
        target = np.broadcast_to(pooled, d.shape)
    hazard = shrunk(d, n, target)
    return np.maximum.accumulate(1.0 - np.cumprod(1.0 - np.clip(hazard, 0.0, 1.0), axis=1), axis=1)


# ---------------------------------------------------------------------------------------------
# Calibration: the landscape as the simulator's per-channel competitor fields
# ---------------------------------------------------------------------------------------------
def _fit_max_lognormal(curve: Curve, k: int, lo: float = 0.02, hi: float = 0.98) -> tuple[float, float, np.ndarray,
                                                                                            np.ndarray]:
    """(log median, sigma) of k i.i.d. log-normal bids whose maximum has this curve.

    P(max ≤ x) = Φ((ln x − μ)/σ)^k, so z = Φ⁻¹(w^{1/k}) is linear in ln x: least squares on the
    curve's identified points with lo < w < hi and x > 0, weighted by the probability mass.
    """
    ok = (curve.win > lo) & (curve.win < hi) & (curve.levels > 0)
    if ok.sum() < 2:
        raise ValueError("landscape: fewer than 2 identified price levels with 0.02 < win rate < 0.98")
    x, w = np.log(curve.levels[ok]), curve.win[ok]
    z = ndtri(w ** (1.0 / k))
    mass = np.diff(np.concatenate([[0.0], curve.win]))[ok] + 1e-9
    slope, intercept = np.polyfit(z, x, 1, w=np.sqrt(mass))
    return float(intercept), float(max(slope, 1e-6)), x, z


