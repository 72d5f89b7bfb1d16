"""The learner service: experience topic in, versioned weights out, exactly-once in effect.

It reads the experience topic in its own consumer group and hands each batch of encoded
records to a learner backend (``agent.learning.backend``): a Ray actor (``gaelp learner`` and the
learner role of ``gaelp serve``) or a worker thread. Offsets are committed only right after a
checkpoint that covers every record trained so far, taken every ``learner.checkpoint_every_s``
or ``learner.checkpoint_every_records``. So:

- a crash of the learner (the Ray actor killed) loses no experience: the backend resumes from
  its checkpoint and this service re-reads everything after the committed offsets;
- nothing counts twice: records trained after the checkpoint died with the old learner, and a
  record redelivered although the checkpoint holds it (a crash between checkpoint and commit)
  is recognised by its id, which the checkpoint keeps.

A record that does not decode is dead-lettered with its reason, never trained on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from pathlib import Path

from agent_service.adapters.learners import FileCheckpoints, RedisCheckpoints, ThreadLearner
from agent_service.adapters.ray_env import prepare_ray_env
from agent_service.adapters.redis_registry import RedisRegistry
from agent_service.adapters.registry import FileRegistry
from agent_service.agent.learning.backend import CheckpointStore, LearnerBackend, LearnerRestarted
from agent_service.agent.learning.learner import LearnerStats
from agent_service.agent.learning.online import OnlineLearner, TrainReport
from agent_service.config import GaelpConfig
from agent_service.creatives import CatalogueFile, load_priors
from agent_service.errors import BusError
from agent_service.metrics import Metrics
from agent_service.pipeline.records import HandleResult, dead_letter, publish_result
from agent_service.ports.bus import BusRecord, Consumer, EventBus
from agent_service.ports.registry import ModelRegistry
from agent_service.runtime.assembly import build_learner
from agent_service.runtime.event_loop import poll_until_idle

__all__ = ["LearnerService", "learner_backend", "learner_factory", "model_registry"]

log = logging.getLogger(__name__)


def model_registry(cfg: GaelpConfig) -> ModelRegistry:
    """The model registry ``[serve] registry`` names."""
    if cfg.serve.registry == "redis":
        return RedisRegistry(cfg.serve.registry_url or cfg.serve.redis, prefix=cfg.serve.registry_prefix)
    return FileRegistry(cfg.serve.model_dir)


def _checkpoints(cfg: GaelpConfig) -> CheckpointStore:
    if cfg.serve.registry == "redis":
        return RedisCheckpoints(cfg.serve.registry_url or cfg.serve.redis, f"{cfg.serve.registry_prefix}learner-checkpoint")
    return FileCheckpoints(Path(cfg.serve.model_dir) / "learner-checkpoint.pt")


def _build(cfg: GaelpConfig, creatives: int, seed: int) -> tuple[OnlineLearner, CheckpointStore]:
    learner = build_learner(cfg, model_registry(cfg), creatives, seed)
    c = cfg.creatives
    learner.catalogue = CatalogueFile(c.catalogue, c.count, creatives, c.reload_s)
    learner.creative_priors = load_priors(c.priors)
    return learner, _checkpoints(cfg)


def learner_factory(cfg: GaelpConfig, creatives: int, seed: int) -> functools.partial[tuple[OnlineLearner, CheckpointStore]]:
    """What builds the learner where it runs (a Ray worker on any node): registry and checkpoint
    store from the configuration, resumed from the registry's newest version."""
    return functools.partial(_build, cfg, creatives, seed)


def learner_backend(cfg: GaelpConfig, creatives: int, seed: int) -> LearnerBackend:
    """The backend ``[learner] backend`` names (``ray``: an actor; ``thread``: in this process)."""
    factory = learner_factory(cfg, creatives, seed)
    if cfg.learner.backend == "ray":
        prepare_ray_env(cfg.learner.ray_address)
        from agent_service.adapters.ray_learner import RayLearner  # imports ray only when used

        return RayLearner(factory, address=cfg.learner.ray_address or None, num_cpus=cfg.learner.ray_num_cpus or None,
                          actor_cpus=cfg.learner.actor_cpus)
    return ThreadLearner(factory)


