"""A small, seeded world for the walking skeleton: people with segments and devices, three
channels, second-price auctions against a competitor price, creatives with per-segment
appeal and fatigue, clicks, and conversions delayed 3–14+ days onto any of the person's devices.

Deliberately simple (the full world lives in the simulators issue); every draw comes from one
``numpy.random.Generator`` seeded by the run, so the same seed gives the same events.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent_service.config import CHANNELS, SimulationConfig
from agent_service.contracts.events import AdEvent, AuctionResult, Conversion, Decision, IdentityLink
from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site, User
from agent_service.money import cpm_to_micros, impression_cost_micros, usd_to_micros
from agent_service.units import DAY_MS, HOUR_MS, WINDOW_DAYS
from simulators.world import WorldEvent

__all__ = ["BasicWorld", "BasicWorldParams"]

_CATEGORIES = ("IAB1", "IAB2", "IAB3", "IAB5", "IAB7", "IAB9", "IAB13", "IAB19")


@dataclass(frozen=True)
class BasicWorldParams:
    segments: int = 4
    """Latent segments of the population."""
    context_signal: float = 0.7
    """Probability that a request's page category is its person's segment's category."""
    base_ctr: tuple[float, float, float] = (0.02, 0.04, 0.015)
    """Click-through rate per channel (organic, paid search, social) for an average creative."""
    affinity_sigma: float = 0.6
    """Spread (log-normal σ) of creative appeal per segment."""
    fatigue: float = 0.85
    """CTR multiplier per earlier impression of the same creative on the same person."""
    cvr: float = 0.05
    """Conversion probability after a click."""
    delay_days: tuple[float, float, float] = (3.0, 2.0, 2.5)
    """Conversion delay: min days + Gamma(shape, scale) days; some land past the window."""
    value_usd: tuple[float, float] = (30.0, 0.4)
    """Conversion value: log-normal with this mean (USD) and σ."""
    competitor_cpm: tuple[float, float, float] = (0.0, 6.0, 4.0)
    """Median competing CPM (USD) per channel (organic has no auction)."""
    competitor_sigma: float = 0.6
    floor_usd: float = 0.5
    """Reserve price (CPM) of paid search and social."""
    organic_reach_per_day: int = 400
    """Organic placements available per day (no cost)."""
    channel_offer: tuple[float, float, float] = (0.2, 0.3, 1.0)
    """Probability that an opportunity offers each channel."""
    login_rate: float = 0.5
    """Share of devices on which the person is logged in (a deterministic identity link)."""
    window_days: float = WINDOW_DAYS
    """The attribution window the conversion log labels by (``in_window``): the service's
    ``join.window_days`` default, so the labels say what a default service can join."""


