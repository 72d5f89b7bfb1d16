"""RLB's dynamic program against a literal loop version, baselines, and the published number."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.ipinyou.baselines import (
    LinearBidder,
    lin_grid_values,
    tune_b0_on_log,
    tune_b0_simulated,
    tune_const_simulated,
)
from simulators.ipinyou.config import default_data_dir
from simulators.ipinyou.data import AuctionLog, CampaignInfo, load_info, load_log
from simulators.ipinyou.replay import Observation, episode_budget, replay_vectorised
from simulators.ipinyou.rlb import RLBBidder, rlb_bids, value_function


def reference_value_function(m: np.ndarray, n_max: int, budget: int, theta: float, max_bid: int) -> np.ndarray:
    """Cai et al.'s recursion written as plain loops (clicks objective, gamma = 1)."""
    v = [0.0] * (budget + 1)
    rows = []
    v_max = 0.0
    v_inc = sum(m[d] * theta for d in range(max_bid + 1))
    for _ in range(1, n_max):
        rows.append(list(v))
        a = [0] * (budget + 1)
        bb = budget - 1
        for b in range(budget, 0, -1):
            while bb >= 0 and (v[bb] - v[b]) + theta >= 0:
                bb -= 1
            a[b] = min(max_bid, b) if bb < 0 else min(max_bid, b - bb - 1)
        v_max = v_max + v_inc
        nv = [0.0] * (budget + 1)
        for b in range(1, budget + 1):
            nv[b] = v[b]
            for d in range(0, a[b] + 1):
                nv[b] += m[d] * (theta + (v[b - d] - v[b]))
            if abs(nv[b] - v_max) < 1e-10:
                for rest in range(b + 1, budget + 1):
                    nv[rest] = v_max
                break
        v = nv
    rows.append(list(v))
    return np.array(rows)


def reference_bid(table: np.ndarray, n: int, b: int, theta: float, max_bid: int) -> int:
    a = 0
    for d in range(1, min(b, max_bid) + 1):
        if theta + table[n - 1][b - d] - table[n - 1][b] >= 0:
            a = d
        else:
            break
    return a


@pytest.mark.parametrize(("budget", "max_bid", "n_max"), [(60, 300, 25), (80, 12, 30), (5, 300, 40)])
def test_value_function_matches_loops(budget: int, max_bid: int, n_max: int) -> None:
    rng = np.random.default_rng(budget)
    counts = rng.integers(0, 50, 301).astype(float)
    counts[:3] = [0, 5, 40]
    m = (counts + 1) / (counts.sum() + 301)
    theta = 0.004
    ours = value_function(m, n_max, budget, theta, max_bid)
    ref = reference_value_function(m, n_max, budget, theta, max_bid)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)
    bidder = RLBBidder(ours, max_bid)
    states = [(int(rng.integers(1, n_max + 1)), int(rng.integers(0, budget + 1)), float(rng.random() * 0.02))
              for _ in range(300)]
    for n, b, th in states:
        want = reference_bid(ref, n, b, th, max_bid)
        assert bidder.bid(Observation(th, b, n, budget, 0, 0)) == want
    ns, bs, ths = (np.array(x) for x in zip(*states, strict=True))
    assert list(rlb_bids(ours, ths, bs, ns, max_bid)) == [reference_bid(ref, n, b, t, max_bid)
                                                          for n, b, t in states]


def test_value_function_is_monotone_in_budget_and_time() -> None:
    info = CampaignInfo(1000, 60_000, 4, tuple(range(301)))
    v = value_function(info.price_pmf(), 50, 300, info.ctr)
    assert np.all(np.diff(v, axis=1) >= -1e-15)
    assert np.all(np.diff(v, axis=0) >= -1e-15)
    assert v[:, 0].max() == 0.0 and v[0].max() == 0.0


def test_linear_grid_equals_replay_and_tuning_uses_no_test_data() -> None:
    rng = np.random.default_rng(4)
    n = 3_000
    log = AuctionLog(rng.integers(0, 2, n), rng.integers(0, 100, n), rng.random(n) * 0.01)
    budget = 900
    b0s = np.array([5.0, 20.0, 60.0])
    grid = lin_grid_values(log.price.reshape(3, 1000), log.pctr.reshape(3, 1000),
                           log.click.reshape(3, 1000).astype(float), budget, b0s, 0.005)
    for b0, clicks in zip(b0s, grid, strict=True):
        assert replay_vectorised(log, budget, LinearBidder(b0, 0.005).bids).clicks == clicks
    b0, best = tune_b0_on_log(log, budget, 0.005, step=6)
    assert b0 % 6 == 0 and best == replay_vectorised(log, budget, LinearBidder(b0, 0.005).bids).clicks
    info = CampaignInfo(1000, 40_000, 5, tuple([0] * 10 + [100] * 60 + [0] * 231))
    assert tune_b0_simulated(info, 1000, seed=0) == tune_b0_simulated(info, 1000, seed=0)
    # any bid >= 69 buys every synthetic auction (prices 10..69) when B = 70 * N; ties go up
    assert tune_const_simulated(info, 70_000, episodes=20) == 300
    assert tune_const_simulated(info, 1_000, episodes=20) < 69


def test_published_rlb_and_lin_numbers_are_reproduced() -> None:
    data = default_data_dir()
    if not (data / "test.theta.txt").exists():
        pytest.fail(f"{data} is missing: CI copies ../shared beside the clone")
    log, info = load_log(data), load_info(data)
    budget = episode_budget(info, 1 / 32)
    assert budget == 1969 and len(log) == 156_063
    res = replay_vectorised(log, budget, RLBBidder.from_info(info, budget).bids)
    assert (res.clicks, res.cost, res.impressions) == (78, 304_375, 39_680)  # Cai et al.: 78 / 304,375
    lin = replay_vectorised(log, budget, LinearBidder(10, info.ctr).bids)
    assert (lin.clicks, lin.cost) == (71, 203_610)  # the published LIN row is b0 = 10
