"""Ray-parallel training: runners on world shards, weights and statistics pooled at each meeting; a runner killed is replaced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_service.adapters.ray_learner import ensure_ray
from agent_service.cli import main
from agent_service.config import GaelpConfig
from agent_service.config.agent import DQNConfig, HybridConfig, PPOConfig
from agent_service.evaluation.harness import DayStats, RunResult
from agent_service.lab.parallel import average_weights, merge_days, train_parallel

pytestmark = pytest.mark.slow

SMALL = HybridConfig(lstm_hidden=16, hidden=32, update_every=256, decision_window=4096,
                     dqn=DQNConfig(learning_starts=256, batch_size=64), ppo=PPOConfig(rollout=512, minibatch=128, epochs=1))


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    started = ensure_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def test_the_average_is_element_wise_and_keeps_integer_buffers() -> None:
    a = {"net": {"w": torch.ones(2, 2), "n": torch.tensor(3)}, "q": {"b": torch.zeros(2)},
         "conv_w": np.array([1.0, 3.0]), "conv_v": np.zeros(1)}
    b = {"net": {"w": torch.full((2, 2), 3.0), "n": torch.tensor(3)}, "q": {"b": torch.ones(2)},
         "conv_w": np.array([3.0, 5.0]), "conv_v": np.ones(1)}
    avg = average_weights([a, b])
    assert torch.equal(avg["net"]["w"], torch.full((2, 2), 2.0)) and int(avg["net"]["n"]) == 3
    assert torch.equal(avg["q"]["b"], torch.full((2,), 0.5)) and avg["conv_w"].tolist() == [2.0, 4.0]


def test_shards_add_up_to_the_market_day_by_day() -> None:
    r1 = RunResult("a", [DayStats(0, spend_usd=1.0, impressions=3), DayStats(1, spend_usd=2.0)], [])
    r2 = RunResult("b", [DayStats(0, spend_usd=0.5, impressions=1), DayStats(1, spend_usd=1.0)], [])
    days = merge_days([r1, r2]).days
    assert [(d.day, d.spend_usd, d.impressions) for d in days] == [(0, 1.5, 4), (1, 3.0, 0)]


def test_runners_end_on_one_model_and_a_killed_runner_is_replaced(local_ray: None) -> None:
    import dataclasses

    cfg = dataclasses.replace(GaelpConfig(), hybrid=SMALL)
    run = train_parallel(cfg, runners=2, days=3, seed=100, budget_usd=4.0, persons=400, opportunities_per_day=2400,
                         kill_runner_at_day=1)
    assert run["replaced"] and run["replaced"][0]["runner"] == 0  # runner 0 died and was replaced ...
    reports = run["reports"]
    survivor = next(r for r in reports if r.index == 1)
    assert len(survivor.result.days) == 3  # ... and training went on for every day
    replacement = next(r for r in reports if r.index == run["replaced"][0]["replacement"])
    assert len(replacement.result.days) == 3 - run["replaced"][0]["from_day"]
    assert survivor.transitions_trained > 0 and run["checkpoint"]["format"]


def test_gaelp_train_with_runners_writes_the_summary(local_ray: None, tmp_path: Path) -> None:
    assert main(["train", "--days", "2", "--runners", "2", "--baseline-days", "0", "--no-progress",
                 "--persons", "400", "--opportunities-per-day", "1200", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["runners"] == 2 and summary["days_trained"] == 2 and summary["ray_start_seconds"] >= 0
    assert sum(d["spend_usd"] for d in summary["per_day"]) > 0 and (tmp_path / "agent.pt").exists()


def test_merged_checkpoint_takes_the_shared_counts_and_pools_the_labels() -> None:
    from agent_service.agent.model.stats import CampaignStats
    from agent_service.lab.parallel import merge_checkpoints

    def ck(n: float, clicks: int) -> dict:
        s = CampaignStats(3, 2)
        s.impressions[:] = 4.0  # after the last meeting every runner holds the market's counts
        return {"stats": s.state(), "conv": {"model": {}, "matured": n},
                "conv_evidence": {"features": np.ones((clicks, 2)), "elapsed_s": np.ones(clicks),
                                  "converted": np.zeros(clicks, bool), "delay_s": np.zeros(clicks)},
                "plan_profile": [n, n], "z": n, "z_prev_day": None}

    out = merge_checkpoints([ck(1.0, 2), ck(3.0, 5)])
    merged = CampaignStats.from_state(out["stats"])
    assert merged.impressions.tolist() == [4.0, 4.0, 4.0] and merged.creatives == 3
    assert out["conv"]["matured"] == 4.0 and len(out["conv_evidence"]["elapsed_s"]) == 7
    assert out["plan_profile"] == [2.0, 2.0] and out["z"] == 2.0 and out["z_prev_day"] is None


def test_pooled_deltas_equal_one_learner_counting_every_shard() -> None:
    """Two runners from a common base, each counting its own shard, across a period's decay: the
    base plus their deltas is what one learner seeing both shards would hold."""
    from agent_service.agent.model.stats import CampaignStats
    from agent_service.lab.parallel import pool_stats, stats_delta

    rng = np.random.default_rng(0)

    def batch(n: int) -> tuple[np.ndarray, ...]:
        won = rng.random(n) < 0.5
        return (rng.integers(0, 5, n), rng.integers(0, 2, n), rng.random(n) * 3, won, rng.random(n) * 900,
                won & (rng.random(n) < 0.2), rng.integers(0, 3, n))

    base = CampaignStats(5, 2, segments=3)
    base.observe(*batch(40))
    one, runners = CampaignStats.from_state(base.state()), [CampaignStats.from_state(base.state()) for _ in range(2)]
    for r in runners:
        b, segs = batch(30), rng.dirichlet(np.ones(3), 4)
        creatives, values = rng.integers(0, 5, 4), rng.random(4) * 50
        auctions = (rng.integers(-1, 36, 30), rng.random(30) * 5, rng.random(30) < 0.4, rng.random(30) * 5)
        for s in (r, one):
            s.observe(*b)
            s.observe_conversions(creatives, values, segs)
            s.observe_auctions(*auctions)  # the landscape's counts pool as deltas too
    for s in (one, *runners, base):
        s.end_period()
    pooled = pool_stats(base.state(), [stats_delta(r.state(), base.state()) for r in runners])
    for k, v in one.state().items():
        assert np.allclose(np.asarray(pooled[k], float), np.asarray(v, float)), k
    assert not np.allclose(runners[0].impressions, one.impressions)  # a shard alone holds fewer
    assert one.ls_won.sum() > 0 and one.ls_lost.sum() > 0


def test_a_runner_does_its_share_of_each_update_with_as_many_gradient_steps() -> None:
    from agent_service.lab.parallel import meeting_slots, runner_config

    h = HybridConfig()
    assert runner_config(h, 1) == h
    r = runner_config(h, 16)
    assert r.update_every > 10**9  # runners update at the meetings, which come at the single learner's cadence
    assert meeting_slots(h, 20_000.0) == 5 and meeting_slots(h, 8_000.0) == 12  # 1,024 decisions of 208 / 83 a slot
    assert r.ppo.rollout * 16 == h.ppo.rollout and r.ppo.minibatch * 16 == h.ppo.minibatch
    assert r.ppo.rollout // r.ppo.minibatch == h.ppo.rollout // h.ppo.minibatch and r.ppo.epochs == h.ppo.epochs
