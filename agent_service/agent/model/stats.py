"""Campaign-level running statistics behind several state features and v̂.

The learner updates them from experience and publishes them with the weights: smoothed
posterior means (weak priors, so a new campaign starts at sensible averages) of creative CTR
and CVR, CTR and CVR per channel × device, A/B arm CTR, win rate and clearing price overall and
per channel, conversion value, and the competitor landscape: the distribution of the price to
beat per paid channel × device × hour band, from won auctions (price revealed) and lost ones
(only that the price was above the bid: right-censored), by the Kaplan–Meier estimator of
``agent/model/landscape.py`` on a fixed price grid. Counts decay a little every period (markets
and creatives drift); every count is linear, so parallel runners pool them as deltas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from agent_service.agent.model.landscape import grid_win_curves
from agent_service.money import MICROS_PER_USD
from agent_service.units import DAY_MS, HOUR_MS

__all__ = ["STAT_SETTINGS", "DEVICE_CLASSES", "LANDSCAPE_BIDS_CPM", "LANDSCAPE_CHANNELS", "LANDSCAPE_HOURS", "CampaignStats",
           "landscape_context"]

DEVICE_CLASSES = 3
"""Device classes of a request (0 mobile, 1 desktop, 2 other; ``OpportunityArrays.device_class``)."""
LANDSCAPE_CHANNELS = ("paid_search", "social")
"""Channels with an auction (organic has none), in ``CHANNELS`` order (indices 1, 2)."""
LANDSCAPE_HOURS = 6
"""Hour-of-day bands of the landscape's contexts (4 hours each, event time UTC)."""
LANDSCAPE_BIDS_CPM = (1.0, 2.0, 4.0, 8.0)
"""Bids (CPM USD, inside the agent's bid range) at which the state reads the estimated win rate."""
STAT_SETTINGS = ("creatives", "ab_variants", "prior", "prior_ctr", "prior_cvr", "decay", "segments", "price_step",
                 "price_levels", "landscape_strength")
"""The fields of :meth:`CampaignStats.state` that are settings, not counts."""
_SEEN_NORM = float(np.log1p(1000.0))


def landscape_context(channel: np.ndarray, device: np.ndarray, time_ms: np.ndarray) -> np.ndarray:
    """Context index of auctions [B] (paid channel × device class × hour band); -1 for organic.

    :param channel: index in ``CHANNELS``. :param device: device class. :param time_ms: event time.
    """
    ch = np.asarray(channel, np.int64)
    dev = np.minimum(np.maximum(np.asarray(device, np.int64), 0), DEVICE_CLASSES - 1)
    band = (np.asarray(time_ms, np.int64) % DAY_MS) // (HOUR_MS * 24 // LANDSCAPE_HOURS)
    return np.where(ch >= 1, ((ch - 1) * DEVICE_CLASSES + dev) * LANDSCAPE_HOURS + band, -1)


