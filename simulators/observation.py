"""What the agent may observe in the simulator: the service's state vector, computed the same way.

``BASE_FEATURES`` is, name for name, the state vector the service builds at decision time
(``agent_service.agent.model.opportunity.FEATURES`` as of this writing: time, device, journey, identity,
budget, channels offered, floor, page context), computed here — vectorised — from the same
information the service would have: the request (time, device type, page category, channels,
floor, logged-in user id), the journeys the service would have recorded (its own touches, keyed
by the person for logged-in devices and by the device otherwise, the last 16 within the attribution
window, ``join.window_days``'s default) and the budget ledger. ``EXTRA_FEATURES`` add what an environment episode knows:
budget and time left, the recent win rate and price level of the lane's own bids, and the A/B
arm of the device. Ground truth (segment, stage, person, true probabilities) never enters.

One simplification against the service: a logged-in device's identity link counts from its
first request (the service learns it one slot later, when the link event arrives).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import numpy as np

from agent_service.units import DAY_MS, HOUR_MS, WINDOW_DAYS
from simulators.batches import WorldOpportunities, WorldOutcomes
from simulators.population import Population

__all__ = ["BASE_FEATURES", "EXTRA_FEATURES", "ServiceInputs", "ServiceView", "feature_names"]

BASE_FEATURES: tuple[str, ...] = (
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "device_mobile", "device_desktop", "device_other",
    "touches", "clicks", "recency", "last_organic", "last_paid_search", "last_social",
    "identity_confidence", "device_count", "budget_spent", "day_elapsed", "pace",
    "avail_organic", "avail_paid_search", "avail_social", "floor",
) + tuple(f"context_{i}" for i in range(8))
"""The service's features, in its order (see ``agent_service.agent.model.opportunity``)."""
EXTRA_FEATURES: tuple[str, ...] = ("budget_left", "time_left", "win_rate", "price_level")
"""Environment-only features; followed by ``ab_arm_0..ab_arm_{arms-1}``."""
_MAX_TOUCHES = 16
_WINDOW_MS = int(WINDOW_DAYS * DAY_MS)  # the service's journey window (join.window_days), not the world's
_EMA = 0.02


class ServiceInputs(NamedTuple):
    """Everything the service knows at decision time, per opportunity (n rows) — for agents that
    build their own state vector (e.g. ``agent_service.agent.model.state.build_state``). No ground truth."""

    event_time: np.ndarray
    """int64 ms."""
    device_id: list[str]
    """Device id as in the request (``device.ifa``)."""
    devicetype: np.ndarray
    """int8 AdCOM device type."""
    user_id: list[str | None]
    """Buyer uid when logged in on this device, else None."""
    context: list[str]
    """Page category (``site.cat[0]``)."""
    channels: np.ndarray
    """bool (n, 3) channels offered (organic, paid search, social)."""
    floor_cpm_usd: np.ndarray
    """Floor / reserve, USD CPM."""
    person_key: np.ndarray
    """int64 journey key the service would resolve the device to (person when logged in, else device)."""
    identity_confidence: np.ndarray
    """1.0 (deterministic link, or the device standing for itself)."""
    device_count: np.ndarray
    """Devices known for the person (1 when unlinked)."""
    touch_time: np.ndarray
    """int64 (n, 16) the journey's touches (GAELP's shown ads), oldest first; see ``touch_valid``."""
    touch_channel: np.ndarray
    """int8 (n, 16) channel of each touch."""
    touch_creative: np.ndarray
    """int16 (n, 16) creative of each touch."""
    touch_clicked: np.ndarray
    """bool (n, 16) clicked."""
    touch_valid: np.ndarray
    """bool (n, 16) the slot holds a touch within the attribution window."""
    spent_micros: np.ndarray
    """Spent in the budget period so far."""
    budget_micros: np.ndarray
    """Budget of the period."""
    period_start: np.ndarray
    """Event time the budget period began."""
    ab_arm: np.ndarray
    """A/B arm of the device (``simulators.creatives.ab_arm``)."""


def feature_names(ab_arms: int) -> tuple[str, ...]:
    """Names of the observation's columns."""
    return BASE_FEATURES + EXTRA_FEATURES + tuple(f"ab_arm_{i}" for i in range(ab_arms))


