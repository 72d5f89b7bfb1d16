"""A bidder's canary watcher: the plan ``gaelp promote`` writes, applied within a poll, off the bid path.

Every ``poll_s`` the watcher reads the plan (one ``GET``) and, when it changed, swaps what the
decider routes by: the candidate policy (loaded from the registry and built in a worker thread,
kept while the version stays the same), the share and the hash salt (``canary:<experiment>``, as
:class:`~agent_service.experiments.canary.Canary` assigns). The bid path only reads those
attributes; it never waits on Redis for the canary. A plan that no longer routes (rolled back,
promoted, held at 0) sets the share to 0: every person is back on the live policy at once.

The same poll flushes the decision path's per-arm request counts (:class:`CanaryTally`). A store
that cannot be reached keeps the last plan in force and is retried at the next poll; a candidate
version that cannot be loaded is not routed to (share 0), logged, and retried when the plan changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agent_service.agent.serving.server import AgentServer
from agent_service.errors import ModelError, StoreError
from agent_service.metrics import Metrics
from agent_service.pipeline.canary_tally import CanaryTally
from agent_service.pipeline.decide import Decider
from agent_service.ports.canary import CanaryPlan, CanaryStore
from agent_service.runtime.event_loop import cancel_all

__all__ = ["CanaryWatcher"]

log = logging.getLogger(__name__)


class CanaryWatcher:
    """See the module docstring.

    :param store: where the plan is.
    :param decider: the bidder's decision path (its ``candidate``, ``canary_share`` and ``canary_salt``).
    :param tally: the per-arm counts (its plan is kept equal to the one applied).
    :param load: builds the policy serving a registry version (blocking; run in a thread).
    :param metrics: ``gaelp_canary_share`` as this bidder applies it.
    :param poll_s: seconds between reads of the plan.
    """

    def __init__(self, store: CanaryStore, decider: Decider, tally: CanaryTally, load: Callable[[int], AgentServer],
                 metrics: Metrics, poll_s: float = 0.25) -> None:
        self.store, self.decider, self.tally, self.load = store, decider, tally, load
        self.metrics, self.poll_s = metrics, poll_s
        self.applied: CanaryPlan | None = None
        self._static = (decider.candidate, decider.canary_share, decider.canary_salt)
        """The ``[serve] canary_share`` routing of the configuration, restored when no canary routes."""
        self._loaded: tuple[int, AgentServer] | None = None
        self._task: asyncio.Task[None] | None = None
        decider.on_decided = tally.decided

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])
            self._task = None
        with contextlib.suppress(StoreError):
            await self.tally.flush()

    async def check(self) -> CanaryPlan | None:
        """Apply the store's plan if it changed; the plan in force."""
        try:
            plan = await self.store.plan()
        except StoreError as exc:
            log.warning("canary plan unreadable, keeping %s: %s", self.applied, exc)
            return self.applied
        if plan == self.applied:
            return plan
        d = self.decider
        if plan is not None and plan.routing:
            try:
                server = await self._candidate(plan.candidate_version)
            except (ModelError, StoreError) as exc:
                log.error("canary %s: candidate v%d cannot be loaded, not routing to it: %s", plan.experiment_id,
                          plan.candidate_version, exc)
                self._route_none(plan)
                self.tally.plan = None  # nothing is served by the candidate: nothing to compare
                return self.applied
            d.use_candidate(server)
            d.canary_salt, d.canary_share = f"canary:{plan.experiment_id}", plan.share
            self.tally.plan = plan
        else:
            self._route_none(plan)
        self.applied = plan
        if plan is not None:
            self.metrics.canary_share.labels(plan.experiment_id).set(d.canary_share)
            log.info("canary %s %s: candidate v%d on %.1f%% of persons", plan.experiment_id, plan.state,
                     plan.candidate_version, 100 * d.canary_share)
        return plan

    def _route_none(self, plan: CanaryPlan | None) -> None:
        d = self.decider
        d.candidate, d.canary_share, d.canary_salt = self._static
        self.tally.plan = plan
        self.applied = plan

    async def _candidate(self, version: int) -> AgentServer:
        if self._loaded is None or self._loaded[0] != version:
            self._loaded = (version, await asyncio.to_thread(self.load, version))
        return self._loaded[1]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()
            try:
                await self.tally.flush()
            except StoreError as exc:
                log.warning("canary request counts not written (retried at the next poll): %s", exc)
