"""The competitor landscape in the agent's state: the learner counts won prices and lost bids per
paid channel × device × hour band, publishes them with the weights, and a bidder that swaps the
version in reads the request's context off them (median price to beat, win rate at fixed bids);
a model of another layout (with vs without the landscape) is refused, naming both layouts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr

from agent_service.adapters.registry import MemoryRegistry
from agent_service.agent.learning.buffers import DecisionRows, zero_rewards
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.model.state import JourneyArrays, OpportunityArrays, PacingInputs, build_states
from agent_service.agent.model.stats import LANDSCAPE_BIDS_CPM
from agent_service.agent.serving.hybrid import HybridAgent, spec_of
from agent_service.config import RewardConfig
from agent_service.config.agent import HybridConfig
from agent_service.errors import ModelError

T0 = 1_767_225_600_000 + 10 * 3_600_000  # 10:00 UTC: hour band 2
CFG = HybridConfig(lstm_hidden=8, hidden=16)
SPEC = spec_of(CFG, 4)


def _opps(n: int, device: int, t_ms: int) -> OpportunityArrays:
    return OpportunityArrays(np.full(n, t_ms), np.full(n, device), np.ones((n, 3), bool), np.full(n, 0.2),
                             np.full((n, SPEC.segments), 1 / SPEC.segments), np.ones(n), np.ones(n, np.int64),
                             np.zeros(n, np.int64), np.zeros(n), np.arange(n))


def _states(opp: OpportunityArrays, agent: HybridAgent) -> np.ndarray:
    n = len(opp.event_time)
    return build_states(SPEC, opp, JourneyArrays.empty(n, SPEC.max_touches), PacingInputs(15, 3, 0, 0.4, 0.4),
                        agent.stats).state


def test_a_bidder_reads_the_landscape_the_learner_learned_from_won_prices_and_lost_bids() -> None:
    rng, n = np.random.default_rng(0), 6000
    registry = MemoryRegistry()
    learner = HybridLearner(SPEC, CFG, RewardConfig(), registry, seed=0)
    agent = HybridAgent(SPEC, CFG, registry, seed=0)
    opp = _opps(n, device=0, t_ms=T0)
    state = _states(opp, agent)
    ls = SPEC.cols("ls_")
    assert (state[:, ls][:, [1, 2, 3, 4, 5]] == 0).all()  # nothing seen: no win rate, nothing seen
    prices = np.exp(np.log(2.0) + 0.5 * rng.standard_normal(n))  # the truth, never shown whole
    bids = rng.uniform(0.5, 4.0, n)
    won = bids >= prices
    keys = [f"d{i}" for i in range(n)]
    channel = np.ones(n, np.int64)  # paid search
    learner.add_decisions(keys, DecisionRows(
        state, np.zeros((n, SPEC.max_touches, SPEC.touch_dim), np.float32),
        np.full((n, SPEC.max_touches), SPEC.creatives), opp.channel_mask, np.zeros(n, np.int64), channel,
        np.zeros(n, np.int64), np.zeros(n, np.float32), np.arange(n), opp.event_time, won, np.zeros(n, bool),
        *zero_rewards(n)))
    learner.add_outcomes(keys, won, np.where(won, prices, 0.0) / 1000, np.zeros(n, bool), np.ones(n),
                         opp.event_time, np.zeros(n, np.int64), np.zeros(n, np.int64), bids)
    learner.publish()
    assert agent.sync() == 1  # the bidder keeps what the version carries
    ix = SPEC.index
    row = _states(_opps(1, device=0, t_ms=T0 + 1_800_000), agent)[0]  # same context: mobile, 8:00-12:00
    assert row[ix["ls_paid_search_p50"]] == pytest.approx(0.2, abs=0.015)  # 2 USD CPM / 10
    for b in LANDSCAPE_BIDS_CPM[:3]:  # bids inside what was bid: identified
        truth = float(ndtr((np.log(b) - np.log(2.0)) / 0.5))
        assert row[ix[f"ls_paid_search_win{b:g}"]] == pytest.approx(truth, abs=0.04), b
    naive = float((prices[won] <= 2.0).mean())  # won prices alone: the cheap ones
    assert naive > 0.7 and row[ix["ls_paid_search_win2"]] < 0.56
    assert row[ix["ls_paid_search_seen"]] == 1.0 and row[ix["ls_social_seen"]] == 0.0
    # another context (desktop, 0:00-4:00) has seen nothing: it follows the pooled curve
    other = _states(_opps(1, device=1, t_ms=T0 - 10 * 3_600_000), agent)[0]
    assert other[ix["ls_paid_search_seen"]] == 0.0
    assert other[ix["ls_paid_search_win2"]] == pytest.approx(row[ix["ls_paid_search_win2"]], abs=0.02)


def test_a_model_of_another_layout_is_refused_naming_both() -> None:
    without = spec_of(HybridConfig(lstm_hidden=8, hidden=16, landscape=False), 4)
    assert not any(name.startswith("ls_") for name, _ in without.features)
    assert without.dim == SPEC.dim - 12 and without.layout_id != SPEC.layout_id
    old = HybridLearner(without, HybridConfig(lstm_hidden=8, hidden=16, landscape=False), RewardConfig(), seed=0)
    agent = HybridAgent(SPEC, CFG, seed=0)
    with pytest.raises(ModelError, match=f"features {without.layout_id}.*features {SPEC.layout_id}"):
        agent.load_state(old.state(), 1)
    same_width = HybridLearner(SPEC, CFG, RewardConfig(), seed=0).state()
    same_width["layout"] = "0badc0de"  # another layout with the same widths: not mis-read either
    with pytest.raises(ModelError, match="0badc0de"):
        agent.load_state(same_width, 1)
    learner = HybridLearner(SPEC, CFG, RewardConfig(), seed=0)
    with pytest.raises(ModelError, match="checkpoint"):
        learner.load_checkpoint({**old.checkpoint()})
    assert agent.load_state(learner.state(), 1) and agent.version == 1
