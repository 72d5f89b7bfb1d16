"""Effects of what follows a decision: auction results, clicks, identity links, conversions
and the closing of each decision's attribution window.

Every effect is keyed: ``outcome:<decision>``, ``click:<decision>``, ``conv:<conversion>`` and
``final:<decision>`` are claimed in the store with the experience record they produce (an
outbox), so a redelivery recomputes nothing and re-emits the same record, which the learner
deduplicates by id. Budget settlement is idempotent by decision id; journeys, clicks, credits
and windows are keyed writes.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agent_service.attribution_port import AttributionModel, split_micros
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
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import period_of
from agent_service.pipeline.records import Output, dead_letter
from agent_service.ports.bus import BusRecord
from agent_service.ports.store import StateStore

__all__ = ["JoinRecord", "Outcomes"]


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

    def __init__(self, cfg: GaelpConfig, store: StateStore, metrics: Metrics, attribution: AttributionModel) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.attribution = attribution
        self._ttl = int(cfg.join.window_days * 86_400) + 2 * 86_400
        self._exp_topic = cfg.topics.experience
        self._rw = cfg.reward

    def _experience(self, dec: Decision, kind: str, suffix: str, event_time: int, parts: RewardParts,
                    won: bool = False, done: bool = False) -> Experience:
        rw = self._rw
        reward = (rw.alpha_immediate * parts.immediate + rw.alpha_attribution * parts.attribution
                  + rw.alpha_delayed * parts.delayed + rw.alpha_diversity * parts.diversity)
        return Experience(id=f"{dec.id}:{suffix}", event_time=event_time, decision_id=dec.id, kind=kind,  # type: ignore[arg-type]
                          state=dec.state, action=dec.action, propensity=dec.propensity,
                          model_version=dec.model_version, reward=reward, parts=parts, won=won, done=done)

    def _out(self, decision_id: str, payload: bytes) -> Output:
        return Output(self._exp_topic, decision_id.encode(), payload)

    async def _decisions(self, items: Sequence[tuple[BusRecord, AuctionResult | AdEvent]]) -> dict[str, Decision]:
        return await self.store.get_decisions(list({ev.decision_id for _, ev in items}))

    # --- auction results -----------------------------------------------------------------------
    async def auction_results(self, items: list[tuple[BusRecord, AuctionResult]]) -> list[Output]:
        decisions = await self._decisions(items)
        outputs: list[Output] = []
        for rec, res in items:
            dec = decisions.get(res.decision_id)
            if dec is None:
                outputs.append(self._unknown(rec, res.decision_id))
                continue
            key = f"outcome:{dec.id}"
            stored = await self.store.peek(key)
            if stored is None:
                if res.won and res.price_paid_micros > 0 and not dec.bid:
                    outputs.append(dead_letter(rec, "$.won", f"win without a bid: decision {dec.id} did not bid",
                                               self.cfg.topics.dead_letters, self.metrics))
                    continue
                stored = await self.store.claim(key, encode(await self._apply_result(dec, res)), self._ttl)
            outputs.append(self._out(dec.id, stored))
        return outputs

    async def _apply_result(self, dec: Decision, res: AuctionResult) -> Experience:
        cost = res.price_paid_micros if res.won else 0
        await self.store.settle(dec.campaign, period_of(dec.event_time), dec.id, cost)
        if res.won:
            touch = Touch(decision_id=dec.id, event_time=res.event_time, channel=dec.action.channel,
                          creative=dec.action.creative, segment=dec.action.segment, device_id=dec.device_id,
                          cost_micros=cost)
            await self.store.upsert_touch(dec.device_id, touch, self._ttl)
            await self.store.open_window(dec.id, res.event_time + self.cfg.join.window_ms)
            self.metrics.wins.labels(dec.action.channel).inc()
            self.metrics.spend.inc(cost / 1e6)
        parts = RewardParts(immediate=-cost / 1e6,
                            delayed=dec.value_estimate_micros / 1e6 if res.won else 0.0)
        return self._experience(dec, "outcome", "outcome", res.event_time, parts, won=res.won)

    # --- ad events -----------------------------------------------------------------------------
    async def ad_events(self, items: list[tuple[BusRecord, AdEvent]]) -> list[Output]:
        decisions = await self._decisions(items)
        outputs: list[Output] = []
        for rec, ev in items:
            dec = decisions.get(ev.decision_id)
            if dec is None:
                outputs.append(self._unknown(rec, ev.decision_id))
                continue
            if ev.kind != "click":
                continue  # the impression's touch is recorded from the auction result
            key = f"click:{dec.id}"
            stored = await self.store.peek(key)
            if stored is None:
                await self.store.mark_click(dec.device_id, dec.id, self._ttl)
                exp = self._experience(dec, "click", "click", ev.event_time,
                                       RewardParts(immediate=self._rw.click_value_usd))
                stored = await self.store.claim(key, encode(exp), self._ttl)
            outputs.append(self._out(dec.id, stored))
        return outputs

    # --- identity ------------------------------------------------------------------------------
    async def identity_links(self, items: list[tuple[BusRecord, IdentityLink]]) -> list[Output]:
        for _, link in items:
            if link.kind == "login" or link.score >= self.cfg.join.identity_min_score:
                await self.store.link_identity(link.device_id, link.person_id, link.score)
        return []

    # --- conversions and windows ----------------------------------------------------------------
    async def join(self, conv: Conversion) -> list[Output]:
        """Credit one conversion to the touches of its journey (exactly once)."""
        key = f"conv:{conv.id}"
        stored = await self.store.peek(key)
        if stored is None:
            record = await self._compute_join(conv)
            stored = await self.store.claim(key, encode(record), self._ttl)
            self._count(record)
        record = decode(stored, JoinRecord)
        for decision_id, micros in record.credits:
            await self.store.add_credit(decision_id, conv.id, micros)
        decisions = await self.store.get_decisions([d for d, _ in record.credits])
        outputs = []
        for decision_id, micros in record.credits:
            dec = decisions.get(decision_id)
            if dec is not None:
                exp = self._experience(dec, "credit", f"credit:{conv.id}", conv.event_time,
                                       RewardParts(attribution=micros / 1e6))
                outputs.append(self._out(dec.id, encode(exp)))
        return outputs

    async def _compute_join(self, conv: Conversion) -> JoinRecord:
        if conv.user_id:
            person = conv.user_id
        elif conv.device_id:
            person = (await self.store.resolve(conv.device_id)).person_id
        else:
            return JoinRecord(conv.id, "", "unattributed", [])
        since = conv.event_time - self.cfg.join.window_ms
        touches = [t for t in await self.store.journey(person, since) if t.event_time <= conv.event_time]
        fractions = self.attribution.credit(touches, conv.event_time)
        if not fractions:
            return JoinRecord(conv.id, person, "unattributed", [])
        for decision_id, _ in fractions:
            if await self.store.peek(f"final:{decision_id}") is not None:
                return JoinRecord(conv.id, person, "late", [])
        when = {t.decision_id: t.event_time for t in touches}
        for decision_id, _ in fractions:
            self.metrics.join_lag.observe((conv.event_time - when[decision_id]) / 1000)
        return JoinRecord(conv.id, person, "joined", split_micros(conv.value_micros, fractions))

    def _count(self, record: JoinRecord) -> None:
        counter = {"joined": self.metrics.conversions_joined, "late": self.metrics.conversions_late,
                   "unattributed": self.metrics.conversions_unattributed}[record.status]
        counter.inc()

    async def finalise(self, decision_id: str) -> list[Output]:
        """Close a decision's window: one final record with its realised reward."""
        key = f"final:{decision_id}"
        stored = await self.store.peek(key)
        if stored is None:
            dec = (await self.store.get_decisions([decision_id])).get(decision_id)
            if dec is None:
                return []  # expired from the store: nothing left to finalise
            immediate = 0.0
            won = False
            for prefix in ("outcome", "click"):
                raw = await self.store.peek(f"{prefix}:{decision_id}")
                if raw is not None:
                    exp = decode(raw, Experience)
                    immediate += exp.parts.immediate
                    won = won or exp.won
            credit = sum((await self.store.credits(decision_id)).values()) / 1e6
            final = self._experience(dec, "final", "final", dec.event_time + self.cfg.join.window_ms,
                                     RewardParts(immediate=immediate, attribution=credit), won=won, done=True)
            stored = await self.store.claim(key, encode(final), self._ttl)
            self.metrics.windows_closed.inc()
        return [self._out(decision_id, stored)]

    def _unknown(self, rec: BusRecord, decision_id: str) -> Output:
        return dead_letter(rec, "$.decision_id", f"unknown decision {decision_id!r}",
                           self.cfg.topics.dead_letters, self.metrics)
