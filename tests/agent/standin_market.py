"""A small, vectorised stand-in market for the agent's tests (the real world is the simulators
engineer's). People in latent segments, three channels, second-price auctions against a
lognormal competing price per channel, creatives with per-segment appeal and fatigue, clicks,
conversions 1-10 days after a click. Implements ``agent_service.evaluation.market.Market``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent_service.evaluation.market import ConversionQueue, Conversions, Opportunities, Plays, Results, Truth
from agent_service.units import DAY_MS


@dataclass(frozen=True)
class StandinParams:
    people: int = 3000
    segments: int = 4
    creatives: int = 8
    opportunities_per_day: int = 4000
    slots_per_day: int = 24
    budget_usd: float = 8.0
    context_signal: float = 0.75
    base_ctr: tuple[float, float, float] = (0.03, 0.04, 0.02)
    affinity_sigma: float = 0.8
    fatigue: float = 0.85
    cvr: float = 0.1
    value_usd: float = 20.0
    competitor_cpm: tuple[float, float, float] = (0.0, 3.0, 2.0)
    competitor_sigma: float = 0.5
    floor_usd: float = 0.5
    channel_offer: tuple[float, float, float] = (0.1, 0.3, 1.0)
    organic_reach_per_day: int = 100


class StandinMarket:
    def __init__(self, seed: int, params: StandinParams | None = None, segments_seen: int = 8) -> None:
        p = self.p = params or StandinParams()
        self.rng = np.random.default_rng(seed)
        self.start_ms = 1_767_225_600_000
        self.slots_per_day = p.slots_per_day
        self.creatives = p.creatives
        self.segments = segments_seen
        self.budget_usd = p.budget_usd
        rng = self.rng
        self.segment = rng.integers(0, p.segments, p.people)
        self.devices = rng.integers(1, 3, p.people)
        aff = np.exp(rng.normal(0, p.affinity_sigma, (p.segments, p.creatives)))
        self.affinity = aff / aff.mean(axis=1, keepdims=True)
        self.best_creative = self.affinity.argmax(axis=1)
        self.exposures = np.zeros((p.people, p.creatives), np.int64)
        self._pending = ConversionQueue()
        self._organic_used: dict[int, int] = {}
        hours = np.arange(24)
        w = 1.0 + 0.6 * np.sin((hours - 14) / 24 * 2 * np.pi)
        self.hour_profile = w / w.sum()
        self._price: np.ndarray | None = None

    def opportunities(self, t0: int, t1: int) -> Opportunities:
        p, rng = self.p, self.rng
        hour = ((t0 - self.start_ms) % DAY_MS) * 24 // DAY_MS
        n = int(rng.poisson(p.opportunities_per_day * self.hour_profile[hour] * (t1 - t0) * 24 / DAY_MS))
        person = rng.integers(0, p.people, n)
        device = person * 4 + rng.integers(0, self.devices[person])
        seg = self.segment[person]
        informative = rng.random(n) < p.context_signal
        cat = np.where(informative, seg, rng.integers(0, p.segments, n))
        # posterior P(segment | category), uniform segment shares, padded to the K the agent sees
        post = np.full((n, p.segments), (1 - p.context_signal) / p.segments)
        post[np.arange(n), cat] += p.context_signal
        probs = np.zeros((n, self.segments))
        probs[:, :p.segments] = post / post.sum(1, keepdims=True)
        mask = rng.random((n, 3)) < np.array(p.channel_offer)
        mask[~mask.any(1), 2] = True
        self._price = np.array(p.competitor_cpm) * np.exp(rng.normal(0, p.competitor_sigma, (n, 3)))
        self._seg = seg
        return Opportunities(np.sort(rng.integers(t0, t1, n)), person, device, (device % 3).astype(np.int64), mask,
                             np.full(n, p.floor_usd), probs, np.ones(n), self.devices[person], cat.astype(np.int64))

    def _ctr(self, person: np.ndarray, channel: np.ndarray, creative: np.ndarray) -> np.ndarray:
        seg = self.segment[person]
        base = np.array(self.p.base_ctr)[channel]
        return base * self.affinity[seg, creative] * self.p.fatigue ** self.exposures[person, creative]

    def truth(self, opps: Opportunities, channel: np.ndarray) -> Truth:
        n, C = len(opps.person), self.creatives
        ctr = self._ctr(np.repeat(opps.person, C), np.repeat(channel, C), np.tile(np.arange(C), n)).reshape(n, C)
        assert self._price is not None
        price = np.where(channel == 0, 0.0, self._price[np.arange(n), channel])
        return Truth(ctr * self.p.cvr * self.p.value_usd, self.segment[opps.person], price)

    def resolve(self, opps: Opportunities, plays: Plays) -> Results:
        p, rng = self.p, self.rng
        n = len(opps.person)
        assert self._price is not None
        price = self._price[np.arange(n), plays.channel]
        paid = plays.take & (plays.channel > 0) & opps.channel_mask[np.arange(n), plays.channel]
        won = paid & (plays.bid_cpm_usd >= np.maximum(price, opps.floor_cpm_usd))
        pay = np.where(won, np.maximum(price, opps.floor_cpm_usd), 0.0)
        day = int((opps.event_time[0] - self.start_ms) // DAY_MS) if n else 0
        organic = plays.take & (plays.channel == 0) & opps.channel_mask[:, 0]
        room = p.organic_reach_per_day - self._organic_used.get(day, 0)
        org_idx = np.flatnonzero(organic)[:max(room, 0)]
        self._organic_used[day] = self._organic_used.get(day, 0) + len(org_idx)
        won = won.copy()
        won[org_idx] = True
        ctr = self._ctr(opps.person, plays.channel, plays.creative)  # before this slot's exposures
        clicked = won & (rng.random(n) < ctr)
        np.add.at(self.exposures, (opps.person[won], plays.creative[won]), 1)
        conv = clicked & (rng.random(n) < p.cvr)
        if conv.any():
            delay = ((1 + rng.gamma(2.0, 1.5, conv.sum())) * DAY_MS).astype(np.int64)
            self._pending.schedule(opps.person[conv], opps.event_time[conv] + delay,
                                   p.value_usd * np.exp(rng.normal(-0.08, 0.4, conv.sum())))
        ev = np.where(won, ctr * p.cvr * p.value_usd, 0.0)
        return Results(won, pay, clicked, np.where(won, 1, 0), ev)

    def conversions(self, t0: int, t1: int) -> Conversions:
        return self._pending.due(t1)
