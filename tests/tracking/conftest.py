"""Fixtures of the tracking tests: a state store with an identity graph, on both adapter pairs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import NamedTuple

import pytest

from agent_service.adapters.memory_store import MemoryStore
from agent_service.adapters.redis_identity import RedisIdentityGraph
from agent_service.adapters.redis_store import RedisStore
from agent_service.config import GaelpConfig
from agent_service.identity import IdentityGraph, InMemoryIdentityGraph
from agent_service.pipeline.identity_links import graph_config
from agent_service.ports.store import StateStore


class Backend(NamedTuple):
    name: str
    store: StateStore
    make_graph: object
    """cfg -> a fresh identity graph over the same backend (same Redis, unique prefix)."""


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A started state store and a graph factory: in-process, or both on one Redis."""
    graphs: list[IdentityGraph] = []
    if request.param == "memory":
        store: StateStore = MemoryStore()

        def make(cfg: GaelpConfig) -> IdentityGraph:
            return InMemoryIdentityGraph(graph_config(cfg))
    else:
        url = request.getfixturevalue("redis_server").url
        tag = uuid.uuid4().hex[:8]
        store = RedisStore(url, prefix=f"tr{tag}:")

        def make(cfg: GaelpConfig) -> IdentityGraph:
            g = RedisIdentityGraph.from_url(url, graph_config(cfg.replace("identity", key_prefix=f"tr{tag}:{{id}}:")))
            graphs.append(g)
            return g
    await store.start()
    try:
        yield Backend(request.param, store, make)
    finally:
        for g in graphs:
            await g.close()
        await store.stop()
