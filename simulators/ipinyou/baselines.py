"""Baseline bidders: a constant bid and linear bidding, with ``b0`` tuned two ways.

* :func:`tune_b0_simulated` chooses ``b0`` from training information only: synthetic
  episodes from ``info.json`` (train price histogram, train CTR, a lognormal pCTR prior;
  see :mod:`simulators.ipinyou.market`), maximising expected clicks.
* :func:`tune_b0_on_log` tunes ``b0`` on a log's own clicks. Run on the test log this is an
  **oracle-tuned upper bound** for linear bidding, never a fair result. With ``step=6`` it
  is the published code's grid (``Lin_Bid.parameter_tune``: b0 = 6, 12, ...; we scan the
  whole grid instead of stopping after five non-improvements, ties going to the larger b0
  as the code's ``>=`` does).
"""

from __future__ import annotations

import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.data import AuctionLog, CampaignInfo
from simulators.ipinyou.market import EpisodeBatch, MarketConfig, SyntheticMarket
from simulators.ipinyou.replay import Observation, Outcome

__all__ = [
    "ConstBidder",
    "LinearBidder",
    "lin_grid_values",
    "tune_b0_on_log",
    "tune_b0_simulated",
    "tune_const_simulated",
]


class ConstBidder:
    """Bid the same amount on every auction.

    :param value: the bid.
    """

    def __init__(self, value: int) -> None:
        if value < 0:
            raise ConfigError("const.bid", "must be >= 0")
        self.value = int(value)

    def bid(self, obs: Observation) -> int:
        """The constant."""
        return self.value

    def observe(self, outcome: Outcome) -> None:
        """No learning."""

    def bids(self, pctr: np.ndarray, budget_left: np.ndarray, auctions_left: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`bid`."""
        return np.full(len(pctr), self.value, dtype=np.int64)


class LinearBidder:
    """Linear bidding ``bid = int(pctr * b0 / avg_ctr)`` (Perlich et al. 2012; the code's Lin_Bid).

    :param b0: base bid.
    :param avg_ctr: the training CTR (``clk_train / imp_train``).
    :param max_bid: bid cap.
    """

    def __init__(self, b0: float, avg_ctr: float, max_bid: int = 300) -> None:
        if b0 < 0 or avg_ctr <= 0:
            raise ConfigError("lin.b0", "need b0 >= 0 and avg_ctr > 0")
        self.b0 = float(b0)
        self.avg_ctr = float(avg_ctr)
        self.max_bid = max_bid

    def bid(self, obs: Observation) -> int:
        """``min(int(pctr * b0 / avg_ctr), max_bid)`` as in the published code."""
        return min(int(obs.pctr * self.b0 / self.avg_ctr), self.max_bid)

    def observe(self, outcome: Outcome) -> None:
        """No learning."""

    def bids(self, pctr: np.ndarray, budget_left: np.ndarray, auctions_left: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`bid`."""
        return np.minimum((pctr * self.b0 / self.avg_ctr).astype(np.int64), self.max_bid)


def lin_grid_values(price: np.ndarray, pctr: np.ndarray, value: np.ndarray, budget: int,
                    b0s: np.ndarray, avg_ctr: float, max_bid: int = 300,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """Total value won by linear bidding for every ``b0`` in ``b0s``, all at once.

    :param price: int[E, N] market prices, one row per episode.
    :param pctr: float[E, N] pCTRs.
    :param value: float[E, N] value of winning each auction (clicks, or expected clicks).
    :param budget: per-episode budget B.
    :param b0s: float[K] candidate base bids.
    :param avg_ctr: the CTR that normalises pCTR.
    :param max_bid: bid cap.
    :param valid: bool[E, N] mask of real auctions (padding is never won).
    :returns: float[K] total value over all episodes.
    """
    b0s = np.asarray(b0s, dtype=np.float64)
    n_ep, length = price.shape
    b = np.full((len(b0s), n_ep), budget, dtype=np.int64)
    total = np.zeros(len(b0s))
    for j in range(length):
        bids = np.minimum((pctr[None, :, j] * b0s[:, None] / avg_ctr).astype(np.int64), max_bid)
        won = np.minimum(bids, b) >= price[None, :, j]
        if valid is not None:
            won &= valid[None, :, j]
        b -= np.where(won, price[None, :, j], 0)
        total += (won * value[None, :, j]).sum(axis=1)
    return total


def _best(b0s: np.ndarray, totals: np.ndarray) -> float:
    best = np.flatnonzero(totals >= totals.max() - 1e-12)[-1]  # ties: larger b0, like the code's >=
    return float(b0s[best])


def _synthetic_episodes(info: CampaignInfo, market: MarketConfig | None, episodes: int, episode_length: int,
                        seed: int, max_bid: int) -> EpisodeBatch:
    """Seeded synthetic episodes drawn from the training statistics (the tuners' only data)."""
    sim = SyntheticMarket.from_info(info, market)
    return sim.sample(episodes, episode_length, np.random.default_rng(seed), max_price=max_bid)


def tune_b0_simulated(info: CampaignInfo, budget: int, *, episode_length: int = 1000,
                      episodes: int = 200, seed: int = 0, market: MarketConfig | None = None,
                      max_bid: int = 300) -> float:
    """``b0`` maximising expected clicks on synthetic episodes from training statistics.

    :param info: training statistics (the only data used).
    :param budget: per-episode budget B.
    :param episode_length: N.
    :param episodes: synthetic episodes to average over.
    :param seed: seed of the synthetic episodes.
    :param market: synthetic market settings (default: lognormal pCTR prior, log-sd 0.5).
    :param max_bid: bid cap.
    """
    batch = _synthetic_episodes(info, market, episodes, episode_length, seed, max_bid)
    b0s = np.arange(1, max_bid + 1, dtype=np.float64)
    totals = lin_grid_values(batch.price, batch.pctr, batch.ctr, budget, b0s, info.ctr, max_bid)
    return _best(b0s, totals)


def tune_const_simulated(info: CampaignInfo, budget: int, *, episode_length: int = 1000,
                         episodes: int = 200, seed: int = 0, market: MarketConfig | None = None,
                         max_bid: int = 300) -> int:
    """The constant bid maximising expected clicks on synthetic training episodes (the parameters
    are :func:`tune_b0_simulated`'s)."""
    batch = _synthetic_episodes(info, market, episodes, episode_length, seed, max_bid)
    bids = np.arange(0, max_bid + 1, dtype=np.float64)
    ones = np.ones(batch.pctr.shape)  # pCTR 1 with avg 1: the "linear" bid is exactly b0
    totals = lin_grid_values(batch.price, ones, batch.ctr, budget, bids, 1.0, max_bid)
    return int(_best(bids, totals))


def tune_b0_on_log(log: AuctionLog, budget: int, avg_ctr: float, *, episode_length: int = 1000,
                   step: int = 6, max_bid: int = 300) -> tuple[float, int]:
    """ORACLE: ``b0`` maximising the clicks of ``log`` itself (an upper bound if ``log`` is the test).

    :param log: the log whose clicks are maximised.
    :param budget: per-episode budget B.
    :param avg_ctr: the training CTR.
    :param episode_length: N.
    :param step: grid step (6 = the published code's grid; 1 = every integer).
    :param max_bid: bid cap.
    :returns: ``(b0, clicks)``.
    """
    if step <= 0:
        raise ConfigError("lin.step", "must be > 0")
    total = len(log)
    n_ep = -(-total // episode_length)
    pad = n_ep * episode_length - total
    def grid(x: np.ndarray, fill: float) -> np.ndarray:
        return np.concatenate([x, np.full(pad, fill, dtype=x.dtype)]).reshape(n_ep, episode_length)
    valid = grid(np.ones(total, dtype=bool), False)
    b0s = np.arange(step, max_bid + 1, step, dtype=np.float64)
    totals = lin_grid_values(grid(log.price, max_bid + 1), grid(log.pctr, 0.0),
                             grid(log.click.astype(np.float64), 0.0), budget, b0s, avg_ctr,
                             max_bid, valid)
    b0 = _best(b0s, totals)
    return b0, int(round(totals.max()))
