"""The calibration: every number the simulated world is made of, as typed, frozen sections.

A calibration is one TOML file (``default.toml`` beside this module is the documented default;
the discovery engine writes the same format from GA4 exports). Each section below is a frozen
dataclass whose fields carry a one-line docstring; ``__post_init__`` rejects bad values with a
:class:`~agent_service.errors.ConfigError` naming the key (the loader prefixes the section path,
e.g. ``segments[2].share``). Nothing in the engine is a behavioural constant: if the world does
something, a field here says how much.

Units: money in USD (CPM prices are USD per thousand impressions), times in days or hours,
probabilities in [0, 1], CTR effects on the logit scale where stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agent_service.errors import ConfigError
from agent_service.units import WINDOW_DAYS

__all__ = [
    "AUCTIONS",
    "DELAY_FAMILIES",
    "STAGES",
    "Calibration",
    "ChannelCal",
    "ChannelsCal",
    "CompetitorsCal",
    "ConversionCal",
    "CreativesCal",
    "DelayCal",
    "DelayComponent",
    "JourneyCal",
    "MetaCal",
    "PopulationCal",
    "SegmentCal",
    "TargetingCal",
    "TrafficCal",
]

STAGES: tuple[str, ...] = ("awareness", "consideration", "decision")
"""Journey stages, in order; per-stage tuples in the calibration follow this order."""
AUCTIONS: tuple[str, ...] = ("none", "second_price", "first_price", "gsp")
"""Auction mechanisms a channel may use (``none``: organic placement, no cost)."""
DELAY_FAMILIES: tuple[str, ...] = ("exponential", "gamma", "lognormal")
"""Families of the conversion-delay mixture components."""


def _req(cond: bool, key: str, reason: str) -> None:
    if not cond:
        raise ConfigError(key, reason)


def _prob(x: float) -> bool:
    return 0.0 <= x <= 1.0


def _profile(values: tuple[float, ...], n: int, key: str, allow_empty: bool = True) -> None:
    if allow_empty and not values:
        return
    _req(len(values) == n, key, f"needs {n} values, got {len(values)}")
    _req(all(math.isfinite(v) and v >= 0 for v in values) and sum(values) > 0, key,
         "values must be finite, >= 0 and not all 0")


@dataclass(frozen=True)
class MetaCal:
    name: str = "default"
    """Short name of this calibration (reports quote it)."""
    version: int = 1
    """Format version of the file (this loader reads version 1)."""
    source: str = ""
    """Where the numbers come from (a GA4 export, a paper, hand-set), for the record."""

    def __post_init__(self) -> None:
        _req(self.version == 1, "version", "this loader reads calibration format version 1")


@dataclass(frozen=True)
class PopulationCal:
    devices_per_person: tuple[float, ...] = (0.45, 0.35, 0.20)
    """P(1 device), P(2), P(3): the cross-device problem's shape."""
    device_types: tuple[int, ...] = (4, 2, 5)
    """OpenRTB/AdCOM device types in the population (4 phone, 2 PC, 5 tablet)."""
    device_type_shares: tuple[float, ...] = (0.55, 0.35, 0.10)
    """Share of devices of each type in ``device_types``."""
    login_rate: float = 0.5
    """Probability that a person is logged in on a given device (a deterministic identity link)."""
    activity_sigma: float = 0.8
    """Log-normal spread of per-person activity (how unequal people's share of traffic is)."""
    probabilistic_link_rate: float = 0.3
    """Share of not-logged-in devices that get a probabilistic identity link when first seen."""
    probabilistic_precision: float = 0.8
    """Share of probabilistic links that name the right person (the others name someone else)."""
    true_link_score: float = 0.92
    """Mean score of a right probabilistic link."""
    false_link_score: float = 0.75
    """Mean score of a wrong probabilistic link."""
    link_score_sd: float = 0.06
    """Spread of link scores (normal, clipped to [0, 1])."""

    def __post_init__(self) -> None:
        _req(len(self.devices_per_person) == 3 and abs(sum(self.devices_per_person) - 1) < 1e-6
             and all(_prob(p) for p in self.devices_per_person), "devices_per_person",
             "needs 3 probabilities (1, 2, 3 devices) that sum to 1")
        _req(len(self.device_types) > 0 and len(self.device_types) == len(self.device_type_shares),
             "device_type_shares", "needs one share per entry of device_types")
        _req(all(s >= 0 for s in self.device_type_shares) and sum(self.device_type_shares) > 0,
             "device_type_shares", "shares must be >= 0 and not all 0")
        _req(_prob(self.login_rate), "login_rate", "must be a probability in [0, 1]")
        _req(0 <= self.activity_sigma <= 3, "activity_sigma", "must be in [0, 3]")
        for name in ("probabilistic_link_rate", "probabilistic_precision", "true_link_score", "false_link_score"):
            _req(_prob(getattr(self, name)), name, "must be in [0, 1]")
        _req(self.link_score_sd >= 0, "link_score_sd", "must be >= 0")