class BasicWorld:
    """See the module docstring. Implements ``simulators.world.World``."""

    def __init__(self, sim: SimulationConfig, params: BasicWorldParams | None = None,
                 start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00Z
        p = self.p = params or BasicWorldParams()
        self.sim = sim
        self.start_ms = start_ms
        self.creatives = sim.creatives
        rng = self.rng = np.random.default_rng(sim.seed)
        n = sim.users
        self.segment = rng.choice(p.segments, size=n, p=_segment_shares(p.segments))
        self.n_devices = rng.integers(1, 4, size=n)
        self.devicetype = {(i, d): int(rng.choice([4, 2, 5])) for i in range(n) for d in range(self.n_devices[i])}
        self.logged_in = {k: bool(rng.random() < p.login_rate) for k in self.devicetype}
        aff = np.exp(rng.normal(0, p.affinity_sigma, size=(p.segments, sim.creatives)))
        self.affinity = aff / aff.mean(axis=1, keepdims=True)
        self._hour_profile = _hour_profile()
        self._seen_device: set[tuple[int, int]] = set()
        self._exposures: dict[tuple[int, int], int] = defaultdict(int)
        self._pending: list[tuple[int, int, WorldEvent]] = []  # heap of (event time, seq, event)
        self._seq = 0
        self._requests: dict[str, tuple[int, int, int, tuple[str, ...]]] = {}
        self._organic_used: dict[int, int] = defaultdict(int)
        self.conversion_log: list[dict[str, Any]] = []
        """Ground truth per conversion: id, value, in_window, joinable (evaluation only)."""
        self.counts: dict[str, float] = defaultdict(float)
        self.daily: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    # --- ids -------------------------------------------------------------------------------------
    @staticmethod
    def device_id(person: int, d: int) -> str:
        return f"dev-{person}-{d}"

    @staticmethod
    def user_id(person: int) -> str:
        return f"user-{person}"

    def _push(self, t: int, ev: WorldEvent) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (t, self._seq, ev))

    def device_truth(self) -> dict[str, str]:
        """Device id → user id of its true person, for every device seen so far (evaluation only)."""
        return {self.device_id(p, d): self.user_id(p) for p, d in sorted(self._seen_device)}

    # --- World -----------------------------------------------------------------------------------
    def requests(self, t0: int, t1: int) -> list[BidRequest]:
        rng, p = self.rng, self.p
        hour = ((t0 - self.start_ms) % DAY_MS) // HOUR_MS
        expected = self.sim.opportunities_per_day * self._hour_profile[hour] * (t1 - t0) / HOUR_MS
        count = int(rng.poisson(expected))
        times = np.sort(rng.integers(t0, t1, size=count))
        people = rng.integers(0, self.sim.users, size=count)
        out = []
        for k in range(count):
            person, t = int(people[k]), int(times[k])
            d = int(rng.integers(0, self.n_devices[person]))
            if (person, d) not in self._seen_device:
                self._seen_device.add((person, d))
                if self.logged_in[(person, d)]:
                    link = IdentityLink(id=f"link-{person}-{d}", event_time=t, device_id=self.device_id(person, d),
                                        person_id=self.user_id(person), kind="login")
                    self._push(t, WorldEvent("identity_links", link.device_id, link))
            seg = int(self.segment[person])
            cat = _CATEGORIES[seg] if rng.random() < p.context_signal else _CATEGORIES[int(rng.integers(8))]
            offered = tuple(c for c, q in zip(CHANNELS, p.channel_offer, strict=True) if rng.random() < q) or ("social",)
            rid = f"req-{t}-{self._seq}-{k}"
            self._requests[rid] = (person, d, t, offered)
            out.append(BidRequest(
                id=rid, at=2, tmax=120, cur=["USD"],
                imp=[Imp(id="1", bidfloor=p.floor_usd, ext={"gaelp": {"channels": list(offered)}})],
                site=Site(cat=[cat], domain=f"{cat.lower()}.example"),
                device=Device(ifa=self.device_id(person, d), devicetype=self.devicetype[(person, d)]),
                user=User(buyeruid=self.user_id(person) if self.logged_in[(person, d)] else None),
                ext={"gaelp": {"event_time": t}},
            ))
        self.counts["opportunities"] += count
        return out

    def resolve(self, decisions: Sequence[Decision]) -> list[WorldEvent]:
        rng, p = self.rng, self.p
        events: list[WorldEvent] = []
        for dec in decisions:
            meta = self._requests.pop(dec.request_id, None)
            if meta is None:
                continue
            person, d, t, offered = meta
            if not dec.bid or dec.action.channel not in offered:
                continue
            ch = CHANNELS.index(dec.action.channel)
            day = (t - self.start_ms) // DAY_MS
            won, price = self._auction(ch, dec.action.bid_cpm_micros, day)
            t_res = t + 50
            events.append(WorldEvent("auction_results", dec.id, AuctionResult(
                id=f"res-{dec.id}", event_time=t_res, decision_id=dec.id, won=won,
                position=1 if won and dec.action.channel == "paid_search" else None,
                price_paid_micros=impression_cost_micros(price) if won else 0)))
            if not won:
                continue
            cost = impression_cost_micros(price)
            self.counts["impressions"] += 1
            self.daily[day]["impressions"] += 1
            self.daily[day]["cost_micros"] += cost
            events.append(WorldEvent("ad_events", dec.id, AdEvent(
                id=f"imp-{dec.id}", event_time=t_res + 10, decision_id=dec.id, kind="impression")))
            seg = int(self.segment[person])
            creative = min(dec.action.creative, self.sim.creatives - 1)
            seen = self._exposures[(person, creative)]
            self._exposures[(person, creative)] = seen + 1
            ctr = p.base_ctr[ch] * self.affinity[seg, creative] * p.fatigue**seen
            if rng.random() >= min(1.0, ctr):
                continue
            self.counts["clicks"] += 1
            self.daily[day]["clicks"] += 1
            events.append(WorldEvent("ad_events", dec.id, AdEvent(
                id=f"clk-{dec.id}", event_time=t_res + 1_000, decision_id=dec.id, kind="click")))
            if rng.random() < p.cvr:
                self._schedule_conversion(person, d, t_res, dec.id, day)
        return events

    def due(self, t0: int, t1: int) -> list[WorldEvent]:
        out = []
        while self._pending and self._pending[0][0] < t1:
            _, _, ev = heapq.heappop(self._pending)
            out.append(ev)
        return out

    def truth(self) -> dict[str, Any]:
        return {"totals": dict(self.counts),
                "daily": {int(k): dict(v) for k, v in sorted(self.daily.items())}}

    # --- mechanics ----------------------------------------------------------------------------------
    def _auction(self, ch: int, bid_micros: int, day: int) -> tuple[bool, int]:
        """Second price against one competing bid and the floor; organic is a free, capped placement."""
        p, rng = self.p, self.rng
        if CHANNELS[ch] == "organic":
            if self._organic_used[day] >= p.organic_reach_per_day:
                return False, 0
            self._organic_used[day] += 1
            return True, 0
        competitor = cpm_to_micros(p.competitor_cpm[ch] * float(np.exp(rng.normal(0, p.competitor_sigma))))
        floor = cpm_to_micros(p.floor_usd)
        if bid_micros < floor or bid_micros < competitor or (bid_micros == competitor and rng.random() < 0.5):
            return False, 0
        return True, max(competitor, floor)

    def _schedule_conversion(self, person: int, click_device: int, t_click: int, decision_id: str, day: int) -> None:
        p, rng = self.p, self.rng
        lo, shape, scale = p.delay_days
        delay_ms = int((lo + rng.gamma(shape, scale)) * DAY_MS)
        mean, sigma = p.value_usd
        value = usd_to_micros(float(mean * np.exp(rng.normal(-sigma**2 / 2, sigma))))
        d = int(rng.integers(0, self.n_devices[person]))
        t = t_click + delay_ms
        conv = Conversion(id=f"conv-{decision_id}", event_time=t, value_micros=value,
                          user_id=self.user_id(person) if self.logged_in[(person, d)] else None,
                          device_id=self.device_id(person, d))
        in_window = delay_ms <= p.window_days * DAY_MS
        # Joinable without probabilistic matching: same device, or logged in on both devices.
        joinable = d == click_device or (self.logged_in[(person, d)] and self.logged_in[(person, click_device)])
        self.conversion_log.append({"id": conv.id, "decision_id": decision_id, "value_micros": value,
                                    "event_time": t, "in_window": in_window, "joinable": bool(joinable)})
        self.counts["conversions"] += 1
        self.counts["conversions_in_window" if in_window else "conversions_late"] += 1
        self.counts["conversion_value_micros"] += value
        self.daily[day]["conversions"] += 1
        self.daily[day]["conversion_value_micros"] += value
        if in_window:
            self.daily[day]["conversions_in_window"] += 1
        self._push(t, WorldEvent("conversions", conv.id, conv))


def _segment_shares(k: int) -> np.ndarray:
    w = np.arange(k, 0, -1, dtype=float)
    return np.asarray(w / w.sum())


def _hour_profile() -> np.ndarray:
    """Share of a day's traffic per hour (UTC): low at night, peak in the evening."""
    hours = np.arange(24)
    w = 1.0 + 0.8 * np.sin((hours - 14) / 24 * 2 * np.pi)
    return np.asarray(w / w.sum())
