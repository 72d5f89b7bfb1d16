"""The learner service: checkpoint, then commit — a lost learner loses no experience and counts none twice."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from agent_service.adapters.learners import ThreadLearner
from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.model_lineage import Lineage
from agent_service.adapters.registry import FileRegistry
from agent_service.agent.learning.online import OnlineLearner
from agent_service.config import GaelpConfig
from agent_service.config.agent import HybridConfig, PPOConfig
from agent_service.contracts.codec import decode, encode
from agent_service.contracts.events import AdEvent, AuctionResult, DeadLetter, Decision
from agent_service.metrics import Metrics
from agent_service.runtime.learner_service import LearnerService, learner_factory
from tests.flowkit import T0, FlowKit, bid_request

HYB = HybridConfig(lstm_hidden=16, hidden=32, update_every=32, ppo=PPOConfig(rollout=64, minibatch=32, epochs=1))


def config(tmp: Path, every: int = 40) -> GaelpConfig:
    cfg = dataclasses.replace(GaelpConfig(), hybrid=HYB)
    cfg = cfg.replace("serve", model_dir=str(tmp / "models"))
    return cfg.replace("learner", backend="thread", checkpoint_every_records=every, checkpoint_every_s=3600.0)


async def experience_records(cfg: GaelpConfig, n: int) -> list[bytes]:
    """Encoded experience (outcomes and clicks) of ``n`` decisions, as the stream produces it."""
    kit = FlowKit(MemoryStore(), cfg)
    t = cfg.topics
    reqs = [bid_request(f"r{i}", f"dev{i % 11}", T0 + 9 * 3_600_000 + 30_000 * i, cat=f"IAB{i % 4 + 1}")
            for i in range(n)]
    decisions = [decode(o.value, Decision) for o in await kit.handle(t.bid_requests, *reqs) if o.topic == t.decisions]
    results = [AuctionResult(id=f"res-{d.id}", event_time=d.event_time + 50, decision_id=d.id, won=True,
                             price_paid_micros=1500) for d in decisions]
    out = await kit.handle(t.auction_results, *results)
    clicks = [AdEvent(id=f"clk-{r.decision_id}", event_time=r.event_time + 1000, decision_id=r.decision_id,
                      kind="click") for r in results[::4]]
    out += await kit.handle(t.ad_events, *clicks)
    return [o.value if isinstance(o.value, bytes) else encode(o.value) for o in out if o.topic == t.experience]


async def _publish(bus: MemoryBus, topic: str, values: list[bytes]) -> None:
    for i, v in enumerate(values):
        await bus.publish(topic, str(i % 5).encode(), v)


def _learned(service: LearnerService) -> OnlineLearner:
    backend = service.backend
    assert isinstance(backend, ThreadLearner) and backend.learner is not None
    return backend.learner


async def test_a_snapshot_restores_weights_table_labels_and_seen_ids(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    learner, _ = learner_factory(cfg, 4, 0)()
    report = learner.train_records(await experience_records(cfg, 120))
    assert report.records > 0 and report.updates
    again = OnlineLearner.from_snapshot(learner.snapshot(), learner.registry)
    assert all(torch.equal(v, again.learner.net.state_dict()[k]) for k, v in learner.learner.net.state_dict().items())
    assert len(again.learner.table) == len(learner.learner.table) > 0
    assert again._seen.keys() == learner._seen.keys()
    assert again.learner.version == learner.learner.version
    assert again.publish() == learner.learner.version + 1  # versions go on above


async def test_a_learner_lost_after_its_checkpoint_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    records = await experience_records(cfg, 150)
    t = cfg.topics

    # Reference: one learner, no crash.
    ref_cfg = config(tmp_path / "ref")
    ref_bus = MemoryBus()
    ref = LearnerService(ref_cfg, ref_bus, ThreadLearner(learner_factory(ref_cfg, 4, 0)), Metrics())
    await ref.start()
    await _publish(ref_bus, t.experience, records)
    while await ref.poll(timeout_ms=0, max_records=25):
        pass
    await ref.stop()

    bus = MemoryBus()
    first = LearnerService(cfg, bus, ThreadLearner(learner_factory(cfg, 4, 0)), Metrics())
    await first.start()
    await _publish(bus, t.experience, records)
    for _ in range(3):
        await first.poll(timeout_ms=0, max_records=25)  # 75 records: one checkpoint (at 50) + commit
    assert first.metrics.learner_checkpoints._value.get() == 1
    seen_at_crash = len(_learned(first)._seen)
    await first._consumer.stop()  # the learner dies: no final checkpoint, no commit

    second = LearnerService(cfg, bus, ThreadLearner(learner_factory(cfg, 4, 0)), Metrics())
    await second.start()
    resumed = len(_learned(second)._seen)
    assert resumed < seen_at_crash  # it came back from the checkpoint, not from where the first one died
    while await second.poll(timeout_ms=0, max_records=25):
        pass
    await second.stop()
    done = _learned(second)
    assert len(done._seen) == len(_learned(ref)._seen) == len(set(records))  # nothing lost
    assert second.duplicates == 0  # nothing counted twice: the re-read started at the checkpoint's commit
    assert len(done.learner.table) == len(_learned(ref).learner.table)
    assert done.learner.conv_learner.labelled == _learned(ref).learner.conv_learner.labelled


async def test_a_learner_lost_between_checkpoint_and_commit_counts_the_redelivered_records_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, every=10_000)
    records = await experience_records(cfg, 80)
    bus = MemoryBus()
    first = LearnerService(cfg, bus, ThreadLearner(learner_factory(cfg, 4, 0)), Metrics())
    await first.start()
    await _publish(bus, cfg.topics.experience, records)
    await first.poll(timeout_ms=0, max_records=40)
    await first.backend.checkpoint()  # ... and the process dies before the commit
    await first._consumer.stop()

    second = LearnerService(cfg, bus, ThreadLearner(learner_factory(cfg, 4, 0)), Metrics())
    await second.start()
    await second.drain()
    await second.stop()
    assert second.duplicates == 40  # redelivered, recognised by id from the checkpoint
    assert len(_learned(second)._seen) == len(set(records))


async def test_malformed_experience_is_dead_lettered_with_its_reason(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    bus = MemoryBus()
    service = LearnerService(cfg, bus, ThreadLearner(learner_factory(cfg, 4, 0)), Metrics())
    await service.start()
    good = await experience_records(cfg, 10)
    await _publish(bus, cfg.topics.experience, [good[0], b"{not json", b'{"id": "x", "kind": "outcome"}', *good[1:]])
    await service.drain()
    await service.stop()
    assert service.dead == 2 and service.records == len(good)
    reader = bus.consumer([cfg.topics.dead_letters], "t")
    await reader.start()
    letters = [decode(r.value, DeadLetter) for r in await reader.getmany(timeout_ms=0)]
    assert len(letters) == 2 and all(x.topic == cfg.topics.experience and x.reason for x in letters)


async def test_a_rollback_is_followed_wherever_it_was_made(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    learner, _ = learner_factory(cfg, 4, 0)()
    records = await experience_records(cfg, 120)
    learner.train_records(records[:60])
    learner.publish()
    registry = FileRegistry(tmp_path / "models")
    before = learner.learner.version
    result = Lineage(registry).rollback()  # an operator, in a bidder process
    assert result.now_serving > before
    learner.train_records([])  # every batch starts by following a rollback
    assert learner.learner.version == result.now_serving
    restored = registry.load(result.restored_origin)["net"]
    assert all(torch.equal(restored[k], v) for k, v in learner.learner.net.state_dict().items())

    # A newer version that is not a rollback (this learner's own, before a crash) is not adopted.
    other, _ = learner_factory(cfg, 4, 1)()
    mine = other.learner.version
    learner.publish()
    assert not other.follow_rollback() and other.learner.version == mine