@dataclass(frozen=True)
class TrafficCal:
    hourly: tuple[float, ...] = (1.0,) * 24
    """Relative traffic per hour of day (24 values, normalised by the loader's user)."""
    daily: tuple[float, ...] = (1.0,) * 7
    """Relative traffic per weekday, Monday first (7 values)."""
    categories: tuple[str, ...] = ("IAB1", "IAB5", "IAB7", "IAB13")
    """Page categories (IAB) that requests carry; each segment names its usual one."""
    context_signal: float = 0.7
    """Probability that a request's page category is its person's segment's category."""
    floor_cpm: float = 0.5
    """Median bid floor / reserve (CPM, USD) of a request."""
    floor_sigma: float = 0.3
    """Log-normal spread of floors across publishers."""

    def __post_init__(self) -> None:
        _profile(self.hourly, 24, "hourly", allow_empty=False)
        _profile(self.daily, 7, "daily", allow_empty=False)
        _req(len(self.categories) > 0, "categories", "needs at least one page category")
        _req(_prob(self.context_signal), "context_signal", "must be a probability in [0, 1]")
        _req(0 < self.floor_cpm <= 100, "floor_cpm", "must be in (0, 100] USD CPM")
        _req(0 <= self.floor_sigma <= 3, "floor_sigma", "must be in [0, 3]")


@dataclass(frozen=True)
class SegmentCal:
    name: str = "segment"
    """Name of the (discovered) segment; ground truth only, never shown to the agent."""
    share: float = 0.25
    """Share of the population in this segment."""
    category: str = "IAB1"
    """Its usual page category (one of ``traffic.categories``): the agent's noisy hint of it."""
    hourly: tuple[float, ...] = ()
    """Activity multiplier per hour of day (24 values; empty = flat)."""
    interest_mean: float = 1.0
    """Mean of the people's baseline purchase interest (the journey latent; see ``journey``)."""
    interest_sd: float = 0.4
    """Spread of baseline interest across people of the segment."""
    value_usd: float = 40.0
    """Mean conversion value (USD)."""
    value_sigma: float = 0.5
    """Log-normal spread of conversion value."""
    ctr_logit: float = 0.0
    """Segment's click propensity, added to every CTR logit."""
    cvr_mult: float = 1.0
    """Multiplier on conversion probabilities."""

    def __post_init__(self) -> None:
        _req(bool(self.name), "name", "must be a non-empty string")
        _req(0 < self.share <= 1, "share", "must be in (0, 1]")
        _profile(self.hourly, 24, "hourly")
        _req(self.interest_sd >= 0, "interest_sd", "must be >= 0")
        _req(self.value_usd > 0, "value_usd", "must be > 0 USD")
        _req(0 <= self.value_sigma <= 3, "value_sigma", "must be in [0, 3]")
        _req(self.cvr_mult >= 0, "cvr_mult", "must be >= 0")


