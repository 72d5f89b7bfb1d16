"""Guardrails of a candidate against control: spend rate, no-bid rate and error rate.

Each rate is a ratio over persons (Σ spend / Σ requests, Σ no-bids / Σ requests, Σ errors / Σ requests)
judged with the same always-valid normal-mixture interval as the main test
(:mod:`agent_service.experiments.sequential`), so that looking after every batch does not make a noisy
candidate look broken. A guardrail breaks when its whole interval lies beyond the limit; the mixture's τ is
the limit itself, where the boundary is tightest. The hard error-rate cap is a plain threshold on the
candidate's observed rate: a candidate failing most requests needs no statistics to be stopped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from numpy.typing import ArrayLike

from agent_service.config.experiments import GuardrailConfig
from agent_service.experiments.sequential import RatioStats, difference_interval, log_ratio_interval

__all__ = ["Breach", "GuardrailStats", "check_guardrails"]


@dataclass(slots=True)
class GuardrailStats:
    """One arm's per-person sums behind the three guardrails (x over requests)."""

    spend: RatioStats = field(default_factory=RatioStats)
    no_bids: RatioStats = field(default_factory=RatioStats)
    errors: RatioStats = field(default_factory=RatioStats)

    def add(self, requests: int, no_bids: int, errors: int, spend: float) -> None:
        """One person's totals: bid requests, requests answered with no bid, failed requests, spend (USD)."""
        if not (requests >= 0 and 0 <= no_bids <= requests and 0 <= errors <= requests and spend >= 0):
            raise ValueError(f"need 0 <= no_bids, errors <= requests and spend >= 0, got "
                             f"{requests=}, {no_bids=}, {errors=}, {spend=}")
        self.spend.add(spend, requests)
        self.no_bids.add(no_bids, requests)
        self.errors.add(errors, requests)

    def add_many(self, requests: ArrayLike, no_bids: ArrayLike, errors: ArrayLike, spend: ArrayLike) -> None:
        """Many persons at once (arrays with one entry per person)."""
        self.spend.add_many(spend, requests)
        self.no_bids.add_many(no_bids, requests)
        self.errors.add_many(errors, requests)

    @property
    def requests(self) -> float:
        return self.spend.sum_y


@dataclass(frozen=True, slots=True)
class Breach:
    """A broken guardrail: which one, the estimate and the interval end beyond the limit, in words."""

    guardrail: str
    """``spend_rate``, ``no_bid_rate``, ``error_rate`` or ``error_rate_cap``."""
    estimate: float
    bound: float
    """The interval end that crossed the limit (the lower end), or the observed rate for the cap."""
    limit: float
    reason: str


def check_guardrails(control: GuardrailStats, candidate: GuardrailStats, cfg: GuardrailConfig) -> Breach | None:
    """The first broken guardrail, or None (also None until both arms have ``min_requests``).

    :param control: the control arm's sums.
    :param candidate: the candidate arm's sums.
    :param cfg: limits, level and minimum sample.
    """
    if min(control.requests, candidate.requests) < cfg.min_requests:
        return None
    err_rate = candidate.errors.ratio
    if err_rate > cfg.max_error_rate:
        return Breach("error_rate_cap", err_rate, err_rate, cfg.max_error_rate,
                      f"candidate error rate {err_rate:.2%} above the cap {cfg.max_error_rate:.2%}")
    limit = math.log1p(cfg.max_spend_rate_increase)
    iv = log_ratio_interval(control.spend, candidate.spend, cfg.alpha, limit)
    if iv.lower > limit:
        return Breach("spend_rate", math.expm1(iv.estimate), math.expm1(iv.lower), cfg.max_spend_rate_increase,
                      f"spend per request {math.expm1(iv.estimate):+.1%} vs control (interval from "
                      f"{math.expm1(iv.lower):+.1%}) exceeds +{cfg.max_spend_rate_increase:.0%}")
    for name, c, k, lim in (("no_bid_rate", control.no_bids, candidate.no_bids, cfg.max_no_bid_rate_increase),
                            ("error_rate", control.errors, candidate.errors, cfg.max_error_rate_increase)):
        iv = difference_interval(c, k, cfg.alpha, lim)
        if iv.lower > lim:
            return Breach(name, iv.estimate, iv.lower, lim,
                          f"{name.replace('_', ' ')} {iv.estimate * 100:+.2f} points vs control (interval from "
                          f"{iv.lower * 100:+.2f}) exceeds +{lim * 100:.2f} points")
    return None
