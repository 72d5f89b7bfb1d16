"""The streaming flow: one handler per input topic, the same in process and on Faust.

``Flow.handle(topic, records)`` decodes a batch (bad records become dead letters with the
reason), applies each record's effects through the state store — every effect keyed so that
a redelivery changes nothing — and returns the records to publish plus the clean-up to run
once they are published. The runtime publishes, runs the clean-up, then commits offsets.

Event time: each partition's watermark is the latest event time seen on it (ticks keep idle
partitions moving). A conversion is joined only once the touch topics' watermark has passed
its time (otherwise it is parked), and a decision's 14-day window closes only once the
conversions' watermark has passed its end plus the allowed lateness.

Raw user and device ids are pseudonymised as records are decoded (``pseudonym``), so no
handler, store key or output ever sees them; dead letters carry the payload with its ids
replaced.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from agent_service.attribution_port import AttributionModel, LastTouch
from agent_service.config import GaelpConfig
from agent_service.contracts.codec import decode, decode_bid_request, encode
from agent_service.contracts.events import AdEvent, AuctionResult, Conversion, IdentityLink, Tick
from agent_service.contracts.openrtb import BidRequest
from agent_service.contracts.outside import OutsideDecision
from agent_service.errors import DecodeError
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import Decider
from agent_service.pipeline.outcomes import Outcomes
from agent_service.pipeline.outside import store_outside
from agent_service.pipeline.records import HandleResult, Output, dead_letter
from agent_service.ports.bus import BusRecord
from agent_service.ports.store import StreamStore
from agent_service.units import DAY_S

if TYPE_CHECKING:
    from agent_service.pipeline.experiments import LiveExperiments

__all__ = ["Flow", "HandleResult", "Output", "stream_attribution"]

T = TypeVar("T")
_PERSONAL = (Conversion, OutsideDecision, IdentityLink)
"""The record types with personal ids (``Flow._pseudonymise``)."""
_BATCH_LIMIT = 2_000
CLEAN_UP_LEASE_S = 60.0
"""How long ``advance`` skips what it joined or closed while the clean-up is pending; a result
that was never published (its runtime died or gave up) is found again after it."""


class Flow:
    """All topic handlers over one store (see the module docstring).

    :param cfg: configuration.
    :param store: state store.
    :param decider: the decision path.
    :param metrics: metrics to update.
    :param partitions: partition count of each input topic.
    :param clock: wall clock in ms, for bid requests that carry no event time.
    :param attribution: the stream's attribution model.
    """

    def __init__(self, cfg: GaelpConfig, store: StreamStore, decider: Decider, metrics: Metrics,
                 partitions: Mapping[str, int], clock: Callable[[], int],
                 attribution: AttributionModel | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.decider = decider
        self.metrics = metrics
        self.partitions = dict(partitions)
        self.clock = clock
        t = cfg.topics
        self.outcomes = Outcomes(cfg, store, metrics, attribution or stream_attribution(cfg), decider.ids)
        self._handlers: dict[str, Callable[[list[tuple[BusRecord, Any]]], Awaitable[list[Output]]]] = {
            t.outside_decisions: self._outside_decisions,  # before the results that name them
            t.auction_results: self.outcomes.auction_results,
            t.ad_events: self.outcomes.ad_events,
            t.conversions: self._conversions,
            t.identity_links: self.outcomes.identity_links,
        }
        self._types: dict[str, type[Any]] = {
            t.outside_decisions: OutsideDecision, t.auction_results: AuctionResult, t.ad_events: AdEvent,
            t.conversions: Conversion, t.identity_links: IdentityLink,
        }
        self._gating = (t.auction_results, t.ad_events, t.identity_links)
        self._unparking: dict[str, float] = {}
        """Parked conversions joined by ``advance``, not unparked yet → when the skip lapses (monotonic s)."""
        self._dropping: dict[str, float] = {}
        """Windows closed by ``advance``, not dropped yet → when the skip lapses."""

    def use_experiments(self, live: LiveExperiments | None) -> None:
        """Run creative experiments: decisions restricted to and exposures logged per arm, wins and
        credits added to the arms' results (``pipeline/experiments.py``)."""
        self.decider.use_experiments(live)
        self.outcomes.experiments = live

    @property
    def input_topics(self) -> list[str]:
        """Topics the flow consumes."""
        return [self.cfg.topics.bid_requests, *self._handlers]

    async def handle(self, topic: str, records: Sequence[BusRecord]) -> HandleResult:
        """Process one batch of records from ``topic``."""
        self.metrics.events.labels(topic).inc(len(records))
        if topic == self.cfg.topics.bid_requests:
            return HandleResult(await self._bid_requests(records), [])
        tp = self._types.get(topic)
        if tp is None:
            raise ValueError(f"the flow does not consume topic {topic!r}")
        items, outputs, latest = self._decode(topic, records, tp)
        outputs += await self._handlers[topic](items)
        if latest:  # only once the batch's effects are stored: another agent (or a restarted
            # worker) trusting the watermark must find every touch and link at or before it
            await self.store.advance_watermarks(topic, latest)
        more = await self.advance()
        return HandleResult(outputs + more.outputs, more.after_publish)

    async def advance(self) -> HandleResult:
        """Join parked conversions whose touches are complete and close due windows.

        Those it returns are skipped by later calls until their clean-up has run (or for
        ``CLEAN_UP_LEASE_S``): a runtime may publish a batch while it handles the next one."""
        unparking, dropping = _live(self._unparking), _live(self._dropping)  # before the reads (see _live)
        ready, conversions = await self._marks(self._gating, (self.cfg.topics.conversions,))
        outputs: list[Output] = []
        after: list[Callable[[], Awaitable[None]]] = []
        parked = [(i, p) for i, p in await self.store.due_parked(ready, _BATCH_LIMIT) if i not in unparking]
        if parked:
            outputs += await self.outcomes.join_many([decode(payload, Conversion) for _, payload in parked])
            ids = [i for i, _ in parked]

            async def unpark() -> None:
                await self.store.unpark(ids)
                self.metrics.conversions_parked.dec(len(ids))
                for i in ids:
                    self._unparking.pop(i, None)
            after.append(unpark)
        until = min(ready, conversions) - self.cfg.join.allowed_lateness_ms
        due = [d for d in await self.store.due_windows(until, _BATCH_LIMIT) if d not in dropping]
        if due:
            outputs += await self.outcomes.finalise(due)

            async def drop() -> None:
                await self.store.drop_windows(due)
                for d in due:
                    self._dropping.pop(d, None)
            after.append(drop)
        lease = time.monotonic() + CLEAN_UP_LEASE_S  # only now, with no await left: the result is returned
        self._unparking.update((i, lease) for i, _ in parked)
        self._dropping.update((d, lease) for d in due)
        return HandleResult(outputs, after)

    async def watermark(self, *topics: str) -> int:
        """The event time every partition of ``topics`` has reached (-1 if one has none)."""
        [low] = await self._marks(topics)
        return low

    async def _marks(self, *groups: Sequence[str]) -> list[int]:
        """``watermark`` of each group of topics, read in one round trip."""
        topics = [t for g in groups for t in g]
        marks = dict(zip(topics, await self.store.watermarks_many(topics), strict=True))
        out = []
        for group in groups:
            low = None
            for topic in group:
                for p in range(self.partitions.get(topic, 1)):
                    mark = marks[topic].get(p, -1)
                    low = mark if low is None else min(low, mark)
            out.append(-1 if low is None else low)
        return out

    # --- handlers ------------------------------------------------------------------------------
    async def _bid_requests(self, records: Sequence[BusRecord]) -> list[Output]:
        outputs: list[Output] = []
        items: list[tuple[BidRequest, int]] = []
        for rec in records:
            try:
                req = decode_bid_request(rec.value)
            except DecodeError as exc:
                outputs.append(self.dead_letter(rec, exc.field, exc.reason))
                continue
            items.append((req, _event_time_of(req) or self.clock()))
        topic = self.cfg.topics.decisions
        for result in await self.decider.decide(items):
            outputs += [Output(topic, d.id.encode(), encode(d)) for d in result.decisions]
        return outputs

    async def _outside_decisions(self, items: list[tuple[BusRecord, OutsideDecision]]) -> list[Output]:
        """An outside bidder's decisions, stored for the joins (``pipeline/outside.py``); nothing to publish."""
        ttl = int(self.cfg.join.window_days * DAY_S) + 2 * DAY_S
        await store_outside(self.decider.store, [d for _, d in items], ttl)
        return []

    async def _conversions(self, items: list[tuple[BusRecord, Conversion]]) -> list[Output]:
        ready = await self.watermark(*self._gating)
        now = [conv for _, conv in items if conv.event_time <= ready]
        later = [(conv.id, conv.event_time, encode(conv)) for _, conv in items if conv.event_time > ready]
        if later:
            await self.store.park_many(later)
            self.metrics.conversions_parked.inc(len(later))
        return await self.outcomes.join_many(now) if now else []

    # --- plumbing --------------------------------------------------------------------------------
    def _decode(self, topic: str, records: Sequence[BusRecord], tp: type[T]
                ) -> tuple[list[tuple[BusRecord, T]], list[Output], dict[int, int]]:
        items: list[tuple[BusRecord, T]] = []
        dead: list[Output] = []
        latest: dict[int, int] = {}
        # auction results and ad events carry no personal id: only the other types are pseudonymised
        pseudonymise = self._pseudonymise if tp in _PERSONAL else None
        for rec in records:
            try:
                if rec.is_tick:
                    event_time = decode(rec.value, Tick).event_time
                else:
                    obj = decode(rec.value, tp)
                    if pseudonymise is not None:
                        obj = pseudonymise(obj)
                    event_time = obj.event_time  # type: ignore[attr-defined]
                    items.append((rec, obj))
            except DecodeError as exc:
                dead.append(self.dead_letter(rec, exc.field, exc.reason))
                continue
            if event_time > latest.get(rec.partition, -1):
                latest[rec.partition] = event_time
        return items, dead, latest

    def _pseudonymise(self, obj: T) -> T:
        ids = self.decider.ids
        if isinstance(obj, Conversion):
            return msgspec.structs.replace(obj, user_id=ids(obj.user_id) if obj.user_id else None,
                                           device_id=ids(obj.device_id) if obj.device_id else None)
        if isinstance(obj, OutsideDecision):
            return msgspec.structs.replace(obj, device_id=ids(obj.device_id),
                                           user_id=ids(obj.user_id) if obj.user_id else None)
        if isinstance(obj, IdentityLink):
            return msgspec.structs.replace(
                obj, device_id=ids(obj.device_id), person_id=ids(obj.person_id) if obj.person_id else "",
                other_device_id=ids(obj.other_device_id) if obj.other_device_id else None,
                ip=ids(obj.ip) if obj.ip else None)
        return obj

    def dead_letter(self, rec: BusRecord, field: str, reason: str) -> Output:
        """A dead-letter record for ``rec`` (ids pseudonymised)."""
        return dead_letter(rec, field, reason, self.cfg.topics.dead_letters, self.metrics, self.decider.ids)


