"""The learner backend port: where experience is trained — in this process, or in a Ray actor.

The learner service (``runtime.learner_service``) reads the experience topic and hands each
batch of encoded records to a backend; it commits the topic's offsets only after the backend
has made a checkpoint that covers every record trained so far. A backend that loses its state
(a Ray actor killed, a node lost) comes back from its last checkpoint and raises
:class:`LearnerRestarted`; the service then re-reads everything after the committed offsets,
so no experience is lost, and the record ids kept in the checkpoint make any record trained
twice count once.

Adapters: :class:`agent_service.adapters.learners.ThreadLearner` (in process, trained off the
event loop) and :class:`agent_service.adapters.ray_learner.RayLearner` (a Ray actor: local mode
by default, a cluster by address).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from agent_service.agent.learning.online import OnlineLearner, TrainReport
from agent_service.errors import GaelpError

__all__ = ["CheckpointStore", "LearnerBackend", "LearnerFactory", "LearnerRestarted", "TrainReport"]


class LearnerRestarted(GaelpError):
    """The backend lost what it held since its last checkpoint and resumed from it."""


class CheckpointStore(Protocol):
    """Durable bytes of one learner's last checkpoint (a file, or a Redis key for a cluster)."""

    def save(self, blob: bytes) -> None:
        """Replace the checkpoint atomically (a crash mid-write leaves the previous one)."""
        ...

    def load(self) -> bytes | None:
        """The last checkpoint, or None when there is none yet."""
        ...


LearnerFactory = Callable[[], tuple[OnlineLearner, CheckpointStore]]
"""Builds, where the learner runs, a fresh learner and its checkpoint store (a module-level
callable, so that a Ray worker on another host can build it from the configuration)."""


class LearnerBackend(Protocol):
    restarts: int
    """Times the learner came back from its checkpoint."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def train(self, records: Sequence[bytes]) -> TrainReport:
        """Learn from encoded experience records.

        :raises LearnerRestarted: the learner was lost and resumed from its last checkpoint.
        """
        ...

    async def checkpoint(self) -> None:
        """Make a checkpoint covering every record trained so far.

        :raises LearnerRestarted: as ``train``.
        """
        ...
