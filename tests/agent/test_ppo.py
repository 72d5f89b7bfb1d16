"""GAE over journeys, PPO and REINFORCE on a contextual bandit, and rejected divergence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent_service.agent.learning.ppo import (
    PolicyBatch,
    PPOConfig,
    PPOLearner,
    compute_gae,
    creative_bonus,
    discounted_returns,
    policy_dists,
)
from agent_service.agent.model.networks import HybridNet
from agent_service.errors import ConfigError

D, L, FT, C, K = 6, 4, 9, 4, 3


def test_gae_matches_the_recursion_by_hand() -> None:
    r = np.array([1.0, 0.0, 2.0, 0.5, 1.0])
    v = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    nxt = np.array([0.4, 0.3, 0.3, 0.1, 0.1])  # row 2 ends a truncated journey (bootstraps 0.3)
    term = np.array([False, False, False, False, True])
    end = np.array([False, False, True, False, True])
    g, lam = 0.9, 0.8
    adv, ret = compute_gae(r, v, nxt, term, end, g, lam)
    d = r + g * np.where(term, 0.0, nxt) - v
    a4 = d[4]
    a3 = d[3] + g * lam * a4
    a2 = d[2]
    a1 = d[1] + g * lam * a2
    a0 = d[0] + g * lam * a1
    assert np.allclose(adv, [a0, a1, a2, a3, a4]) and np.allclose(ret, adv + v)
    assert np.allclose(compute_gae(r, v, nxt, term, end, g, 1.0)[1][3:], [0.5 + 0.9 * 1.0, 1.0])
    assert np.allclose(discounted_returns(np.ones(3), np.array([False, True, True]), 0.5), [1.5, 1.0, 1.0])


def _net(seed: int = 0) -> HybridNet:
    torch.manual_seed(seed)
    return HybridNet(D, FT, C, 3, K, 16, 4, 32)


def _bandit(rng: np.random.Generator, net: HybridNet, n: int, eps: float) -> tuple[PolicyBatch, float]:
    """Context 0 pays for creative 1, context 1 for creative 2 (reward 1, else 0)."""
    ctx = rng.integers(0, 2, n)
    state = np.zeros((n, D), np.float32)
    state[np.arange(n), ctx] = 1.0
    touches = torch.zeros(n, L, FT)
    tc = torch.full((n, L), C, dtype=torch.int64)
    mask = torch.ones(n, 3, dtype=torch.bool)
    with torch.no_grad():
        out = net(torch.as_tensor(state), touches, tc)
        pc = (1 - eps) * torch.softmax(out.creative_logits, -1) + eps / C
        pch = (1 - eps) * torch.softmax(out.channel_logits, -1) + eps / 3
        pk = (1 - eps) * torch.softmax(out.target_logits, -1) + eps / K
    c = torch.multinomial(pc, 1).squeeze(1)
    ch = torch.multinomial(pch, 1).squeeze(1)
    k = torch.multinomial(pk, 1).squeeze(1)
    rows = torch.arange(n)
    logp = torch.log(pc[rows, c] * pch[rows, ch] * pk[rows, k])
    hit = (c.numpy() == np.where(ctx == 0, 1, 2))
    r = hit.astype(np.float64)
    v = out.value.numpy().astype(np.float64)
    end = np.ones(n, bool)
    adv, ret = compute_gae(r, v, np.zeros(n), end, end, 0.9, 0.9)
    batch = PolicyBatch(torch.as_tensor(state), touches, tc, mask, c, ch, k, logp.float(),
                        torch.as_tensor(adv, dtype=torch.float32), torch.as_tensor(ret, dtype=torch.float32),
                        torch.zeros(n, dtype=torch.bool), torch.zeros(n), torch.zeros(n, 3),
                        torch.zeros(n, C), torch.ones(n, 3), torch.zeros(n, 3), torch.zeros(n, C),
                        torch.ones(n, C, dtype=torch.bool))
    return batch, float(hit.mean())


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_policy_gradient_learns_the_best_creative_per_context(algorithm: str) -> None:
    cfg = PPOConfig(algorithm=algorithm, lr=1e-2, rollout=512, minibatch=128, epochs=4, ent_coef=0.0,
                    model_coef=0.0, creative_value_weight=0.0, creative_eps=0.05)  # the head's own gradient
    net = _net()
    learner = PPOLearner(net, cfg, seed=0)
    rng = np.random.default_rng(0)
    hits = []
    for _ in range(30):
        batch, hit = _bandit(rng, net, 512, cfg.explore_eps)
        hits.append(hit)
        stats = learner.update(batch)
        assert not stats.rejected and np.isfinite(stats.policy_loss)
    assert np.mean(hits[:2]) < 0.4 and np.mean(hits[-3:]) > 0.8


def test_a_diverged_update_is_rejected_and_the_weights_kept() -> None:
    net = _net()
    learner = PPOLearner(net, PPOConfig(rollout=256, minibatch=64), seed=0)
    batch, _ = _bandit(np.random.default_rng(1), net, 256, 0.05)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bad = batch._replace(advantage=torch.full_like(batch.advantage, float("nan")))
    stats = learner.update(bad)
    assert stats.rejected and learner.rejected == 1 and learner.updates == 0
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not learner.update(batch).rejected and learner.updates == 1


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="hybrid.ppo.algorithm"):
        PPOConfig(algorithm="a2c")
    with pytest.raises(ConfigError, match="hybrid.ppo.explore_eps"):
        dataclasses.replace(PPOConfig(), explore_eps=0.0)


# ---------------------------------------------------------------- the value-guided creative head
KS, CS = 3, 6
CTR = np.full((KS, CS), 0.04)
CTR[[0, 1, 2], [4, 1, 3]] = 0.2  # the best creative of segment k; the policy only sees the segment posterior


def _wide_net(seed: int = 0) -> HybridNet:
    torch.manual_seed(seed)  # state: segment posterior (KS columns), then per-creative exposures (CS, all zero)
    return HybridNet(KS + CS, FT, CS, 3, KS + 1, 16, 4, 32, segment_at=0, exposure_at=KS)


def _segment_bandit(rng: np.random.Generator, net: HybridNet, cfg: PPOConfig, n: int, shown: np.ndarray,
                    ) -> tuple[PolicyBatch, float]:
    """Clicks of the sampled creative at CTR[segment, creative]; the reward is the click. ``shown``:
    impressions per creative so far (updated in place), behind the optimism bonus."""
    bonus = torch.as_tensor(np.tile(creative_bonus(shown, 0.08, cfg.creative_optimism), (n, 1)), dtype=torch.float32)
    seg = rng.integers(0, KS, n)
    state = np.zeros((n, KS + CS), np.float32)
    state[np.arange(n), seg] = 1.0
    touches, tc = torch.zeros(n, L, FT), torch.full((n, L), CS, dtype=torch.int64)
    mask = torch.ones(n, 3, dtype=torch.bool)
    with torch.no_grad():
        out = net(torch.as_tensor(state), touches, tc)
        pc, pch, pk = policy_dists(out, mask, cfg, bonus)
    c, ch, k = (torch.multinomial(p, 1).squeeze(1) for p in (pc, pch, pk))
    shown += np.bincount(c.numpy(), minlength=CS)
    rows = torch.arange(n)
    logp = torch.log(pc[rows, c] * pch[rows, ch] * pk[rows, k])
    clicked = rng.random(n) < CTR[seg, c.numpy()]
    end = np.ones(n, bool)
    adv, ret = compute_gae(clicked.astype(np.float64), out.value.numpy().astype(np.float64), np.zeros(n), end, end,
                           0.9, 0.9)
    batch = PolicyBatch(torch.as_tensor(state), touches, tc, mask, c, ch, k, logp.float(),
                        torch.as_tensor(adv, dtype=torch.float32), torch.as_tensor(ret, dtype=torch.float32),
                        torch.ones(n, dtype=torch.bool), torch.as_tensor(clicked, dtype=torch.float32),
                        torch.ones(n, 3), torch.ones(n, CS), torch.ones(n, 3), torch.zeros(n, 3), bonus,
                        torch.ones(n, CS, dtype=torch.bool))
    return batch, float((c.numpy() == CTR[seg].argmax(1)).mean())


def test_the_guided_creative_head_converges_to_the_best_creative_per_segment() -> None:
    cfg = PPOConfig(lr=1e-2, rollout=512, minibatch=128, epochs=2, creative_value_weight=20.0, creative_eps=0.02)
    net = _wide_net()
    learner = PPOLearner(net, cfg, seed=0)
    rng = np.random.default_rng(0)
    best, shown = [], np.zeros(CS)
    for _ in range(25):
        batch, b = _segment_bandit(rng, net, cfg, 512, shown)
        best.append(b)
        assert not learner.update(batch).rejected
    state = torch.zeros(KS, KS + CS)
    state[:, :KS] = torch.eye(KS)
    with torch.no_grad():
        out = net(state, torch.zeros(KS, L, FT), torch.full((KS, L), CS, dtype=torch.int64))
        bonus = torch.as_tensor(creative_bonus(shown, 0.08, cfg.creative_optimism), dtype=torch.float32)
        pc = policy_dists(out, torch.ones(KS, 3, dtype=torch.bool), cfg, bonus)[0].numpy()
    assert np.mean(best[:2]) < 0.4 and np.mean(best[-3:]) > 0.8
    assert (pc[np.arange(KS), CTR.argmax(1)] > 0.8).all()  # the best creative of each segment
    assert (pc >= cfg.creative_eps / CS - 1e-7).all()  # still randomised: every creative keeps ε/C


def test_the_policy_loss_does_not_move_the_click_model_through_the_guide() -> None:
    cfg = PPOConfig(creative_value_weight=20.0)
    net = _wide_net()
    with torch.no_grad():
        net.appeal.normal_()
    state = torch.zeros(4, KS + CS)
    state[:, 0] = 1.0
    out = net(state, torch.zeros(4, L, FT), torch.full((4, L), CS, dtype=torch.int64))
    pc, pch, _ = policy_dists(out, torch.ones(4, 3, dtype=torch.bool), cfg)
    assert not pc.requires_grad and pch.requires_grad  # the model decides; the policy loss cannot bend it


def test_guide_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="hybrid.ppo.creative_eps"):
        PPOConfig(creative_eps=0.0)
    with pytest.raises(ConfigError, match="hybrid.ppo.creative_value_weight"):
        PPOConfig(creative_value_weight=-1.0)
    with pytest.raises(ConfigError, match="hybrid.ppo.creative_optimism"):
        PPOConfig(creative_optimism=-0.1)


def test_the_optimism_bonus_shrinks_with_a_creatives_expected_clicks() -> None:
    b = creative_bonus(np.array([0.0, 100.0, 10_000.0]), 0.02, 0.5)
    assert b[0] == pytest.approx(0.5) and b[1] == pytest.approx(0.5 / np.sqrt(3.0)) and b[2] < 0.04
