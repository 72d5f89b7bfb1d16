"""The batched core of the Gymnasium environments: lanes of budget days over the engine.

Each lane is an independent world (``Engine`` lane) stepping one opportunity at a time. An
episode is one budget period: a day, cut into ``slots_per_day`` slots that the engine samples as
the day goes on (so journeys, channel offers and adaptive competitors evolve within the day).
A lane's next episode is the next day of the same world (people keep their journeys); a seeded
reset builds a new world.

Actions per lane: bid (CPM USD; below ``bid_min_usd`` = no ad at all), creative, channel, target
audience. A paid bid is placed only if its worst-case cost (the bid) fits the budget left, as the
service's reservation does; organic placements are free. Episodes end with ``terminated`` when
the budget left cannot pay a minimum bid, ``truncated`` at the end of the day. After a
termination the rest of the day is still sampled (not shown to the agent) so that random streams
stay aligned across policies and the hindsight optimum sees the whole day.

Rewards (``EnvConfig.reward``): ``value`` = the in-window conversion value (USD) this step's ad
caused, credited at this step (the conversion itself lands days later; ``info`` says when);
``expected_value`` = its true expected in-window value (low variance, ground truth used as the
training signal only); ``profit`` = ``value`` minus the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from agent_service.errors import ConfigError
from agent_service.money import MICROS_PER_USD, usd_to_micros
from agent_service.units import DAY_MS
from simulators.auctions import to_ticks
from simulators.batches import Actions, EngineConfig, WorldOpportunities, concat
from simulators.calibration import Calibration, load_calibration
from simulators.engine import Engine
from simulators.hindsight import HindsightResult, episode_options, hindsight_optimum
from simulators.observation import ServiceInputs, ServiceView, feature_names

__all__ = ["REWARDS", "EnvConfig", "EnvCore", "EpisodeSummary"]

REWARDS = ("value", "expected_value", "profit")


@dataclass(frozen=True)
class EnvConfig:
    """Settings of the Gymnasium environments."""

    budget_usd: float = 15.0
    """Budget per episode (a day), USD."""
    persons: int = 5_000
    """People per world."""
    opportunities_per_day: float = 20_000.0
    """Expected opportunities per day."""
    slots_per_day: int = 24
    """Slots the engine samples a day in (channel offers and competitors follow journeys slot by slot)."""
    reward: str = "value"
    """``value``, ``expected_value`` or ``profit`` (see the module docstring)."""
    bid_min_usd: float = 0.50
    """Lowest bid (CPM); a lower action means no ad."""
    bid_max_usd: float = 10.00
    """Highest bid (CPM); higher actions are capped."""
    calibration: str = ""
    """Calibration file ("" = the default)."""
    enforce_targeting: bool = True
    """The target action filters by the platform's audience label."""
    ab_variants: tuple[int, ...] = ()
    """A/B test: creative shown per arm (overrides the creative action); empty = no test."""
    expose_truth: bool = False
    """Put ground truth in ``info`` (evaluation code only; never feed it to a policy)."""
    start_ms: int = 1_767_225_600_000
    """Event time of the first day (2026-01-01, a Thursday)."""

    def __post_init__(self) -> None:
        if self.budget_usd <= 0:
            raise ConfigError("env.budget_usd", "must be > 0")
        if not 0 < self.bid_min_usd < self.bid_max_usd:
            raise ConfigError("env.bid_min_usd", "need 0 < bid_min_usd < bid_max_usd")
        if self.reward not in REWARDS:
            raise ConfigError("env.reward", f"must be one of {REWARDS}")
        if not 1 <= self.slots_per_day <= 24 * 60:
            raise ConfigError("env.slots_per_day", "must be in 1..1440")
        if self.persons <= 0 or self.opportunities_per_day <= 0:
            raise ConfigError("env.persons", "persons and opportunities_per_day must be > 0")


class EpisodeSummary(NamedTuple):
    """A finished episode of one lane (for evaluation)."""

    opportunities: WorldOpportunities
    """Every opportunity of the day (also those after a termination)."""
    spend_micros: int
    impressions: int
    clicks: int
    conversions: int
    value_usd: float
    """Realised in-window conversion value."""
    expected_value_usd: float
    """True expected in-window value of the ads shown (the low-variance score)."""


_FIELDS = WorldOpportunities._fields


