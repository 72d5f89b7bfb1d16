"""Campaign-level running statistics behind several state features and v̂.

The learner updates them from experience and publishes them with the weights: smoothed
posterior means (weak priors, so a new campaign starts at sensible averages) of creative CTR
and CVR, A/B arm CTR, win rate and clearing price overall and per channel, and conversion
value. Counts decay a little every period (markets and creatives drift).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from agent_service.money import MICROS_PER_USD

__all__ = ["CampaignStats"]


class _Derived(NamedTuple):
    """What the state reads, cached until the counts change."""

    ctr_rel: np.ndarray
    cvr_rel: np.ndarray
    campaign_cvr: float
    win_rate: float
    clearing_cpm: float
    ab_lift: np.ndarray


@dataclass
class CampaignStats:
    """Campaign-level running statistics behind several features; the learner updates them
    from experience and publishes them with the weights. Smoothed with weak priors, so a new
    campaign starts at sensible averages. Counts decay by ``decay`` per ``end_period``."""

    creatives: int
    ab_variants: int = 4
    prior: float = 50.0
    """Pseudo-impressions of every prior."""
    prior_ctr: float = 0.02
    prior_cvr: float = 0.05
    decay: float = 0.9
    impressions: np.ndarray = field(init=False)
    clicks: np.ndarray = field(init=False)
    conversions: np.ndarray = field(init=False)
    ab_impressions: np.ndarray = field(init=False)
    ab_clicks: np.ndarray = field(init=False)
    bids: float = 0.0
    wins: float = 0.0
    paid_micros: float = 0.0
    channel_bids: np.ndarray = field(init=False)
    channel_wins: np.ndarray = field(init=False)
    channel_paid_micros: np.ndarray = field(init=False)
    value_sum_usd: float = 0.0
    value_count: float = 0.0
    segments: int = 8
    segment_value_usd: np.ndarray = field(init=False)
    """Conversion value credited per segment, each weighted by the credited decision's posterior."""
    segment_weight: np.ndarray = field(init=False)
    segment_impressions: np.ndarray = field(init=False)
    """[K, C] impressions per segment and creative, each weighted by the decision's posterior."""
    prior_impressions: np.ndarray = field(init=False)
    """[C] pseudo-impressions of each creative from an ad platform's report (``set_priors``; never
    decayed: the report is the prior, what the campaign sees moves away from it)."""
    prior_clicks: np.ndarray = field(init=False)
    prior_conversions: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._derived: _Derived | None = None
        self.segment_value_usd = np.zeros(self.segments)
        self.segment_weight = np.zeros(self.segments)
        self.segment_impressions = np.zeros((self.segments, self.creatives))
        self.impressions = np.zeros(self.creatives)
        self.clicks = np.zeros(self.creatives)
        self.conversions = np.zeros(self.creatives)
        self.ab_impressions = np.zeros(self.ab_variants)
        self.ab_clicks = np.zeros(self.ab_variants)
        self.channel_bids, self.channel_wins, self.channel_paid_micros = np.zeros(3), np.zeros(3), np.zeros(3)
        self.prior_impressions = np.zeros(self.creatives)
        self.prior_clicks = np.zeros(self.creatives)
        self.prior_conversions = np.zeros(self.creatives)

    # --- reading -----------------------------------------------------------------------------
    def ctr(self) -> np.ndarray:
        """Posterior-mean CTR per creative (campaign prior, the report's prior, then what was seen)."""
        return ((self.clicks + self.prior_clicks + self.prior * self.prior_ctr)
                / (self.impressions + self.prior_impressions + self.prior))

    def cvr(self) -> np.ndarray:
        """Posterior-mean conversions per click per creative."""
        return ((self.conversions + self.prior_conversions + self.prior * self.prior_cvr)
                / (self.clicks + self.prior_clicks + self.prior))

    def set_priors(self, impressions: np.ndarray, clicks: np.ndarray, conversions: np.ndarray) -> None:
        """Per-creative pseudo-counts (Beta priors of CTR and CVR) from a performance report."""
        self._derived = None
        self.prior_impressions = np.asarray(impressions, np.float64).copy()
        self.prior_clicks = np.asarray(clicks, np.float64).copy()
        self.prior_conversions = np.asarray(conversions, np.float64).copy()

    def campaign_ctr(self) -> float:
        return float((self.clicks.sum() + self.prior * self.prior_ctr) / (self.impressions.sum() + self.prior))

    def campaign_cvr(self) -> float:
        return float((self.conversions.sum() + self.prior * self.prior_cvr) / (self.clicks.sum() + self.prior))

    def ab_ctr(self) -> np.ndarray:
        c = self.campaign_ctr()
        return (self.ab_clicks + self.prior * c) / (self.ab_impressions + self.prior)

    def win_rate(self) -> float:
        return float((self.wins + 5.0) / (self.bids + 10.0))

    def clearing_cpm_usd(self) -> float:
        """Mean price paid, CPM USD (prior: $2 over 5 wins)."""
        return float((self.paid_micros / 1e3 + 5.0 * 2.0) / (self.wins + 5.0))

    def channel_win_rate(self) -> np.ndarray:
        """Posterior-mean win rate of bids per channel [3] (organic: 1, a placement is taken)."""
        w = (self.channel_wins + 5.0) / (self.channel_bids + 10.0)
        w[0] = 1.0
        return w

    def channel_price_usd(self) -> np.ndarray:
        """Mean price of a won impression per channel, USD [3] (organic: 0; prior $2 CPM)."""
        p = (self.channel_paid_micros / MICROS_PER_USD + 5.0 * 0.002) / (self.channel_wins + 5.0)
        p[0] = 0.0
        return p

    def value_per_conversion(self, prior_usd: float = 30.0) -> float:
        """Posterior-mean conversion value, USD."""
        return float((self.value_sum_usd + 5.0 * prior_usd) / (self.value_count + 5.0))

    def value_by_segment(self, prior_usd: float = 30.0) -> np.ndarray:
        """Posterior-mean conversion value per segment [K], shrunk to the campaign's mean (5
        pseudo-conversions): segments differ in what a conversion is worth."""
        return (self.segment_value_usd + 5.0 * self.value_per_conversion(prior_usd)) / (self.segment_weight + 5.0)

    def value_for(self, segment_probs: np.ndarray, prior_usd: float = 30.0) -> np.ndarray:
        """Expected conversion value [B] of people with these segment posteriors [B, K]."""
        return np.asarray(segment_probs, np.float64) @ self.value_by_segment(prior_usd)

    def derived(self) -> _Derived:
        """The figures the state reads, computed once until the counts change."""
        if self._derived is None:
            c_ctr, c_cvr = self.campaign_ctr(), self.campaign_cvr()
            self._derived = _Derived(self.ctr() / (2 * c_ctr), self.cvr() / (2 * c_cvr), c_cvr, self.win_rate(),
                                     self.clearing_cpm_usd(), self.ab_ctr() / c_ctr)
        return self._derived

    # --- learning ----------------------------------------------------------------------------
    def observe(self, creative: np.ndarray, variant: np.ndarray, bid: np.ndarray, won: np.ndarray,
                paid_micros: np.ndarray, clicked: np.ndarray, channel: np.ndarray | None = None) -> None:
        """Outcomes of a batch of decisions (arrays of shape [B])."""
        self._derived = None
        won = won.astype(bool)
        if channel is not None:
            placed = bid.astype(bool)
            np.add.at(self.channel_bids, channel[placed], 1.0)
            np.add.at(self.channel_wins, channel[placed & won], 1.0)
            np.add.at(self.channel_paid_micros, channel[won], paid_micros[won])
        np.add.at(self.impressions, creative[won], 1.0)
        np.add.at(self.clicks, creative[won & clicked.astype(bool)], 1.0)
        np.add.at(self.ab_impressions, variant[won], 1.0)
        np.add.at(self.ab_clicks, variant[won & clicked.astype(bool)], 1.0)
        self.bids += float(bid.astype(bool).sum())
        self.wins += float((won & bid.astype(bool)).sum())
        self.paid_micros += float(paid_micros[won].sum())

    def observe_segment_impressions(self, creative: np.ndarray, segment_probs: np.ndarray) -> None:
        """Won impressions [B] with their decisions' segment posteriors [B, K]."""
        np.add.at(self.segment_impressions.T, creative, np.asarray(segment_probs, np.float64))

    def impressions_for(self, segment_probs: np.ndarray) -> np.ndarray:
        """Expected impressions of each creative among people like these [B, C]."""
        return np.asarray(segment_probs, np.float64) @ self.segment_impressions

    def observe_clicks(self, creative: np.ndarray) -> None:
        """Clicks reported after their impression (the stream's separate click records)."""
        self._derived = None
        np.add.at(self.clicks, creative, 1.0)

    def observe_conversions(self, creative: np.ndarray, value_usd: np.ndarray,
                            segment_probs: np.ndarray | None = None) -> None:
        """Credited conversions: their creatives, values and (when known) the credited
        decisions' segment posteriors [B, K]."""
        self._derived = None
        np.add.at(self.conversions, creative, 1.0)
        self.value_sum_usd += float(np.sum(value_usd))
        self.value_count += float(len(value_usd))
        if segment_probs is not None:
            w = np.asarray(segment_probs, np.float64)
            self.segment_value_usd += w.T @ np.asarray(value_usd, np.float64)
            self.segment_weight += w.sum(axis=0)

    def end_period(self) -> None:
        """Forget a little (the market and the creatives drift)."""
        self._derived = None
        for name in ("impressions", "clicks", "conversions", "ab_impressions", "ab_clicks", "channel_bids",
                     "channel_wins", "channel_paid_micros", "segment_value_usd", "segment_weight",
                     "segment_impressions"):
            setattr(self, name, getattr(self, name) * self.decay)
        for name in ("bids", "wins", "paid_micros", "value_sum_usd", "value_count"):
            setattr(self, name, getattr(self, name) * self.decay)

    def state(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()
                if not k.startswith("_")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CampaignStats:
        keys = ("creatives", "ab_variants", "prior", "prior_ctr", "prior_cvr", "decay", "segments")
        out = cls(**{k: state[k] for k in keys if k in state})  # "segments": absent from older checkpoints
        for k, v in state.items():
            if k not in keys:
                setattr(out, k, np.asarray(v, dtype=np.float64) if isinstance(v, list) else v)
        return out
