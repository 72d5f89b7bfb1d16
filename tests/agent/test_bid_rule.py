"""``[serve] bid_rule = "dual"``: the service's reference bidder paces by the dual variable alone."""

from __future__ import annotations

import math

import pytest

from agent_service.agent.serving.server import AgentServer
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig
from agent_service.errors import ConfigError
from agent_service.units import DAY_MS

CFG = HybridConfig(lstm_hidden=16, hidden=32)
SLOT_MS = DAY_MS // CFG.slots_per_period


def test_dual_rule_lowers_the_multiplier_after_overspending_and_raises_it_after_underspending() -> None:
    server = AgentServer(CFG, 6, 15.0, None, seed=0, bid_rule="dual")
    agent = server.agent
    assert not agent.dqn_offset
    server._enter_slot(0, 15.0, 0.0, 0.0, 10)
    assert agent.multiplier == pytest.approx(1.0) and agent.slot_prob == 1.0  # mu0 = 0: truthful
    server._enter_slot(SLOT_MS, 15.0, 3.0, 0.0, 10)  # slot 0 spent 3 USD, far above its plan
    high = agent.multiplier
    assert high < 1.0 and agent.z == pytest.approx(-math.log1p(server.dual.mu))
    server._enter_slot(2 * SLOT_MS, 15.0, 3.0, 0.0, 10)  # slot 1 spent nothing
    assert agent.multiplier > high and agent.slot_prob == 1.0


def test_the_scaled_dual_rule_rises_above_v_hat_up_to_the_agents_cap_while_underspending() -> None:
    server = AgentServer(CFG, 6, 15.0, None, seed=0, bid_rule="dual_scaled")
    agent = server.agent
    assert not agent.dqn_offset
    for k in range(60):  # nothing spent, slot after slot
        server._enter_slot(k * SLOT_MS, 15.0, 0.0, 0.0, 10)
    assert agent.multiplier == pytest.approx(math.exp(CFG.dqn.z_max))
    server._enter_slot(60 * SLOT_MS, 15.0, 5.0, 0.0, 10)  # the last slot spent far above its plan
    assert agent.multiplier < math.exp(CFG.dqn.z_max)


def test_the_agent_rule_keeps_the_q_network_offset_and_a_bad_rule_is_refused() -> None:
    server = AgentServer(CFG, 6, 15.0, None, seed=0)
    assert server.dual is None and server.agent.dqn_offset
    with pytest.raises(ConfigError, match="serve.bid_rule"):
        GaelpConfig().replace("serve", bid_rule="greedy")


def test_the_dual_ablation_paces_to_the_agents_plan_without_counting_its_traffic_twice() -> None:
    from agent_service.evaluation.policies import DualPacing
    from agent_service.pacing import DualPacerConfig, SpendPlan

    plan = SpendPlan(4)
    plan.profile = plan.profile * 0 + [0.1, 0.2, 0.3, 0.4]
    rule = DualPacing(DualPacerConfig(step=0.5, mu0=1.0), plan=plan)
    assert rule.pacer.multiplier() == pytest.approx(0.5)  # starts at the level it is given

    class Ctx:
        slot, slots, opportunities, last_slot_spend_usd, budget_usd = 3, 4, 100, 4.0, 10.0
    rule.update(Ctx())  # type: ignore[arg-type]
    assert rule.pacer.mu == pytest.approx(1.0)  # slot 3's plan is 0.4 · 10 = its spend: on plan
    assert plan.profile.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])  # its owner folds the counts
    assert plan._counts.sum() == 0
