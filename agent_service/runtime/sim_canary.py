"""A canary inside ``gaelp simulate``: ``gaelp promote``'s controller, the bidder's canary watcher and the
per-arm tallies of ``gaelp serve``, on the in-memory canary store, stepped in event time.

The parts are the live ones (:class:`~agent_service.runtime.canary_controller.CanaryController`,
:class:`~agent_service.runtime.canary_watch.CanaryWatcher`,
:class:`~agent_service.pipeline.canary_tally.CanaryTally`); only the clock and the cadence differ. The
run calls :meth:`SimCanary.step` at the end of every slot: the decision path's request counts are
flushed, the controller evaluates when ``[canary] evaluate_every_s`` of event time has passed since
its last step (every slot at the default 60 s: 15 simulated minutes, hourly while conversions drain
in), and the watcher applies the new plan before the next slot's requests. Steps go on after the
traffic: conversions keep landing and the test keeps reading them.

The candidate (``[simulation] canary_candidate``) must be a registry version other than the live one,
and the decision path serves the newest version, so :func:`publish_candidate` puts the candidate in
and then republishes the live weights above it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from agent_service.adapters.memory_canary import MemoryCanaryStore
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.serving.hybrid import spec_of
from agent_service.agent.serving.server import AgentServer
from agent_service.config import GaelpConfig, parse_canary_candidate
from agent_service.creatives import CatalogueFile
from agent_service.experiments.canary import CanaryEvent
from agent_service.experiments.sequential import mixture_radius
from agent_service.metrics import Metrics
from agent_service.pipeline.canary_tally import CanaryTally
from agent_service.ports.canary import ArmSummary, CanaryPlan
from agent_service.ports.registry import ModelRegistry
from agent_service.runtime.assembly import Service, candidate_loader
from agent_service.runtime.canary_controller import CanaryController, summarise
from agent_service.runtime.canary_watch import CanaryWatcher
from agent_service.units import HOUR_MS

__all__ = ["CANARY_LOG", "SimCanary", "publish_candidate"]

CANARY_LOG = "canary.jsonl"
"""The controller's steps, one JSON record a line (what ``gaelp promote`` logs as ``canary {json}``)."""


def publish_candidate(cfg: GaelpConfig, registry: ModelRegistry, creatives: int) -> tuple[int, float]:
    """Put ``[simulation] canary_candidate`` into ``registry`` below a republished copy of the live version.

    :returns: (candidate version, its bid scale).
    """
    spec = parse_canary_candidate(cfg.simulation.canary_candidate)
    assert spec is not None
    kind, arg = spec
    live = registry.latest_version()
    if kind == "seed":
        fresh = HybridLearner(spec_of(cfg.hybrid, creatives), cfg.hybrid, cfg.reward, None, seed=int(arg))
        candidate = registry.publish(fresh.state())
    else:  # live (A/A) and overbid: the live version's own weights
        candidate = live
    registry.publish(registry.load(live))  # the live weights newest again: the decision path serves them
    return candidate, arg if kind == "overbid" else 1.0


