"""One contract for every EventBus adapter: in-process and Kafka (tansu) run the same tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_service.adapters.kafka_bus import KafkaBus
from agent_service.adapters.memory_bus import MemoryBus
from agent_service.ports.bus import TICK_HEADER, BusRecord, Consumer, EventBus

pytestmark = pytest.mark.services


@pytest.fixture(params=["memory", "kafka"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        b: EventBus = MemoryBus()
    else:
        broker = request.getfixturevalue("tansu")
        b = KafkaBus(broker.bootstrap, session_timeout_s=2.0, max_batch_size=1)
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def _drain(c: Consumer, n: int, timeout_s: float = 20.0) -> list[BusRecord]:
    out: list[BusRecord] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(out) < n and asyncio.get_running_loop().time() < deadline:
        out.extend(await c.getmany(timeout_ms=200, max_records=500))
    return out


async def _consume_all(bus: EventBus, topic: str, group: str, n: int) -> list[BusRecord]:
    """The first ``n`` records a fresh consumer of ``group`` reads (it stops without committing)."""
    c = bus.consumer([topic], group)
    await c.start()
    try:
        return await _drain(c, n)
    finally:
        await c.stop()


def _assert_in_order_per_key(got: list[BusRecord], keys: set[bytes]) -> None:
    for k in keys:
        vals = [int(r.value) for r in got if r.key == k]
        assert vals == sorted(vals)


async def _publish(bus: EventBus, topic: str, n: int) -> None:
    for i in range(n):
        await bus.publish(topic, f"k{i % 3}".encode(), f"{i}".encode())
    await bus.flush()


async def test_per_key_order_and_all_records(bus: EventBus) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=2)
    assert await bus.partitions(topic) == 2
    await _publish(bus, topic, 30)
    got = await _consume_all(bus, topic, "g1", 30)
    assert sorted(int(r.value) for r in got) == list(range(30))
    _assert_in_order_per_key(got, {b"k0", b"k1", b"k2"})


async def test_publish_many_delivers_everything_in_order_on_the_keys_partitions(bus: EventBus) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=3)
    keys = [f"key-{i % 7}".encode() for i in range(40)]
    for i in range(20):  # one record at a time, then the rest in two batch calls
        await bus.publish(topic, keys[i], f"{i}".encode())
    await bus.publish_many(topic, [(keys[i], f"{i}".encode()) for i in range(20, 30)])
    await bus.publish_many(topic, [(keys[i], f"{i}".encode()) for i in range(30, 40)])
    await bus.flush()
    got = await _consume_all(bus, topic, "g-many", 40)
    assert sorted(int(r.value) for r in got) == list(range(40))
    partition_of: dict[bytes | None, set[int]] = {}
    for r in got:
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(parts) == 1 for parts in partition_of.values())  # a key's records share one partition
    assert len(set().union(*partition_of.values())) > 1  # and keys spread over partitions
    _assert_in_order_per_key(got, set(keys))


async def test_an_assigned_consumer_reads_only_its_partitions_and_resumes_at_its_commit(bus: EventBus) -> None:
    """``partition_of`` is where ``publish``/``publish_many`` put a key; an ``assigned_consumer``
    reads only the partitions it is given, and a later one of its group starts at its commit."""
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=4)
    keys = [f"id-{i}".encode() for i in range(40)]
    await bus.publish_many(topic, [(k, str(i).encode()) for i, k in enumerate(keys[:30])])
    await bus.flush()
    everything = await _consume_all(bus, topic, "g-all", 30)
    assert all(r.partition == bus.partition_of(r.key or b"", 4) for r in everything) and len(everything) == 30
    mine = {i for i, k in enumerate(keys) if bus.partition_of(k, 4) in (1, 3)}
    assert 0 < len(mine) < 40
    c = bus.assigned_consumer(topic, [1, 3], "g-part")
    await c.start()
    got = await _drain(c, len(mine & set(range(30))))
    assert {int(r.value) for r in got} == mine & set(range(30)) and {r.partition for r in got} <= {1, 3}
    assert c.assigned() == {(topic, 1), (topic, 3)}
    await c.commit()
    await c.stop()
    for i in range(30, 40):
        await bus.publish(topic, keys[i], str(i).encode())
    await bus.flush()
    again = bus.assigned_consumer(topic, [1, 3], "g-part")
    await again.start()
    rest = await _drain(again, len(mine - set(range(30))), timeout_s=10.0)
    await again.stop()
    assert sorted(int(r.value) for r in rest) == sorted(mine - set(range(30)))  # only what came after the commit


async def test_uncommitted_records_are_redelivered(bus: EventBus) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=1)
    await _publish(bus, topic, 10)
    c1 = bus.consumer([topic], "g")
    await c1.start()
    first = await _drain(c1, 10)
    assert len(first) == 10
    await c1.stop()  # no commit: everything comes back
    c2 = bus.consumer([topic], "g")
    await c2.start()
    again = await _drain(c2, 10)
    assert [r.value for r in again] == [r.value for r in first]
    await c2.commit()
    await c2.stop()
    await _publish(bus, topic, 2)
    c3 = bus.consumer([topic], "g")
    await c3.start()
    rest = await _drain(c3, 12, timeout_s=5.0)
    await c3.stop()
    assert [int(r.value) for r in rest] == [0, 1]  # only what was published after the commit


async def test_revoke_hook_commits_before_a_joining_member_reads(bus: EventBus) -> None:
    """A member's revoke hook runs before its partitions move, and what it commits there is where
    every member resumes; positions of partitions the member no longer holds are skipped."""
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:6]}"
    await bus.create_topics([topic], partitions=2)
    for i in range(8):
        await bus.publish(topic, None, str(i).encode(), partition=i % 2)
    await bus.flush()
    c1 = bus.consumer([topic], group)
    held_at_revoke: list[set[tuple[str, int]]] = []

    async def hook() -> None:  # as if only each partition's first record were processed
        held_at_revoke.append(c1.assigned())
        await c1.commit({(topic, 0): 1, (topic, 1): 1})
    c1.on_revoke(hook)
    await c1.start()
    assert len(await _drain(c1, 8)) == 8
    c2 = bus.consumer([topic], group)
    await c2.start()
    again: list[BusRecord] = []
    deadline = asyncio.get_running_loop().time() + 30.0
    while len(again) < 6 and asyncio.get_running_loop().time() < deadline:  # both poll: the group rebalances
        again += await c1.getmany(timeout_ms=100) + await c2.getmany(timeout_ms=100)
    assert held_at_revoke and held_at_revoke[0] == {(topic, 0), (topic, 1)}
    assert sorted((r.partition, r.offset) for r in again) == [(p, o) for p in (0, 1) for o in (1, 2, 3)]
    assert c1.assigned() | c2.assigned() == {(topic, 0), (topic, 1)} and not c1.assigned() & c2.assigned()
    gone = (topic, 0) if (topic, 0) not in c1.assigned() else (topic, 1)
    await c1.commit({gone: 4})  # no longer c1's: skipped
    await c1.stop()
    await c2.stop()
    assert (await bus.group_lag(group, [topic]))[topic] == 6


async def test_groups_are_independent_and_headers_survive(bus: EventBus) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=1)
    await bus.publish(topic, None, b'{"id":"tick-1","event_time":5}', headers=[TICK_HEADER], partition=0)
    await bus.publish(topic, b"k", b"x")
    await bus.flush()
    for group in ("a", "b"):
        got = await _consume_all(bus, topic, group, 2)
        assert [r.is_tick for r in got] == [True, False]


async def test_group_lag_counts_what_the_group_has_not_committed(bus: EventBus) -> None:
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await bus.create_topics([topic], partitions=2)
    await _publish(bus, topic, 10)
    assert await bus.group_lag(group, [topic]) == {topic: 10}  # a group that never committed: everything
    c = bus.consumer([topic], group)
    await c.start()
    try:
        assert len(await _drain(c, 10)) == 10
        await c.commit()
        assert await bus.group_lag(group, [topic]) == {topic: 0}
        await _publish(bus, topic, 5)
        assert await bus.group_lag(group, [topic]) == {topic: 5}
    finally:
        await c.stop()
