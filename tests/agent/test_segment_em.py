"""Segments learned from context counts: K by BIC, labels kept across refits, the posterior as
good as the simulator's own Bayes table, and the agent never reads that table by default."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.agent.model.segment_em import SegmentLearner, aligned, average_fits, fit_mixture, select_k
from agent_service.agent.model.segments import SegmentModel
from agent_service.evaluation.clustering import adjusted_rand_index, matched_log_loss


def _people(n: int, seed: int, share=(0.2, 0.3, 0.5), signal: float = 0.7, contexts: int = 5):
    """People of len(share) segments, each favouring its own context, 1-12 requests each."""
    rng = np.random.default_rng(seed)
    k = len(share)
    seg = rng.choice(k, size=n, p=share)
    mix = np.full((k, contexts), (1 - signal) / contexts)
    mix[np.arange(k), np.arange(k)] += signal
    requests = rng.integers(1, 13, size=n)
    counts = np.stack([rng.multinomial(r, mix[s]) for r, s in zip(requests, seg, strict=True)])
    return counts, seg, mix


def test_bic_finds_the_number_of_segments_and_em_recovers_them() -> None:
    counts, seg, mix = _people(4000, 0)
    fit, bics = select_k(counts, 6, seed=0)
    assert fit.k == 3, bics
    post = fit.model(8).posterior(counts)  # 8 segment columns (the agent's state), 3 used
    assert adjusted_rand_index(seg, post.argmax(1)) > 0.6
    # the learned shares are the true ones, up to the labels
    assert sorted(np.round(fit.share, 1).tolist()) == [0.2, 0.3, 0.5]


def test_one_segment_when_there_is_no_structure() -> None:
    counts, _, _ = _people(3000, 1, share=(1.0,))
    assert select_k(counts, 5, seed=0)[0].k == 1


def test_the_posterior_is_as_good_as_the_true_table_and_better_than_hashing() -> None:
    counts, seg, mix = _people(4000, 2)
    share = np.array([0.2, 0.3, 0.5])
    truth = SegmentModel(((share[:, None] * mix) / (share[:, None] * mix).sum(0)).T, share)
    learned = select_k(counts, 6, seed=0)[0].model(3)
    hashed = SegmentModel.hashed_contexts(5, 3)
    loss = {name: matched_log_loss(seg, m.posterior(counts)) for name, m in
            (("truth", truth), ("learned", learned), ("hashed", hashed))}
    assert loss["learned"] < loss["truth"] + 0.02, loss
    assert loss["learned"] < loss["hashed"] - 0.02, loss


def test_a_refit_keeps_the_labels() -> None:
    counts, seg, _ = _people(3000, 3)
    lrn = SegmentLearner(8, 5, seed=0, min_people=100)
    lrn.posterior(np.arange(1500).repeat(counts[:1500].sum(1)),
                  np.concatenate([np.repeat(np.arange(5), c) for c in counts[:1500]]))
    first = lrn.refit()
    assert first is not None and first.k == 3
    labels_before = lrn.model.posterior(counts).argmax(1)
    more = counts[1500:]
    lrn.posterior(1500 + np.arange(1500).repeat(more.sum(1)), np.concatenate([np.repeat(np.arange(5), c) for c in more]))
    second = lrn.refit()
    assert second is not None and second.k == 3
    labels_after = lrn.model.posterior(counts).argmax(1)
    assert (labels_before == labels_after).mean() > 0.97


def test_no_fit_before_enough_people_and_the_prior_meanwhile() -> None:
    lrn = SegmentLearner(4, 3, min_people=50)
    post = lrn.posterior(np.array([0, 1, 2]), np.array([0, 1, 2]))
    assert np.allclose(post, 0.25)
    assert lrn.refit() is None and lrn.fit is None


def test_contexts_outside_the_model_carry_no_evidence() -> None:
    lrn = SegmentLearner(4, 3)
    assert np.allclose(lrn.posterior(np.array([0, 0]), np.array([-1, 7])), 0.25)
    assert lrn._counts.sum() == 0


def test_averaging_fits_of_shards_matches_their_labels_first() -> None:
    counts, _, _ = _people(4000, 4)
    a = fit_mixture(counts[:2000], 3, seed=0)
    b = fit_mixture(counts[2000:], 3, seed=5)
    perm = np.array([2, 0, 1])
    b_permuted = b._replace(share=b.share[perm], mix=b.mix[perm])
    avg = average_fits([a, b_permuted])
    assert np.abs(avg.mix - a.mix).max() < 0.05  # aligned, so the average stays near each fit
    assert avg.people == 4000


def test_fit_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no person"):
        fit_mixture(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="k must be"):
        fit_mixture(np.ones((3, 4)), 0)
    counts, _, _ = _people(500, 5)
    with pytest.raises(ValueError, match="room for"):
        select_k(counts, 3, seed=0)[0].model(2)


def test_the_agent_learns_segments_from_the_market_and_never_reads_its_table() -> None:
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.evaluation.harness import run_campaign
    from agent_service.evaluation.sim_market import SimMarket
    from agent_service.lab.campaign import HybridCampaign

    class Blind(SimMarket):
        """The market with its segment table replaced by noise: a learner that read it would be lost."""

        def opportunities(self, t0: int, t1: int):  # type: ignore[no-untyped-def]
            o = super().opportunities(t0, t1)
            return o._replace(segment_probs=np.full_like(o.segment_probs, 1.0 / o.segment_probs.shape[1]))

    market = Blind(seed=3, budget_usd=50.0, persons=1500, opportunities_per_day=4000.0)
    agent = HybridCampaign(market.creatives, HybridConfig(), RewardConfig(), seed=0, learn=False)
    run_campaign(market, agent, 2)
    fit = agent.segment_learner.fit
    assert fit is not None and fit.k == market.sim_segments  # the world's 4 segments, found by BIC
    ck = agent.checkpoint()
    again = HybridCampaign(market.creatives, HybridConfig(), RewardConfig(), seed=1, learn=False)
    again.restore(ck)
    assert again.segment_learner.fit is not None
    assert np.allclose(again.segment_learner.model.table, agent.segment_learner.model.table)


def test_labels_are_kept_when_k_grows_or_shrinks() -> None:
    counts, _, _ = _people(3000, 6)
    three = fit_mixture(counts, 3, seed=0)
    shuffled = three._replace(share=three.share[[1, 2, 0]], mix=three.mix[[1, 2, 0]])
    assert np.allclose(aligned(shuffled, three).mix, three.mix)
    four = fit_mixture(counts, 4, seed=1)
    grown = aligned(four, three)
    assert np.abs(grown.mix[:3] - three.mix).sum(axis=1).max() < 0.5  # the old labels keep their segments
    two = aligned(fit_mixture(counts, 2, seed=2), three)
    assert two.k == 2


def test_a_malformed_published_segment_model_is_refused_and_the_served_one_stays() -> None:
    from agent_service.agent.learning.learner import HybridLearner
    from agent_service.agent.serving.hybrid import HybridAgent, spec_of
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.errors import ModelError

    cfg = HybridConfig()
    spec = spec_of(cfg, 6)
    learner = HybridLearner(spec, cfg, RewardConfig())
    agent = HybridAgent(spec, cfg)
    counts, _, _ = _people(2000, 7, contexts=8)
    fitted = SegmentLearner(cfg.segments, 8, min_people=10)
    for row, c in enumerate(counts):
        fitted.set_counts(row, c)
    fitted.refit()
    learner.segment_fit = fitted.state()
    assert agent.load_state(learner.state(), 2)
    assert np.allclose(agent.segment_model.table, fitted.model.table)
    bad = {**learner.state(), "segments": {"share": [0.5, 0.5], "mix": [[float("nan")] * 8, [0.125] * 8],
                                           "people": 1}}
    with pytest.raises(ModelError, match="segment model"):
        agent.prepare(bad, 3)
    assert np.allclose(agent.segment_model.table, fitted.model.table)


async def test_the_service_learns_segments_from_its_decision_log_and_serves_them() -> None:
    from agent_service.config import GaelpConfig
    from agent_service.runtime.simulate import run_simulation

    cfg = GaelpConfig().replace("simulation", days=1, opportunities_per_day=6_000, drain_days=0, users=1_500)
    run = await run_simulation(cfg, None, progress=False)
    seg = run.learner["segments"]
    assert seg["k"] is not None and seg["k"] >= 2, seg  # the world has 4; the hashed stand-in had none to find
    assert seg["served"]
