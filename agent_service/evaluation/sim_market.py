"""The simulators engineer's vectorised engine as a :class:`~agent_service.evaluation.market.Market`.

What a bidder sees of each opportunity is what a bid request would carry and the service
would know (the rules of ``simulators.observation``): time, device type, the channels offered,
the floor, whether the person is logged in on the device (then the journey key is the person,
else the device), and the page category — turned into the *discovered-segment posterior*
``P(segment | category)`` a discovery engine fitted on the traffic would give (Bayes with the
segments' shares and the context signal; the agent's state reads it, nothing else does). Ground
truth (segment, stage, people, true probabilities, competing bids) is read only for evaluation:
the expected value of each play, the creative regret, and the hindsight optimum
(``simulators.hindsight``, myopic values: the benchmark's ceiling).

Conversions are released when their event time comes, keyed to the person as the service would
resolve the converting device (a conversion on a device the person is not logged in on, other
than the one clicked, cannot be joined — as in the stream).
"""

from __future__ import annotations

import numpy as np

from agent_service.evaluation.market import ConversionQueue, Conversions, Opportunities, Plays, Results, Truth
from agent_service.money import MICROS_PER_USD, usd_to_micros
from agent_service.units import DAY_MS, HOUR_MS
from simulators.batches import Actions, EngineConfig, WorldOpportunities, concat
from simulators.calibration import Calibration, load_calibration
from simulators.engine import Engine
from simulators.hindsight import HindsightResult, dual_bound, episode_options, hindsight_optimum

__all__ = ["SimMarket"]

_DEVTYPE_CLASS = {1: 0, 4: 0, 5: 0, 2: 1}


