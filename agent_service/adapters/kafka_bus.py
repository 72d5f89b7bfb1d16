"""Kafka event bus on aiokafka: the production adapter behind ``ports.bus.EventBus``.

Auto-commit is off: ``commit`` runs after the records' effects are stored; a consumer's
``on_revoke`` hooks run in aiokafka's ``ConsumerRebalanceListener.on_partitions_revoked``, which
the group coordinator awaits before it rejoins (still in the old generation, so a commit there
counts; after the consumer stopped fetching), so every member's hooks have run before any
member is given partitions. Producers use
``acks=all`` without idempotence (tansu, the test broker, cannot do idempotent producers;
redelivery is harmless because every effect is keyed by event id). Library errors become
``BusError``.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from agent_service.errors import BusError
from agent_service.ports.bus import BusRecord, Positions

__all__ = ["KafkaBus", "KafkaConsumer", "murmur2", "murmur2_many"]

log = logging.getLogger(__name__)

_M, _MASK = 0x5BD1E995, 0xFFFFFFFF
_WORDS = [struct.Struct(f"<{n}I") for n in range(64)]  # little-endian 32-bit words, by count


def murmur2(data: bytes) -> int:
    """Kafka's key hash (Java ``Utils.murmur2``), equal to aiokafka's ``partitioner.murmur2``
    but about twice as fast: the 4-byte words are unpacked in one call and the mixing keeps
    to 32 bits with one mask per product (the bid path hashes every decision id it logs)."""
    n = len(data)
    h = 0x9747B28C ^ n
    words = _WORDS[n >> 2] if n >> 2 < len(_WORDS) else struct.Struct(f"<{n >> 2}I")
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        k = ((k ^ (k >> 24)) * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = n & 3
    if tail:
        base = n & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


_MANY = 16
"""Keys of one length from which ``murmur2_many`` hashes them as arrays (fewer: one by one)."""


def murmur2_many(keys: Sequence[bytes]) -> list[int]:
    """``murmur2`` of every key, the keys of one length hashed together as numpy ``uint32`` arrays
    (whose products wrap at 32 bits as the masks do): a stream batch publishes ~2,000 keyed
    records, and one by one their hashes cost ~2.5 µs each (``bench/README.md``)."""
    out = [0] * len(keys)
    by_length: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_length.setdefault(len(key), []).append(i)
    m = np.uint32(_M)
    for n, at in by_length.items():
        if len(at) < _MANY:
            for i in at:
                out[i] = murmur2(keys[i])
            continue
        rows = np.frombuffer(b"".join([keys[i] for i in at]), dtype=np.uint8).reshape(len(at), n)
        h = np.full(len(at), 0x9747B28C ^ n, dtype=np.uint32)
        words = np.ascontiguousarray(rows[:, :n & ~3]).view("<u4")
        for j in range(n >> 2):
            k = words[:, j] * m
            k ^= k >> 24
            k *= m
            h *= m
            h ^= k
        tail, base = n & 3, n & ~3
        if tail:
            if tail == 3:
                h ^= rows[:, base + 2].astype(np.uint32) << 16
            if tail >= 2:
                h ^= rows[:, base + 1].astype(np.uint32) << 8
            h ^= rows[:, base]
            h *= m
        h ^= h >> 13
        h *= m
        h ^= h >> 15
        for i, v in zip(at, h.tolist(), strict=True):
            out[i] = v
    return out


class KafkaBus:
    """Producer, admin client and consumer factory for one Kafka cluster.

    :param bootstrap: ``HOST:PORT`` list.
    :param session_timeout_s: consumers' group session timeout (tests: 2 s; tansu joins take half).
    :param max_batch_size: producer batch bytes (1 forces one record per batch).
        The default, 512 KiB, holds ~130 experience records (each carries its decision's logged
        state, ~4 KB): with aiokafka's 16 KiB a stream worker spent a fifth of its time writing
        produce requests of four records each (bench_stream: 5.5k → 8.4k events/s per worker).
        Kafka's default limits (``message.max.bytes``, ``max.request.size``) are 1 MiB.
    :param linger_ms: how long the producer waits to fill a batch.
    """

    def __init__(self, bootstrap: str, session_timeout_s: float = 10.0, max_batch_size: int = 512 * 1024,
                 linger_ms: int = 2) -> None:
        self.bootstrap = bootstrap
        self.session_timeout_s = session_timeout_s
        self._max_batch_size = max_batch_size
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._pending: list[asyncio.Future[object]] = []
        self._partitions: dict[str, int] = {}
        self._lag_clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                          max_batch_size=self._max_batch_size, linger_ms=self._linger_ms)
        try:
            await self._producer.start()
        except KafkaError as exc:
            await self._producer.stop()
            self._producer = None
            raise BusError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc

    async def stop(self) -> None:
        if self._lag_clients is not None:
            admin, reader = self._lag_clients
            self._lag_clients = None
            await reader.stop()
            await admin.close()
        if self._producer is not None:
            try:
                await self.flush()
            finally:
                await self._producer.stop()
                self._producer = None

    async def create_topics(self, names: Sequence[str], partitions: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(n, num_partitions=partitions, replication_factor=1)
                   for n in names if n not in existing]
            if new:
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
        except KafkaError as exc:
            raise BusError(f"creating topics {list(names)} failed: {exc}") from exc
        finally:
            await admin.close()

    async def group_lag(self, group: str, topics: Sequence[str]) -> dict[str, int]:
        """What ``kafka-consumer-groups --describe`` shows: committed offsets from the group
        coordinator (OffsetFetch), heads from ListOffsets, through public client APIs (the
        clients are kept for the next call). Tansu under-reports the head of a multi-record
        batch, so there the figure can be low."""
        try:
            if self._lag_clients is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
                reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
                await admin.start()
                await reader.start()
                self._lag_clients = (admin, reader)
            admin, reader = self._lag_clients
            tps = [TopicPartition(t, p) for t in topics for p in range(await self.partitions(t))]
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            heads = await reader.end_offsets(tps)
            starts = await reader.beginning_offsets(tps)
        except KafkaError as exc:
            raise BusError(f"reading the lag of group {group} failed: {exc}") from exc
        lag = dict.fromkeys(topics, 0)
        for tp in tps:
            done = committed.get(tp)
            start = starts[tp] if done is None or done.offset < 0 else max(done.offset, starts[tp])
            lag[tp.topic] += max(0, heads[tp] - start)
        return lag

    async def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            parts = await self._require_producer().partitions_for(topic)
            self._partitions[topic] = len(parts)
        return self._partitions[topic]

    def _require_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise BusError("KafkaBus used before start()")
        return self._producer

    async def publish(self, topic: str, key: bytes | None, value: bytes,
                      headers: Sequence[tuple[str, bytes]] = (), partition: int | None = None) -> None:
        try:
            fut = await self._require_producer().send(topic, value=value, key=key, partition=partition,
                                                      headers=list(headers) or None)
        except KafkaError as exc:
            raise BusError(f"publishing to {topic} failed: {exc}") from exc
        self._pending.append(fut)
        if len(self._pending) >= 10_000:
            await self.flush()

    async def publish_many(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """One batch per partition (aiokafka's BatchBuilder) instead of a ``send`` per record: the
        per-record metadata wait, partitioner call and future are paid once per partition. Keys
        go to the partition the default partitioner (murmur2) would choose; keyless records to 0."""
        producer = self._require_producer()
        n = await self.partitions(topic)
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        keyed = [key for key, _ in records if key is not None]
        hashes = iter(murmur2_many(keyed)) if len(keyed) >= _MANY else iter([murmur2(key) for key in keyed])
        for key, value in records:
            p = (next(hashes) & 0x7FFFFFFF) % n if key is not None else 0
            by_partition.setdefault(p, []).append((key, value))
        try:
            for p, recs in by_partition.items():
                batch = producer.create_batch()
                for key, value in recs:
                    if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                        self._pending.append(await producer.send_batch(batch, topic, partition=p))
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None)
                self._pending.append(await producer.send_batch(batch, topic, partition=p))
        except KafkaError as exc:
            raise BusError(f"publishing to {topic} failed: {exc}") from exc
        if len(self._pending) >= 10_000:
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            await asyncio.gather(*pending)
        except KafkaError as exc:
            raise BusError(f"delivery failed: {exc}") from exc

    def consumer(self, topics: Sequence[str], group: str) -> KafkaConsumer:
        return KafkaConsumer(self, list(topics), group)

    def assigned_consumer(self, topic: str, partitions: Sequence[int], group: str) -> KafkaConsumer:
        return KafkaConsumer(self, [topic], group, assigned=list(partitions))

    def partition_of(self, key: bytes, partitions: int) -> int:
        """aiokafka's default partitioner (Java's): murmur2 of the key, sign bit cleared."""
        return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Runs a consumer's revoke hooks (aiokafka awaits a coroutine listener before rejoining)."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[], Awaitable[None]]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if not revoked:  # the first join: nothing held yet
            return
        for hook in self.hooks:
            try:
                await hook()
            except Exception:  # aiokafka would log and go on; say whose hook it was
                log.exception("revoke hook %r failed", hook)

    async def on_partitions_assigned(self, assigned: object) -> None:
        return None


class KafkaConsumer:
    """A group member with manual commits (see ``ports.bus.Consumer``); given ``assigned``
    partitions (of its one topic), a reader of those alone (aiokafka ``assign``: no join, no
    rebalance; the group coordinator still serves its committed offsets and takes its commits)."""

    def __init__(self, bus: KafkaBus, topics: list[str], group: str, assigned: list[int] | None = None) -> None:
        self.topics = topics
        session_ms = int(bus.session_timeout_s * 1000)
        self._c = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 5), rebalance_timeout_ms=max(session_ms, 1000),
        )
        self._revocations = _Revocations()
        if assigned is None:
            self._c.subscribe(topics, listener=self._revocations)
        else:
            self._c.assign([TopicPartition(topics[0], p) for p in assigned])

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._revocations.hooks.append(hook)

    def assigned(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._c.assignment()}

    async def start(self) -> None:
        try:
            await self._c.start()
        except KafkaError as exc:
            await self._c.stop()
            raise BusError(f"consumer start failed: {exc}") from exc

    async def stop(self) -> None:
        await self._c.stop()

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[BusRecord]:
        try:
            batches = await self._c.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"fetch failed: {exc}") from exc
        out: list[BusRecord] = []
        for tp, msgs in batches.items():
            out.extend(BusRecord(tp.topic, tp.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
                       for m in msgs)
        return out

    async def commit(self, positions: Positions | None = None) -> None:
        try:
            if positions is None:
                await self._c.commit()
            else:
                held = self._c.assignment()
                offsets = {tp: pos for (t, p), pos in positions.items() if (tp := TopicPartition(t, p)) in held}
                if offsets:
                    await self._c.commit(offsets)
        except KafkaError as exc:
            raise BusError(f"commit failed: {exc}") from exc