class LearnerService:
    """See the module docstring.

    :param cfg: configuration (``topics``, ``learner``, ``serve.group_id``).
    :param bus: the event bus.
    :param backend: where the learner runs.
    :param metrics: ``gaelp_learner_*`` metrics.
    :param durable: checkpoint before committing (False: commit after every batch and never
        checkpoint — the embedded simulation, which its seed reproduces).
    :param group: consumer group (default ``<serve.group_id>-learner``).
    """

    def __init__(self, cfg: GaelpConfig, bus: EventBus, backend: LearnerBackend, metrics: Metrics,
                 durable: bool = True, group: str | None = None) -> None:
        self.cfg, self.bus, self.backend, self.metrics, self.durable = cfg, bus, backend, metrics, durable
        self.topic = cfg.topics.experience
        self.group = group or f"{cfg.serve.group_id}-learner"
        self._consumer: Consumer | None = None
        self.updates: list[LearnerStats] = []
        self.records = self.duplicates = self.dead = 0
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()

    async def start(self) -> None:
        await self.backend.start()
        await self._open()

    async def _open(self) -> None:
        self._consumer = self.bus.consumer([self.topic], self.group)
        await self._consumer.start()

    async def stop(self) -> None:
        """Checkpoint and commit what was trained, then stop."""
        try:
            if self._since_checkpoint:
                await self._checkpoint_and_commit()
        except (LearnerRestarted, BusError) as exc:
            log.warning("final learner checkpoint failed (the next start re-reads from the last commit): %s", exc)
        if self._consumer is not None:
            await self._consumer.stop()
        await self.backend.stop()

    async def poll(self, timeout_ms: int = 500, max_records: int = 5_000) -> int:
        """Train on what is waiting (one batch), checkpoint and commit when due; records read."""
        assert self._consumer is not None, "start() first"
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        try:
            if records:
                started = time.perf_counter()
                report = await self.backend.train([r.value for r in records])
                self.metrics.learner_train_duration.observe(time.perf_counter() - started)
                await self._account(records, report)
            if not self.durable:
                if records:
                    await self._consumer.commit()
                self._since_checkpoint = 0
            elif self._due():
                await self._checkpoint_and_commit()
        except LearnerRestarted as exc:
            # Everything since the last commit is re-read by a fresh consumer of the group.
            log.warning("%s; re-reading the experience after the last commit", exc)
            self.metrics.learner_restarts.inc()
            self._since_checkpoint = 0
            await self._consumer.stop()
            await self._open()
        return len(records)

    async def drain(self) -> int:
        """Train on everything waiting now; records read."""
        return await poll_until_idle(functools.partial(self.poll, timeout_ms=0))

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.poll()
            except BusError as exc:
                log.warning("experience topic unavailable: %s", exc)
                await asyncio.sleep(1.0)

    def _due(self) -> bool:
        lc = self.cfg.learner
        return self._since_checkpoint > 0 and (
            self._since_checkpoint >= lc.checkpoint_every_records
            or time.monotonic() - self._checkpointed_at >= lc.checkpoint_every_s)

    async def _account(self, records: list[BusRecord], report: TrainReport) -> None:
        m = self.metrics
        self.records += report.records
        self.duplicates += report.duplicates
        self._since_checkpoint += len(records)
        m.learner_experience.inc(report.records)
        m.learner_duplicates.inc(report.duplicates)
        for stats in report.updates:
            self.updates.append(stats)
            if stats.rejected:
                m.learner_rejected.inc()
                continue
            m.learner_updates.inc()
            for gauge, value in ((m.learner_loss, stats.loss), (m.learner_kl, stats.ppo.approx_kl),
                                 (m.learner_clip_fraction, stats.ppo.clip_fraction),
                                 (m.learner_explained_variance, stats.ppo.explained_variance),
                                 (m.learner_td_loss, stats.dqn_td_loss), (m.learner_mean_q, stats.dqn_mean_q)):
                if math.isfinite(value):  # NaN: no such update yet (e.g. no DQN step)
                    gauge.set(value)
        m.learner_version.set(report.version)
        if report.dead:
            self.dead += len(report.dead)
            letters = [dead_letter(records[i], field, reason, self.cfg.topics.dead_letters, m)
                       for i, field, reason in report.dead]
            await publish_result(self.bus, HandleResult(letters, []))

    async def _checkpoint_and_commit(self) -> None:
        assert self._consumer is not None
        started = time.perf_counter()
        await self.backend.checkpoint()
        await self._consumer.commit()
        self.metrics.learner_checkpoints.inc()
        self.metrics.learner_checkpoint_duration.observe(time.perf_counter() - started)
        self._since_checkpoint = 0
        self._checkpointed_at = time.monotonic()