class SimCanary:
    """See the module docstring.

    :param cfg: ``[canary]`` and ``[simulation] canary_candidate``.
    :param registry: the run's registry (:func:`publish_candidate` has run on it).
    :param service: the run's decision path and flow (the watcher routes its decider; the flow tallies).
    :param candidate: (version, bid scale) from :func:`publish_candidate`.
    :param creatives: policy width. :param seed: the candidate's sampling seed.
    :param catalogue: the creative catalogue the candidate serves.
    """

    def __init__(self, cfg: GaelpConfig, registry: ModelRegistry, service: Service, metrics: Metrics,
                 candidate: tuple[int, float], creatives: int, seed: int, catalogue: CatalogueFile | None) -> None:
        self.cfg = cfg
        self.candidate_version, self.bid_scale = candidate
        self.store = MemoryCanaryStore()
        self.now = 0
        self.controller = CanaryController(self.store, registry, cfg.canary, lambda: self.now, metrics)
        tally = CanaryTally(self.store)
        service.flow.outcomes.canary = tally
        self._load = candidate_loader(cfg, creatives, registry, seed, catalogue)
        self.watcher = CanaryWatcher(self.store, service.decider, tally, self._candidate, metrics)
        self.records: list[dict[str, Any]] = []
        self._every_ms = int(cfg.canary.evaluate_every_s * 1000)
        self._start_ms = 0
        self._last_ms = 0

    def _candidate(self, version: int) -> AgentServer:
        server = self._load(version)
        if version == self.candidate_version:
            server.agent.bid_scale = self.bid_scale
        return server

    async def start(self, now_ms: int) -> None:
        """Start the canary at event time ``now_ms`` and route its first share."""
        self.now = self._start_ms = self._last_ms = now_ms
        self._record(await self.controller.start(self.candidate_version), await self.store.plan())
        await self.watcher.check()

    async def step(self, now_ms: int, force: bool = False) -> None:
        """The end of a slot: flush the request counts; evaluate when due (or ``force``); apply the plan."""
        await self.watcher.tally.flush()
        if not force and now_ms - self._last_ms < self._every_ms:
            return
        self.now = self._last_ms = now_ms
        self._record(await self.controller.step(), await self.store.plan())
        await self.watcher.check()

    def _record(self, events: list[CanaryEvent], plan: CanaryPlan | None) -> None:
        for e in events:
            rec = _clean(e.as_record())
            rec["hours"] = round((e.at_ms - self._start_ms) / HOUR_MS, 2)
            rec["candidate_version"] = self.candidate_version
            rec["routed_share"] = plan.share if plan is not None else 0.0
            self.records.append(rec)

    async def report(self) -> dict[str, Any]:
        """What the report shows: the candidate, the steps, the final decision, each arm's value per dollar."""
        plan = await self.store.plan()
        assert plan is not None
        sums = await self.store.summary(plan.experiment_id)
        test = self.cfg.canary.test
        last = self.records[-1] if self.records else {}
        transitions = [r for r in self.records if r["kind"] != "evaluated"]
        return {
            "candidate": self.cfg.simulation.canary_candidate, "candidate_version": self.candidate_version,
            "control_version": plan.control_version, "experiment_id": plan.experiment_id,
            "stages": list(self.cfg.canary.stages), "evaluate_every_s": self.cfg.canary.evaluate_every_s,
            "evaluations": sum(r["kind"] == "evaluated" for r in self.records),
            "final": {"state": plan.state, "reason": plan.reason, "share": plan.share, "stage": plan.stage,
                      "hours": round((plan.updated_ms - self._start_ms) / HOUR_MS, 2)},
            "lift": {k: last.get(k) for k in ("lift", "lower", "upper")},
            "alpha": test.alpha,
            "arms": {arm: _arm(s, test.alpha, test.mixture_sd) for arm, s in sums.items()},
            "transitions": transitions,
            "timeline": self.records,
        }

    def write_log(self, out_dir: Path) -> None:
        """The steps as ``out_dir/canary.jsonl``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / CANARY_LOG).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in self.records))


def _arm(s: ArmSummary, alpha: float, tau: float) -> dict[str, Any]:
    """An arm's totals and its value per dollar with the always-valid interval of the canary's test."""
    out: dict[str, Any] = summarise(s)
    ratio = s.ratio("value_micros", "spend_micros")
    r = mixture_radius(ratio.log_ratio_var(), alpha, tau)
    vpd = ratio.ratio
    out["value_per_dollar_interval"] = ([vpd * math.exp(-r), vpd * math.exp(r)]
                                        if math.isfinite(r) and vpd > 0 else [None, None])
    return _clean(out)


def _clean(x: Any) -> Any:
    """NaN and inf as None (JSON has neither); floats rounded to 6 places."""
    if isinstance(x, float):
        return round(x, 6) if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x
