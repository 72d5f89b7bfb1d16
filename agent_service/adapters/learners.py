"""Checkpoint stores and the in-process learner backend (``ports.learner``).

- :class:`FileCheckpoints` — one file, replaced atomically (one host, or a shared volume);
- :class:`RedisCheckpoints` — one Redis key (a learner that may restart on another host);
- :class:`ThreadLearner` — the learner in this process, each batch trained in a worker thread so
  the event loop (a bidder's, in the all-in-one ``gaelp serve``) is never blocked by an update.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.exceptions import RedisError

from agent_service.agent.learning.backend import CheckpointStore, LearnerFactory
from agent_service.agent.learning.online import OnlineLearner, TrainReport
from agent_service.errors import ModelError, StoreError

__all__ = ["FileCheckpoints", "NoCheckpoints", "RedisCheckpoints", "ThreadLearner", "restored"]

log = logging.getLogger(__name__)


class FileCheckpoints:
    """The checkpoint in one file (``path``), written to a temporary name and renamed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def save(self, blob: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self.path)

    def load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None


class RedisCheckpoints:
    """The checkpoint under one Redis key (a single ``SET``: atomic)."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self._r = redis.Redis.from_url(url, socket_timeout=30.0, socket_connect_timeout=2.0)

    def save(self, blob: bytes) -> None:
        try:
            self._r.set(self.key, blob)
        except RedisError as exc:
            raise StoreError(f"saving the learner checkpoint to {self.url} failed: {exc}") from exc

    def load(self) -> bytes | None:
        try:
            return self._r.get(self.key)  # type: ignore[return-value]
        except RedisError as exc:
            raise StoreError(f"reading the learner checkpoint from {self.url} failed: {exc}") from exc


def restored(factory: LearnerFactory) -> tuple[OnlineLearner, CheckpointStore]:
    """A learner from ``factory``, resumed from its store's checkpoint when there is a readable one."""
    learner, store = factory()
    blob = store.load()
    if blob is not None:
        try:
            learner = OnlineLearner.from_snapshot(blob, learner.registry)
        except ModelError as exc:  # start from what the factory built (the registry's newest version)
            log.warning("ignoring an unreadable learner checkpoint: %s", exc)
    return learner, store


class ThreadLearner:
    """The learner in this process; training and checkpoints run in a worker thread.

    :param factory: builds the learner and its checkpoint store.
    """

    def __init__(self, factory: LearnerFactory) -> None:
        self._factory = factory
        self.learner: OnlineLearner | None = None
        self._store: CheckpointStore | None = None
        self.restarts = 0
        # Held by the worker thread: a call cancelled on the loop still finishes its step, and the
        # next (a checkpoint on stop) waits for it instead of reading the learner mid-update.
        self._busy = threading.Lock()

    async def start(self) -> None:
        self.learner, self._store = await asyncio.to_thread(restored, self._factory)

    async def stop(self) -> None:
        return None  # nothing to release; the learner stays readable (reports, tests)

    async def train(self, records: Sequence[bytes]) -> TrainReport:
        assert self.learner is not None, "start() first"
        learner = self.learner

        def step() -> TrainReport:
            with self._busy:
                return learner.train_records(list(records))
        return await asyncio.to_thread(step)

    async def checkpoint(self) -> None:
        assert self.learner is not None and self._store is not None, "start() first"
        learner, store = self.learner, self._store

        def save() -> None:
            with self._busy:
                blob = learner.snapshot()
            store.save(blob)
        await asyncio.to_thread(save)


class NoCheckpoints:
    """No checkpoint at all: the embedded simulation, which its seed reproduces."""

    def save(self, blob: bytes) -> None:
        return None

    def load(self) -> bytes | None:
        return None