@dataclass(frozen=True)
class JourneyCal:
    thresholds: tuple[float, ...] = (1.0, 2.0)
    """Interest at which a person enters consideration, then decision."""
    decay_days: float = 4.0
    """Time constant with which interest relaxes to the person's baseline without exposures."""
    impression_gain: float = 0.08
    """Interest added by an impression of an average-appeal creative."""
    click_gain: float = 0.5
    """Extra interest added by a click."""
    appeal_weight: float = 1.0
    """How much creative appeal scales the gain: gain · exp(appeal_weight · appeal)."""
    post_conversion: float = 0.0
    """Interest right after a conversion (it relaxes back to baseline)."""
    stage_ctr_logit: tuple[float, ...] = (-0.3, 0.0, 0.4)
    """CTR logit shift per stage."""
    initial_spread: float = 0.5
    """Spread of the starting interest around the baseline (people are mid-journey at t=0)."""

    def __post_init__(self) -> None:
        _req(len(self.thresholds) == 2 and self.thresholds[0] < self.thresholds[1], "thresholds",
             "needs two increasing values (consideration, decision)")
        _req(self.decay_days > 0, "decay_days", "must be > 0 days")
        _req(self.impression_gain >= 0 and self.click_gain >= 0, "impression_gain", "gains must be >= 0")
        _req(len(self.stage_ctr_logit) == 3, "stage_ctr_logit", "needs one value per stage (3)")
        _req(self.initial_spread >= 0, "initial_spread", "must be >= 0")


@dataclass(frozen=True)
class ChannelCal:
    offer_by_stage: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Probability that an opportunity offers this channel, per journey stage of the person."""
    base_ctr: float = 0.01
    """CTR of an average creative at the top position for an average person."""
    cvr_click_by_stage: tuple[float, ...] = (0.004, 0.015, 0.05)
    """Conversion probability after a click, per stage (before touch lift and hour)."""
    cvr_view_by_stage: tuple[float, ...] = (0.0, 0.0, 0.0)
    """View-through conversion probability of an unclicked impression, per stage."""
    auction: str = "second_price"
    """``none`` (organic), ``second_price``, ``first_price`` or ``gsp`` (positions)."""
    positions: int = 1
    """Ad slots of a positional (gsp) auction, 1-10."""
    position_ctr: tuple[float, ...] = (1.0,)
    """CTR multiplier per position (first = top); one value per position."""
    competitors: int = 5
    """Competing bidders per auction."""
    competitor_cpm: float = 2.0
    """Median competing bid (CPM, USD)."""
    competitor_sigma: float = 0.6
    """Log-normal spread of competing bids."""
    competitor_hourly: tuple[float, ...] = ()
    """Multiplier of competing bids per hour of day (24 values; empty = flat)."""
    reach_share: float = 0.0
    """Organic only: placements per day as a share of the day's expected opportunities."""

    def __post_init__(self) -> None:
        for name in ("offer_by_stage", "cvr_click_by_stage", "cvr_view_by_stage"):
            vals = getattr(self, name)
            _req(len(vals) == 3 and all(_prob(v) for v in vals), name, "needs 3 probabilities (one per stage)")
        _req(0 < self.base_ctr < 1, "base_ctr", "must be in (0, 1)")
        _req(self.auction in AUCTIONS, "auction", f"must be one of {AUCTIONS}")
        _req(1 <= self.positions <= 10, "positions", "must be in 1..10")
        _req(self.auction == "gsp" or self.positions == 1, "positions", "only a gsp auction has several positions")
        _req(len(self.position_ctr) == self.positions and all(0 < v <= 1 for v in self.position_ctr),
             "position_ctr", f"needs {self.positions} multipliers in (0, 1]")
        _req(self.auction == "none" or self.competitors >= 1, "competitors", "an auction needs >= 1 competitor")
        _req(0 <= self.competitors <= 30, "competitors", "must be in 0..30")
        _req(self.competitor_cpm > 0, "competitor_cpm", "must be > 0 USD")
        _req(0 <= self.competitor_sigma <= 3, "competitor_sigma", "must be in [0, 3]")
        _profile(self.competitor_hourly, 24, "competitor_hourly")
        _req(0 <= self.reach_share <= 1, "reach_share", "must be in [0, 1]")
        _req(self.auction == "none" or self.reach_share == 0, "reach_share", "only organic (auction none) has a reach cap")


