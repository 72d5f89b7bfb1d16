"""``GaelpWorld``: the calibrated world as a stream of wire contracts in event time.

Implements ``simulators.world.World`` for the stream driver (``gaelp simulate``, ``gaelp
feed``) on the same engine the environments train on, so the two agree: ``requests`` samples a
slot of opportunities and writes each as an OpenRTB ``BidRequest`` (device id, device type,
buyer uid when logged in, page category, floor, ``imp.ext.gaelp.channels`` and
``ext.gaelp.event_time``); ``resolve`` turns GAELP's decisions into engine actions, runs the
slot and emits ``AuctionResult`` (+50 ms), impression ``AdEvent`` (+60 ms) and click ``AdEvent``
(+1 s); conversions and identity links wait in a heap until ``due`` reaches their event time.
A device seen for the first time gets a ``login`` link when its person is logged in on it, or
(``population.probabilistic_link_rate``) a scored ``probabilistic`` link that may name the wrong
person (``probabilistic_precision``): the cross-device problem the service's identity graph
must solve.

Ground truth stays beside the events, for evaluation only: ``truth_log`` (per decision: person,
segment, stage, true click/conversion probabilities, expected value), ``conversion_log`` (per
conversion: id, decision_id, value_micros, event_time, in_window, joinable), ``counts``,
``daily``, ``link_log``, ``truth()`` and ``device_truth()`` (device → true person).
``joinable`` in the conversion log means joinable without
probabilistic matching (same device, or logged in on both). Conversions later than the window are emitted like any other (the
join counts them as late) and counted as ``conversions_late``.

The service's ``Action.segment`` is not yet a real target, so targeting is off here by default.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent_service.config import CHANNELS, SimulationConfig
from agent_service.contracts.events import AdEvent, AuctionResult, Conversion, Decision, IdentityLink
from agent_service.contracts.openrtb import BidRequest, Device, Imp, Site, User
from agent_service.money import usd_to_micros
from agent_service.units import DAY_MS
from simulators.batches import Actions, EngineConfig, WorldOpportunities, concat
from simulators.calibration import Calibration, load_calibration
from simulators.engine import Engine
from simulators.hindsight import HindsightResult, episode_options, hindsight_optimum
from simulators.world import WorldEvent

__all__ = ["GaelpWorld"]


class GaelpWorld:
    """See the module docstring.

    :param sim: run settings (seed, people, opportunities per day).
    :param calibration: the calibration (default: ``sim.calibration`` or the default file).
    :param start_ms: event time of the first slot (2026-01-01T00:00Z).
    :param enforce_targeting: apply ``Action.segment`` as an audience filter.
    """

    def __init__(self, sim: SimulationConfig, calibration: Calibration | None = None,
                 start_ms: int = 1_767_225_600_000, enforce_targeting: bool = False) -> None:
        self.sim = sim
        self.cal = calibration or load_calibration(getattr(sim, "calibration", "") or None)
        self.start_ms = start_ms
        self.engine = Engine(self.cal, EngineConfig(
            persons=sim.users, opportunities_per_day=float(sim.opportunities_per_day), lanes=1, seed=sim.seed,
            start_ms=start_ms, enforce_targeting=enforce_targeting))
        self.creatives = self.engine.model.n_creatives
        pop = self.engine.pop
        self._dev_ids = [pop.device_id(d) for d in range(pop.dev_person.size)]
        self._seen = np.zeros(pop.dev_person.size, dtype=bool)
        self._batch: WorldOpportunities | None = None
        self._rows: dict[str, int] = {}
        self._pending: list[tuple[int, int, WorldEvent]] = []
        self._seq = 0
        self._n_requests = 0
        self.batches: list[WorldOpportunities] = []
        """Every slot's opportunities (for the hindsight optimum)."""
        self.conversion_log: list[dict[str, Any]] = []
        """Per conversion: id, decision_id, value_micros, event_time, in_window, joinable (evaluation only)."""
        self.link_log: list[dict[str, Any]] = []
        """Per probabilistic identity link: id, device, true person, named person, right, score (evaluation only)."""
        self._id_rng = np.random.default_rng(np.random.SeedSequence([sim.seed, 0x1D]))
        self.truth_log: dict[str, dict[str, Any]] = {}
        """Per decision that reached an auction: ground truth (evaluation only)."""
        self.counts: dict[str, float] = defaultdict(float)
        self.daily: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def _push(self, t: int, ev: WorldEvent) -> None:
        self._seq += 1
        heapq.heappush(self._pending, (t, self._seq, ev))

    # --- World -------------------------------------------------------------------------------
    def requests(self, t0: int, t1: int) -> list[BidRequest]:
        """The slot's bid requests, in time order (and identity links of first-seen logged-in devices)."""
        opps = self.engine.sample(0, t0, t1)
        self._batch = opps
        self.batches.append(opps)
        self._rows = {}
        cats = self.cal.traffic.categories
        pop = self.engine.pop
        out = []
        for k in range(opps.t.size):
            t, dev = int(opps.t[k]), int(opps.device[k])
            person = int(opps.person[k])
            logged = bool(opps.logged[k])
            if not self._seen[dev]:
                self._seen[dev] = True
                self._link(dev, person, logged, t)
            rid = f"req-{self._n_requests + k}"
            self._rows[rid] = k
            cat = cats[int(opps.category[k])]
            chans = [c for c, on in zip(CHANNELS, opps.offered[k], strict=True) if on]
            out.append(BidRequest(
                id=rid, at=2, tmax=120, cur=["USD"],
                imp=[Imp(id="1", bidfloor=int(opps.floor[k]) / 1000, ext={"gaelp": {"channels": chans}})],
                site=Site(cat=[cat], domain=f"{cat.lower()}.example"),
                device=Device(ifa=self._dev_ids[dev], devicetype=int(opps.devtype[k])),
                user=User(buyeruid=pop.user_id(person) if logged else None),
                ext={"gaelp": {"event_time": t}},
            ))
        self._n_requests += opps.t.size
        self.counts["opportunities"] += opps.t.size
        return out

    def _link(self, dev: int, person: int, logged: bool, t: int) -> None:
        """Identity link of a device seen for the first time: login (exact) or probabilistic (scored, maybe wrong)."""
        pop, c = self.engine.pop, self.cal.population
        if logged:
            link = IdentityLink(id=f"link-{self._dev_ids[dev]}", event_time=t, device_id=self._dev_ids[dev],
                                person_id=pop.user_id(person), kind="login")
        else:
            u = self._id_rng.random(3)
            if u[0] >= c.probabilistic_link_rate:
                return
            right = bool(u[1] < c.probabilistic_precision) or pop.persons == 1
            lane = person // pop.persons
            other = lane * pop.persons + (person % pop.persons + 1 + int(u[2] * (pop.persons - 1))) % pop.persons
            named = person if right else other
            mean = c.true_link_score if right else c.false_link_score
            score = float(np.clip(mean + c.link_score_sd * self._id_rng.standard_normal(), 0.0, 1.0))
            link = IdentityLink(id=f"plink-{self._dev_ids[dev]}", event_time=t, device_id=self._dev_ids[dev],
                                person_id=pop.user_id(named), kind="probabilistic", score=score)
            self.link_log.append({"id": link.id, "device": self._dev_ids[dev], "person": pop.user_id(person),
                                  "named": link.person_id, "right": right, "score": score})
        self.counts[f"identity_links_{link.kind}"] += 1
        self._push(t, WorldEvent("identity_links", link.device_id, link))

    def resolve(self, decisions: Sequence[Decision]) -> list[WorldEvent]:
        """Auctions, impressions and clicks for GAELP's decisions on the last ``requests`` slot."""
        opps = self._batch
        if opps is None:
            return []
        n = opps.t.size
        k_all = self.cal.n_segments
        active = np.zeros(n, dtype=bool)
        bid = np.zeros(n, dtype=np.int32)
        creative = np.zeros(n, dtype=np.int16)
        channel = np.full(n, 2, dtype=np.int8)
        target = np.full(n, k_all, dtype=np.int8)
        rows: dict[int, Decision] = {}
        for dec in decisions:
            k = self._rows.pop(dec.request_id, None)
            if k is None or not dec.bid or dec.action.channel not in CHANNELS:
                continue
            rows[k] = dec
            ch = CHANNELS.index(dec.action.channel)
            channel[k] = ch
            bid[k] = dec.action.bid_cpm_micros // 1000
            active[k] = ch == 0 or bid[k] > 0
            creative[k] = min(dec.action.creative, self.creatives - 1)
            target[k] = min(dec.action.segment, k_all)
        out, truth = self.engine.resolve(opps, Actions(active, bid, creative, channel, target))
        self._batch = None
        events: list[WorldEvent] = []
        for k, dec in sorted(rows.items()):
            t = int(opps.t[k])
            day = (t - self.start_ms) // DAY_MS
            won = bool(out.won[k])
            paid = int(out.price[k])
            events.append(WorldEvent("auction_results", dec.id, AuctionResult(
                id=f"res-{dec.id}", event_time=t + 50, decision_id=dec.id, won=won,
                position=int(out.position[k]) if won and channel[k] == 1 else None,
                price_paid_micros=paid)))
            if not out.eligible[k]:
                continue
            self.truth_log[dec.id] = {name: col[k].item() for name, col in truth._asdict().items()}
            if not won:
                continue
            # Ground truth of what was bought: its expected conversion value (evaluation only).
            self._count(day, impressions=1, cost_micros=paid,
                        expected_value_micros=usd_to_micros(float(truth.expected_value[k])))
            events.append(WorldEvent("ad_events", dec.id, AdEvent(
                id=f"imp-{dec.id}", event_time=t + 60, decision_id=dec.id, kind="impression")))
            if out.click[k]:
                self._count(day, clicks=1)
                events.append(WorldEvent("ad_events", dec.id, AdEvent(
                    id=f"clk-{dec.id}", event_time=t + 1_050, decision_id=dec.id, kind="click")))
            if out.conv[k]:
                self._conversion(opps, out, k, dec.id, day)
        return events

    def _conversion(self, opps: WorldOpportunities, out: Any, k: int, decision_id: str, day: int) -> None:
        pop = self.engine.pop
        dev, touch_dev = int(out.conv_device[k]), int(opps.device[k])
        person, t = int(opps.person[k]), int(out.conv_time[k])
        value = int(out.conv_value[k])
        conv = Conversion(id=f"conv-{decision_id}", event_time=t, value_micros=value,
                          user_id=pop.user_id(person) if pop.dev_logged[dev] else None, device_id=self._dev_ids[dev])
        in_window = bool(out.in_window[k])
        joinable = dev == touch_dev or bool(pop.dev_logged[dev] and pop.dev_logged[touch_dev])
        self.conversion_log.append({"id": conv.id, "decision_id": decision_id, "value_micros": value,
                                    "event_time": t, "in_window": in_window, "joinable": joinable,
                                    "touch_time": int(opps.t[k]), "person": person})
        self.counts["conversions"] += 1
        self.counts["conversions_in_window" if in_window else "conversions_late"] += 1
        self.counts["conversion_value_micros"] += value
        self._count(day, conversions=1, conversion_value_micros=value, conversions_in_window=int(in_window))
        self._push(t, WorldEvent("conversions", conv.id, conv))

    def _count(self, day: int, **amounts: float) -> None:
        for name, amount in amounts.items():
            if name not in ("conversions", "conversion_value_micros", "conversions_in_window"):
                self.counts[name] += amount
            self.daily[day][name] += amount

    def due(self, t0: int, t1: int) -> list[WorldEvent]:
        """Conversions and identity links with event time before ``t1`` not yet released."""
        out = []
        while self._pending and self._pending[0][0] < t1:
            out.append(heapq.heappop(self._pending)[2])
        return out

    def device_truth(self) -> dict[str, str]:
        """Device id → user id of its true person, for every device seen in a request so far
        (evaluation of identity resolution only)."""
        pop = self.engine.pop
        return {self._dev_ids[d]: pop.user_id(int(pop.dev_person[d])) for d in np.flatnonzero(self._seen)}

    def truth(self) -> dict[str, Any]:
        """Ground-truth totals and per-day figures (evaluation only)."""
        return {"totals": dict(self.counts), "daily": {int(k): dict(v) for k, v in sorted(self.daily.items())},
                "calibration": self.cal.meta.name}

    def hindsight(self, budget_micros: int, mode: str = "myopic") -> HindsightResult:
        """Hindsight optimum over every opportunity so far, ``budget_micros`` per day (see ``simulators.hindsight``)."""
        opts = episode_options(self.engine, concat(self.batches), mode)
        return hindsight_optimum(opts, budget_micros, self.engine.organic_cap, mode=mode)
