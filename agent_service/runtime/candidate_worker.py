"""The ``candidate`` role: the shadow candidate scored off the bid path, from the decision log.

A consumer of the decisions topic in a group of its own (``<group_id>-candidate``: it reads
every record, taking no partition from anyone) hands each batch to the
:class:`~agent_service.pipeline.candidate.CandidateScorer`, publishes the candidate's decisions
on ``topics.candidate_decisions`` keyed by decision id, and commits only after they are
flushed: a crash redelivers the batch and the warehouse keeps one row per key. The bidders
never load the candidate; ``gaelp simulate`` runs this same worker in-process.
"""

from __future__ import annotations

import asyncio
import logging

from agent_service.config import GaelpConfig
from agent_service.contracts.codec import DecodeError, decode, encode
from agent_service.contracts.events import Decision
from agent_service.creatives import CatalogueFile
from agent_service.errors import BusError, ModelError, StoreError
from agent_service.metrics import Metrics
from agent_service.pipeline.candidate import CandidateScorer
from agent_service.ports.bus import Consumer, EventBus
from agent_service.ports.registry import ModelRegistry
from agent_service.runtime.assembly import pinned

__all__ = ["CandidateWorker", "load_candidate"]

log = logging.getLogger(__name__)


class CandidateWorker:
    """Decision log in, the candidate's decisions out (see the module docstring).

    :param scorer: the candidate. :param bus: the event bus. :param cfg: topics and the group id.
    """

    def __init__(self, scorer: CandidateScorer, bus: EventBus, cfg: GaelpConfig, group: str | None = None) -> None:
        self.scorer, self.bus = scorer, bus
        self.source, self.topic = cfg.topics.decisions, cfg.topics.candidate_decisions
        self.group = group or f"{cfg.serve.group_id}-candidate"
        self._consumer: Consumer = bus.consumer([self.source], self.group)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def poll(self, timeout_ms: int = 0, max_records: int = 5_000) -> int:
        """Score one batch of the decision log; how many records it had."""
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if not records:
            return 0
        logged = []
        for rec in records:
            if rec.is_tick:
                continue
            try:
                logged.append(decode(rec.value, Decision))
            except DecodeError as exc:  # the decision log is written by the bidders only: a bug, not input
                self.scorer.metrics.errors.labels("candidate_undecodable").inc()
                log.error("decision log record %s@%d left out: %s %s", rec.topic, rec.offset, exc.field, exc.reason)
        decided = self.scorer.score(logged)
        if decided:
            await self.bus.publish_many(self.topic, [(d.id.encode(), encode(d)) for d in decided])
            await self.bus.flush()
        await self._consumer.commit()
        return len(records)

    async def drain(self) -> int:
        """Score everything waiting (in-process runs)."""
        total = 0
        while n := await self.poll():
            total += n
        return total

    async def run(self) -> None:
        """Score the log as it grows, until cancelled; a failed batch is not committed (redelivered)."""
        while True:
            try:
                await self.poll(timeout_ms=500)
            except BusError as exc:
                log.warning("candidate decisions not published (retried): %s", exc)
                await asyncio.sleep(1.0)
            except Exception:  # a background loop must outlive a bug: count it, log it, go on
                self.scorer.metrics.errors.labels("candidate").inc()
                log.exception("candidate worker")
                await asyncio.sleep(1.0)


async def load_candidate(cfg: GaelpConfig, registry: ModelRegistry, metrics: Metrics, creatives: int, seed: int,
                         catalogue: CatalogueFile | None = None) -> CandidateScorer | None:
    """The scorer of ``[serve] candidate_version`` (built off the event loop); None when there is
    none, or the version is refused — another state layout than this agent's, say (logged, and
    counted in ``gaelp_bidder_model_rejected_total{reason="candidate"}``)."""
    version = cfg.serve.candidate_version
    if not version:
        return None
    try:
        server = await asyncio.to_thread(pinned, cfg, creatives, registry, version, seed)
    except (ModelError, StoreError) as exc:
        metrics.model_rejected.labels("candidate").inc()
        log.error("candidate v%d refused, no candidate decisions: %s", version, exc)
        return None
    server.catalogue = catalogue
    return CandidateScorer(cfg, server, metrics)
