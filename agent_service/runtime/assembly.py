"""Wiring the domain together: the same assembly for simulate, serve and tests.

The decision path serves the hybrid agent (:class:`~agent_service.agent.serving.server.AgentServer`)
from the model registry; the in-process learner (:class:`~agent_service.agent.learning.online.OnlineLearner`)
trains it from the experience topic and publishes versions there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from agent_service.agent.learning.online import OnlineLearner
from agent_service.agent.serving.server import AgentServer
from agent_service.config import GaelpConfig
from agent_service.creatives import CatalogueFile
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import Decider
from agent_service.pipeline.experiments import LiveExperiments
from agent_service.pipeline.flow import Flow
from agent_service.pipeline.pseudonym import ENV_SALT, Pseudonymizer
from agent_service.ports.experiments import ExperimentStore
from agent_service.ports.registry import ModelRegistry
from agent_service.ports.store import StateStore

__all__ = ["Service", "build_learner", "build_service", "candidate_loader", "live_experiments", "pinned"]


class Service(NamedTuple):
    flow: Flow
    decider: Decider
    policy: AgentServer


def build_service(cfg: GaelpConfig, store: StateStore, registry: ModelRegistry, metrics: Metrics,
                  partitions: Mapping[str, int], clock: Callable[[], int], campaign: str,
                  creatives: int, seed: int, shadow: bool = False, catalogue: CatalogueFile | None = None) -> Service:
    """The decision path and the flow over ``store``, serving versions from ``registry``.

    :param partitions: partition count per input topic (for watermarks).
    :param clock: wall clock in ms for requests without an event time.
    :param creatives: number of creative variants the policy chooses from.
    :param seed: seed of the policy's sampling stream.
    :param catalogue: the creative catalogue (None: every creative slot, always).
    """
    policy = AgentServer(cfg.hybrid, creatives, cfg.budget.daily_usd, registry, seed=seed, bid_rule=cfg.serve.bid_rule)
    policy.catalogue = catalogue
    # The agent hashes (pseudonymised) person ids into A/B arms and journey keys, so an embedded
    # run without GAELP_ID_SALT uses a salt derived from its seed: the same seed, the same run.
    ids = Pseudonymizer.from_env() if os.environ.get(ENV_SALT) else Pseudonymizer(f"gaelp-embedded-seed-{seed}".encode())
    decider = Decider(cfg, store, policy, metrics, campaign=campaign, shadow=shadow, ids=ids)
    if cfg.serve.candidate_version and cfg.serve.canary_share > 0:  # the shadow alone: the candidate role's
        decider.candidate = pinned(cfg, creatives, registry, cfg.serve.candidate_version, seed + 1)
        decider.candidate.catalogue = catalogue
        decider.canary_share = cfg.serve.canary_share
    flow = Flow(cfg, store, decider, metrics, partitions=partitions, clock=clock)
    if cfg.experiments:
        flow.use_experiments(live_experiments(cfg, store, metrics, catalogue or CatalogueFile("", creatives, creatives)))
    return Service(flow, decider, policy)


def candidate_loader(cfg: GaelpConfig, creatives: int, registry: ModelRegistry, seed: int,
                     catalogue: CatalogueFile | None = None) -> Callable[[int], AgentServer]:
    """Builds the pinned policy of a registry version (the canary's candidate; blocking)."""
    def load(version: int) -> AgentServer:
        server = pinned(cfg, creatives, registry, version, seed)
        server.catalogue = catalogue
        return server
    return load


def live_experiments(cfg: GaelpConfig, store: object, metrics: Metrics, catalogue: CatalogueFile) -> LiveExperiments:
    """The ``[[experiments]]`` over the state store's connection (Redis) or in memory (embedded runs)."""
    from agent_service.adapters.memory_experiments import MemoryExperimentStore
    from agent_service.adapters.redis_experiments import RedisExperimentStore
    from agent_service.adapters.redis_store import RedisStore

    results: ExperimentStore = (RedisExperimentStore(store, store.prefix) if isinstance(store, RedisStore)
                                else MemoryExperimentStore())
    return LiveExperiments(cfg.experiments, results, catalogue, metrics, cfg.join.window_days)


def pinned(cfg: GaelpConfig, creatives: int, registry: ModelRegistry, version: int, seed: int) -> AgentServer:
    """A policy serving one registry version, never swapped (a candidate beside the live one)."""
    server = AgentServer(cfg.hybrid, creatives, cfg.budget.daily_usd, None, seed=seed, bid_rule=cfg.serve.bid_rule)
    server.adopt(server.prepare(registry.load(version), version))
    return server


def build_learner(cfg: GaelpConfig, registry: ModelRegistry, creatives: int, seed: int,
                  start: dict[str, Any] | None = None) -> OnlineLearner:
    """The in-process learner: it publishes version 1 (the initial policy, or the trained checkpoint
    ``start``: ``runtime/trained.py``) into an empty registry and otherwise resumes from the newest
    published version (a restart must not publish fresh weights over the model being served)."""
    learner = OnlineLearner(cfg.hybrid, cfg.reward, creatives, cfg.budget.daily_usd, registry, seed=seed)
    latest = registry.latest_version()
    if latest == 0 and start is not None:
        learner.start_from(start)
    elif latest == 0:
        learner.publish()
    else:
        learner.resume(latest)
    return learner
