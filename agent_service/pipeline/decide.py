"""The decision path: OpenRTB impressions in, decisions (logged with propensity) and bids out.

For a batch of requests: read every impression's context (identity, journey, budget and any
decision already stored under its id) in ONE pipelined round trip, let the hybrid agent
(``agent_service.agent.serving.server``) build the enriched states and sample creative × channel ×
target for the whole batch with one network version, price each impression
``clip(m · v̂, max(floor, $0.50), $10.00)`` with the slot's bid multiplier ``m`` (shaded in
first-price auctions, never under the floor), then reserve the worst-case costs of the whole
batch and store its decisions in ONE more round trip (one atomic step per budget period; the
imps of one request share that check; a draft that does not fit is stored as a no-bid).
Shadow mode does everything but reserve and bid.

A redelivered request reuses its stored decision (no new sample, no new reservation). A
request whose time budget (``tmax`` minus the network allowance) is spent before the
reservation gets a no-bid with reason ``tmax`` rather than a late answer.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from agent_service.agent.model.opportunity import Opportunity
from agent_service.agent.serving.server import AgentServer, ServedBatch
from agent_service.config import CHANNELS, GaelpConfig
from agent_service.contracts.events import Action, Decision, encoded_states
from agent_service.contracts.openrtb import Bid, BidRequest, BidResponse, Imp, SeatBid
from agent_service.experiments.assignment import bucket
from agent_service.metrics import Metrics
from agent_service.money import (
    cpm_to_micros,
    floor_to_usd_micros,
    impression_cost_micros,
    micros_to_usd,
    usd_to_micros,
)
from agent_service.pacing import paced_out
from agent_service.pipeline.opportunity import device_id_of, opportunity_of
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.ports.store import ContextQuery, DecideContext, DecideStore, DecisionDraft
from agent_service.pricing import BID, NO_BID_REASONS, shade_first_price, to_micros
from agent_service.units import DAY_MS, DAY_S

if TYPE_CHECKING:
    from agent_service.pipeline.experiments import LiveExperiments

__all__ = ["DAY_MS", "DecideResult", "Decider", "period_of"]

_MAX_TOUCHES = 16


def _no_bid(d: Decision, reason: str) -> Decision:
    return msgspec.structs.replace(d, bid=False, no_bid_reason=reason,
                                   action=msgspec.structs.replace(d.action, bid_cpm_micros=0))


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
    reject: str | None
    floor_micros: int
    """The imp's floor in USD micros (converted from ``bidfloorcur`` when needed)."""


