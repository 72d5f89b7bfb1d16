"""Synthetic auction episodes built only from training statistics (``info.json``).

This is what the learned bidders train on and what linear bidding tunes ``b0`` on: no line
of the test log is used. Each auction draws independently

* a market price from the training histogram (optionally scaled per episode by a random
  market level, a domain-randomisation assumption: markets drift between days);
* a pCTR from a lognormal with mean = training CTR and log-sd ``pctr_log_sd`` (a prior; the
  training split's pCTRs are not shipped), or from a pool of pCTRs the bidder has already
  seen (an online refit from past auctions);
* a click ~ Bernoulli(pCTR x ctr_scale), i.e. pCTR calibrated to the training CTR.

Price and pCTR are independent, as in RLB's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent_service.errors import ConfigError
from simulators.ipinyou.data import CampaignInfo

__all__ = ["EpisodeBatch", "MarketConfig", "SyntheticMarket"]


@dataclass(frozen=True)
class MarketConfig:
    """How synthetic episodes are drawn."""

    pctr_log_sd: float = 0.5
    """Log-sd of the lognormal pCTR prior (mean fixed to the training CTR); a round a-priori
    value, not fitted to the test log."""
    price_laplace: float = 0.0
    """Pseudo-count added to every bin of the price histogram."""
    price_level_jitter: float = 0.0
    """Per-episode market level: prices scaled by exp(U(-j, j)) (0 = stationary)."""
    ctr_level_jitter: float = 0.0
    """Per-episode CTR level: click probability scaled by exp(U(-j, j)) (0 = calibrated)."""

    def __post_init__(self) -> None:
        if not 0 <= self.pctr_log_sd <= 3:
            raise ConfigError("market.pctr_log_sd", "must be in [0, 3]")
        if self.price_laplace < 0:
            raise ConfigError("market.price_laplace", "must be >= 0")
        if not 0 <= self.price_level_jitter <= 1:
            raise ConfigError("market.price_level_jitter", "must be in [0, 1] (log scale)")
        if not 0 <= self.ctr_level_jitter <= 1:
            raise ConfigError("market.ctr_level_jitter", "must be in [0, 1] (log scale)")


class EpisodeBatch(NamedTuple):
    """E synthetic episodes of N auctions; every array has shape ``(E, N)``."""

    price: np.ndarray
    """int64 market prices."""
    pctr: np.ndarray
    """float64 pCTRs shown to the bidder."""
    ctr: np.ndarray
    """float64 true click probabilities (pCTR x the episode's CTR level)."""
    click: np.ndarray
    """int64 sampled clicks."""


class SyntheticMarket:
    """Draws :class:`EpisodeBatch` es from a price distribution and a pCTR model.

    :param price_pmf: distribution of market prices over 0 .. len-1.
    :param mean_ctr: mean pCTR (the training CTR).
    :param cfg: sampling settings.
    :param pctr_pool: if given, pCTRs are resampled from these values (an empirical model
        of pCTRs already seen) instead of the lognormal prior.
    """

    def __init__(self, price_pmf: np.ndarray, mean_ctr: float, cfg: MarketConfig | None = None,
                 pctr_pool: np.ndarray | None = None) -> None:
        pmf = np.asarray(price_pmf, dtype=np.float64)
        if pmf.ndim != 1 or pmf.size == 0 or np.any(pmf < 0) or pmf.sum() <= 0:
            raise ConfigError("market.price_pmf", "need a non-negative histogram with positive mass")
        if not 0 < mean_ctr < 1:
            raise ConfigError("market.mean_ctr", "must be in (0, 1)")
        self.cfg = cfg or MarketConfig()
        pmf = pmf + self.cfg.price_laplace
        self.price_pmf = pmf / pmf.sum()
        self.mean_ctr = float(mean_ctr)
        self.pctr_pool = None if pctr_pool is None else np.asarray(pctr_pool, dtype=np.float64)
        self._cdf = np.cumsum(self.price_pmf)

    @classmethod
    def from_info(cls, info: CampaignInfo, cfg: MarketConfig | None = None) -> SyntheticMarket:
        """The training market: train price histogram and train CTR.

        :param info: training statistics.
        :param cfg: sampling settings.
        """
        return cls(np.asarray(info.price_counter_train, dtype=np.float64), info.ctr, cfg)

    def sample_pctr(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        """pCTRs from the pool, or lognormal with mean ``mean_ctr``."""
        if self.pctr_pool is not None and self.pctr_pool.size:
            return rng.choice(self.pctr_pool, size=shape)
        sd = self.cfg.pctr_log_sd
        z = rng.standard_normal(shape)
        return np.clip(self.mean_ctr * np.exp(sd * z - 0.5 * sd * sd), 1e-7, 0.5)

    def sample(self, n_episodes: int, episode_length: int, rng: np.random.Generator,
               max_price: int = 300) -> EpisodeBatch:
        """Draw ``n_episodes`` episodes of ``episode_length`` auctions.

        :param n_episodes: E.
        :param episode_length: N.
        :param rng: the only source of randomness (same seed, same batch).
        :param max_price: prices are clipped to ``0 .. max_price``.
        """
        shape = (n_episodes, episode_length)
        price = np.searchsorted(self._cdf, rng.random(shape) * self._cdf[-1], side="right")
        price = np.minimum(price, len(self.price_pmf) - 1)
        if self.cfg.price_level_jitter > 0:
            j = self.cfg.price_level_jitter
            level = np.exp(rng.uniform(-j, j, size=(n_episodes, 1)))
            price = np.rint(price * level)
        price = np.clip(price, 0, max_price).astype(np.int64)
        pctr = self.sample_pctr(shape, rng)
        ctr = pctr
        if self.cfg.ctr_level_jitter > 0:
            j = self.cfg.ctr_level_jitter
            ctr = np.clip(pctr * np.exp(rng.uniform(-j, j, size=(n_episodes, 1))), 0.0, 1.0)
        click = (rng.random(shape) < ctr).astype(np.int64)
        return EpisodeBatch(price, pctr, ctr, click)
