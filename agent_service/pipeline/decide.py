"""The decision path: OpenRTB impressions in, decisions (logged with propensity) and bids out.

For a batch of requests: read each device's context (identity, journey, budget) in one round
trip each, build the state vectors, let the policy sample creative × channel × multiplier for
the whole batch with one network version, turn the multiplier into a bid
``clip(m · v̂, $0.50, $10.00)`` and reserve its worst-case cost atomically before the bid may
leave. Shadow mode does everything but reserve and bid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from agent_service.agent.features import AVAILABLE, Opportunity, context_bucket, state_vector
from agent_service.agent.policy import Acts, PolicyServer
from agent_service.config import CHANNELS, GaelpConfig
from agent_service.contracts.events import Action, Decision
from agent_service.contracts.openrtb import Bid, BidRequest, BidResponse, Imp, SeatBid
from agent_service.metrics import Metrics
from agent_service.money import cpm_to_micros, impression_cost_micros, usd_to_micros
from agent_service.pacing import paced_out, planned_spend
from agent_service.pipeline.opportunity import device_id_of, opportunity_of
from agent_service.ports.store import DecideContext, StateStore

__all__ = ["DAY_MS", "DecideResult", "Decider", "period_of"]

DAY_MS = 86_400_000
_MAX_TOUCHES = 16
_SEGMENTS = 4
_PACING_SLACK = 0.02


def period_of(event_time: int) -> int:
    """Budget period (UTC day number) of an event time."""
    return event_time // DAY_MS


class DecideResult(NamedTuple):
    """The answer to one bid request."""

    response: BidResponse | None
    """None means no bid (HTTP 204)."""
    decisions: list[Decision]
    """One per impression, bid or not, for the decisions topic."""


class _Slot(NamedTuple):
    req: BidRequest
    imp: Imp
    opp: Opportunity
    device_id: str
    ctx: DecideContext
    state: list[float]
    reject: str | None


class Decider:
    """Decides batches of bid requests (see the module docstring).

    :param cfg: configuration (budget, agent, join).
    :param store: state store.
    :param policy: the served policy (hot-swapped by version).
    :param metrics: metrics to update.
    :param campaign: campaign whose budget is spent.
    :param shadow: decide and log only; never bid.
    """

    def __init__(self, cfg: GaelpConfig, store: StateStore, policy: PolicyServer, metrics: Metrics,
                 campaign: str = "default", shadow: bool = False) -> None:
        self.cfg = cfg
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.campaign = campaign
        self.shadow = shadow
        self._budget_micros = usd_to_micros(cfg.budget.daily_usd)
        self._bid_min = cpm_to_micros(cfg.budget.bid_min_usd)
        self._bid_max = cpm_to_micros(cfg.budget.bid_max_usd)
        self._periods: set[int] = set()
        self._decision_ttl_s = int(cfg.join.window_days * 86_400) + 2 * 86_400

    async def decide(self, items: Sequence[tuple[BidRequest, int]]) -> list[DecideResult]:
        """Decide every impression of every request.

        :param items: (request, event time in ms) pairs.
        """
        started = time.perf_counter()
        self.policy.sync()
        slots = await asyncio.gather(*(self._slot(req, imp, t) for req, t in items for imp in req.imp))
        states = np.array([s.state for s in slots], dtype=np.float32).reshape(len(slots), -1)
        mask = states[:, AVAILABLE] > 0.5 if len(slots) else np.zeros((0, len(CHANNELS)), bool)
        acts = self.policy.act(states, mask) if len(slots) else None
        decisions = await asyncio.gather(*(self._decide_one(i, s, acts) for i, s in enumerate(slots)))
        self.metrics.model_version.set(self.policy.version)
        results: list[DecideResult] = []
        pos = 0
        for req, _ in items:
            mine = decisions[pos:pos + len(req.imp)]
            pos += len(req.imp)
            results.append(DecideResult(self._response(req, mine), mine))
        if slots:
            per_item = (time.perf_counter() - started) / len(slots)
            for _ in slots:
                self.metrics.decide_latency.observe(per_item)
        return results

    async def _slot(self, req: BidRequest, imp: Imp, event_time: int) -> _Slot:
        period = period_of(event_time)
        if period not in self._periods:
            await self.store.init_budget(self.campaign, period, self._budget_micros)
            self._periods.add(period)
        device = device_id_of(req)
        ctx = await self.store.decide_context(device, self.campaign, period, _MAX_TOUCHES)
        opp = opportunity_of(req, imp, event_time)
        since = event_time - self.cfg.join.window_ms
        journey = [t for t in ctx.journey if since <= t.event_time <= event_time]
        state = state_vector(opp, ctx.identity, journey, ctx.budget, period * DAY_MS)
        reject = None
        if req.cur and "USD" not in req.cur:
            reject = "currency"
        elif imp.bidfloorcur != "USD":
            reject = "floor_currency"
        return _Slot(req, imp, opp, device, ctx, state, reject)

    async def _decide_one(self, i: int, s: _Slot, a: Acts | None) -> Decision:
        assert a is not None  # only called when there are slots, hence actions
        channel = CHANNELS[int(a.channel[i])]
        mult_idx = int(a.multiplier[i])
        value_usd = float(a.value_usd[i])
        bid_micros, reason = self._bid(s, channel, value_usd * 1000 * self.cfg.agent.bid_multipliers[mult_idx])
        period = period_of(s.opp.event_time)
        decision_id = f"{s.req.id}:{s.imp.id}"
        if reason is None and self.shadow:
            reason = "shadow"
        if reason is None and channel != "organic":
            if await self.store.reserve(self.campaign, period, decision_id, impression_cost_micros(bid_micros)):
                self.metrics.bids.labels(channel).inc()
            else:
                reason = "budget"
        self.metrics.bid_requests.inc()
        if reason is not None:
            self.metrics.no_bids.labels(reason).inc()
        decision = Decision(
            id=decision_id, event_time=s.opp.event_time, request_id=s.req.id, imp_id=s.imp.id,
            person_id=s.ctx.identity.person_id, device_id=s.device_id, campaign=self.campaign,
            state=s.state, propensity=float(a.propensity[i]), model_version=a.version,
            action=Action(bid_cpm_micros=bid_micros if reason is None else 0, creative=int(a.creative[i]),
                          channel=channel, segment=context_bucket(s.opp.context) % _SEGMENTS,
                          multiplier=mult_idx),
            value_estimate_micros=usd_to_micros(value_usd), bid=reason is None, no_bid_reason=reason,
            shadow=self.shadow,
        )
        return await self.store.put_decision(decision, self._decision_ttl_s)

    def _bid(self, s: _Slot, channel: str, bid_cpm_usd: float) -> tuple[int, str | None]:
        """Bid price (CPM micros) and the reason not to bid, if any."""
        if s.reject is not None:
            return 0, s.reject
        if channel == "organic":
            return 0, None  # no auction, no cost; reach is the channel's limit
        budget = s.ctx.budget
        elapsed = (s.opp.event_time % DAY_MS) / DAY_MS
        if budget.remaining <= 0:
            return 0, "budget"
        if paced_out(budget.spent + budget.reserved, budget.budget, elapsed, _PACING_SLACK):
            return 0, "pacing"
        self.metrics.budget.set(budget.budget / 1e6)
        self.metrics.planned_spend.set(planned_spend(budget.budget, elapsed) / 1e6)
        bid = min(self._bid_max, max(self._bid_min, cpm_to_micros(bid_cpm_usd)))
        if bid < usd_to_micros(s.imp.bidfloor):
            return 0, "floor"
        return bid, None

    def _response(self, req: BidRequest, decisions: list[Decision]) -> BidResponse | None:
        bids = [
            Bid(id=d.id, impid=d.imp_id, price=d.action.bid_cpm_micros / 1e6, crid=f"cr-{d.action.creative}",
                cid=self.campaign, ext={"channel": d.action.channel, "model_version": d.model_version})
            for d in decisions if d.bid and d.action.channel != "organic"
        ]
        if not bids:
            return None
        return BidResponse(id=req.id, seatbid=[SeatBid(bid=bids, seat="gaelp")], cur="USD")
