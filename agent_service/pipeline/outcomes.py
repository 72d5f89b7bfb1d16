"""Effects of what follows a decision: auction results, clicks, identity links, conversions
and the closing of each decision's attribution window.

Every effect is keyed: ``outcome:<decision>``, ``click:<decision>``, ``conv:<conversion>`` and
``final:<decision>`` are claimed in the store with the experience record they produce (an
outbox), so a redelivery recomputes nothing and re-emits the same record, which the learner
deduplicates by id (``outcome`` and ``click`` claims keep the record without its state, which
the decision holds: a redelivery puts it back). Each event's writes (settlement, touch, window; click; credits) are one
atomic step together with its claim, and a batch of events costs a few round trips per
hundreds of events (decisions read, effects applied — pipelined), not a few per event; auction
results go slice by slice, the store applying one slice while the next is built, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import msgspec

from agent_service.agent.learning.reward import slot_value_usd
from agent_service.attribution_port import AttributionModel, JourneyLearner, split_micros
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import (
    AdEvent,
    AuctionResult,
    Conversion,
    Decision,
    Experience,
    IdentityLink,
    RewardParts,
    Touch,
)
from agent_service.identity import IdentityGraph
from agent_service.metrics import Metrics
from agent_service.money import micros_to_usd
from agent_service.pipeline.canary_tally import CanaryTally
from agent_service.pipeline.decide import period_of
from agent_service.pipeline.identity_links import IdentityLinks
from agent_service.pipeline.outside import is_outside
from agent_service.pipeline.pseudonym import Pseudonymizer
from agent_service.pipeline.records import Output, dead_letter
from agent_service.ports.bus import BusRecord
from agent_service.ports.store import ClickEffect, HandlerStore, JoinEffect, JoinQuery, ResultEffect
from agent_service.units import DAY_S

if TYPE_CHECKING:
    from agent_service.pipeline.experiments import LiveExperiments

__all__ = ["JoinRecord", "Outcomes"]

_RESULT_SLICE = 400
"""Auction results per slice of the store pipeline (``Outcomes.auction_results``)."""
Stored = list[tuple[bool, bytes]]
"""(applied, stored record) per effect, as ``HandlerStore.record_results`` returns them."""
T = TypeVar("T")
_STATE = b'"state":'
_NO_STATE = b'"state":[]'


def _start(step: Coroutine[Any, Any, T], pending: list[asyncio.Future[Any]]) -> asyncio.Future[T]:
    task = asyncio.ensure_future(step)
    pending.append(task)
    return task


class JoinRecord(msgspec.Struct, frozen=True):
    """The stored result of joining one conversion (what makes its effect exactly once)."""

    conversion_id: str
    person_id: str
    status: str
    """``joined``, ``unattributed`` (no touch in the window) or ``late`` (windows already closed)."""
    credits: list[tuple[str, int]]
    """(decision id, credited micros)."""


class Outcomes:
    """Handlers for the topics after the decision (see the module docstring)."""

    def __init__(self, cfg: GaelpConfig, store: HandlerStore, metrics: Metrics, attribution: AttributionModel,
                 ids: Pseudonymizer | None = None, identity_graph: IdentityGraph | None = None) -> None:
        self.cfg = cfg
        self.ids = ids
        self.store = store
        self.metrics = metrics
        self.attribution = attribution
        self._ttl = int(cfg.join.window_days * DAY_S) + 2 * DAY_S
        self._window_ms = cfg.join.window_ms
        self._exp_topic = cfg.topics.experience
        self._rw = cfg.reward
        self.identity = IdentityLinks(cfg, store, identity_graph)
        """The identity-links handler; ``gaelp serve`` sets ``identity.graph`` to the Redis graph."""
        self.canary: CanaryTally | None = None
        """Per-arm spend and credited value of a running canary (``gaelp serve`` sets it)."""
        self.experiments: LiveExperiments | None = None
        """Running creative experiments: wins and credits add to their persons' arm results."""

    def _experience(self, dec: Decision, kind: str, suffix: str, event_time: int, parts: RewardParts,
                    won: bool = False, done: bool = False, position: int | None = None,
                    state: list[float] | None = None) -> Experience:
        rw = self._rw
        reward = (rw.alpha_immediate * parts.immediate + rw.alpha_attribution * parts.attribution
                  + rw.alpha_delayed * parts.delayed + rw.alpha_diversity * parts.diversity)
        return Experience(id=f"{dec.id}:{suffix}", event_time=event_time, decision_id=dec.id, kind=kind,  # type: ignore[arg-type]
                          state=dec.state if state is None else state, action=dec.action,
                          propensity=dec.propensity, model_version=dec.model_version, reward=reward, parts=parts,
                          won=won, done=done, position=position)

    def _out(self, decision_id: str, payload: bytes) -> Output:
        return Output(self._exp_topic, decision_id.encode(), payload)

    def _claimed_and_record(self, dec: Decision, kind: str, suffix: str, event_time: int, parts: RewardParts,
                            won: bool = False, done: bool = False, position: int | None = None,
                            ) -> tuple[bytes, bytes]:
        """An experience record without its state (what a result's or click's claim keeps: the
        decision holds the state, KBs of it) and the record itself, ``encode`` of
        ``_experience(...)``, byte for byte, from one small encoding: the record is the claim with
        the stored decision's state (as read: ``state_encoded``) put in place of its ``[]``.
        ``"state":[]`` is the first field after the ids and the kind, and cannot occur inside a JSON
        string (their quotes are escaped). Encoding the state's KBs into msgspec's growing buffer
        cost more than the splice."""
        claimed = encode(self._experience(dec, kind, suffix, event_time, parts, won, done, position, []))
        state = dec.state
        if isinstance(state, msgspec.Raw):
            at = claimed.find(_NO_STATE) + len(_STATE)
            if at >= len(_STATE):
                return claimed, b"".join((claimed[:at], state, claimed[at + 2:]))
        return claimed, encode(self._experience(dec, kind, suffix, event_time, parts, won, done, position))

    @staticmethod
    def _restated(claimed: bytes, dec: Decision) -> bytes:
        """A claimed record as it was first emitted: the decision's state put back (a redelivery)."""
        return encode(msgspec.structs.replace(decode(claimed, Experience), state=dec.state))

    async def _decisions(self, items: Sequence[tuple[BusRecord, AuctionResult | AdEvent]]) -> dict[str, Decision]:
        return await self.store.get_decisions(list({ev.decision_id for _, ev in items}), state_encoded=True)

    # --- auction results -----------------------------------------------------------------------
    async def auction_results(self, items: list[tuple[BusRecord, AuctionResult]]) -> list[Output]:
        # Slice by slice, as a pipeline: slice k+1's decisions are read and its effects built while
        # the store applies slice k's (the store's time per result is about the worker's, and each
        # waited for the other). Slices are applied in order: k+1's are sent once k's are stored.
        slices = [items[k:k + _RESULT_SLICE] for k in range(0, len(items), _RESULT_SLICE)]
        outputs: list[Output] = []
        built: list[tuple[list[tuple[Decision, AuctionResult]], list[bytes], asyncio.Future[Stored]]] = []
        pending: list[asyncio.Future[Any]] = []
        try:
            read = _start(self._decisions(slices[0]), pending) if slices else None
            stored: asyncio.Future[Stored] | None = None
            for k, part in enumerate(slices):
                decisions = await cast("asyncio.Future[dict[str, Decision]]", read)
                if k + 1 < len(slices):
                    read = _start(self._decisions(slices[k + 1]), pending)
                order, effects, records = self._result_effects(part, decisions, outputs)
                stored = _start(self._record_results_after(stored, effects), pending)
                built.append((order, records, stored))
                await asyncio.sleep(0)  # let the slice's writes go out before the next is built
            applied_all = [await got for _, _, got in built]
        finally:
            await asyncio.gather(*pending, return_exceptions=True)  # nothing left running on an error
        every: list[tuple[Decision, AuctionResult]] = []
        wins: dict[str, int] = {}
        spent = 0
        out, topic = outputs.append, self._exp_topic
        for (order, records, _), stored_part in zip(built, applied_all, strict=True):
            for (dec, res), record, (applied, got) in zip(order, records, stored_part, strict=True):
                if applied and res.won and not is_outside(dec):  # counted once, not on redelivery; GAELP's only
                    wins[dec.action.channel] = wins.get(dec.action.channel, 0) + 1
                    spent += res.price_paid_micros
                out(Output(topic, dec.id.encode(), record if applied else self._restated(got, dec)))
            every += [(dec, res) for dec, res in order if not is_outside(dec)]  # GAELP's arms only from here
        for channel, n in wins.items():  # once per batch: a metric update costs about as much as a result
            self.metrics.wins.labels(channel).inc(n)
        if spent:
            self.metrics.spend.inc(micros_to_usd(spent))
        if self.canary is not None:  # keyed by decision: a redelivered result adds nothing
            await self.canary.spent([(dec, res.price_paid_micros) for dec, res in every if res.won])
        if self.experiments is not None:  # idempotent by decision id, applied or redelivered alike
            await self.experiments.results(every)
        return outputs

    def _result_effects(self, part: Sequence[tuple[BusRecord, AuctionResult]], decisions: dict[str, Decision],
                        outputs: list[Output]) -> tuple[list[tuple[Decision, AuctionResult]], list[ResultEffect],
                                                        list[bytes]]:
        """A slice's effects and experience records; its bad results dead-lettered into ``outputs``."""
        order: list[tuple[Decision, AuctionResult]] = []
        effects: list[ResultEffect] = []
        records: list[bytes] = []
        for rec, res in part:
            dec = decisions.get(res.decision_id)
            if dec is None:
                outputs.append(self._unknown(rec, res.decision_id))
                continue
            if res.won and res.price_paid_micros > 0 and not dec.bid:
                outputs.append(dead_letter(rec, "$.won", f"win without a bid: decision {dec.id} did not bid",
                                           self.cfg.topics.dead_letters, self.metrics, self.ids))
                continue
            effect, record = self._result_effect(dec, res)
            effects.append(effect)
            records.append(record)
            order.append((dec, res))
        return order, effects, records

    async def _record_results_after(self, previous: asyncio.Future[Stored] | None,
                                    effects: list[ResultEffect]) -> Stored:
        if previous is not None:
            await previous  # its error is this slice's too: nothing after a failed slice is applied
        return await self.store.record_results(effects, self._ttl)

    def _result_effect(self, dec: Decision, res: AuctionResult) -> tuple[ResultEffect, bytes]:
        """The result's writes (its claim without the state) and its experience record."""
        cost = res.price_paid_micros if res.won else 0
        touch = None
        if res.won:
            action = dec.action
            touch = Touch(decision_id=dec.id, event_time=res.event_time, channel=action.channel,
                          creative=action.creative, segment=action.segment, device_id=dec.device_id,
                          cost_micros=cost)
        position = res.position if res.won else None
        parts = RewardParts(immediate=slot_value_usd(self._rw, position) - micros_to_usd(cost),
                            delayed=micros_to_usd(dec.value_estimate_micros) if res.won else 0.0)
        claimed, record = self._claimed_and_record(dec, "outcome", "outcome", res.event_time, parts, won=res.won,
                                                   position=position)
        return ResultEffect(f"outcome:{dec.id}", claimed, dec.campaign, period_of(dec.event_time), dec.id,
                            cost, dec.device_id, touch, res.event_time + self._window_ms), record

    # --- ad events -----------------------------------------------------------------------------
    async def ad_events(self, items: list[tuple[BusRecord, AdEvent]]) -> list[Output]:
        # Only a click needs its decision (its experience record carries the state); an impression's
        # decision is checked by id, not read back.
        decisions = await self._decisions([(rec, ev) for rec, ev in items if ev.kind == "click"])
        known = await self.store.stored_decisions(list({ev.decision_id for _, ev in items if ev.kind != "click"}))
        outputs: list[Output] = []
        effects: list[ClickEffect] = []
        clicked: list[tuple[Decision, bytes]] = []
        for rec, ev in items:
            if ev.kind != "click":  # the impression's touch is recorded from the auction result
                if ev.decision_id not in known:
                    outputs.append(self._unknown(rec, ev.decision_id))
                continue
            dec = decisions.get(ev.decision_id)
            if dec is None:
                outputs.append(self._unknown(rec, ev.decision_id))
                continue
            claimed, record = self._claimed_and_record(dec, "click", "click", ev.event_time,
                                                       RewardParts(immediate=self._rw.click_value_usd))
            effects.append(ClickEffect(f"click:{dec.id}", claimed, dec.device_id, dec.id))
            clicked.append((dec, record))
        stored = await self.store.record_clicks(effects, self._ttl)
        for (dec, record), (applied, got) in zip(clicked, stored, strict=True):
            outputs.append(self._out(dec.id, record if applied else self._restated(got, dec)))
        return outputs

    # --- identity ------------------------------------------------------------------------------
    async def identity_links(self, items: list[tuple[BusRecord, IdentityLink]]) -> list[Output]:
        """Links into the identity graph, its device → person verdicts into the store
        (``pipeline.identity_links``); nothing to publish."""
        statuses, moved = await self.identity.handle([link for _, link in items])
        for status in statuses:
            self.metrics.identity_links.labels(status).inc()
        self.metrics.identity_reassigned.inc(moved)
        return []

    # --- conversions and windows ----------------------------------------------------------------
    async def join(self, conv: Conversion) -> list[Output]:
        """Credit one conversion to the touches of its journey (exactly once)."""
        return await self.join_many([conv])

    async def join_many(self, convs: Sequence[Conversion]) -> list[Output]:
        """Credit conversions to the touches of their journeys, each exactly once, in a fixed
        number of round trips: read (stored join or journey), claim with credits, read decisions."""
        window = self.cfg.join.window_ms
        ctxs = await self.store.join_contexts(
            [JoinQuery(f"conv:{c.id}", c.user_id or None, c.device_id or None, c.event_time - window) for c in convs])
        effects: list[JoinEffect] = []
        for conv, ctx in zip(convs, ctxs, strict=True):
            if ctx.stored is not None:
                effects.append(JoinEffect(f"conv:{conv.id}", ctx.stored, ctx.stored, conv.id, []))
                continue
            record = self._compute_join(conv, ctx.person_id, ctx.journey)
            late = JoinRecord(conv.id, record.person_id, "late", [])
            effects.append(JoinEffect(f"conv:{conv.id}", encode(record), encode(late), conv.id, record.credits))
        stored = await self.store.record_joins(effects, self._ttl)
        records = [decode(raw, JoinRecord) for _, raw in stored]
        learner = self.attribution if isinstance(self.attribution, JourneyLearner) else None
        for conv, ctx, (applied, _), record in zip(convs, ctxs, stored, records, strict=True):
            if applied:
                self._count(record, conv, ctx.journey)
                if learner is not None and record.status == "joined":  # once per conversion
                    lo = conv.event_time - self.cfg.join.window_ms
                    path = sorted({t.decision_id: t for t in ctx.journey if lo <= t.event_time <= conv.event_time
                                   }.values(), key=lambda t: (t.event_time, t.decision_id))
                    learner.observe_conversion([t.channel for t in path], micros_to_usd(conv.value_micros))
        decisions = await self.store.get_decisions(list({d for r in records for d, _ in r.credits}), state_encoded=True)
        own = {d for d, dec in decisions.items() if not is_outside(dec)}  # an outside bidder's credit is no arm's
        if self.canary is not None:  # keyed by conversion and decision: a redelivery adds nothing
            await self.canary.credited([(r.conversion_id, decisions[d], micros) for r in records
                                        for d, micros in r.credits if d in own])
        outputs = []
        if self.experiments is not None:  # idempotent by conversion and decision id
            await self.experiments.credited([(decisions[d], conv.id, micros) for conv, r in zip(convs, records, strict=True)
                                             for d, micros in r.credits if d in own])
        for conv, record in zip(convs, records, strict=True):
            for decision_id, micros in record.credits:
                dec = decisions.get(decision_id)
                if dec is not None:
                    _, payload = self._claimed_and_record(dec, "credit", f"credit:{conv.id}", conv.event_time,
                                                          RewardParts(attribution=micros_to_usd(micros)))
                    outputs.append(self._out(dec.id, payload))
        return outputs

    def _compute_join(self, conv: Conversion, person: str, journey: list[Touch]) -> JoinRecord:
        if not person:
            return JoinRecord(conv.id, "", "unattributed", [])
        touches = [t for t in journey if t.event_time <= conv.event_time]
        fractions = self.attribution.credit(touches, conv.event_time)
        if not fractions:
            return JoinRecord(conv.id, person, "unattributed", [])
        return JoinRecord(conv.id, person, "joined", split_micros(conv.value_micros, fractions))

    def _count(self, record: JoinRecord, conv: Conversion, journey: list[Touch]) -> None:
        counter = {"joined": self.metrics.conversions_joined, "late": self.metrics.conversions_late,
                   "unattributed": self.metrics.conversions_unattributed}[record.status]
        counter.inc()
        when = {t.decision_id: t.event_time for t in journey}
        for decision_id, _ in record.credits:
            if decision_id in when:
                self.metrics.join_lag.observe((conv.event_time - when[decision_id]) / 1000)

    async def finalise(self, decision_ids: Sequence[str]) -> list[Output]:
        """Close decisions' windows: one final record each with its realised reward (exactly once)."""
        ids = list(decision_ids)
        finals = await self.store.peek_many([f"final:{d}" for d in ids])
        todo = [d for d, f in zip(ids, finals, strict=True) if f is None]
        decisions = await self.store.get_decisions(todo, state_encoded=True)
        todo = [d for d in todo if d in decisions]  # expired from the store: nothing left to finalise
        parts = await self.store.peek_many([f"{p}:{d}" for d in todo for p in ("outcome", "click")])
        credits = await self.store.credits_many(todo)
        claims: list[tuple[str, bytes]] = []
        touched: set[str] = set()
        for k, decision_id in enumerate(todo):
            dec = decisions[decision_id]
            immediate, won = 0.0, False
            for raw in parts[2 * k:2 * k + 2]:
                if raw is not None:
                    exp = decode(raw, Experience)
                    immediate += exp.parts.immediate
                    won = won or exp.won
            if won:
                touched.add(decision_id)
            _, final = self._claimed_and_record(
                dec, "final", "final", dec.event_time + self.cfg.join.window_ms,
                RewardParts(immediate=immediate, attribution=micros_to_usd(sum(credits[k].values()))), won=won, done=True)
            claims.append((f"final:{decision_id}", final))
        claimed = dict(zip(todo, await self.store.claim_many(claims, self._ttl), strict=True))
        if isinstance(self.attribution, JourneyLearner):  # touches that led to no conversion: null journeys
            for k, decision_id in enumerate(todo):
                if claimed[decision_id][0] and not credits[k] and decision_id in touched:
                    self.attribution.observe_null([decisions[decision_id].action.channel])
        outputs = []
        for decision_id, stored in zip(ids, finals, strict=True):
            if decision_id in claimed:
                applied, stored = claimed[decision_id]
                if applied:
                    self.metrics.windows_closed.inc()
            if stored is not None:
                outputs.append(self._out(decision_id, stored))
        return outputs

    def _unknown(self, rec: BusRecord, decision_id: str) -> Output:
        return dead_letter(rec, "$.decision_id", f"unknown decision {decision_id!r}",
                           self.cfg.topics.dead_letters, self.metrics, self.ids)