def _live(leases: dict[str, float]) -> frozenset[str]:
    """The ids whose skip has not lapsed (lapsed ones are dropped). Taken before the store is
    read: an id cleaned up meanwhile is then still skipped, never joined or closed twice."""
    now = time.monotonic()
    for key in [k for k, until in leases.items() if until <= now]:
        del leases[key]
    return frozenset(leases)


def stream_attribution(cfg: GaelpConfig) -> AttributionModel:
    """The stream's attribution model from ``join.attribution``: a heuristic (last/first touch,
    linear, time decay, position), or a data-driven model (markov, shapley) refitted in the
    stream from the journeys it credits (``attribution/online.py``). Plain last touch if the
    attribution package is absent."""
    try:
        from agent_service.attribution import StreamAttribution
        from agent_service.attribution.config import HEURISTIC_MODELS
        from agent_service.attribution.online import OnlineJourneyModel
    except ImportError:  # pragma: no cover - the package ships with GAELP
        return LastTouch()
    j = cfg.join
    ac = cfg.attribution
    if ac.model in HEURISTIC_MODELS:
        return StreamAttribution(ac)
    return OnlineJourneyModel(ac, refit_every=j.attribution_refit_every, min_conversions=j.attribution_min_conversions)


def _event_time_of(req: BidRequest) -> int | None:
    gaelp = (req.ext or {}).get("gaelp")
    if isinstance(gaelp, dict):
        t = gaelp.get("event_time")
        if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
            return t
    return None
