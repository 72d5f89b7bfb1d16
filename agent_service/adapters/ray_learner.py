"""The learner as a Ray actor (``agent.learning.backend``): off the bidder's process, on a cluster.

``ray.init()`` starts a local Ray instance by default (about 3 s and 0.9 GB here); given an
address (``--ray-address`` / ``GAELP_RAY_ADDRESS``) it joins a cluster, and the actor may run on
any node — its registry and checkpoint store are then built there from the configuration
(the factory), so use the Redis registry and checkpoints for a multi-host cluster.

The actor is created with ``max_restarts=-1``: when its process dies (killed, out of memory, a
node lost) Ray starts it again, and its constructor resumes from the last checkpoint. The call
that was in flight fails; :class:`RayLearner` waits for the actor to answer again and raises
:class:`~agent_service.agent.learning.backend.LearnerRestarted`, so the learner service
re-reads the uncommitted experience. Bidders are unaffected: they keep serving the last
version from the registry meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError

from agent_service.adapters.learners import restored
from agent_service.agent.learning.backend import LearnerFactory, LearnerRestarted
from agent_service.agent.learning.online import TrainReport
from agent_service.threads import limit_math_threads

__all__ = ["RayLearner", "ensure_ray"]

log = logging.getLogger(__name__)
_LOST = (RayActorError, ActorUnavailableError)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start (or join) Ray once per process; True if this call started it (import this module
    after :func:`agent_service.adapters.ray_env.prepare_ray_env`).

    :param address: a cluster's address (``ray://`` or ``HOST:PORT``), or None for a local instance.
    :param num_cpus: CPUs a local instance may use (None: all).
    """
    if ray.is_initialized():
        return False
    # Workers on any node get the same one-thread math libraries as this process (threads.py).
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True,
                              "runtime_env": {"env_vars": limit_math_threads()}}
    if address:
        ray.init(address=address, **kwargs)
    else:  # on loopback when ray_env.prepare_ray_env ran before ray was imported
        ray.init(num_cpus=num_cpus, **kwargs)
    return True


class _LearnerActor:
    """Runs in a Ray worker process: the learner, resumed from its checkpoint on every (re)start."""

    def __init__(self, factory: LearnerFactory, threads: int) -> None:
        torch.set_num_threads(threads)
        self.learner, self.store = restored(factory)

    def pid(self) -> int:
        return os.getpid()

    def version(self) -> int:
        return self.learner.learner.version

    def summary(self) -> dict[str, int]:
        return self.learner.summary()

    def train(self, records: list[bytes]) -> TrainReport:
        return self.learner.train_records(records)

    def checkpoint(self) -> None:
        self.store.save(self.learner.snapshot())


class RayLearner:
    """See the module docstring.

    :param factory: builds the learner and its checkpoint store inside the actor.
    :param address: Ray cluster address (None: a local instance).
    :param num_cpus: CPUs of a local instance (None: all).
    :param actor_cpus: CPUs reserved for the actor.
    :param restart_timeout_s: how long to wait for a lost actor to answer again.
    """

    def __init__(self, factory: LearnerFactory, address: str | None = None, num_cpus: int | None = None,
                 actor_cpus: float = 1.0, restart_timeout_s: float = 120.0) -> None:
        self._factory, self._address, self._num_cpus = factory, address, num_cpus
        self._actor_cpus, self._restart_timeout_s = actor_cpus, restart_timeout_s
        self._actor: Any = None
        self._owns_ray = False
        self.restarts = 0
        self.actor_pid = 0

    async def start(self) -> None:
        self._owns_ray = await asyncio.to_thread(ensure_ray, self._address, self._num_cpus)
        cls = ray.remote(_LearnerActor).options(max_restarts=-1, max_task_retries=0, num_cpus=self._actor_cpus)
        self._actor = cls.remote(self._factory, max(1, int(self._actor_cpus)))
        self.actor_pid = await self._actor.pid.remote()
        log.info("learner actor running (pid %d, ray %s)", self.actor_pid, self._address or "local")

    async def stop(self) -> None:
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)
            self._actor = None
        if self._owns_ray:
            await asyncio.to_thread(ray.shutdown)

    async def train(self, records: Sequence[bytes]) -> TrainReport:
        try:
            return await self._actor.train.remote(list(records))  # type: ignore[no-any-return]
        except _LOST as exc:
            raise await self._restarted(exc) from exc

    async def checkpoint(self) -> None:
        try:
            await self._actor.checkpoint.remote()
        except _LOST as exc:
            raise await self._restarted(exc) from exc

    async def version(self) -> int:
        return int(await self._actor.version.remote())

    async def summary(self) -> dict[str, int]:
        """What the actor's learner holds (``OnlineLearner.summary``)."""
        return dict(await self._actor.summary.remote())

    def kill(self) -> None:
        """Kill the actor's process, as a crash would (Ray restarts it): for fault tests and drills."""
        ray.kill(self._actor, no_restart=False)

    async def _restarted(self, exc: BaseException) -> LearnerRestarted:
        """Wait until the restarted actor answers, then say so."""
        deadline = time.monotonic() + self._restart_timeout_s
        while True:
            try:
                self.actor_pid = await self._actor.pid.remote()
                break
            except _LOST:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        self.restarts += 1
        log.warning("learner actor was lost (%s); resumed from its checkpoint in pid %d", exc, self.actor_pid)
        return LearnerRestarted(f"learner actor restarted from its checkpoint: {exc}")
