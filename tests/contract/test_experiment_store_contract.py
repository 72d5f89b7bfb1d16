"""One contract for every ExperimentStore adapter (in-memory and Redis): effects apply once by key,
a person counts in the arm of their first effect, and the arm sums are exact per-person sums."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent_service.adapters.memory_experiments import MemoryExperimentStore
from agent_service.adapters.redis_experiments import RedisExperimentStore
from agent_service.adapters.redis_store import RedisStore
from agent_service.experiments.sequential import RatioStats
from agent_service.ports.experiments import ArmEffect, ExperimentStore

pytestmark = pytest.mark.services

TTL = 3600


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ExperimentStore]:
    if request.param == "memory":
        yield MemoryExperimentStore()
        return
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    state = RedisStore(request.getfixturevalue("redis_server").url, prefix=prefix)
    await state.start()
    try:
        yield RedisExperimentStore(state, prefix=prefix)
    finally:
        await state.stop()


async def test_effects_apply_once_and_keep_exact_per_person_sums(store: ExperimentStore) -> None:
    effects = [
        ArmEffect("expose:e:p1", "e", "a", "p1", True),
        ArmEffect("won:e:d1", "e", "a", "p1", False, spend_usd=0.25),
        ArmEffect("won:e:d2", "e", "a", "p1", False, spend_usd=0.5),
        ArmEffect("credit:e:c1:d1", "e", "a", "p1", False, value_usd=30.0),
        ArmEffect("expose:e:p2", "e", "b", "p2", True),
        ArmEffect("won:e:d3", "e", "b", "p2", False, spend_usd=1.0),
        # p3's first effect is a win (no exposure yet): counted as a person, exposed later once
        ArmEffect("won:e:d4", "e", "b", "p3", False, spend_usd=0.125),
        ArmEffect("expose:e:p3", "e", "b", "p3", True),
        # after a rollback p2 would be served the control: the person stays in the arm first seen
        ArmEffect("credit:e:c2:d3", "e", "a", "p2", False, value_usd=12.5),
        ArmEffect("expose:other:p1", "other", "a", "p1", True),
    ]
    assert await store.record_arm_effects(effects, TTL) == [True] * len(effects)
    # redelivered: nothing applies, nothing moves (also a repeated exposure under a fresh key)
    assert await store.record_arm_effects(effects, TTL) == [False] * len(effects)
    assert await store.record_arm_effects([ArmEffect("expose2:e:p1", "e", "a", "p1", True)], TTL) == [True]
    totals = await store.arm_totals("e")
    assert sorted(totals) == ["a", "b"]
    want = {"a": RatioStats(), "b": RatioStats()}
    want["a"].add(30.0, 0.75)
    want["b"].add(12.5, 1.0)
    want["b"].add(0.0, 0.125)
    for arm, w in want.items():
        got = totals[arm]
        assert got.exposed == {"a": 1, "b": 2}[arm]
        assert (got.stats.n, got.stats.n_pos) == (w.n, w.n_pos)
        assert np.allclose([got.stats.sum_x, got.stats.sum_y, got.stats.sum_xx, got.stats.sum_yy, got.stats.sum_xy],
                           [w.sum_x, w.sum_y, w.sum_xx, w.sum_yy, w.sum_xy], rtol=1e-12)
    assert (await store.arm_totals("other"))["a"].exposed == 1
    assert await store.arm_totals("none") == {}


async def test_the_flush_checkpoint_round_trips(store: ExperimentStore) -> None:
    assert await store.flush_state("e") is None
    await store.set_flush_state("e", b'{"batch": 1}')
    assert await store.flush_state("e") == b'{"batch": 1}'
    assert await store.flush_state("f") is None


async def test_request_counts_keep_the_guardrails_per_person_sums(store: ExperimentStore) -> None:
    effects = [
        ArmEffect("req:e:f1:p1", "e", "a", "p1", False, requests=4, no_bids=1),
        ArmEffect("won:e:d1", "e", "a", "p1", False, spend_usd=0.5),
        ArmEffect("req:e:f2:p1", "e", "a", "p1", False, requests=2, no_bids=2, errors=1),
        ArmEffect("req:e:f1:p2", "e", "a", "p2", False, requests=3),
        ArmEffect("won:e:d2", "e", "a", "p2", False, spend_usd=0.25),
    ]
    assert await store.record_arm_effects(effects, TTL) == [True] * len(effects)
    assert await store.record_arm_effects(effects[:3], TTL) == [False] * 3  # a retried write moves nothing
    g = (await store.arm_totals("e"))["a"].guards
    persons = [(6, 3, 1, 0.5), (3, 0, 0, 0.25)]  # requests, no-bids, errors, spend per person
    for got, col in ((g.spend, 3), (g.no_bids, 1), (g.errors, 2)):
        want = RatioStats()
        for p in persons:
            want.add(p[col], p[0])
        assert (got.n, got.n_pos) == (want.n, want.n_pos)
        assert np.allclose([got.sum_x, got.sum_y, got.sum_xx, got.sum_yy, got.sum_xy],
                           [want.sum_x, want.sum_y, want.sum_xx, want.sum_yy, want.sum_xy], rtol=1e-12)
