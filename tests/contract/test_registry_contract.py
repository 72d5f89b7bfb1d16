"""One contract for every model registry adapter: memory, files, Redis (ports/registry.py)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from agent_service.adapters.redis_registry import RedisRegistry
from agent_service.adapters.registry import FileRegistry, MemoryRegistry
from agent_service.errors import CorruptModelError, ModelError, StoreError
from agent_service.ports.registry import VersionNotices
from tests.servers import RedisServer

_prefixes = itertools.count()


def _make(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> MemoryRegistry | FileRegistry | RedisRegistry:
    if kind == "memory":
        return MemoryRegistry()
    if kind == "file":
        return FileRegistry(tmp_path / "models")
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisRegistry(server.url, prefix=f"test:reg{next(_prefixes)}:", keep=5)


@pytest.fixture(params=["memory", "file", "redis"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryRegistry | FileRegistry | RedisRegistry]:
    reg = _make(request.param, request, tmp_path)
    yield reg
    if isinstance(reg, RedisRegistry):
        reg.close()


def _state(x: float) -> dict[str, object]:
    return {"w": torch.full((3, 2), x), "meta": {"x": x}}


def _corrupt(registry: object, version: int) -> None:
    """Flip the stored blob's bytes behind the registry's back (a torn write, a bit flip)."""
    if isinstance(registry, MemoryRegistry):
        blob, sha = registry._blobs[version]
        registry._blobs[version] = (blob[:-7] + b"garbage", sha)
    elif isinstance(registry, FileRegistry):
        path = registry._path(version)
        path.write_bytes(path.read_bytes()[:100])
    else:
        assert isinstance(registry, RedisRegistry)
        redis.Redis.from_url(registry.url).set(f"{registry.prefix}blob:{version}", b"\x80\x02garbage")


def test_versions_go_up_and_load_what_was_published(registry) -> None:
    assert registry.latest_version() == 0 and registry.versions() == []
    assert [registry.publish(_state(float(i))) for i in range(3)] == [1, 2, 3]
    assert registry.latest_version() == 3 and registry.versions() == [1, 2, 3]
    for v in (1, 2, 3):
        got = registry.load(v)
        assert torch.equal(got["w"], torch.full((3, 2), float(v - 1))) and got["meta"] == {"x": float(v - 1)}


def test_unknown_version_is_a_model_error(registry) -> None:
    registry.publish(_state(0.0))
    with pytest.raises(ModelError):
        registry.load(7)


def test_a_corrupt_blob_is_refused_and_the_others_still_load(registry) -> None:
    for i in range(3):
        registry.publish(_state(float(i)))
    _corrupt(registry, 3)
    with pytest.raises(CorruptModelError):
        registry.load(3)
    assert torch.equal(registry.load(2)["w"], torch.full((3, 2), 1.0))


def test_rollback_republishes_the_previous_weights_under_a_new_number(registry) -> None:
    registry.publish(_state(1.0))
    registry.publish(_state(2.0))
    assert registry.rollback() == 3
    assert registry.latest_version() == 3 and torch.equal(registry.load(3)["w"], torch.full((3, 2), 1.0))


@pytest.mark.parametrize("kind", ["memory", "redis"])  # a file registry has one writer (the learner)
def test_concurrent_publishers_never_share_a_number(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    registry = _make(kind, request, tmp_path)
    got: list[int] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        for i in range(4):
            v = registry.publish(_state(float(k * 10 + i)))
            with lock:
                got.append(v)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 13)) and registry.latest_version() == 12


def test_redis_keeps_the_newest_versions_and_announces_each_publish(redis_server: RedisServer) -> None:
    reg = RedisRegistry(redis_server.url, prefix=f"test:reg{next(_prefixes)}:", keep=3)
    assert isinstance(reg, VersionNotices)

    async def listen() -> list[int]:
        seen: list[int] = []
        stream = reg.notices()
        first = asyncio.ensure_future(stream.__anext__())
        probe = redis.Redis.from_url(redis_server.url)
        for _ in range(500):  # subscribed before the publishes
            if probe.pubsub_numsub(f"{reg.prefix}published")[0][1]:
                break
            await asyncio.sleep(0.01)
        probe.close()
        for i in range(5):
            await asyncio.to_thread(reg.publish, _state(float(i)))
        seen.append(await asyncio.wait_for(first, 5))
        while len(seen) < 5:
            seen.append(await asyncio.wait_for(stream.__anext__(), 5))
        await stream.aclose()
        return seen

    assert asyncio.run(listen()) == [1, 2, 3, 4, 5]
    assert reg.versions() == [3, 4, 5] and reg.latest_version() == 5
    with pytest.raises(CorruptModelError):
        reg.load(1)  # dropped by retention: refused, never half-served
    reg.close()


def test_redis_registry_restarted_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    with RedisServer(aof=True, workdir=str(tmp_path / "r")) as server:
        reg = RedisRegistry(server.url, prefix="t:")
        reg.publish(_state(1.0))
        reg.publish(_state(2.0))
        server.stop()
        with pytest.raises(StoreError):
            reg.latest_version()  # Redis away: an error the watcher logs, not a hang or a wrong answer
        server.start()
        assert reg.latest_version() == 2
        assert torch.equal(reg.load(2)["w"], torch.full((3, 2), 1.0 * 2))
        assert reg.publish(_state(3.0)) == 3
        reg.close()
