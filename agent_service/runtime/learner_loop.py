"""The in-process learner service: experience topic in, versioned weights out.

Reads experience records (deduplicated by id inside the learner), trains when enough have
arrived, and publishes each new version to the registry, where bidders pick it up by version.
The Ray learner (a later issue) takes the same records through the same port.
"""

from __future__ import annotations

import math

from agent_service.agent.learning.learner import LearnerStats
from agent_service.agent.learning.online import OnlineLearner
from agent_service.contracts.codec import decode
from agent_service.contracts.events import Experience
from agent_service.errors import DecodeError
from agent_service.metrics import Metrics
from agent_service.ports.bus import Consumer, EventBus

__all__ = ["ExperienceLearner"]


class ExperienceLearner:
    """Consumes ``topic`` in ``group`` and trains ``learner``.

    :param bus: event bus.
    :param topic: the experience topic.
    :param learner: the learner (owns the optimizer and publishes versions).
    :param metrics: learner metrics.
    :param group: consumer group.
    """

    def __init__(self, bus: EventBus, topic: str, learner: OnlineLearner, metrics: Metrics,
                 group: str = "gaelp-learner") -> None:
        self.learner = learner
        self.metrics = metrics
        self._consumer: Consumer = bus.consumer([topic], group)
        self.updates: list[LearnerStats] = []
        self.records = 0
        self.duplicates = 0

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    def _export(self, stats: LearnerStats) -> None:
        """The last update's learner metrics (NaN values, e.g. no DQN update yet, are skipped)."""
        m = self.metrics
        for gauge, value in ((m.learner_loss, stats.loss), (m.learner_kl, stats.ppo.approx_kl),
                             (m.learner_clip_fraction, stats.ppo.clip_fraction),
                             (m.learner_explained_variance, stats.ppo.explained_variance),
                             (m.learner_td_loss, stats.dqn_td_loss), (m.learner_mean_q, stats.dqn_mean_q)):
            if math.isfinite(value):
                gauge.set(value)

    async def poll(self, timeout_ms: int = 0) -> int:
        """Learn from what is waiting; return how many records were read."""
        total = 0
        while True:
            records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=10_000)
            if not records:
                return total
            for rec in records:
                try:
                    exp = decode(rec.value, Experience)
                except DecodeError:
                    self.metrics.errors.labels("bad_experience").inc()
                    continue
                if self.learner.observe(exp):
                    self.records += 1
                    self.metrics.learner_experience.inc()
                else:
                    self.duplicates += 1
                stats = self.learner.maybe_update()
                if stats is not None:
                    self.updates.append(stats)
                    if stats.rejected:
                        self.metrics.learner_rejected.inc()
                    else:
                        self.metrics.learner_updates.inc()
                        self._export(stats)
            await self._consumer.commit()
            total += len(records)
            timeout_ms = 0
