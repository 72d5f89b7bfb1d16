"""Seed and read a state store through its production ports, for tests beyond the contract suite
(the ports carry no test-only methods): what a won auction result and a click store, what the
conversion join, the decision path and the window close read; and start a store of either adapter."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.redis_store import RedisStore
from agent_service.contracts.events import Touch
from agent_service.ports.store import (
    ClickEffect,
    ContextQuery,
    DecideStore,
    Identity,
    JoinQuery,
    OutcomeStore,
    RecordReader,
    ResultEffect,
    StateStore,
)

__all__ = ["read_claim", "read_credits", "read_identity", "read_journey", "seed_click", "seed_touch", "started_store"]


@contextlib.asynccontextmanager
async def started_store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """A started, empty store: ``"memory"``, or ``"redis"`` on the session server under a fresh key prefix."""
    if kind == "memory":
        s: StateStore = MemoryStore()
    else:
        s = RedisStore(request.getfixturevalue("redis_server").url, prefix=f"t{uuid.uuid4().hex[:8]}:")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def seed_touch(store: OutcomeStore, device: str, touch: Touch, ttl_s: int) -> None:
    """Store ``touch`` on the journey of the person ``device`` resolves to, as a won auction result
    does (claimed under ``seed:<decision>``; no reservation settled; its window closes at the
    touch's time)."""
    await store.record_results([ResultEffect(f"seed:{touch.decision_id}", b"", "seed", 0, touch.decision_id, 0,
                                             device, touch, touch.event_time)], ttl_s)


async def seed_click(store: OutcomeStore, device: str, decision_id: str, ttl_s: int) -> None:
    """Mark a click on ``decision_id``'s touch for the person ``device`` resolves to."""
    await store.record_clicks([ClickEffect(f"seed-click:{decision_id}", b"", device, decision_id)], ttl_s)


async def read_journey(store: OutcomeStore, person: str, since_ms: int = 0) -> list[Touch]:
    """``person``'s touches at or after ``since_ms``, oldest first with clicks marked (the join's read)."""
    [ctx] = await store.join_contexts([JoinQuery("probe:journey", person, None, since_ms)])
    return ctx.journey


async def read_identity(store: DecideStore, device: str) -> Identity:
    """The person ``device`` resolves to, as the decision path reads it."""
    [ctx] = await store.decide_contexts([ContextQuery(device, "probe:identity", "probe", 0)], 1)
    return ctx.identity


async def read_credits(store: OutcomeStore, decision_id: str) -> dict[str, int]:
    """Credit per conversion id received by ``decision_id``."""
    [credits] = await store.credits_many([decision_id])
    return credits


async def read_claim(store: RecordReader, key: str) -> bytes | None:
    """What a handler claimed under ``key``, if anything."""
    [stored] = await store.peek_many([key])
    return stored
