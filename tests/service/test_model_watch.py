"""A bidder's model watcher: hot-swap by version off the loop, corrupt or wrong blobs refused."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import torch

from agent_service.adapters.redis_registry import RedisRegistry
from agent_service.adapters.registry import FileRegistry, MemoryRegistry
from agent_service.agent.learning.learner import HybridLearner
from agent_service.agent.serving.server import AgentServer
from agent_service.config import RewardConfig
from agent_service.config.agent import HybridConfig
from agent_service.metrics import Metrics
from agent_service.runtime.model_watch import ModelWatcher
from tests.servers import RedisServer

CFG = HybridConfig(lstm_hidden=16, hidden=32)
_prefixes = itertools.count()


def _registry(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    if kind == "memory":
        return MemoryRegistry()
    if kind == "file":
        return FileRegistry(tmp_path / "models")
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisRegistry(server.url, prefix=f"test:watch{next(_prefixes)}:")


def _corrupt_latest(registry) -> None:
    v = registry.latest_version()
    if isinstance(registry, MemoryRegistry):
        blob, sha = registry._blobs[v]
        registry._blobs[v] = (blob[: len(blob) // 2], sha)  # a partial blob
    elif isinstance(registry, FileRegistry):
        registry._path(v).write_bytes(registry._path(v).read_bytes()[:64])
    else:
        redis.Redis.from_url(registry.url).set(f"{registry.prefix}blob:{v}", b"not a model")


def _rejected(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("gaelp_bidder_model_rejected_total", {"reason": reason}) or 0.0


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def _watched(registry) -> AsyncIterator[tuple[HybridLearner, AgentServer, Metrics]]:
    """A learner that has published v1, and a bidder whose watcher polls ``registry`` while the block runs."""
    learner = HybridLearner(AgentServer(CFG, 6, 15.0, None).spec, CFG, RewardConfig(), registry, seed=0)
    learner.publish()
    bidder, metrics = AgentServer(CFG, 6, 15.0, registry, seed=1), Metrics()
    watcher = ModelWatcher(registry, bidder, metrics, poll_s=0.02)
    await watcher.start()
    try:
        yield learner, bidder, metrics
    finally:
        await watcher.stop()


@pytest.mark.parametrize("kind", ["memory", "file", "redis"])
async def test_new_versions_are_served_and_bad_ones_refused(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    registry = _registry(kind, tmp_path, request)
    async with _watched(registry) as (learner, server, metrics):
        assert server.version == 1
        with torch.no_grad():
            learner.net.creative_bias[:] = torch.tensor([6.0, 0, 0, 0, 0, 0])
        learner.publish()
        await _until(lambda: server.version == 2)
        assert torch.equal(server.agent.net.creative_bias, learner.net.creative_bias)

        learner.publish()  # v3, then corrupted before any bidder reads it
        _corrupt_latest(registry)
        await _until(lambda: _rejected(metrics, "corrupt") == 1)
        assert server.version == 2  # the last good version keeps serving

        wrong = HybridLearner(AgentServer(HybridConfig(lstm_hidden=8, hidden=16), 6, 15.0, None).spec,
                              HybridConfig(lstm_hidden=8, hidden=16), RewardConfig(), None, seed=0)
        registry.publish(wrong.state())  # v4: another layout
        await _until(lambda: _rejected(metrics, "invalid") == 1)
        assert server.version == 2

        learner.publish()  # v5: sound again
        await _until(lambda: server.version == 5)
        assert _rejected(metrics, "corrupt") == 1 and _rejected(metrics, "invalid") == 1  # never retried
        assert metrics.registry.get_sample_value("gaelp_bidder_model_version") == 5


async def test_a_redis_registry_away_keeps_the_bidder_serving(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "r").mkdir()
    with RedisServer(aof=True, workdir=str(tmp_path / "r")) as server:
        registry = RedisRegistry(server.url, prefix="w:")
        async with _watched(registry) as (learner, bidder, _):
            server.stop()
            await _until(lambda: sum("registry unreachable" in r.getMessage() for r in caplog.records) >= 3)
            assert bidder.version == 1
            server.start()
            await asyncio.to_thread(learner.publish)
            await _until(lambda: bidder.version == 2)