@dataclass(frozen=True)
class ChannelsCal:
    organic: ChannelCal = field(default_factory=lambda: ChannelCal(auction="none", competitors=0, reach_share=0.02))
    """Organic placements: no auction, no cost, limited reach."""
    paid_search: ChannelCal = field(default_factory=lambda: ChannelCal(auction="gsp", positions=1))
    """Paid search: generalised second price over positions."""
    social: ChannelCal = field(default_factory=ChannelCal)
    """Social / display: single-slot second (or first) price."""


@dataclass(frozen=True)
class ConversionCal:
    touch_lift: float = 0.6
    """Conversion probability multiplier 1 + lift·(1 − exp(−touches/touch_scale)): earlier touches help."""
    touch_scale: float = 3.0
    """Touches over which the lift saturates."""
    hourly: tuple[float, ...] = ()
    """Conversion propensity multiplier per hour of day of the touch (24 values; empty = flat)."""
    window_days: float = WINDOW_DAYS
    """Attribution window; conversions later than this after their touch are lost (counted, not hidden).
    The world's own parameter (the platform's window, read from the calibration file); its default
    is the service's ``join.window_days`` default, so the two agree unless a calibration says not."""

    def __post_init__(self) -> None:
        _req(self.touch_lift >= 0, "touch_lift", "must be >= 0")
        _req(self.touch_scale > 0, "touch_scale", "must be > 0")
        _profile(self.hourly, 24, "hourly")
        _req(self.window_days > 0, "window_days", "must be > 0 days")


@dataclass(frozen=True)
class DelayComponent:
    family: str = "gamma"
    """``exponential`` (scale), ``gamma`` (shape, scale) or ``lognormal`` (median = scale, sigma)."""
    weight: float = 1.0
    """Mixture weight (weights are normalised)."""
    shift_days: float = 0.0
    """Minimum delay of this component, days."""
    scale_days: float = 3.0
    """Scale (exponential mean, gamma scale, log-normal median), days."""
    shape: float = 2.0
    """Gamma shape."""
    sigma: float = 0.5
    """Log-normal sigma."""

    def __post_init__(self) -> None:
        _req(self.family in DELAY_FAMILIES, "family", f"must be one of {DELAY_FAMILIES}")
        _req(self.weight > 0, "weight", "must be > 0")
        _req(self.shift_days >= 0, "shift_days", "must be >= 0 days")
        _req(self.scale_days > 0, "scale_days", "must be > 0 days")
        _req(self.shape > 0, "shape", "must be > 0")
        _req(self.sigma > 0, "sigma", "must be > 0")


@dataclass(frozen=True)
class DelayCal:
    components: tuple[DelayComponent, ...] = (DelayComponent(),)
    """Mixture of delay distributions from touch to conversion."""

    def __post_init__(self) -> None:
        _req(len(self.components) > 0, "components", "needs at least one delay component")


