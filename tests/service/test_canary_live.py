"""The canary end to end in process: controller → plan → bidder (watcher) → decisions → auction
results and conversions through the stream → per-arm tallies → controller. A candidate the market
makes clearly worse (it pays three times the price for the same impressions) is rolled back and the
bidder returns every person to control; an A/A candidate keeps running."""

from __future__ import annotations

import numpy as np

from agent_service.adapters.memory_canary import MemoryCanaryStore
from agent_service.adapters.memory_store import MemoryStore
from agent_service.config import GaelpConfig
from agent_service.config.experiments import CanaryConfig, GuardrailConfig, SequentialConfig
from agent_service.contracts.codec import decode
from agent_service.contracts.events import AuctionResult, Conversion, Decision
from agent_service.pipeline.canary_tally import CanaryTally
from agent_service.runtime.assembly import candidate_loader
from agent_service.runtime.canary_controller import CanaryController
from agent_service.runtime.canary_watch import CanaryWatcher
from tests.flowkit import T0, FlowKit, bid_request

CANARY = CanaryConfig(share=0.5, stage_min_persons=10_000, max_persons=1_000_000,
                      test=SequentialConfig(min_persons=30, min_conversions=15),
                      guardrails=GuardrailConfig(min_requests=100))
PERSONS = 120


async def _canary(candidate_price_factor: int, rounds: int
                  ) -> tuple[list[str], list[Decision], CanaryController, FlowKit]:
    cfg = GaelpConfig().replace("budget", daily_usd=1e6)
    kit = FlowKit(MemoryStore(), cfg)
    kit.registry.publish(kit.registry.load(1))  # live serves v2; the candidate is v1 (the same weights)
    store = MemoryCanaryStore()
    tally = CanaryTally(store)
    kit.flow.outcomes.canary = tally
    watcher = CanaryWatcher(store, kit.flow.decider, tally, candidate_loader(cfg, 4, kit.registry, 5), kit.metrics)
    clock = [T0]
    ctl = CanaryController(store, kit.registry, CANARY, lambda: clock[0], kit.metrics)
    await ctl.start(1, "live")
    await watcher.check()
    rng = np.random.default_rng(7)
    t = cfg.topics
    kinds: list[str] = []
    decisions: list[Decision] = []
    for rnd in range(rounds):
        at = T0 + 9 * 3_600_000 + rnd * 60_000
        reqs = [bid_request(f"r{rnd}-{i}", f"dev{i}", at + i) for i in range(PERSONS)]
        decisions = [decode(o.value, Decision) for o in await kit.handle(t.bid_requests, *reqs)
                     if o.topic == t.decisions]
        await tally.flush()
        results = []
        for d in decisions:
            if d.bid and d.action.channel != "organic":
                factor = candidate_price_factor if d.model_version == 1 else 1
                results.append(AuctionResult(id=f"a-{d.id}", event_time=d.event_time + 1, decision_id=d.id, won=True,
                                             position=1, price_paid_micros=d.action.bid_cpm_micros // 1000 * factor))
        await kit.handle(t.auction_results, *results)
        await kit.handle(t.auction_results, *results)  # a redelivery: tallied once
        convs = [Conversion(id=f"c{rnd}-{i}", event_time=at + 30_000, value_micros=int(rng.exponential(2e6)),
                         device_id=f"dev{i}") for i in range(PERSONS) if rng.random() < 0.4]
        await kit.ticks(at + 40_000)
        await kit.handle(t.conversions, *convs)
        clock[0] += 60_000
        kinds += [e.kind for e in await ctl.step()]
        await watcher.check()
        if kinds[-1] != "evaluated":
            break
    return kinds, decisions, ctl, kit


async def test_a_clearly_worse_candidate_is_rolled_back_and_bidders_return_to_control() -> None:
    kinds, decisions, ctl, kit = await _canary(candidate_price_factor=3, rounds=12)
    assert kinds[0] == "evaluated" and kinds[-1] == "rolled_back"
    assert {d.model_version for d in decisions} == {1, 2}  # the last round, decided before the rollback
    status = await ctl.status()
    assert status["plan"]["state"] == "rolled_back" and "spend_rate" in status["plan"]["reason"]
    arms = status["arms"]
    assert arms["candidate"]["persons"] > 0 and arms["control"]["persons"] > 0
    assert arms["candidate"]["spend_usd"] / arms["candidate"]["requests"] > \
        2 * arms["control"]["spend_usd"] / arms["control"]["requests"]
    assert ctl.registry.latest_version() == 2  # live untouched
    # the bidder applied the plan (share 0): every person is back on control
    reqs = [bid_request(f"after-{i}", f"dev{i}", T0 + 20 * 3_600_000 + i) for i in range(PERSONS)]
    after = [decode(o.value, Decision) for o in await kit.handle(kit.topics.bid_requests, *reqs)
             if o.topic == kit.topics.decisions]
    assert len(after) == PERSONS and {d.model_version for d in after} == {2}
    assert kit.metrics.canary_share.labels("live")._value.get() == 0.0


async def test_an_a_a_candidate_is_not_rolled_back() -> None:
    kinds, decisions, ctl, _ = await _canary(candidate_price_factor=1, rounds=8)
    assert set(kinds) == {"evaluated"}
    plan = await ctl.store.plan()
    assert plan is not None and plan.state == "running" and plan.share == 0.5
    assert {d.model_version for d in decisions} == {1, 2}  # both arms still serve


async def test_a_running_watcher_applies_each_plan_change_without_a_restart() -> None:
    """The bidder's poll picks up a new plan (share, then rollback); a candidate version that cannot
    be loaded is never routed to."""
    import asyncio

    from agent_service.ports.canary import CanaryPlan

    cfg = GaelpConfig()
    kit = FlowKit(MemoryStore(), cfg)
    store = MemoryCanaryStore()
    d = kit.flow.decider
    watcher = CanaryWatcher(store, d, CanaryTally(store), candidate_loader(cfg, 4, kit.registry, 5), kit.metrics,
                            poll_s=0.01)
    await watcher.start()

    async def applied(share: float) -> None:
        for _ in range(500):
            if d.canary_share == share:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"share {share} not applied (now {d.canary_share})")
    try:
        await store.put_plan(CanaryPlan("w", 1, 0.25, "running"))
        await applied(0.25)
        assert d.candidate is not None and d.candidate.version == 1 and d.canary_salt == "canary:w"
        await store.put_plan(CanaryPlan("w", 1, 0.0, "rolled_back"))
        await applied(0.0)
        assert d.candidate is None
        unloadable = CanaryPlan("w2", 99, 0.5, "running")  # no such version
        await store.put_plan(unloadable)
        for _ in range(500):  # until the watcher has seen the plan (and refused its candidate)
            if watcher.applied == unloadable:
                break
            await asyncio.sleep(0.01)
        assert watcher.applied == unloadable
        assert d.canary_share == 0.0 and d.candidate is None and watcher.tally.plan is None
    finally:
        await watcher.stop()
