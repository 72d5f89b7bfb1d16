"""A bidder's model watcher: new versions served within a second of their publish, off the loop.

The registry is watched two ways: its publish notices, when it has them (Redis pub/sub,
``ports.registry.VersionNotices``), and a poll of ``latest_version`` every ``poll_s`` (files,
and as a fallback: notices sent while disconnected are lost). A newer version is read,
verified against its checksum and built into networks in a worker thread; only the final
reference swap runs on the event loop, so the bid path never waits for a model load.

A version that fails (a corrupt or partial blob, a layout or non-finite weights) is refused:
counted in ``gaelp_bidder_model_rejected_total{reason}``, logged, never retried (versions are
immutable), and the bidder keeps serving the last good one. A registry that cannot be reached
(Redis restarting) is retried at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from agent_service.agent.serving.hybrid import PreparedVersion
from agent_service.errors import CorruptModelError, ModelError, StoreError
from agent_service.metrics import Metrics
from agent_service.ports.registry import ModelRegistry, VersionNotices
from agent_service.runtime.event_loop import cancel_all

__all__ = ["ModelWatcher"]

log = logging.getLogger(__name__)


class _Served(Protocol):
    @property
    def version(self) -> int: ...

    def prepare(self, state: dict[str, object], version: int) -> PreparedVersion: ...

    def adopt(self, prepared: PreparedVersion) -> bool: ...


class ModelWatcher:
    """See the module docstring.

    :param registry: where the learner publishes.
    :param served: the bidder's agent (``AgentServer``).
    :param metrics: the bidder's metrics.
    :param poll_s: seconds between polls of the latest version.
    """

    def __init__(self, registry: ModelRegistry, served: _Served, metrics: Metrics, poll_s: float = 0.25) -> None:
        self.registry, self.served, self.metrics, self.poll_s = registry, served, metrics, poll_s
        self.refused: set[int] = set()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.check()
        self._tasks.append(asyncio.create_task(self._poll()))
        if isinstance(self.registry, VersionNotices):
            self._tasks.append(asyncio.create_task(self._listen(self.registry)))

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks.clear()

    async def check(self) -> int:
        """Serve the registry's newest version if it is newer and sound; the version served."""
        async with self._lock:
            try:
                latest = await asyncio.to_thread(self.registry.latest_version)
            except (StoreError, ModelError) as exc:
                log.warning("model registry unreachable, serving v%d: %s", self.served.version, exc)
                return self.served.version
            if latest <= self.served.version or latest in self.refused:
                return self.served.version
            seen = time.perf_counter()
            try:
                prepared = await asyncio.to_thread(self._load, latest)
            except StoreError as exc:
                log.warning("loading model v%d failed (will retry): %s", latest, exc)
                return self.served.version
            except ModelError as exc:
                reason = "corrupt" if isinstance(exc, CorruptModelError) else "invalid"
                self.refused.add(latest)
                self.metrics.model_rejected.labels(reason).inc()
                log.error("refused model v%d (%s), still serving v%d: %s", latest, reason, self.served.version, exc)
                return self.served.version
            if self.served.adopt(prepared):
                self.metrics.model_swap.observe(time.perf_counter() - seen)
                self.metrics.model_version.set(prepared.version)
                log.info("serving model v%d", prepared.version)
            return self.served.version

    def _load(self, version: int) -> PreparedVersion:
        return self.served.prepare(self.registry.load(version), version)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()

    async def _listen(self, notices: VersionNotices) -> None:
        while True:
            try:
                async for version in notices.notices():
                    if version > self.served.version:
                        await self.check()
            except StoreError as exc:
                log.warning("model publish notices lost (polling goes on): %s", exc)
            await asyncio.sleep(1.0)
