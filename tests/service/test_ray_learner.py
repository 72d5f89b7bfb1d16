"""The learner as a Ray actor: killed mid-training, Ray restarts it from its checkpoint and the
service re-reads the uncommitted experience — nothing lost, nothing counted twice."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_service.adapters.learners import ThreadLearner
from agent_service.adapters.memory_bus import MemoryBus
from agent_service.adapters.ray_learner import RayLearner, ensure_ray
from agent_service.metrics import Metrics
from agent_service.runtime.learner_service import LearnerService, learner_factory
from tests.service.test_learner_service import config, experience_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    started = ensure_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


async def _publish(bus: MemoryBus, topic: str, values: list[bytes]) -> None:
    for i, v in enumerate(values):
        await bus.publish(topic, str(i % 5).encode(), v)


async def test_the_actor_killed_mid_training_resumes_from_its_checkpoint(local_ray: None, tmp_path: Path) -> None:
    cfg = config(tmp_path / "ray", every=50)
    records = await experience_records(cfg, 160)

    ref_cfg = config(tmp_path / "ref", every=50)
    ref_bus = MemoryBus()
    ref = LearnerService(ref_cfg, ref_bus, ThreadLearner(learner_factory(ref_cfg, 4, 0)), Metrics())
    await ref.start()
    await _publish(ref_bus, ref_cfg.topics.experience, records)
    await ref.drain()
    await ref.stop()
    assert isinstance(ref.backend, ThreadLearner) and ref.backend.learner is not None
    want = ref.backend.learner.summary()

    bus, metrics = MemoryBus(), Metrics()
    backend = RayLearner(learner_factory(cfg, 4, 0), actor_cpus=1.0)
    service = LearnerService(cfg, bus, backend, metrics)
    await service.start()
    first_pid = backend.actor_pid
    await _publish(bus, cfg.topics.experience, records)
    for _ in range(3):
        await service.poll(timeout_ms=0, max_records=25)  # 75 read: a checkpoint and a commit at 50
    assert metrics.learner_checkpoints._value.get() == 1
    backend.kill()  # the actor's process dies mid-run
    while await service.poll(timeout_ms=0, max_records=25):
        pass
    got = await backend.summary()
    await service.stop()
    assert backend.restarts == 1 and metrics.learner_restarts._value.get() == 1 and backend.actor_pid != first_pid
    assert got["records_seen"] == want["records_seen"] == len(set(records))  # nothing lost
    assert got["decisions"] == want["decisions"] and got["labelled_clicks"] == want["labelled_clicks"]
    assert service.duplicates == 0  # nothing counted twice
    assert got["version"] > 1  # it kept training and publishing
