"""Serving: bids in range and never under the floor, logged propensities, hot-swap by version."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent_service.adapters.registry import MemoryRegistry
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.learning.ppo import creative_bonus, policy_dists
from agent_service.agent.model.state import (
    CampaignStats,
    JourneyArrays,
    OpportunityArrays,
    PacingInputs,
    build_states,
)
from agent_service.agent.serving.hybrid import HybridAgent, spec_of
from agent_service.config import RewardConfig
from agent_service.config.agent import HybridConfig
from agent_service.errors import ModelError

T0 = 1_767_225_600_000 + 10 * 3_600_000
CFG = HybridConfig(lstm_hidden=16, hidden=32)
SPEC = spec_of(CFG, 6)


def _batch(n: int, rng: np.random.Generator):
    opp = OpportunityArrays(T0 + rng.integers(0, 3_600_000, n), rng.integers(0, 3, n), rng.random((n, 3)) < 0.7,
                            rng.choice([0.2, 0.5, 1.0, 4.0], n), np.full((n, SPEC.segments), 1 / SPEC.segments),
                            np.ones(n), np.ones(n, np.int64), rng.integers(0, 4, n), np.zeros(n), np.arange(n))
    opp.channel_mask[~opp.channel_mask.any(1), 2] = True
    b = build_states(SPEC, opp, JourneyArrays.empty(n, SPEC.max_touches), PacingInputs(15, 3, 0, 0.4, 0.4),
                     CampaignStats(6))
    return b, opp


@pytest.mark.parametrize("z", [-3.0, 0.0, 1.6])
def test_bids_stay_in_range_never_under_the_floor_and_never_over_the_budget(z: float) -> None:
    agent = HybridAgent(SPEC, CFG, seed=0)
    agent.z = z
    rng = np.random.default_rng(0)
    b, opp = _batch(2000, rng)
    left = rng.choice([0.0001, 0.004, 20.0], 2000)
    acts = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, left)
    bid = acts.bid_cpm_usd
    placed = bid > 0
    assert ((bid[placed] >= 0.5) & (bid[placed] <= 10.0)).all()
    assert (bid[placed] >= opp.floor_cpm_usd[placed]).all()
    assert (bid[placed] / 1000 <= left[placed]).all()
    assert (bid[acts.channel == 0] == 0).all()
    assert opp.channel_mask[np.arange(2000), acts.channel].all()  # only offered channels
    raw = 1000 * np.exp(z) * acts.value_usd
    assert (bid[(raw < opp.floor_cpm_usd)] == 0).all()
    assert np.allclose(acts.bid_cpm_usd[placed], np.clip(raw, np.maximum(opp.floor_cpm_usd, 0.5), 10)[placed])


def test_propensity_is_the_probability_of_the_whole_action() -> None:
    agent = HybridAgent(SPEC, CFG, seed=1)
    rng = np.random.default_rng(1)
    _, p = agent.begin_slot(np.zeros(9, np.float32))
    b, opp = _batch(500, rng)
    acts = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0)
    assert ((acts.propensity > 0) & (acts.propensity <= 1)).all()
    assert np.allclose(acts.propensity, np.exp(acts.logp_policy) * p)
    greedy = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0, explore=False)
    again = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0, explore=False)
    assert np.array_equal(greedy.creative, again.creative) and (greedy.propensity == 1).all()


def test_served_probabilities_are_the_learners_policy_with_the_value_guide() -> None:
    agent = HybridAgent(SPEC, CFG, seed=4)
    agent.stats.impressions[:] = [5000, 5000, 5000, 5000, 5000, 0]  # creative 5 unseen: bonus 0.5 vs 0.05
    agent.stats.segment_impressions[:] = agent.stats.impressions  # the same in every segment
    agent.stats.clicks[:] = [100, 100, 100, 100, 100, 0]
    with torch.no_grad():  # a click model that prefers creative 2 of those seen; the head is not used
        agent.net.creative_bias.copy_(torch.tensor([0.0, 0, 0.5, 0, -0.2, 0.1]))
        agent.net.creative.bias.copy_(torch.tensor([5.0, 0, 0, 0, 0, 0]))
    rng = np.random.default_rng(4)
    b, opp = _batch(400, rng)
    acts = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0)
    with torch.no_grad():
        out = agent.net(torch.from_numpy(b.state), torch.from_numpy(b.touches), torch.from_numpy(b.touch_creatives))
        seen = agent.stats.impressions_for(b.state[:, SPEC.cols("segment_")])
        bonus = torch.as_tensor(creative_bonus(seen, agent.stats.campaign_ctr(), CFG.ppo.creative_optimism),
                                dtype=torch.float32)
        pc, pch, pk = (p.double().numpy() for p in policy_dists(out, torch.from_numpy(opp.channel_mask), CFG.ppo,
                                                                bonus))
    rows = np.arange(400)
    expect = np.log(pc[rows, acts.creative] * pch[rows, acts.channel] * pk[rows, acts.target])
    assert np.allclose(acts.logp_policy, expect, atol=1e-4)  # the logged propensity is what PPO's ratio uses
    assert np.isin(acts.creative, [2, 5]).mean() > 0.9  # the click model's favourite, not the head's (0) ...
    assert (acts.creative == 5).mean() > 0.3  # ... and the unseen creative its bonus lifts to par
    assert pc.min() >= CFG.ppo.creative_eps / SPEC.creatives - 1e-7


def test_creative_exploration_is_per_segment() -> None:
    """A creative shown often to one segment keeps its optimism for the people of another."""
    agent = HybridAgent(SPEC, CFG, seed=4)
    k = SPEC.segments
    agent.stats.observe_segment_impressions(np.full(5000, 5), np.tile(np.eye(k)[0], (5000, 1)))
    seen = agent.stats.impressions_for(np.eye(k)[[0, 1]])
    bonus = creative_bonus(seen, agent.stats.campaign_ctr(), CFG.ppo.creative_optimism)
    assert seen[0, 5] == 5000 and seen[1, 5] == 0
    assert bonus[1, 5] == pytest.approx(CFG.ppo.creative_optimism) and bonus[0, 5] < 0.2 * bonus[1, 5]


def test_versions_only_go_forward_and_bad_weights_are_refused() -> None:
    registry = MemoryRegistry()
    learner = HybridLearner(SPEC, CFG, RewardConfig(), registry, seed=0)
    assert learner.publish() == 1
    agent = HybridAgent(SPEC, CFG, registry, seed=0)
    assert agent.sync() == 1
    with torch.no_grad():
        learner.net.creative_bias[:] = torch.tensor([6.0, 0, 0, 0, 0, 0])  # the click model's favourite
    assert learner.publish() == 2
    rng = np.random.default_rng(2)
    b, opp = _batch(300, rng)
    assert agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0).version == 1  # not swapped until sync
    assert agent.sync() == 2
    acts = agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0)
    assert acts.version == 2 and (acts.creative == 0).mean() > 0.8
    assert not agent.load_state(learner.state(), 2)  # not newer: ignored
    bad = learner.state()
    bad["net"] = {k: v * float("nan") for k, v in bad["net"].items()}
    with pytest.raises(ModelError):
        agent.load_state(bad, 3)
    assert agent.version == 2
    assert registry.rollback() == 3 and agent.sync() == 3
    assert (agent.act(b, opp.channel_mask, opp.floor_cpm_usd, 100.0).creative == 0).mean() < 0.5


def test_the_dual_level_follows_the_plan_whatever_the_q_network_prefers() -> None:
    from agent_service.pacing import PACING_FEATURES
    agent = HybridAgent(SPEC, CFG, seed=3)
    with torch.no_grad():  # a Q-network that always wants the lowest bids
        agent.q.net[-1].weight.zero_()
        agent.q.net[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 0]))
    agent.dqn_eps = 0.0
    col = [n for n, _ in PACING_FEATURES].index("slot_spend_vs_plan")
    under = np.zeros(len(PACING_FEATURES), np.float32)
    under[col] = np.log(0.5) / 2  # spending half the plan
    z0 = agent.z_base
    for _ in range(10):
        a, p = agent.begin_slot(under)
        assert a == 0 and p == 1.0
        assert agent.z == pytest.approx(max(CFG.dqn.z_min, agent.z_base + CFG.dqn.adjustments[0]))
    assert agent.z_base == pytest.approx(z0 + 10 * CFG.dqn.dual_step * 0.5)  # integral control raises the level
