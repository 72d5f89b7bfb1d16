"""Wiring the domain together: the same assembly for simulate, serve and tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

from agent_service.agent.features import FEATURES
from agent_service.agent.policy import PolicyServer
from agent_service.agent.registry import ModelRegistry
from agent_service.agent.reinforce import ReinforceLearner
from agent_service.config import GaelpConfig
from agent_service.metrics import Metrics
from agent_service.pipeline.decide import Decider
from agent_service.pipeline.flow import Flow
from agent_service.ports.store import StateStore

__all__ = ["Service", "build_learner", "build_service"]


class Service(NamedTuple):
    flow: Flow
    decider: Decider
    policy: PolicyServer


def build_service(cfg: GaelpConfig, store: StateStore, registry: ModelRegistry, metrics: Metrics,
                  partitions: Mapping[str, int], clock: Callable[[], int], campaign: str,
                  creatives: int, seed: int, shadow: bool = False) -> Service:
    """The decision path and the flow over ``store``, serving versions from ``registry``.

    :param partitions: partition count per input topic (for watermarks).
    :param clock: wall clock in ms for requests without an event time.
    :param creatives: number of creative variants the policy chooses from.
    :param seed: seed of the policy's sampling stream.
    """
    policy = PolicyServer(cfg.agent, len(FEATURES), creatives, registry, seed=seed)
    decider = Decider(cfg, store, policy, metrics, campaign=campaign, shadow=shadow)
    flow = Flow(cfg, store, decider, metrics, partitions=partitions, clock=clock)
    return Service(flow, decider, policy)


def build_learner(cfg: GaelpConfig, registry: ModelRegistry, creatives: int, seed: int) -> ReinforceLearner:
    """The in-process learner; publishes version 1 (the initial policy) if the registry is empty."""
    learner = ReinforceLearner(cfg.agent, len(FEATURES), creatives, registry, seed=seed)
    if registry.latest_version() == 0:
        learner.publish()
    return learner
