"""The ``candidate`` role: the shadow candidate scored off the bid path, from the decision log.

A reader of the decision log's sampled partitions (``candidate_sample`` × partitions of them,
:func:`~agent_service.pipeline.candidate.sampled_partitions`; assigned, not subscribed: no
rebalance) committing in a group of its own (``<group_id>-candidate``) hands each batch to the
:class:`~agent_service.pipeline.candidate.CandidateScorer`, publishes the candidate's decisions
on ``topics.candidate_decisions`` keyed by decision id, and commits only after they are
flushed: a crash redelivers the batch and the warehouse keeps one row per key. The bidders
never load the candidate; ``gaelp simulate`` runs this same worker in-process.

The role shares its machine with bid paths, so it spends as little CPU per record as it can
(``bench/bench_shadow.py``): it lets ``[serve] candidate_poll_s`` of log gather between batches
(a few large fetches, one produce request and one commit a second, instead of tens of each),
reads only the partitions of its sample (the broker serves a quarter of the log at 0.25), and
decodes only the :class:`~agent_service.pipeline.candidate.LoggedHead` of a record its canary
leaves out.
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
from agent_service.pipeline.candidate import CandidateScorer, LoggedHead, sampled_partitions
from agent_service.ports.bus import BusRecord, Consumer, EventBus
from agent_service.ports.registry import ModelRegistry
from agent_service.runtime.assembly import pinned
from agent_service.runtime.event_loop import poll_until_idle

__all__ = ["CandidateWorker", "load_candidate"]

log = logging.getLogger(__name__)

_MAX_BATCH = 10_000
"""Records scored in one batch at most (a backlog is read in batches of this size, without pause)."""
_CAUGHT_UP = 256
"""A read of fewer records than this reached the log's end: the batch is complete."""
_CHUNK = 128
"""Records decoded and scored in one go in ``run``: the candidate's CPU comes in short pieces with
pauses between them rather than one burst a second, since on shared cores a burst beside a bidder
lands in the bid path's tail latency."""
_MAX_PAUSE_S = 0.05
_READ_WAIT_MS = 200
"""How long a read after the first waits for its fetch (loopback answers in milliseconds)."""


class CandidateWorker:
    """Decision log in, the candidate's decisions out (see the module docstring).

    :param scorer: the candidate. :param bus: the event bus. :param cfg: topics and the group id.
    """

    def __init__(self, scorer: CandidateScorer, bus: EventBus, cfg: GaelpConfig, group: str | None = None) -> None:
        self.scorer, self.bus = scorer, bus
        self.poll_s = cfg.serve.candidate_poll_s
        self.source, self.topic = cfg.topics.decisions, cfg.topics.candidate_decisions
        self.group = group or f"{cfg.serve.group_id}-candidate"
        self.partitions: range = range(0)
        """The decision-log partitions read (known at ``start``, from the topic's partition count)."""
        self._consumer: Consumer | None = None

    async def start(self) -> None:
        """Read the sampled partitions from the group's commit (ConfigError: the topic's partition
        count does not divide into the sample)."""
        self.partitions = sampled_partitions(self.scorer.sample, await self.bus.partitions(self.source))
        self._consumer = self.bus.assigned_consumer(self.source, self.partitions, self.group)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def _reader(self) -> Consumer:
        if self._consumer is None:
            raise BusError("CandidateWorker used before start()")
        return self._consumer

    async def poll(self, timeout_ms: int = 0, max_records: int = 5_000) -> int:
        """Score one read of the decision log; how many records it had."""
        records = await self._reader().getmany(timeout_ms=timeout_ms, max_records=max_records)
        if records:
            await self._score(records)
        return len(records)

    async def batch(self, timeout_ms: int = 500) -> int:
        """Score what the log holds now, up to ``_MAX_BATCH`` records, as one batch: read until a
        read (after the first, which may be a small fetch left waiting since the last batch) comes
        back short, so one batch takes all the log gathered since the last."""
        reader = self._reader()
        records = await reader.getmany(timeout_ms=timeout_ms, max_records=_MAX_BATCH)
        while records and len(records) < _MAX_BATCH:
            more = await reader.getmany(timeout_ms=_READ_WAIT_MS, max_records=_MAX_BATCH - len(records))
            records += more
            if len(more) < _CAUGHT_UP:
                break
        if records:  # spread over at most half the poll interval, a pause between chunks
            chunks = -(-len(records) // _CHUNK)
            await self._score(records, min(_MAX_PAUSE_S, self.poll_s / 2 / chunks) if chunks > 1 else 0.0)
        return len(records)

    async def _score(self, records: list[BusRecord], pause_s: float = 0.0) -> None:
        """The candidate's decisions on ``records``, published and flushed, then the commit; with
        ``pause_s``, a pause after every ``_CHUNK`` records (see ``_CHUNK``)."""
        decided: list[Decision] = []
        for start in range(0, len(records), _CHUNK):
            if start and pause_s > 0:
                await asyncio.sleep(pause_s)
            decided += self.scorer.score(self._decoded(records[start:start + _CHUNK]))
        if decided:
            await self.bus.publish_many(self.topic, [(d.id.encode(), encode(d)) for d in decided])
            await self.bus.flush()
        await self._reader().commit()

    def _decoded(self, records: list[BusRecord]) -> list[Decision]:
        """The sampled live decisions of ``records`` (the others decoded by their ids only)."""
        logged = []
        selective = self.scorer.selective
        for rec in records:
            if rec.is_tick:
                continue
            try:
                if not selective or self.scorer.wants(decode(rec.value, LoggedHead)):
                    logged.append(decode(rec.value, Decision))
            except DecodeError as exc:  # the decision log is written by the bidders only: a bug, not input
                self.scorer.metrics.errors.labels("candidate_undecodable").inc()
                log.error("decision log record %s@%d left out: %s %s", rec.topic, rec.offset, exc.field, exc.reason)
        return logged

    async def drain(self) -> int:
        """Score everything waiting (in-process runs)."""
        return await poll_until_idle(self.poll)

    async def run(self) -> None:
        """Score the log as it grows, a batch every ``poll_s`` (at once while behind), until
        cancelled; a failed batch is not committed (redelivered)."""
        while True:
            try:
                if await self.batch() < _MAX_BATCH:
                    await asyncio.sleep(self.poll_s)
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