class _Derived(NamedTuple):
    """What the state reads, cached until the counts change."""

    ctr_rel: np.ndarray
    cvr_rel: np.ndarray
    campaign_cvr: float
    win_rate: float
    clearing_cpm: float
    ab_lift: np.ndarray
    chdev_ctr_rel: np.ndarray
    """[3 channels, 3 devices] CTR / (2 x campaign CTR)."""
    chdev_cvr_rel: np.ndarray
    """[3, 3] conversions per click / (2 x campaign rate)."""
    landscape: np.ndarray
    """[2 paid channels, 3 devices, LANDSCAPE_HOURS, 2 + len(LANDSCAPE_BIDS_CPM)] the state's
    landscape features of a context: median price to beat, win rate at each bid, data seen."""


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
    price_step: float = 0.1
    """Price grid of the landscape, CPM USD (prices and bids are rounded to it)."""
    price_levels: int = 101
    """Levels of the grid (0 to 10 USD CPM by default: the agent's bid range; above: the top level)."""
    landscape_strength: float = 50.0
    """Pseudo-auctions pulling a context's hazard to its channel's, and that to the pooled one (``grid_win_curves``)."""
    ls_won: np.ndarray = field(init=False)
    """[contexts, levels] won auctions per revealed price level (``landscape_context``)."""
    ls_lost: np.ndarray = field(init=False)
    """[contexts, levels] lost auctions per bid level (censored: the price was above the bid)."""
    cd_impressions: np.ndarray = field(init=False)
    """[3 channels, 3 devices] impressions won (shown, for organic)."""
    cd_clicks: np.ndarray = field(init=False)
    cd_conversions: np.ndarray = field(init=False)
    prior_cd_impressions: np.ndarray = field(init=False)
    """[3, 3] pseudo-impressions per channel × device from an ad platform's report (``set_channel_priors``;
    never decayed)."""
    prior_cd_clicks: np.ndarray = field(init=False)
    prior_cd_conversions: np.ndarray = field(init=False)

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
        if self.price_step <= 0 or self.price_levels < 2:
            raise ValueError(f"price_step, price_levels: must be > 0 and >= 2, got {self.price_step}, "
                             f"{self.price_levels}")
        n_ctx = len(LANDSCAPE_CHANNELS) * DEVICE_CLASSES * LANDSCAPE_HOURS
        self.ls_won, self.ls_lost = np.zeros((n_ctx, self.price_levels)), np.zeros((n_ctx, self.price_levels))
        for name in ("cd_impressions", "cd_clicks", "cd_conversions", "prior_cd_impressions", "prior_cd_clicks",
                     "prior_cd_conversions"):
            setattr(self, name, np.zeros((3, DEVICE_CLASSES)))

    # --- reading -----------------------------------------------------------------------------
    def _smoothed(self, hits: Any, trials: Any, rate: float) -> Any:
        """Posterior mean of a rate: ``hits / trials`` under a prior of ``prior`` pseudo-trials at ``rate``."""
        return (hits + self.prior * rate) / (trials + self.prior)

    def ctr(self) -> np.ndarray:
        """Posterior-mean CTR per creative (campaign prior, the report's prior, then what was seen)."""
        return self._smoothed(self.clicks + self.prior_clicks, self.impressions + self.prior_impressions,
                              self.prior_ctr)

    def cvr(self) -> np.ndarray:
        """Posterior-mean conversions per click per creative."""
        return self._smoothed(self.conversions + self.prior_conversions, self.clicks + self.prior_clicks,
                              self.prior_cvr)

    def set_priors(self, impressions: np.ndarray, clicks: np.ndarray, conversions: np.ndarray) -> None:
        """Per-creative pseudo-counts (Beta priors of CTR and CVR) from a performance report."""
        self._derived = None
        self.prior_impressions = np.asarray(impressions, np.float64).copy()
        self.prior_clicks = np.asarray(clicks, np.float64).copy()
        self.prior_conversions = np.asarray(conversions, np.float64).copy()

    def set_channel_priors(self, impressions: np.ndarray, clicks: np.ndarray, conversions: np.ndarray) -> None:
        """Per channel × device pseudo-counts [3, 3] (Beta priors of CTR and CVR) from a performance report."""
        self._derived = None
        self.prior_cd_impressions = np.asarray(impressions, np.float64).reshape(3, DEVICE_CLASSES).copy()
        self.prior_cd_clicks = np.asarray(clicks, np.float64).reshape(3, DEVICE_CLASSES).copy()
        self.prior_cd_conversions = np.asarray(conversions, np.float64).reshape(3, DEVICE_CLASSES).copy()

    def channel_device_ctr(self) -> np.ndarray:
        """Posterior-mean CTR per channel × device [3, 3] (campaign prior, the report's, then what was seen)."""
        return self._smoothed(self.cd_clicks + self.prior_cd_clicks, self.cd_impressions + self.prior_cd_impressions,
                              self.prior_ctr)

    def channel_device_cvr(self) -> np.ndarray:
        """Posterior-mean conversions per click per channel × device [3, 3]."""
        return self._smoothed(self.cd_conversions + self.prior_cd_conversions, self.cd_clicks + self.prior_cd_clicks,
                              self.prior_cvr)

    def landscape_win(self) -> np.ndarray:
        """Estimated ``P(price to beat ≤ level)`` [contexts, levels] (``grid_win_curves``)."""
        per_channel = DEVICE_CLASSES * LANDSCAPE_HOURS  # a context is pulled to its channel's curve first
        return grid_win_curves(self.ls_won, self.ls_lost, self.landscape_strength,
                               np.arange(len(self.ls_won)) // per_channel)

    def _landscape_features(self) -> np.ndarray:
        win = self.landscape_win()
        levels = np.arange(self.price_levels) * self.price_step
        reached = win >= 0.5
        p50 = np.where(reached.any(1), np.minimum(1.0, levels[reached.argmax(1)] / 10.0), 1.0)
        at = [np.minimum(round(b / self.price_step), self.price_levels - 1) for b in LANDSCAPE_BIDS_CPM]
        seen = np.minimum(1.0, np.log1p((self.ls_won + self.ls_lost).sum(1)) / _SEEN_NORM)
        feats = np.column_stack([p50, win[:, at], seen])
        return feats.reshape(len(LANDSCAPE_CHANNELS), DEVICE_CLASSES, LANDSCAPE_HOURS, -1)

    def campaign_ctr(self) -> float:
        return float(self._smoothed(self.clicks.sum(), self.impressions.sum(), self.prior_ctr))

    def campaign_cvr(self) -> float:
        return float(self._smoothed(self.conversions.sum(), self.clicks.sum(), self.prior_cvr))

    def ab_ctr(self) -> np.ndarray:
        return self._smoothed(self.ab_clicks, self.ab_impressions, self.campaign_ctr())

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
                                     self.clearing_cpm_usd(), self.ab_ctr() / c_ctr,
                                     self.channel_device_ctr() / (2 * c_ctr), self.channel_device_cvr() / (2 * c_cvr),
                                     self._landscape_features())
        return self._derived

    # --- learning ----------------------------------------------------------------------------
    def observe(self, creative: np.ndarray, variant: np.ndarray, bid: np.ndarray, won: np.ndarray,
                paid_micros: np.ndarray, clicked: np.ndarray, channel: np.ndarray | None = None,
                device: np.ndarray | None = None) -> None:
        """Outcomes of a batch of decisions (arrays of shape [B]; ``bid`` > 0 where a bid was placed)."""
        self._derived = None
        won = won.astype(bool)
        if channel is not None and device is not None:
            hit = won & clicked.astype(bool)
            np.add.at(self.cd_impressions, (channel[won], device[won]), 1.0)
            np.add.at(self.cd_clicks, (channel[hit], device[hit]), 1.0)
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

    def observe_auctions(self, context: np.ndarray, bid_cpm_usd: np.ndarray, won: np.ndarray,
                         price_cpm_usd: np.ndarray) -> None:
        """Auction results [B] for the landscape: a win reveals the price to beat (the price paid,
        at most the bid), a loss only that it was above the bid. Rows without a context (-1:
        organic) or without a bid are skipped.

        :param context: ``landscape_context`` of each auction. :param bid_cpm_usd: the bid sent.
        :param won: bool. :param price_cpm_usd: the price paid where won (ignored where lost).
        """
        self._derived = None
        ctx = np.asarray(context, np.int64)
        bid = np.asarray(bid_cpm_usd, np.float64)
        won = np.asarray(won, bool)
        ok = (ctx >= 0) & (bid > 0) & np.isfinite(bid)
        top = self.price_levels - 1
        price = np.minimum(np.nan_to_num(np.asarray(price_cpm_usd, np.float64)), bid)
        level = np.minimum(np.rint(np.where(won, price, bid) / self.price_step), top).astype(np.int64)
        w, lo = ok & won, ok & ~won
        np.add.at(self.ls_won, (ctx[w], np.maximum(level[w], 0)), 1.0)
        np.add.at(self.ls_lost, (ctx[lo], np.maximum(level[lo], 0)), 1.0)

    def observe_segment_impressions(self, creative: np.ndarray, segment_probs: np.ndarray) -> None:
        """Won impressions [B] with their decisions' segment posteriors [B, K]."""
        np.add.at(self.segment_impressions.T, creative, np.asarray(segment_probs, np.float64))

    def impressions_for(self, segment_probs: np.ndarray) -> np.ndarray:
        """Expected impressions of each creative among people like these [B, C]."""
        return np.asarray(segment_probs, np.float64) @ self.segment_impressions

    def observe_clicks(self, creative: np.ndarray, channel: np.ndarray | None = None,
                       device: np.ndarray | None = None) -> None:
        """Clicks reported after their impression (the stream's separate click records)."""
        self._derived = None
        np.add.at(self.clicks, creative, 1.0)
        if channel is not None and device is not None:
            np.add.at(self.cd_clicks, (channel, device), 1.0)

    def observe_conversions(self, creative: np.ndarray, value_usd: np.ndarray,
                            segment_probs: np.ndarray | None = None, channel: np.ndarray | None = None,
                            device: np.ndarray | None = None) -> None:
        """Credited conversions: their creatives, values and (when known) the credited
        decisions' segment posteriors [B, K], channels and devices."""
        self._derived = None
        np.add.at(self.conversions, creative, 1.0)
        if channel is not None and device is not None:
            np.add.at(self.cd_conversions, (channel, device), 1.0)
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
                     "segment_impressions", "ls_won", "ls_lost", "cd_impressions", "cd_clicks", "cd_conversions"):
            setattr(self, name, getattr(self, name) * self.decay)
        for name in ("bids", "wins", "paid_micros", "value_sum_usd", "value_count"):
            setattr(self, name, getattr(self, name) * self.decay)

    def state(self) -> dict[str, Any]:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()
                if not k.startswith("_")}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CampaignStats:
        keys = STAT_SETTINGS
        out = cls(**{k: state[k] for k in keys if k in state})  # later settings are absent from older checkpoints
        for k, v in state.items():
            if k not in keys:
                setattr(out, k, np.asarray(v, dtype=np.float64) if isinstance(v, list) else v)
        return out
