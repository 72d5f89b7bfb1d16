"""The skeleton policy learns from logged experience, swaps versions safely and rejects divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agent_service.agent.features import AVAILABLE, FEATURES
from agent_service.agent.policy import PolicyServer
from agent_service.agent.registry import FileRegistry, MemoryRegistry
from agent_service.agent.reinforce import ReinforceLearner
from agent_service.config import AgentConfig
from agent_service.contracts.events import Action, Experience
from agent_service.errors import ModelError

D = len(FEATURES)


def _bandit_round(server: PolicyServer, rng: np.random.Generator, n: int, round_no: int) -> tuple[list[Experience], float]:
    """Contexts in two buckets; creative 1 pays in bucket 0, creative 2 in bucket 1."""
    states = np.zeros((n, D), dtype=np.float32)
    bucket = rng.integers(0, 2, size=n)
    states[np.arange(n), D - 8 + bucket] = 1.0
    states[:, AVAILABLE] = 1.0
    acts = server.act(states, np.ones((n, 3), dtype=bool))
    best = np.where(bucket == 0, 1, 2)
    hit = acts.creative == best
    rewards = (rng.random(n) < np.where(hit, 0.6, 0.1)).astype(float)
    exps = [Experience(id=f"{round_no}-{i}", event_time=i, decision_id=f"{round_no}-{i}", kind="click",
                       state=states[i].tolist(), propensity=float(acts.propensity[i]), model_version=acts.version,
                       reward=float(rewards[i]),
                       action=Action(bid_cpm_micros=0, creative=int(acts.creative[i]), channel="social", segment=0,
                                     multiplier=int(acts.multiplier[i])))
            for i in range(n)]
    return exps, float(hit.mean())


def test_policy_learns_the_best_creative_per_context() -> None:
    cfg = AgentConfig(update_every=512, lr=1e-2)
    registry = MemoryRegistry()
    learner = ReinforceLearner(cfg, D, 4, registry, seed=0)
    learner.publish()
    server = PolicyServer(cfg, D, 4, registry, seed=1)
    rng = np.random.default_rng(0)
    hit_rates = []
    for r in range(25):
        server.sync()
        exps, hit = _bandit_round(server, rng, 512, r)
        hit_rates.append(hit)
        for e in exps:
            learner.observe(e)
        assert learner.maybe_update() is not None
    assert np.mean(hit_rates[:3]) < 0.35  # about 1/4 at random
    assert np.mean(hit_rates[-3:]) > 0.7
    assert server.version == registry.latest_version() - 1  # served the previous publication


def test_redelivered_experience_is_ignored() -> None:
    learner = ReinforceLearner(AgentConfig(), D, 4, MemoryRegistry(), seed=0)
    exp = Experience(id="x", event_time=0, decision_id="d", kind="click", state=[0.0] * D, propensity=0.5,
                     model_version=1, reward=1.0,
                     action=Action(bid_cpm_micros=0, creative=0, channel="social", segment=0))
    assert learner.observe(exp) and not learner.observe(exp)


def test_hot_swap_only_to_newer_versions_and_batches_use_one_version(tmp_path) -> None:
    registry = FileRegistry(tmp_path)
    cfg = AgentConfig()
    learner = ReinforceLearner(cfg, D, 4, registry, seed=0)
    assert learner.publish() == 1
    server = PolicyServer(cfg, D, 4, registry, seed=0)
    assert server.sync() == 1
    with torch.no_grad():
        learner.net.creative.bias[:] = torch.tensor([5.0, 0.0, 0.0, 0.0])
    assert learner.publish() == 2
    states = np.zeros((64, D), dtype=np.float32)
    acts = server.act(states, np.ones((64, 3), bool))
    assert acts.version == 1  # not swapped until sync
    assert server.sync() == 2
    acts = server.act(states, np.ones((64, 3), bool))
    assert acts.version == 2 and (acts.creative == 0).mean() > 0.8
    assert registry.rollback() == 3
    assert server.sync() == 3
    assert (server.act(states, np.ones((64, 3), bool)).creative == 0).mean() < 0.6  # version 1's weights again


def test_diverged_update_is_rejected_and_weights_kept() -> None:
    registry = MemoryRegistry()
    learner = ReinforceLearner(AgentConfig(update_every=4, batch_size=4), D, 4, registry, seed=0)
    learner.publish()
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    bad = [Experience(id=f"n{i}", event_time=0, decision_id=f"n{i}", kind="click", state=[math.nan] * D,
                      propensity=0.5, model_version=1, reward=1.0 + i,
                      action=Action(bid_cpm_micros=0, creative=0, channel="social", segment=0)) for i in range(4)]
    for e in bad:
        learner.observe(e)
    stats = learner.maybe_update()
    assert stats is not None and stats.rejected and learner.rejected == 1
    assert registry.latest_version() == 1
    for k, v in learner.net.state_dict().items():
        assert torch.equal(v, before[k])


def test_registry_refuses_unknown_versions_and_bad_rollback(tmp_path) -> None:
    registry = FileRegistry(tmp_path)
    with pytest.raises(ModelError):
        registry.load(7)
    with pytest.raises(ModelError):
        registry.rollback()
