"""Shared fixtures: throwaway Redis and tansu servers on free loopback ports."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from agent_service.threads import limit_math_threads  # noqa: E402

limit_math_threads()  # as the gaelp command does, before numpy loads
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Ray on loopback only: its node address is 127.0.0.1 (else it resolves this host's own IP).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

from agent_service.ports.store import StateStore  # noqa: E402
from tests.servers import RedisServer, TansuBroker  # noqa: E402

SHARED = Path(os.environ.get("GAELP_SHARED") or ROOT.parent / "shared")  # env: a checkout elsewhere (a worktree)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests use distinct key prefixes or flush it."""
    with RedisServer() as server:
        yield server


_service_dbs = itertools.count(1)


@pytest.fixture
def service_redis_url(redis_server: RedisServer) -> str:
    """A Redis database of this test's own on the session server, for a `gaelp serve` process:
    the service keys under the default prefix, so two tests on one database would read each
    other's records (the simulators reuse ids such as ``conv-<decision id>``)."""
    return redis_server.db_url(next(_service_dbs))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    """A started state store of each adapter (Redis: the session server, a key prefix of its own);
    a module that needs another kind of store defines its own ``store``."""
    from tests.store_probe import started_store

    async with started_store(request.param, request) as s:
        yield s


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """One tansu broker for the session; tests use distinct topic names."""
    with TansuBroker() as broker:
        yield broker


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder beside the repo (reference data)."""
    if not SHARED.exists():
        pytest.fail(f"{SHARED} is missing: CI copies ../shared beside the clone")
    return SHARED
