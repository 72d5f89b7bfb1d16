"""The segment posterior accumulated over a person's requests (naive Bayes over contexts)."""

from __future__ import annotations

import numpy as np
import pytest

from agent_service.agent.model.segments import SegmentModel, counts_matrix


def _model() -> SegmentModel:
    # 3 contexts, K = 4 with segment 3 absent from the world; context c hints at segment c
    prior = np.array([0.5, 0.3, 0.2, 0.0])
    lik = np.full((3, 3), 0.2)
    lik[np.arange(3), np.arange(3)] += 0.4
    post = lik * prior[:3]
    table = np.zeros((3, 4))
    table[:, :3] = post / post.sum(1, keepdims=True)
    return SegmentModel(table, prior)


def test_no_evidence_is_the_prior_and_one_request_is_the_table_row() -> None:
    m = _model()
    got = m.posterior(np.array([[0, 0, 0], [0, 1, 0]], float))
    np.testing.assert_allclose(got[0], m.prior)
    np.testing.assert_allclose(got[1], m.table[1], rtol=1e-9)


def test_evidence_accumulates_towards_the_segment_the_contexts_point_at() -> None:
    m = _model()
    few, many = m.posterior(np.array([[1, 2, 0], [5, 20, 3]], float))
    assert few.argmax() == 1 and many[1] > few[1] > m.table[1, 1]
    assert many[3] == 0 and few[3] == 0  # an absent segment stays impossible
    np.testing.assert_allclose([few.sum(), many.sum()], 1.0)
    # thousands of requests: no overflow, a confident posterior
    huge = m.posterior(np.array([[0, 5000, 0]], float))[0]
    assert np.isfinite(huge).all() and huge[1] == pytest.approx(1.0)


def test_counts_matrix_adds_the_current_request_and_ignores_unknown_contexts() -> None:
    got = counts_matrix([((0, 2), (2, 1), (7, 4)), ()], np.array([2, -1]), 3)
    np.testing.assert_array_equal(got, [[2, 0, 2], [0, 0, 0]])


def test_hashed_stand_in_points_each_bucket_at_one_segment() -> None:
    m = SegmentModel.hashed_contexts(8, 4)
    p = m.posterior(counts_matrix([()], np.array([6]), 8))[0]
    assert p.argmax() == 2 and p[2] == pytest.approx(0.5 + 0.5 / 4)


def test_bad_models_are_refused() -> None:
    with pytest.raises(ValueError, match="prior"):
        SegmentModel(np.ones((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        SegmentModel(-np.ones((2, 2)), np.ones(2))
    with pytest.raises(ValueError, match="counts"):
        _model().posterior(np.zeros((1, 5)))


def test_the_campaign_glue_accumulates_each_persons_requests() -> None:
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.lab.campaign import HybridCampaign
    from tests.agent.standin_market import DAY_MS, StandinMarket, StandinParams

    market = StandinMarket(5, StandinParams(people=200, opportunities_per_day=4000, context_signal=0.3))
    cfg = HybridConfig(lstm_hidden=8, hidden=16)
    glue = HybridCampaign(market.creatives, cfg, RewardConfig(), seed=0, learn=False)
    t = market.start_ms
    for _ in range(8):  # 8 slots of 3 h, ~20 requests per person in all
        opps = market.opportunities(t, t + DAY_MS // 8)
        acc = glue._segments.posterior(opps.person, opps.context, opps.segment_probs)
        t += DAY_MS // 8
    true = market.segment[opps.person]
    rows = np.arange(len(true))
    single, accumulated = opps.segment_probs[rows, true], acc[rows, true]
    assert (acc[:, market.p.segments:] == 0).all()  # padded segments stay impossible
    assert accumulated.mean() > single.mean() + 0.2  # many weak hints pin the segment down
    assert (acc.argmax(1) == true).mean() > (opps.segment_probs.argmax(1) == true).mean() + 0.2


def test_the_campaign_glue_counts_recent_activity_as_the_store_does() -> None:
    from agent_service.config import RewardConfig
    from agent_service.config.agent import HybridConfig
    from agent_service.evaluation.market import Opportunities
    from agent_service.lab.campaign import HybridCampaign
    from agent_service.ports.store import ACTIVITY_HALF_LIFE_MS, Activity

    glue = HybridCampaign(4, HybridConfig(lstm_hidden=8, hidden=16), RewardConfig(), seed=0, learn=False)
    rng = np.random.default_rng(0)
    t0, h = 1_767_225_600_000, ACTIVITY_HALF_LIFE_MS
    ref = {0: Activity(), 3: Activity()}
    for b in range(6):  # batches in time order; key 3 twice in some batches
        key = np.array([3, 0, 3][: 2 + b % 2])
        t = np.sort(t0 + b * h // 2 + rng.integers(0, h // 4, len(key)))
        mask = np.zeros((len(key), 3), bool)
        mask[:, 1] = rng.random(len(key)) < 0.5
        mask[:, 2] = True
        n = len(key)
        opps = Opportunities(t, key, key, np.zeros(n, np.int64), mask, np.ones(n), np.full((n, 8), 1 / 8),
                             np.ones(n), np.ones(n, np.int64), np.zeros(n, np.int64))
        recent, search = glue._activity.add(opps.person, opps.event_time, opps.channel_mask[:, 1])
        for i, (k, ti) in enumerate(zip(key.tolist(), t.tolist(), strict=True)):
            now = ref[k].add(int(ti), bool(mask[i, 1]))
            if key.tolist().count(k) == 1:  # a key twice in a batch sees the counts from before it, for both
                assert (recent[i], search[i]) == pytest.approx(now[:2])
        for i, (k, ti) in enumerate(zip(key.tolist(), t.tolist(), strict=True)):
            ref[k] = ref[k].add(int(ti), bool(mask[i, 1]))
    for k, a in ref.items():
        assert glue._activity.table[k, 0] == pytest.approx(a.requests) and glue._activity.table[k, 1] == pytest.approx(a.search)
        assert glue._activity.table[k, 2] == a.at_ms