class ServiceView:
    """The service's knowledge of each lane's people, kept beside the engine.

    :param pop: the engine's population.
    :param categories: the calibration's page categories (for the context hash).
    :param ab_arms: A/B arms (one-hot width).
    """

    def __init__(self, pop: Population, categories: tuple[str, ...], ab_arms: int) -> None:
        self.pop = pop
        self.n_dev = pop.dev_person.size
        keys = self.n_dev + pop.segment.size
        self.touch_t = np.full((keys, _MAX_TOUCHES), -(2**62), dtype=np.int64)
        self.touch_ch = np.zeros((keys, _MAX_TOUCHES), dtype=np.int8)
        self.touch_clk = np.zeros((keys, _MAX_TOUCHES), dtype=bool)
        self.touch_cr = np.zeros((keys, _MAX_TOUCHES), dtype=np.int16)
        self.touch_next = np.zeros(keys, dtype=np.int64)
        self.seen = np.zeros(self.n_dev, dtype=bool)
        self.linked = np.zeros(pop.segment.size, dtype=np.int64)
        self.bucket = np.array([zlib.crc32(c.encode()) % 8 for c in categories], dtype=np.int64)
        self.ab_arms = ab_arms
        lanes = pop.lanes
        self.win_rate = np.zeros(lanes)
        self.price_level = np.zeros(lanes)

    def key(self, device: np.ndarray) -> np.ndarray:
        """Journey key the service uses: the person for logged-in devices, else the device."""
        return np.where(self.pop.dev_logged[device], self.n_dev + self.pop.dev_person[device], device)

    def observe(self, opps: WorldOpportunities, spent: np.ndarray, budget: np.ndarray,
                period_start: np.ndarray) -> np.ndarray:
        """Observation rows (float32, (n, F)) for ``opps``; marks their devices as seen.

        :param opps: opportunities (any lanes).
        :param spent: micros spent in the row's budget period, per row.
        :param budget: budget of the period, micros, per row.
        :param period_start: event time the period started, per row.
        """
        n, t, dev = opps.t.size, opps.t, opps.device
        pop = self.pop
        new = ~self.seen[dev] & pop.dev_logged[dev]
        if new.any():
            fresh = np.unique(dev[new])
            np.add.at(self.linked, pop.dev_person[fresh], 1)
        self.seen[dev] = True
        key = self.key(dev)
        tt = self.touch_t[key]
        inwin = (tt >= t[:, None] - _WINDOW_MS) & (tt <= t[:, None])
        touches = inwin.sum(axis=1)
        clicks = (inwin & self.touch_clk[key]).sum(axis=1)
        last_i = np.where(inwin, tt, -(2**62)).argmax(axis=1)
        has = touches > 0
        last_t = tt[np.arange(n), last_i]
        last_ch = np.where(has, self.touch_ch[key, last_i], -1)
        hour = (t % DAY_MS) / HOUR_MS
        dow = ((t // DAY_MS) + 3) % 7
        dt = opps.devtype
        mobile = (dt == 1) | (dt == 4) | (dt == 5)
        desktop = dt == 2
        elapsed = np.clip((t - period_start) / DAY_MS, 0.0, 1.0)
        frac = np.where(budget > 0, spent / np.maximum(budget, 1), 1.0)
        plan = budget * elapsed
        pace = np.where(plan > 0, np.minimum(1.0, spent / np.maximum(plan, 1e-9) / 2), 0.5)
        logged = pop.dev_logged[dev]
        count = np.where(logged, np.maximum(1, self.linked[pop.dev_person[dev]]), 1)
        lane = opps.lane.astype(np.int64)
        out = np.zeros((n, len(BASE_FEATURES) + len(EXTRA_FEATURES) + self.ab_arms), dtype=np.float32)
        cols = [
            np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24),
            np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7),
            mobile, desktop, ~mobile & ~desktop,
            np.log1p(touches) / np.log(32), np.minimum(1.0, np.log1p(clicks) / np.log(8)),
            np.where(has, np.minimum(1.0, (t - last_t) / (336 * HOUR_MS)), 1.0),
            last_ch == 0, last_ch == 1, last_ch == 2,
            np.ones(n), np.minimum(1.0, count / 3), np.minimum(1.0, frac), elapsed, pace,
            opps.offered[:, 0], opps.offered[:, 1], opps.offered[:, 2], np.minimum(1.0, opps.floor / 10_000),
        ]
        for i, col in enumerate(cols):
            out[:, i] = col
        base = len(cols)
        out[np.arange(n), base + self.bucket[opps.category]] = 1.0
        e = len(BASE_FEATURES)
        out[:, e] = np.clip(1.0 - frac, 0.0, 1.0)
        out[:, e + 1] = 1.0 - elapsed
        out[:, e + 2] = self.win_rate[lane]
        out[:, e + 3] = np.minimum(1.0, self.price_level[lane] / 10_000)
        out[np.arange(n), e + len(EXTRA_FEATURES) + opps.arm.astype(np.int64)] = 1.0
        return out

    def inputs(self, opps: WorldOpportunities, spent: np.ndarray, budget: np.ndarray, period_start: np.ndarray,
               categories: tuple[str, ...]) -> ServiceInputs:
        """The service-visible inputs of ``opps`` (call ``observe`` first: it records first sightings).

        :param opps: opportunities.
        :param spent: micros spent in the row's period.
        :param budget: the period's budget, micros.
        :param period_start: event time the period began.
        :param categories: the calibration's page categories.
        """
        pop, dev, t = self.pop, opps.device, opps.t
        key = self.key(dev)
        order = np.argsort(self.touch_t[key], axis=1, kind="stable")
        tt = np.take_along_axis(self.touch_t[key], order, axis=1)
        valid = (tt >= t[:, None] - _WINDOW_MS) & (tt <= t[:, None])
        logged = pop.dev_logged[dev]
        count = np.where(logged, np.maximum(1, self.linked[pop.dev_person[dev]]), 1)
        return ServiceInputs(
            event_time=t, device_id=[pop.device_id(int(d)) for d in dev], devicetype=opps.devtype,
            user_id=[pop.user_id(int(pop.dev_person[d])) if lg else None for d, lg in zip(dev, logged, strict=True)],
            context=[categories[int(c)] for c in opps.category], channels=opps.offered,
            floor_cpm_usd=opps.floor / 1000.0, person_key=key, identity_confidence=np.ones(t.size),
            device_count=count, touch_time=tt, touch_channel=np.take_along_axis(self.touch_ch[key], order, axis=1),
            touch_creative=np.take_along_axis(self.touch_cr[key], order, axis=1),
            touch_clicked=np.take_along_axis(self.touch_clk[key], order, axis=1), touch_valid=valid,
            spent_micros=spent, budget_micros=budget, period_start=period_start, ab_arm=opps.arm)

    def record(self, opps: WorldOpportunities, outcomes: WorldOutcomes, channel: np.ndarray, bid_placed: np.ndarray,
               creative: np.ndarray | None = None) -> None:
        """Remember what the service would: touches of shown ads (with clicks), win rate and prices.

        :param opps: the opportunities just resolved.
        :param outcomes: their outcomes.
        :param channel: channel of each row's action.
        :param bid_placed: rows where a paid bid entered an auction.
        :param creative: creative of each row's action.
        """
        shown = np.flatnonzero(outcomes.won)
        if shown.size:
            key = self.key(opps.device[shown])
            slot = self.touch_next[key] % _MAX_TOUCHES
            self.touch_t[key, slot] = opps.t[shown]
            self.touch_ch[key, slot] = channel[shown]
            self.touch_clk[key, slot] = outcomes.click[shown]
            if creative is not None:
                self.touch_cr[key, slot] = creative[shown]
            self.touch_next[key] += 1  # a key shown twice in one batch keeps one touch (slot-synchronous)
        paid = np.flatnonzero(bid_placed)
        if paid.size:
            lane = opps.lane[paid].astype(np.int64)
            won, price = outcomes.won[paid], outcomes.price[paid].astype(np.float64)
            if np.unique(lane).size == lane.size:  # one row per lane (the environments)
                self.win_rate[lane] += _EMA * (won - self.win_rate[lane])
                w = lane[won]
                self.price_level[w] += _EMA * (price[won] - self.price_level[w])
            else:
                for ln, wi, pr in zip(lane, won, price, strict=True):
                    self.win_rate[ln] += _EMA * (float(wi) - self.win_rate[ln])
                    if wi:
                        self.price_level[ln] += _EMA * (pr - self.price_level[ln])
