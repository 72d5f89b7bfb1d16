"""The harness's hard cap, the baselines, and the hybrid agent learning online (tiny budgets)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agent_service.config import RewardConfig
from agent_service.config.agent import DQNConfig, HybridConfig, PPOConfig
from agent_service.evaluation.cell_oracle import CellOracle
from agent_service.evaluation.harness import run_campaign
from agent_service.evaluation.policies import BaselinePolicy, DualPacing, FixedBid, Linear, Truthful
from agent_service.lab.campaign import HybridCampaign
from agent_service.pacing import DualPacerConfig
from agent_service.units import DAY_MS
from tests.agent.standin_market import StandinMarket, StandinParams

PARAMS = StandinParams(people=600, opportunities_per_day=1200, slots_per_day=12, budget_usd=3.0)
SMALL = HybridConfig(lstm_hidden=16, hidden=32, slots_per_period=12, update_every=256, decision_window=4096,
                     dqn=DQNConfig(learning_starts=256, batch_size=64),
                     ppo=PPOConfig(rollout=512, minibatch=128, epochs=1))


@pytest.mark.parametrize("bidder", [FixedBid(9.0), Truthful(), Linear(6.0), DualPacing(DualPacerConfig(), 12)],
                         ids=lambda b: b.name)
def test_no_policy_ever_spends_more_than_the_daily_budget(bidder) -> None:
    market = StandinMarket(3, PARAMS)
    r = run_campaign(market, BaselinePolicy(bidder, "random", market), 3)
    assert all(d.spend_usd <= PARAMS.budget_usd + 1e-9 for d in r.days)
    assert sum(d.impressions for d in r.days) > 0


def test_the_oracle_creative_rule_has_no_regret_and_random_has_some() -> None:
    reg = {}
    for rule in ("random", "oracle"):
        market = StandinMarket(4, PARAMS)
        r = run_campaign(market, BaselinePolicy(DualPacing(slots=12), rule, market), 2)
        reg[rule] = 1 - sum(d.chosen_value_usd for d in r.days) / sum(d.oracle_value_usd for d in r.days)
        best = sum(d.best_value_usd for d in r.days)
        assert best >= sum(d.chosen_value_usd for d in r.days) - 1e-9  # nothing beats the best for each impression
        reg[f"{rule} vs best"] = 1 - sum(d.chosen_value_usd for d in r.days) / best
    assert abs(reg["oracle"]) < 1e-9 and reg["random"] > 0.2
    assert reg["random vs best"] >= reg["oracle vs best"] >= 0


def test_the_hybrid_agent_trains_online_within_the_budget() -> None:
    market = StandinMarket(5, PARAMS)
    agent = HybridCampaign(market.creatives, SMALL, RewardConfig(click_value_usd=0.0), seed=0)
    r = run_campaign(market, agent, 3)
    assert all(d.spend_usd <= PARAMS.budget_usd + 1e-9 for d in r.days)
    hist = agent.learner.history
    assert len(hist) >= 5 and not any(u.rejected for u in hist)
    assert agent.agent.version == agent.learner.version == 1 + len(hist)  # served what was published
    assert all(np.isfinite(u.ppo.policy_loss) for u in hist)
    assert agent.learner.dqn.transitions > 0  # one bid-multiplier transition per slot
    for p in agent.learner.net.parameters():
        assert torch.isfinite(p).all()


def test_a_diverged_policy_update_is_rejected_not_published() -> None:
    market = StandinMarket(6, PARAMS)
    agent = HybridCampaign(market.creatives, SMALL, RewardConfig(click_value_usd=0.0), seed=0, learn=True)
    run_campaign(market, agent, 1)
    learner = agent.learner
    version = learner.version
    before = {k: v.clone() for k, v in learner.net.state_dict().items()}
    slots = learner.table.recent(len(learner.table))
    learner.table.set_column(slots, "immediate", np.full(len(slots), np.nan, np.float32))
    stats = learner.update(now_ms=market.start_ms + DAY_MS)
    assert stats.rejected and learner.rejected == 1 and learner.version == version
    assert all(torch.equal(v, before[k]) for k, v in learner.net.state_dict().items())


def test_the_full_information_references_stay_in_budget_and_rank_by_what_they_know() -> None:
    """Dual pacing on true values ≥ on true cell means of observable features (with the
    request's category or the person's accumulated segment posterior) > on the learned value model."""
    value = {}
    for source in ("model", "cells", "profile", "truth"):
        market = StandinMarket(7, PARAMS)
        pacing = DualPacing(DualPacerConfig(), 12)
        pol = CellOracle(pacing, "random", market, profile=source == "profile") if source in ("cells", "profile") \
            else BaselinePolicy(pacing, "random", market, value_source=source)
        r = run_campaign(market, pol, 3)
        assert all(d.spend_usd <= PARAMS.budget_usd + 1e-9 for d in r.days)
        value[source] = sum(d.expected_value_usd for d in r.days[1:])
    assert value["truth"] >= value["cells"] > value["model"] > 0, value
    assert value["truth"] >= value["profile"] > value["model"], value
    with pytest.raises(ValueError, match="value_source"):
        BaselinePolicy(DualPacing(), "random", StandinMarket(7, PARAMS), value_source="guess")


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return bool(a == b) if not (isinstance(a, float) and np.isnan(a)) else bool(np.isnan(b))


def test_an_agent_restored_for_evaluation_learns_online_without_touching_the_checkpoint() -> None:
    """Evaluation restores one checkpoint per seed and policy: online learning on one seed must not
    leak into the next through arrays shared with the checkpoint."""
    trained = HybridCampaign(StandinMarket(5, PARAMS).creatives, SMALL, RewardConfig(click_value_usd=0.0), seed=0)
    run_campaign(StandinMarket(5, PARAMS), trained, 2)
    ck = trained.checkpoint()
    before = copy.deepcopy(ck)
    market = StandinMarket(6, PARAMS)
    agent = HybridCampaign(market.creatives, SMALL, RewardConfig(click_value_usd=0.0), seed=1)
    agent.restore(ck)
    run_campaign(market, agent, 2)
    assert agent.learner.history  # it did learn online
    assert _same(ck, before)


def test_the_commands_run_the_harness_on_the_configured_window(monkeypatch, tmp_path) -> None:
    """``join.window_days`` is the harness's window too, not only the agent's (here: the baselines' tuning)."""
    from types import SimpleNamespace

    import agent_service.lab.train as lab_train
    from agent_service.config import GaelpConfig
    from agent_service.config.lab import TrainConfig

    windows: list[int] = []

    def recording(market, policy, days, **kw):  # type: ignore[no-untyped-def]
        windows.append(kw["window_days"])
        return SimpleNamespace(days=[])

    monkeypatch.setattr(lab_train, "run_campaign", recording)
    cfg = GaelpConfig().replace("join", window_days=7.0)
    lab_train.tune_baselines(cfg, TrainConfig(persons=50, opportunities_per_day=100.0, runners=0), tmp_path)
    assert windows and set(windows) == {7}
