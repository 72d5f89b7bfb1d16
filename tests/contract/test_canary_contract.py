"""One contract for every canary store adapter: memory and Redis (ports/canary.py)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest

from agent_service.adapters.memory_canary import MemoryCanaryStore
from agent_service.adapters.redis_canary import RedisCanaryStore
from agent_service.errors import StoreError
from agent_service.ports.canary import ARMS, ArmSummary, ArmTally, CanaryPlan

_prefixes = itertools.count()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryCanaryStore | RedisCanaryStore]:
    if request.param == "memory":
        yield MemoryCanaryStore()
        return
    server = request.getfixturevalue("redis_server")
    async with RedisCanaryStore(server.url, prefix=f"test:canary{next(_prefixes)}:") as s:
        yield s


async def test_the_plan_is_the_last_one_put(store) -> None:
    assert await store.plan() is None
    await store.put_plan(CanaryPlan("e1", 7, 0.05, "running", started_ms=5))
    await store.put_plan(CanaryPlan("e1", 7, 0.25, "running", stage=1, seq=3, reason="lift +12%"))
    plan = await store.plan()
    assert plan == CanaryPlan("e1", 7, 0.25, "running", stage=1, seq=3, reason="lift +12%") and plan.routing
    await store.put_plan(CanaryPlan("e1", 7, 0.0, "rolled_back"))
    assert not (await store.plan()).routing


async def test_tallies_sum_per_arm_and_person_and_a_batch_applies_once(store) -> None:
    a = [ArmTally("control", "p1", requests=3, no_bids=1), ArmTally("candidate", "p2", requests=2, spend_micros=500)]
    b = [ArmTally("control", "p1", spend_micros=700, value_micros=9_000), ArmTally("control", "p3", requests=1)]
    assert await store.add("e1", [("k1", a), ("k2", b)]) == [True, True]
    assert await store.add("e1", [("k1", a), ("k3", [ArmTally("candidate", "p2", errors=1, requests=1)])]) == [
        False, True]  # k1 again (a redelivery) changes nothing
    assert await store.add("e2", [("k1", a)]) == [True]  # keys are per experiment
    t = await store.totals("e1")
    assert set(t) == set(ARMS)
    ctl, cand = t["control"], t["candidate"]
    assert ctl.persons == ["p1", "p3"]
    assert ctl.requests.tolist() == [3, 1] and ctl.no_bids.tolist() == [1, 0]
    assert ctl.spend_micros.tolist() == [700, 0] and ctl.value_micros.tolist() == [9_000, 0]
    assert cand.persons == ["p2"] and cand.requests.tolist() == [3] and cand.errors.tolist() == [1]
    assert cand.spend_micros.tolist() == [500]
    assert (await store.totals("nothing"))["candidate"].persons == []


async def test_an_unknown_arm_is_refused(store) -> None:
    with pytest.raises(ValueError, match="arm"):
        await store.add("e1", [("k", [ArmTally("treatment", "p1", requests=1)])])


async def test_redis_unreachable_is_a_store_error() -> None:
    s = RedisCanaryStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match="cannot reach"):
        await s.start()


async def test_the_summary_is_each_arms_sums_with_a_crossed_person_in_the_candidate_arm_only(store) -> None:
    rng = np.random.default_rng(3)
    persons = [f"p{i}" for i in range(40)]
    key = itertools.count()
    for _ in range(30):  # random batches; persons p0-p9 move to the candidate half-way (a ramp stage)
        batch = []
        for person in rng.choice(persons, 8):
            arm = "candidate" if (person in persons[:10] and rng.random() < 0.5) or person in persons[30:] else "control"
            batch.append(ArmTally(arm, str(person), requests=int(rng.integers(0, 4)), no_bids=int(rng.integers(0, 2)),
                                  errors=int(rng.integers(0, 2)), spend_micros=int(rng.integers(0, 3_000_000)),
                                  value_micros=int(rng.integers(0, 2) * rng.integers(0, 90_000_000))))
        k = f"b{next(key)}"
        assert await store.add("e1", [(k, batch)]) == [True]
        assert await store.add("e1", [(k, batch)]) == [False]  # a redelivery moves no sum
    t = await store.totals("e1")
    cand = t["candidate"]
    want = {"control": ArmSummary.of(t["control"].without(set(cand.persons))), "candidate": ArmSummary.of(cand)}
    got = await store.summary("e1")
    assert 0 < got["candidate"].persons < len(persons) and got["control"].persons > 0
    assert set(cand.persons) & set(t["control"].persons)  # some persons did cross
    for arm in ARMS:
        assert got[arm].persons == want[arm].persons
        np.testing.assert_allclose(got[arm].sums, want[arm].sums, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(got[arm].products, want[arm].products, rtol=1e-12, atol=1e-9)
        assert got[arm].positive.tolist() == want[arm].positive.tolist()
    main = got["candidate"].ratio("value_micros", "spend_micros")
    assert main.n == len(cand.persons) and main.sum_x == pytest.approx(cand.value_micros.sum() / 1e6)
    assert (await store.summary("nothing"))["control"].persons == 0