class Decider:
    """Decides batches of bid requests (see the module docstring).

    :param cfg: configuration (budget, agent, join).
    :param store: state store.
    :param policy: the served hybrid agent (hot-swapped by registry version, one version per batch).
    :param metrics: metrics to update.
    :param campaign: campaign whose budget is spent.
    :param shadow: decide and log only; never bid.
    :param ids: pseudonymiser of raw ids (default: salt from ``GAELP_ID_SALT``, else random).
    """

    def __init__(self, cfg: GaelpConfig, store: DecideStore, policy: AgentServer, metrics: Metrics,
                 campaign: str = "default", shadow: bool = False, ids: Pseudonymizer | None = None) -> None:
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
        self._decision_ttl_s = int(cfg.join.window_days * DAY_S) + 2 * DAY_S
        self.ids = ids or Pseudonymizer.from_env()
        self._shade = cfg.serve.first_price_shade
        self._usd_per_unit = dict(cfg.serve.usd_per_unit)
        self._tail_s = 0.001  # running estimate of reservation + storing time (seconds)
        self._synced = -1e9  # timer() of the last registry check
        self.sync_every_s = 0.0
        """Least wall time between registry checks (0: every batch, as simulations need)."""
        self.timer: Callable[[], float] = time.perf_counter
        """Seconds on the clock of the requests' deadlines (tests inject their own)."""
        self.candidate: AgentServer | None = None
        """The canary's candidate policy (``gaelp promote``, ``[serve] canary_share``): it serves its
        share of persons live. The shadow candidate is not decided here: the ``candidate`` role
        replays the decision log (``pipeline/candidate.py``), off the bid path."""
        self.canary_share = 0.0
        """Share of persons (hashed, identity-resolved: one person's devices stay together) whose
        requests the candidate decides live."""
        self.canary_salt = "canary"
        self.on_decided: Callable[[list[Decision]], None] | None = None
        """Called with each batch's newly stored decisions (the canary's per-arm request counts)."""
        self._gauges: tuple[float, float] | None = None  # (budget, planned spend) USD of the batch's last bid
        self.experiments: LiveExperiments | None = None
        """Running creative A/B experiments (:meth:`use_experiments`); None: none."""

    def use_candidate(self, policy: AgentServer | None) -> None:
        """Serve ``policy`` as the canary's candidate; it follows the running creative
        experiments, so a person keeps their arm whichever policy decides."""
        if policy is not None:
            policy.experiments = self.experiments
        self.candidate = policy

    def use_experiments(self, live: LiveExperiments | None) -> None:
        """Run creative experiments: the policies restrict persons in an arm to its creatives, and
        each decided batch logs its first exposures (``pipeline/experiments.py``)."""
        self.experiments = live
        for policy in (self.policy, self.candidate):
            if policy is not None:
                policy.experiments = live

    # --- plumbing: one round trip to read, one to reserve and store (atomic per budget period) ----
    async def decide(self, items: Sequence[tuple[BidRequest, int]],
                     deadlines: Sequence[float | None] | None = None) -> list[DecideResult]:
        """Decide every impression of every request.

        :param items: (request, event time in ms) pairs.
        :param deadlines: per request, the ``timer()`` by which a bid must be
            reserved (None: no deadline); past it the request's imps are no-bids (``tmax``).
        """
        started = self.timer()
        if started - self._synced >= self.sync_every_s:  # serve: a new version within 50 ms
            self.policy.sync()
            self._synced = started
        flat = [(r, req, imp, t) for r, (req, t) in enumerate(items) for imp in req.imp]
        for period in {period_of(t) for _, _, _, t in flat} - self._periods:
            await self.store.init_budget(self.campaign, period, self._budget_micros)
            self._periods.add(period)
        if self.experiments is not None and flat:  # statistics and the state's arm values, every refresh_every_s
            await self.experiments.maybe_refresh(max(t for *_, t in flat))
        devices = [self.ids(device_id_of(req)) for req, _ in items]
        ctxs = await self.store.decide_contexts(
            [ContextQuery(devices[r], f"{req.id}:{imp.id}", self.campaign, period_of(t)) for r, req, imp, t in flat],
            _MAX_TOUCHES)
        fresh = [i for i, c in enumerate(ctxs) if c.existing is None]
        slots = [self._slot(flat[i][1], flat[i][2], flat[i][3], devices[flat[i][0]], ctxs[i]) for i in fresh]
        decisions: list[Decision] = [c.existing for c in ctxs]  # type: ignore[misc]  # fresh ones filled below
        if slots:
            drafts, profile = self._serve(slots)
            stored = await self._reserve_and_store(drafts, [flat[i][0] for i in fresh], profile, deadlines)
            for i, d in zip(fresh, stored, strict=True):
                decisions[i] = d
            self._count(stored)
            if self.on_decided is not None:
                self.on_decided(stored)
            if self.experiments is not None:
                await self.experiments.decided(stored)
        self.metrics.model_version.set(self.policy.version)
        results: list[DecideResult] = []
        pos = 0
        for req, _ in items:
            mine = decisions[pos:pos + len(req.imp)]
            pos += len(req.imp)
            results.append(DecideResult(self._response(req, mine), mine))
        if self._gauges is not None:  # the ledger's figures, once per batch (not per bid)
            self.metrics.budget.set(self._gauges[0])
            self.metrics.planned_spend.set(self._gauges[1])
            self._gauges = None
        if flat:
            self.metrics.decide_latency.observe_n((self.timer() - started) / len(flat), len(flat))
        return results

    def _serve(self, slots: list[_Slot]) -> tuple[list[Decision], list[tuple[int, bool]]]:
        """Draft decisions of the slots, each by the policy serving its person (the candidate for
        the canary share, else the live one), with each request's (context bucket, paid search
        offered) for the person's profile."""
        live = list(range(len(slots)))
        canary: list[int] = []
        if self.candidate is not None and self.canary_share > 0:
            live, canary = [], []
            for i, s in enumerate(slots):
                (canary if bucket(s.ctx.identity.person_id, self.canary_salt) < self.canary_share else live).append(i)
        drafts: dict[int, Decision] = {}
        profile: dict[int, tuple[int, bool]] = {}
        for policy, rows in ((self.policy, live), (self.candidate, canary)):
            if not rows or policy is None:
                continue
            group = [slots[i] for i in rows]
            served = policy.act_batch([s.opp for s in group], [s.ctx for s in group], [s.device_id for s in group])
            # Encoded once here; the store, the decision log and the experience records copy the bytes.
            logged = encoded_states(served.logged, served.shared)
            for k, i in enumerate(rows):
                drafts[i] = self._decide_one(k, slots[i], served, logged[k])
                profile[i] = (int(served.context[k]), bool(served.search[k]))
        return [drafts[i] for i in range(len(slots))], [profile[i] for i in range(len(slots))]

    async def _reserve_and_store(self, drafts: list[Decision], owners: list[int], profile: list[tuple[int, bool]],
                                 deadlines: Sequence[float | None] | None) -> list[Decision]:
        """Reserve every bidding draft's worst-case cost and store the decisions, in ONE round
        trip (``DecideStore.reserve_and_put``: imps in request order, one atomic step per budget
        period; a draft that does not fit is stored as a no-bid, a duplicate's stored decision
        wins without reserving). A draft past its request's deadline is a no-bid (``tmax``).
        Each new decision adds its request (context bucket, paid search offered) to its person's
        profile."""
        begun = self.timer()
        late = {r for r, dl in enumerate(deadlines or ()) if dl is not None and begun + self._tail_s > dl}
        out: list[DecisionDraft] = []
        for k, d in enumerate(drafts):
            period = period_of(d.event_time)
            context, search = profile[k]
            if not d.bid or d.action.channel == "organic":
                out.append(DecisionDraft(d, 0, period, context=context, search=search))
            elif owners[k] in late:
                out.append(DecisionDraft(_no_bid(d, "tmax"), 0, period, context=context, search=search))
            else:
                out.append(DecisionDraft(d, impression_cost_micros(d.action.bid_cpm_micros), period,
                                         _no_bid(d, "budget"), context=context, search=search))
        stored = await self.store.reserve_and_put(self.campaign, out, self._decision_ttl_s)
        self._tail_s = 0.9 * self._tail_s + 0.1 * 2 * (self.timer() - begun)
        return stored

    async def withdraw(self, decisions: Sequence[Decision], reason: str) -> list[Decision]:
        """Bids that will not reach the exchange (an answer past ``tmax``): free their
        reservations, store them as no-bids with ``reason`` (the outcome join and the learner
        then see what happened) and return them so, as the decision log must show them."""
        out, withdrawn = [], []
        for d in decisions:
            if d.bid and d.action.channel != "organic":
                await self.store.settle(self.campaign, period_of(d.event_time), d.id, 0)
                self.metrics.no_bids.labels(reason).inc()
                d = _no_bid(d, reason)
                withdrawn.append(d)
            out.append(d)
        await self.store.replace_decisions(withdrawn, self._decision_ttl_s)
        return out

    def _count(self, decisions: list[Decision]) -> None:
        # Tallied first: a labelled counter's lookup and lock cost microseconds per call.
        bids: collections.Counter[str] = collections.Counter()
        no_bids: collections.Counter[str] = collections.Counter()
        for d in decisions:
            if d.bid and d.action.channel != "organic":
                bids[d.action.channel] += 1
            elif d.no_bid_reason is not None:
                no_bids[d.no_bid_reason] += 1
        self.metrics.bid_requests.inc(len(decisions))
        for channel, n in bids.items():
            self.metrics.bids.labels(channel).inc(n)
        for reason, n in no_bids.items():
            self.metrics.no_bids.labels(reason).inc(n)

    # --- the decision itself (agent engineer) --------------------------------------------
    def _slot(self, req: BidRequest, imp: Imp, event_time: int, device: str, ctx: DecideContext) -> _Slot:
        """The slot of one impression, from the context the plumbing read (no store calls); the
        agent builds the states of the whole batch at once (``AgentServer.act_batch``)."""
        reject, floor = None, 0
        if req.cur and "USD" not in req.cur:  # bids are priced in USD only
            reject = "currency"
        elif imp.bidfloorcur == "USD":
            floor = usd_to_micros(imp.bidfloor)
        elif imp.bidfloorcur in self._usd_per_unit:
            floor = floor_to_usd_micros(imp.bidfloor, self._usd_per_unit[imp.bidfloorcur])
        else:
            reject = "floor_currency"
        opp = opportunity_of(req, imp, event_time, micros_to_usd(floor) if reject is None else None)
        return _Slot(req, imp, opp, device, ctx, reject, floor)

    def _decide_one(self, i: int, s: _Slot, served: ServedBatch, logged: list[float]) -> Decision:
        """The draft decision for slot ``i`` (reservation and storing are done by the plumbing).

        Logged with it: the vector the agent decided from (state ⊕ pacing features ⊕ touch
        sequence), the probability of the whole action (creative × channel × target × the
        slot's multiplier action), the model version, and v̂."""
        a = served.acts
        channel = CHANNELS[int(a.channel[i])]
        value_usd = float(a.value_usd[i])
        bid_micros, reason = self._bid(s, channel, float(a.bid_cpm_usd[i]), int(a.no_bid[i]))
        decision_id = f"{s.req.id}:{s.imp.id}"
        if reason is None and self.shadow:
            reason = "shadow"
        return Decision(
            id=decision_id, event_time=s.opp.event_time, request_id=s.req.id, imp_id=s.imp.id,
            person_id=s.ctx.identity.person_id, device_id=s.device_id, campaign=self.campaign,
            state=logged, propensity=float(a.propensity[i]), model_version=a.version,
            action=Action(bid_cpm_micros=bid_micros if reason is None else 0, creative=int(a.creative[i]),
                          channel=channel, segment=int(a.target[i]), multiplier=a.mult_index),
            value_estimate_micros=usd_to_micros(value_usd), bid=reason is None, no_bid_reason=reason,
            shadow=self.shadow,
        )

    def _bid(self, s: _Slot, channel: str, bid_cpm_usd: float, no_bid: int) -> tuple[int, str | None]:
        """Bid price (CPM micros) and the reason not to bid, if any.

        ``bid_cpm_usd`` and ``no_bid`` are the agent's, priced by :func:`agent_service.pricing.price`
        (organic, floor, budget left); here come the request's own rules (currency), the ledger
        (nothing left, the pacing rail), the exact micros, and first-price shading."""
        if s.reject is not None:
            return 0, s.reject
        if channel == "organic":
            return 0, None  # no auction, no cost; reach is the channel's limit
        budget = s.ctx.budget
        elapsed = (s.opp.event_time % DAY_MS) / DAY_MS
        if budget.remaining <= 0:
            return 0, "budget"
        planned = int(budget.budget * self.policy.plan.fraction(elapsed))  # pacing.planned_spend, from the cached plan
        if paced_out(budget.spent + budget.reserved, budget.budget, planned, self.cfg.budget.pacing_slack):
            return 0, "pacing"
        self._gauges = (micros_to_usd(budget.budget), micros_to_usd(planned))  # exported by decide(), once per batch
        if no_bid != BID:
            return 0, NO_BID_REASONS[no_bid]
        bid = to_micros(bid_cpm_usd, s.floor_micros, (self._bid_min, self._bid_max))
        if s.req.at == 1:  # first price pays the bid: shade it; second price (2) and exchange types (> 500) do not
            bid = shade_first_price(bid, s.floor_micros, self._bid_min, self._shade)
        return bid, None

    def _response(self, req: BidRequest, decisions: list[Decision]) -> BidResponse | None:
        bids = [
            Bid(id=d.id, impid=d.imp_id, price=micros_to_usd(d.action.bid_cpm_micros), crid=f"cr-{d.action.creative}",
                cid=self.campaign, ext={"channel": d.action.channel, "model_version": d.model_version})
            for d in decisions if d.bid and d.action.channel != "organic"
        ]
        if not bids:
            return None
        return BidResponse(id=req.id, seatbid=[SeatBid(bid=bids, seat="gaelp")], cur="USD")
