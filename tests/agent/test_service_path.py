"""The service path: decisions logged by the decide path replay into the hybrid learner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.registry import MemoryRegistry
from agent_service.agent.learning.online import OnlineLearner
from agent_service.agent.serving.hybrid import spec_of
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig, PPOConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import AdEvent, AuctionResult, Decision, Experience, state_values
from tests.flowkit import T0, FlowKit, bid_request

HYB = HybridConfig(lstm_hidden=16, hidden=32, update_every=32, ppo=PPOConfig(rollout=64, minibatch=32, epochs=1))


async def test_logged_decisions_replay_into_the_learner_which_publishes_a_new_version() -> None:
    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    kit = FlowKit(MemoryStore(), cfg)
    t = cfg.topics
    reqs = [bid_request(f"r{i}", f"dev{i % 9}", T0 + 9 * 3_600_000 + 60_000 * i,
                        channels=("paid_search", "social") if i % 3 else ("organic", "social"), cat=f"IAB{i % 4 + 1}")
            for i in range(60)]
    out = await kit.handle(t.bid_requests, *reqs)
    decisions = [decode(o.value, Decision) for o in out if o.topic == t.decisions]
    assert len(decisions) == 60
    spec = spec_of(HYB, 4)
    for d in decisions:
        assert len(state_values(d)) == spec.logged_dim and 0 < d.propensity <= 1 and d.model_version == 1
        assert d.action.bid_cpm_micros == 0 or 500_000 <= d.action.bid_cpm_micros <= 10_000_000
        assert d.action.segment <= spec.segments
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=True,
                             price_paid_micros=1500 if d.action.channel != "organic" else 0)
               for d in decisions if d.bid]
    exp_out = await kit.handle(t.auction_results, *results)
    clicks = [AdEvent(id=f"clk-{r.decision_id}", event_time=r.event_time + 1000, decision_id=r.decision_id,
                      kind="click") for r in results[::5]]
    exp_out += await kit.handle(t.ad_events, *clicks)
    exps = [decode(o.value, Experience) for o in exp_out if o.topic == t.experience]
    assert {e.kind for e in exps} == {"outcome", "click"}
    learner = OnlineLearner(HYB, cfg.reward, 4, cfg.budget.daily_usd, MemoryRegistry(), seed=0)
    assert learner.publish() == 1
    assert all(learner.observe(e) for e in exps)
    assert not learner.observe(exps[0])  # a redelivery changes nothing
    table = learner.learner.table
    assert len(table) == len(results)
    rows = table.rows()
    assert rows.clicked.sum() == len(clicks)
    assert np.allclose(rows.immediate[rows.channel > 0], -1500 / 1e6 / np.exp(2 * rows.state[rows.channel > 0,
                                                                                  spec.index["pacing_factor"]]),
                       rtol=1e-4)
    stats = learner.maybe_update()
    assert stats is not None and not stats.rejected and stats.version == 2

    # A rollback to version 1: the learner trains on from version 1's weights, not version 2's.
    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    registry = learner.registry
    v1, v2 = registry.load(1), registry.load(2)
    assert not same(v1["net"], v2["net"])  # the update moved the policy (too few slots for the DQN yet)
    learner.adopt(1)
    assert learner.publish() == 3
    v3 = registry.load(3)
    assert same(v3["net"], v1["net"]) and same(v3["q"], v1["q"])
    assert v3["conv"]["model"]["steps"] == v1["conv"]["model"]["steps"]


async def test_the_learner_service_exports_the_update_metrics() -> None:
    from agent_service.adapters.learners import NoCheckpoints, ThreadLearner
    from agent_service.adapters.memory_bus import MemoryBus
    from agent_service.contracts.codec import encode
    from agent_service.metrics import Metrics
    from agent_service.runtime.learner_service import LearnerService

    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    kit = FlowKit(MemoryStore(), cfg)
    t = cfg.topics
    reqs = [bid_request(f"q{i}", f"dev{i % 7}", T0 + 9 * 3_600_000 + 60_000 * i) for i in range(48)]
    decisions = [decode(o.value, Decision) for o in await kit.handle(t.bid_requests, *reqs) if o.topic == t.decisions]
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=True,
                             price_paid_micros=1000) for d in decisions if d.bid]
    exps = [o for o in await kit.handle(t.auction_results, *results) if o.topic == t.experience]
    bus, metrics = MemoryBus(), Metrics()
    learner = OnlineLearner(HYB, cfg.reward, 4, cfg.budget.daily_usd, MemoryRegistry(), seed=0)
    learner.publish()
    loop = LearnerService(cfg, bus, ThreadLearner(lambda: (learner, NoCheckpoints())), metrics, durable=False)
    await loop.start()
    for o in exps + exps[:3]:  # with three redeliveries
        await bus.publish(t.experience, o.key, o.value if isinstance(o.value, bytes) else encode(o.value))
    await loop.drain()
    await loop.stop()
    assert loop.records == len(exps) and loop.duplicates == 3 and loop.updates
    assert Metrics.value(metrics.learner_updates) == len(loop.updates)
    assert Metrics.value(metrics.learner_duplicates) == 3
    last = loop.updates[-1]
    assert Metrics.value(metrics.learner_kl) == last.ppo.approx_kl
    assert Metrics.value(metrics.learner_clip_fraction) == last.ppo.clip_fraction
    assert Metrics.value(metrics.learner_explained_variance) == last.ppo.explained_variance
    assert Metrics.value(metrics.learner_version) == learner.learner.version


async def test_a_persons_segment_posterior_sharpens_with_each_request_and_not_on_redelivery() -> None:
    from agent_service.ports.store import ContextQuery

    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    store = MemoryStore()
    kit = FlowKit(store, cfg)
    from agent_service.agent.model.opportunity import CONTEXT_BUCKETS, context_bucket
    from agent_service.agent.model.segments import SegmentModel
    # a segment model as the learner publishes it (contexts carry a segment signal); none: uniform
    kit.flow.decider.policy.agent.segment_model = SegmentModel.hashed_contexts(CONTEXT_BUCKETS, HYB.segments)
    t = cfg.topics
    cols = spec_of(HYB, 4).cols("segment_")
    reqs = [bid_request(f"s{i}", "devS", T0 + 9 * 3_600_000 + 60_000 * i, channels=("paid_search", "social"),
                        cat="IAB7") for i in range(4)]
    top, decisions = [], []
    for r in reqs:
        [d] = [decode(o.value, Decision) for o in await kit.handle(t.bid_requests, r) if o.topic == t.decisions]
        decisions.append(d)
        top.append(float(np.max(np.asarray(state_values(d))[cols])))
    assert top == sorted(top) and top[-1] > top[0] + 0.2  # the same context again and again: surer each time
    ix = spec_of(HYB, 4).index
    counts = [state_values(d)[ix[f"context_count_{context_bucket('IAB7')}"]] for d in decisions]
    assert counts == [1.0, 2.0, 3.0, 4.0]  # logged for the learner's segment fit
    req_col = [state_values(d)[ix["person_requests"]] for d in decisions]
    assert req_col == sorted(req_col) and req_col[0] > 0  # one request, then two, ...
    share = [state_values(d)[ix["person_search_share"]] for d in decisions]
    assert share == sorted(share) and share[0] == pytest.approx(1.25 / 2)  # all offered search
    await kit.handle(t.bid_requests, reqs[-1])  # a redelivered request counts nothing
    [ctx] = await store.decide_contexts([ContextQuery(decisions[0].device_id, "x:1", "c", 0)], 8)
    assert [n for _, n in ctx.contexts] == [4]


def test_a_restarted_learner_resumes_from_the_newest_published_version_not_fresh_weights(tmp_path) -> None:
    from agent_service.adapters.registry import FileRegistry
    from agent_service.runtime.assembly import build_learner

    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    registry = FileRegistry(tmp_path / "models")
    first = build_learner(cfg, registry, creatives=4, seed=0)
    assert registry.latest_version() == 1
    with torch.no_grad():  # stands for what training moved since
        for p in first.learner.net.parameters():
            p.add_(0.1)
    first.learner.stats.impressions += 7.0
    assert first.publish() == 2

    restarted = build_learner(cfg, FileRegistry(tmp_path / "models"), creatives=4, seed=1)
    assert registry.latest_version() == 2  # nothing published over the served model
    served = registry.load(2)
    assert all(torch.equal(v, served["net"][k]) for k, v in restarted.learner.net.state_dict().items())
    assert np.array_equal(restarted.learner.stats.impressions, first.learner.stats.impressions)
    assert restarted.publish() == 3  # and it grows from there
    assert all(torch.equal(v, served["net"][k]) for k, v in registry.load(3)["net"].items())


async def test_the_slot_won_reaches_r_immediate_on_the_service_path() -> None:
    """A paid-search result's position travels on its experience record and the learner values
    it as the batch path does: top_slot_value / position, the cost at the shadow price."""
    from agent_service.config import RewardConfig

    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB, reward=RewardConfig(top_slot_value_usd=0.01))
    kit = FlowKit(MemoryStore(), cfg)
    t = cfg.topics
    reqs = [bid_request(f"r{i}", f"dev{i}", T0 + 9 * 3_600_000 + 60_000 * i, channels=("paid_search",))
            for i in range(30)]
    decisions = [decode(o.value, Decision) for o in await kit.handle(t.bid_requests, *reqs) if o.topic == t.decisions]
    paid = [d for d in decisions if d.bid and d.action.channel == "paid_search"]
    assert paid
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=True,
                             price_paid_micros=2000, position=2) for d in paid]
    exps = [decode(o.value, Experience) for o in await kit.handle(t.auction_results, *results)
            if o.topic == t.experience]
    assert {e.position for e in exps} == {2}
    assert all(e.parts.immediate == pytest.approx(0.005 - 0.002) for e in exps)
    learner = OnlineLearner(HYB, cfg.reward, 4, cfg.budget.daily_usd, MemoryRegistry(), seed=0)
    assert all(learner.observe(e) for e in exps)
    rows = learner.learner.table.rows()
    kappa = 1 / np.exp(2 * rows.state[:, spec_of(HYB, 4).index["pacing_factor"]])
    assert np.allclose(rows.immediate, 0.005 - 0.002 * kappa, rtol=1e-4)
