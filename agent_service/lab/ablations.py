"""Ablations of the trained agent: does each learned part earn its place?

- ``dual+agent`` — the agent's own value estimate (click model × conversion model × value per
  segment), its creative, channel and target choices and its pacing state (the learned traffic
  profile as the spend plan, its multiplier level as dual pacing's start), but the bid from
  dual-variable pacing (no bid multiplier Q-network, no dual step of its own): the strongest
  simple alternative built from the agent's parts. If the agent does not beat it, its bidding RL
  does not earn its place. (Until 2026-12-05 it paced to a plan of its own, uniform at first, from
  multiplier 1: a handicap the agent, starting from its trained profile and level, did not have.)
- ``dual+agent_scaled`` — the same with a value maximiser's dual (multipliers above 1 allowed).
- ``gaelp-no_dqn_offset`` — the agent with the Q-network's per-slot offset held at 0 (the dual
  level alone paces).

Both start from the same checkpoint as the agent and keep learning online as it does (the
ablated part excepted). They are inference-time ablations of one trained agent, not agents
trained without the part — say so wherever their numbers are shown.
"""

from __future__ import annotations

import numpy as np

from agent_service.agent.model.state import JourneyArrays
from agent_service.evaluation.harness import SlotContext
from agent_service.evaluation.market import Opportunities, Plays, Results
from agent_service.evaluation.policies import DualPacing
from agent_service.lab.campaign import HybridCampaign

__all__ = ["DualOnAgent", "without_dqn_offset"]


class DualOnAgent:
    """``dual+agent``: see the module docstring."""

    def __init__(self, agent: HybridCampaign, dual: DualPacing, name: str = "dual+agent") -> None:
        self.agent, self.dual, self.name = agent, dual, name

    def start_period(self, ctx: SlotContext) -> None:
        self.agent.start_period(ctx)
        self.dual.start_period(ctx)

    def play(self, opps: Opportunities, journeys: JourneyArrays, ctx: SlotContext) -> Plays:
        plays = self.agent.play(opps, journeys, ctx)
        assert self.agent._pending is not None
        value = self.agent._pending[1].value_usd
        bid = np.where(plays.channel == 0, 0.0, self.dual.bid(value, value, 1.0, opps.floor_cpm_usd))
        bid = np.minimum(bid, max(ctx.budget_left_usd, 0.0) * 1000.0)
        take = (plays.channel == 0) | (bid > 0)
        return Plays(bid, plays.creative, plays.channel, plays.target, take)

    def observe(self, keys: np.ndarray, opps: Opportunities, plays: Plays, results: Results,
                ctx: SlotContext) -> None:
        self.agent.observe(keys, opps, plays, results, ctx)

    def end_slot(self, ctx: SlotContext) -> None:
        self.dual.update(ctx)
        self.agent.end_slot(ctx)

    def credit(self, keys: np.ndarray, credit_usd: np.ndarray, time_ms: np.ndarray) -> None:
        self.agent.credit(keys, credit_usd, time_ms)

    def finalise(self, keys: np.ndarray) -> None:
        self.agent.finalise(keys)

    def end_period(self, ctx: SlotContext) -> None:
        self.agent.end_period(ctx)


def without_dqn_offset(agent: HybridCampaign) -> HybridCampaign:
    """The agent with the Q-network's per-slot offset held at 0 (``HybridAgent.dqn_offset``)."""
    agent.agent.dqn_offset = False
    agent.name = "gaelp-no_dqn_offset"
    return agent
