"""In-process event bus: the embedded default behind ``ports.bus.EventBus``.

Topics are lists of partitions held in memory; consumer groups keep committed offsets, so a
consumer that stops without committing leaves its records to the next member, exactly as
with Kafka. Partitions are assigned round-robin among the group's running members; a member
joining or leaving first awaits the other members' revoke hooks, as a Kafka rebalance does.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from agent_service.errors import BusError
from agent_service.ports.bus import BusRecord, Positions

__all__ = ["MemoryBus", "MemoryConsumer"]


class MemoryBus:
    """Topics and consumer groups in one process.

    :param default_partitions: partitions of a topic created implicitly by ``publish``.
    """

    def __init__(self, default_partitions: int = 1) -> None:
        self._default_partitions = default_partitions
        self._topics: dict[str, list[list[BusRecord]]] = {}
        self._committed: dict[tuple[str, str, int], int] = {}
        self._members: dict[str, list[MemoryConsumer]] = defaultdict(list)
        self._data = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def create_topics(self, names: Sequence[str], partitions: int) -> None:
        for name in names:
            self._topics.setdefault(name, [[] for _ in range(partitions)])

    async def partitions(self, topic: str) -> int:
        return len(self._topic(topic))

    def _topic(self, topic: str) -> list[list[BusRecord]]:
        parts = self._topics.get(topic)
        if parts is None:
            parts = self._topics[topic] = [[] for _ in range(self._default_partitions)]
        return parts

    async def publish(self, topic: str, key: bytes | None, value: bytes,
                      headers: Sequence[tuple[str, bytes]] = (), partition: int | None = None) -> None:
        parts = self._topic(topic)
        if partition is None:
            partition = self.partition_of(key, len(parts)) if key is not None else 0
        elif not 0 <= partition < len(parts):
            raise BusError(f"topic {topic} has no partition {partition}")
        log = parts[partition]
        log.append(BusRecord(topic, partition, len(log), key, value, tuple(headers)))
        async with self._data:
            self._data.notify_all()

    async def publish_many(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            self.publish_nowait(topic, key, value)
        await self.flush()

    def publish_nowait(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Append without waking consumers (for bulk loads; call ``flush`` after)."""
        parts = self._topic(topic)
        partition = self.partition_of(key, len(parts)) if key is not None else 0
        log = parts[partition]
        log.append(BusRecord(topic, partition, len(log), key, value, ()))

    def partition_of(self, key: bytes, partitions: int) -> int:
        return zlib.crc32(key) % partitions

    async def flush(self) -> None:
        async with self._data:
            self._data.notify_all()

    def consumer(self, topics: Sequence[str], group: str) -> MemoryConsumer:
        return MemoryConsumer(self, list(topics), group)

    def assigned_consumer(self, topic: str, partitions: Sequence[int], group: str) -> MemoryConsumer:
        return MemoryConsumer(self, [topic], group, fixed=[(topic, p) for p in partitions])

    async def group_lag(self, group: str, topics: Sequence[str]) -> dict[str, int]:
        return {t: self.lag(group, t) for t in topics}

    def lag(self, group: str, topic: str) -> int:
        """Records of ``topic`` not yet committed by ``group``."""
        return sum(len(log) - self._committed.get((group, topic, p), 0)
                   for p, log in enumerate(self._topic(topic)))

    # --- group membership (used by MemoryConsumer) ------------------------------------------
    async def _join(self, member: MemoryConsumer) -> None:
        await self._revoke(member.group)
        self._members[member.group].append(member)
        self._rebalance(member.group)

    async def _leave(self, member: MemoryConsumer) -> None:
        self._members[member.group].remove(member)
        await self._revoke(member.group)
        self._rebalance(member.group)

    async def _revoke(self, group: str) -> None:
        for m in list(self._members[group]):
            for hook in m._revoke_hooks:
                await hook()

    def _rebalance(self, group: str) -> None:
        members = self._members[group]
        for m in members:
            m._assign([])
        if not members:
            return
        tps = [(t, p) for t in sorted({t for m in members for t in m.topics})
               for p in range(len(self._topic(t)))]
        for i, tp in enumerate(tps):
            candidates = [m for m in members if tp[0] in m.topics]
            if candidates:
                candidates[i % len(candidates)]._assigned.append(tp)
        for m in members:
            m._assign(m._assigned)


class MemoryConsumer:
    """One member of a consumer group (see ``MemoryBus``), or, given ``fixed`` partitions, a
    reader of those alone at the group's positions (``MemoryBus.assigned_consumer``)."""

    def __init__(self, bus: MemoryBus, topics: list[str], group: str,
                 fixed: list[tuple[str, int]] | None = None) -> None:
        self.bus = bus
        self.topics = topics
        self.group = group
        self._fixed = fixed
        self._assigned: list[tuple[str, int]] = []
        self._positions: dict[tuple[str, int], int] = {}
        self._running = False
        self._revoke_hooks: list[Callable[[], Awaitable[None]]] = []

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._revoke_hooks.append(hook)

    def assigned(self) -> set[tuple[str, int]]:
        return set(self._assigned)

    def _assign(self, tps: list[tuple[str, int]]) -> None:
        tps = list(tps)
        self._assigned = tps
        self._positions = {tp: self.bus._committed.get((self.group, *tp), 0) for tp in tps}

    async def start(self) -> None:
        self._running = True
        if self._fixed is not None:
            for topic, p in self._fixed:
                if not 0 <= p < len(self.bus._topic(topic)):
                    raise BusError(f"topic {topic} has no partition {p}")
            self._assign(self._fixed)
        else:
            await self.bus._join(self)

    async def stop(self) -> None:
        if self._running:
            self._running = False
            if self._fixed is None:
                await self.bus._leave(self)

    def _take(self, max_records: int) -> list[BusRecord]:
        out: list[BusRecord] = []
        for tp in self._assigned:
            log = self.bus._topic(tp[0])[tp[1]]
            pos = self._positions[tp]
            if pos < len(log):
                chunk = log[pos:pos + max_records - len(out)]
                out.extend(chunk)
                self._positions[tp] = pos + len(chunk)
                if len(out) >= max_records:
                    break
        return out

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[BusRecord]:
        if not self._running:
            raise BusError("consumer used before start()")
        out = self._take(max_records)
        if out or timeout_ms <= 0:
            return out
        try:
            async with self.bus._data:
                await asyncio.wait_for(self.bus._data.wait(), timeout_ms / 1000)
        except TimeoutError:
            return []
        return self._take(max_records)

    async def commit(self, positions: Positions | None = None) -> None:
        chosen = self._positions if positions is None else {tp: pos for tp, pos in positions.items()
                                                            if tp in self._positions}
        for (topic, p), pos in chosen.items():
            self.bus._committed[(self.group, topic, p)] = pos
