"""Per-arm live outcomes of the canary: what each person's requests, spend and credited value were
in the arm that served them, into the canary store (:mod:`agent_service.ports.canary`).

The arm of a decision is its model version: the plan's candidate version is the candidate arm, any
other version is control (the learner may publish new live versions during the canary). Nothing is
tallied unless the plan routes (a running canary with a share above 0).

- Decision path (:meth:`CanaryTally.decided`, a plain call per batch): requests, no-bids and errors
  (no-bids for ``tmax``: the bidder failed the deadline) per person are summed in memory and
  written by :meth:`flush` off the bid path (the bidder's canary watcher calls it every poll). A
  flush is one keyed batch; a failed flush is retried with the same key, so it applies once.
  Redelivered requests reuse their stored decision and are not passed here again.
- Stream (:meth:`spent`, :meth:`credited`): spend from won auction results and credited conversion
  value, keyed ``spend:<decision>`` and ``value:<conversion>:<decision>``: a redelivered result or
  conversion adds nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from agent_service.contracts.events import Decision
from agent_service.ports.canary import ArmTally, CanaryPlan, CanaryStore

__all__ = ["ERROR_REASONS", "CanaryTally"]

ERROR_REASONS: frozenset[str] = frozenset({"tmax"})
"""No-bid reasons that count as failed requests for the error-rate guardrail."""


class CanaryTally:
    """See the module docstring.

    :param store: where tallies go.
    """

    def __init__(self, store: CanaryStore) -> None:
        self.store = store
        self.plan: CanaryPlan | None = None
        """The plan tallies follow (set by the canary watcher)."""
        self._pending: dict[tuple[str, str], list[int]] = {}
        self._pending_exp = ""
        self._unsent: tuple[str, str, list[ArmTally]] | None = None
        """(experiment, key, tallies) of a flush not yet acknowledged: retried as it is."""

    def arm(self, model_version: int) -> str | None:
        """The arm a decision of ``model_version`` belongs to, or None when no canary routes."""
        plan = self.plan
        if plan is None or not plan.routing:
            return None
        return "candidate" if model_version == plan.candidate_version else "control"

    # --- decision path --------------------------------------------------------------------
    def decided(self, decisions: Sequence[Decision]) -> None:
        """Count newly stored live decisions (in memory; :meth:`flush` writes them)."""
        plan = self.plan
        if plan is None or not plan.routing:
            return
        if plan.experiment_id != self._pending_exp:
            self._pending, self._pending_exp = {}, plan.experiment_id
        for d in decisions:
            if d.shadow:
                continue
            arm = "candidate" if d.model_version == plan.candidate_version else "control"
            row = self._pending.get((arm, d.person_id))
            if row is None:
                row = self._pending[(arm, d.person_id)] = [0, 0, 0]
            row[0] += 1
            if not d.bid:
                row[1] += 1
                row[2] += d.no_bid_reason in ERROR_REASONS

    async def flush(self) -> None:
        """Write the counted requests (one keyed batch; retried under the same key after a failure)."""
        if self._unsent is None and self._pending:
            rows = [ArmTally(arm, person, requests=r, no_bids=n, errors=e)
                    for (arm, person), (r, n, e) in self._pending.items()]
            self._unsent = (self._pending_exp, f"req:{uuid.uuid4().hex}", rows)
            self._pending = {}
        if self._unsent is not None:
            exp, key, rows = self._unsent
            await self.store.add(exp, [(key, rows)])
            self._unsent = None

    # --- stream ---------------------------------------------------------------------------
    async def spent(self, items: Sequence[tuple[Decision, int]]) -> None:
        """Spend (micros) of won auctions, per decision."""
        await self._add([(f"spend:{d.id}", d, {"spend_micros": micros}) for d, micros in items if micros > 0])

    async def credited(self, items: Sequence[tuple[str, Decision, int]]) -> None:
        """Conversion value (micros) credited to decisions: (conversion id, decision, micros)."""
        await self._add([(f"value:{conv}:{d.id}", d, {"value_micros": micros}) for conv, d, micros in items
                         if micros > 0])

    async def _add(self, items: Sequence[tuple[str, Decision, dict[str, int]]]) -> None:
        plan = self.plan
        if plan is None or not plan.routing:
            return
        batches = []
        for key, d, amounts in items:
            arm = self.arm(d.model_version)
            if arm is not None and not d.shadow:
                batches.append((key, [ArmTally(arm, d.person_id, **amounts)]))
        if batches:
            await self.store.add(plan.experiment_id, batches)