class SimMarket:
    """One lane of :class:`simulators.engine.Engine` behind the harness's market port.

    :param seed: the world's seed. :param budget_usd: daily budget of the campaign.
    :param persons: people in the world. :param opportunities_per_day: traffic volume.
    :param segments: K, the width of the segment posterior the agent's state expects.
    :param cal: calibration (the documented default when None).
    :param record: keep every opportunity for the hindsight optimum.
    """

    def __init__(self, seed: int, budget_usd: float, persons: int = 5_000, opportunities_per_day: float = 20_000.0,
                 segments: int = 8, cal: Calibration | None = None, record: bool = False) -> None:
        self.cal = cal or load_calibration()
        self.engine = Engine(self.cal, EngineConfig(persons=persons, opportunities_per_day=opportunities_per_day,
                                                    seed=seed))
        m = self.engine.model
        self.start_ms = self.engine.cfg.start_ms
        self.slots_per_day = 96
        self.creatives = m.n_creatives
        self.segments = segments
        self.sim_segments = m.k
        if m.k > segments:
            raise ValueError(f"the world has {m.k} segments, the agent's state only {segments}")
        self.budget_usd = budget_usd
        self.best_creative = m.best_creative
        pop = self.engine.pop
        self._n_persons = pop.segment.size
        logged_devices = np.bincount(pop.dev_person[pop.dev_logged], minlength=self._n_persons)
        self._logged_count = np.maximum(1, logged_devices)
        # P(segment | category): shares x (signal on the segment's own category + noise spread evenly)
        ncat = len(self.cal.traffic.categories)
        cs = self.cal.traffic.context_signal
        lik = np.full((ncat, m.k), (1 - cs) / ncat)
        lik[m.seg_category, np.arange(m.k)] += cs
        post = lik * m.seg_share[None, :]
        self._posterior = np.zeros((ncat, segments))
        self._posterior[:, :m.k] = post / post.sum(axis=1, keepdims=True)
        self._raw: WorldOpportunities | None = None
        self._pending = ConversionQueue()
        self.record = record
        self.days: dict[int, list[WorldOpportunities]] = {}

    # ---------------------------------------------------------------- identity as the service sees it
    def _key(self, device: np.ndarray) -> np.ndarray:
        pop = self.engine.pop
        return np.where(pop.dev_logged[device], pop.dev_person[device].astype(np.int64),
                        self._n_persons + device.astype(np.int64))

    # ---------------------------------------------------------------- Market
    def opportunities(self, t0: int, t1: int) -> Opportunities:
        raw = self._raw = self.engine.sample(0, t0, t1)
        if self.record and raw.t.size:
            self.days.setdefault(int((t0 - self.start_ms) // DAY_MS), []).append(raw)
        pop = self.engine.pop
        dev = raw.device
        logged = pop.dev_logged[dev]
        devclass = np.array([_DEVTYPE_CLASS.get(int(d), 2) for d in range(16)])[np.clip(raw.devtype, 0, 15)]
        return Opportunities(
            event_time=raw.t.astype(np.int64), person=self._key(dev), device=dev.astype(np.int64),
            device_class=devclass.astype(np.int64), channel_mask=raw.offered.copy(),
            floor_cpm_usd=raw.floor / 1000.0, segment_probs=self._posterior[raw.category.astype(np.int64)],
            identity_confidence=np.ones(raw.t.size),
            device_count=np.where(logged, self._logged_count[pop.dev_person[dev]], 1).astype(np.int64),
            context=raw.category.astype(np.int64))

    def _check(self, opps: Opportunities) -> WorldOpportunities:
        raw = self._raw
        if raw is None or raw.t.size != len(opps.event_time):
            raise ValueError("resolve/truth must follow the opportunities() call they answer")
        return raw

    def truth(self, opps: Opportunities, channel: np.ndarray) -> Truth:
        raw = self._check(opps)
        e, m = self.engine, self.engine.model
        n, C = raw.t.size, m.n_creatives
        p, t, seg = raw.person, raw.t, raw.segment.astype(np.int64)
        days = (t - e.origin[0]) / DAY_MS
        stage = m.stage_of(e.interest(p, t)).astype(np.int64)
        fatigue = e.fatigue_scaled[p] * np.exp(-days / m.tau_fatigue)[:, None]  # [n, C]
        touches = e.touch_scaled[p] * np.exp(-days / m.tau_touch)
        hour = (t % DAY_MS) // HOUR_MS
        ch = channel.astype(np.int64)
        rep = np.repeat
        pc = m.p_click(rep(ch, C), rep(seg, C), rep(stage, C), np.tile(np.arange(C), n), fatigue.reshape(-1),
                       1).reshape(n, C)
        conv, view = m.p_conv(ch, seg, stage, hour, touches)
        pending = e.conv_until[p] > t
        conv, view = np.where(pending, 0.0, conv), np.where(pending, 0.0, view)
        value = m.expected_value(pc, conv[:, None], view[:, None], seg[:, None])
        price = np.where(ch == 2, np.maximum(raw.comp_social.max(axis=1, initial=0), raw.floor),
                         np.where(ch == 1, np.maximum(raw.comp_search.max(axis=1, initial=0), raw.floor), 0))
        return Truth(value, seg, price / 1000.0)

    def resolve(self, opps: Opportunities, plays: Plays) -> Results:
        raw = self._check(opps)
        k = self.sim_segments
        target = np.where(plays.target < k, plays.target, k).astype(np.int8)
        bid = np.rint(np.asarray(plays.bid_cpm_usd) * 1000).astype(np.int32)  # ticks: 0.001 USD CPM
        acts = Actions(active=plays.take.astype(bool), bid=bid, creative=plays.creative.astype(np.int16),
                       channel=plays.channel.astype(np.int8), target=target)
        out, truth = self.engine.resolve(raw, acts)
        conv = out.conv
        if conv.any():
            self._pending.schedule(self._key(out.conv_device[conv]), out.conv_time[conv], out.conv_value[conv] / MICROS_PER_USD)
        ev = np.where(out.won, truth.expected_value, 0.0)
        return Results(out.won.copy(), out.price / 1000.0, out.click.copy(), out.position.astype(np.int64), ev)

    def conversions(self, t0: int, t1: int) -> Conversions:
        return self._pending.due(t1)

    # ---------------------------------------------------------------- evaluation
    def hindsight_bound(self, day: int, mode: str = "upper") -> float:
        """The LP value of a recorded day by its Lagrangian dual (``simulators.hindsight.dual_bound``):
        in ``upper`` mode no policy can win more expected value on these opportunities."""
        opps = concat(self.days[day])
        return dual_bound(episode_options(self.engine, opps, mode=mode), usd_to_micros(self.budget_usd),
                          organic_cap=self.engine.organic_cap)

    def upper_bound(self, day: int) -> float:
        """USD no policy can win in expectation on this run's opportunities of ``day``."""
        return self.hindsight_bound(day, "upper")

    def hindsight(self, day: int, mode: str = "myopic") -> HindsightResult:
        """The hindsight optimum of a recorded day with this campaign's budget (``simulators.hindsight``)."""
        opps = concat(self.days[day])
        options = episode_options(self.engine, opps, mode=mode)
        return hindsight_optimum(options, usd_to_micros(self.budget_usd), organic_cap=self.engine.organic_cap,
                                 mode=mode)
