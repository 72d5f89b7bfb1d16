"""The competitor landscape on synthetic censored data whose true price distribution is known:
Kaplan–Meier recovers the win-rate curve (tolerances below) where the won-only empirical curve is
biased; contexts are shrunk to the pool; bad input names its field; the calibration section
recovers the log-normal competitors that generated the prices."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from agent_service.agent.model.landscape import PriceLandscape

GRID = np.linspace(0.3, 3.0, 28)


def lognormal_cdf(x: np.ndarray, median: float, sigma: float) -> np.ndarray:
    return ndtr((np.log(x) - np.log(median)) / sigma)


def feed(land: PriceLandscape, ctx: object, bids: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """Won-only feedback into ``land``; returns the won prices (what a naive estimate sees)."""
    for b, p in zip(bids.tolist(), prices.tolist(), strict=True):
        won = b >= p
        land.observe(ctx, b, won, p if won else None)
    return prices[bids >= prices]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_km_recovers_the_curve_where_the_won_only_estimate_is_biased(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 8000
    prices = np.exp(np.log(1.5) + 0.5 * rng.standard_normal(n))
    bids = np.exp(np.log(1.2) + 0.6 * rng.standard_normal(n))  # independent of the price: non-informative
    land = PriceLandscape(resolution=0.001)
    won = feed(land, "social", bids, prices)
    truth = lognormal_cdf(GRID, 1.5, 0.5)
    km = land.curve("social").at(GRID)
    naive = np.searchsorted(np.sort(won), GRID, side="right") / won.size
    assert np.abs(km - truth).max() < 0.04
    assert np.abs(naive - truth).max() > 0.25  # won prices are the low ones
    assert land.win_rate("social", 1.5) == pytest.approx(0.5, abs=0.04)
    assert land.quantile("social", 0.5) == pytest.approx(1.5, rel=0.06)
    assert np.median(won) < 1.2  # the naive median is far below the true 1.5


def test_constant_bid_identifies_the_curve_below_the_bid_and_the_tail_is_lognormal() -> None:
    rng = np.random.default_rng(3)
    prices = np.exp(np.log(2.0) + 0.5 * rng.standard_normal(20_000))
    flat = PriceLandscape(resolution=0.001, tail=False)
    tailed = PriceLandscape(resolution=0.001)
    for land in (flat, tailed):
        feed(land, None, np.full(prices.size, 2.5), prices)
    below = GRID[GRID <= 2.5]
    truth = lognormal_cdf(below, 2.0, 0.5)
    assert np.abs(flat.curve(None).at(below) - truth).max() < 0.02
    w_c = flat.win_rate(None, 2.5)
    assert flat.win_rate(None, 10.0) == pytest.approx(w_c)  # not identified: a flat lower bound
    assert flat.quantile(None, 0.95) is None
    assert tailed.win_rate(None, 4.0) == pytest.approx(float(lognormal_cdf(np.array([4.0]), 2.0, 0.5)[0]), abs=0.03)
    assert tailed.quantile(None, 0.95) == pytest.approx(2.0 * np.exp(0.5 * 1.6449), rel=0.1)


def test_thin_contexts_shrink_to_the_pool_and_rich_ones_keep_their_own_curve() -> None:
    rng = np.random.default_rng(4)
    land = PriceLandscape(prior_strength=50.0, resolution=0.001)
    big = rng.lognormal(np.log(1.0), 0.4, 20_000)
    feed(land, "cheap", np.full(big.size, 5.0), big)
    thin = rng.lognormal(np.log(2.5), 0.4, 10)
    feed(land, "thin", np.full(thin.size, 5.0), thin)
    rich = rng.lognormal(np.log(2.5), 0.4, 5000)
    feed(land, "rich", np.full(rich.size, 5.0), rich)
    pooled = land.win_rate(None, 1.5)
    assert abs(land.win_rate("thin", 1.5) - pooled) < abs(land.win_rate("rich", 1.5) - pooled)
    assert land.win_rate("rich", 2.5) == pytest.approx(0.5, abs=0.03)
    assert land.curve("never seen") is land.curve(None)
    no_shrink = PriceLandscape(prior_strength=0.0, resolution=0.001)
    feed(no_shrink, "thin", np.full(thin.size, 5.0), thin)
    assert no_shrink.win_rate("thin", float(np.max(thin))) == 1.0


def test_lost_auction_with_a_revealed_price_is_an_exact_observation() -> None:
    land = PriceLandscape()
    land.observe("a", 1.0, False, 3.0)
    land.observe("a", 4.0, True, 2.0)
    assert land.win_rate("a", 2.0) == pytest.approx(0.5)
    assert land.win_rate("a", 3.0) == pytest.approx(1.0)


@pytest.mark.parametrize(("args", "field"), [
    ((-1.0, True, 0.5), "bid"),
    ((float("nan"), False, None), "bid"),
    ((1.0, True, None), "price"),
    ((1.0, True, -0.1), "price"),
    ((1.0, True, 2.0), "price"),
    ((1.0, False, 0.5), "won"),
    (("1", False, None), "bid"),
])
def test_bad_input_names_the_field(args: tuple, field: str) -> None:
    land = PriceLandscape()
    with pytest.raises(ValueError, match=rf"^{field}:"):
        land.observe("ctx", *args)
    assert land.count() == 0
    with pytest.raises(ValueError, match="^prior_strength:"):
        PriceLandscape(prior_strength=-1)
    with pytest.raises(ValueError, match="^q:"):
        land.quantile(None, 1.5)


def test_the_agents_grid_estimator_is_the_landscapes_on_the_same_grid() -> None:
    """``grid_win_curves`` (the agent's dense counts) gives PriceLandscape's curves (tail off) at
    every grid level, per context and pooled, with thin and rich contexts."""
    from agent_service.agent.model.landscape import grid_win_curves

    rng, step, J = np.random.default_rng(7), 0.1, 41
    land = PriceLandscape(prior_strength=20.0, resolution=step, tail=False)
    won, lost = np.zeros((3, J)), np.zeros((3, J))
    for k, n in enumerate((3000, 200, 15)):
        prices = np.minimum(np.exp(np.log(1.0 + 0.5 * k) + 0.5 * rng.standard_normal(n)), 4.0)
        bids = np.round(rng.uniform(0.3, 4.0, n) / step) * step
        prices = np.round(prices / step) * step
        for b, p in zip(bids.tolist(), prices.tolist(), strict=True):
            w = b >= p
            land.observe(k, b, w, p if w else None)
            (won if w else lost)[k, int(round((p if w else b) / step))] += 1
    grid = grid_win_curves(won, lost, 20.0)
    levels = np.arange(J) * step
    for k in range(3):
        assert np.allclose(grid[k], land.curve(k).at(levels + 1e-9), atol=1e-9), k
    assert np.allclose(grid_win_curves(won.sum(0, keepdims=True), lost.sum(0, keepdims=True), 0.0)[0],
                       land.curve(None).at(levels + 1e-9), atol=1e-9)
    with pytest.raises(ValueError, match="censored"):
        grid_win_curves(won, lost[:2], 1.0)
