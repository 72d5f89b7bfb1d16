"""The price-click factor of the iPinYou bidder: it is RLB's rule when clicks do not depend on the
price, it recovers a dependence from won auctions alone, and lost auctions never enter it."""

from __future__ import annotations

import numpy as np

from agent_service.lab.ipinyou.price_ctr import PriceClickModel, best_prefix_bid
from simulators.ipinyou.data import CampaignInfo
from simulators.ipinyou.rlb import rlb_bids, value_function


def test_a_flat_factor_gives_rlbs_bid() -> None:
    info = CampaignInfo(10_000, 400_000, 40, tuple([0] * 5 + [200] * 80 + [20] * 216))
    pmf = info.price_pmf()
    table = value_function(pmf, 60, 400, info.ctr)
    rng = np.random.default_rng(0)
    flat = np.ones(301)
    for _ in range(300):
        n, b = int(rng.integers(1, 61)), int(rng.integers(0, 401))
        u = float(rng.random() * 0.02)
        want = int(rlb_bids(table, np.array([u]), np.array([b]), np.array([n]))[0])
        assert best_prefix_bid(u, flat, pmf, table[n - 1], b, 300) == want


def test_factor_recovers_cheap_slots_clicking_more_and_ignores_lost_auctions() -> None:
    rng = np.random.default_rng(1)
    model = PriceClickModel(300, prior_clicks=2.0)
    for _ in range(100_000):
        price = int(rng.integers(1, 100))
        pctr = 0.01
        ctr = 0.02 if price <= 5 else 0.005  # cheap slots click 4x more for the same pCTR
        model.observe(True, price, pctr, int(rng.random() < ctr))
        model.observe(False, -1, pctr, -1)  # a lost auction (won-only feedback): nothing revealed
    assert len(model.won_pctrs) == 100_000
    f = model.fit()
    assert f[3] / f[50] > 2.0  # true ratio 4, shrunk towards 1
    assert f[250] == 1.0  # no price ever won there: the prior
    assert PriceClickModel(300, 10.0).fit()[10] == 1.0  # no data: flat
