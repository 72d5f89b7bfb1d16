"""Pacing plan and dual pacer, the reward terms, and the delay-aware conversion estimate."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.agent.learning import reward as rw
from agent_service.agent.model.conversion import ConversionEstimate
from agent_service.config import RewardConfig
from agent_service.delay.config import DelayModelConfig
from agent_service.delay.learner import DelayedFeedbackLearner
from agent_service.delay.model import DelayedConversionModel
from agent_service.errors import ConfigError
from agent_service.pacing import DualPacer, DualPacerConfig, SpendPlan, planned_fraction
from agent_service.units import DAY_MS as DAY
from agent_service.units import DAY_S


def test_the_plan_follows_the_traffic_profile() -> None:
    assert planned_fraction(0.5) == 0.5
    assert planned_fraction(0.5, [1, 3]) == pytest.approx(0.25)
    plan = SpendPlan(4)
    for _ in range(30):
        for slot, n in enumerate((10, 10, 40, 40)):
            plan.observe(slot, n)
        plan.end_period()
    assert plan.fraction(0.5) == pytest.approx(0.2, abs=0.01) and plan.slot_share(3) == pytest.approx(0.4, abs=0.01)


def test_dual_pacer() -> None:
    pacer = DualPacer(DualPacerConfig(step=0.5))
    assert pacer.multiplier() == 1.0
    pacer.update(spend_usd=2.0, plan_usd=1.0)  # ahead of plan: bid lower
    assert pacer.mu == pytest.approx(0.5) and pacer.multiplier() == pytest.approx(1 / 1.5)
    for _ in range(10):
        pacer.update(spend_usd=0.0, plan_usd=1.0)  # behind: back to truthful, never above
    assert pacer.mu == 0.0
    with pytest.raises(ConfigError, match="dual.step"):
        DualPacerConfig(step=0)


def test_a_value_maximisers_dual_bids_above_value_while_underspending_up_to_its_cap() -> None:
    pacer = DualPacer(DualPacerConfig(step=0.5, mu_min=-0.75))
    pacer.update(spend_usd=0.0, plan_usd=1.0)  # behind plan: above truthful
    assert pacer.mu == pytest.approx(-0.5) and pacer.multiplier() == pytest.approx(2.0)
    for _ in range(10):
        pacer.update(spend_usd=0.0, plan_usd=1.0)
    assert pacer.multiplier() == pytest.approx(4.0)  # 1 / (1 + mu_min)
    pacer.update(spend_usd=3.0, plan_usd=1.0)  # then ahead: back down
    assert pacer.mu == pytest.approx(0.25)
    for bad in (-1.0, 0.1):
        with pytest.raises(ConfigError, match="dual.mu_min"):
            DualPacerConfig(mu_min=bad)


def test_reward_terms() -> None:
    cfg = RewardConfig(click_value_usd=0.2, alpha_diversity=1.0, diversity_unit_usd=0.01)
    imm = rw.immediate(cfg, np.array([True, False]), np.array([0.004, 0.004]), np.array([0.5, 0.5]))
    assert imm.tolist() == pytest.approx([0.2 - 0.008, -0.008])  # cost at the shadow price 1/m
    profit = RewardConfig(shadow_price=False)
    assert rw.immediate(profit, np.array([False]), np.array([0.004]), np.array([0.5]))[0] == pytest.approx(-0.004)
    assert rw.delayed(np.array([0.1]), 30.0)[0] == pytest.approx(3.0)
    div = rw.diversity(cfg, np.array([0, 2]), np.array([2.0, 5.0]), 2.0)
    assert div.tolist() == pytest.approx([0.01, 0.85**2 * 2 * 0.01])
    tot = rw.total(RewardConfig(alpha_immediate=1, alpha_attribution=2, alpha_delayed=0.5, alpha_diversity=0),
                   np.array([1.0]), np.array([1.0]), np.array([1.0]), np.array([1.0]))
    assert tot[0] == pytest.approx(3.5)


def test_r_immediate_values_the_slot_won_only_where_there_is_one() -> None:
    cfg = RewardConfig(top_slot_value_usd=0.01, position_decay=1.0, shadow_price=False)
    imm = rw.immediate(cfg, np.zeros(4, bool), np.full(4, 0.002), np.ones(4), np.array([1, 2, 4, 0]))
    # top slot 0.01, second 0.005, fourth 0.0025; no position (display, organic, lost): cost only
    assert imm.tolist() == pytest.approx([0.008, 0.003, 0.0005, -0.002])
    assert rw.immediate(cfg, np.zeros(1, bool), np.full(1, 0.002), np.ones(1))[0] == pytest.approx(-0.002)
    assert rw.slot_value(RewardConfig(), np.array([1, 3])).tolist() == [0.0, 0.0]  # off by default
    with pytest.raises(ConfigError, match="top_slot_value_usd"):
        RewardConfig(top_slot_value_usd=-1.0)


def test_conversion_estimate_trusts_the_model_only_as_evidence_matures() -> None:
    model = DelayedConversionModel(1, DelayModelConfig(prior_rate=0.05, prior_mean_delay_days=5.0, seed=0))
    learner = DelayedFeedbackLearner(model)
    est = ConversionEstimate(model, prior_rate=0.05, prior_delay_days=5.0, strength=300.0)
    rng = np.random.default_rng(0)
    conv_at = {}
    for i in range(2000):  # one day of clicks; true rate 0.2, delays ~ 2 days
        learner.add_touch(str(i), np.zeros(1), i * 40_000)
        if rng.random() < 0.2:
            conv_at[str(i)] = i * 40_000 + int(rng.exponential(2.0) * DAY)
            learner.add_conversion(str(i), conv_at[str(i)])
    x = np.zeros((1, 1))
    early = DAY
    learner.step(early, steps=300)
    est.refresh(learner, early)
    naive = sum(t <= early for t in conv_at.values()) / 2000  # "pending counts as no conversion"
    assert est.matured < 400 and naive < est.p_eventual(x)[0] <= 0.21
    late = early + 30 * DAY
    for _ in range(3):
        learner.step(late, steps=300)
    est.refresh(learner, late)
    assert est.matured > 1900 and est.p_eventual(x)[0] == pytest.approx(0.2, abs=0.04)
    pending = est.p_pending(x, np.array([30.0 * DAY_S]), 14.0 * DAY_S)
    assert pending[0] == 0.0  # past the window nothing more can be credited


def test_the_per_record_slot_value_is_the_vectorised_one() -> None:
    cfg = RewardConfig(top_slot_value_usd=0.02, position_decay=0.7)
    positions = [None, 1, 2, 5, 10]
    scalar = [rw.slot_value_usd(cfg, p) for p in positions]
    assert scalar == pytest.approx(rw.slot_value(cfg, np.array([p or 0 for p in positions])).tolist())
