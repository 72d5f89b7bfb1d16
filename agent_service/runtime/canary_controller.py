"""The controller of ``gaelp promote``: starts a canary, evaluates it from the live per-arm totals,
moves it along the ramp, promotes or rolls back — and writes each step where bidders read it.

One step (:meth:`CanaryController.step`): read the plan and each arm's sums over its persons from
the canary store (:class:`~agent_service.ports.canary.ArmSummary`: a constant-size read however many
persons there are); rebuild the :class:`~agent_service.experiments.canary.Canary` at the plan's
state and give it those sums (value per dollar for the sequential test; requests, no-bids, errors
and spend for the guardrails); evaluate; apply the outcome:

- ``stage_advanced``: the plan's share grows (nested buckets: candidate persons stay candidates);
- ``promoted``: the registry's live version becomes the candidate's weights (republished as the
  newest version, :func:`~agent_service.ports.registry.promote`), then the share drops to 0 — every
  bidder serves the promoted weights as its live model;
- ``rolled_back``: share 0, the live version untouched — every bidder is back on control within a poll;
- ``held``: the share stays frozen (the horizon passed without a decision; an operator decides:
  ``gaelp promote --abort`` ends it with share 0).

Every event is one structured log line (``canary {json}``) and updates the ``gaelp_canary_*``
metrics. State lives only in the store, so ``--once`` steps from cron continue the same canary.

Persons in both arms (control before a ramp stage moved them to the candidate) count in the
candidate arm only. The sums are over each person's cumulative totals, so every step sees each
person once with their totals so far.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import msgspec

from agent_service.config.experiments import CanaryConfig
from agent_service.errors import ConfigError
from agent_service.experiments.canary import Canary, CanaryEvent, CanaryState
from agent_service.experiments.sequential import Arm
from agent_service.metrics import Metrics
from agent_service.ports.canary import FIELDS, ArmSummary, CanaryPlan, CanaryStore
from agent_service.ports.registry import ModelRegistry, promote

__all__ = ["CanaryController", "summarise"]

log = logging.getLogger(__name__)


class CanaryController:
    """See the module docstring.

    :param store: the canary store bidders read the plan from and write the tallies to.
    :param registry: the model registry (the candidate must be in it; promotion republishes it).
    :param config: the canary's share, ramp, test, guardrails and horizon.
    :param clock: wall clock in ms (tests pass a fake one).
    :param metrics: where the ``gaelp_canary_*`` metrics go.
    """

    def __init__(self, store: CanaryStore, registry: ModelRegistry, config: CanaryConfig,
                 clock: Callable[[], int], metrics: Metrics | None = None) -> None:
        self.store, self.registry, self.config, self.clock = store, registry, config, clock
        self.metrics = metrics or Metrics()

    async def start(self, candidate_version: int, experiment_id: str | None = None) -> list[CanaryEvent]:
        """Start serving ``candidate_version`` to the first share of persons.

        :param candidate_version: a registry version other than the live one.
        :param experiment_id: salts who sees the candidate (default ``v<candidate>-<start ms>``).
        :raises ConfigError: a canary is already running, or the version is unknown or live.
        """
        current = await self.store.plan()
        if current is not None and current.state == CanaryState.RUNNING:
            raise ConfigError("--candidate", f"canary {current.experiment_id} of v{current.candidate_version} is "
                              "still running; wait for it to end")
        versions = await asyncio.to_thread(self.registry.versions)
        live = await asyncio.to_thread(self.registry.latest_version)
        if candidate_version not in versions:
            raise ConfigError("--candidate", f"version {candidate_version} is not in the registry "
                              f"(held: {versions[0] if versions else '-'}..{live})")
        if candidate_version == live:
            raise ConfigError("--candidate", f"version {candidate_version} is already the live version")
        now = self.clock()
        canary = Canary(experiment_id or f"v{candidate_version}-{now}", self.config)
        event = canary.start(now)
        plan = CanaryPlan(canary.experiment_id, candidate_version, canary.share, str(canary.state), canary.stage,
                          canary.seq, now, 0, live, now, event.reason)
        await self.store.put_plan(plan)
        self._emit([event], plan)
        return [event]

    async def step(self) -> list[CanaryEvent]:
        """One evaluation of the running canary (nothing when none runs); the events it produced."""
        plan = await self.store.plan()
        if plan is None or plan.state != CanaryState.RUNNING:
            return []
        canary = self._resume(plan)
        for arm, sums in (await self.store.summary(plan.experiment_id)).items():
            canary.add_stats(Arm(arm), sums.ratio("value_micros", "spend_micros"), sums.guardrails())
        now = self.clock()
        events = canary.evaluate(now)
        if not events:
            return []
        reason = events[-1].reason
        if canary.state is CanaryState.PROMOTED:
            live = await asyncio.to_thread(promote, self.registry, plan.candidate_version)
            reason = f"{reason}; live is now v{live} (weights of v{plan.candidate_version})"
        share = canary.share if canary.state in (CanaryState.RUNNING, CanaryState.HELD) else 0.0
        new = CanaryPlan(plan.experiment_id, plan.candidate_version, share, str(canary.state), canary.stage,
                         canary.seq, plan.started_ms, canary.stage_start_persons, plan.control_version, now, reason)
        await self.store.put_plan(new)
        self._emit(events, new)
        return events

    async def run(self, stop: asyncio.Event | None = None, every_s: float | None = None) -> CanaryPlan | None:
        """Step every ``every_s`` (default ``config.evaluate_every_s``) until the canary ends or ``stop`` is set."""
        every = self.config.evaluate_every_s if every_s is None else every_s
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await self.step()
            plan = await self.store.plan()
            if plan is None or plan.state != CanaryState.RUNNING:
                return plan
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
        return await self.store.plan()

    async def abort(self, reason: str = "stopped by an operator") -> CanaryPlan | None:
        """End a running or held canary now: share 0, the live version untouched."""
        plan = await self.store.plan()
        if plan is None or plan.state not in (CanaryState.RUNNING, CanaryState.HELD):
            return plan
        now = self.clock()
        new = msgspec.structs.replace(plan, share=0.0, state=str(CanaryState.ROLLED_BACK), seq=plan.seq + 1,
                                      updated_ms=now, reason=reason)
        await self.store.put_plan(new)
        nan = math.nan
        self._emit([CanaryEvent(plan.experiment_id, new.seq, now, "rolled_back", CanaryState.ROLLED_BACK, plan.stage,
                                0.0, reason, nan, nan, nan, 0, 0, 0, 0)], new)
        return new

    async def status(self) -> dict[str, Any]:
        """The plan and each arm's totals so far (no evaluation, no transition)."""
        plan = await self.store.plan()
        if plan is None:
            return {"plan": None}
        sums = await self.store.summary(plan.experiment_id)
        return {"plan": {f: getattr(plan, f) for f in plan.__struct_fields__},
                "arms": {arm: summarise(s) for arm, s in sums.items()}}

    # --- plumbing ----------------------------------------------------------------------------
    def _resume(self, plan: CanaryPlan) -> Canary:
        canary = Canary(plan.experiment_id, self.config)
        canary.restore(CanaryState(plan.state), plan.stage, plan.seq, plan.started_ms, plan.stage_start_persons)
        return canary

    def _emit(self, events: list[CanaryEvent], plan: CanaryPlan) -> None:
        for event in events:
            rec = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in event.as_record().items()}
            rec["candidate_version"] = plan.candidate_version
            rec["routed_share"] = plan.share
            log.info("canary %s", json.dumps(rec, sort_keys=True))
            self.metrics.record_canary(event)


def summarise(s: ArmSummary) -> dict[str, float]:
    """An arm in a few numbers (persons, requests, spend, value, value per dollar, rates)."""
    def total(f: str) -> float:
        return float(s.sums[FIELDS.index(f)])

    requests, spend, value = int(round(total("requests"))), total("spend_micros"), total("value_micros")
    return {"persons": s.persons, "converting_persons": int(s.positive[FIELDS.index("value_micros")]),
            "requests": requests, "spend_usd": round(spend, 6), "value_usd": round(value, 6),
            "value_per_dollar": value / spend if spend > 0 else math.nan,
            "no_bid_rate": total("no_bids") / requests if requests else math.nan,
            "error_rate": total("errors") / requests if requests else math.nan}
