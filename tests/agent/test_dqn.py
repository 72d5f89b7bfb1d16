"""Double DQN over bid-multiplier adjustments: the target, learning, and rejected divergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent_service.agent.learning.buffers import ReplayBuffer, SlotTransition
from agent_service.agent.learning.dqn import DQNConfig, DQNLearner, epsilon_greedy
from agent_service.errors import ConfigError

P = 3


def _batch(rng: np.random.Generator, n: int, reward: np.ndarray | None = None) -> SlotTransition:
    obs = rng.normal(size=(n, P)).astype(np.float32)
    nxt = rng.normal(size=(n, P)).astype(np.float32)
    act = rng.integers(0, 5, n)
    r = rng.normal(size=n).astype(np.float32) if reward is None else reward.astype(np.float32)
    term = (rng.random(n) < 0.3).astype(np.float32)
    return SlotTransition(obs, act, r, nxt, term, np.zeros(n, np.float32))


def test_defaults_follow_the_issue_and_bad_values_name_their_key() -> None:
    cfg = DQNConfig()
    assert cfg.buffer_size == 50_000 and cfg.batch_size == 256
    with pytest.raises(ConfigError, match="hybrid.dqn.gamma"):
        DQNConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="hybrid.dqn.batch_size"):
        DQNConfig(batch_size=10, buffer_size=5)


def test_target_is_double_dqn() -> None:
    learner = DQNLearner(P, DQNConfig(gamma=0.9), seed=0)
    with torch.no_grad():  # make the target net differ from the online one
        for p in learner.target.parameters():
            p.add_(0.3)
    b = _batch(np.random.default_rng(0), 32)
    q, y = learner.td_errors(b)
    with torch.no_grad():
        nxt = torch.as_tensor(b.next_obs)
        a_star = learner.q(nxt).argmax(1)  # chosen by the online net ...
        v = learner.target(nxt).gather(1, a_star[:, None]).squeeze(1)  # ... valued by the target net
        expect = torch.as_tensor(b.reward) + 0.9 * (1 - torch.as_tensor(b.terminated)) * v
        q_expect = learner.q(torch.as_tensor(b.obs)).gather(1, torch.as_tensor(b.action)[:, None]).squeeze(1)
    assert torch.allclose(y, expect) and torch.allclose(q, q_expect)


def test_learns_the_better_adjustment_per_state() -> None:
    """Reward 1 for action 4 when the first feature is positive, for action 0 otherwise."""
    cfg = DQNConfig(gamma=0.0, learning_starts=256, batch_size=64, updates_per_transition=0.25, lr=5e-3)
    learner = DQNLearner(P, cfg, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(10):
        b = _batch(rng, 256)
        good = np.where(b.obs[:, 0] > 0, 4, 0)
        learner.observe(b._replace(reward=(b.action == good).astype(np.float32)))
    obs = rng.normal(size=(500, P)).astype(np.float32)
    act, prob = learner.act(obs, 0.0, rng)
    assert (act == np.where(obs[:, 0] > 0, 4, 0)).mean() > 0.9 and (prob == 1).all()
    assert learner.version > 0 and learner.rejected == 0


def test_a_diverged_update_is_rejected_and_the_weights_kept() -> None:
    learner = DQNLearner(P, DQNConfig(), seed=0)
    before = {k: v.clone() for k, v in learner.q.state_dict().items()}
    rng = np.random.default_rng(2)
    stats = learner.update(_batch(rng, 64, reward=np.full(64, np.nan)))
    assert stats.rejected and learner.rejected == 1 and learner.version == 0
    assert all(torch.equal(v, before[k]) for k, v in learner.q.state_dict().items())
    stats = learner.update(_batch(rng, 64))
    assert not stats.rejected and learner.version == 1 and np.isfinite(stats.td_loss)


def test_epsilon_greedy_logs_the_probability_of_each_action() -> None:
    rng = np.random.default_rng(3)
    greedy = np.zeros(20_000, np.int64)
    act, prob = epsilon_greedy(greedy, 5, 0.2, rng)
    assert np.allclose(prob[act == 0], 0.8 + 0.2 / 5) and np.allclose(prob[act != 0], 0.2 / 5)
    assert abs((act == 0).mean() - 0.84) < 0.02


def test_replay_keeps_the_newest_rows() -> None:
    buf = ReplayBuffer(100, P)
    rng = np.random.default_rng(4)
    for i in range(3):
        buf.add(_batch(rng, 60, reward=np.full(60, float(i))))
    assert len(buf) == 100
    sample = buf.sample(500, rng)
    assert set(np.unique(sample.reward)) <= {1.0, 2.0}