class EnvCore:
    """Lanes of budget days (see the module docstring).

    :param cfg: environment settings.
    :param lanes: independent worlds.
    :param cal: calibration (default: ``cfg.calibration``).
    """

    def __init__(self, cfg: EnvConfig, lanes: int, cal: Calibration | None = None) -> None:
        self.cfg = cfg
        self.lanes = lanes
        self.cal = cal or load_calibration(cfg.calibration or None)
        n_creatives = len(self.cal.creatives.appeal[0]) if self.cal.creatives.appeal else self.cal.creatives.count
        if cfg.ab_variants and (len(cfg.ab_variants) != self.cal.creatives.ab_arms
                                or not all(0 <= c < n_creatives for c in cfg.ab_variants)):
            raise ConfigError("env.ab_variants", f"needs {self.cal.creatives.ab_arms} creative ids in 0..{n_creatives - 1}")
        self.n_creatives = n_creatives
        self.n_segments = self.cal.n_segments
        self.feature_names = feature_names(self.cal.creatives.ab_arms)
        self.budget = usd_to_micros(cfg.budget_usd)
        self.bid_min = int(to_ticks(cfg.bid_min_usd))
        self.bid_max = int(to_ticks(cfg.bid_max_usd))
        self._window_share = 1.0
        self.engine: Engine | None = None
        self.last_episode: list[EpisodeSummary | None] = [None] * lanes

    # --- world and days ---------------------------------------------------------------------
    def build(self, seed: int) -> None:
        """A fresh world for every lane, seeded; every lane at its first day."""
        c = self.cfg
        self.engine = e = Engine(self.cal, EngineConfig(
            persons=c.persons, opportunities_per_day=c.opportunities_per_day, lanes=self.lanes, seed=seed,
            start_ms=c.start_ms, enforce_targeting=c.enforce_targeting))
        self._window_share = e.delays.share_within(self.cal.conversion.window_days)
        self.view = ServiceView(e.pop, self.cal.traffic.categories, self.cal.creatives.ab_arms)
        L = self.lanes
        self.day_start = np.full(L, c.start_ms - DAY_MS, dtype=np.int64)
        self.slot = np.zeros(L, dtype=np.int64)
        self.ptr = np.zeros(L, dtype=np.int64)
        self.size = np.zeros(L, dtype=np.int64)
        self.spent = np.zeros(L, dtype=np.int64)
        self.totals = np.zeros((L, 5))  # impressions, clicks, conversions, value, expected value
        self.record: list[list[WorldOpportunities]] = [[] for _ in range(L)]
        self._store: dict[str, np.ndarray] = {}
        self.last_episode = [None] * L

    def start_day(self, lanes: np.ndarray) -> None:
        """Begin the next day (a new episode) on ``lanes``."""
        for ln in lanes:
            self.day_start[ln] += DAY_MS
            self.slot[ln] = 0
            self.spent[ln] = 0
            self.totals[ln] = 0.0
            self.record[ln] = []
            self.ptr[ln] = self.size[ln] = 0
            self._load(int(ln))

    def _load(self, ln: int) -> bool:
        """Sample slots until the lane has a current opportunity; False at the end of the day."""
        assert self.engine is not None
        while self.ptr[ln] >= self.size[ln]:
            if self.slot[ln] >= self.cfg.slots_per_day:
                return False
            s = int(self.slot[ln])
            a = int(self.day_start[ln]) + s * DAY_MS // self.cfg.slots_per_day
            b = int(self.day_start[ln]) + (s + 1) * DAY_MS // self.cfg.slots_per_day
            batch = self.engine.sample(ln, a, b)
            self.slot[ln] += 1
            self.record[ln].append(batch)
            self._write(ln, batch)
        return True

    def _write(self, ln: int, batch: WorldOpportunities) -> None:
        n = batch.t.size
        cap = next(iter(self._store.values())).shape[1] if self._store else 0
        if n > cap:
            new = max(n, 2 * cap, 64)
            for f, col in zip(_FIELDS, batch, strict=True):
                old = self._store.get(f)
                arr = np.zeros((self.lanes, new) + col.shape[1:], dtype=col.dtype)
                if old is not None:
                    arr[:, :cap] = old
                self._store[f] = arr
        for f, col in zip(_FIELDS, batch, strict=True):
            self._store[f][ln, :n] = col
        self.ptr[ln], self.size[ln] = 0, n

    def current(self, lanes: np.ndarray) -> WorldOpportunities:
        """The current opportunity of each lane (one row per lane)."""
        at = self.ptr[lanes]
        return WorldOpportunities(*(self._store[f][lanes, at] for f in _FIELDS))

    def observe(self, lanes: np.ndarray, opps: WorldOpportunities | None = None) -> np.ndarray:
        """Observations of ``lanes`` (their current opportunities unless ``opps`` is given)."""
        rows = self.current(lanes) if opps is None else opps
        return self.view.observe(rows, self.spent[lanes].astype(np.float64), np.full(lanes.size, float(self.budget)),
                                 self.day_start[lanes])

    def service_inputs(self, lanes: np.ndarray) -> ServiceInputs:
        """What the service would know about each lane's current opportunity (for custom state builders)."""
        rows = self.current(lanes)
        return self.view.inputs(rows, self.spent[lanes], np.full(lanes.size, self.budget), self.day_start[lanes],
                                self.cal.traffic.categories)

    # --- stepping ---------------------------------------------------------------------------
    def step(self, lanes: np.ndarray, bid_usd: np.ndarray, creative: np.ndarray, channel: np.ndarray,
             target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """One opportunity on each of ``lanes``; returns (obs, reward, terminated, truncated, info)."""
        assert self.engine is not None
        opps = self.current(lanes)
        n = lanes.size
        ticks = np.minimum(to_ticks(np.nan_to_num(bid_usd, nan=0.0)), self.bid_max)
        channel = np.clip(channel.astype(np.int64), 0, 2).astype(np.int8)
        remaining = self.budget - self.spent[lanes]
        active = (ticks >= self.bid_min) & ((channel == 0) | (ticks <= remaining))
        cr = np.clip(creative.astype(np.int64), 0, self.n_creatives - 1)
        if self.cfg.ab_variants:
            cr = np.asarray(self.cfg.ab_variants, dtype=np.int64)[opps.arm.astype(np.int64)]
        acts = Actions(active=active, bid=ticks.astype(np.int32), creative=cr.astype(np.int16), channel=channel,
                       target=np.clip(target.astype(np.int64), 0, self.n_segments).astype(np.int8))
        out, truth = self.engine.resolve(opps, acts)
        cost = out.price.astype(np.int64)
        self.spent[lanes] += cost
        value = np.where(out.in_window, out.conv_value, 0) / MICROS_PER_USD
        ev = np.where(out.won, truth.expected_value, 0.0) * self._window_share
        if self.cfg.reward == "value":
            reward = value
        elif self.cfg.reward == "expected_value":
            reward = ev
        else:
            reward = value - cost / MICROS_PER_USD
        self.totals[lanes] += np.stack([out.won, out.click, out.conv & out.in_window, value, ev], axis=1)
        self.view.record(opps, out, channel, out.eligible & (channel != 0), cr)
        self.ptr[lanes] += 1
        terminated = self.budget - self.spent[lanes] < self.bid_min
        truncated = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(terminated | (self.ptr[lanes] >= self.size[lanes])):
            ln = int(lanes[i])
            if terminated[i]:
                self._finish_day(ln)
            elif not self._load(ln):
                truncated[i] = True
                self._finish_day(ln)
        done = terminated | truncated
        obs = np.empty((n, len(self.feature_names)), dtype=np.float32)
        if (~done).any():
            obs[~done] = self.observe(lanes[~done])
        if done.any():
            obs[done] = self.observe(lanes[done], _rows(opps, done))
        delay = np.where(out.conv, (out.conv_time - opps.t) / DAY_MS, -1.0)  # -1: no conversion
        info: dict[str, Any] = {
            "won": out.won, "eligible": out.eligible, "cost_usd": cost / MICROS_PER_USD, "click": out.click,
            "position": out.position, "creative_shown": cr, "conversion_value_usd": out.conv_value / MICROS_PER_USD,
            "conversion_delay_days": delay, "in_window": out.in_window, "budget_left_usd": (self.budget - self.spent[lanes]) / MICROS_PER_USD,
            "event_time": opps.t,
        }
        if self.cfg.expose_truth:
            info.update({f"truth_{k}": v for k, v in truth._asdict().items()})
        return obs, reward.astype(np.float64), terminated, truncated, info

    def _finish_day(self, ln: int) -> None:
        while self.slot[ln] < self.cfg.slots_per_day:  # keep streams aligned; the optimum sees the whole day
            self.ptr[ln] = self.size[ln]
            self._load(ln)
        tot = self.totals[ln]
        self.last_episode[ln] = EpisodeSummary(concat(self.record[ln]), int(self.spent[ln]), int(tot[0]), int(tot[1]),
                                               int(tot[2]), float(tot[3]), float(tot[4]))

    def hindsight(self, lane: int = 0, mode: str = "myopic", exact: bool = False) -> HindsightResult:
        """Hindsight optimum of ``lane``'s last finished episode with the same budget (see ``simulators.hindsight``)."""
        ep = self.last_episode[lane]
        if ep is None or self.engine is None:
            raise RuntimeError("no finished episode on this lane yet")
        opts = episode_options(self.engine, ep.opportunities, mode)
        opts = opts._replace(values=opts.values * self._window_share)
        return hindsight_optimum(opts, self.budget, self.engine.organic_cap, exact=exact, mode=mode)


def _rows(opps: WorldOpportunities, mask: np.ndarray) -> WorldOpportunities:
    return WorldOpportunities(*(a[mask] for a in opps))