@dataclass(frozen=True)
class CreativesCal:
    count: int = 60
    """Creative variants (the agent picks among them)."""
    dims: int = 4
    """Dimensions of the latent creative/segment taste space (RecSim-style topic vectors)."""
    appeal_scale: float = 0.8
    """Logit CTR effect of a perfect segment × creative match (cosine 1)."""
    quality_sigma: float = 0.25
    """Spread of a creative's own quality (logit), the same for every segment."""
    fatigue_logit: float = 0.35
    """CTR logit penalty per effective earlier exposure of the same creative to the same person."""
    fatigue_decay_days: float = 3.0
    """Time constant with which exposures stop counting."""
    seed: int = 7
    """Seed of the generator (the creative set is part of the calibration, not of the run)."""
    ab_arms: int = 2
    """Arms of the A/B assignment hash (visible to the agent as a one-hot)."""
    appeal: tuple[tuple[float, ...], ...] = ()
    """Explicit segment × creative appeal (logit) from data; overrides the generator when given."""

    def __post_init__(self) -> None:
        _req(1 <= self.count <= 10_000, "count", "must be in 1..10000")
        _req(1 <= self.dims <= 64, "dims", "must be in 1..64")
        _req(self.appeal_scale >= 0 and self.quality_sigma >= 0, "appeal_scale", "must be >= 0")
        _req(self.fatigue_logit >= 0, "fatigue_logit", "must be >= 0")
        _req(self.fatigue_decay_days > 0, "fatigue_decay_days", "must be > 0 days")
        _req(1 <= self.ab_arms <= 16, "ab_arms", "must be in 1..16")
        _req(all(len(row) == self.count for row in self.appeal), "appeal", f"each row needs {self.count} values")


@dataclass(frozen=True)
class CompetitorsCal:
    adaptive: bool = False
    """Competitors adjust a bid multiplier each slot toward a target win rate (AuctionGym-style learners)."""
    adapt_rate: float = 0.1
    """Step of the multiplicative update per slot."""
    target_win_rate: float = 0.2
    """Win rate each adaptive competitor aims for."""
    max_mult: float = 3.0
    """Bound on an adaptive competitor's multiplier (and 1/max_mult below)."""

    def __post_init__(self) -> None:
        _req(self.adapt_rate >= 0, "adapt_rate", "must be >= 0")
        _req(0 < self.target_win_rate < 1, "target_win_rate", "must be in (0, 1)")
        _req(self.max_mult >= 1, "max_mult", "must be >= 1")


@dataclass(frozen=True)
class TargetingCal:
    audience_accuracy: float = 0.75
    """Probability that the platform's audience label of a person is their true segment."""

    def __post_init__(self) -> None:
        _req(_prob(self.audience_accuracy), "audience_accuracy", "must be a probability in [0, 1]")


@dataclass(frozen=True)
class Calibration:
    meta: MetaCal = field(default_factory=MetaCal)
    """Name, format version and provenance."""
    population: PopulationCal = field(default_factory=PopulationCal)
    """Devices and logins per person, activity spread."""
    traffic: TrafficCal = field(default_factory=TrafficCal)
    """When and where opportunities arrive."""
    segments: tuple[SegmentCal, ...] = (SegmentCal(),)
    """The latent segments (shares are normalised)."""
    journey: JourneyCal = field(default_factory=JourneyCal)
    """Awareness → consideration → decision dynamics."""
    channels: ChannelsCal = field(default_factory=ChannelsCal)
    """Organic, paid search, social."""
    conversion: ConversionCal = field(default_factory=ConversionCal)
    """Conversion propensity beyond the per-channel, per-stage rates."""
    delay: DelayCal = field(default_factory=DelayCal)
    """Touch-to-conversion delay distribution."""
    creatives: CreativesCal = field(default_factory=CreativesCal)
    """Creative appeal generator, fatigue, A/B arms."""
    competitors: CompetitorsCal = field(default_factory=CompetitorsCal)
    """Competitor behaviour beyond the per-channel landscape."""
    targeting: TargetingCal = field(default_factory=TargetingCal)
    """Audience targeting precision."""

    def __post_init__(self) -> None:
        _req(1 <= len(self.segments) <= 64, "segments", "needs 1..64 segments")
        for i, s in enumerate(self.segments):
            _req(s.category in self.traffic.categories, f"segments[{i}].category",
                 f"{s.category!r} is not in traffic.categories")
        _req(len({s.name for s in self.segments}) == len(self.segments), "segments", "segment names must be unique")
        _req(not self.creatives.appeal or len(self.creatives.appeal) == len(self.segments), "creatives.appeal",
             "needs one row per segment")

    @property
    def n_segments(self) -> int:
        """Number of latent segments."""
        return len(self.segments)
