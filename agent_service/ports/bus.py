"""The event bus port: topics of keyed byte records, consumer groups, manual commits.

Semantics every adapter honours (tests/contract/test_bus_contract.py checks them):
- records with the same key go to the same partition and are read in the order published;
- a consumer in a group reads from the group's committed position; ``commit`` stores the
  position after every record ``getmany`` has returned so far, or given positions (commit only
  after processing: at-least-once delivery);
- before a group rebalance takes a member's partitions, its ``on_revoke`` hook is awaited: work
  in hand can finish and commit before the next owner reads from the group's position;
- records not committed are delivered again to the next consumer of the group;
- different groups each read every record;
- ``partition_of`` is the partition ``publish`` gives a key; a consumer from ``assigned_consumer``
  reads only the partitions it is given, from (and committing to) its group's positions.
Headers carry the record kind (``gaelp-kind: tick`` marks an event-time heartbeat).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

__all__ = ["BusRecord", "Consumer", "EventBus", "Positions", "TICK_HEADER"]

TICK_HEADER = ("gaelp-kind", b"tick")
"""Header of an event-time heartbeat record (value: ``{"id":..., "event_time":...}``)."""


class BusRecord(NamedTuple):
    """One record as consumed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def is_tick(self) -> bool:
        """True for an event-time heartbeat."""
        return TICK_HEADER in self.headers


Positions = Mapping[tuple[str, int], int]
"""(topic, partition) → offset of the next record to read there (what a commit stores)."""


class Consumer(Protocol):
    """A member of a consumer group reading some topics."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[BusRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_ms`` for the first."""
        ...

    async def commit(self, positions: Positions | None = None) -> None:
        """Commit the position after every record returned so far, or ``positions`` (those of
        partitions this member no longer holds are skipped: their owner commits them)."""
        ...

    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this member holds now."""
        ...

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` whenever a rebalance is about to take this member's partitions (not on
        ``stop``), before any other member is given them."""
        ...


class EventBus(Protocol):
    """Producer side of the bus plus a factory of consumers."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create_topics(self, names: Sequence[str], partitions: int) -> None:
        """Create topics if they do not exist (idempotent)."""
        ...

    async def partitions(self, topic: str) -> int:
        """Number of partitions of ``topic``."""
        ...

    async def publish(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> None:
        """Queue one record; ``partition`` overrides key-based partitioning."""
        ...

    async def publish_many(self, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Queue (key, value) records, key-partitioned as ``publish`` does, at a lower cost per
        record (the decision log: one call per decided batch)."""
        ...

    async def flush(self) -> None:
        """Wait until every queued record is stored by the bus."""
        ...

    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """A new (not yet started) consumer of ``topics`` in ``group``."""
        ...

    def assigned_consumer(self, topic: str, partitions: Sequence[int], group: str) -> Consumer:
        """A new (not yet started) consumer of the given partitions of ``topic`` only: no group
        membership, no rebalance (its ``on_revoke`` hooks never run), but it starts from ``group``'s
        committed positions and commits there. No subscribed member may share ``group``."""
        ...

    def partition_of(self, key: bytes, partitions: int) -> int:
        """The partition (of ``partitions``) that ``publish`` gives a record keyed ``key``."""
        ...

    async def group_lag(self, group: str, topics: Sequence[str]) -> dict[str, int]:
        """Records of each topic that ``group`` has not committed yet (summed over partitions; a
        partition the group never committed counts whole) — consumer lag as operators read it."""
        ...
