"""GAELP's iPinYou bidder: a tiny training run, determinism, the cache, the price model, the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_service.agent.learning.buffers import SlotTransition
from agent_service.agent.learning.dqn import DQNLearner
from agent_service.cli import main
from agent_service.errors import ConfigError, ModelError
from agent_service.lab.ipinyou.bidder import GaelpBidder, PriceModel, train_offline
from agent_service.lab.ipinyou.config import AgentConfig
from agent_service.lab.ipinyou.multiplier_policy import MultiplierPolicy
from agent_service.lab.ipinyou.synthetic import Plan
from simulators.ipinyou.data import AuctionLog, CampaignInfo
from simulators.ipinyou.market import MarketConfig, SyntheticMarket
from simulators.ipinyou.replay import Outcome, replay
from simulators.ipinyou.rlb import value_function

torch.set_num_threads(1)  # tiny tensors: extra threads only spin on a shared 2-core machine

N = 50
INFO = CampaignInfo(10_000, 400_000, 40, tuple([0] * 5 + [200] * 80 + [20] * 216))
TINY = AgentConfig(
    slot_length=10, z_grid=(-0.2, 0.0, 0.2), z_episodes=16, train_episodes=60, parallel_episodes=20,
    eval_episodes=16, finetune_after=(1, 2), finetune_episodes=20,
    dqn=replace(AgentConfig().dqn, adjustments=(-0.15, -0.05, 0.0, 0.05, 0.15), learning_starts=64, batch_size=32,
                buffer_size=2_000, eps_decay_transitions=300),
)


def tiny_setup(budget: int = 300) -> tuple[Plan, AuctionLog]:
    plan = Plan(value_function(INFO.price_pmf(), N, budget, INFO.ctr), INFO.ctr, budget, 300)
    rng = np.random.default_rng(7)
    n = 4 * N + 17
    log = AuctionLog(rng.integers(0, 2, n), rng.integers(5, 90, n), rng.random(n) * 0.01)
    return plan, log


def run_once(seed: int, feedback: str = "full", cache: Path | None = None):
    plan, log = tiny_setup()
    agent = train_offline(INFO, plan, TINY, seed, episode_length=N, cache_dir=cache)
    bidder = GaelpBidder(plan, INFO, agent, TINY, seed, episode_length=N)
    res = replay(log, plan.budget, bidder, episode_length=N, feedback=feedback)
    weights = torch.cat([p.detach().flatten() for p in agent.learner.q.parameters()])
    return agent, bidder, res, weights


def test_tiny_training_run_learns_and_bids() -> None:
    agent, bidder, res, _ = run_once(0)
    assert agent.stats.transitions == TINY.train_episodes * (N // TINY.slot_length)
    assert agent.stats.updates > 0 and np.isfinite(agent.stats.last_td_loss)
    assert agent.z0 in TINY.z_grid and set(agent.z_scores) == set(TINY.z_grid)
    assert res.episodes == 5 and res.impressions > 0 and res.cost <= 5 * 300
    assert [h["episode"] for h in bidder.history] == [1, 2]
    assert bidder.refit_stats.transitions == 2 * TINY.finetune_episodes * (N // TINY.slot_length)


def test_same_seed_same_result_other_seed_other_weights() -> None:
    a1, b1, r1, w1 = run_once(3)
    a2, b2, r2, w2 = run_once(3)
    assert r1 == r2 and b1.history == b2.history and a1.z_scores == a2.z_scores
    assert torch.equal(w1, w2)
    _, _, _, w3 = run_once(4)
    assert not torch.equal(w1, w3)


def test_cached_agent_continues_exactly(tmp_path: Path) -> None:
    a1, b1, r1, w1 = run_once(5, cache=tmp_path)
    assert not a1.from_cache and len(list(tmp_path.glob("agent-*.pt"))) == 1
    a2, b2, r2, w2 = run_once(5, cache=tmp_path)
    assert a2.from_cache
    assert r1 == r2 and b1.history == b2.history and torch.equal(w1, w2)


def test_won_only_feedback_runs_and_reads_no_lost_outcomes() -> None:
    _, bidder, res, _ = run_once(1, feedback="won")
    assert res.impressions > 0
    assert bidder.prices.censored.sum() > 0  # lost auctions are recorded as "price above the bid"


def test_price_model_mixture_and_censoring() -> None:
    prior = np.array([0.0, 0.5, 0.5, 0.0])
    pm = PriceModel(prior, weight=2.0)
    for p in (3, 3):
        pm.observe(Outcome(bid=3, won=True, cost=p, click=0, market_price=p, pctr=0.1, episode_end=False))
    np.testing.assert_allclose(pm.pmf(), [0.0, 0.25, 0.25, 0.5])  # (2 * prior + counts) / 4
    pm = PriceModel(prior, weight=2.0)
    for _ in range(50):  # lost with bid 1: the price is >= 2
        pm.observe(Outcome(bid=1, won=False, cost=0, click=-1, market_price=-1, pctr=0.1, episode_end=False))
    m = pm.pmf()
    assert m[1] < 0.05 and m[2] > 0.9 and m.sum() == pytest.approx(1.0)


def test_dqn_learns_a_one_step_bandit_and_policy_syncs_by_version() -> None:
    cfg = replace(AgentConfig().dqn, learning_starts=128, batch_size=64, lr=1e-2, updates_per_transition=1.0)
    learner = DQNLearner(3, cfg, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs = rng.normal(size=(64, 3)).astype(np.float32)
        act = rng.integers(0, cfg.n_actions, 64)
        reward = np.where(act == 3, 1.0, 0.0).astype(np.float32)
        learner.observe(SlotTransition(obs, act, reward, obs, np.ones(64, np.float32), np.zeros(64, np.float32)))
    policy = MultiplierPolicy(3, cfg)
    assert policy.load(learner.version, learner.weights())
    assert not policy.load(policy.version, learner.weights())  # not newer: ignored
    assert (policy.actions(rng.normal(size=(32, 3)).astype(np.float32)) == 3).all()
    z = policy.next_z(np.array([0.95, -0.95]), np.array([4, 0]))
    np.testing.assert_allclose(z, [cfg.z_max, cfg.z_min])
    bad = {k: v * float("nan") for k, v in learner.weights().items()}
    with pytest.raises(ModelError):
        policy.load(learner.version + 1, bad)


def test_configs_name_bad_keys() -> None:
    with pytest.raises(ConfigError, match="dqn.tau"):
        replace(AgentConfig().dqn, tau=0.0)
    with pytest.raises(ConfigError, match="agent.z_grid"):
        replace(TINY, z_grid=(0.1,))
    with pytest.raises(ConfigError, match="market.pctr_log_sd"):
        MarketConfig(pctr_log_sd=-1)


def test_synthetic_market_is_seeded_and_calibrated() -> None:
    sim = SyntheticMarket.from_info(INFO, MarketConfig(price_level_jitter=0.2))
    a = sim.sample(40, 500, np.random.default_rng(1))
    b = sim.sample(40, 500, np.random.default_rng(1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert a.pctr.mean() == pytest.approx(INFO.ctr, rel=0.05)
    assert a.price.min() >= 0 and a.price.max() <= 300


def write_data(folder: Path) -> Path:
    rng = np.random.default_rng(2)
    lines = [f"{int(rng.random() < 0.01)} {int(rng.integers(0, 80))} {rng.random() * 0.01:.6f}"
             for _ in range(2_500)]
    (folder / "test.theta.txt").write_text("\n".join(lines) + "\n")
    info = {"imp_train": 10_000, "cost_train": 400_000, "clk_train": 40,
            "price_counter_train": [0] * 5 + [200] * 80 + [20] * 216}
    (folder / "info.json").write_text(json.dumps(info))
    return folder


def test_cli_bench_ipinyou_prints_table_then_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_data(tmp_path)
    assert main(["bench", "ipinyou", "--data", str(data), "--policy", "const", "--bid", "20"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("policy")
    result = json.loads(out[-1])
    assert result["policy"] == "const" and result["c0"] == 0.03125 and result["budget"] == 1250
    assert result["episodes"] == 3 and result["auctions"] == 2_500
    for key in ("clicks", "impressions", "cost", "win_rate", "cpm", "ecpc"):
        assert key in result
    assert main(["bench", "ipinyou", "--data", str(data), "--policy", "lin", "--all-c0"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["c0"] == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2] and len(result["clicks"]) == 5
    assert result["clicks"] == [r["clicks"] for r in result["results"]]
    assert main(["bench", "ipinyou", "--data", str(data), "--policy", "rlb"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["policy"] == "rlb"
    assert main(["bench", "ipinyou", "--data", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_pctr_calibration_recovers_an_overconfident_model_and_stays_put_without_evidence() -> None:
    from simulators.ipinyou.calibration import PctrCalibration

    rng = np.random.default_rng(0)
    pctr = np.clip(0.004 * np.exp(0.8 * rng.standard_normal(400_000)), 1e-6, 0.5)
    logit = np.log(pctr / (1 - pctr))
    truth = 1 / (1 + np.exp(-(0.6 * logit - 2.0)))  # high pCTRs click less than they say
    cal = PctrCalibration(slope_sd=0.25, offset_sd=2.0)
    for p, c in zip(pctr, rng.random(len(pctr)) < truth, strict=True):
        cal.observe(float(p), int(c))
    cal.observe(0.9, -1)  # unrevealed: ignored
    a, b = cal.fit()
    assert abs(a - 0.6) < 0.08 and abs(b + 2.0) < 0.5
    s = cal.shape(np.array([0.001, 0.02]), pctr)
    assert s[0] > 1 > s[1]  # low pCTRs worth more, high ones less, than taken at face value
    assert np.isclose((pctr * cal.shape(pctr, pctr)).mean(), pctr.mean())  # the level is kept
    empty = PctrCalibration(slope_sd=0.25, offset_sd=2.0)
    assert empty.fit() == (1.0, 0.0)
    assert np.allclose(empty.calibrated(pctr), pctr)
